"""PagerDutyChannel against the local fake Events API v2 (requests, the real wire format)."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import pytest
import requests

from surgewatch.notifier import ChannelError, PagerDutyChannel
from surgewatch.notifier.pagerduty import dedup_key_for
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.test_notifier_contract import HOSTILE, PD_KEY, make_mention, make_notification


@pytest.fixture
def pd() -> Iterator[FakePagerDuty]:
    with FakePagerDuty(routing_keys=[PD_KEY]) as fake:
        yield fake


def channel(pd: FakePagerDuty) -> PagerDutyChannel:
    return PagerDutyChannel(PD_KEY, events_url=pd.events_url, timeout=5)


def test_trigger_acknowledge_and_resolve_share_the_incidents_dedup_key(pd: FakePagerDuty) -> None:
    ch = channel(pd)
    n = make_notification(key="inc-1:1:pagerduty")
    assert ch.send(n) == {"dedup_key": "inc-1", "action": "trigger"}
    assert pd.alerts == {"inc-1": "triggered"}
    assert ch.acknowledge("inc-1")["dedup_key"] == "inc-1"
    assert pd.alerts == {"inc-1": "acknowledged"}
    assert ch.send(replace(n, key="inc-1:2:pagerduty", event="resolved")) == {"dedup_key": "inc-1", "action": "resolve"}
    assert pd.alerts == {"inc-1": "resolved"}
    assert [(e.action, e.dedup_key) for e in pd.accepted()] == [("trigger", "inc-1"), ("acknowledge", "inc-1"), ("resolve", "inc-1")]


def test_an_escalation_retriggers_the_same_alert_with_the_new_severity(pd: FakePagerDuty) -> None:
    ch = channel(pd)
    ch.send(make_notification(severity="warning"))
    ch.send(make_notification(event="escalated", severity="critical", previous_severity="warning"))
    assert len(pd.alerts) == 1
    assert [e.body["payload"]["severity"] for e in pd.accepted("trigger")] == ["warning", "critical"]


@pytest.mark.parametrize("ours, theirs", [("watch", "info"), ("warning", "warning"), ("critical", "critical")])
def test_severities_map_to_pagerdutys(pd: FakePagerDuty, ours: str, theirs: str) -> None:
    channel(pd).send(make_notification(severity=ours))
    assert pd.accepted()[0].body["payload"]["severity"] == theirs


def test_the_trigger_carries_a_summary_numbers_and_links(pd: FakePagerDuty) -> None:
    channel(pd).send(make_notification())
    event = pd.accepted()[0].body
    payload = event["payload"]
    assert payload["summary"] == "[WARNING] Acme opened: 48 mentions/min vs 3.1 expected (x15.5); peak ~120/min in ~20 min"
    assert payload["source"] == "www.acme.example"
    assert payload["component"] == "Acme" and payload["timestamp"] == "2026-11-28T10:05:00Z"
    details = payload["custom_details"]
    assert details["observed_per_min"] == 48 and details["expected_per_min"] == 3.1 and details["ratio"] == 15.48
    assert details["forecast_peak_per_min"] == 120 and details["forecast_seconds_to_peak"] == 1200
    assert details["site_pages"][0] == {"url": "https://www.acme.example/tickets", "posts": 31}
    hrefs = [link["href"] for link in event["links"]]
    assert hrefs[0] == "https://wiki.acme.example/runbooks/surge"
    assert "https://www.acme.example/tickets" in hrefs and "https://x.example/acmefan/status/1" in hrefs


def test_outside_text_is_flattened_and_the_summary_fits_pagerdutys_limit(pd: FakePagerDuty) -> None:
    evil = make_mention(1, text=HOSTILE + "\n" + "x" * 5000, url="javascript:alert(1)")
    channel(pd).send(make_notification(brand="B" * 2000, top_mentions=(evil,)))
    event = pd.accepted()[0].body
    assert len(event["payload"]["summary"]) <= 1024
    assert "\n" not in event["payload"]["custom_details"]["top_posts"][0]["text"]
    assert all(link["href"].startswith("http") for link in event["links"])


def test_a_long_incident_id_gets_a_stable_short_dedup_key(pd: FakePagerDuty) -> None:
    long_id = "i" * 400
    channel(pd).send(make_notification(incident_id=long_id))
    key = pd.accepted()[0].dedup_key
    assert key == dedup_key_for(long_id) and len(key) <= 255 and dedup_key_for(long_id) == key


def test_a_429_without_retry_after_waits_pagerdutys_suggested_30_seconds(pd: FakePagerDuty) -> None:
    pd.fail_next(429)
    with pytest.raises(ChannelError) as info:
        channel(pd).send(make_notification())
    assert info.value.retry_after == 30 and not info.value.permanent


def test_a_refused_event_is_permanent_and_names_what_pagerduty_said(pd: FakePagerDuty) -> None:
    ch = PagerDutyChannel("not-a-key-we-know", events_url=pd.events_url)
    with pytest.raises(ChannelError) as info:
        ch.send(make_notification())
    assert info.value.permanent
    assert "HTTP 400" in str(info.value) and "Invalid routing key" in str(info.value)
    assert "not-a-key-we-know" not in str(info.value)


@pytest.mark.parametrize(
    "event, error",
    [
        ({"event_action": "trigger", "payload": {"summary": "s", "source": "x", "severity": "info"}}, "routing_key"),
        ({"routing_key": PD_KEY, "payload": {"summary": "s", "source": "x", "severity": "info"}}, "event_action"),
        ({"routing_key": PD_KEY, "event_action": "trigger"}, "payload"),
        ({"routing_key": PD_KEY, "event_action": "trigger", "payload": {"source": "x", "severity": "info"}}, "summary"),
        ({"routing_key": PD_KEY, "event_action": "trigger", "payload": {"summary": "s", "severity": "info"}}, "source"),
        ({"routing_key": PD_KEY, "event_action": "trigger", "payload": {"summary": "s", "source": "x", "severity": "sev1"}}, "severity"),
        ({"routing_key": PD_KEY, "event_action": "resolve"}, "dedup_key"),
        ({"routing_key": PD_KEY, "event_action": "trigger", "dedup_key": "k" * 256,
          "payload": {"summary": "s", "source": "x", "severity": "info"}}, "dedup_key"),
    ],
)
def test_the_fake_refuses_events_the_real_api_refuses(pd: FakePagerDuty, event: dict, error: str) -> None:
    r = requests.post(pd.events_url, json=event, timeout=5)
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == "invalid event" and any(error in e for e in body["errors"])
    assert pd.alerts == {}


def test_the_fake_refuses_malformed_json(pd: FakePagerDuty) -> None:
    r = requests.post(pd.events_url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400


def test_the_routing_key_is_never_shown() -> None:
    ch = PagerDutyChannel(PD_KEY)
    assert PD_KEY not in repr(ch) and "events.pagerduty.com" in repr(ch)
    with pytest.raises(ValueError):
        PagerDutyChannel("")


def test_the_expected_site_traffic_reaches_pagerduty(pd: FakePagerDuty) -> None:
    from surgewatch.notifier.base import TrafficOutlook

    outlook = TrafficOutlook(normal_rpm=903.0, multiple=6.04, peak_rpm=5454.0, seconds_to_peak=1416.0,
                             basis="from 3 past surges, R² 0.91, typical error ±12%")
    channel(pd).send(make_notification(traffic_outlook=outlook))
    payload = pd.accepted()[0].body["payload"]
    assert payload["summary"].endswith("; about 6x normal site traffic in ~25 min")
    traffic = payload["custom_details"]["site_traffic"]
    assert traffic["expected_multiple"] == 6.04 and traffic["expected_peak_per_min"] == 5454.0
    assert traffic["normal_per_min"] == 903.0 and traffic["seconds_to_peak"] == 1416.0
    assert traffic["text"] == "about 6x normal (~5,500 req/min vs ~900) in ~25 min"
