"""HTTP for feed collectors: one GET with timeouts, a body-size cap and failure classification.

Feeds are fetched with ``requests`` and only then handed to feedparser as bytes, because
feedparser's own fetching has no size cap and no connect/read timeouts, and the body of an
outside server is untrusted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Mapping

import requests
import urllib3

from surgewatch.collectors.waits import parse_retry_after  # noqa: F401  (re-exported: one parser for every collector)
# the one redactor (a feed URL from the config may carry credentials); re-exported for the collectors
from surgewatch.redact import redact_url  # noqa: F401

# Statuses that will not change by asking again: the feed is gone or we may not read it.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 410, 451})




class FetchFailure(Exception):
    """One URL could not be fetched.  ``message`` is one line and already names the (redacted) URL."""

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.status = status

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class FetchResult:
    status: int  # 200 or 304
    headers: Mapping[str, str]  # case-insensitive (requests' CaseInsensitiveDict)
    body: bytes
    url: str  # after redirects
    moved: bool = False  # a 301/308 on the way: the configured URL is out of date


def get_capped(
    session: requests.Session,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    max_bytes: int = 5_000_000,
    now: Callable[[], float] = time.time,
) -> FetchResult:
    """GET ``url`` and return its body (at most ``max_bytes``, after content decoding, so a gzip
    bomb is capped too).  ``timeout`` is both the connect and the per-read timeout, and the whole
    download must also finish within ``3 * timeout`` (a server dripping one byte per second never
    trips a read timeout).  Raises :class:`FetchFailure` for anything but 2xx / 304."""
    shown = redact_url(url)
    deadline = time.monotonic() + 3 * timeout
    try:
        response = session.get(url, headers=dict(headers or {}), timeout=(timeout, timeout), stream=True)
    except requests.Timeout as exc:
        what = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
        raise FetchFailure(f"{shown}: timed out ({what}, {timeout:g}s)", permanent=False) from None
    except requests.TooManyRedirects:
        raise FetchFailure(f"{shown}: too many redirects", permanent=True) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as exc:
        raise FetchFailure(f"{shown}: invalid URL ({type(exc).__name__})", permanent=True) from None
    except requests.ConnectionError as exc:
        # requests' messages embed the full URL (query string included): name only the cause.
        raise FetchFailure(f"{shown}: cannot connect ({_root_cause(exc)})", permanent=False) from None
    except requests.RequestException as exc:
        raise FetchFailure(f"{shown}: request failed ({type(exc).__name__})", permanent=False) from None
    with response:
        status = response.status_code
        moved = any(r.status_code in (301, 308) for r in response.history)
        if status == 304:
            return FetchResult(304, response.headers, b"", response.url, moved)
        if not 200 <= status < 300:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now())
            reason = (response.reason or "").strip()[:60]
            label = f"HTTP {status}" + (f" {reason}" if reason else "")
            if status == 429:
                raise FetchFailure(f"{shown}: rate limited ({label})", permanent=False,
                                   retry_after=retry_after, status=status)
            if status in PERMANENT_STATUSES or (400 <= status < 500 and status not in (408, 425)):
                raise FetchFailure(f"{shown}: {label}", permanent=True, status=status)
            raise FetchFailure(f"{shown}: {label}", permanent=False, retry_after=retry_after, status=status)
        try:
            body = read_capped(response, max_bytes=max_bytes, deadline=deadline)
        except BodyError as exc:
            if exc.kind == "too_large":
                size = f" of {exc.size} bytes" if exc.size is not None else ""
                message = f"body{size} exceeds the {max_bytes}-byte limit"
            elif exc.kind == "too_slow":
                message = f"download took longer than {3 * timeout:g}s"
            elif exc.kind == "timed_out":
                message = f"timed out (read, {timeout:g}s)"
            else:
                message = f"body read failed ({exc.cause})"
            raise FetchFailure(f"{shown}: {message}", permanent=False) from None
        return FetchResult(status, response.headers, body, response.url, moved)


class BodyError(Exception):
    """Why :func:`read_capped` gave up.  ``kind``: "too_large" (``size``: the declared length, None when
    the streamed body grew past the cap), "too_slow" (the deadline passed), "timed_out" (one read timed
    out) or "failed" (``cause``: the exception's class name; its text embeds the URL, so it is not kept)."""

    def __init__(self, kind: str, *, size: int | None = None, cause: str = ""):
        super().__init__(kind)
        self.kind, self.size, self.cause = kind, size, cause


def read_capped(response: requests.Response, *, max_bytes: int, deadline: float) -> bytes:
    """The body of a ``stream=True`` response: at most ``max_bytes`` after content decoding (so a gzip bomb
    is capped too), read before ``deadline`` (``time.monotonic()``).  Raises :class:`BodyError`."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyError("too_large", size=int(declared))
    chunks: list[bytes] = []
    size = 0
    try:
        # read1 returns what one socket read brings (not a full 64 KB), so a server dripping a
        # byte at a time cannot hold us inside one call: the deadline is checked after each read.
        while chunk := response.raw.read1(65536, decode_content=True):
            size += len(chunk)
            if size > max_bytes:
                raise BodyError("too_large")
            if time.monotonic() > deadline:
                raise BodyError("too_slow")
            chunks.append(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        # The text is only read to classify (urllib3 wraps a read timeout mid-body in a
        # ConnectionError).
        timed_out = isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower()
        raise BodyError("timed_out" if timed_out else "failed", cause=type(exc).__name__) from None
    return b"".join(chunks)


def _root_cause(exc: BaseException) -> str:
    # Walk to the innermost OS-level error ("ConnectionRefusedError") without its text.
    seen = 0
    cause: BaseException | None = exc
    last = exc
    while cause is not None and seen < 10:
        last = cause
        nxt = cause.__cause__ or cause.__context__
        reason = getattr(cause, "reason", None)
        cause = reason if isinstance(reason, BaseException) else nxt
        seen += 1
    return type(last).__name__


def utc_now(now: Callable[[], float | datetime]) -> datetime:
    """Call an injected clock that returns epoch seconds (the project's ``clock.now``) or a datetime."""
    value = now()
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(value), tz=timezone.utc)
