"""The cluster's beat scheduler: RedBeat, made to survive a Redis restart.

RedBeat keeps the schedule in Redis behind a lock so two beats never both schedule.  Out of the
box, a Redis restart kills beat: ``tick()`` raises ConnectionError (Celery logs CRITICAL and the
process exits), and a Redis that comes back empty has lost both the schedule and the lock.  This
subclass waits for Redis instead, then takes the lock again (or stands by if another beat took it)
and re-installs the schedule from the config.

It also follows the config file (:mod:`surgewatch.worker.reload`): on a change, RedBeat's own
``setup_schedule()`` installs the new ``app.conf.beat_schedule`` -- it upserts every entry (keeping
when each last ran) and deletes the static entries no longer in it (the ``:statics`` set).
"""
from __future__ import annotations

import logging

import redis
from redbeat import RedBeatScheduler
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, get_redis
from redis.exceptions import LockError

from surgewatch.ops.heartbeat import HEARTBEAT_EVERY, Heartbeat
from surgewatch.worker.reload import ScheduleFollower

log = logging.getLogger("surgewatch.worker.beat")

RETRY_SECONDS = 5.0


class ResilientRedBeatScheduler(ScheduleFollower, RedBeatScheduler):
    _lost_redis = False
    passthrough = (redis.ConnectionError, redis.TimeoutError, LockError)  # handled in tick()

    def __init__(self, *args, **kwargs):
        self._heartbeat = Heartbeat()
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):  # type: ignore[override]
        try:
            if self._lost_redis:
                self._recover()
            interval = super().tick(*args, **kwargs)
            # After RedBeat's tick has extended the lock: only the beat that schedules installs a schedule.
            self.follow_config()
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

    def install_schedule(self, schedule: dict) -> None:
        self.setup_schedule()  # reads app.conf.beat_schedule, which follow_config has just replaced
