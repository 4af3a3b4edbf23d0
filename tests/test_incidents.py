"""The incident state machine: open, escalate, resolve with hysteresis, idempotent replay."""
from __future__ import annotations

from surgewatch.detector.verdict import Severity, Verdict
from surgewatch.incidents.lifecycle import IncidentPolicy, advance

POLICY = IncidentPolicy(open_severity=Severity.WATCH, resolve_after=3)


def v(t: int, severity: Severity, observed: float = 10.0, warming_up: bool = False) -> Verdict:
    return Verdict(at=t * 60.0, observed=observed, expected=2.0, score=0.9 if severity.rank else 0.1,
                   severity=severity, warming_up=warming_up)


def run(severities, policy=POLICY):
    incident, transitions = None, []
    for t, sev in enumerate(severities):
        incident, tr = advance(incident, "Acme", v(t, sev), policy)
        if tr:
            transitions.append(tr)
        if incident is not None and incident["status"] == "resolved":
            incident = None
    return transitions


Q, W, A, C = Severity.QUIET, Severity.WATCH, Severity.WARNING, Severity.CRITICAL


def test_quiet_verdicts_open_nothing():
    assert run([Q] * 20) == []


def test_an_incident_opens_escalates_and_resolves_after_enough_quiet_buckets():
    trs = run([Q, W, A, C, A, Q, Q, Q, Q])
    assert [(t["event"], t["from"], t["to"]) for t in trs] == [
        ("opened", "quiet", "watch"), ("escalated", "watch", "warning"),
        ("escalated", "warning", "critical"), ("resolved", "critical", "resolved"),
    ]


def test_a_brief_dip_does_not_resolve_it_hysteresis():
    trs = run([W, Q, Q, W, Q, Q, W])
    assert [t["event"] for t in trs] == ["opened"]


def test_warm_up_verdicts_never_open_an_incident():
    incident, tr = advance(None, "Acme", v(0, C, warming_up=True), POLICY)
    assert incident is None and tr is None


def test_open_severity_is_respected():
    assert run([W, W, A], IncidentPolicy(open_severity=Severity.WARNING, resolve_after=3))[0]["to"] == "warning"


def test_replaying_old_verdicts_changes_nothing():
    incident, _ = advance(None, "Acme", v(5, W), POLICY)
    again, tr = advance(incident, "Acme", v(5, C), POLICY)
    assert tr is None and again["severity"] == "watch"


def test_incident_ids_are_deterministic_so_a_replay_opens_the_same_incident():
    a, _ = advance(None, "Acme Live!", v(7, W), POLICY)
    b, _ = advance(None, "Acme Live!", v(7, W), POLICY)
    assert a["id"] == b["id"] == "acme-live-19700101T000700"


def test_advance_does_not_mutate_its_input():
    incident, _ = advance(None, "Acme", v(0, W), POLICY)
    before = repr(incident)
    advance(incident, "Acme", v(1, C), POLICY)
    assert repr(incident) == before
