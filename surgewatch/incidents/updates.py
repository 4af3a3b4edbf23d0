"""Safe incident updates: every writer (evaluate, ack, false alarm, approved controls, dispatch
marks) changes an incident with compare-and-swap on its ``version``, so no writer's update is lost
to another's read-modify-write of the whole document.

Two shapes of writer:

* small changes (an ack, a false alarm, a dispatch mark): :func:`update_incident` reads the
  incident, applies the change and swaps it in, reading again and re-applying the change when
  another writer got there first;
* the evaluate tick, which computes the incident over many buckets from the copy it read at the
  start: :func:`save_evaluated` swaps its copy in, and on a conflict keeps the fields other writers
  own (the ack, the feedback, the approved controls, dispatch marks) from the stored copy.  The
  evaluate tick is the only writer of the state machine's fields (one tick per brand at a time,
  under its lock), so that merge loses nothing.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, cast

from surgewatch.store.base import Store
from surgewatch.incidents.model import Incident

# The fields only the evaluate tick writes (the state machine's, see lifecycle.advance).
EVALUATION_FIELDS = ("status", "severity", "opened_at", "resolved_at", "last_at", "peak_observed", "peak_score",
                     "quiet_buckets", "transitions")
MAX_TRIES = 50


class IncidentConflict(Exception):
    """An incident kept changing under us ``MAX_TRIES`` times in a row."""


def version(incident: Incident) -> int:
    return int(incident.get("version") or 0)


def update_incident(store: Store, incident_id: str, change: Callable[[Incident], Incident | None]
                    ) -> Incident | None:
    """Apply ``change`` (given a copy of the stored incident; returns the new incident, or None
    for "nothing to change") with compare-and-swap.  Returns what is stored afterwards (None if
    there is no such incident)."""
    for _ in range(MAX_TRIES):
        current = store.get_incident(incident_id)
        if current is None:
            return None
        new = change(copy.deepcopy(current))
        if new is None:
            return current
        if store.replace_incident(new, version(current)):
            return cast(Incident, {**new, "version": version(current) + 1})
    raise IncidentConflict(f"incident {incident_id} changed under us {MAX_TRIES} times in a row")


def merge_evaluation(ours: Incident, stored: Incident) -> Incident:
    """The evaluate tick's incident with everything other writers changed since it read it: the
    stored copy's fields, but the state machine's from ``ours``; a transition marked dispatched in
    either copy stays marked."""
    mine: dict[str, Any] = dict(ours)
    merged: dict[str, Any] = {**stored, **{k: mine[k] for k in EVALUATION_FIELDS if k in mine}}
    stored_transitions = {t["no"]: t for t in stored.get("transitions", [])}
    transitions = []
    for tr in merged.get("transitions", []):
        theirs = stored_transitions.get(tr["no"])
        tr = {**(theirs or {}), **tr}
        if theirs is not None and theirs.get("dispatched"):
            tr["dispatched"] = True
        transitions.append(tr)
    merged["transitions"] = transitions
    merged["version"] = version(stored)
    return cast(Incident, merged)


def save_evaluated(store: Store, incident: Incident) -> Incident:
    """Swap in the evaluate tick's copy of an incident (read at ``incident['version']``); on a
    conflict merge the stored copy in (:func:`merge_evaluation`) and try again.  Returns the incident
    as stored, which is what the rest of the tick must go on with (an ack that landed meanwhile is in it)."""
    for _ in range(MAX_TRIES):
        if store.replace_incident(incident, version(incident)):
            return {**incident, "version": version(incident) + 1}
        stored = store.get_incident(incident["id"])
        if stored is None:  # gone (never: incidents are not deleted); write ours as new
            incident = {**incident, "version": 0}
            continue
        incident = merge_evaluation(incident, stored)
    raise IncidentConflict(f"incident {incident['id']} changed under us {MAX_TRIES} times in a row")
