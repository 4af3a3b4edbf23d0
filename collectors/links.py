"""Helpers the social collectors share: links to the brand's site, snowflake time, one guarded HTTP
session, and the mapping of HTTP failures onto :class:`SourceError`.

Kept here rather than in ``base.py`` because only the API collectors (X, Reddit, Hacker News,
Bluesky, Mastodon) need them; RSS has feedparser's own machinery.
"""
from __future__ import annotations

import html
import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from surgewatch.collectors.base import SourceError
from surgewatch.collectors.query import Query, QueryError, parse_query

# Twitter's snowflake epoch (2010-11-04T01:42:54.657Z), in milliseconds.  The top 41 bits of a
# tweet id are milliseconds since then, which is how a tweet without ``created_at`` gets a time.
# https://github.com/twitter-archive/snowflake/blob/snowflake-2010/src/main/scala/com/twitter/service/snowflake/IdWorker.scala
TWITTER_EPOCH_MS = 1288834974657

# No honest page of 100 posts comes near this (an X page with includes is ~100 kB, a Reddit
# listing ~1 MB); a bigger body is a misbehaving proxy, and reading it whole would eat a worker's
# memory, so the adapter stops reading past it.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_TEXT = 10_000  # characters of a post kept in a Mention (matching sees all of it)
FIRST_POLL_LOOKBACK = 3600.0  # a source's first poll reads the last hour, not its history
DEFAULT_TIMEOUT = (5.0, 20.0)  # (connect, read) seconds: tweepy passes no timeout at all

_URL_RE = re.compile(r"""https?://[^\s<>"'\]\[)]+""", re.IGNORECASE)
_HREF_RE = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def snowflake_time(snowflake_id: int | str) -> datetime:
    """When a tweet (or any Twitter snowflake id) was created."""
    ms = (int(snowflake_id) >> 22) + TWITTER_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 string ("2026-11-28T00:01:02.000Z") or epoch seconds, as aware UTC; None if
    absent or unreadable (callers fall back to something they know)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


_TAG_RE = re.compile(r"<[^>]+>")


def html_to_text(value: str) -> str:
    """Bodies stored as HTML (HN, Mastodon): match and show the words, not the markup."""
    text = re.sub(r"</p>\s*<p>|<p>|<br\s*/?>", "\n", value or "", flags=re.IGNORECASE)
    return html.unescape(_TAG_RE.sub("", text)).strip()


def clip(text: str) -> str:
    """Outside text bounded for storage: a 40 000-character Reddit post or a hostile payload must
    not bloat the store or a Slack message."""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def site_host(site: str | None) -> str | None:
    """``"https://www.Example.com/shop"`` -> ``"example.com"``; None when no site is configured."""
    if not site:
        return None
    text = site.strip()
    if "//" not in text:
        text = "//" + text
    host = (urlsplit(text).hostname or "").lower().rstrip(".")
    return host.removeprefix("www.") or None


def extract_urls(text: str) -> list[str]:
    """URLs in a post: bare ``http(s)://`` ones and ``href`` targets of HTML bodies (HN comments,
    Mastodon statuses), entity-decoded, in order, without duplicates."""
    if not text:
        return []
    found = [html.unescape(u) for u in _HREF_RE.findall(text)]
    found += [html.unescape(u) for u in _URL_RE.findall(text)]
    # Trailing punctuation belongs to the sentence, not the URL ("see https://acme.com/sale.").
    cleaned = [u.rstrip(".,;:!?") for u in found]
    return list(dict.fromkeys(u for u in cleaned if u))


def site_links(urls: Iterable[str], site: str | None) -> tuple[str, ...]:
    """The URLs that point at the brand's own site (its host or any subdomain): the pages a surge
    will hit."""
    host = site_host(site)
    if host is None:
        return ()
    keep: list[str] = []
    for url in urls:
        try:
            target = (urlsplit(url).hostname or "").lower().rstrip(".")
        except ValueError:  # "http://[broken" in untrusted text
            continue
        if target == host or target.endswith("." + host) or target == "www." + host:
            keep.append(url)
    return tuple(dict.fromkeys(keep))


def brand_query(source: str, text: str) -> Query:
    """Parse a brand's query; a bad query is a configuration mistake, so permanent."""
    try:
        return parse_query(text)
    except QueryError as exc:
        raise SourceError(f"{source}: invalid query: {exc}", permanent=True) from None


class ResponseTooLarge(requests.RequestException):
    """The server kept sending past :data:`MAX_RESPONSE_BYTES`."""


class GuardedAdapter(HTTPAdapter):
    """A requests adapter that (1) gives every request a timeout, (2) refuses bodies larger than
    ``max_bytes`` without reading them whole, and (3) optionally rewrites a vendor's fixed base URL
    to another one.

    (3) exists for tweepy, whose ``Client`` hard-codes ``https://api.twitter.com`` and has no
    base-URL option; mounting this adapter on ``client.session`` sends its requests to a proxy or a
    local test server instead.
    """

    def __init__(
        self,
        *,
        rewrite_from: str | None = None,
        rewrite_to: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_bytes: int = MAX_RESPONSE_BYTES,
        max_retries: Retry | int = 0,
    ):
        super().__init__(max_retries=max_retries)
        self.rewrite_from = rewrite_from.rstrip("/") if rewrite_from else None
        self.rewrite_to = rewrite_to.rstrip("/") if rewrite_to else None
        self.timeout = timeout
        self.max_bytes = max_bytes

    def send(self, request, stream=False, timeout=None, **kwargs):  # type: ignore[override]
        if self.rewrite_from and self.rewrite_to and request.url.startswith(self.rewrite_from):
            request.url = self.rewrite_to + request.url[len(self.rewrite_from) :]
        response = super().send(request, stream=True, timeout=timeout or self.timeout, **kwargs)
        if stream:
            return response
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise ResponseTooLarge(f"response of {declared} bytes exceeds {self.max_bytes}")
        body = response.raw.read(self.max_bytes + 1, decode_content=True)
        if len(body) > self.max_bytes:
            response.close()
            raise ResponseTooLarge(f"response larger than {self.max_bytes} bytes")
        # What requests itself does after a non-streamed read (Response.content).
        response._content = body
        response._content_consumed = True
        response.raw.release_conn()
        return response


def guarded_session(
    *,
    retries: int = 0,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    max_bytes: int = MAX_RESPONSE_BYTES,
    user_agent: str | None = None,
) -> requests.Session:
    """A session with :class:`GuardedAdapter` on http and https.

    ``retries`` > 0 retries connection errors and 502/503/504 a bounded number of times with a
    short backoff (at most a few seconds in total, so a worker is not held); 429 is never retried
    here: the pipeline reschedules the poll after the source's reset instead.
    """
    retry: Retry | int = 0
    if retries:
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=0.3,
            backoff_max=2.0,
            status_forcelist=(502, 503, 504),
            allowed_methods=("GET",),
            raise_on_status=False,  # the last 5xx response reaches raise_for_status below
            respect_retry_after_header=False,
        )
    session = requests.Session()
    adapter = GuardedAdapter(timeout=timeout, max_bytes=max_bytes, max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if user_agent:
        session.headers["User-Agent"] = user_agent
    return session


def retry_after_from(headers: Any, now: Callable[[], float], *reset_names: str) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds) or a reset header.  X and Mastodon send the
    reset as epoch seconds / an ISO time; Reddit sends seconds-until-reset.  Callers name theirs."""
    value = headers.get("retry-after")
    if value and value.strip().isdigit():
        return max(1.0, float(value))
    for name in reset_names:
        raw = headers.get(name)
        if not raw:
            continue
        raw = raw.strip()
        try:
            number = float(raw)
        except ValueError:
            when = parse_time(raw)
            if when is not None:
                return max(1.0, when.timestamp() - now())
            continue
        # An epoch (X, Bluesky) is far larger than any seconds-until-reset (Reddit's is < 600).
        return max(1.0, number - now()) if number > 1e9 else max(1.0, number)
    return None


def raise_for_http(source: str, response: requests.Response, now: Callable[[], float],
                   *reset_names: str, credential_hint: str = "") -> None:
    """Turn an HTTP failure into a :class:`SourceError`: 401/403 and other 4xx are permanent (the
    request itself is wrong and will stay wrong), 429 and 5xx are transient."""
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = _short_reason(response)
    if status == 429:
        wait = retry_after_from(response.headers, now, *reset_names)
        raise SourceError(f"{source}: rate limited (429){reason}", retry_after=wait)
    if status >= 500 or status == 408:
        raise SourceError(f"{source}: server error {status}{reason}")
    if status in (401, 403):
        hint = f"; {credential_hint}" if credential_hint else ""
        raise SourceError(f"{source}: access refused ({status}){reason}{hint}", permanent=True)
    raise SourceError(f"{source}: request rejected ({status}){reason}", permanent=True)


def _short_reason(response: requests.Response) -> str:
    # The vendor's own words help ops, but the body is outside text: keep it short and on one line.
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    for key in ("detail", "message", "error_description", "error", "title"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return ": " + " ".join(value.split())[:200]
    return ""


def json_body(source: str, response: requests.Response) -> Any:
    """The decoded JSON body, or a transient SourceError that names the source (a proxy's HTML
    error page or a truncated body is usually gone on the next poll)."""
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        snippet = " ".join(response.text[:80].split())
        raise SourceError(
            f"{source}: malformed JSON from {response.url.split('?')[0]} "
            f"(status {response.status_code}, starts {snippet!r})"
        ) from None


def transport_error(source: str, exc: BaseException) -> SourceError:
    """A network-level failure (timeout, refused connection, oversized body): transient."""
    if isinstance(exc, ResponseTooLarge):
        return SourceError(f"{source}: {exc}")
    if isinstance(exc, requests.Timeout):
        return SourceError(f"{source}: timed out")
    if isinstance(exc, requests.ConnectionError):
        return SourceError(f"{source}: cannot connect")
    return SourceError(f"{source}: {type(exc).__name__}")


def as_int(value: Any) -> int:
    """Engagement counters from outside JSON: anything not an int becomes 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# -- time cursors ---------------------------------------------------------------------------------
MAX_SEEN = 2000  # bound on a cursor's id list (a few polls' worth at 100 items per poll)


class TimeWindowCursor:
    """A cursor for sources that list newest first by creation time: ``after`` (the newest
    creation time taken) plus ``seen`` (the ids created within ``overlap`` seconds of it).

    Two things make a plain "created after X" cursor lose or repeat posts: several posts share the
    cursor's second, and search indexes (Reddit, Algolia, Bluesky) publish posts minutes after their
    creation time.  Re-reading the last ``overlap`` seconds and skipping the ids already taken
    handles both: a restart neither misses nor repeats.
    """

    def __init__(self, state: dict[str, Any] | None, overlap: float, *, first_poll_since: float | None = None):
        state = state or {}
        self.after = float(state.get("after") or state.get("after_utc") or 0.0)
        self.overlap = overlap
        # A first poll reads back to ``first_poll_since`` (the last hour, say), not all history.
        default_floor = float("-inf") if first_poll_since is None else first_poll_since
        self.floor = self.after - overlap if self.after else default_floor
        self.seen = set(state.get("seen") or [])
        self.fresh: dict[str, float] = {}

    def is_older(self, created: float) -> bool:
        """Older than anything this cursor still needs: a newest-first walk can stop here."""
        return created < self.floor

    def take(self, item_id: str, created: float) -> bool:
        """True the first time an id inside the window comes by."""
        if created < self.floor or item_id in self.seen or item_id in self.fresh:
            return False
        self.fresh[item_id] = created
        return True

    def state(self) -> dict[str, Any]:
        newest = max([self.after, *self.fresh.values()])
        window = newest - self.overlap
        kept = {i: c for i, c in self.fresh.items() if c >= window}
        if self.after >= window:
            # Old ids carry no time; they are kept while the window still covers the old cursor.
            kept.update({i: self.after for i in self.seen if i not in kept})
        ids = sorted(kept, key=lambda i: kept[i], reverse=True)[:MAX_SEEN]
        return {"after": newest, "seen": ids}
