"""Stage 2, evaluate: score every completed bucket since the last run with the pure detector, move
the brand's incident, and list the transitions still to be dispatched (an outbox: re-listed until
marked)."""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from surgewatch import clock
from surgewatch.detector.spike import SpikeDetector
from surgewatch.detector.verdict import Severity, Verdict
from surgewatch.incidents.lifecycle import IncidentPolicy, advance
from surgewatch.incidents.updates import MAX_TRIES, save_evaluated, update_incident, version
from surgewatch.notifier.escape import log_text
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline.routing import _held_back, _planned, escalate, repeat, routes
from surgewatch.pipeline.runtime import Runtime
from surgewatch.registry import configured_channels
from surgewatch.store.base import Delivery
from surgewatch.store.keys import detector_key, evaluate_lock_key, scored_key, silence_key, verdict_key
from surgewatch.incidents.model import Incident, Transition

log = logging.getLogger("surgewatch.pipeline.evaluation")

FIRST_LOOK_BACK = 86400  # a new brand's first evaluation starts at its first mention within this window
MAX_CATCH_UP = 7 * 86400  # after a long outage, do not replay more than a week
# A tick scores at most this many buckets per brand, so a chunk catching up after an outage stays
# well inside its lock's lease and memory; the next ticks (four a bucket) go on from there.  It is
# also the window RedisStore reads field by field (SHORT_WINDOW_BUCKETS), not whole days.
MAX_TICK_BUCKETS = 240


@dataclass
class EvaluateOutcome:
    brand: str
    verdicts: list[Verdict] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    dispatch: list[tuple[str, int, str]] = field(default_factory=list)  # (incident_id, transition no, channel)
    busy: bool = False


def evaluate(rt: Runtime, brand: str, now: float | None = None) -> EvaluateOutcome:
    return evaluate_many(rt, [rt.brand(brand).name], now)[0]  # an unknown brand raises KeyError here


def evaluate_many(rt: Runtime, brands: list[str], now: float | None = None) -> list[EvaluateOutcome]:
    """``evaluate`` for a chunk of brands with a fixed number of store round trips (locks, states,
    open incidents, counts, saves), whatever the chunk's size: one brand at a time cost ~15 round
    trips each, and a 1,000-brand tick took seconds.  One outcome per distinct brand of the config, in
    order: a name the config no longer has (a beat not restarted after an edit) is skipped with a
    warning, so it cannot stop the rest of its chunk."""
    now = clock.now() if now is None else now
    store = rt.store
    names: list[str] = []
    for b in brands:
        try:
            names.append(rt.brand(b).name)
        except KeyError:
            log.warning("evaluate: %s is not a brand of the config (any more); skipped", log_text(str(b), 200))
    names = list(dict.fromkeys(names))
    locks = [evaluate_lock_key(b) for b in names]
    # Two workers must not score the same brand at once (beat could queue two ticks after a stall).
    won = store.claim_many(locks, 60.0, time.time())
    mine = [b for b, w in zip(names, won) if w]
    try:
        scored = _evaluate_locked(rt, mine, now) if mine else {}
    finally:
        store.release_many([lock for lock, w in zip(locks, won) if w])
    return [scored.get(b) or EvaluateOutcome(b, busy=True) for b in names]


def evaluate_until_current(rt: Runtime, brands: list[str], now: float | None = None) -> list[EvaluateOutcome]:
    """``evaluate_many`` until every brand is scored up to its horizon (a long catch-up takes several
    ticks of ``MAX_TICK_BUCKETS``), for backfills, benchmarks and tests: one merged outcome per brand."""
    now = clock.now() if now is None else now
    merged: list[EvaluateOutcome] | None = None
    while True:
        step = evaluate_many(rt, brands, now)
        if merged is None:
            merged = step
        else:
            for into, more in zip(merged, step):
                into.verdicts += more.verdicts
                into.transitions += more.transitions
                into.dispatch += more.dispatch
                into.busy = into.busy or more.busy
        if not any(o.verdicts for o in step) or any(o.busy for o in step):
            return merged


def _evaluate_locked(rt: Runtime, brands: list[str], now: float) -> dict[str, EvaluateOutcome]:
    store = rt.store
    bucket = rt.settings.detector.bucket_seconds
    health_keys = [SourceHealth.key(s, b) for b in brands for s in rt.settings.sources.enabled()]
    state_keys = [scored_key(b) for b in brands] + [silence_key(b) for b in brands] + health_keys
    states = dict(zip(state_keys, store.get_states(state_keys)))
    open_incidents = store.open_incidents(brands)
    ends = {b: math.floor(rt.scoring_horizon(b, now, states) / bucket) * bucket for b in brands}  # buckets before are complete
    # Most ticks find most brands already scored up to their horizon (ticks run more often than
    # buckets close): read and decode the detector state (~5 KB) only where there is work.
    due = [b for b in brands if (states[scored_key(b)] or {}).get("next_at", -math.inf) < ends[b]]
    states.update(zip((detector_key(b) for b in due), store.get_states([detector_key(b) for b in due])))
    params = {b: rt.detector_params(b) for b in due}  # per brand: its sensitivity
    # Where each brand's scoring resumes: its saved detector, or (a new brand, or a state from an
    # older detector version) its first counted mention within the last day -- scoring the empty
    # buckets before it would teach the detector a baseline of zero.
    plans: dict[str, tuple[SpikeDetector | None, float, float]] = {}  # brand -> (detector, start, end)
    for b in due:
        end: float = ends[b]
        saved = states[detector_key(b)]
        detector, start = None, end - FIRST_LOOK_BACK
        if saved:
            try:
                detector, start = SpikeDetector(params[b], saved["detector"]), saved["next_at"]
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("detector state for %s not usable (%s); starting a fresh baseline", b, exc)
        start = max(start, end - MAX_CATCH_UP // bucket * bucket)
        plans[b] = (detector, start, end if detector is None else min(end, start + MAX_TICK_BUCKETS * bucket))
    counts = store.counts_many({b: (start, end) for b, (_, start, end) in plans.items()})
    saves: dict[str, dict[str, Any]] = {}
    touched_by_brand: dict[str, dict[str, Incident]] = {}
    policy = IncidentPolicy(
        open_severity=Severity(rt.settings.detector.open_severity),
        resolve_after=rt.settings.detector.resolve_after_quiet_buckets,
    )
    outcomes = {b: EvaluateOutcome(b) for b in brands}
    for b, (detector, start, end) in plans.items():
        outcome = outcomes[b]
        series = counts.get(b, {})
        if detector is None:
            first = min((t for s in series.values() for t, c in s.items() if c > 0), default=None)
            if first is None:
                continue  # nothing counted yet: no history to start from
            detector, start = SpikeDetector(params[b]), int(first)
            end = min(end, start + MAX_TICK_BUCKETS * bucket)
        incident = open_incidents.get(b)
        touched = touched_by_brand[b] = {}
        t: float = start
        while t < end:
            by_source = {source: float(points.get(t, 0)) for source, points in series.items()}
            verdict = detector.update(t, sum(by_source.values()), by_source)
            outcome.verdicts.append(verdict)
            before = incident
            incident, transition = advance(incident, b, verdict, policy)
            if incident is not None and incident is not before:
                touched[incident["id"]] = incident
            if transition is not None:
                outcome.transitions.append(transition)
            if incident is not None and incident["status"] == "resolved":
                incident = None
            t += bucket
        if outcome.verdicts:
            last = outcome.verdicts[-1]
            log.info("evaluated %s: %d bucket(s) from %s, last %s observed=%.0f expected=%.1f %s", b,
                     len(outcome.verdicts), clock.iso(start), clock.iso(last.at), last.observed, last.expected,
                     last.severity.value)
            saves[detector_key(b)] = {"next_at": end, "detector": detector.state()}
            saves[scored_key(b)] = {"next_at": end}  # written with the state, in one call
            saves[verdict_key(b)] = last.to_dict()
        if incident is None:
            open_incidents.pop(b, None)
        else:
            open_incidents[b] = incident
    # Incidents first, detector states second: if we die in between, the replay re-scores the
    # same buckets and `advance` ignores those it has already seen.
    # Compare-and-swap: an ack (or a click, or a dispatch mark) that landed since the tick read the
    # incident is kept, and what follows (escalation above all) sees it.
    for b, touched in touched_by_brand.items():
        for iid, inc in list(touched.items()):
            touched[iid] = stored = save_evaluated(store, inc)
            current = open_incidents.get(b)
            if current is not None and current["id"] == iid:
                open_incidents[b] = stored
    store.set_states(saves)
    for b, outcome in outcomes.items():
        _outbox(rt, b, touched_by_brand.get(b, {}), open_incidents.get(b), states[silence_key(b)], outcome, now)
    return outcomes


def _outbox(rt: Runtime, brand: str, touched: dict[str, Incident], open_now: Incident | None,
            silenced: dict[str, Any] | None, outcome: EvaluateOutcome, now: float) -> None:
    """List every transition not yet handed to the notify queue, including ones a crashed run saved
    but never dispatched; add the escalation and repeat transitions that are due."""
    store = rt.store
    candidates = dict(touched)
    if open_now is not None:
        open_now = candidates.setdefault(open_now["id"], open_now)
        for _ in range(MAX_TRIES):
            trial = copy.deepcopy(open_now)
            added = [tr for policy in (escalate, repeat) if (tr := policy(rt.settings, store, trial, now)) is not None]
            if not added:
                break
            if store.replace_incident(trial, version(trial)):
                candidates[trial["id"]] = {**trial, "version": version(trial) + 1}
                outcome.transitions.extend(added)
                break
            # Someone acknowledged (or clicked) meanwhile: decide again on what is stored now.
            open_now = candidates[open_now["id"]] = store.get_incident(open_now["id"]) or open_now
    if silenced and silenced.get("until", 0) <= now:
        silenced = None
    log_entries: list[Delivery] = []  # the delivery log: pending for each dispatch, suppressed with why
    configured = configured_channels(rt.settings)
    approval_only = {f"webhook:{t.name}" for t in rt.settings.traffic_controls if t.approval}
    at = clock.now()

    def entry(inc: Incident, tr: Transition, channel: str, status: str = "pending",
              reason: str | None = None) -> None:
        log_entries.append(Delivery(inc["id"], tr["no"], channel, status=status, event=tr["event"], brand=inc["brand"],
                                    reason=reason, created_at=at, updated_at=at))

    for inc in candidates.values():
        changed = False
        for tr in inc["transitions"]:
            if tr.get("dispatched"):
                continue
            channels = routes(rt.settings, inc, tr)
            if tr["event"] in ("opened", "escalated"):
                for c in configured:
                    if c not in channels:
                        entry(inc, tr, c, "suppressed", "route: runs only when approved in Slack" if c in approval_only
                              else f"route: not routed for a {tr['to']} {tr['event']} transition")
            if tr["event"] in ("opened", "escalated") and "planned" not in tr:
                note = _planned(rt.settings, brand, tr["at"], tr["verdict"].get("observed", 0.0))
                if note is not None:
                    tr["planned"] = note
                    changed = True
            if _held_back(tr, "pagerduty"):
                # The planned surge, as big as planned: Slack and the console say so; no page.
                if "pagerduty" in channels:
                    entry(inc, tr, "pagerduty", "suppressed",
                          f"planned event: {(tr.get('planned') or {}).get('name')}, as big as planned")
                channels = [c for c in channels if c != "pagerduty"]
            if silenced is not None:
                # A silence mutes every channel but the console log; the transition is still recorded.
                for c in channels:
                    if c != "console":
                        entry(inc, tr, c, "suppressed", f"silence: {silenced.get('reason') or 'no reason given'} "
                                                        f"(by {silenced.get('by') or '?'}, until {clock.stamp(silenced['until'], rt.settings.timezone)})")
                channels = [c for c in channels if c == "console"]
                tr["silenced"] = {"reason": silenced.get("reason", ""), "by": silenced.get("by", ""),
                                  "until": silenced["until"]}
                changed = True
            for channel in channels:
                outcome.dispatch.append((inc["id"], tr["no"], channel))
                entry(inc, tr, channel)
            if not channels:
                tr["dispatched"] = True
                changed = True
        if changed:
            save_evaluated(store, inc)  # the marks are the tick's own; anything else changed meanwhile is kept
    # Only where no record exists: an outbox entry listed again must not reset a record that moved on.
    store.add_pending(log_entries)


def mark_dispatched(rt: Runtime, dispatch: list[tuple[str, int, str]]) -> None:
    by_incident: dict[str, set[int]] = {}
    for incident_id, no, _ in dispatch:
        by_incident.setdefault(incident_id, set()).add(no)
    for incident_id, nos in by_incident.items():
        def mark(inc: Incident, nos: set[int] = nos) -> Incident | None:
            todo = [tr for tr in inc["transitions"] if tr["no"] in nos and not tr.get("dispatched")]
            for tr in todo:
                tr["dispatched"] = True
            return inc if todo else None

        update_incident(rt.store, incident_id, mark)
