"""What the detector says about one time bucket.  Plain data, no I/O."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class Severity(str, Enum):
    QUIET = "quiet"
    WATCH = "watch"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    # Order by rank, not by the string value ("critical" < "quiet" alphabetically).
    def __lt__(self, other: "Severity") -> bool:  # type: ignore[override]
        return self.rank < Severity(other).rank

    def __le__(self, other: "Severity") -> bool:  # type: ignore[override]
        return self.rank <= Severity(other).rank

    def __gt__(self, other: "Severity") -> bool:  # type: ignore[override]
        return self.rank > Severity(other).rank

    def __ge__(self, other: "Severity") -> bool:  # type: ignore[override]
        return self.rank >= Severity(other).rank


_RANK = {Severity.QUIET: 0, Severity.WATCH: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}


@dataclass(frozen=True, slots=True)
class Forecast:
    """Where the surge is heading, from the growth so far."""

    peak_rate: float  # expected peak mentions per bucket
    seconds_to_peak: float  # from the end of the scored bucket
    peak_ratio: float  # peak_rate / expected (baseline) level


@dataclass(frozen=True, slots=True)
class Verdict:
    at: float  # start of the scored bucket, epoch seconds
    observed: float  # mentions in the bucket
    expected: float  # baseline level for the bucket (seasonality-aware)
    score: float  # anomaly score in [0, 1]
    severity: Severity
    warming_up: bool = False
    forecast: Forecast | None = None
    sources_spiking: int = 0

    @property
    def ratio(self) -> float:
        return self.observed / self.expected if self.expected > 0 else float("inf") if self.observed else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = self.severity.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Verdict":
        d = dict(d)
        d["severity"] = Severity(d["severity"])
        if d.get("forecast"):
            d["forecast"] = Forecast(**d["forecast"])
        return cls(**d)
