"""Stage 1, collect: poll one source for one brand; ingest (dedup by source, brand and id); only then
save the cursor.  Source health records every outcome, and ops hear once when a source has been
failing too long."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from slack_sdk.errors import SlackClientError

from surgewatch import clock
from surgewatch.collectors.base import Mention, SourceError, fetch_checked
from surgewatch.collectors.waits import MAX_WAIT
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline.ops_messages import When, ops_poster, plain
from surgewatch.pipeline.runtime import Runtime
from surgewatch.registry import MissingCredential

log = logging.getLogger("surgewatch.pipeline.collection")

MAX_MENTION_AGE = 2 * 86400  # older posts are history, not a surge: shown by `fetch`, not counted
FUTURE_TOLERANCE = 300  # clocks disagree a little; further ahead than this is clamped to "now"


@dataclass
class CollectOutcome:
    source: str
    brand: str
    status: str  # ok | skipped | failed | disabled
    fetched: int = 0
    new: int = 0
    duplicates: int = 0
    skipped: list[tuple[Mention, str]] = field(default_factory=list)
    message: str = ""
    retry_after: float | None = None


def admit(mentions: list[Mention], now: float, tz: str | None = None) -> tuple[list[Mention], list[tuple[Mention, str]]]:
    """Which mentions count.  Far-past posts are skipped (they would be counted into buckets the
    detector scored long ago); future timestamps beyond a clock-skew tolerance are clamped to now.
    A skip reason gives times in the zone ``tz`` (the configured one; UTC when None)."""
    kept: list[Mention] = []
    skipped: list[tuple[Mention, str]] = []
    for m in mentions:
        ts = m.timestamp
        if ts < now - MAX_MENTION_AGE:
            skipped.append((m, f"too old to count (created {clock.stamp(m.created_at, tz)})"))
        elif ts > now + FUTURE_TOLERANCE:
            kept.append(_with_time(m, now))
        else:
            kept.append(m)
    return kept, skipped


def _with_time(m: Mention, ts: float) -> Mention:
    return replace(m, created_at=datetime.fromtimestamp(ts, timezone.utc))


def collect(rt: Runtime, source: str, brand: str, now: float | None = None) -> CollectOutcome:
    now = clock.now() if now is None else now
    store = rt.store
    health = SourceHealth.load(store, source, brand)
    if health.status == "disabled":
        return CollectOutcome(source, brand, "disabled", message=health.last_error or "disabled")
    cfg = getattr(rt.settings.sources, source, None)
    max_wait = float(getattr(cfg, "max_wait_seconds", MAX_WAIT))
    if health.backoff_until and health.backoff_until > now:
        # A wait is never longer than max_wait (a backoff stored before that rule, or a clock jump),
        # and a source that has not polled successfully for alert_after_minutes raises its outage
        # alert whatever the reason, backing off included: a paused source is a silent one.
        health.backoff_until = min(health.backoff_until, now + max_wait)
        _mark_stalled(health, cfg, now, rt.settings.timezone)
        source_outage_alert(rt, health, now)
        health.save(store)
        return CollectOutcome(source, brand, "skipped", message=f"backing off until {clock.stamp(health.backoff_until, rt.settings.timezone)}")
    cursor = store.get_cursor(source, brand)
    spec = rt.brand_spec(brand)
    try:
        # fetch_checked: every failure of the poll is a SourceError, so it is recorded below.
        batch = fetch_checked(rt.collector(source), spec, cursor)
    except MissingCredential as exc:
        health.record_failure(now, str(exc), permanent=True)
        source_outage_alert(rt, health, now)
        health.save(store)
        log.error("source %s for %s disabled: %s", source, brand, exc)
        return CollectOutcome(source, brand, "disabled", message=str(exc))
    except Exception as raised:  # noqa: BLE001 - every failure is recorded; unforeseen ones as transient
        exc = raised if isinstance(raised, SourceError) else SourceError(
            f"{source}: could not build the collector ({type(raised).__name__})")
        retry_after = None if exc.retry_after is None else min(exc.retry_after, max_wait)
        health.record_failure(now, exc.message, permanent=exc.permanent, retry_after=retry_after)
        source_outage_alert(rt, health, now)
        health.save(store)
        log.warning("source %s for %s failed (%s): %s", source, brand, "permanent" if exc.permanent else "transient", exc)
        return CollectOutcome(
            source, brand, "disabled" if exc.permanent else "failed", message=exc.message, retry_after=retry_after
        )
    kept, skipped = admit(batch.mentions, now, rt.settings.timezone)
    result = store.ingest(kept, count=not batch.posts_are_sample)
    if batch.volume:
        store.set_volume(brand, source, batch.volume)
    # The cursor moves only now that everything it covers is stored (a crash before this line
    # re-fetches the same posts next time, and the dedup absorbs them).
    if batch.cursor is not None:
        store.set_cursor(source, brand, batch.cursor)
    retry_after = None if batch.retry_after is None else min(batch.retry_after, max_wait)
    health.record_success(now, requests=batch.requests_made, notes=batch.notes, retry_after=retry_after)
    if batch.complete_until is not None:
        health.complete_until = max(health.complete_until or 0.0, batch.complete_until)
    health.complete_every = batch.complete_every
    source_outage_alert(rt, health, now)
    health.save(store)
    return CollectOutcome(
        source, brand, "ok", fetched=len(batch.mentions), new=result.new, duplicates=result.duplicates, skipped=skipped
    )


def _mark_stalled(health: SourceHealth, cfg: Any, now: float, tz: str) -> None:
    """A source paused since its last success (X holding back on a spent rate limit) counts as
    failing once that pause is older than ``alert_after_minutes``, so its outage alert goes out."""
    if cfg is None or health.failing_since is not None or health.status == "disabled":
        return
    since = health.last_success
    if since is not None and now - since >= cfg.alert_after_minutes * 60:
        health.failing_since = since
        # shown by `status` and in the outage alert: times in the configured zone
        health.last_error = (f"{health.source}: no successful poll since {clock.stamp(since, tz)}; the source asked us "
                             f"to wait until {clock.stamp(health.backoff_until or now, tz)}")
        health.last_error_at = now


def source_outage_alert(rt: Runtime, health: SourceHealth, now: float) -> str | None:
    """Tell ops once when a source has been failing longer than its ``alert_after_minutes`` (or
    was disabled), and once when it recovers.  A silent collector is the worst failure this tool
    can have: a quiet channel must mean a quiet world.  Returns what was said, if anything."""
    cfg = getattr(rt.settings.sources, health.source, None)
    if cfg is None:
        return None
    parts: tuple[str | When, ...] | None = None
    if health.failing_since is not None and health.alerted_since != health.failing_since:
        if health.status == "disabled" or now - health.failing_since >= cfg.alert_after_minutes * 60:
            what: tuple[str | When, ...] = (("is disabled",) if health.status == "disabled"
                                             else ("has been failing since ", When(health.failing_since)))
            parts = (f"Source {health.source} for {health.brand} ", *what, f": {health.last_error}. "
                     "Mentions from it are not being counted, so a surge there would go unnoticed.")
            key = f"source-alert:{health.source}:{health.brand}:{health.failing_since}:down"
            health.alerted_since = health.failing_since
    elif health.failing_since is None and health.alerted_since is not None and health.status in ("ok", "degraded"):
        parts = (f"Source {health.source} for {health.brand} has recovered (last success ", When(now), ").")
        key = f"source-alert:{health.source}:{health.brand}:{health.alerted_since}:up"
        health.alerted_since = None
    if parts is None:
        return None
    text = plain(parts, rt.settings.timezone)
    # Claimed like any notification, so a redelivered collect never says it twice.
    if rt.store.claim(key, 60.0, time.time()):
        try:
            ops_poster(rt, now)(*parts)
        except (SlackClientError, OSError) as exc:  # the poll's own outcome must not be lost to this
            rt.store.release(key)
            log.error("could not tell ops about %s/%s: %s", health.source, health.brand, type(exc).__name__)
            return None
        rt.store.mark_sent(key, {"text": text})
    return text
