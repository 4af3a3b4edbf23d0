"""The Channel protocol: one module per channel, one small contract.

``Channel.send(notification)`` either returns a receipt (JSON-serialisable: what a later update or
thread reply needs, such as Slack's ``channel`` and ``ts``) or raises :class:`ChannelError` saying
whether a retry can help -- never a bare bool (the caller could not tell "retry" from "give up").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from surgewatch.collectors.base import Mention
from surgewatch.errors import ServiceError

# Below this multiple the forecast is within the site's ordinary minute-to-minute swing: not "a rise".
NOTICEABLE_MULTIPLE = 1.15


@dataclass(frozen=True, slots=True)
class TrafficOutlook:
    """What a mention surge is expected to do to the brand's site, from a model calibrated on its history
    (:mod:`detector.traffic`).  Without calibration ``multiple`` is None and ``basis`` says why: no number
    is better than an invented one."""

    normal_rpm: float | None  # the site's normal requests/min at the expected peak (uncalibrated: now)
    multiple: float | None  # expected peak / normal
    peak_rpm: float | None
    seconds_to_peak: float | None  # from Notification.at
    basis: str  # "from 3 past surges, R² 0.91, typical error ±12%" or "uncalibrated: <why>"
    beyond_history: bool = False  # a bigger mention surge than any the model learnt from

    @property
    def calibrated(self) -> bool:
        return self.multiple is not None

    @property
    def rises(self) -> bool:
        return self.multiple is not None and self.multiple >= NOTICEABLE_MULTIPLE

    def phrase(self) -> str:
        """For ops: ``about 6x normal (~5,400 req/min vs ~900) in ~25 min``."""
        if self.multiple is None:
            normal = f"; normal now ~{human_rpm(self.normal_rpm)} req/min" if self.normal_rpm is not None else ""
            return f"no estimate yet ({self.basis}){normal}"
        if not self.rises:
            return f"no clear rise expected (normal ~{human_rpm(self.normal_rpm)} req/min)"
        text = (f"about {human_multiple(self.multiple)} normal (~{human_rpm(self.peak_rpm)} req/min vs "
                f"~{human_rpm(self.normal_rpm)}) {human_when(self.seconds_to_peak)}")
        return text + (" — bigger than any past surge, a rough guess" if self.beyond_history else "")

    def short_phrase(self) -> str | None:
        """For marketing (``about 6x normal site traffic in ~25 min``); None when there is nothing to say."""
        if not self.rises or self.multiple is None:
            return None
        return f"about {human_multiple(self.multiple)} normal site traffic {human_when(self.seconds_to_peak)}"


def human_multiple(x: float) -> str:
    """1.4x, 6x, 25x, 150x: a precision the model has, not more."""
    if x < 1.95:
        return f"{x:.1f}x"
    if x < 9.5:
        return f"{x:.0f}x"
    return f"{_two_significant(x):,.0f}x"


def human_rpm(x: float | None) -> str:
    """5,400 / 900 / 87 / 1.2: two significant figures with thousands separators."""
    if x is None or not math.isfinite(x):
        return "?"
    if x < 10:
        return f"{x:.1f}".rstrip("0").rstrip(".") or "0"
    return f"{_two_significant(x):,.0f}"


def human_when(seconds: float | None) -> str:
    """``now``, ``in ~7 min``, ``in ~25 min`` (to 5 min), ``in ~1 h 15 min`` (to 15 min)."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    minutes = seconds / 60.0
    if minutes < 1.0:
        return "now"
    if minutes < 10.0:
        return f"in ~{minutes:.0f} min"
    if minutes < 57.5:
        return f"in ~{5 * round(minutes / 5):.0f} min"
    quarters = round(minutes / 15)
    h, m = divmod(15 * quarters, 60)
    return f"in ~{h:.0f} h" + (f" {m:.0f} min" if m else "")


def _two_significant(x: float) -> float:
    if x <= 0:
        return 0.0
    digits = int(math.floor(math.log10(x))) - 1
    return round(x, -digits) if digits > 0 else round(x)


@dataclass(frozen=True, slots=True)
class Notification:
    key: str  # "<incident_id>:<transition_no>:<channel>" -- the exactly-once claim key
    incident_id: str
    brand: str
    event: str  # "opened" | "escalated" | "resolved"
    severity: str  # watch | warning | critical (the incident's severity after the transition)
    previous_severity: str
    at: datetime  # aware, in the configured zone (settings.timezone): people see this zone, machines UTC
    observed: float  # mentions in the last bucket
    expected: float  # baseline mentions per bucket
    score: float
    bucket_seconds: int
    forecast_peak_rate: float | None = None
    forecast_seconds_to_peak: float | None = None
    top_mentions: tuple[Mention, ...] = ()
    sources: dict[str, int] = field(default_factory=dict)  # mentions per source, recent window
    site: str | None = None
    site_pages: tuple[tuple[str, int], ...] = ()  # (url on the brand's site, posts linking to it)
    runbook_url: str | None = None
    actions: tuple[str, ...] = ()  # suggested actions for ops, from the brand's config
    planned_event: str | None = None  # "planned: <name>, expected" when the surge is a calendar event
    approval_controls: tuple[str, ...] = ()  # traffic controls a human may run from a button
    acknowledged_by: str | None = None
    takeover: bool = False  # an earlier attempt claimed this and died: check before sending again
    previous_receipt: dict[str, Any] | None = None  # this channel's receipt for the incident's first message
    traffic_outlook: TrafficOutlook | None = None  # expected site traffic (brands with a traffic history only)

    @property
    def ratio(self) -> float:
        return self.observed / self.expected if self.expected > 0 else float("inf")


class ChannelError(ServiceError):
    """Sending failed.  ``permanent`` (bad token, channel gone): do not retry, tell ops once.
    Otherwise retry with backoff, waiting at least ``retry_after`` seconds when given."""


@runtime_checkable
class Channel(Protocol):
    name: str

    def send(self, notification: Notification) -> dict[str, Any] | None: ...
