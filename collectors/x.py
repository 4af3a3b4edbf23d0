"""X (Twitter) API v2 through tweepy: volume from recent counts, posts from recent search.

Cost shapes everything here.  X bills reads (pay-per-use since 2026), so:

* the counts endpoint (one request: per-minute counts of the last quarter hour) is the volume
  signal, fetched every ``counts_every`` seconds (its buckets cover the polls in between);
* posts are read with ``since_id`` and at most ``max_pages`` pages per poll: a sample for "what is
  being said", not a census (the counts carry the census).  When quiet (the last read did not
  fill a page) posts are read every ``quiet_posts_every`` seconds only; when busy, every poll;
* every request is counted per UTC day in the cursor (so the budget is per brand: the pipeline
  keeps one cursor per brand and source), and spending is paced along the day (see
  :meth:`XCollector._allowance`) so the brand is never unwatched for the evening; once
  ``max_requests_per_day`` is spent the collector stops until midnight UTC and says so in
  ``Batch.notes``.

Rate limits are honoured without sleeping: a 429 raises a transient :class:`SourceError` whose
``retry_after`` is X's ``x-rate-limit-reset`` minus now, and the pipeline reschedules the poll.
https://docs.x.com/x-api/fundamentals/rate-limits
"""
from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timezone
from typing import Any, Callable

import requests
import tweepy

from surgewatch.collectors.base import Batch, BrandSpec, Mention, SourceError
from surgewatch.collectors.query import QueryError
from surgewatch.collectors.links import (
    GuardedAdapter,
    as_int,
    brand_query,
    clip,
    json_body,
    parse_time,
    retry_after_from,
    site_links,
    snowflake_time,
    transport_error,
)

TWEEPY_HOST = "https://api.twitter.com"  # hard-coded in tweepy.client.BaseClient.request
SEARCH_ROUTE = "/2/tweets/search/recent"
COUNTS_ROUTE = "/2/tweets/counts/recent"
SINCE_ID_MAX_AGE = 6.9 * 86400
COUNTS_END_DELAY = 30.0  # https://docs.x.com/x-api/posts/counts/recent-post-counts: end_time defaults to now - 30 s
COUNTS_LOOKBACK = 15 * 60  # re-read the last 15 minutes: the newest buckets were still filling
PACING_HEAD_START = 3600.0  # an hour's worth of budget is available from midnight UTC

CREDENTIAL_HINT = (
    "check X_BEARER_TOKEN (an app-only Bearer token from the X developer portal); the free tier "
    "cannot read posts, so the app needs a paid (pay-per-use or Basic) plan"
)


class _DropRequestDumps(logging.Filter):
    """tweepy logs every request's headers at DEBUG, Authorization: Bearer included
    (tweepy/client.py, BaseClient.request); with DEBUG logging on, the token would reach the
    logs.  Those records are dropped; tweepy's warnings still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Making API request")


_tweepy_log = logging.getLogger("tweepy.client")
if not any(isinstance(f, _DropRequestDumps) for f in _tweepy_log.filters):
    _tweepy_log.addFilter(_DropRequestDumps())


class XCollector:
    name = "x"

    def __init__(
        self,
        bearer_token: str,
        *,
        api_url: str = TWEEPY_HOST,
        max_requests_per_day: int = 500,
        max_results: int = 100,
        max_pages: int = 3,
        counts_every: float = 300.0,
        quiet_posts_every: float = 600.0,
        now: Callable[[], float] = time.time,
    ):
        if not bearer_token:
            raise SourceError(f"x: no bearer token; {CREDENTIAL_HINT}", permanent=True)
        # X refuses max_results outside 10..100 with a 400; clamp rather than fail every poll.
        self.max_results = min(100, max(10, int(max_results)))
        self.max_pages = max(0, int(max_pages))
        self.max_requests_per_day = int(max_requests_per_day)
        self.counts_every = float(counts_every)
        self.quiet_posts_every = float(quiet_posts_every)
        self.now = now
        # return_type=requests.Response keeps the rate-limit headers tweepy's Response drops;
        # wait_on_rate_limit=False because sleeping would hold a Celery worker for up to 15 min.
        self._client = tweepy.Client(bearer_token, return_type=requests.Response,
                                     wait_on_rate_limit=False)
        adapter = GuardedAdapter(rewrite_from=TWEEPY_HOST, rewrite_to=api_url.rstrip("/"))
        self._client.session.mount(TWEEPY_HOST, adapter)
        self._client.session.mount(api_url.rstrip("/"), adapter)
        # Per endpoint: epoch until which X told us (remaining == 0) not to call it.  Rate limits
        # belong to the app, not to a brand, so this lives on the collector, not in a cursor.
        self._blocked_until: dict[str, float] = {}

    def __repr__(self) -> str:  # never show the token
        return f"XCollector(max_requests_per_day={self.max_requests_per_day}, max_pages={self.max_pages})"

    # -- the poll ------------------------------------------------------------------------------
    def fetch(self, brand: BrandSpec, cursor: dict[str, Any] | None) -> Batch:
        query = brand_query("x", brand.query)
        x_query = _x_query_or_error(query)
        now = self.now()
        today = datetime.fromtimestamp(now, tz=timezone.utc).date().isoformat()
        cursor = dict(cursor or {})
        if cursor.get("day") != today:
            cursor["day"], cursor["requests_today"] = today, 0
        spent_before = int(cursor.get("requests_today") or 0)
        # The counts are the census; posts only a sample (see the module docstring).
        batch = Batch(posts_are_sample=True, complete_every=self.counts_every)
        budget = _Budget(spent_before, self._allowance(now), self.max_requests_per_day)
        counts_at = float(cursor.get("counts_at") or 0.0)

        # Volume first: one request answers "how many" for the last quarter hour, and its minute
        # buckets cover the polls in between, so it is only needed every ``counts_every`` s.
        if now - counts_at >= self.counts_every and not self._held_back(COUNTS_ROUTE, batch) and budget.take():
            batch.volume = self._volume(x_query, now)
            # X's counts end 30 s before the request (its default end_time): the minutes before that one are whole
            end = now - COUNTS_END_DELAY
            batch.complete_until = end - end % 60
            counts_at = now

        since_id = cursor.get("since_id")
        if since_id and str(since_id).isdigit() and now - snowflake_time(since_id).timestamp() > SINCE_ID_MAX_AGE:
            # X answers 400 to a since_id older than its 7-day search window; after a long
            # outage start afresh instead of failing every poll.
            batch.notes.append("x: cursor older than the 7-day search window; starting afresh")
            since_id = None

        mentions: list[Mention] = []
        newest_id = since_id
        next_token: str | None = None
        pages = 0
        read = 0
        search_at = float(cursor.get("search_at") or 0.0)
        busy = bool(cursor.get("busy", True))
        # When quiet, posts are a sample: one read every ``quiet_posts_every`` seconds (since_id
        # keeps what lies between).  When the last read filled a page, every poll reads.
        wanted = self.max_pages if busy or now - search_at >= self.quiet_posts_every else 0
        while pages < wanted:
            if self._held_back(SEARCH_ROUTE, batch):
                break  # X asked us to hold back; since_id keeps the posts for a later poll
            # Posts leave one request in hand, so the next counts call (the volume signal the
            # detector depends on) is never starved by reading posts.
            if not budget.take(keep=1):
                break  # paced out: since_id keeps the posts for a later poll
            data, users, meta = self._search_page(x_query, since_id, next_token)
            pages += 1
            read += len(data)
            if pages == 1 and meta.get("newest_id"):
                newest_id = meta["newest_id"]
            for tweet in data:
                mention = self._mention(tweet, users, brand, query)
                if mention is not None:
                    mentions.append(mention)
            next_token = meta.get("next_token")
            if not next_token:
                break
        # Stopping at max_pages with a next_token left is by design, not a problem worth a note:
        # the posts are a sample and the counts endpoint is the census.
        if budget.spent >= self.max_requests_per_day:
            batch.notes.append(self._budget_note(budget.spent))

        batch.mentions = mentions
        batch.requests_made = budget.used
        if pages:
            search_at, busy = now, bool(next_token) or read >= self.max_results
        batch.cursor = {"since_id": newest_id, "day": today, "requests_today": budget.spent,
                        "counts_at": counts_at, "search_at": search_at, "busy": busy}
        return batch

    def _allowance(self, now: float) -> int:
        """Requests the budget allows by this time of the UTC day: a straight line from
        ``PACING_HEAD_START`` worth at midnight to the whole budget at the end of the day.
        Without it a 60 s interval would spend a 500-request budget by 04:00 and leave the
        brand unwatched for the rest of the day; with it, quiet polls (one page, no next_token)
        leave allowance unused, which a surge can then spend on more pages."""
        into_day = now % 86400
        share = min(1.0, (into_day + PACING_HEAD_START) / 86400)
        return min(self.max_requests_per_day, math.ceil(self.max_requests_per_day * share))

    def _budget_note(self, spent: int) -> str:
        return (f"x: daily budget of {self.max_requests_per_day} requests spent ({spent} used "
                "today); posts skipped until 00:00 UTC")

    # -- requests ------------------------------------------------------------------------------
    def _call(self, route: str, method: Callable[..., requests.Response], **params: Any) -> Any:
        """One tweepy call with X's failures sorted into permanent / transient."""
        try:
            response = method(**params)
        except tweepy.TooManyRequests as exc:
            reset = exc.response.headers.get("x-rate-limit-reset")
            wait = retry_after_from(exc.response.headers, self.now, "x-rate-limit-reset")
            if reset and reset.isdigit():
                self._blocked_until[route] = float(reset)
            raise SourceError("x: rate limited (429) on " + route, retry_after=wait) from None
        except (tweepy.Unauthorized, tweepy.Forbidden) as exc:
            status = exc.response.status_code
            detail = _api_detail(exc)
            raise SourceError(f"x: access refused ({status}){detail}; {CREDENTIAL_HINT}",
                              permanent=True) from None
        except tweepy.BadRequest as exc:
            raise SourceError(f"x: request rejected (400){_api_detail(exc)}", permanent=True) from None
        except tweepy.TwitterServerError as exc:
            raise SourceError(f"x: server error {exc.response.status_code} on {route}") from None
        except tweepy.HTTPException as exc:  # 404 and other 4xx: the request will not get better
            raise SourceError(f"x: HTTP {exc.response.status_code} on {route}{_api_detail(exc)}",
                              permanent=True) from None
        except requests.RequestException as exc:
            raise transport_error("x", exc) from None
        remaining = response.headers.get("x-rate-limit-remaining", "")
        reset = response.headers.get("x-rate-limit-reset", "")
        if remaining == "0" and reset.isdigit():
            self._blocked_until[route] = float(reset)
        body = json_body("x", response)
        if not isinstance(body, dict):
            raise SourceError(f"x: unexpected answer from {route} (not a JSON object)")
        return body

    def _held_back(self, route: str, batch: Batch) -> bool:
        until = self._blocked_until.get(route, 0.0)
        wait = until - self.now()
        if wait <= 0:
            return False
        batch.retry_after = max(batch.retry_after or 0.0, wait)
        batch.notes.append(f"x: rate limit spent on {route}; next call after {wait:.0f} s")
        return True

    def _volume(self, x_query: str, now: float) -> list[tuple[float, int]]:
        start = datetime.fromtimestamp(now - COUNTS_LOOKBACK - now % 60, tz=timezone.utc)
        body = self._call(COUNTS_ROUTE, self._client.get_recent_tweets_count,
                          query=x_query, granularity="minute", start_time=start)
        volume = []
        for bucket in body.get("data") or []:
            when = parse_time(bucket.get("start")) if isinstance(bucket, dict) else None
            if when is not None:
                volume.append((when.timestamp(), as_int(bucket.get("tweet_count"))))
        return volume

    def _search_page(self, x_query: str, since_id: str | None,
                     next_token: str | None) -> tuple[list[dict], dict[str, dict], dict]:
        body = self._call(
            SEARCH_ROUTE, self._client.search_recent_tweets,
            query=x_query, since_id=since_id, next_token=next_token, max_results=self.max_results,
            tweet_fields=["created_at", "public_metrics", "lang", "entities"],
            expansions=["author_id"], user_fields=["public_metrics"],
        )
        data = [t for t in body.get("data") or [] if isinstance(t, dict) and t.get("id")]
        includes = body.get("includes") or {}
        users = {u["id"]: u for u in includes.get("users") or [] if isinstance(u, dict) and "id" in u}
        return data, users, body.get("meta") or {}

    # -- mapping -------------------------------------------------------------------------------
    @staticmethod
    def _mention(tweet: dict, users: dict[str, dict], brand: BrandSpec, query) -> Mention | None:
        text = str(tweet.get("text") or "")
        lang = str(tweet.get("lang") or "")
        # X's matching is looser than ours (it matches URLs, @handles, stems): re-check locally.
        if not query.matches(text) or not query.accepts_lang(lang):
            return None
        tweet_id = str(tweet["id"])
        created = parse_time(tweet.get("created_at"))
        if created is None:
            try:
                created = snowflake_time(tweet_id)
            except ValueError:
                return None  # neither a time nor a numeric id: nothing we can place on a timeline
        metrics = tweet.get("public_metrics") or {}
        user = users.get(str(tweet.get("author_id") or "")) or {}
        followers = (user.get("public_metrics") or {}).get("followers_count")
        urls = [u.get("unwound_url") or u.get("expanded_url") or ""
                for u in (tweet.get("entities") or {}).get("urls") or [] if isinstance(u, dict)]
        return Mention(
            source="x",
            id=tweet_id,
            brand=brand.name,
            text=clip(text),
            created_at=created,
            url=f"https://x.com/i/web/status/{tweet_id}",
            author=str(user.get("username") or ""),
            likes=as_int(metrics.get("like_count")),
            reposts=as_int(metrics.get("retweet_count")) + as_int(metrics.get("quote_count")),
            replies=as_int(metrics.get("reply_count")),
            score=as_int(metrics.get("impression_count")),  # views: what marketing calls reach
            reach=as_int(followers) if followers is not None else None,
            lang=lang,
            site_links=site_links(urls, brand.site),
        )


class _Budget:
    """Requests this poll may still make: under both the paced allowance and the daily cap."""

    def __init__(self, spent_before: int, allowance: int, cap: int):
        self.spent = spent_before
        self.limit = min(allowance, cap)
        self.used = 0

    def take(self, keep: int = 0) -> bool:
        if self.spent + keep >= self.limit:
            return False
        self.spent += 1
        self.used += 1
        return True


def _x_query_or_error(query) -> str:
    try:
        return query.to_x()
    except QueryError as exc:
        raise SourceError(f"x: invalid query: {exc}", permanent=True) from None


def _api_detail(exc: tweepy.HTTPException) -> str:
    # X's own words ("client-not-enrolled", "Unsupported Authentication"), short and on one line.
    try:
        body = exc.response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body[k]) for k in ("title", "reason") if isinstance(body.get(k), str)]
    parts += [str(m) for m in exc.api_messages[:2]]
    text = " ".join(" / ".join(dict.fromkeys(parts)).split())[:200]
    return f": {text}" if text else ""
