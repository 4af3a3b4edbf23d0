"""Counting the delivery log: one function for every summary that says how many notifications went out.

The demo's closing summary ("notifications sent") and the weekly digest's scorecard used to count
differently (the digest counted alerting transitions, the demo every record marked ``sent``), so the
same week read "3" in one and "4" in the other.  Both now read :func:`tally_deliveries` over the
records the delivery log holds (:class:`surgewatch.store.base.Delivery`), so they cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from surgewatch.store.base import Delivery

# Events that tell people something is happening (an opening, an escalation, a page, a repeat);
# ``resolved`` is the all-clear.  Both are notifications, and both are counted as sent.
ALL_CLEAR_EVENTS = frozenset({"resolved"})


@dataclass(frozen=True)
class DeliveryTally:
    """What the delivery log says became of a set of notifications."""

    by_status: dict[str, int] = field(default_factory=dict)  # {"sent": 4, "failed": 1, ...}
    by_channel: dict[str, dict[str, int]] = field(default_factory=dict)  # {"console": {"sent": 4}}
    alerts_sent: int = 0  # sent records of openings, escalations, pages and repeats
    all_clears_sent: int = 0  # sent records of resolves
    pages_sent: int = 0  # PagerDuty records sent (triggers; its resolves are not pages)

    @property
    def sent(self) -> int:
        """Notifications sent: every record with status ``sent``, all channels, all events."""
        return self.by_status.get("sent", 0)

    @property
    def failed(self) -> int:
        return self.by_status.get("failed", 0)

    @property
    def in_flight(self) -> int:
        return self.by_status.get("pending", 0) + self.by_status.get("claimed", 0)

    def channels_text(self, status: str = "sent") -> str:
        """``console 4, slack 2``: how many records of ``status`` each channel holds."""
        return ", ".join(f"{channel} {per[status]}" for channel, per in sorted(self.by_channel.items())
                         if per.get(status))

    def not_sent_text(self) -> str:
        """``1 failed, 2 suppressed`` (or ``none``): the records that did not go out, by status."""
        parts = [f"{self.by_status[s]} {s}" for s in ("failed", "superseded", "suppressed", "pending", "claimed")
                 if self.by_status.get(s)]
        return ", ".join(parts) or "none"


def tally_deliveries(records: Iterable[Delivery]) -> DeliveryTally:
    """Count delivery records as the log holds them (never recomputed from today's config)."""
    by_status: dict[str, int] = {}
    by_channel: dict[str, dict[str, int]] = {}
    alerts = all_clears = pages = 0
    for d in records:
        by_status[d.status] = by_status.get(d.status, 0) + 1
        per = by_channel.setdefault(d.channel, {})
        per[d.status] = per.get(d.status, 0) + 1
        if d.status != "sent":
            continue
        if (d.event or "") in ALL_CLEAR_EVENTS:
            all_clears += 1
        else:
            alerts += 1
            pages += d.channel == "pagerduty"
    return DeliveryTally(by_status, by_channel, alerts, all_clears, pages)
