"""What people do to incidents: acknowledge, silence a brand, mark a false alarm.

Shared by the CLI (``surgewatch ack``, ``surgewatch silence``) and Slack's buttons, so both paths
behave the same.  Alertmanager's vocabulary: a silence mutes notifications for a brand until a time;
the incidents and their history are still recorded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from surgewatch.incidents.updates import update_incident
from surgewatch.notifier.base import ChannelError
from surgewatch.pipeline import Runtime, delivery_key
from surgewatch.store.keys import silence_key
from surgewatch.incidents.model import Incident

log = logging.getLogger("surgewatch.actions.operator")


class OperatorError(Exception):
    """A request that cannot be carried out (unknown incident, bad duration)."""


def _incident(rt: Runtime, incident_id: str) -> dict[str, Any]:
    inc = rt.store.get_incident(incident_id)
    if inc is None:
        raise OperatorError(f"no incident {incident_id!r} (see `surgewatch incidents`)")
    return inc


def _was_paged(rt: Runtime, inc: Incident) -> bool:
    for tr in inc["transitions"]:
        d = rt.store.delivery(delivery_key(inc["id"], tr["no"], "pagerduty"))
        if d and d.get("status") == "sent" and not (d.get("receipt") or {}).get("error"):
            return True
    return False


@dataclass
class AckResult:
    incident: Incident
    already: bool
    pager: str  # "acknowledged" | "not paged" | "failed: ..."


def acknowledge(rt: Runtime, incident_id: str, who: str, now: float) -> AckResult:
    _incident(rt, incident_id)  # a clear error for an unknown id
    first = []

    def ack(inc: Incident) -> dict[str, Any] | None:
        if inc.get("acked_at"):
            return None
        first.append(True)
        return {**inc, "acked_by": who, "acked_at": now}

    # compare-and-swap: an evaluate tick saving the same incident meanwhile cannot drop the ack
    inc = update_incident(rt.store, incident_id, ack) or {}
    if not first or inc.get("acked_by") != who or inc.get("acked_at") != now:
        return AckResult(inc, True, "unchanged")
    pager = "not paged"
    if _was_paged(rt, inc):
        try:
            rt.channel("pagerduty").acknowledge(incident_id)  # type: ignore[attr-defined]
            pager = "acknowledged"
        except ChannelError as exc:
            pager = f"failed: {exc}"
            log.error("pagerduty acknowledge for %s failed: %s", incident_id, exc)
    return AckResult(inc, False, pager)


def mark_false_alarm(rt: Runtime, incident_id: str, who: str, now: float, note: str = "") -> dict[str, Any]:
    """Feedback for the detector's review and the digest's scorecard."""
    _incident(rt, incident_id)
    return update_incident(rt.store, incident_id, lambda inc: {
        **inc, "feedback": "false_alarm", "feedback_by": who, "feedback_at": now, "feedback_note": note}) or {}


def silence(rt: Runtime, brand: str, seconds: float, who: str, reason: str, now: float) -> dict[str, Any]:
    if seconds <= 0:
        raise OperatorError("a silence needs a positive duration, e.g. --for 2h")
    name = rt.settings.brand(brand).name
    entry = {"brand": name, "until": now + seconds, "reason": reason, "by": who, "created_at": now}
    rt.store.set_state(silence_key(name), entry)
    return entry


def unsilence(rt: Runtime, brand: str) -> None:
    name = rt.settings.brand(brand).name
    rt.store.set_state(silence_key(name), {"brand": name, "until": 0})


def active_silence(rt: Runtime, brand: str, at: float) -> dict[str, Any] | None:
    entry = rt.store.get_state(silence_key(brand))
    if entry and entry.get("until", 0) > at:
        return entry
    return None


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '1d', '1h30m' -> seconds."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip().lower())
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text.strip().lower()):
        raise OperatorError(f"cannot read duration {text!r}: use e.g. 30m, 2h, 1d, 1h30m")
    return sum(float(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)
