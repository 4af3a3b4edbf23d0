"""The clock of events: when a mention, a bucket, an incident or an alert happened.

Every event time comes from :func:`now`.  Leases, locks and timeouts measure real elapsed time and
read ``time.time()`` / ``time.monotonic()`` directly on purpose: a claim's lease must expire in real
seconds even when the demo's simulated day runs 500 times faster.

Production uses the wall clock.  ``surgewatch demo`` runs a scripted day in a minute with a
*simulated* clock shared by every process of the run (the CLI, the Celery worker and its beat):
``SURGEWATCH_CLOCK=sim:<sim_start>:<real_start>:<speed>`` means "at real time ``real_start`` the
simulated time was ``sim_start``, and it runs ``speed`` times faster".  Processes agree without
talking to each other because the mapping is a pure function of the real clock.

Tests that drive a real worker step by step use ``SURGEWATCH_CLOCK=file:<path>``: the simulated
time is the number written in that file (a frozen clock the test moves).

Times for machines (logs, JSON, vendor APIs) are UTC (:func:`iso`); times for people are in the
configured zone, ``settings.timezone`` (:func:`local`, :func:`stamp`), so an alert, ``incidents``
and the weekly digest all say the same clock time.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

ENV = "SURGEWATCH_CLOCK"


@dataclass(frozen=True, slots=True)
class SimClock:
    sim_start: float
    real_start: float
    speed: float

    def now(self) -> float:
        return self.sim_start + (time.time() - self.real_start) * self.speed

    def to_env(self) -> str:
        return f"sim:{self.sim_start!r}:{self.real_start!r}:{self.speed!r}"

    def real_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.speed

    @classmethod
    def from_env(cls, value: str) -> "SimClock":
        kind, sim_start, real_start, speed = value.split(":")
        if kind != "sim" or float(speed) <= 0:
            raise ValueError(f"{ENV} must look like sim:<sim_start>:<real_start>:<speed>, got {value!r}")
        return cls(float(sim_start), float(real_start), float(speed))


def current_sim() -> SimClock | None:
    value = os.environ.get(ENV)
    return SimClock.from_env(value) if value and value.startswith("sim:") else None


def now() -> float:
    value = os.environ.get(ENV)
    if not value:
        return time.time()
    if value.startswith("file:"):
        with open(value[5:], encoding="ascii") as f:
            return float(f.read().strip())
    return SimClock.from_env(value).now()


def speed() -> float:
    """How many simulated seconds pass per real second (1 outside the demo)."""
    sim = current_sim()
    return sim.speed if sim else 1.0


def iso(ts: float) -> str:
    """A timestamp as ISO 8601 UTC to the second (logs and machine-readable fields)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Zone names that mean UTC itself (not merely an offset of zero now, as Europe/London has in winter).
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "UCT", "Etc/UCT", "Universal", "Etc/Universal", "Zulu", "Etc/Zulu"})


@lru_cache(maxsize=64)
def _named_zone(name: str) -> tzinfo:
    return timezone.utc if name in _UTC_NAMES else ZoneInfo(name)


def zone(tz: str | tzinfo | None = None) -> tzinfo:
    """The configured zone (an IANA name such as ``Europe/London``, as ``settings.timezone`` holds it)
    as a tzinfo; None means UTC.  An unknown name raises ``ZoneInfoNotFoundError`` (the config
    validator refuses one at start-up, so this is a programming error here)."""
    if tz is None:
        return timezone.utc
    return tz if isinstance(tz, tzinfo) else _named_zone(tz)


def local(at: float | datetime, tz: str | tzinfo | None = None) -> datetime:
    """``at`` (epoch seconds or a datetime) as a person in the zone ``tz`` reads it.  With
    ``tz=None`` a datetime keeps its own zone and epoch seconds are shown in UTC.  A naive datetime
    is UTC, SurgeWatch's rule for event times (a collector's skipped item may carry one)."""
    if isinstance(at, datetime):
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        return at if tz is None else at.astimezone(zone(tz))
    return datetime.fromtimestamp(at, zone(tz))


def is_utc(tz: tzinfo | None) -> bool:
    """True when ``tz`` is UTC itself (``timezone.utc`` or a UTC zone name), not a zone at offset 0."""
    if tz is None or tz is timezone.utc:
        return True
    return str(getattr(tz, "key", "")) in _UTC_NAMES


def stamp(at: float | datetime, tz: str | tzinfo | None = None) -> str:
    """A time for people: ISO 8601 to the second in the configured zone with its offset, so the
    zone is always shown (``2026-07-01T10:05:00+01:00``); in UTC exactly :func:`iso`'s
    ``2026-07-01T09:05:00Z``.  Every console line, CLI table and plain-text alert uses it."""
    dt = local(at, tz)
    if is_utc(dt.tzinfo):
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.replace(microsecond=0).isoformat()


def brief(at: float | datetime, tz: str | tzinfo | None = None) -> str:
    """A time for a table or a list whose heading names the zone: ``2026-07-01 10:05``, in the
    configured zone (a full :func:`stamp` in every cell would crowd an 80-column terminal)."""
    return local(at, tz).strftime("%Y-%m-%d %H:%M")
