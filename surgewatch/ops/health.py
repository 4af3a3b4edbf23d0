"""Source health per brand x source: ok / degraded / failing / disabled.

A collector that dies silently is the worst failure this tool can have (a quiet channel must mean a
quiet world), so every poll records its outcome here and ``surgewatch status`` shows it.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

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
        self.last_error = message
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
