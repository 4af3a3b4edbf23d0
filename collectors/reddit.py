"""Reddit through praw, read-only (application-only OAuth, ``client_credentials``).

Two streams per poll, each newest first and each with its own cursor:

* ``search``: ``/r/{all or a+b}/search?sort=new&syntax=lucene`` with the brand query in Reddit's
  Lucene syntax, re-checked locally (Reddit's search stems and matches URLs);
* ``comments``: ``/r/{a+b}/comments`` of the configured subreddits, filtered locally (Reddit has no
  comment search).

The cursor holds, per stream, ``after`` (the newest creation time seen) and ``seen`` (the
fullnames created within ``overlap_seconds`` of it).  Items created at the same second as the
cursor, or indexed late by Reddit's search (which lags by minutes), are still taken exactly once:
a restart neither misses nor repeats.

praw is tuned not to block a worker: prawcore's rate limiter would sleep until the window resets
when ``x-ratelimit-remaining`` reaches 0, and its retry strategy sleeps up to 6 s on 5xx.  Here
a wait longer than :data:`MAX_INLINE_WAIT` becomes a transient :class:`SourceError` with
``retry_after`` (the pipeline reschedules), and a failed request is retried once, immediately.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import praw
import requests
import prawcore
from prawcore.rate_limit import RateLimiter
from prawcore.sessions import FiniteRetryStrategy

from surgewatch.collectors.base import Batch, BrandSpec, Mention, SourceError
from surgewatch.collectors.links import (
    ResponseTooLarge,
    as_int,
    brand_query,
    extract_urls,
    guarded_session,
    retry_after_from,
    FIRST_POLL_LOOKBACK,
    TimeWindowCursor,
    clip,
    site_links,
    transport_error,
)

MAX_INLINE_WAIT = 2.0  # seconds of prawcore pacing we accept inside a poll
_KINDS = {"Submission": "t3", "Comment": "t1"}
PUBLIC_URL = "https://www.reddit.com"  # links shown to people, whatever API endpoint we use

CREDENTIAL_HINT = (
    "check REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET (a 'script' or 'web' app from "
    "https://www.reddit.com/prefs/apps) and REDDIT_USER_AGENT"
)


class _MustWait(Exception):
    def __init__(self, seconds: float):
        super().__init__(f"rate limit: wait {seconds:.0f} s")
        self.seconds = seconds


class _NonBlockingRateLimiter(RateLimiter):
    """prawcore's limiter, except that a long wait is handed back to the caller instead of slept."""

    def delay(self) -> None:
        if self.next_request_timestamp is not None:
            wait = self.next_request_timestamp - time.time()
            if wait > MAX_INLINE_WAIT:
                raise _MustWait(wait)
        super().delay()


class _OneImmediateRetry(FiniteRetryStrategy):
    """Two attempts, no sleep: enough to refresh an expired token (prawcore retries a 401 after
    fetching a new one) and to ride out a single dropped connection; more belongs to the
    pipeline's backoff, not to a worker sleeping."""

    def __init__(self, retries: int = 2) -> None:
        super().__init__(retries)

    def _sleep_seconds(self) -> float | None:
        return None


class RedditCollector:
    name = "reddit"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        user_agent: str,
        *,
        api_url: str = "https://oauth.reddit.com",
        auth_url: str = "https://www.reddit.com",
        subreddits: list[str] | None = None,
        comment_subreddits: list[str] | None = None,
        limit: int = 100,
        overlap_seconds: float = 300.0,
        now: Callable[[], float] = time.time,
    ):
        if not client_id or not client_secret:
            raise SourceError(f"reddit: missing credentials; {CREDENTIAL_HINT}", permanent=True)
        self.subreddits = [s.strip().removeprefix("r/") for s in subreddits or [] if s.strip()]
        self.comment_subreddits = [s.strip().removeprefix("r/") for s in comment_subreddits or []
                                   if s.strip()]
        self.limit = max(1, int(limit))
        self.overlap_seconds = float(overlap_seconds)
        self.now = now
        self._requests = 0
        session = guarded_session()
        session.hooks["response"].append(self._count_request)
        try:
            self._reddit = praw.Reddit(
                client_id=client_id,
                client_secret=client_secret,
                user_agent=user_agent or "surgewatch (brand mention monitor)",
                oauth_url=api_url.rstrip("/"),
                reddit_url=auth_url.rstrip("/"),
                check_for_updates=False,
                requestor_kwargs={"session": session},
            )
        except (praw.exceptions.PRAWException, prawcore.PrawcoreException) as exc:
            raise SourceError(f"reddit: cannot configure praw ({type(exc).__name__}); "
                              f"{CREDENTIAL_HINT}", permanent=True) from None
        self._reddit.read_only = True
        # Private attributes, because prawcore offers no option for either (prawcore 2.4):
        core = self._reddit._read_only_core
        core._rate_limiter = _NonBlockingRateLimiter(window_size=core._rate_limiter.window_size)
        core._retry_strategy_class = _OneImmediateRetry

    def __repr__(self) -> str:  # never show the secret
        return f"RedditCollector(subreddits={self.subreddits!r}, comment_subreddits={self.comment_subreddits!r})"

    # -- the poll ------------------------------------------------------------------------------
    def fetch(self, brand: BrandSpec, cursor: dict[str, Any] | None) -> Batch:
        query = brand_query("reddit", brand.query)
        cursor = dict(cursor or {})
        batch = Batch()
        requests_before = self._requests_made()
        subs = "+".join(self.subreddits) or "all"
        search_state = cursor.get("search") or {}
        with self._errors(subs):
            mentions, search_state, truncated = self._stream(
                self._reddit.subreddit(subs).search(
                    query.to_reddit(), sort="new", syntax="lucene",
                    time_filter=self._time_filter(search_state), limit=self.limit),
                search_state, brand, query)
            batch.mentions += mentions
            if truncated:
                batch.notes.append(f"reddit: search hit the limit of {self.limit} posts per poll; "
                                   "older new posts were skipped (raise sources.reddit.limit)")
            new_cursor: dict[str, Any] = {"search": search_state}
            if self.comment_subreddits:
                comment_subs = "+".join(self.comment_subreddits)
                mentions, comment_state, truncated = self._stream(
                    self._reddit.subreddit(comment_subs).comments(limit=self.limit),
                    cursor.get("comments") or {}, brand, query)
                batch.mentions += mentions
                if truncated:
                    batch.notes.append(f"reddit: r/{comment_subs} had more than {self.limit} new "
                                       "comments since the last poll; older ones were skipped")
                new_cursor["comments"] = comment_state
        batch.cursor = new_cursor
        batch.requests_made = self._requests_made() - requests_before
        limiter = self._reddit._read_only_core._rate_limiter
        if limiter.remaining is not None and limiter.remaining < 50:
            batch.notes.append(f"reddit: {limiter.remaining:.0f} requests left in this rate-limit window")
        return batch

    def _time_filter(self, state: dict[str, Any]) -> str:
        # A narrower window is cheaper for Reddit's search; widen it after an outage.  A first
        # poll reads one hour back, so "day" covers it.
        if not state.get("after"):
            return "day"
        age = self.now() - float(state["after"])
        return "day" if age < 86000 else "week" if age < 7 * 86400 else "all"

    def _count_request(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self._requests += 1  # token requests included: they count against nothing, but cost time

    def _requests_made(self) -> int:
        return self._requests

    def _stream(self, things: Iterable[Any], state: dict[str, Any], brand: BrandSpec,
                query) -> tuple[list[Mention], dict[str, Any], bool]:
        """(mentions, new state, truncated): truncated when ``limit`` items were read without
        reaching the cursor, so posts between the two were not seen."""
        window = TimeWindowCursor(state, self.overlap_seconds,
                                  first_poll_since=self.now() - FIRST_POLL_LOOKBACK)
        mentions: list[Mention] = []
        items = 0
        reached_cursor = False
        for thing in things:
            items += 1
            data = vars(thing)  # vars(), not attributes: a missing attribute makes praw fetch it
            created = _float(data.get("created_utc"))
            if created is None:
                created = self.now()  # an answer without a time: count it now rather than lose it
            if window.is_older(created):
                reached_cursor = True
                break  # newest first: everything further is older than the cursor covers
            fullname = str(data.get("name") or f"{_KINDS.get(type(thing).__name__, 't3')}_{data.get('id')}")
            if not window.take(fullname, created):
                continue
            mention = self._mention(data, fullname, created, brand, query)
            if mention is not None:
                mentions.append(mention)
        truncated = not reached_cursor and items >= self.limit
        return mentions, window.state(), truncated

    @staticmethod
    def _mention(data: dict[str, Any], fullname: str, created: float, brand: BrandSpec,
                 query) -> Mention | None:
        is_post = fullname.startswith("t3_")
        title = str(data.get("title") or "")
        body = str(data.get("selftext" if is_post else "body") or "")
        text = f"{title}\n\n{body}".strip() if is_post else body
        if not query.matches(text):
            return None
        permalink = str(data.get("permalink") or "")
        urls = extract_urls(body)
        link = data.get("url")
        if is_post and isinstance(link, str) and not link.startswith(PUBLIC_URL):
            urls.insert(0, link)  # a link post: its target is the page the crowd will open
        author = data.get("author")
        return Mention(
            source="reddit",
            id=fullname,
            brand=brand.name,
            text=clip(text),
            created_at=datetime.fromtimestamp(created, tz=timezone.utc),
            url=PUBLIC_URL + permalink if permalink.startswith("/") else "",
            author=str(author) if author is not None else "",
            replies=as_int(data.get("num_comments")),
            score=as_int(data.get("score")),
            site_links=site_links(urls, brand.site),
        )

    # -- failures ------------------------------------------------------------------------------
    def _errors(self, subs: str):
        return _RedditErrors(subs, self.now)


class _RedditErrors:
    """Sorts praw/prawcore exceptions into permanent and transient :class:`SourceError`."""

    def __init__(self, subs: str, now: Callable[[], float]):
        self.subs = subs
        self.now = now

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, SourceError):
            return False
        if isinstance(exc, _MustWait):
            raise SourceError(f"reddit: rate limit spent; {exc}", retry_after=exc.seconds) from None
        if isinstance(exc, prawcore.OAuthException):
            # invalid_grant / invalid_client: the app's credentials are wrong or revoked.
            raise SourceError(f"reddit: token refused ({exc.error}); {CREDENTIAL_HINT}",
                              permanent=True) from None
        if isinstance(exc, prawcore.TooManyRequests):
            wait = retry_after_from(exc.response.headers, self.now, "x-ratelimit-reset")
            raise SourceError("reddit: rate limited (429)", retry_after=wait) from None
        if isinstance(exc, prawcore.BadJSON):
            raise SourceError(f"reddit: malformed JSON from {exc.response.url.split('?')[0]}") from None
        if isinstance(exc, prawcore.Redirect):
            raise SourceError(f"reddit: subreddit r/{self.subs} does not exist (Reddit redirected "
                              "to its search page)", permanent=True) from None
        if isinstance(exc, prawcore.ResponseException):
            status = exc.response.status_code
            if status >= 500:
                raise SourceError(f"reddit: server error {status}") from None
            if status in (401, 403):
                where = "the token endpoint" if "access_token" in exc.response.url else f"r/{self.subs}"
                raise SourceError(f"reddit: access refused ({status}) by {where}: the app's "
                                  f"credentials are wrong or the subreddit is private; {CREDENTIAL_HINT}",
                                  permanent=True) from None
            raise SourceError(f"reddit: request rejected ({status}) for r/{self.subs}",
                              permanent=True) from None
        if isinstance(exc, KeyError) and exc.args == (401,):
            # prawcore 2.4 looks up a 401 without a WWW-Authenticate header in a table that has
            # no entry for it (prawcore/util.py): still a refusal of our credentials.
            raise SourceError(f"reddit: access refused (401); {CREDENTIAL_HINT}", permanent=True) from None
        if isinstance(exc, requests.JSONDecodeError):
            # prawcore decodes the token endpoint's answer without a guard.
            raise SourceError("reddit: malformed JSON from the token endpoint") from None
        if isinstance(exc, prawcore.RequestException):
            original = exc.original_exception
            raise transport_error("reddit", original if isinstance(original, BaseException) else exc) from None
        if isinstance(exc, ResponseTooLarge):
            raise transport_error("reddit", exc) from None
        if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):
            # praw builds its objects from whatever JSON came back; an answer of the wrong shape
            # surfaces as one of these.  Transient: the next poll may get a proper listing.
            raise SourceError(f"reddit: unexpected answer from r/{self.subs} ({type(exc).__name__})") from None
        return False


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
