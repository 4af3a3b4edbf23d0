"""Source health per brand x source: ok / degraded / failing / disabled.

A collector that dies silently is the worst failure this tool can have (a quiet channel must mean a
quiet world), so every poll records its outcome here and ``surgewatch status`` shows it.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from surgewatch.redact import redact
from surgewatch.store.base import Store

FAILING_AFTER = 3  # consecutive failures before "degraded" becomes "failing"
MAX_BACKOFF = 900.0


@dataclass
class SourceHealth:
    source: str
    brand: str
    status: str = "unknown"  # unknown | ok | degraded | failing | disabled
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failing_since: float | None = None
    consecutive_failures: int = 0
    backoff_until: float | None = None
    polls: int = 0
    requests: int = 0
    notes: list[str] = field(default_factory=list)
    alerted_since: float | None = None  # the failing_since of the outage ops were told about
    complete_until: float | None = None  # a census source (X): its counts are complete up to here
    complete_every: float | None = None  # ... which moves this often

    @staticmethod
    def key(source: str, brand: str) -> str:
        return f"health:{source}:{brand}"

    @classmethod
    def load(cls, store: Store, source: str, brand: str) -> "SourceHealth":
        data = store.get_state(cls.key(source, brand))
        if not data:
            return cls(source, brand)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load_all(cls, store: Store) -> list["SourceHealth"]:
        known = set(cls.__dataclass_fields__)
        return [cls(**{k: v for k, v in d.items() if k in known}) for d in store.list_state("health:").values()]

    def save(self, store: Store) -> None:
        store.set_state(self.key(self.source, self.brand), asdict(self))

    def record_success(
        self, now: float, *, requests: int = 0, notes: list[str] | None = None, retry_after: float | None = None
    ) -> None:
        self.polls += 1
        self.requests += requests
        self.last_success = now
        self.consecutive_failures = 0
        self.failing_since = None
        self.notes = list(notes or [])[:10]
        # A poll that worked but had notes (one bad feed among good ones) is degraded, not ok.
        self.status = "degraded" if self.notes else "ok"
        self.backoff_until = now + retry_after if retry_after else None

    def record_failure(
        self, now: float, message: str, *, permanent: bool, retry_after: float | None = None
    ) -> None:
        self.polls += 1
        # scrubbed before it is stored: it is shown by status, /healthz, metrics and the ops alert,
        # and an outside service may echo our token in its error (an X 401 repeating "Bearer ...")
        self.last_error = redact(message)
        self.last_error_at = now
        self.consecutive_failures += 1
        if self.failing_since is None:
            self.failing_since = now
        if permanent:
            self.status = "disabled"
            self.backoff_until = None
            return
        self.status = "failing" if self.consecutive_failures >= FAILING_AFTER else "degraded"
        # Jittered exponential backoff, at least what the source asked for (Retry-After / reset).
        backoff = min(MAX_BACKOFF, 2 ** min(self.consecutive_failures, 10)) * random.uniform(0.5, 1.0)
        self.backoff_until = now + max(backoff, retry_after or 0.0)

    def enable(self) -> None:
        """Operator re-enables a disabled source (after fixing its credentials)."""
        self.status = "unknown"
        self.consecutive_failures = 0
        self.failing_since = None
        self.backoff_until = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- watching the watcher -----------------------------------------------------------------------------
# Heartbeats in the store (Store.heartbeat): ``beat`` from the scheduler's loop, ``worker:<queue>`` from
# a small task beat sends to each queue (so it proves beat -> broker -> a worker of that queue -> store),
# ``evaluate:<entry>`` after every evaluate tick.  A pipeline whose heartbeats are old is down, whatever
# the sources' last recorded status says: the pipeline's own death must not look like a quiet world.
HEARTBEAT_PING = "ping:heartbeat_url"  # the last successful ping of ops.heartbeat_url


@dataclass
class PipelineHealth:
    ok: bool
    stale_after: float
    last_seen: dict[str, float | None]  # every expected heartbeat -> its time (None: never seen)
    stale: list[str]  # one line per stale heartbeat, or "nothing has run yet"
    now: float

    def ages(self) -> dict[str, float | None]:
        return {k: None if v is None else max(0.0, self.now - v) for k, v in self.last_seen.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "stale_after_seconds": self.stale_after, "stale": self.stale,
                "heartbeats": {k: {"at": v, "age_seconds": None if v is None else round(max(0.0, self.now - v), 1)}
                               for k, v in self.last_seen.items()}}


def expected_heartbeats(settings: Any) -> list[str]:
    """The heartbeats a working pipeline with this config leaves: beat, a worker of each queue and
    each evaluate entry of the beat schedule."""
    from surgewatch.worker.settings import QUEUES, evaluate_entries

    return ["beat", *(f"worker:{q}" for q in QUEUES), *(f"evaluate:{e}" for e in evaluate_entries(settings))]


def pipeline_health(settings: Any, store: Store, now: float) -> PipelineHealth:
    """Which of the expected heartbeats are older than ``settings.stale_after_seconds()``."""
    stale_after = settings.stale_after_seconds()
    seen = store.heartbeats()
    expected = expected_heartbeats(settings)
    last_seen = {name: seen.get(name) for name in expected}
    if all(v is None for v in last_seen.values()):
        stale = ["nothing has run yet: no heartbeat from beat, the workers or the evaluate ticks "
                 "(is `surgewatch run`, or `surgewatch worker` and `surgewatch beat`, running?)"]
    else:
        stale = []
        for name, at in last_seen.items():
            if at is None:
                stale.append(f"{name}: never seen")
            elif now - at > stale_after:
                stale.append(f"{name}: last seen {now - at:.0f} s ago (stale after {stale_after:.0f} s)")
    return PipelineHealth(ok=not stale, stale_after=stale_after, last_seen=last_seen, stale=stale, now=now)


_last_ping: dict[str, float] = {}
PING_EVERY = 30.0  # real seconds: a dead-man's switch needs a ping per period, not one per tick


def ping_heartbeat_url(settings: Any, store: Store, now: float) -> bool | None:
    """GET ``ops.heartbeat_url`` (a healthchecks.io check, Alertmanager-style Watchdog) when every
    heartbeat is fresh.  True: pinged; False: the ping failed (logged); None: nothing to do (no URL,
    pinged recently, or the pipeline is not healthy -- then the silence is the alarm)."""
    import logging
    import time

    import requests

    from surgewatch.redact import redact, redact_url

    url = settings.ops.heartbeat_url
    if not url or time.monotonic() - _last_ping.get(url, float("-inf")) < PING_EVERY:
        return None
    if not pipeline_health(settings, store, now).ok:
        return None
    _last_ping[url] = time.monotonic()
    try:
        response = requests.get(url, timeout=settings.ops.heartbeat_timeout)
        response.close()
        response.raise_for_status()
    except requests.RequestException as exc:
        # the path of a check URL is its credential (hc-ping.com/<uuid>): show the host only
        shown = redact_url(url, hide_query=True).split("?")[0].rsplit("/", 1)[0] + "/..."
        logging.getLogger("surgewatch.ops.health").warning(
            "heartbeat ping to %s failed: %s", shown, redact(str(exc).replace(url, shown))[:200])
        return False
    store.heartbeat(HEARTBEAT_PING, now)
    return True
