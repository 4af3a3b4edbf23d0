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
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

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
