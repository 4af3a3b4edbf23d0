"""The incident document, typed: what ``incidents.lifecycle`` creates, every writer updates (with a
version check, :mod:`.updates`) and the store keeps as JSON.  ``TypedDict`` rather than classes, so
the stored JSON and the code's view of it are the same thing, and a type checker sees every key read."""
from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


Event = Literal["opened", "escalated", "resolved", "paged", "repeat"]
Level = Literal["quiet", "watch", "warning", "critical", "resolved"]


class PlannedNote(TypedDict, total=False):
    """What the planned-events calendar said of a transition (:func:`incidents.calendar.planned_note`)."""

    name: str
    assessment: str  # "expected" | "bigger_than_planned"
    page: bool
    observed_per_min: float
    expected_peak_per_min: float


# One step of an incident: ``no`` is its index in ``Incident.transitions``; "from" is a keyword, hence
# the functional form.
Transition = TypedDict("Transition", {
    "no": int,
    "at": float,  # the start of the bucket whose verdict caused it (epoch seconds)
    "event": str,  # an Event
    "from": str,  # a Level
    "to": str,  # a Level
    "verdict": dict[str, Any],  # detector.verdict.Verdict.to_dict()
    "dispatched": bool,  # handed to the notify queue (the delivery log says what happened then)
    "reason": NotRequired[str],  # paged: why the escalation policy paged
    "planned": NotRequired[PlannedNote],
    "silenced": NotRequired[dict[str, Any]],  # {reason, by, until} of the silence that muted it
})


class ApprovedControl(TypedDict):
    name: str  # a traffic control a person ran from its Slack button
    by: str
    at: float


class Incident(TypedDict):
    """One brand's surge, from its first alert to its resolve."""

    id: str  # <brand slug>-<opened bucket>, deterministic
    brand: str
    status: str  # "open" | "resolved"
    severity: str  # a Level: the highest reached while open
    opened_at: float
    resolved_at: float | None
    last_at: float  # the last bucket seen (replays of older buckets change nothing)
    peak_observed: float
    peak_score: float
    quiet_buckets: int
    acked_by: str | None
    acked_at: float | None
    transitions: list[Transition]
    version: NotRequired[int]  # compare-and-swap counter (incidents.updates)
    approved_controls: NotRequired[list[ApprovedControl]]
    feedback: NotRequired[str]  # "false_alarm"
    feedback_by: NotRequired[str]
    feedback_at: NotRequired[float]
    feedback_note: NotRequired[str]
