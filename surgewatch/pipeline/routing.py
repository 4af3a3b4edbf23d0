"""Stage 3, route: which channels hear about a transition (Alertmanager's routes, group_wait and
repeat_interval), and the escalation policy that adds "paged" and "repeat" transitions."""
from __future__ import annotations

from typing import Any, cast

from surgewatch.config import Settings, channel_config
from surgewatch.detector.verdict import Severity
from surgewatch.incidents.calendar import planned_note
from surgewatch.registry import configured_channels
from surgewatch.store.base import Store
from surgewatch.store.keys import channel_failed_key, verdict_key
from surgewatch.incidents.model import Incident, PlannedNote, Transition

def _min_severity(settings: Settings, channel: str) -> Severity | None:
    """The lowest severity a channel acts on (None: every transition): its ``min_severity``, if set."""
    level = getattr(channel_config(settings, channel), "min_severity", None)
    return Severity(level) if level else None


CHAT_CHANNELS = ("console", "slack", "apprise")  # people read them: reminders go there


def routes(settings: Settings, incident: Incident, transition: Transition) -> list[str]:
    """Which channels hear about a transition.  Pager and traffic controls act from their minimum
    severity up, and hear the resolve only if they acted on the incident.  A "paged" transition
    (the escalation policy's) goes to the pager alone."""
    if transition["event"] == "paged":
        return ["pagerduty"] if _pager_routed(settings, incident["brand"]) else []
    if transition["event"] == "repeat":
        # A reminder that the incident is still open: chat channels only (no second page, no
        # second scale-up).
        return [c for c in _routed(settings, incident, transition) if c in CHAT_CHANNELS]
    if transition["event"] == "resolved" and not settings.routing.send_resolved:
        return []
    out = []
    approval_only = {f"webhook:{t.name}" for t in settings.traffic_controls if t.approval}
    for name in _routed(settings, incident, transition):
        if name in approval_only:
            # Runs only when a human clicks its Slack button; its undo follows only if it ran.
            # approved_controls: [{"name", "by", "at"}] (names alone in older records)
            approved = {x.get("name") if isinstance(x, dict) else x for x in incident.get("approved_controls") or []}
            if transition["event"] == "resolved" and name.removeprefix("webhook:") in approved:
                out.append(name)
            continue
        if transition["event"] == "resolved":
            if _min_severity(settings, name) is not None and not _acted(settings, incident, name):
                continue
        elif not _acts_on(settings, name, transition):
            continue
        elif name.startswith("webhook:") and any(
            _acts_on(settings, name, t) for t in incident["transitions"][: transition["no"]] if t["event"] != "resolved"
        ):
            continue  # a traffic control acts once per incident (scaling up twice is not the same as once)
        out.append(name)
    return out


def _routed(settings: Settings, incident: Incident, transition: Transition) -> list[str]:
    """The channels the routing table sends this brand's transitions to (all, without routes).
    A resolve or a reminder follows the incident's peak severity, so every channel told of the
    incident hears it end."""
    channels = configured_channels(settings)
    table = settings.routing.routes
    if not table:
        return channels
    if transition["to"] == "resolved" or transition["event"] == "repeat":
        severity = max((Severity(t["to"]) for t in incident["transitions"] if t["to"] != "resolved"),
                       default=Severity.WATCH)
    else:
        severity = Severity(transition["to"])
    wanted = {
        c
        for r in table
        if _route_has_brand(r, incident["brand"]) and severity.rank >= Severity(r.min_severity).rank
        for c in r.channels
    }
    return [c for c in channels if c in wanted]


def _route_has_brand(route: Any, brand: str) -> bool:
    return not route.brands or brand.casefold() in {b.casefold() for b in route.brands}


def _pager_routed(settings: Settings, brand: str) -> bool:
    """Whether the pager may hear about this brand at all (the escalation policy must not page a
    brand the routing table keeps off the pager)."""
    if settings.channels.pagerduty is None:
        return False
    table = settings.routing.routes
    return not table or any("pagerduty" in r.channels and _route_has_brand(r, brand) for r in table)


def repeat(settings: Settings, store: Store, incident: Incident, now: float) -> Transition | None:
    """Alertmanager's repeat_interval: remind the chat channels of an open incident nobody has
    acknowledged when nothing has been said about it for that long."""
    every = settings.routing.repeat_interval_minutes
    if every is None or incident["status"] != "open" or incident.get("acked_at"):
        return None
    last = incident["transitions"][-1]
    if now - last["at"] < every * 60:
        return None
    tr: Transition = {"no": len(incident["transitions"]), "at": now, "event": "repeat", "from": incident["severity"],
          "to": incident["severity"], "verdict": last["verdict"], "dispatched": False}
    incident["transitions"].append(tr)
    return tr


def _acts_on(settings: Settings, channel: str, transition: Transition) -> bool:
    if transition["event"] == "paged":
        return channel == "pagerduty"
    threshold = _min_severity(settings, channel)
    return threshold is None or Severity(transition["to"]).rank >= threshold.rank


def _acted(settings: Settings, incident: Incident, channel: str) -> bool:
    return any(t["event"] != "resolved" and _acts_on(settings, channel, t) and not _held_back(t, channel)
               for t in incident["transitions"])


def _held_back(transition: Transition, channel: str) -> bool:
    """The pager stayed quiet for this transition: the surge was the planned one."""
    return channel == "pagerduty" and (transition.get("planned") or {}).get("page") is False


def _planned(settings: Settings, brand: str, at: float, observed: float) -> PlannedNote | None:
    if not settings.calendar.events:
        return None
    events = settings.planned_events()
    per_min = observed * 60 / settings.detector.bucket_seconds
    note = planned_note(events, brand, at, per_min, lead_minutes=settings.calendar.lead_minutes,
                        k=settings.calendar.bigger_factor)
    return cast(PlannedNote, note) if note is not None else None


def escalate(settings: Settings, store: Store, incident: Incident, now: float) -> Transition | None:
    """The escalation policy: page a warning nobody acknowledged in time, or page because Slack
    failed permanently.  Returns the "paged" transition it appended, if any."""
    pd = settings.channels.pagerduty
    if pd is None or not _pager_routed(settings, incident["brand"]) or incident["status"] != "open" \
            or _acted(settings, incident, "pagerduty"):
        return None
    reason = None
    planned = None
    if settings.calendar.events:
        latest = store.get_state(verdict_key(incident["brand"])) or incident["transitions"][-1]["verdict"]
        planned = _planned(settings, incident["brand"], now, latest.get("observed", 0.0))
    if planned is not None and not planned["page"]:
        return None  # the planned surge, as big as planned: no page, Slack already says why
    warnings = [t for t in incident["transitions"] if t["to"] in ("warning", "critical")]
    wait = pd.page_unacked_warning_after_minutes
    if wait is not None and warnings and not incident.get("acked_at") and now - (warnings[0]["at"] + settings.detector.bucket_seconds) >= wait * 60:
        reason = f"warning not acknowledged within {wait} min"
    failed = store.get_state(channel_failed_key(incident["id"], "slack"))
    if pd.page_when_slack_fails and failed:
        reason = f"Slack failed: {failed.get('error', 'permanent error')}"
    if planned is not None:  # here only when bigger than planned
        bigger = (f"{planned['observed_per_min']:g}/min is more than {settings.calendar.bigger_factor:g}x the planned "
                  f"{planned['expected_peak_per_min']:g}/min ({planned['name']})")
        reason = bigger if reason is None else f"{reason}; {bigger}"
    if reason is None:
        return None
    last = incident["transitions"][-1]
    tr: Transition = {"no": len(incident["transitions"]), "at": now, "event": "paged", "from": incident["severity"],
          "to": incident["severity"], "verdict": last["verdict"], "dispatched": False, "reason": reason}
    if planned is not None:
        tr["planned"] = planned
    incident["transitions"].append(tr)
    return tr
