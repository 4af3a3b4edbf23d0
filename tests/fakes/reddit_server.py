"""A local Reddit API server for tests and demos, speaking what praw/prawcore expect.

* ``POST /api/v1/access_token`` (HTTP Basic client_id:secret, ``grant_type=client_credentials``)
  -> ``{"access_token", "token_type": "bearer", "expires_in": 86400, "scope": "*"}``
  https://github.com/reddit-archive/reddit/wiki/OAuth2#application-only-oauth
* ``GET /r/{subs}/search/`` and ``GET /r/{subs}/comments/`` -> Listings
  ``{"kind": "Listing", "data": {"after", "before", "dist", "children": [{"kind": "t3", "data": {...}}]}}``
  newest first, paged with ``after=<fullname>`` and ``limit``.
* ``x-ratelimit-used`` / ``-remaining`` / ``-reset`` (seconds until the window resets) on every
  API answer: prawcore's rate limiter reads them.  https://support.reddithelp.com/hc/en-us/articles/16160319875092

Usage: ``praw.Reddit(..., oauth_url=fake.url, reddit_url=fake.url)``.
"""
from __future__ import annotations

import base64
import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs

from tests.fakes.x_server import FakeAPIServer, RecordedRequest, loose_match

_ids = itertools.count(int("a0000", 36))


@dataclass
class FakeThing:
    kind: str  # "t3" submission, "t1" comment
    id: str
    subreddit: str
    created_utc: float
    title: str = ""
    body: str = ""  # selftext for t3, body for t1
    author: str = "someone"
    score: int = 1
    num_comments: int = 0
    url: str = ""
    minimal: bool = False  # answer only the fields praw cannot do without

    @property
    def fullname(self) -> str:
        return f"{self.kind}_{self.id}"


class FakeReddit(FakeAPIServer):
    def __init__(self, *, client_id: str = "test-client", client_secret: str = "test-secret",
                 clock: Callable[[], float] = time.time):
        super().__init__(clock=clock)
        self.client_id = client_id
        self.client_secret = client_secret
        self.things: list[FakeThing] = []
        self.tokens_issued: list[str] = []
        self.ratelimit_remaining = 996.0
        self.ratelimit_used = 4
        self.ratelimit_reset = 540

    # -- scripting ---------------------------------------------------------------------------------
    def add_post(self, title: str, *, selftext: str = "", subreddit: str = "test",
                 created_utc: float | None = None, **fields: Any) -> FakeThing:
        return self._add("t3", subreddit, created_utc, title=title, body=selftext, **fields)

    def add_comment(self, body: str, *, subreddit: str = "test", created_utc: float | None = None,
                    **fields: Any) -> FakeThing:
        return self._add("t1", subreddit, created_utc, body=body, **fields)

    def _add(self, kind: str, subreddit: str, created_utc: float | None, **fields: Any) -> FakeThing:
        thing = FakeThing(kind, base36(next(_ids)), subreddit,
                          self.clock() if created_utc is None else created_utc, **fields)
        self.things.append(thing)
        return thing

    def rate_limited(self, *, retry_after: int = 0, reset_in: int = 120) -> None:
        """The next API call answers 429 (Reddit sends no Retry-After, only x-ratelimit-reset)."""
        headers = {"x-ratelimit-remaining": "0", "x-ratelimit-used": "1000",
                   "x-ratelimit-reset": str(reset_in)}
        if retry_after:
            headers["retry-after"] = str(retry_after)
        self.fail(429, {"message": "Too Many Requests", "error": 429}, headers=headers, path="/r/")

    def invalid_grant(self) -> None:
        """The token endpoint answers 200 with an OAuth error body, as Reddit does."""
        self.fail(200, {"error": "invalid_grant"}, path="/api/v1/access_token")

    # -- serving -------------------------------------------------------------------------------------
    def extra_headers(self, request: RecordedRequest, status: int) -> dict[str, str]:
        if not request.path.startswith("/r/"):
            return {}
        return {"x-ratelimit-used": str(self.ratelimit_used),
                "x-ratelimit-remaining": f"{self.ratelimit_remaining:.1f}",
                "x-ratelimit-reset": str(self.ratelimit_reset)}

    def route(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if request.path == "/api/v1/access_token":
            return self._token(request)
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or auth[7:] not in self.tokens_issued:
            return 401, {"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'}, \
                {"message": "Unauthorized", "error": 401}
        self.ratelimit_used += 1
        self.ratelimit_remaining -= 1
        parts = request.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "r" and parts[2] in ("search", "comments"):
            return self._listing(parts[1], parts[2], request.query)
        return 404, {}, {"message": "Not Found", "error": 404}

    def _token(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return 401, {}, {"message": "Unauthorized", "error": 401}
        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return 200, {}, {"error": "unsupported_grant_type"}
        token = f"-fake{len(self.tokens_issued)}"
        self.tokens_issued.append(token)
        return 200, {}, {"access_token": token, "token_type": "bearer", "expires_in": 86400,
                         "scope": "*"}

    def _listing(self, subs: str, what: str, q: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        wanted = {s.lower() for s in subs.split("+")}
        kind = "t3" if what == "search" else "t1"
        found = [t for t in self.things if t.kind == kind
                 and ("all" in wanted or t.subreddit.lower() in wanted)]
        if what == "search":
            found = [t for t in found if loose_match(q.get("q", ""), f"{t.title} {t.body}")]
        found.sort(key=lambda t: (-t.created_utc, -int(t.id, 36)))  # sort=new
        if q.get("after"):
            names = [t.fullname for t in found]
            found = found[names.index(q["after"]) + 1:] if q["after"] in names else []
        limit = min(100, int(q.get("limit", 25)))
        page = found[:limit]
        after = page[-1].fullname if len(found) > limit else None
        return 200, {}, {"kind": "Listing", "data": {
            "after": after, "before": None, "dist": len(page), "modhash": None,
            "geo_filter": "", "children": [{"kind": t.kind, "data": _thing_json(t)} for t in page]}}


def _thing_json(t: FakeThing) -> dict[str, Any]:
    base: dict[str, Any] = {"id": t.id, "name": t.fullname}
    if t.kind == "t3":
        base["title"] = t.title
    else:
        base["body"] = t.body
    if t.minimal:
        return base
    permalink = f"/r/{t.subreddit}/comments/{t.id}/{t.title[:20].replace(' ', '_').lower()}/"
    base.update({"subreddit": t.subreddit, "subreddit_name_prefixed": f"r/{t.subreddit}",
                 "author": t.author, "created_utc": t.created_utc, "score": t.score,
                 "ups": t.score, "permalink": permalink})
    if t.kind == "t3":
        base.update({"selftext": t.body, "num_comments": t.num_comments,
                     "url": t.url or f"https://www.reddit.com{permalink}", "is_self": not t.url,
                     "over_18": False})
    else:
        base.update({"link_id": "t3_zzzzz", "parent_id": "t3_zzzzz",
                     "permalink": f"/r/{t.subreddit}/comments/zzzzz/post/{t.id}/"})
    return base


def base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rem = divmod(number, 36)
        out = digits[rem] + out
    return out or "0"
