"""Celery tasks: thin wrappers that hand off to :mod:`surgewatch.pipeline`."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from celery.exceptions import Ignore

from surgewatch import clock, pipeline
from surgewatch.worker.app import app
from surgewatch.worker.settings import CONFIG_ENV
from surgewatch.config import load_settings
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


@lru_cache(maxsize=1)
def runtime() -> pipeline.Runtime:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set: start workers with `surgewatch worker --config FILE`")
    return pipeline.Runtime(load_settings(path))


backoff = pipeline.backoff  # jittered exponential backoff that honours a Retry-After floor

# How often a notification may wait for an earlier one on its channel (or another attempt's claim)
# before its delivery is given up as failed.
MAX_NOT_READY = 30


@app.task(name="surgewatch.collect")
def collect(source: str, brand: str) -> dict:
    # No Celery retry here: a failed poll records its backoff in the source's health and the next
    # beat tick tries again when it has passed (no sleeping inside a worker).
    with store_outage(f"collect {source} for {brand}"):
        outcome = pipeline.collect(runtime(), source, brand)
    return {"status": outcome.status, "new": outcome.new, "duplicates": outcome.duplicates}


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
    try:
        outcome = pipeline.notify(rt, incident_id, no, channel)
    except pipeline.NotReady as exc:
        if self.request.retries >= MAX_NOT_READY:
            outcome = pipeline.give_up(rt, incident_id, no, channel, f"not sent: still waiting after "
                                       f"{self.request.retries} tries ({exc})")
        else:
            raise self.retry(exc=exc, countdown=backoff(0, exc.retry_in))
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
