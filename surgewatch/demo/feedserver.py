"""A local HTTP server that serves RSS 2.0 / Atom feeds: the simulated news world of ``surgewatch
demo`` and the fake outside service of the feed collectors' tests.

Everything is served on ``127.0.0.1`` at a free port, from a daemon thread::

    with FeedServer(items_at=lambda path: items_for(path)) as server:
        url = server.url("/news.rss")          # "http://127.0.0.1:PORT/news.rss"
        server.route("/down.rss", status=503, retry_after=30)
        ...
        server.requests                        # what clients sent, for assertions

Two ways to say what a path serves, the first that applies wins:

1. a scripted :meth:`route` (items, a raw body, a status, headers, a delay...), changeable at any
   time from the test or the demo;
2. ``items_at(path)``: a callable returning the items of that path *now* (so items can follow a
   simulated clock), or ``None`` for 404.

An *item* is a dict with ``id``, ``title``, ``summary`` (HTML allowed), ``link``, ``published``
(an aware ``datetime``) and ``author``; all but ``title`` are optional.  Paths ending in ``.atom``
or ``/atom`` are served as Atom 1.0, others as RSS 2.0, unless the route says ``fmt=``.

Conditional GET works like a real server's: every document carries an ``ETag`` (a hash of the
body) and a ``Last-Modified`` (the newest item's date); a request whose ``If-None-Match`` matches,
or (without ``If-None-Match``) whose ``If-Modified-Since`` is not older, gets ``304 Not Modified``.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

Item = Mapping[str, Any]
ItemsAt = Callable[[str], "list[Item] | None"]

_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass
class Route:
    """What one path serves.  ``body`` (raw bytes) overrides ``items``; ``status`` other than 200
    sends that status (with ``body`` if given, else a short text).  ``delay`` seconds pass before
    the response starts (to trip a client's read timeout).  ``chunked`` omits Content-Length and
    closes the connection to end the body, like a streaming server."""

    items: list[Item] | None = None
    fmt: str | None = None  # "rss" | "atom"; None: by the path's suffix
    status: int = 200
    body: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: int | str | None = None
    delay: float = 0.0
    etag: bool = True  # send an ETag (Last-Modified is always sent) and honour If-None-Match
    chunked: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # lower-case names
    status: int  # what the server answered


class FeedServer:
    """See the module docstring.  Use as a context manager, or call :meth:`start` / :meth:`stop`."""

    def __init__(self, items_at: ItemsAt | None = None, *, title: str = "SurgeWatch test feed",
                 language: str | None = None):
        self.items_at = items_at
        self.title = title
        self.language = language  # RSS <language> / Atom xml:lang, when set
        self.requests: list[RecordedRequest] = []
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "FeedServer":
        handler = type("FeedHandler", (_Handler,), {"feed_server": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Slow (delayed) handlers must not hold up stop(): threads are daemons and not joined.
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        # A short poll interval: shutdown() waits for the loop to notice, 0.5 s by default.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="feed-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FeedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FeedServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- scripting ----------------------------------------------------------------------------
    def route(self, path: str, items: list[Item] | None = None, **options: Any) -> Route:
        """Script what ``path`` serves (replacing any earlier route); options are :class:`Route`
        fields.  Returns the route, whose fields can be changed later."""
        route = Route(items=items, **options)
        with self._lock:
            self._routes[path] = route
        return route

    def unroute(self, path: str) -> None:
        with self._lock:
            self._routes.pop(path, None)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # -- rendering ----------------------------------------------------------------------------
    def _resolve(self, path: str) -> Route | None:
        with self._lock:
            route = self._routes.get(path)
        if route is not None:
            return route
        if self.items_at is None:
            return None
        items = self.items_at(path)
        return None if items is None else Route(items=list(items))

    def _render(self, path: str, route: Route) -> tuple[bytes, str, datetime]:
        items = list(route.items or [])
        newest = max((_published(i) for i in items), default=_EPOCH)
        if route.body is not None:
            return route.body, route.content_type or "application/xml", newest
        fmt = route.fmt or ("atom" if path.endswith((".atom", "/atom")) else "rss")
        if fmt == "atom":
            body = render_atom(items, title=self.title, updated=newest, language=self.language)
            ctype = "application/atom+xml; charset=utf-8"
        else:
            body = render_rss(items, title=self.title, updated=newest, language=self.language)
            ctype = "application/rss+xml; charset=utf-8"
        return body, route.content_type or ctype, newest


def _published(item: Item) -> datetime:
    value = item.get("published")
    return value if isinstance(value, datetime) else _EPOCH


def render_rss(items: list[Item], *, title: str = "feed", updated: datetime | None = None,
               language: str | None = None) -> bytes:
    """An RSS 2.0 document (https://www.rssboard.org/rss-specification)."""
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>',
        f"<title>{escape(title)}</title><link>http://127.0.0.1/</link><description>{escape(title)}</description>",
    ]
    if language:
        out.append(f"<language>{escape(language)}</language>")
    if updated is not None:
        out.append(f"<lastBuildDate>{format_datetime(updated, usegmt=True)}</lastBuildDate>")
    for item in items:
        out.append("<item>")
        out.append(f"<title>{escape(str(item.get('title', '')))}</title>")
        if item.get("link"):
            out.append(f"<link>{escape(str(item['link']))}</link>")
        if item.get("summary") is not None:
            out.append(f"<description>{escape(str(item['summary']))}</description>")
        if item.get("id"):
            out.append(f'<guid isPermaLink="false">{escape(str(item["id"]))}</guid>')
        if isinstance(item.get("published"), datetime):
            out.append(f"<pubDate>{format_datetime(item['published'].astimezone(timezone.utc), usegmt=True)}</pubDate>")
        if item.get("author"):
            # RSS <author> must be an e-mail address; dc:creator carries a name.
            out.append(f"<dc:creator>{escape(str(item['author']))}</dc:creator>")
        out.append("</item>")
    out.append("</channel></rss>")
    return "\n".join(out).encode("utf-8")


def render_atom(items: list[Item], *, title: str = "feed", updated: datetime | None = None,
                language: str | None = None) -> bytes:
    """An Atom 1.0 document (RFC 4287)."""
    stamp = (updated or _EPOCH).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom"' + (f" xml:lang={quoteattr(language)}" if language else "") + ">",
        f"<title>{escape(title)}</title><id>urn:surgewatch:test-feed</id><updated>{stamp}</updated>",
    ]
    for item in items:
        published = _published(item).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        out.append("<entry>")
        out.append(f"<title>{escape(str(item.get('title', '')))}</title>")
        out.append(f"<id>{escape(str(item.get('id') or item.get('link') or item.get('title', '')))}</id>")
        if item.get("link"):
            out.append(f"<link rel=\"alternate\" href={quoteattr(str(item['link']))}/>")
        if item.get("summary") is not None:
            out.append(f"<summary type=\"html\">{escape(str(item['summary']))}</summary>")
        if isinstance(item.get("published"), datetime):
            out.append(f"<published>{published}</published><updated>{published}</updated>")
        if item.get("author"):
            out.append(f"<author><name>{escape(str(item['author']))}</name></author>")
        out.append("</entry>")
    out.append("</feed>")
    return "\n".join(out).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    feed_server: FeedServer  # set on the subclass made in start()
    server_version = "SurgeWatchFeedServer/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        server = self.feed_server
        parts = urlsplit(self.path)
        path = parts.path
        headers = {k.lower(): v for k, v in self.headers.items()}
        route = server._resolve(path)
        if route is None:
            self._finish(server, path, parts.query, headers, 404, b"not found\n", {"Content-Type": "text/plain"}, send_body)
            return
        if route.delay and server._stopping.wait(route.delay):
            return  # stopping: drop the connection
        extra = dict(route.headers)
        if route.retry_after is not None:
            extra["Retry-After"] = str(route.retry_after)
        if route.status != 200:
            body = route.body if route.body is not None else f"status {route.status}\n".encode()
            extra.setdefault("Content-Type", route.content_type or "text/plain")
            self._finish(server, path, parts.query, headers, route.status, body, extra, send_body, route.chunked)
            return
        body, ctype, newest = server._render(path, route)
        extra.setdefault("Content-Type", ctype)
        if route.etag:
            extra.setdefault("ETag", '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
        extra.setdefault("Last-Modified", format_datetime(newest, usegmt=True))
        if _not_modified(headers, extra.get("ETag"), newest):
            validators = {k: extra[k] for k in ("ETag", "Last-Modified") if k in extra}
            self._finish(server, path, parts.query, headers, 304, b"", validators, send_body)
            return
        self._finish(server, path, parts.query, headers, 200, body, extra, send_body, route.chunked)

    def _finish(self, server: FeedServer, path: str, query: str, req_headers: dict[str, str], status: int,
                body: bytes, headers: Mapping[str, str], send_body: bool, chunked: bool = False) -> None:
        with server._lock:
            server.requests.append(RecordedRequest(path, query, req_headers, status))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if chunked:
            self.send_header("Connection", "close")
            self.close_connection = True
        elif status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and status != 304:
            try:
                if chunked:
                    for start in range(0, len(body), 65536):
                        self.wfile.write(body[start : start + 65536])
                else:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a body cap or a timeout): expected in tests


def _not_modified(req: Mapping[str, str], etag: str | None, newest: datetime) -> bool:
    # RFC 9110 13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    if "if-none-match" in req:
        if etag is None:
            return False
        tags = [t.strip() for t in req["if-none-match"].split(",")]
        return etag in tags or "*" in tags or ("W/" + etag) in tags
    since = req.get("if-modified-since")
    if since:
        try:
            when = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return newest.replace(microsecond=0) <= when
    return False


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true or ``timeout``: for tests waiting on the server's thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
