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
    # ...and the traffic control acts once per incident: critical does not scale up a second time.
    assert routes(s, inc, inc["transitions"][2]) == ["console", "slack", "pagerduty"]


def test_a_traffic_control_approved_in_slack_hears_the_resolve_and_runs_its_undo():
    s = parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}],
        "channels": {"console": {}},
        "traffic_controls": [{"name": "room", "url": "https://ops.example/room", "min_severity": "warning",
                              "approval": True, "body": {"on": True}, "undo": {"on": False}}],
    }, env={})
    inc = incident("critical")
    resolved = {"no": 1, "at": T0 + 600, "event": "resolved", "from": "critical", "to": "resolved", "verdict": {}}
    assert routes(s, inc, resolved) == ["console"]  # never approved: nothing to undo
    inc["approved_controls"] = [{"name": "room", "by": "@sam (U0HUMAN001)", "at": T0 + 60}]  # what the button records
    assert routes(s, inc, resolved) == ["console", "webhook:room"]


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


def routed_settings(**routing):
    return parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}, {"name": "Beta", "query": "beta"}],
        "channels": {"console": {}, "slack": {"ops_channel": "#ops"}, "pagerduty": {"min_severity": "warning"}},
        "routing": routing,
    }, env={})


def test_routes_send_each_brand_and_severity_to_their_channels():
    s = routed_settings(routes=[{"channels": ["console"]},
                                {"brands": ["Acme"], "min_severity": "warning", "channels": ["slack", "pagerduty"]}])
    acme, beta = incident("watch", "warning"), {**incident("warning"), "brand": "Beta"}
    assert routes(s, acme, acme["transitions"][0]) == ["console"]
    assert routes(s, acme, acme["transitions"][1]) == ["console", "slack", "pagerduty"]
    assert routes(s, beta, beta["transitions"][0]) == ["console"]  # Beta has no pager route


def test_send_resolved_false_keeps_resolves_quiet():
    s = routed_settings(send_resolved=False)
    inc = incident("critical")
    resolved = {"no": 1, "at": T0 + 600, "event": "resolved", "from": "critical", "to": "resolved", "verdict": {}}
    assert routes(s, inc, resolved) == []


def test_a_route_naming_an_unconfigured_channel_is_a_config_error():
    from surgewatch.config import ConfigError

    with pytest.raises(ConfigError, match=r"routing.routes\[0\].channels: webhook:nope not configured"):
        routed_settings(routes=[{"channels": ["webhook:nope"]}])


def test_repeat_interval_reminds_chat_channels_of_an_unacknowledged_incident(store):
    from surgewatch.pipeline import repeat

    s = routed_settings(repeat_interval_minutes=60)
    inc = incident("critical")
    assert repeat(s, store, inc, T0 + 59 * 60) is None
    tr = repeat(s, store, inc, T0 + 60 * 60)
    assert tr["event"] == "repeat" and routes(s, inc, tr) == ["console", "slack"]  # never a second page
    assert repeat(s, store, inc, T0 + 61 * 60) is None  # the reminder resets the clock
    assert repeat(s, store, incident("critical", acked=True), T0 + 86400) is None


def test_an_older_state_is_superseded_by_a_newer_one_already_due(tmp_path, capsys):
    """Grouping: opened and escalated due together (a catch-up, or group_wait) -> one message."""
    from surgewatch import pipeline
    from surgewatch.pipeline import Runtime

    s = parse_settings({"brands": [{"name": "Acme", "query": "acme"}], "channels": {"console": {}},
                        "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}}, env={})
    rt = Runtime(s)
    inc = incident("watch", "critical")
    for t in inc["transitions"]:
        t["verdict"] = {"at": t["at"], "observed": 40.0, "expected": 2.0, "score": 0.9, "severity": t["to"]}
    rt.store.save_incident(inc)
    assert pipeline.notify(rt, "acme-1", 0, "console").status == "superseded"
    assert pipeline.notify(rt, "acme-1", 1, "console").status == "sent"
    out = capsys.readouterr().out
    assert out.count("Acme") == 1 and "CRITICAL" in out


def test_the_escalation_policy_does_not_page_a_brand_the_routes_keep_off_the_pager(store):
    s = parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}, {"name": "Beta", "query": "beta"}],
        "channels": {"console": {}, "slack": {"ops_channel": "#ops"},
                     "pagerduty": {"min_severity": "critical", "page_unacked_warning_after_minutes": 10}},
        "routing": {"routes": [{"channels": ["console", "slack"]}, {"brands": ["Acme"], "channels": ["pagerduty"]}]},
    }, env={})
    beta = {**incident("warning"), "brand": "Beta"}
    assert escalate(s, store, beta, T0 + 86400) is None
    acme = incident("warning")
    tr = escalate(s, store, acme, T0 + 86400)
    assert tr is not None and routes(s, acme, tr) == ["pagerduty"]
