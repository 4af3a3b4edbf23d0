"""Beat's own heartbeat: the ``beat`` entry in the store's heartbeats, written from the scheduler's
loop (see :func:`surgewatch.ops.health.pipeline_health`).  Kept apart from :mod:`surgewatch.worker.beat`, which
imports RedBeat: importing RedBeat connects its beat_init handler, which expects a RedBeat scheduler."""
from __future__ import annotations

import logging
import os
import time

from celery.beat import PersistentScheduler

log = logging.getLogger("surgewatch.worker.beat")

HEARTBEAT_EVERY = 5.0  # real seconds between two "beat" heartbeats in the store


class Heartbeat:
    """Leaves the ``beat`` heartbeat in the store from the scheduler's loop (see health.pipeline_health).
    A store that cannot be written is logged once per outage, and never stops the scheduling."""

    def __init__(self) -> None:
        self._store = None
        self._last = 0.0
        self._failing = False

    def __call__(self) -> None:
        from surgewatch import clock

        # the demo's compressed clock: as many heartbeats per simulated minute as in real time
        if time.monotonic() - self._last < HEARTBEAT_EVERY / clock.speed():
            return
        self._last = time.monotonic()
        from surgewatch.ops.metrics import STORE_ERRORS

        try:
            if self._store is None:
                from surgewatch.worker.settings import CONFIG_ENV
                from surgewatch.config import load_settings
                from surgewatch.pipeline import Runtime

                path = os.environ.get(CONFIG_ENV)
                if not path:
                    return
                self._store = Runtime(load_settings(path)).store
            self._store.heartbeat("beat", clock.now())
            if self._failing:
                log.warning("beat: heartbeats reach the store again")
            self._failing = False
        except STORE_ERRORS as exc:
            if not self._failing:
                log.warning("beat: cannot record its heartbeat (%s); /healthz will call beat stale", exc)
            self._failing = True


class HeartbeatScheduler(PersistentScheduler):
    """Celery's default scheduler (the embedded default), leaving a heartbeat every few seconds."""

    def __init__(self, *args, **kwargs):
        self._heartbeat = Heartbeat()
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):  # type: ignore[override]
        self._heartbeat()
        return min(super().tick(*args, **kwargs), HEARTBEAT_EVERY)
