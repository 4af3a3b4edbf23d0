"""Scratch check of the planned-events wiring (pipeline.evaluate + escalate)."""
from __future__ import annotations

from datetime import datetime, timezone

from surgewatch.config import parse_settings
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime, escalate, evaluate

T0 = datetime(2026, 10, 23, 8, 5, tzinfo=timezone.utc).timestamp()  # 09:05 London, during the launch


def rt_for(tmp_path):
    s = parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}],
        "timezone": "Europe/London",
        "channels": {"console": {}, "slack": {"ops_channel": "#ops"},
                     "pagerduty": {"min_severity": "critical", "page_unacked_warning_after_minutes": 10}},
        "calendar": {"events": [{"brand": "Acme", "name": "ticket launch", "start": "2026-10-23 09:00",
                                 "duration_minutes": 60, "expected_peak_per_min": 100}]},
        "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
    }, env={})
    rt = Runtime(s)
    h = SourceHealth.load(rt.store, "rss", "Acme")
    h.record_success(T0 - 3600)
    h.save(rt.store)
    rt.store.set_volume("Acme", "x", [(T0 - 600, 1)])  # history starts with a first counted mention
    return rt


def seed(rt, observed, sev="critical"):
    inc = {"id": "acme-1", "brand": "Acme", "status": "open", "severity": sev, "opened_at": T0, "resolved_at": None,
           "last_at": T0 + 10**6, "peak_observed": observed, "peak_score": 0.99, "quiet_buckets": 0, "acked_by": None, "acked_at": None,
           "transitions": [{"no": 0, "at": T0, "event": "opened", "from": "quiet", "to": sev, "dispatched": False,
                            "verdict": {"at": T0, "observed": observed, "expected": 3.0, "score": 0.99, "severity": sev}}]}
    rt.store.save_incident(inc)


def test_a_planned_surge_as_big_as_planned_does_not_page(tmp_path):
    rt = rt_for(tmp_path)
    seed(rt, 150)
    out = evaluate(rt, "Acme", T0 + 120)
    assert [c for _, _, c in out.dispatch] == ["console", "slack"]
    tr = rt.store.get_incident("acme-1")["transitions"][0]
    assert tr["planned"]["name"] == "ticket launch" and tr["planned"]["assessment"] == "expected"
    # the unacked-warning rule does not page during the planned event either
    out = evaluate(rt, "Acme", T0 + 30 * 60)
    assert all(c != "pagerduty" for _, _, c in out.dispatch)


def test_a_surge_far_bigger_than_planned_pages(tmp_path):
    rt = rt_for(tmp_path)
    seed(rt, 250)
    out = evaluate(rt, "Acme", T0 + 120)
    assert "pagerduty" in [c for _, _, c in out.dispatch]
    assert rt.store.get_incident("acme-1")["transitions"][0]["planned"]["assessment"] == "bigger_than_planned"


def test_growing_past_the_plan_later_pages_through_escalate(tmp_path):
    rt = rt_for(tmp_path)
    seed(rt, 150)
    evaluate(rt, "Acme", T0 + 120)
    rt.store.set_state("verdict:Acme", {"at": T0 + 600, "observed": 260, "expected": 3.0, "score": 1, "severity": "critical"})
    inc = rt.store.get_incident("acme-1")
    tr = escalate(rt.settings, rt.store, inc, T0 + 660)
    assert tr is not None and "more than 2x the planned 100/min" in tr["reason"]
