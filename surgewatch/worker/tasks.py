"""Celery tasks: thin wrappers that hand off to :mod:`surgewatch.pipeline`."""
from __future__ import annotations

import logging
import os
import random
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from celery.exceptions import Ignore

from surgewatch.notifier.base import ChannelError
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


def backoff(retries: int, floor: float | None = None) -> float:
    """Jittered exponential backoff that honours a Retry-After floor."""
    return max(floor or 0.0, min(300.0, 2.0**retries) * random.uniform(0.5, 1.5))


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


@app.task(name="surgewatch.notify", bind=True, max_retries=8)
def notify(self, incident_id: str, no: int, channel: str) -> dict:
    try:
        outcome = pipeline.notify(runtime(), incident_id, no, channel)
    except pipeline.NotReady as exc:
        raise self.retry(exc=exc, countdown=backoff(0, exc.retry_in), max_retries=30)
    except ChannelError as exc:  # transient: permanent ones are handled inside pipeline.notify
        raise self.retry(exc=exc, countdown=backoff(self.request.retries, exc.retry_after))
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
    from surgewatch.reports.digest import deliver_weekly_digests

    return {"digests": deliver_weekly_digests(runtime())}


@app.task(name="surgewatch.reminders")
def reminders() -> dict:
    return {"sent": pipeline.send_reminders(runtime())}
