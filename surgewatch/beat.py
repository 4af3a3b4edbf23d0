"""The cluster's beat scheduler: RedBeat, made to survive a Redis restart.

RedBeat keeps the schedule in Redis behind a lock so two beats never both schedule.  Out of the
box, a Redis restart kills beat: ``tick()`` raises ConnectionError (Celery logs CRITICAL and the
process exits), and a Redis that comes back empty has lost both the schedule and the lock.  This
subclass waits for Redis instead, then takes the lock again (or stands by if another beat took it)
and re-installs the schedule from the config.
"""
from __future__ import annotations

import logging
import os
import time

import redis
from celery.beat import PersistentScheduler
from redbeat import RedBeatScheduler
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, get_redis
from redis.exceptions import LockError

log = logging.getLogger("surgewatch.beat")

RETRY_SECONDS = 5.0
HEARTBEAT_EVERY = 5.0  # real seconds between two "beat" heartbeats in the store


class _Heartbeat:
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
        from surgewatch.metrics import STORE_ERRORS

        try:
            if self._store is None:
                from surgewatch.celery_settings import CONFIG_ENV
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
        self._heartbeat = _Heartbeat()
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):  # type: ignore[override]
        self._heartbeat()
        return min(super().tick(*args, **kwargs), HEARTBEAT_EVERY)


class ResilientRedBeatScheduler(RedBeatScheduler):
    _lost_redis = False

    def __init__(self, *args, **kwargs):
        self._heartbeat = _Heartbeat()
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):  # type: ignore[override]
        try:
            if self._lost_redis:
                self._recover()
            interval = super().tick(*args, **kwargs)
            self._heartbeat()  # only a beat that holds the lock and schedules is alive
            return min(interval, HEARTBEAT_EVERY)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not self._lost_redis:
                log.warning("beat: Redis is unreachable (%s); waiting for it, nothing is scheduled meanwhile",
                            type(exc).__name__)
            self._lost_redis = True
            return RETRY_SECONDS
        except LockError:
            # The lock is gone (Redis restarted empty) or another beat holds it now.
            log.warning("beat: lost the scheduler lock; trying to take it again")
            self._lost_redis = True
            return RETRY_SECONDS

    def _recover(self) -> None:
        """Redis answers again: re-take the lock without blocking, then re-install the schedule."""
        if self.lock_key:
            if self.lock is None:
                lock = get_redis(self.app).lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
                lock.lua_extend = get_redis(self.app).register_script(LUA_EXTEND_TO_SCRIPT)
                self.lock = lock
            if not self.lock.owned() and not self.lock.acquire(blocking=False):
                raise LockError("another beat holds the scheduler lock")  # stand by; tick() retries
        self.setup_schedule()
        self._lost_redis = False
        log.warning("beat: Redis is back; lock re-taken and schedule re-installed")
