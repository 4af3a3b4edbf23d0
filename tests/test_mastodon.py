"""MastodonCollector against a local Mastodon REST API (tag timelines and v2 search; entity shapes
from https://docs.joinmastodon.org/entities/Status/)."""
from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest

from surgewatch.collectors.base import BrandSpec, SourceError
from surgewatch.collectors.mastodon import MastodonCollector
from tests.fakes.x_server import FakeAPIServer, RecordedRequest, iso_z, loose_match
from tests.test_collector_contract import SECRET, Kit

BRAND = BrandSpec(name="acme", query="acme -pie", site="acme.com")
_seq = itertools.count()


@dataclass
class FakeStatus:
    id: int
    text: str
    created_at: float
    tags: list[str] = field(default_factory=list)
    acct: str = "alice@example.social"
    followers: int = 10
    language: str | None = "en"
    card_url: str | None = None
    favourites: int = 0
    reblog: bool = False
    minimal: bool = False


class FakeMastodon(FakeAPIServer):
    def __init__(self, *, token: str = SECRET):
        super().__init__()
        self.token = token
        self.statuses: list[FakeStatus] = []

    def add_status(self, text: str, *, created_at: float | None = None, tags: list[str] | None = None,
                   **fields: Any) -> FakeStatus:
        when = time.time() if created_at is None else created_at
        # Mastodon ids: milliseconds << 16 plus a sequence, so they sort by time.
        status = FakeStatus((int(when * 1000) << 16) + next(_seq) % 65536, text, when,
                            tags if tags is not None else ["acme"], **fields)
        self.statuses.append(status)
        return status

    def rate_limited(self, *, reset_in: int = 60) -> None:
        reset = datetime.fromtimestamp(time.time() + reset_in, tz=timezone.utc).isoformat()
        self.fail(429, {"error": "Too many requests"},
                  headers={"x-ratelimit-limit": "300", "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})

    def route(self, request: RecordedRequest):
        auth = request.headers.get("authorization")
        if auth is not None and auth != f"Bearer {self.token}":
            return 401, {}, {"error": "The access token is invalid"}
        q = request.query
        if request.path.startswith("/api/v1/timelines/tag/"):
            tag = request.path.rsplit("/", 1)[1].lower()
            found = [s for s in self.statuses if tag in [t.lower() for t in s.tags]]
        elif request.path == "/api/v2/search":
            if auth is None:
                return 200, {}, {"accounts": [], "statuses": [], "hashtags": []}  # anonymous: no statuses
            found = [s for s in self.statuses if loose_match(q.get("q", ""), s.text)]
        else:
            return 404, {}, {"error": "Record not found"}
        limit = min(40, int(q.get("limit", 20)))
        found.sort(key=lambda s: -s.id)
        if q.get("max_id"):
            found = [s for s in found if s.id < int(q["max_id"])]
        if q.get("since_id"):
            found = [s for s in found if s.id > int(q["since_id"])]
        if q.get("min_id"):  # the page immediately newer than min_id, still newest first
            found = [s for s in found if s.id > int(q["min_id"])][-limit:]
        page = [self._json(s) for s in found[:limit]]
        headers = {"x-ratelimit-limit": "300", "x-ratelimit-remaining": "299",
                   "x-ratelimit-reset": datetime.fromtimestamp(time.time() + 300, tz=timezone.utc).isoformat()}
        if request.path == "/api/v2/search":
            return 200, headers, {"accounts": [], "statuses": page, "hashtags": []}
        return 200, headers, page

    @staticmethod
    def _json(s: FakeStatus) -> dict[str, Any]:
        uri = f"https://example.social/users/alice/statuses/{s.id}"
        if s.minimal:
            return {"id": str(s.id), "content": f"<p>{s.text}</p>"}
        return {"id": str(s.id), "uri": uri, "url": f"https://example.social/@alice/{s.id}",
                "created_at": iso_z(s.created_at), "content": f"<p>{s.text}</p>", "spoiler_text": "",
                "language": s.language, "visibility": "public", "sensitive": False,
                "replies_count": 0, "reblogs_count": 0, "favourites_count": s.favourites,
                "account": {"id": "1", "username": "alice", "acct": s.acct, "followers_count": s.followers},
                "card": {"url": s.card_url, "title": "card"} if s.card_url else None,
                "tags": [{"name": t, "url": f"https://example.social/tags/{t}"} for t in s.tags],
                "reblog": {"id": "1"} if s.reblog else None}


class MastodonKit(Kit):
    name = source = "mastodon"

    @contextmanager
    def running(self):
        with FakeMastodon() as server:
            yield server

    def collector(self, server, *, page_size, secret=SECRET):
        return MastodonCollector(api_url=server.url, hashtags=["acme"], access_token=secret,
                                 limit=page_size, max_pages=50)

    def publish(self, server, text, *, created_at=None, minimal=False):
        server.add_status(text, created_at=created_at, minimal=minimal)


@pytest.fixture
def masto():
    with FakeMastodon() as server:
        yield server


def test_hashtags_default_to_the_single_word_terms_of_the_query(masto):
    MastodonCollector(api_url=masto.url).fetch(BrandSpec(name="acme", query='acme OR "acme cloud" OR AcmeApp'), None)
    assert [r.path for r in masto.requests] == ["/api/v1/timelines/tag/acme", "/api/v1/timelines/tag/AcmeApp"]
    assert all("authorization" not in r.headers for r in masto.requests)


def test_a_status_maps_to_a_mention_with_reach_and_card_link(masto):
    masto.add_status('acme checkout is <a href="https://acme.com/cart">down</a>', card_url="https://www.acme.com/status",
                     followers=5400, favourites=9, acct="ops@infosec.exchange")
    [m] = MastodonCollector(api_url=masto.url, hashtags=["#acme"]).fetch(BRAND, None).mentions
    assert m.text == "acme checkout is down"
    assert m.site_links == ("https://www.acme.com/status", "https://acme.com/cart")
    assert (m.author, m.reach, m.likes, m.lang) == ("ops@infosec.exchange", 5400, 9, "en")
    assert m.id.startswith("https://example.social/users/alice/statuses/")


def test_boosts_are_not_counted_again(masto):
    masto.add_status("acme original")
    masto.add_status("acme original", reblog=True)
    batch = MastodonCollector(api_url=masto.url, hashtags=["acme"]).fetch(BRAND, None)
    assert len(batch.mentions) == 1


def test_a_busy_tag_is_read_forward_from_the_cursor_without_gaps(masto):
    masto.add_status("acme before", created_at=time.time() - 10)
    c = MastodonCollector(api_url=masto.url, hashtags=["acme"], limit=10, max_pages=2)
    first = c.fetch(BRAND, None)
    for i in range(25):
        masto.add_status(f"acme {i}", created_at=time.time() + i / 1000)
    second = c.fetch(BRAND, first.cursor)
    assert sorted(m.text for m in second.mentions) == sorted(f"acme {i}" for i in range(20))
    assert any("more than 2 new pages" in note for note in second.notes)
    third = c.fetch(BRAND, second.cursor)
    assert sorted(m.text for m in third.mentions) == sorted(f"acme {i}" for i in range(20, 25))


def test_a_first_poll_reads_only_the_last_hour(masto):
    masto.add_status("acme yesterday", created_at=time.time() - 86400)
    masto.add_status("acme today")
    batch = MastodonCollector(api_url=masto.url, hashtags=["acme"]).fetch(BRAND, None)
    assert [m.text for m in batch.mentions] == ["acme today"]


def test_search_is_used_with_a_token_and_results_are_not_doubled(masto):
    masto.add_status("acme via both")  # tagged and matching the search
    masto.add_status("acme via search only", tags=[])
    batch = MastodonCollector(api_url=masto.url, hashtags=["acme"], access_token=SECRET).fetch(BRAND, None)
    assert sorted(m.text for m in batch.mentions) == ["acme via both", "acme via search only"]
    [search] = masto.requests_to("/api/v2/search")
    assert search.query["type"] == "statuses" and search.headers["authorization"] == f"Bearer {SECRET}"


def test_a_429_reads_the_iso_reset_time(masto):
    masto.rate_limited(reset_in=200)
    with pytest.raises(SourceError) as caught:
        MastodonCollector(api_url=masto.url, hashtags=["acme"]).fetch(BRAND, None)
    assert not caught.value.permanent and 190 <= caught.value.retry_after <= 201


def test_no_hashtag_and_no_token_is_a_permanent_configuration_error(masto):
    with pytest.raises(SourceError) as caught:
        MastodonCollector(api_url=masto.url).fetch(BrandSpec(name="acme", query='"acme cloud"'), None)
    assert caught.value.permanent and "hashtags" in str(caught.value)


def test_the_token_never_appears_in_the_repr():
    assert SECRET not in repr(MastodonCollector(access_token=SECRET))
