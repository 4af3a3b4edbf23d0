"""Celery tasks: thin wrappers that hand off to :mod:`surgewatch.pipeline`."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from celery.exceptions import Ignore

from surgewatch import clock, pipeline
from surgewatch.worker.app import app
from surgewatch.worker.settings import CONFIG_ENV
from surgewatch.config import Settings
from surgewatch.worker.reload import FollowedConfig, forget_startup
from surgewatch.store.errors import StoreError

log = logging.getLogger("surgewatch.worker.tasks")


@contextmanager
def store_outage(task: str) -> Iterator[None]:
    """While the store is down, a beat-driven task is one warning line, not a traceback per task:
    the next beat tick runs it again (collect's cursor and evaluate's scored buckets are in the
    store, so nothing is skipped).  Health shows the outage: /healthz's store check and stale
    heartbeats."""
    try:
        yield
    except StoreError as exc:
        if exc.permanent:
            raise
        log.warning("%s: the store is unavailable, skipped until the next tick: %s", task, exc)
        raise Ignore() from None


_followed: FollowedConfig | None = None


def _rebuild(settings: Settings, previous: pipeline.Runtime | None) -> pipeline.Runtime:
    # The open store is kept: what it depends on cannot change without a restart (reload.RESTART_ONLY).
    return pipeline.Runtime(settings, store=previous.store if previous is not None else None)


def runtime() -> pipeline.Runtime:
    """This process's pipeline Runtime, following the config file: at most every
    ``reload.CHECK_SECONDS`` a look at the file, and a new Runtime (new brands, sources, channels)
    when it changed and validates; each attempt is recorded for ``status``."""
    global _followed
    if _followed is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"{CONFIG_ENV} is not set: start workers with `surgewatch worker --config FILE`")
        _followed = FollowedConfig("worker", path, _rebuild, lambda rt: rt.store)
    return _followed.current()


def _forget_runtime() -> None:
    """Start afresh at the next ``runtime()`` (tests point SURGEWATCH_CONFIG at a new file)."""
    global _followed
    _followed = None
    forget_startup()


runtime.cache_clear = _forget_runtime  # type: ignore[attr-defined]  # what it was called as an lru_cache


backoff = pipeline.backoff  # jittered exponential backoff that honours a Retry-After floor

# How often a notification may wait for an earlier one on its channel (or another attempt's claim)
# before its delivery is given up as failed.
MAX_NOT_READY = 30


@app.task(name="surgewatch.collect")
def collect(source: str, brand: str) -> dict:
    # No Celery retry here: a failed poll records its backoff in the source's health and the next
    # beat tick tries again when it has passed (no sleeping inside a worker).
    rt = runtime()
    gone = _not_configured(rt, source, brand)
    if gone:
        # Queued before a reload removed it (beat no longer schedules it): not a failure of the source.
        log.info("collect %s for %s skipped: %s", source, brand, gone)
        return {"status": "not configured", "new": 0, "duplicates": 0}
    with store_outage(f"collect {source} for {brand}"):
        outcome = pipeline.collect(rt, source, brand)
    return {"status": outcome.status, "new": outcome.new, "duplicates": outcome.duplicates}


def _brand_configured(rt: pipeline.Runtime, brand: str) -> bool:
    try:
        rt.brand(brand)
    except KeyError:
        return False
    return True


def _not_configured(rt: pipeline.Runtime, source: str, brand: str) -> str | None:
    if source not in rt.settings.sources.enabled():
        return f"the source {source} is not enabled in the config (any more)"
    if not _brand_configured(rt, brand):
        return "the brand is not in the config (any more)"
    return None


@app.task(name="surgewatch.evaluate")
def evaluate(brands: list[str] | str) -> dict:
    # A chunk of brands per task (beat sends chunks); a single name is still accepted, as queued
    # by an older beat or sent by hand.
    rt = runtime()
    with store_outage("evaluate"):
        outcomes = pipeline.evaluate_many(rt, [brands] if isinstance(brands, str) else list(brands))
    wait = rt.settings.routing.group_wait_seconds
    dispatch = [d for outcome in outcomes for d in outcome.dispatch]
    for outcome in outcomes:
        opened = {t["no"] for t in outcome.transitions if t["event"] == "opened"}
        for incident_id, no, channel in outcome.dispatch:
            # group_wait: hold a new incident's first notification; if it escalates meanwhile,
            # the held one is superseded and one message carries the newest state.
            countdown = wait if wait and no in opened else None
            notify.apply_async((incident_id, no, channel), queue="notify", countdown=countdown)
    with store_outage("evaluate"):
        pipeline.mark_dispatched(rt, dispatch)
        _after_tick(rt, list(brands) if not isinstance(brands, str) else [brands])
    return {"brands": len(outcomes), "buckets": sum(len(o.verdicts) for o in outcomes),
            "transitions": sum(len(o.transitions) for o in outcomes), "busy": [o.brand for o in outcomes if o.busy]}


def _after_tick(rt: pipeline.Runtime, brands: list[str]) -> None:
    """The evaluate tick's heartbeat, then the dead-man's switch when the whole pipeline is healthy."""
    from surgewatch.worker.settings import evaluate_entry_for
    from surgewatch.ops.health import ping_heartbeat_url

    now = clock.now()
    entry = evaluate_entry_for(rt.settings, brands)
    if entry is not None:
        rt.store.heartbeat(f"evaluate:{entry}", now)
    ping_heartbeat_url(rt.settings, rt.store, now)


@app.task(name="surgewatch.ops.heartbeat")
def heartbeat(queue: str) -> dict:
    # Sent by beat to each queue: a worker of that queue took it, so beat, the broker, that queue's
    # workers and the store all work (health.pipeline_health).
    with store_outage(f"heartbeat of the {queue} queue"):
        runtime().store.heartbeat(f"worker:{queue}", clock.now())
    return {"queue": queue}


# max_retries=None: the delivery log counts the sends (pipeline.MAX_SEND_ATTEMPTS) and ends the
# delivery `failed` when they run out; Celery giving up on its own would leave it pending, unsaid.
@app.task(name="surgewatch.notify", bind=True, max_retries=None)
def notify(self, incident_id: str, no: int, channel: str) -> dict:
    rt = runtime()
    from surgewatch.registry import configured_channels

    if channel not in configured_channels(rt.settings):
        # Removed by a config reload after this delivery was queued: recorded, not left pending.
        outcome = pipeline.give_up(rt, incident_id, no, channel,
                                   f"not sent: the channel {channel} is no longer in the config")
        return {"key": outcome.key, "status": outcome.status}
    try:
        outcome = pipeline.notify(rt, incident_id, no, channel)
    except pipeline.NotReady as exc:
        if self.request.retries >= MAX_NOT_READY:
            outcome = pipeline.give_up(rt, incident_id, no, channel, f"not sent: still waiting after "
                                       f"{self.request.retries} tries ({exc})")
        else:
            raise self.retry(exc=exc, countdown=backoff(0, exc.retry_in))
    except KeyError:
        # The incident's brand was removed by a config reload after this delivery was queued:
        # recorded, not left pending (any other KeyError is a bug, and raises).
        incident = rt.store.get_incident(incident_id) or {}
        if not incident.get("brand") or _brand_configured(rt, incident["brand"]):
            raise
        outcome = pipeline.give_up(rt, incident_id, no, channel,
                                   f"not sent: the brand {incident['brand']} is no longer in the config")
    except pipeline.RetryLater as exc:  # transient, with attempts left: recorded pending
        raise self.retry(exc=exc, countdown=exc.retry_in)
    except StoreError as exc:
        if exc.permanent:
            raise
        # Not a beat-driven task: nothing would send it again, so retry (one log line per retry).
        log.warning("notify %s: the store is unavailable, retrying: %s", channel, exc)
        raise self.retry(exc=exc, countdown=backoff(self.request.retries), max_retries=30)
    return {"key": outcome.key, "status": outcome.status}


@app.task(name="surgewatch.traffic_models")
def traffic_models() -> dict:
    from surgewatch.traffic import refresh_models

    return refresh_models(runtime(), clock.now())


@app.task(name="surgewatch.reports.digest")
def digest() -> dict:
    # One task per brand, each retried on its own: one brand's Slack error costs no other brand its digest.
    from surgewatch.reports.digest import last_complete_week

    rt = runtime()
    week = last_complete_week(clock.now(), rt.settings.timezone)
    for b in rt.settings.brands:
        digest_brand.apply_async((b.name, week), queue="notify")
    return {"brands": len(rt.settings.brands), "week": week}


@app.task(name="surgewatch.reports.digest_brand", bind=True, max_retries=8)
def digest_brand(self, brand: str, week: str) -> dict:
    from surgewatch.notifier.base import ChannelError
    from surgewatch.reports.digest import deliver_brand_digest

    try:
        return deliver_brand_digest(runtime(), brand, week)
    except ChannelError as exc:
        if exc.permanent or self.request.retries >= self.max_retries:
            log.error("digest for %s %s not delivered: %s", brand, week, exc)
            return {"brand": brand, "week": week, "sent": False, "error": str(exc)}
        raise self.retry(exc=exc, countdown=backoff(self.request.retries, exc.retry_after))


@app.task(name="surgewatch.reminders")
def reminders() -> dict:
    return {"sent": pipeline.send_reminders(runtime())}
