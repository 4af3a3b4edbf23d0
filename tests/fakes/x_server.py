"""A local X (Twitter) API v2 server for tests and demos, plus the machinery every fake API shares.

It speaks the documented wire format of the two endpoints SurgeWatch reads, so the real tweepy
client can talk to it (through :class:`collectors.links.GuardedAdapter`'s base-URL rewrite):

* ``GET /2/tweets/search/recent`` -> ``{"data": [...], "includes": {"users": [...]},
  "meta": {"newest_id", "oldest_id", "result_count", "next_token"}}``
  https://docs.x.com/x-api/posts/recent-search
* ``GET /2/tweets/counts/recent`` -> ``{"data": [{"start", "end", "tweet_count"}],
  "meta": {"total_tweet_count"}}``  https://docs.x.com/x-api/posts/recent-post-counts

with ``x-rate-limit-limit`` / ``-remaining`` / ``-reset`` headers on every answer.  Posts and
failures (429 with reset, 401, 403, 500, malformed JSON, a huge body) are scripted by the test;
every request is recorded.

Usage::

    with FakeX(bearer_token="t") as x:
        x.add_tweet("Acme is down again")
        collector = XCollector("t", api_url=x.url)
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

TWITTER_EPOCH_MS = 1288834974657


# -- shared machinery ----------------------------------------------------------------------------
@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class ScriptedFailure:
    """What the next matching request gets instead of a normal answer."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    path_prefix: str = ""
    chunked_huge: int = 0  # >0: stream this many bytes with no Content-Length


class FakeAPIServer:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) in a daemon thread, as a context manager.

    Subclasses implement :meth:`route`; this class records requests and plays scripted failures
    first (in order), so a test can say "the second request answers 429" with ``fail(...)`` calls.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self._failures: deque[ScriptedFailure] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- scripting -----------------------------------------------------------------------------
    def fail(self, status: int, body: Any = None, *, headers: dict[str, str] | None = None,
             times: int = 1, path: str = "") -> None:
        """The next ``times`` requests whose path starts with ``path`` answer ``status``."""
        raw = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        for _ in range(times):
            self._failures.append(ScriptedFailure(status, raw, dict(headers or {}), path))

    def fail_malformed(self, *, path: str = "") -> None:
        """A 200 whose body is cut off mid-JSON (a proxy dropping the connection)."""
        self._failures.append(ScriptedFailure(200, b'{"data": [{"id": "1", "te', {}, path))

    def fail_huge(self, size: int, *, path: str = "") -> None:
        """A 200 that streams ``size`` bytes of a JSON array with no Content-Length."""
        self._failures.append(ScriptedFailure(200, b"", {}, path, chunked_huge=size))

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    # -- to implement ----------------------------------------------------------------------------
    def route(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        """Answer one request: (status, headers, JSON-able body or raw bytes)."""
        raise NotImplementedError

    def extra_headers(self, request: RecordedRequest, status: int) -> dict[str, str]:
        """Headers added to every answer (rate limits)."""
        return {}

    # -- server ------------------------------------------------------------------------------------
    def __enter__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: simple and close-delimited

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                request = RecordedRequest(self.command, parts.path, query,
                                          {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(request)
                    failure = next((f for f in fake._failures if request.path.startswith(f.path_prefix)), None)
                    if failure is not None:
                        fake._failures.remove(failure)
                try:
                    if failure is not None and failure.chunked_huge:
                        self._send_huge(failure.chunked_huge)
                        return
                    if failure is not None:
                        status, headers, payload = failure.status, failure.headers, failure.body
                        merged = {**fake.extra_headers(request, status), **headers}
                    else:
                        status, headers, payload = fake.route(request)
                        merged = {**fake.extra_headers(request, status), **headers}
                    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    merged.setdefault("Content-Type", "application/json; charset=utf-8")
                    for name, value in merged.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeouts, size caps): that is what was tested

            def _send_huge(self, size: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                chunk = b'{"id": "1", "text": "' + b"x" * 4000 + b'"},'
                self.wfile.write(b'{"data": [')
                sent = 0
                while sent < size:
                    self.wfile.write(chunk)
                    sent += len(chunk)
                self.wfile.write(b'{"id": "2", "text": "end"}]}')

            do_GET = do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def loose_match(query: str, text: str) -> bool:
    """A deliberately fuzzy search, like a vendor's: any positive word of the query appears, and
    exclusions are ignored.  (The collectors' local re-check is what makes results precise.)"""
    words = []
    for token in re.findall(r'-?"[^"]*"|\S+', query or ""):
        if token.startswith("-") or token.upper() in {"OR", "AND", "NOT"} or ":" in token:
            continue
        words += re.findall(r"[\w#@]+", token.strip('"()'))
    lowered = text.casefold()
    return any(w.casefold().lstrip("#@") in lowered for w in words if w.upper() not in {"OR", "AND", "NOT"})


def iso_z(epoch: float) -> str:
    """X's time format: ``2026-11-28T00:01:02.000Z``."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int(epoch * 1000) % 1000:03d}Z"


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- X ------------------------------------------------------------------------------------------------
@dataclass
class FakeTweet:
    id: int
    text: str
    created_at: float
    author_id: str
    lang: str = "en"
    likes: int = 0
    retweets: int = 0
    replies: int = 0
    quotes: int = 0
    impressions: int = 0
    urls: tuple[str, ...] = ()
    minimal: bool = False  # answer only {"id", "text"} like an old recording


@dataclass
class FakeUser:
    id: str
    username: str
    followers: int


SEARCH_PATH = "/2/tweets/search/recent"
COUNTS_PATH = "/2/tweets/counts/recent"

# Per-app limits of pay-per-use / Basic access per 15-minute window (DESIGN.md "Useful facts").
WINDOW_SECONDS = 900
LIMITS = {SEARCH_PATH: 450, COUNTS_PATH: 300}


class FakeX(FakeAPIServer):
    def __init__(self, *, bearer_token: str = "test-bearer", clock: Callable[[], float] = time.time):
        super().__init__(clock=clock)
        self.bearer_token = bearer_token
        self.tweets: list[FakeTweet] = []
        self.users: dict[str, FakeUser] = {}
        self.remaining = dict(LIMITS)  # scriptable: set to 0 to see the collector hold back
        self.window_reset = int(clock()) + WINDOW_SECONDS

    # -- scripting -------------------------------------------------------------------------------
    def add_user(self, username: str, followers: int = 0) -> FakeUser:
        user = FakeUser(str(1000 + len(self.users)), username, followers)
        self.users[user.id] = user
        return user

    def add_tweet(self, text: str, *, author: str = "someone", followers: int = 0,
                  created_at: float | None = None, **fields: Any) -> FakeTweet:
        """A tweet with a real snowflake id for its time (ids grow with time, as X's do)."""
        when = self.clock() if created_at is None else created_at
        user = next((u for u in self.users.values() if u.username == author), None) or \
            self.add_user(author, followers)
        ms = int(when * 1000) - TWITTER_EPOCH_MS
        tweet_id = (ms << 22) + len(self.tweets)  # worker/sequence bits keep same-ms ids unique
        tweet = FakeTweet(tweet_id, text, when, user.id, **fields)
        self.tweets.append(tweet)
        return tweet

    def rate_limited(self, *, path: str = SEARCH_PATH, reset_in: int = 300) -> int:
        """The next request to ``path`` answers 429 with X's headers; returns the reset epoch."""
        reset = int(self.clock()) + reset_in
        self.fail(429, {"title": "Too Many Requests", "detail": "Too Many Requests",
                        "type": "about:blank", "status": 429},
                  headers={"x-rate-limit-limit": str(LIMITS.get(path, 450)),
                           "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)},
                  path=path)
        return reset

    def free_tier(self) -> None:
        """Every request answers the 403 X gives apps without read access."""
        self.fail(403, FREE_TIER_FORBIDDEN, times=1000)

    # -- serving -----------------------------------------------------------------------------------
    def extra_headers(self, request: RecordedRequest, status: int) -> dict[str, str]:
        if request.path not in LIMITS:
            return {}
        return {"x-rate-limit-limit": str(LIMITS[request.path]),
                "x-rate-limit-remaining": str(max(0, self.remaining[request.path])),
                "x-rate-limit-reset": str(self.window_reset)}

    def route(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if request.headers.get("authorization") != f"Bearer {self.bearer_token}":
            return 401, {}, {"title": "Unauthorized", "type": "about:blank", "status": 401,
                             "detail": "Unauthorized"}
        if request.path in self.remaining:
            self.remaining[request.path] -= 1
        if request.path == SEARCH_PATH:
            return self._search(request.query)
        if request.path == COUNTS_PATH:
            return self._counts(request.query)
        return 404, {}, {"title": "Not Found Error", "type": "https://api.twitter.com/2/problems/resource-not-found"}

    def _matching(self, query: dict[str, str]) -> list[FakeTweet]:
        return [t for t in self.tweets if loose_match(query.get("query", ""), t.text)]

    def _search(self, q: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        max_results = int(q.get("max_results", 10))
        if not 10 <= max_results <= 100:
            return 400, {}, {"errors": [{"parameters": {"max_results": [str(max_results)]},
                                         "message": "The `max_results` query parameter value "
                                         f"[{max_results}] is not between 10 and 100"}],
                             "title": "Invalid Request", "detail": "One or more parameters to your "
                             "request was invalid.", "type": "https://api.twitter.com/2/problems/invalid-request"}
        since_id = int(q["since_id"]) if q.get("since_id") else 0
        found = sorted((t for t in self._matching(q) if t.id > since_id), key=lambda t: -t.id)
        offset = int(base64.urlsafe_b64decode(q["next_token"]).decode()) if q.get("next_token") else 0
        page = found[offset : offset + max_results]
        if not page:
            return 200, {}, {"meta": {"result_count": 0}}
        fields = set(filter(None, q.get("tweet.fields", "").split(",")))
        with_authors = "author_id" in q.get("expansions", "")
        data = [self._tweet_json(t, fields, with_authors) for t in page]
        meta: dict[str, Any] = {"newest_id": str(page[0].id), "oldest_id": str(page[-1].id),
                                "result_count": len(page)}
        if offset + max_results < len(found):
            meta["next_token"] = base64.urlsafe_b64encode(str(offset + max_results).encode()).decode()
        body: dict[str, Any] = {"data": data, "meta": meta}
        if with_authors:
            ids = dict.fromkeys(t.author_id for t in page if not t.minimal)
            body["includes"] = {"users": [self._user_json(self.users[i]) for i in ids]}
        return 200, {}, body

    @staticmethod
    def _tweet_json(t: FakeTweet, fields: set[str], with_authors: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"id": str(t.id), "text": t.text}
        if t.minimal:
            return out
        out["edit_history_tweet_ids"] = [str(t.id)]
        if with_authors:
            out["author_id"] = t.author_id
        if "created_at" in fields:
            out["created_at"] = iso_z(t.created_at)
        if "lang" in fields:
            out["lang"] = t.lang
        if "public_metrics" in fields:
            out["public_metrics"] = {"retweet_count": t.retweets, "reply_count": t.replies,
                                     "like_count": t.likes, "quote_count": t.quotes,
                                     "bookmark_count": 0, "impression_count": t.impressions}
        if "entities" in fields and t.urls:
            out["entities"] = {"urls": [
                {"start": 0, "end": 23, "url": f"https://t.co/x{n}", "expanded_url": u,
                 "display_url": u.split("//", 1)[-1][:30]} for n, u in enumerate(t.urls)]}
        return out

    @staticmethod
    def _user_json(u: FakeUser) -> dict[str, Any]:
        return {"id": u.id, "name": u.username.title(), "username": u.username,
                "public_metrics": {"followers_count": u.followers, "following_count": 10,
                                   "tweet_count": 100, "listed_count": 1, "like_count": 5}}

    def _counts(self, q: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        now = self.clock()
        # X's defaults: the last 7 days, ending 30 s before the request.
        end = _parse_iso(q["end_time"]) if q.get("end_time") else now - 30
        start = _parse_iso(q["start_time"]) if q.get("start_time") else end - 7 * 86400
        step = {"minute": 60, "hour": 3600, "day": 86400}[q.get("granularity", "hour")]
        matching = self._matching(q)
        buckets, total = [], 0
        t = start - start % step
        while t < end:
            n = sum(1 for tw in matching if t <= tw.created_at < t + step)
            buckets.append({"end": iso_z(t + step), "start": iso_z(t), "tweet_count": n})
            total += n
            t += step
        return 200, {}, {"data": buckets, "meta": {"total_tweet_count": total}}


# The body X sends when an app's access level cannot read (the free tier), verbatim in shape.
FREE_TIER_FORBIDDEN = {
    "client_id": "12345678",
    "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use keys and "
              "tokens from a Twitter developer App that is attached to a Project. You can create a "
              "project via the developer portal.",
    "registration_url": "https://developer.twitter.com/en/docs/projects/overview",
    "title": "Client Forbidden",
    "required_enrollment": "Appropriate Level of API Access",
    "reason": "client-not-enrolled",
    "type": "https://api.twitter.com/2/problems/client-forbidden",
}
