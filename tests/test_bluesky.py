"""BlueskyCollector against a local XRPC server speaking app.bsky.feed.searchPosts and
com.atproto.server.createSession (shapes from https://docs.bsky.app/docs/api/)."""
from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from surgewatch.collectors.base import BrandSpec, SourceError
from surgewatch.collectors.bluesky import BlueskyCollector
from tests.fakes.x_server import FakeAPIServer, RecordedRequest, iso_z, loose_match
from tests.test_collector_contract import SECRET, Kit

HANDLE = "brandwatch.bsky.social"
BRAND = BrandSpec(name="acme", query="acme -pie", site="acme.com")
_rkeys = itertools.count(10_000)


@dataclass
class FakePost:
    uri: str
    handle: str
    text: str
    created_at: float
    langs: list[str] = field(default_factory=lambda: ["en"])
    links: tuple[str, ...] = ()
    likes: int = 0
    reposts: int = 0
    replies: int = 0
    minimal: bool = False


class FakeBluesky(FakeAPIServer):
    """Public AppView and PDS in one: ``anonymous_search=False`` answers anonymous searches 403 as
    public.api.bsky.app does under load."""

    def __init__(self, *, password: str = SECRET, anonymous_search: bool = True):
        super().__init__()
        self.password = password
        self.anonymous_search = anonymous_search
        self.posts: list[FakePost] = []
        self.valid_tokens: set[str] = set()
        self.sessions = 0

    def add_post(self, text: str, *, created_at: float | None = None, handle: str = "alice.bsky.social",
                 **fields: Any) -> FakePost:
        rkey = f"3l{next(_rkeys):x}"
        post = FakePost(f"at://did:plc:{handle.split('.')[0]}/app.bsky.feed.post/{rkey}", handle, text,
                        time.time() if created_at is None else created_at, **fields)
        self.posts.append(post)
        return post

    def rate_limited(self, *, reset_in: int = 60) -> None:
        self.fail(429, {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
                  headers={"ratelimit-limit": "3000", "ratelimit-remaining": "0",
                           "ratelimit-reset": str(int(time.time()) + reset_in), "ratelimit-policy": "3000;w=300"})

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def route(self, request: RecordedRequest):
        if request.path == "/xrpc/com.atproto.server.createSession":
            import json

            body = json.loads(request.body or b"{}")
            if body.get("identifier") != HANDLE or body.get("password") != self.password:
                return 401, {}, {"error": "AuthenticationRequired", "message": "Invalid identifier or password"}
            self.sessions += 1
            token = f"jwt-{self.sessions}"
            self.valid_tokens.add(token)
            return 200, {}, {"accessJwt": token, "refreshJwt": f"refresh-{self.sessions}", "handle": HANDLE,
                             "did": "did:plc:brandwatch", "active": True}
        if request.path != "/xrpc/app.bsky.feed.searchPosts":
            return 404, {}, {"error": "MethodNotImplemented", "message": "Method Not Implemented"}
        auth = request.headers.get("authorization", "")
        q = request.query
        if auth:
            if auth.removeprefix("Bearer ") not in self.valid_tokens:
                return 400, {}, {"error": "ExpiredToken", "message": "Token has expired"}
        elif not self.anonymous_search or q.get("cursor"):
            return 403, {"content-type": "text/html"}, b"<html><title>403 Forbidden</title></html>"
        since = q.get("since")
        since_t = time.mktime(time.strptime(since[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone if since else 0
        found = [p for p in self.posts if loose_match(q.get("q", ""), p.text) and p.created_at >= int(since_t)]
        if q.get("lang"):
            found = [p for p in found if q["lang"] in p.langs]
        found.sort(key=lambda p: -p.created_at)
        offset = int(q.get("cursor") or 0)
        limit = int(q.get("limit", 25))
        page = found[offset : offset + limit]
        body: dict[str, Any] = {"posts": [self._view(p) for p in page], "hitsTotal": len(found)}
        if offset + limit < len(found):
            body["cursor"] = str(offset + limit)
        return 200, {"ratelimit-limit": "3000", "ratelimit-remaining": "2999",
                     "ratelimit-reset": str(int(time.time()) + 300), "ratelimit-policy": "3000;w=300"}, body

    @staticmethod
    def _view(p: FakePost) -> dict[str, Any]:
        author = {"did": p.uri.split("/")[2], "handle": p.handle}
        if p.minimal:
            return {"uri": p.uri, "cid": "bafyrei", "author": author,
                    "record": {"$type": "app.bsky.feed.post", "text": p.text}}
        record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": p.text, "createdAt": iso_z(p.created_at),
                                  "langs": p.langs}
        if p.links:
            record["facets"] = [{"index": {"byteStart": 0, "byteEnd": 5},
                                 "features": [{"$type": "app.bsky.richtext.facet#link", "uri": u}]}
                                for u in p.links]
        return {"uri": p.uri, "cid": "bafyreib2rxk3rh6kzwq", "author": {**author, "displayName": p.handle,
                "avatar": "https://cdn.bsky.app/img/avatar/plain/x.jpg", "labels": []},
                "record": record, "replyCount": p.replies, "repostCount": p.reposts, "likeCount": p.likes,
                "quoteCount": 0, "indexedAt": iso_z(p.created_at + 1), "labels": []}


class BlueskyKit(Kit):
    name = source = "bluesky"

    @contextmanager
    def running(self):
        with FakeBluesky() as server:
            yield server

    def collector(self, server, *, page_size, secret=SECRET):
        return BlueskyCollector(api_url=server.url, auth_url=server.url, handle=HANDLE, app_password=secret,
                                limit=page_size, max_pages=50)

    def publish(self, server, text, *, created_at=None, minimal=False):
        server.add_post(text, created_at=created_at, minimal=minimal)


@pytest.fixture
def bsky():
    with FakeBluesky() as server:
        yield server


def test_anonymous_search_uses_the_public_appview_with_latest_sort(bsky):
    bsky.add_post("acme is great", links=("https://www.acme.com/pricing",), likes=4, handle="bob.bsky.social")
    batch = BlueskyCollector(api_url=bsky.url).fetch(BRAND, None)
    [m] = batch.mentions
    [request] = bsky.requests
    assert request.query["q"] == "acme" and request.query["sort"] == "latest"
    assert "authorization" not in request.headers
    assert m.site_links == ("https://www.acme.com/pricing",)
    assert m.url.startswith("https://bsky.app/profile/bob.bsky.social/post/3l")
    assert (m.author, m.likes, m.lang) == ("bob.bsky.social", 4, "en")


def test_anonymous_refusal_is_permanent_and_says_how_to_log_in(bsky):
    bsky.anonymous_search = False
    with pytest.raises(SourceError) as caught:
        BlueskyCollector(api_url=bsky.url).fetch(BRAND, None)
    assert caught.value.permanent and "BLUESKY_APP_PASSWORD" in str(caught.value)


def test_logged_in_search_goes_through_the_pds_with_the_access_token(bsky):
    bsky.anonymous_search = False
    bsky.add_post("acme outage")
    c = BlueskyCollector(api_url="http://127.0.0.1:9", auth_url=bsky.url, handle=HANDLE, app_password=SECRET)
    assert [m.text for m in c.fetch(BRAND, None).mentions] == ["acme outage"]
    c.fetch(BRAND, None)
    assert bsky.sessions == 1  # the session is reused between polls
    assert bsky.requests_to("/xrpc/app.bsky.feed.searchPosts")[-1].headers["authorization"] == "Bearer jwt-1"


def test_an_expired_token_logs_in_again_once(bsky):
    bsky.add_post("acme again")
    c = BlueskyCollector(auth_url=bsky.url, handle=HANDLE, app_password=SECRET)
    c.fetch(BRAND, None)
    bsky.expire_tokens()
    batch = c.fetch(BRAND, None)
    assert [m.text for m in batch.mentions] == ["acme again"] and bsky.sessions == 2


def test_a_wrong_app_password_is_permanent_and_not_echoed(bsky):
    with pytest.raises(SourceError) as caught:
        BlueskyCollector(auth_url=bsky.url, handle=HANDLE, app_password="nope-wrong").fetch(BRAND, None)
    assert caught.value.permanent and "nope-wrong" not in str(caught.value)
    assert "nope-wrong" not in repr(BlueskyCollector(handle=HANDLE, app_password="nope-wrong"))


def test_a_future_created_at_falls_back_to_the_index_time_or_now(bsky):
    now = time.time()
    bsky.add_post("acme from a fast clock", created_at=now + 86400)
    [m] = BlueskyCollector(api_url=bsky.url, now=lambda: now).fetch(BRAND, None).mentions
    assert abs(m.created_at.timestamp() - now) < 1


def test_the_lang_filter_is_sent_and_rechecked(bsky):
    bsky.add_post("acme est en panne", langs=["fr"])
    bsky.add_post("acme is down", langs=["en"])
    batch = BlueskyCollector(api_url=bsky.url).fetch(BrandSpec(name="acme", query="acme lang:en"), None)
    assert [m.text for m in batch.mentions] == ["acme is down"]
    assert bsky.requests[0].query["lang"] == "en"
