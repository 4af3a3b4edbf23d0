"""All Celery settings in one place (treeherder's rule): queues, acks, limits and the beat schedule.

The beat schedule is built from the SurgeWatch config: one ``collect`` per brand x source at the
source's interval, one ``evaluate`` per chunk of brands (``EVALUATE_CHUNK``) several times per detector
bucket.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from kombu import Exchange, Queue

from surgewatch import clock
from surgewatch.config import Settings, brand_key

CONFIG_ENV = "SURGEWATCH_CONFIG"

QUEUES = ("collect", "detect", "notify")
EVALUATE_TICKS_PER_BUCKET = 4
EVALUATE_CHUNK = 250  # brands per evaluate task: ~0.12 s of one worker's time on Redis (benchmarks/evaluate.py)


_slug = brand_key  # the config refuses two brands with one key, so beat entries never collide


def beat_schedule(settings: Settings, speed: float = 1.0) -> dict[str, dict[str, Any]]:
    """Beat entries, each naming its queue.  ``speed`` > 1 compresses the schedule for the demo's
    simulated clock (intervals are simulated seconds)."""
    schedule: dict[str, dict[str, Any]] = {}
    for brand in settings.brands:
        for source_name, source in settings.sources.enabled().items():
            schedule[f"collect-{source_name}-{_slug(brand.name)}"] = {
                "task": "surgewatch.collect",
                "schedule": timedelta(seconds=source.interval / speed),
                "args": (source_name, brand.name),
                # A tick not started before the next one is redundant (the next poll covers it).
                "options": {"queue": "collect", "expires": max(source.interval / speed, 2.0)},
            }
    # One evaluate task per chunk of brands: a chunk costs a fixed number of store round trips
    # (pipeline.evaluate_many), and chunks spread over the workers of the detect queue.
    # Several ticks per bucket: a bucket is scored as soon as the last of the brand's sources has
    # polled past its end, not up to a whole bucket later (beat's phase is arbitrary); a tick that
    # finds nothing new costs a few small reads.  A compressed clock (the demo's) keeps ticks at
    # least half a real second apart, or one per bucket.
    bucket = settings.detector.bucket_seconds / speed
    every = max(bucket / EVALUATE_TICKS_PER_BUCKET, min(bucket, 0.5))
    for entry, chunk in evaluate_entries(settings).items():
        schedule[entry] = {
            "task": "surgewatch.evaluate",
            "schedule": timedelta(seconds=every),
            "args": (chunk,),
            "options": {"queue": "detect", "expires": max(every, 2.0)},
        }
    # A heartbeat task on each queue: it proves beat -> broker -> a worker of that queue -> store
    # (health.pipeline_health turns /healthz red when one is older than ops.stale_after_seconds).
    # At least 2 real seconds apart: under the demo's compressed clock a simulated-time period would
    # flood the embedded broker with heartbeats and starve the evaluate ticks.
    beat_every = max(2.0, min(settings.stale_after_seconds() / 4, 60.0) / speed)
    for queue in QUEUES:
        schedule[f"heartbeat-{queue}"] = {
            "task": "surgewatch.ops.heartbeat",
            "schedule": timedelta(seconds=beat_every),
            "args": (queue,),
            "options": {"queue": queue, "expires": max(beat_every, 2.0)},
        }
    if settings.calendar.events:
        schedule["planned-event-reminders"] = {
            "task": "surgewatch.reminders",
            "schedule": timedelta(seconds=60 / speed),
            "options": {"queue": "notify", "expires": 60 / speed},
        }
    if any(brand.traffic is not None for brand in settings.brands):
        # Refit the mentions -> site traffic models (each refits once a day) off the notify path.
        schedule["traffic-models"] = {
            "task": "surgewatch.traffic_models",
            "schedule": timedelta(seconds=3600 / speed),
            "options": {"queue": "detect", "expires": 3600 / speed},
        }
    if settings.digest.enabled and speed == 1.0:
        from surgewatch.reports.digest import digest_schedule

        d = settings.digest
        schedule["weekly-digest"] = {
            "task": "surgewatch.reports.digest",
            "schedule": digest_schedule(settings, d.day_of_week, d.hour, d.minute, timezone=d.timezone),
            "options": {"queue": "notify"},
        }
    return schedule


def evaluate_entries(settings: Settings) -> dict[str, list[str]]:
    """{beat entry name: the chunk of brand names it evaluates}; each tick leaves the heartbeat
    ``evaluate:<entry name>``."""
    names = [brand.name for brand in settings.brands]
    entries: dict[str, list[str]] = {}
    for i in range(0, len(names), EVALUATE_CHUNK):
        chunk = names[i:i + EVALUATE_CHUNK]
        entries[f"evaluate-{_slug(chunk[0])}" + (f"-{len(chunk)}" if len(chunk) > 1 else "")] = chunk
    return entries


def evaluate_entry_for(settings: Settings, brands: list[str]) -> str | None:
    """The beat entry that evaluates exactly these brands (None: a chunk sent by hand)."""
    for entry, chunk in evaluate_entries(settings).items():
        if chunk == list(brands):
            return entry
    return None


def build(settings: Settings | None, speed: float = 1.0) -> dict[str, Any]:
    broker_url = settings.broker.url if settings else "sqla+sqlite:///surgewatch-broker.db"
    conf: dict[str, Any] = {
        "broker_url": broker_url,
        # Results are not used: tasks write what they produce to the store.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": settings.timezone if settings else "UTC",
        "enable_utc": True,
        "task_queues": [Queue(q, Exchange(q), routing_key=q) for q in QUEUES],
        "task_default_queue": "collect",
        "task_create_missing_queues": False,
        "task_routes": {
            "surgewatch.collect": {"queue": "collect"},
            "surgewatch.evaluate": {"queue": "detect"},
            "surgewatch.notify": {"queue": "notify"},
            "surgewatch.reports.digest": {"queue": "notify"},
            "surgewatch.reports.digest_brand": {"queue": "notify"},
            "surgewatch.reminders": {"queue": "notify"},
            "surgewatch.traffic_models": {"queue": "detect"},
            # no route for surgewatch.ops.heartbeat: each beat entry names its queue
        },
        # Every task is safe to run twice: collect dedups by (source, id) and advances its cursor only
        # after the ingest; evaluate skips buckets already scored; notify claims each delivery in the
        # store before sending.  So acknowledge late, and let a message whose worker died be redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A poll that hangs must not block a worker: requests have their own timeouts; these are the backstop.
        "task_soft_time_limit": 60,
        "task_time_limit": 90,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": beat_schedule(settings, speed) if settings else {},
    }
    if broker_url.startswith(("redis://", "rediss://")):
        # A task not acked within the visibility timeout is redelivered: keep it above the time limit.
        conf["broker_transport_options"] = {"visibility_timeout": 600}
        # Two beats must never both schedule: RedBeat keeps the schedule in Redis behind a lock, so a
        # second beat (a mistaken deploy, a failover) waits for the lock instead of doubling every task.
        conf["beat_scheduler"] = "surgewatch.worker.beat:ResilientRedBeatScheduler"
        conf["redbeat_redis_url"] = broker_url
        conf["redbeat_key_prefix"] = "surgewatch:redbeat:"
        conf["redbeat_lock_timeout"] = 60
        conf["beat_max_loop_interval"] = 10  # well inside the lock timeout, so a live beat never loses it
    else:
        # Celery's default scheduler, plus a heartbeat in the store from its loop (surgewatch.ops.heartbeat),
        # following the config file (surgewatch.worker.reload).
        conf["beat_scheduler"] = "surgewatch.worker.reload:ReloadingScheduler"
    if speed > 1:
        conf["beat_max_loop_interval"] = 0.2
    return conf


def prepare_embedded_broker(broker_url: str) -> None:
    """Create the SQL broker's tables and queue rows from one process before the worker and its
    embedded beat start: kombu's SQL transport creates them lazily, and the two processes racing
    to insert the same queue row made a fresh worker die with a UNIQUE constraint error."""
    if not broker_url.startswith("sqla+"):
        return
    from kombu import Connection

    from kombu.transport.sqlalchemy import Channel as SqlChannel

    with Connection(broker_url) as conn:
        channel = conn.default_channel
        for q in QUEUES:
            channel.queue_declare(queue=q, passive=False)
    # kombu caches its SQLAlchemy engine on the class; the worker forks its pool and beat from this
    # process, and a pooled SQLite connection inherited across fork is "channel disconnected".
    for engine, _ in list(SqlChannel._engines.values()):
        engine.dispose()
    SqlChannel._engines.clear()


def embedded_polling_interval(speed: float) -> float:
    """How often the embedded (SQL) broker is polled for new tasks."""
    return 0.1 if speed > 1 else 0.5


def from_environment() -> dict[str, Any]:
    from surgewatch.worker.reload import startup

    path = os.environ.get(CONFIG_ENV)
    # startup(): remembered, so pool children and the embedded beat forked from this process start
    # from the same settings (and the digest of the bytes they came from) when they follow the file.
    settings = startup(path)[0] if path else None
    return build(settings, clock.speed())
