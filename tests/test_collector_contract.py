"""One contract every collector passes, table-driven over the same cases (apprise-style).

Each source is a :class:`Kit`: its fake server (speaking the vendor's wire format), how to build
the real collector against it, how to publish a post there and how to make the server fail.  The
cases below never look at which source they run on, so adding a source is adding a kit.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest

from surgewatch.collectors.base import Batch, BrandSpec, Collector, SourceError

BRAND = BrandSpec(name="acme", query='acme -pie OR "acme cloud"', site="acme.com")
SECRET = "s3cr3t-do-not-leak"


class Kit:
    """What the contract needs from one source."""

    name = ""
    source = ""  # Mention.source and the prefix of every error message
    reset_header = True  # does the source's 429 tell when to come back?
    time_from_id = False  # can a post without a time be dated from its id?

    @contextmanager
    def running(self) -> Iterator[Any]:
        raise NotImplementedError

    def collector(self, server: Any, *, page_size: int, secret: str = SECRET) -> Collector:
        raise NotImplementedError

    def publish(self, server: Any, text: str, *, created_at: float | None = None,
                minimal: bool = False) -> None:
        raise NotImplementedError

    def rate_limit(self, server: Any, reset_in: int) -> None:
        server.rate_limited(reset_in=reset_in)

    def fail(self, server: Any, status: int) -> None:
        server.fail(status, {"message": "scripted failure"}, times=5)

    def malformed(self, server: Any) -> None:
        server.fail_malformed()

    def huge(self, server: Any) -> None:
        server.fail_huge(9 * 1024 * 1024)

    def recover(self, server: Any) -> None:
        server._failures.clear()

    # -- the hostile table ---------------------------------------------------------------------------
    def collector_at(self, url: str, *, timeout: float) -> Collector:
        """The collector pointed at any server (the drip server), with the config's ``timeout``."""
        raise NotImplementedError

    def hostile_routes(self, now: float) -> list[tuple[str, Any]]:
        """(path prefix, a valid answer there holding one post that matches BRAND): the answers the
        hostile table breaks, one field at a time."""
        raise NotImplementedError

    def answer(self, server: Any, path: str, body: bytes, *, status: int = 200,
               headers: dict[str, str] | None = None, streamed: int = 0) -> None:
        """From now on, every request under ``path`` gets this answer."""
        server._failures.clear()
        if streamed:
            for _ in range(20):
                server.fail_huge(streamed, path=path)
        else:
            server.fail(status, body, headers=headers, times=10_000, path=path)

    def hostile_cases(self, server: Any, now: float) -> Iterator[tuple[str, Any]]:
        """(label, set-up) for every hostile answer: each JSON answer broken whole and field by field."""
        for path, sample in self.hostile_routes(now):
            for label, body, streamed in hostile_bodies(sample):
                yield f"{path} {label}", lambda p=path, b=body, n=streamed: self.answer(server, p, b, streamed=n)


class XKit(Kit):
    name = source = "x"
    time_from_id = True

    @contextmanager
    def running(self):
        from tests.fakes.x_server import FakeX

        with FakeX(bearer_token=SECRET) as server:
            yield server

    def collector(self, server, *, page_size, secret=SECRET):
        from surgewatch.collectors.x import XCollector

        # X's smallest page is 10; enough pages to read everything the cases publish.
        return XCollector(secret, api_url=server.url, max_results=max(10, page_size), max_pages=50,
                          max_requests_per_day=100_000, quiet_posts_every=0)

    def publish(self, server, text, *, created_at=None, minimal=False):
        server.add_tweet(text, created_at=created_at, minimal=minimal)

    def rate_limit(self, server, reset_in):
        server.rate_limited(path="/2/", reset_in=reset_in)

    def collector_at(self, url, *, timeout):
        from surgewatch.collectors.x import XCollector

        return XCollector(SECRET, api_url=url, timeout=timeout, quiet_posts_every=0)

    def hostile_routes(self, now):
        from tests.fakes.x_server import COUNTS_PATH, SEARCH_PATH, TWITTER_EPOCH_MS, iso_z

        tweet_id = str((int((now - 60) * 1000) - TWITTER_EPOCH_MS) << 22)
        minute = now - now % 60
        counts = {"data": [{"start": iso_z(minute - 60), "end": iso_z(minute), "tweet_count": 3}],
                  "meta": {"total_tweet_count": 3}}
        search = {"data": [{"id": tweet_id, "text": "acme hostile table", "created_at": iso_z(now - 60),
                            "author_id": "1000", "lang": "en",
                            "public_metrics": {"retweet_count": 1, "reply_count": 2, "like_count": 3,
                                               "quote_count": 0, "impression_count": 40},
                            "entities": {"urls": [{"expanded_url": "https://acme.com/sale"}]}}],
                  "includes": {"users": [{"id": "1000", "username": "someone",
                                          "public_metrics": {"followers_count": 5}}]},
                  "meta": {"newest_id": tweet_id, "oldest_id": tweet_id, "result_count": 1}}
        return [(COUNTS_PATH, counts), (SEARCH_PATH, search)]


class RedditKit(Kit):
    name = source = "reddit"

    @contextmanager
    def running(self):
        from tests.fakes.reddit_server import FakeReddit

        with FakeReddit(client_secret=SECRET) as server:
            yield server

    def collector(self, server, *, page_size, secret=SECRET):
        from surgewatch.collectors.reddit import RedditCollector

        return RedditCollector("test-client", secret, "surgewatch-tests/0.1 by u/surgewatch",
                               api_url=server.url, auth_url=server.url, limit=1000)

    def publish(self, server, text, *, created_at=None, minimal=False):
        server.add_post(text, created_utc=created_at, minimal=minimal)

    def fail(self, server, status):
        # Reddit names the OAuth problem of a 401 in WWW-Authenticate (prawcore reads it).
        headers = {"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'} if status == 401 else {}
        server.fail(status, {"message": "scripted failure", "error": status}, headers=headers,
                    times=5, path="/r/")

    def answer(self, server, path, body, *, status=200, headers=None, streamed=0):
        if status == 401:  # prawcore reads the OAuth problem from WWW-Authenticate
            headers = {"www-authenticate": 'Bearer realm="reddit", error="invalid_token"', **(headers or {})}
        super().answer(server, path, body, status=status, headers=headers, streamed=streamed)

    def collector_at(self, url, *, timeout):
        from surgewatch.collectors.reddit import RedditCollector

        return RedditCollector("test-client", SECRET, "surgewatch-tests/0.1", api_url=url, auth_url=url,
                               timeout=timeout)

    def hostile_routes(self, now):
        post = {"id": "abc1", "name": "t3_abc1", "title": "acme hostile table", "selftext": "",
                "created_utc": now - 60, "score": 1, "num_comments": 0, "author": "someone",
                "subreddit": "test", "permalink": "/r/test/comments/abc1/acme/", "url": "https://acme.com/sale"}
        return [("/r/", {"kind": "Listing", "data": {"after": None, "before": None, "dist": 1,
                                                     "children": [{"kind": "t3", "data": post}]}})]


class HackerNewsKit(Kit):
    name = source = "hackernews"
    reset_header = False  # Algolia's 429 carries no reset: the pipeline's backoff decides

    @contextmanager
    def running(self):
        from tests.fakes.hn_server import FakeHackerNews

        with FakeHackerNews() as server:
            yield server

    def collector(self, server, *, page_size, secret=SECRET):
        from surgewatch.collectors.hackernews import HackerNewsCollector

        return HackerNewsCollector(api_url=server.url + "/api/v1", hits_per_page=page_size,
                                   max_pages=50, retries=1)

    def publish(self, server, text, *, created_at=None, minimal=False):
        server.add_story(text, created_at=created_at, minimal=minimal)

    def rate_limit(self, server, reset_in):
        server.rate_limited()

    def collector_at(self, url, *, timeout):
        from surgewatch.collectors.hackernews import HackerNewsCollector

        return HackerNewsCollector(api_url=url + "/api/v1", retries=1, timeout=timeout)

    def hostile_routes(self, now):
        from tests.fakes.x_server import iso_z

        hit = {"objectID": "41000001", "created_at": iso_z(now - 60), "created_at_i": int(now - 60),
               "title": "acme hostile table", "url": "https://acme.com/sale", "author": "pg", "points": 3,
               "num_comments": 1, "story_text": None, "comment_text": None, "_tags": ["story"]}
        return [("/api/v1/", {"hits": [hit], "nbHits": 1, "page": 0, "nbPages": 1, "hitsPerPage": 100})]


class RssKit(Kit):
    """RSS through the shared feed server: no pagination and no ids on the wire beyond guids."""

    name = source = "rss"
    path = "/news.rss"

    @contextmanager
    def running(self):
        from surgewatch.demo.feedserver import FeedServer

        with FeedServer() as server:
            server.items = []
            server.route(self.path, items=server.items)
            yield server

    def collector(self, server, *, page_size, secret=SECRET):
        from surgewatch.collectors.rss import RssCollector

        return RssCollector([server.url(self.path) + f"?token={secret}"], timeout=5)

    def publish(self, server, text, *, created_at=None, minimal=False):
        n = len(server.items)
        item: dict[str, Any] = {"title": text}
        if not minimal:
            item.update(id=f"urn:acme:{n}", link=f"https://news.example/{n}",
                        published=datetime.fromtimestamp(created_at or time.time(), tz=timezone.utc))
        server.items.append(item)

    def rate_limit(self, server, reset_in):
        server.route(self.path, status=429, retry_after=reset_in)

    def fail(self, server, status):
        server.route(self.path, status=status)

    def malformed(self, server):
        server.route(self.path, body=b"{this is not a feed", content_type="application/rss+xml")

    def huge(self, server):
        server.route(self.path, body=b"<rss>" + b"x" * (9 * 1024 * 1024), content_type="application/rss+xml")

    def recover(self, server):
        server.route(self.path, items=server.items)

    def collector_at(self, url, *, timeout):
        from surgewatch.collectors.rss import RssCollector

        return RssCollector([url + self.path + f"?token={SECRET}"], timeout=timeout)

    def answer(self, server, path, body, *, status=200, headers=None, streamed=0):
        retry_after = (headers or {}).get("Retry-After")
        server.route(self.path, status=status, body=body, retry_after=retry_after,
                     content_type="application/rss+xml")

    def hostile_routes(self, now):
        return [(self.path, None)]

    def hostile_cases(self, server, now):
        for label, body in hostile_feeds(now):
            yield label, lambda b=body: server.route(self.path, body=b, content_type="application/rss+xml")


class GoogleNewsKit(RssKit):
    """Google News: an RSS search feed whose URL carries the brand's query."""

    name = source = "google_news"
    path = "/rss/search"

    def collector(self, server, *, page_size, secret=SECRET):
        from surgewatch.collectors.google_news import GoogleNewsCollector

        return GoogleNewsCollector(api_url=server.url(self.path) + f"?token={secret}", timeout=5)

    def collector_at(self, url, *, timeout):
        from surgewatch.collectors.google_news import GoogleNewsCollector

        return GoogleNewsCollector(api_url=url + self.path + f"?token={SECRET}", timeout=timeout)


# Kits of sources whose fakes live in their own test modules are resolved when a test runs, not
# at import: those modules import this one (circular at collection time otherwise).
KITS: dict[str, Any] = {
    "x": XKit,
    "reddit": RedditKit,
    "hackernews": HackerNewsKit,
    "bluesky": "tests.test_bluesky:BlueskyKit",
    "mastodon": "tests.test_mastodon:MastodonKit",
    "rss": RssKit,
    "google_news": GoogleNewsKit,
}
KIT_MODULES = {"bluesky": "surgewatch.collectors.bluesky", "mastodon": "surgewatch.collectors.mastodon", "rss": "surgewatch.collectors.rss"}


@pytest.fixture(params=list(KITS))
def kit(request) -> Kit:
    name = request.param
    module = KIT_MODULES.get(name, f"collectors.{name}")
    if importlib.util.find_spec(module) is None:
        # A source listed here must exist: a missing module is a failure, not a skip that reads green.
        pytest.fail(f"the {name} kit needs {module}, which does not exist")
    spec = KITS[name]
    if isinstance(spec, str):
        module_name, _, attr = spec.partition(":")
        spec = getattr(importlib.import_module(module_name), attr)
    return spec()


def fetch_error(collector: Collector, cursor: dict | None = None) -> SourceError:
    with pytest.raises(SourceError) as caught:
        collector.fetch(BRAND, cursor)
    return caught.value


# -- the cases -------------------------------------------------------------------------------------
def test_it_pages_through_everything_and_a_resumed_poll_repeats_nothing(kit: Kit):
    with kit.running() as server:
        start = time.time() - 600
        for i in range(35):
            kit.publish(server, f"acme post number {i}", created_at=start + i)
        collector = kit.collector(server, page_size=10)
        first = collector.fetch(BRAND, None)
        assert sorted(m.text for m in first.mentions) == sorted(f"acme post number {i}" for i in range(35))
        assert len({m.id for m in first.mentions}) == 35
        assert all(m.source == kit.source and m.brand == "acme" for m in first.mentions)

        again = kit.collector(server, page_size=10).fetch(BRAND, first.cursor)  # a restart
        assert again.mentions == []

        kit.publish(server, "acme post after the restart")
        third = collector.fetch(BRAND, again.cursor or first.cursor)
        assert [m.text for m in third.mentions] == ["acme post after the restart"]


def test_it_handles_empty_results(kit: Kit):
    with kit.running() as server:
        batch = kit.collector(server, page_size=10).fetch(BRAND, None)
        assert batch.mentions == []
        assert isinstance(batch.cursor, dict)


def test_it_keeps_unicode_and_emoji_intact(kit: Kit):
    text = "ACME ❤️ 東京 café — naïve 🎉🚀 ‮RTL‬"
    with kit.running() as server:
        kit.publish(server, text)
        batch = kit.collector(server, page_size=10).fetch(BRAND, None)
        assert [m.text for m in batch.mentions] == [text]


def test_it_checks_precision_locally_whatever_the_api_returned(kit: Kit):
    with kit.running() as server:
        kit.publish(server, "grandma's acme pie recipe")  # excluded by -pie
        kit.publish(server, "acme cloudy skies")  # matches the first group, "acme"
        kit.publish(server, "acme is down for everyone")
        batch = kit.collector(server, page_size=10).fetch(BRAND, None)
        texts = sorted(m.text for m in batch.mentions)
        assert "grandma's acme pie recipe" not in texts
        assert texts == ["acme cloudy skies", "acme is down for everyone"]


def test_a_post_with_missing_fields_is_still_collected(kit: Kit):
    an_hour_ago = time.time() - 3600
    with kit.running() as server:
        kit.publish(server, "acme bare post", created_at=an_hour_ago, minimal=True)
        batch = kit.collector(server, page_size=10).fetch(BRAND, None)
        [mention] = batch.mentions
        assert mention.text == "acme bare post"
        assert mention.created_at.tzinfo is not None
        if kit.time_from_id:
            assert abs(mention.created_at.timestamp() - an_hour_ago) < 0.01
        else:  # no time on the wire: dated when seen, never in the future
            assert an_hour_ago - 1 <= mention.created_at.timestamp() <= time.time() + 1


def test_a_429_is_transient_and_says_when_to_come_back(kit: Kit):
    with kit.running() as server:
        kit.rate_limit(server, reset_in=120)
        error = fetch_error(kit.collector(server, page_size=10))
        assert not error.permanent
        assert str(error).startswith(kit.source)
        if kit.reset_header:
            assert error.retry_after is not None and 100 <= error.retry_after <= 121


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_permanent_and_never_echo_the_secret(kit: Kit, status: int):
    with kit.running() as server:
        kit.fail(server, status)
        error = fetch_error(kit.collector(server, page_size=10))
        assert error.permanent
        assert str(error).startswith(kit.source)
        assert SECRET not in str(error) and SECRET not in repr(error)


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_transient(kit: Kit, status: int):
    with kit.running() as server:
        kit.fail(server, status)
        error = fetch_error(kit.collector(server, page_size=10))
        assert not error.permanent
        assert str(error).startswith(kit.source)


def test_malformed_json_is_a_clear_error_naming_the_source(kit: Kit):
    with kit.running() as server:
        kit.malformed(server)
        error = fetch_error(kit.collector(server, page_size=10))
        assert str(error).startswith(kit.source)
        assert "malformed" in str(error) or "not an RSS/Atom feed" in str(error)


def test_a_huge_response_is_refused_without_crashing(kit: Kit):
    with kit.running() as server:
        kit.huge(server)
        error = fetch_error(kit.collector(server, page_size=10))
        assert str(error).startswith(kit.source)
        assert not error.permanent or kit.name == "rss"


def test_a_failed_poll_does_not_lose_the_posts_it_could_not_read(kit: Kit):
    with kit.running() as server:
        kit.publish(server, "acme before the outage", created_at=time.time() - 60)
        collector = kit.collector(server, page_size=10)
        cursor = collector.fetch(BRAND, None).cursor
        kit.publish(server, "acme during the outage")
        kit.fail(server, 500)
        fetch_error(collector, cursor)
        kit.recover(server)
        batch = collector.fetch(BRAND, cursor)  # the pipeline kept the old cursor
        assert [m.text for m in batch.mentions] == ["acme during the outage"]


def test_requests_are_counted(kit: Kit):
    with kit.running() as server:
        kit.publish(server, "acme counted")
        batch: Batch = kit.collector(server, page_size=10).fetch(BRAND, None)
        assert batch.requests_made >= 1


# -- the hostile table ------------------------------------------------------------------------------
# Every value each field of a vendor's answer is replaced with, one at a time (issue 13: {"data": 5},
# public_metrics: "many", a 40-digit id, tweet_count: "lots", created_utc: 1e20 or "nan").
HOSTILE_VALUES: list[tuple[str, Any]] = [
    ("null", None), ("an integer", 5), ("a negative number", -1), ("a fraction", 0.5),
    ("1e300", 1e300), ("a 40-digit integer", 10**40), ("NaN", float("nan")), ("Infinity", float("inf")),
    ("a word", "lots"), ('"nan"', "nan"), ("a 40-digit string", "1" * 40), ("an empty string", ""),
    ("a list", ["x"]), ("an object", {"x": 1}), ("true", True),
]
TEN_MB = 10 * 1024 * 1024
MAX_COUNT = 10**13


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path into a JSON value (dict keys, and the first item of each list)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield prefix + (key,)
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list) and value:
        yield prefix + (0,)
        yield from _paths(value[0], prefix + (0,))


def _with(sample: Any, path: tuple, value: Any, *, delete: bool = False) -> Any:
    copy = json.loads(json.dumps(sample))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


def hostile_bodies(sample: Any) -> Iterator[tuple[str, bytes, int]]:
    """(label, body, streamed size) for one answer: broken whole, then field by field."""
    yield "valid answer (the baseline)", json.dumps(sample).encode(), 0
    for label, value in [("the answer is 5", 5), ("the answer is a string", "acme"), ("the answer is []", []),
                         ("the answer is {}", {}), ("the answer is null", None), ("the answer is [5]", [5])]:
        yield label, json.dumps(value).encode(), 0
    yield "not JSON (an HTML error page)", b"<html><body>502 Bad Gateway</body></html>", 0
    yield "an empty body", b"", 0
    yield "JSON cut off mid-way", json.dumps(sample).encode()[:25], 0
    yield "invalid UTF-8", b'{"data": "\xff\xfe\xfd"}', 0
    yield "nested 100 000 deep", b"[" * 100_000 + b"]" * 100_000, 0
    yield "a 10 MB body (declared)", b'{"pad": "' + b"x" * TEN_MB + b'"}', 0
    yield "a 10 MB body (streamed, no length)", b"", TEN_MB
    for path in _paths(sample):
        where = ".".join(str(p) for p in path)
        yield f"{where} missing", json.dumps(_with(sample, path, None, delete=True)).encode(), 0
        for label, value in HOSTILE_VALUES:
            yield f"{where} = {label}", json.dumps(_with(sample, path, value)).encode(), 0


def hostile_feeds(now: float) -> Iterator[tuple[str, bytes]]:
    """Hostile feed documents: RSS has no JSON to break field by field, so its fields are broken here."""
    from email.utils import format_datetime

    good_date = format_datetime(datetime.fromtimestamp(now - 60, tz=timezone.utc))

    def rss(item: str) -> bytes:
        return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://n.example/</link>'
                f"<description>d</description>{item}</channel></rss>").encode()

    good = f"<item><title>acme hostile table</title><link>https://n.example/1</link><pubDate>{good_date}</pubDate></item>"
    yield "valid feed (the baseline)", rss(good)
    yield "an empty body", b""
    yield "not XML", b"{this is not a feed"
    yield "JSON instead of a feed", b'{"data": 5}'
    yield "an HTML page", b"<html><head><title>Login</title></head><body>sign in</body></html>"
    yield "a feed cut off mid-way", rss(good)[:120]
    yield "invalid UTF-8", rss(good).replace(b"hostile", b"\xff\xfe")
    yield "nested 100 000 deep", b"<rss>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</rss>"
    yield "a 10 MB body", rss("<item><title>acme " + "x" * TEN_MB + "</title></item>")
    yield "billion laughs", (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;'
                             b'&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;">]><rss version="2.0"><channel>'
                             b"<item><title>acme &c;</title></item></channel></rss>")
    for label, date in [("a date in year 99999", "Mon, 01 Jan 99999 00:00:00 GMT"), ("a date of NaN", "nan"),
                        ("an epoch of 1e20", "100000000000000000000"), ("an empty date", ""),
                        ("a date before 1970", "Mon, 01 Jan 1900 00:00:00 GMT"),
                        ("a date ten years ahead", "Mon, 01 Jan 2036 00:00:00 GMT")]:
        yield f"pubDate = {label}", rss(f"<item><title>acme hostile table</title><link>https://n.example/1</link>"
                                        f"<pubDate>{date}</pubDate></item>")
    yield "an item with no title, link or date", rss("<item></item>")
    yield "a link that is not a URL", rss("<item><title>acme x</title><link>http://[broken</link></item>")
    yield "a 1 MB title", rss("<item><title>acme " + "y" * 1_000_000 + "</title></item>")
    yield "10 000 items", rss("".join(f"<item><title>acme {n}</title><guid>g{n}</guid></item>" for n in range(10_000)))


def _sane(kit: Kit, batch: Any) -> str | None:
    """Why a batch that came back is not fit to store, or None."""
    if not isinstance(batch, Batch):
        return f"fetch returned {type(batch).__name__}, not a Batch"
    try:
        json.dumps(batch.cursor, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"cursor not storable ({exc})"
    for m in batch.mentions:
        if m.source != kit.source or not isinstance(m.text, str) or not isinstance(m.id, str):
            return f"a mention of the wrong shape: {m!r}"[:200]
        if not 1970 <= m.created_at.year <= 2100:
            return f"a mention dated {m.created_at.year}"
        for name in ("likes", "reposts", "replies", "score", "reach"):
            value = getattr(m, name)
            if value is not None and (not isinstance(value, int) or abs(value) > MAX_COUNT):
                return f"mention.{name} = {value!r}"[:200]
    for ts, count in batch.volume:
        if not (math.isfinite(ts) and isinstance(count, int) and 0 <= count <= MAX_COUNT):
            return f"a volume bucket ({ts!r}, {count!r})"
    if batch.retry_after is not None and not 0 <= batch.retry_after <= 3600:
        return f"retry_after {batch.retry_after}"
    return None


def _handled(kit: Kit, run: Any) -> tuple[str | None, Any]:
    """(None, outcome) when a poll ended in a sane Batch or a SourceError fit to show; else (why, outcome)."""
    try:
        outcome = run()
    except SourceError as error:
        text = str(error)
        if not text.startswith(f"{kit.source}: ") or text.startswith(f"{kit.source}: {kit.source}:"):
            return f"message does not name the source once: {text[:120]!r}", error
        if SECRET in text or SECRET in repr(error) or "\n" in text:
            return f"message leaks the secret or spans lines: {text[:120]!r}", error
        if error.retry_after is not None and not 0 <= error.retry_after <= 3600:
            return f"retry_after {error.retry_after} is not capped at an hour", error
        return None, error
    except Exception as exc:  # noqa: BLE001 - exactly what the table is looking for
        return f"{type(exc).__name__}: {str(exc)[:120]}", exc
    return _sane(kit, outcome), outcome


HOSTILE_TALLY: dict[str, tuple[int, int]] = {}


def test_every_hostile_answer_is_a_source_error_or_a_sane_batch(kit: Kit):
    """The hostile table (issue 13): each answer broken whole and field by field, far-future waits,
    a 401 that echoes the token, and a server dripping its body; every poll must end in a sane Batch
    or a one-line SourceError that names the source, never a bare exception or a hang."""
    now = time.time()
    tried, failures = 0, []
    with kit.running() as server:
        for label, setup in kit.hostile_cases(server, now):
            setup()
            tried += 1
            why, outcome = _handled(kit, lambda: kit.collector(server, page_size=10).fetch(BRAND, None))
            if label.endswith("(the baseline)"):
                assert why is None and isinstance(outcome, Batch) and (outcome.mentions or outcome.volume), (label, why, outcome)
            if why:
                failures.append(f"{label}: {why}")
        path = kit.hostile_routes(now)[-1][0]
        far = str(int(now) + 10 * 365 * 86400)
        special = [
            ("429 with Retry-After: 999999999 and a reset ten years ahead",
             dict(status=429, headers={"Retry-After": "999999999", "x-rate-limit-reset": far,
                                       "x-ratelimit-reset": "315360000", "ratelimit-reset": far})),
            ("503 with Retry-After: 999999999", dict(status=503, headers={"Retry-After": "999999999"})),
            ("401 whose detail echoes the token",
             dict(status=401, body=json.dumps({"title": "Unauthorized", "detail": f"Authorization: Bearer {SECRET}",
                                               "message": f"bad token {SECRET}", "error": f"invalid {SECRET}"}).encode())),
        ]
        for label, spec in special:
            kit.answer(server, path, spec.pop("body", b'{"message": "no"}'), **spec)
            tried += 1
            why, outcome = _handled(kit, lambda: kit.collector(server, page_size=10).fetch(BRAND, None))
            if why is None and not isinstance(outcome, SourceError):
                why = "a failing answer was taken as a success"
            if why:
                failures.append(f"{label}: {why}")
    # A server that drips its body (or its status line and headers too) a byte every 2 s.
    from tests.fakes.drip import DripServer

    for what, headers_too in (("body", False), ("status line and headers", True)):
        with DripServer(every=2.0, body=b'{"data": [], "hits": [], "posts": []}' + b" " * 200,
                        headers_too=headers_too) as drip:
            tried += 1
            started = time.monotonic()
            why, outcome = _handled(kit, lambda: kit.collector_at(drip.url, timeout=2).fetch(BRAND, None))
            took = time.monotonic() - started
            if why is None and not isinstance(outcome, SourceError):
                why = "a dripped answer was taken as a success"
            if took > 15:
                why = f"took {took:.0f}s with timeout 2s"
            if why:
                failures.append(f"drip ({what}): {why}")
    HOSTILE_TALLY[kit.name] = (tried, tried - len(failures))
    print(f"\nhostile answers for {kit.name}: {tried} tried, {tried - len(failures)} handled")
    print(json.dumps({"hostile": kit.name, "tried": tried, "handled": tried - len(failures)}))
    assert not failures, f"{len(failures)} of {tried} hostile answers not handled:\n" + "\n".join(failures[:40])
