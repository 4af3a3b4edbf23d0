"""HackerNewsCollector against the local Algolia HN search API (tests.fakes.hn_server)."""
from __future__ import annotations

import time

import pytest

from surgewatch.collectors.base import BrandSpec, SourceError
from surgewatch.collectors.hackernews import HackerNewsCollector, html_to_text
from tests.fakes.hn_server import FakeHackerNews

BRAND = BrandSpec(name="acme", query='acme -pie OR "acme cloud"', site="acme.com")


@pytest.fixture
def hn():
    with FakeHackerNews() as server:
        yield server


def collector(server: FakeHackerNews, **kwargs) -> HackerNewsCollector:
    return HackerNewsCollector(api_url=server.url + "/api/v1", **kwargs)


def test_each_or_group_is_one_search_by_date_request(hn):
    now = time.time()
    collector(hn, now=lambda: now).fetch(BRAND, None)
    queries = [r.query for r in hn.requests]
    assert [q["query"] for q in queries] == ["acme", "acme cloud"]
    assert all(q["tags"] == "(story,comment)" for q in queries)
    # The first poll looks back one hour, not through HN's history.
    assert all(q["numericFilters"] == f"created_at_i>={int(now - 3600)}" for q in queries)


def test_a_later_poll_asks_from_the_cursor_minus_the_overlap(hn):
    hn.add_story("acme launch")
    c = collector(hn, overlap_seconds=120)
    cursor = c.fetch(BRAND, None).cursor
    hn.requests.clear()
    c.fetch(BRAND, cursor)
    assert hn.requests[0].query["numericFilters"] == f"created_at_i>={int(cursor['after'] - 120)}"


def test_a_story_found_by_two_groups_is_counted_once(hn):
    hn.add_story("Acme Cloud is down")
    batch = collector(hn).fetch(BRAND, None)
    assert [m.text for m in batch.mentions] == ["Acme Cloud is down"]
    assert batch.requests_made == 2


def test_stories_and_comments_map_to_mentions_with_site_links(hn):
    story = hn.add_story("Show HN: Acme", url="https://acme.com/launch", points=321, num_comments=88, author="founder")
    comment = hn.add_comment('<p>Tried <a href="https://docs.acme.com/api?x=1&amp;y=2">acme&#x27;s API</a> &amp; '
                             "it&#x27;s fast")
    batch = collector(hn).fetch(BRAND, None)
    by_id = {m.id: m for m in batch.mentions}
    s, c = by_id[str(story.id)], by_id[str(comment.id)]
    assert (s.score, s.replies, s.author) == (321, 88, "founder")
    assert s.url == f"https://news.ycombinator.com/item?id={story.id}"
    assert s.site_links == ("https://acme.com/launch",)
    assert c.text == "Tried acme's API & it's fast"
    assert c.site_links == ("https://docs.acme.com/api?x=1&y=2",)


def test_html_to_text_keeps_words_and_drops_markup():
    assert html_to_text("a<p>b<i>c</i> &lt;script&gt;") == "a\nbc <script>"


def test_a_busy_query_pages_until_the_last_page(hn):
    start = time.time() - 1000
    for i in range(25):
        hn.add_story(f"acme {i}", created_at=start + i)
    batch = collector(hn, hits_per_page=10).fetch(BrandSpec(name="acme", query="acme"), None)
    assert len(batch.mentions) == 25
    assert [r.query["page"] for r in hn.requests] == ["0", "1", "2"]


def test_a_503_is_retried_a_bounded_number_of_times(hn):
    hn.add_story("acme up again")
    hn.fail(503, {"message": "unavailable"}, times=1)
    batch = collector(hn, retries=2).fetch(BrandSpec(name="acme", query="acme"), None)
    assert [m.text for m in batch.mentions] == ["acme up again"]
    assert len(hn.requests) == 2

    hn.fail(503, {"message": "unavailable"}, times=10)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        collector(hn, retries=2).fetch(BrandSpec(name="acme", query="acme"), None)
    assert not caught.value.permanent and "503" in str(caught.value)
    assert time.monotonic() - started < 5
    assert len(hn.requests) == 2 + 3


def test_an_unreachable_server_is_transient():
    c = HackerNewsCollector(api_url="http://127.0.0.1:9/api/v1", retries=0)
    with pytest.raises(SourceError) as caught:
        c.fetch(BRAND, None)
    assert not caught.value.permanent and "cannot connect" in str(caught.value)
