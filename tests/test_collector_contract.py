"""One contract every collector passes, table-driven over the same cases (apprise-style).

Each source is a :class:`Kit`: its fake server (speaking the vendor's wire format), how to build
the real collector against it, how to publish a post there and how to make the server fail.  The
cases below never look at which source they run on, so adding a source is adding a kit.
"""
from __future__ import annotations

import importlib
import importlib.util
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


# Kits of sources whose fakes live in their own test modules are resolved when a test runs, not
# at import: those modules import this one (circular at collection time otherwise).
KITS: dict[str, Any] = {
    "x": XKit,
    "reddit": RedditKit,
    "hackernews": HackerNewsKit,
    "bluesky": "tests.test_bluesky:BlueskyKit",
    "mastodon": "tests.test_mastodon:MastodonKit",
    "rss": RssKit,
}
KIT_MODULES = {"bluesky": "collectors.bluesky", "mastodon": "collectors.mastodon", "rss": "collectors.rss"}


@pytest.fixture(params=list(KITS))
def kit(request) -> Kit:
    name = request.param
    module = KIT_MODULES.get(name)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")
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
