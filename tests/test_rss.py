"""The RSS/Atom collector against a local feed server: requests + feedparser, real wire format."""
from __future__ import annotations

import gzip
import json
import resource
import time
from datetime import datetime, timedelta, timezone

import pytest

from surgewatch.collectors.base import BrandSpec, Collector, SourceError
from surgewatch.collectors.rss import SEEN_PER_FEED, RssCollector, entry_id, normalise_link
from tests.fakes.feed_server import FeedServer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ACME = BrandSpec("Acme", '"Acme Live" OR acmelive -jobs', site="https://www.acme.example")


def item(n: int, title: str, summary: str = "", *, link: str | None = None, minutes: int = 0, **extra):
    return {
        "id": f"guid-{n}",
        "title": title,
        "summary": summary,
        "link": link if link is not None else f"https://news.example/story/{n}",
        "published": T0 - timedelta(minutes=minutes),
        "author": extra.pop("author", "Jane Reporter"),
        **extra,
    }


STORIES = [
    item(1, "Acme Live tickets go on sale Friday",
         '<p>Fans queue for <a href="https://www.acme.example/tickets?utm_source=feed">tickets</a>'
         ' &amp; <a href="https://other.example/x">more</a></p>', minutes=5),
    item(2, "Local weather: rain all week", "<p>Nothing about the brand.</p>", minutes=4),
    item(3, "#acmelive trends after the announcement", "", minutes=3),
    item(4, "Acme Live is hiring: jobs for stage hands", "", minutes=2),  # excluded by -jobs
    item(5, "Acmeville fair opens", "The acmeville fair, not the brand.", minutes=1),  # word boundary
]


@pytest.fixture
def server():
    with FeedServer() as srv:
        yield srv


def collector(*feeds: str, **kwargs) -> RssCollector:
    kwargs.setdefault("timeout", 2)
    kwargs.setdefault("now", lambda: T0.timestamp())
    return RssCollector(list(feeds), **kwargs)


def test_it_is_a_collector_named_rss():
    assert isinstance(collector("http://127.0.0.1:1/x"), Collector)
    assert collector("http://127.0.0.1:1/x").name == "rss"


@pytest.mark.parametrize("path", ["/news.rss", "/news.atom"])
def test_it_collects_matching_entries_from_rss_and_atom(server, path):
    server.route(path, STORIES)
    batch = collector(server.url(path)).fetch(ACME, None)
    assert [m.id for m in batch.mentions] == ["news.example/story/1", "news.example/story/3"]
    first = batch.mentions[0]
    assert first.source == "rss" and first.brand == "Acme"
    assert first.text == "Acme Live tickets go on sale Friday\nFans queue for tickets & more"
    assert first.url == "https://news.example/story/1"
    assert first.author == "Jane Reporter"
    assert first.created_at == T0 - timedelta(minutes=5)
    assert first.site_links == ("https://www.acme.example/tickets?utm_source=feed",)
    assert batch.notes == [] and batch.requests_made == 1


def test_a_summary_alone_can_match(server):
    server.route("/f.rss", [item(1, "Tour news", "<b>Acme</b> <i>Live</i> adds dates")])
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    assert [m.text for m in batch.mentions] == ["Tour news\nAcme Live adds dates"]


def test_the_second_poll_sends_if_none_match_and_a_304_yields_nothing_and_keeps_the_cursor(server):
    server.route("/f.rss", STORIES)
    rss = collector(server.url("/f.rss"))
    first = rss.fetch(ACME, None)
    json.dumps(first.cursor)  # the cursor is stored as JSON
    state = first.cursor["feeds"][server.url("/f.rss")]
    assert state["etag"] and state["modified"]
    second = rss.fetch(ACME, first.cursor)
    sent = server.requests_to("/f.rss")[-1]
    assert sent.headers["if-none-match"] == state["etag"]
    assert sent.headers["if-modified-since"] == state["modified"]
    assert sent.status == 304
    assert second.mentions == [] and second.cursor == first.cursor and second.notes == []


def test_if_modified_since_alone_gets_a_304_from_a_server_without_etags(server):
    server.route("/f.rss", STORIES, etag=False)
    rss = collector(server.url("/f.rss"))
    first = rss.fetch(ACME, None)
    assert first.cursor["feeds"][server.url("/f.rss")]["etag"] is None
    second = rss.fetch(ACME, first.cursor)
    assert server.requests_to("/f.rss")[-1].status == 304
    assert second.mentions == []


def test_a_changed_feed_yields_only_the_entries_not_seen_before(server):
    route = server.route("/f.rss", STORIES)
    rss = collector(server.url("/f.rss"))
    first = rss.fetch(ACME, None)
    route.items = [item(9, "Acme Live adds a second show")] + STORIES
    second = rss.fetch(ACME, first.cursor)
    assert [m.id for m in second.mentions] == ["news.example/story/9"]
    assert set(second.cursor["feeds"][server.url("/f.rss")]["seen"]) == {
        "news.example/story/9", "news.example/story/1", "news.example/story/3"}


def test_syndicated_copies_of_one_story_are_counted_once(server):
    story = "Acme Live sells out in minutes"
    server.route("/a.rss", [item(1, story, link="https://www.news.example/sellout/?utm_source=a&utm_medium=rss")])
    server.route("/b.atom", [item(2, story, link="http://news.example/sellout#comments", author="Wire")])
    server.route("/c.rss", [item(3, story, link="https://NEWS.example/sellout?fbclid=xyz")])
    batch = collector(server.url("/a.rss"), server.url("/b.atom"), server.url("/c.rss")).fetch(ACME, None)
    assert [m.id for m in batch.mentions] == ["news.example/sellout"]


def test_a_story_syndicated_later_to_another_feed_is_not_counted_again(server):
    server.route("/a.rss", [item(1, "Acme Live sells out", link="https://news.example/sellout")])
    server.route("/b.rss", [])
    rss = collector(server.url("/a.rss"), server.url("/b.rss"))
    first = rss.fetch(ACME, None)
    server.route("/b.rss", [item(2, "Acme Live sells out", link="https://www.news.example/sellout/?utm_campaign=x")])
    second = rss.fetch(ACME, first.cursor)
    assert len(first.mentions) == 1 and second.mentions == []


def test_entries_without_links_are_identified_by_guid_then_title(server):
    server.route("/f.rss", [
        {"id": "urn:x:1", "title": "Acme Live one", "published": T0},
        {"title": "Acme Live   TWO", "published": T0},
    ])
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    ids = sorted(m.id for m in batch.mentions)
    assert ids[0] == "guid:urn:x:1" and ids[1].startswith("title:")
    assert entry_id({"title": "acme live two"}) == ids[1]  # case and spacing do not change it


@pytest.mark.parametrize("a,b", [
    ("https://www.example.com/a/?utm_source=x#top", "http://example.com/a"),
    ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
    ("https://example.com:443/a", "example.com/a"),
])
def test_link_normalisation_equates_syndicated_forms(a, b):
    assert normalise_link(a) == normalise_link(b)


@pytest.mark.parametrize("a,b", [
    ("https://example.com/a?id=1", "https://example.com/a?id=2"),
    ("https://example.com/a", "https://example.org/a"),
    ("https://example.com:8080/a", "https://example.com/a"),
])
def test_link_normalisation_keeps_different_stories_apart(a, b):
    assert normalise_link(a) != normalise_link(b)


# -- failures -------------------------------------------------------------------------------------
def test_a_page_that_is_not_a_feed_is_a_permanent_error_naming_the_feed(server):
    server.route("/page", body=b"<html><body><p>Acme Live</p></body></html>", content_type="text/html")
    with pytest.raises(SourceError) as info:
        collector(server.url("/page")).fetch(ACME, None)
    assert info.value.permanent
    assert server.url("/page") in str(info.value) and "not an RSS/Atom feed" in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_xml_is_not_a_feed(server):
    server.route("/broken.rss", body=b'{"json": "instead of xml"}', content_type="application/json")
    with pytest.raises(SourceError) as info:
        collector(server.url("/broken.rss")).fetch(ACME, None)
    assert info.value.permanent and "not an RSS/Atom feed" in str(info.value)


def test_a_feed_with_one_broken_entry_still_yields_the_good_ones(server):
    body = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
            b"<item><title>Acme Live good</title><link>https://n.example/1</link></item>"
            b"<item><title>Acme Live broken</ti></item></channel></rss>")
    server.route("/f.rss", body=body)
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    assert batch.notes == []
    assert [m.id for m in batch.mentions][0] == "n.example/1"


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_gone_or_forbidden_feeds_are_permanent_errors(server, status):
    server.route("/f.rss", status=status)
    with pytest.raises(SourceError) as info:
        collector(server.url("/f.rss")).fetch(ACME, None)
    assert info.value.permanent and f"HTTP {status}" in str(info.value)
    assert server.url("/f.rss") in str(info.value)


def test_a_500_with_retry_after_is_transient_and_carries_the_wait(server):
    server.route("/f.rss", status=500, retry_after=30)
    with pytest.raises(SourceError) as info:
        collector(server.url("/f.rss")).fetch(ACME, None)
    assert not info.value.permanent and info.value.retry_after == 30
    assert "HTTP 500" in str(info.value)


def test_a_429_with_an_http_date_retry_after_is_transient(server):
    server.route("/f.rss", status=429, retry_after="Sun, 01 Mar 2026 12:02:00 GMT")
    with pytest.raises(SourceError) as info:
        collector(server.url("/f.rss")).fetch(ACME, None)
    assert not info.value.permanent and info.value.retry_after == 120
    assert "rate limited" in str(info.value)


def test_a_slow_feed_times_out_as_a_transient_error(server):
    server.route("/slow.rss", STORIES, delay=3)
    start = time.monotonic()
    with pytest.raises(SourceError) as info:
        collector(server.url("/slow.rss"), timeout=0.3).fetch(ACME, None)
    assert time.monotonic() - start < 2
    assert not info.value.permanent and "timed out" in str(info.value)
    assert server.url("/slow.rss") in str(info.value)


def test_an_unreachable_feed_is_transient(server):
    url = server.url("/f.rss")
    server.stop()
    with pytest.raises(SourceError) as info:
        collector(url).fetch(ACME, None)
    assert not info.value.permanent and "cannot connect" in str(info.value)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
def test_an_oversized_body_is_refused_without_reading_it_whole(server, chunked):
    big = [item(n, f"Acme Live story {n}", "x" * 1000) for n in range(400)]  # ~450 kB
    server.route("/big.rss", big, chunked=chunked)
    with pytest.raises(SourceError) as info:
        collector(server.url("/big.rss"), max_bytes=100_000).fetch(ACME, None)
    assert "100000-byte limit" in str(info.value) and server.url("/big.rss") in str(info.value)


def test_a_gzip_bomb_is_capped_after_decompression(server):
    payload = b'<?xml version="1.0"?><rss version="2.0"><channel><title>' + b" " * 20_000_000 + b"</title></channel></rss>"
    server.route("/bomb.rss", body=gzip.compress(payload, 9), headers={"Content-Encoding": "gzip"})
    with pytest.raises(SourceError) as info:
        collector(server.url("/bomb.rss"), max_bytes=1_000_000).fetch(ACME, None)
    assert "1000000-byte limit" in str(info.value)


def _billion_laughs(prefix: str = "", newline: str = "\n") -> str:
    entities = newline.join(
        [newline + '<!ENTITY lol "lol">']
        + [f'<!ENTITY lol{i} "{("&lol;" if i == 1 else f"&lol{i - 1};") * 10}">' for i in range(1, 10)]
    )
    return (f'<?xml version="1.0"?>{prefix}<!DOCTYPE rss [{entities}{newline}]>'
            '<rss version="2.0"><channel><title>t</title>'
            "<item><title>Acme Live &lol9;</title><link>https://n.example/1</link></item></channel></rss>")


@pytest.mark.parametrize("body", [
    _billion_laughs().encode(),
    _billion_laughs(newline="").encode(),  # one line: feedparser's own DOCTYPE filter misses this form
    _billion_laughs(prefix="<!-- <a> -->").encode(),  # a comment that fools a naive "first element" scan
    _billion_laughs().encode("utf-16"),
    b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<rss version="2.0"><channel><item><title>Acme Live &xxe;</title></item></channel></rss>',
    b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "' + b"A" * 50_000 + b'">]>'
    b'<rss version="2.0"><channel><item><title>Acme Live' + b"&big;" * 20_000 + b"</title></item></channel></rss>",
], ids=["billion-laughs", "one-line", "after-comment", "utf-16", "external-entity", "quadratic-blowup"])
def test_entity_expansion_documents_are_refused_quickly_and_without_memory_growth(server, body):
    server.route("/evil.rss", body=body)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(SourceError) as info:
        collector(server.url("/evil.rss")).fetch(ACME, None)
    elapsed = time.monotonic() - start
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert info.value.permanent and "declares XML entities" in str(info.value)
    assert elapsed < 0.5, f"took {elapsed:.2f}s"
    assert grown_kb < 50_000, f"peak memory grew {grown_kb} kB"


def test_a_harmless_character_entity_declaration_is_accepted(server):
    body = (b'<?xml version="1.0"?><!DOCTYPE rss [\n<!ENTITY nbsp "&#160;">\n]>'
            b'<rss version="2.0"><channel><title>t</title><item><title>Acme&nbsp;Live news</title>'
            b"<link>https://n.example/1</link></item></channel></rss>")
    server.route("/f.rss", body=body)
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    assert [m.text for m in batch.mentions] == ["Acme Live news"]  # &nbsp; expanded, then whitespace collapsed


def test_an_entity_declaration_quoted_in_an_article_is_not_mistaken_for_one(server):
    example = _billion_laughs()
    body = ('<?xml version="1.0"?><rss version="2.0"><channel><title>security news</title>'
            "<item><title>Acme Live patches XML parser</title><link>https://n.example/1</link>"
            f"<description><![CDATA[<pre>{example}</pre>]]></description></item></channel></rss>").encode()
    server.route("/f.rss", body=body)
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    assert [m.id for m in batch.mentions] == ["n.example/1"]
    assert "<!ENTITY lol" in batch.mentions[0].text


def test_a_prolog_expat_cannot_read_still_gets_the_entity_check(server):
    body = _billion_laughs().replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="shift_jis"?>')
    server.route("/f.rss", body=body.encode("shift_jis"))  # multi-byte: expat refuses it
    with pytest.raises(SourceError) as info:
        collector(server.url("/f.rss")).fetch(ACME, None)
    assert "declares XML entities" in str(info.value)


def test_one_bad_feed_among_good_ones_becomes_a_note_and_keeps_its_cursor(server):
    server.route("/good.rss", STORIES)
    server.route("/bad.rss", status=500)
    good, bad = server.url("/good.rss"), server.url("/bad.rss")
    old = {"feeds": {bad: {"etag": '"old"', "modified": None, "seen": ["x"]}}}
    batch = collector(good, bad).fetch(ACME, old)
    assert [m.id for m in batch.mentions] == ["news.example/story/1", "news.example/story/3"]
    assert len(batch.notes) == 1 and bad in batch.notes[0] and "HTTP 500" in batch.notes[0]
    assert batch.cursor["feeds"][bad] == old["feeds"][bad]  # not advanced
    assert server.requests_to("/bad.rss")[-1].headers["if-none-match"] == '"old"'
    assert batch.cursor["feeds"][good]["seen"]


def test_when_every_feed_fails_the_error_is_transient_if_any_failure_is(server):
    server.route("/gone.rss", status=404)
    server.route("/busy.rss", status=503, retry_after=7)
    with pytest.raises(SourceError) as info:
        collector(server.url("/gone.rss"), server.url("/busy.rss")).fetch(ACME, None)
    assert not info.value.permanent and info.value.retry_after == 7
    assert server.url("/gone.rss") in str(info.value) and server.url("/busy.rss") in str(info.value)


def test_credentials_in_a_feed_url_never_reach_messages_or_the_cursor(server):
    server.route("/private.rss", STORIES)
    server.route("/down.rss", status=502)
    port = server.base_url.rsplit(":", 1)[1]
    private = f"http://reader:hunter2@127.0.0.1:{port}/private.rss?token=s3cr3t&page=1"
    down = f"http://reader:hunter2@127.0.0.1:{port}/down.rss?api_key=s3cr3t"
    rss = collector(private, down)
    batch = rss.fetch(ACME, None)
    shown = json.dumps(batch.cursor) + " ".join(batch.notes) + repr(rss)
    assert "hunter2" not in shown and "s3cr3t" not in shown
    assert f"http://reader:***@127.0.0.1:{port}/down.rss?api_key=***" in batch.notes[0]  # the one redactor keeps the user
    assert len(batch.mentions) == 2
    assert server.requests_to("/private.rss")[0].headers["authorization"].startswith("Basic ")


def test_an_invalid_brand_query_is_a_permanent_error(server):
    server.route("/f.rss", STORIES)
    with pytest.raises(SourceError) as info:
        collector(server.url("/f.rss")).fetch(BrandSpec("Acme", '"Acme Live'), None)
    assert info.value.permanent and "unbalanced quote" in str(info.value) and "Acme" in str(info.value)


# -- content --------------------------------------------------------------------------------------
def test_unicode_titles_and_summaries_match_and_survive(server):
    brand = BrandSpec("Zürich", '"Zürich Live" OR 東京 OR 🚀acme')
    server.route("/f.atom", [
        item(1, "ZÜRICH LIVE — Tickets 🎟️ ab heute", "<p>Grüße aus der Schweiz</p>"),
        item(2, "東京タワーでアクメライブ", ""),
        item(3, "Zürichsee Live", ""),  # not the phrase
    ])
    batch = collector(server.url("/f.atom")).fetch(brand, None)
    texts = sorted(m.text for m in batch.mentions)
    assert texts == ["ZÜRICH LIVE — Tickets 🎟️ ab heute\nGrüße aus der Schweiz", "東京タワーでアクメライブ"]


def test_a_latin1_feed_is_decoded_by_its_declared_encoding(server):
    body = ('<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel><title>t</title>'
            "<item><title>Acme Live à Genève</title><link>https://n.example/1</link></item>"
            "</channel></rss>").encode("iso-8859-1")
    server.route("/f.rss", body=body, content_type="application/rss+xml; charset=iso-8859-1")
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    assert [m.text for m in batch.mentions] == ["Acme Live à Genève"]


def test_a_plain_text_title_keeps_its_angle_brackets(server):
    server.route("/f.rss", [item(1, "We <3 Acme Live & friends")])
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    assert batch.mentions[0].text == "We <3 Acme Live & friends"


def test_html_in_entries_is_stripped_and_scripts_are_dropped(server):
    server.route("/f.rss", [item(1, "Acme Live", "<script>alert('x')</script><p>Line one</p><p>two</p>")])
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    assert batch.mentions[0].text == "Acme Live\nLine one two"


def test_entries_without_a_date_take_now_and_future_dates_are_clamped(server):
    server.route("/f.rss", [
        {"id": "a", "title": "Acme Live undated", "link": "https://n.example/a"},
        item(2, "Acme Live from the future", published=T0 + timedelta(days=365)),
    ])
    later = T0 + timedelta(hours=1)
    batch = collector(server.url("/f.rss"), now=lambda: later).fetch(ACME, None)  # a datetime clock works too
    assert [m.created_at for m in batch.mentions] == [later, later]


def test_the_language_filter_uses_the_feed_language():
    brand = BrandSpec("Acme", "acme lang:fr")
    with FeedServer(language="en-US") as en, FeedServer(language="fr") as fr:
        en.route("/f.rss", [item(1, "Acme news")])
        fr.route("/f.atom", [item(2, "Acme nouvelles")])
        batch = collector(en.url("/f.rss"), fr.url("/f.atom")).fetch(brand, None)
    assert [(m.text, m.lang) for m in batch.mentions] == [("Acme nouvelles", "fr")]


def test_the_seen_list_is_capped(server):
    many = [item(n, f"Acme Live update {n}", minutes=n) for n in range(SEEN_PER_FEED + 50)]
    server.route("/f.rss", many)
    batch = collector(server.url("/f.rss")).fetch(ACME, None)
    assert len(batch.mentions) == SEEN_PER_FEED + 50
    assert len(batch.cursor["feeds"][server.url("/f.rss")]["seen"]) == SEEN_PER_FEED


def test_items_at_serves_items_that_follow_a_clock():
    clock = {"now": T0}

    def items_at(path):
        if path != "/live.rss":
            return None
        return [i for i in STORIES if i["published"] <= clock["now"] - timedelta(minutes=4)]

    with FeedServer(items_at) as srv:
        rss = collector(srv.url("/live.rss"))
        first = rss.fetch(ACME, None)
        clock["now"] = T0 + timedelta(minutes=10)
        second = rss.fetch(ACME, first.cursor)
    assert [m.id for m in first.mentions] == ["news.example/story/1"]
    assert [m.id for m in second.mentions] == ["news.example/story/3"]


def test_a_slow_feed_does_not_hold_up_the_others(server):
    server.route("/slow1.rss", STORIES, delay=3)
    server.route("/slow2.rss", STORIES, delay=3)
    server.route("/fast.rss", STORIES)
    urls = [server.url("/slow1.rss"), server.url("/slow2.rss"), server.url("/fast.rss")]
    start = time.monotonic()
    batch = collector(*urls, timeout=0.5).fetch(ACME, None)
    elapsed = time.monotonic() - start
    assert len(batch.mentions) == 2 and len(batch.notes) == 2
    assert elapsed < 0.9, f"feeds were read one after another ({elapsed:.2f}s)"
    assert [n.split(": ")[1] for n in batch.notes] == urls[:2]  # notes keep the configured order


def test_a_feed_that_moved_permanently_is_followed_and_noted(server):
    server.route("/new.rss", STORIES)
    server.route("/old.rss", status=301, headers={"Location": server.url("/new.rss")})
    batch = collector(server.url("/old.rss")).fetch(ACME, None)
    assert len(batch.mentions) == 2
    assert batch.notes == [f"rss: {server.url('/old.rss')} moved permanently to {server.url('/new.rss')}; update the config"]
