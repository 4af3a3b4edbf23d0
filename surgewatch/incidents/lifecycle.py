"""Incidents: the per-brand state machine between verdicts and notifications.

Pure functions over plain dicts (what the store keeps).  One open incident per brand; it opens when
a verdict reaches ``open_severity``, escalates when the severity rises, and resolves after
``resolve_after`` quiet buckets in a row (hysteresis on top of the detector's own).  Every
transition is kept with the verdict that caused it, for notifications, the digest and the review.

Idempotence: an incident remembers the last bucket it has seen (``last_at``), so replaying the same
verdicts after a redelivered task changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast
from datetime import datetime, timezone

from surgewatch.detector.verdict import Severity, Verdict
from surgewatch.incidents.model import Incident, Transition


@dataclass(frozen=True, slots=True)
class IncidentPolicy:
    open_severity: Severity = Severity.WATCH
    resolve_after: int = 10  # quiet buckets in a row


def incident_id(brand: str, at: float) -> str:
    """Deterministic, so re-scoring the same bucket after a crash opens the same incident."""
    slug = "".join(c if c.isalnum() else "-" for c in brand.lower()).strip("-") or "brand"
    stamp = datetime.fromtimestamp(at, timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{slug}-{stamp}"


def _transition(incident: Incident, event: str, to: str, verdict: Verdict) -> Transition:
    t: Transition = {
        "no": len(incident["transitions"]),
        "at": verdict.at,
        "event": event,
        "from": incident["severity"] if incident["transitions"] else "quiet",
        "to": to,
        "verdict": verdict.to_dict(),
        "dispatched": False,
    }
    incident["transitions"].append(t)
    return t


def advance(
    incident: Incident | None, brand: str, verdict: Verdict, policy: IncidentPolicy
) -> tuple[Incident | None, Transition | None]:
    """Feed one verdict.  Returns ``(incident, transition)``: the brand's open incident after the
    verdict (or the one that just resolved, or None) and the transition it caused, if any.
    ``incident`` is copied, never mutated."""
    if incident is not None and verdict.at <= incident.get("last_at", float("-inf")):
        return incident, None  # already seen (a redelivered task re-scoring old buckets)
    if incident is None or incident["status"] != "open":
        if verdict.warming_up or verdict.severity.rank < policy.open_severity.rank:
            return None, None
        new: Incident = {
            "id": incident_id(brand, verdict.at),
            "brand": brand,
            "status": "open",
            "severity": verdict.severity.value,
            "opened_at": verdict.at,
            "resolved_at": None,
            "last_at": verdict.at,
            "peak_observed": verdict.observed,
            "peak_score": verdict.score,
            "quiet_buckets": 0,
            "acked_by": None,
            "acked_at": None,
            "transitions": [],
        }
        transition = _transition(new, "opened", verdict.severity.value, verdict)
        return new, transition

    inc = cast(Incident, {**incident, "transitions": [cast(Transition, dict(t)) for t in incident["transitions"]]})
    inc["last_at"] = verdict.at
    inc["peak_observed"] = max(inc["peak_observed"], verdict.observed)
    inc["peak_score"] = max(inc["peak_score"], verdict.score)
    current = Severity(inc["severity"])
    if verdict.severity is Severity.QUIET:
        inc["quiet_buckets"] += 1
        if inc["quiet_buckets"] >= policy.resolve_after:
            inc["status"] = "resolved"
            inc["resolved_at"] = verdict.at
            return inc, _transition(inc, "resolved", "resolved", verdict)
        return inc, None
    inc["quiet_buckets"] = 0
    if verdict.severity.rank > current.rank:
        transition = _transition(inc, "escalated", verdict.severity.value, verdict)
        inc["severity"] = verdict.severity.value
        return inc, transition
    return inc, None
