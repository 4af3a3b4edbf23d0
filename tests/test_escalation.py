"""The escalation policy and routing: who hears about which transition, with an injected clock."""
from __future__ import annotations

import pytest

from surgewatch.config import parse_settings
from surgewatch.pipeline import escalate, routes
from surgewatch.store.sqlite import SqliteStore

T0 = 1_795_770_000.0


def settings(**pd):
    return parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}],
        "channels": {"console": {}, "slack": {"ops_channel": "#ops"},
                     "pagerduty": {"min_severity": "critical", "page_unacked_warning_after_minutes": 10, **pd}},
        "traffic_controls": [{"name": "scale", "url": "https://ops.example/scale", "min_severity": "warning",
                              "body": {"factor": 3}, "undo": {"factor": 1}}],
    }, env={})


def incident(*severities, acked=False):
    trs = []
    prev = "quiet"
    for i, sev in enumerate(severities):
        trs.append({"no": i, "at": T0 + i * 60, "event": "opened" if i == 0 else "escalated", "from": prev, "to": sev,
                    "verdict": {}, "dispatched": True})
        prev = sev
    return {"id": "acme-1", "brand": "Acme", "status": "open", "severity": prev, "opened_at": T0,
            "acked_at": T0 + 30 if acked else None, "transitions": trs}


@pytest.fixture
def store(tmp_path):
    return SqliteStore(str(tmp_path / "s.db"))


def test_watch_goes_to_chat_only_warning_adds_the_traffic_control_critical_pages():
    s = settings()
    inc = incident("watch", "warning", "critical")
    assert routes(s, inc, inc["transitions"][0]) == ["console", "slack"]
    assert routes(s, inc, inc["transitions"][1]) == ["console", "slack", "webhook:scale"]
    assert routes(s, inc, inc["transitions"][2]) == ["console", "slack", "pagerduty", "webhook:scale"]


def test_the_resolve_reaches_only_channels_that_acted():
    s = settings()
    small = incident("watch")
    resolved = {"no": 1, "at": T0 + 600, "event": "resolved", "from": "watch", "to": "resolved", "verdict": {}}
    assert routes(s, small, resolved) == ["console", "slack"]
    big = incident("watch", "critical")
    assert routes(s, big, {**resolved, "no": 2}) == ["console", "slack", "pagerduty", "webhook:scale"]


def test_an_unacknowledged_warning_pages_after_the_wait_and_only_once(store):
    s = settings()
    inc = incident("warning")
    assert escalate(s, store, inc, T0 + 60 + 9 * 60) is None  # 9 minutes after the alert went out
    tr = escalate(s, store, inc, T0 + 60 + 10 * 60)
    assert tr is not None and tr["event"] == "paged" and "not acknowledged within 10 min" in tr["reason"]
    assert routes(s, inc, tr) == ["pagerduty"]
    assert escalate(s, store, inc, T0 + 3600) is None  # already paged


def test_an_acknowledged_warning_does_not_page(store):
    assert escalate(settings(), store, incident("warning", acked=True), T0 + 3600) is None


def test_a_watch_never_pages_on_time_alone(store):
    assert escalate(settings(), store, incident("watch"), T0 + 86400) is None


def test_a_permanent_slack_failure_pages_ops_instead(store):
    store.set_state("channel_failed:acme-1:slack", {"error": "channel_not_found"})
    tr = escalate(settings(), store, incident("watch"), T0 + 120)
    assert tr is not None and "Slack failed: channel_not_found" in tr["reason"]


def test_the_policy_can_be_switched_off(store):
    s = settings(page_unacked_warning_after_minutes=None, page_when_slack_fails=False)
    store.set_state("channel_failed:acme-1:slack", {"error": "channel_not_found"})
    assert escalate(s, store, incident("warning"), T0 + 86400) is None
