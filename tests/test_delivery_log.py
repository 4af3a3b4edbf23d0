"""The delivery log: every (incident, transition, channel) ends as what really happened to it --
sent, failed (in the service's own words), superseded or suppressed -- through one claim -> send ->
record path, against the local Slack and PagerDuty stand-ins."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from surgewatch import pipeline
from surgewatch.config import parse_settings
from surgewatch.pipeline import Runtime
from surgewatch.store.keys import channel_failed_key, receipt_key
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack

T0 = 1_795_770_000.0
TOKEN = "xoxb-test-delivery-log-token"
ROUTING_KEY = "R0UT1NGKEY0123456789012345678901"


@pytest.fixture(autouse=True)
def secrets(monkeypatch):
    """The channels read their secrets from the environment when they are built."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)


def config(tmp_path, slack=None, pd=None, *, slack_url=None, pd_min="warning", **extra):
    channels = {"console": {}}
    if slack is not None:
        channels["slack"] = {"api_url": slack_url or slack.base_url, "marketing_channel": "#marketing",
                             "ops_channel": "#ops"}
    if pd is not None:
        channels["pagerduty"] = {"events_url": pd.events_url, "min_severity": pd_min,
                                 "page_unacked_warning_after_minutes": None}
    return {"brands": [{"name": "Acme", "query": "acme"}], "channels": channels,
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}, **extra}


def runtime(tmp_path, slack=None, pd=None, **extra):
    return Runtime(parse_settings(config(tmp_path, slack, pd, **extra),
                                  env={"SLACK_BOT_TOKEN": TOKEN, "PAGERDUTY_ROUTING_KEY": ROUTING_KEY}))


def incident(*severities, resolved=False):
    trs, prev = [], "quiet"
    for i, sev in enumerate(severities):
        trs.append({"no": i, "at": T0 + i * 60, "event": "opened" if i == 0 else "escalated", "from": prev, "to": sev,
                    "verdict": {"at": T0 + i * 60, "observed": 40.0, "expected": 2.0, "score": 0.9, "severity": sev},
                    "dispatched": True})
        prev = sev
    if resolved:
        trs.append({"no": len(trs), "at": T0 + 3600, "event": "resolved", "from": prev, "to": "resolved",
                    "verdict": {"at": T0 + 3600, "observed": 2.0, "expected": 2.0, "score": 0.0, "severity": "quiet"},
                    "dispatched": True})
    return {"id": "acme-1", "brand": "Acme", "status": "resolved" if resolved else "open", "severity": prev,
            "opened_at": T0, "resolved_at": T0 + 3600 if resolved else None, "acked_at": None, "acked_by": None,
            "transitions": trs}


def no_claims_left(rt):
    return [d.key for d in rt.store.list_deliveries() if d.status in ("claimed", "pending")]


@pytest.mark.parametrize("answer, words", [
    ({"errors": 5}, "errors: 5"),
    ({"message": ["bad"]}, "bad"),
    ({"status": "invalid event", "message": {"why": "odd"}, "errors": "one string"}, "one string"),
])
def test_a_wrong_shaped_pagerduty_400_is_a_failed_delivery_in_its_own_words(tmp_path, answer, words):
    with FakePagerDuty() as pd, FakeSlack(token=TOKEN) as slack:
        rt = runtime(tmp_path, slack, pd)
        rt.store.save_incident(incident("warning"))
        pd.fail_next(400, body=answer, times=5)
        outcome = pipeline.notify(rt, "acme-1", 0, "pagerduty")
        d = rt.store.get_delivery("acme-1:0:pagerduty")
        assert outcome.status == "failed" and d.status == "failed" and d.attempts == 1
        assert "HTTP 400" in d.error and words in d.error
        assert ROUTING_KEY not in d.error
        assert no_claims_left(rt) == []
        # the failed page is told to ops in Slack
        assert any("could not page" in m["text"] and "HTTP 400" in m["text"] for m in slack.messages("#ops"))
        assert rt.store.get_state(channel_failed_key("acme-1", "pagerduty"))["error"] == d.error


def test_slack_answering_ok_without_the_channel_is_a_failed_delivery_not_a_stuck_claim(tmp_path):
    with FakeSlack(token=TOKEN) as slack:
        rt = runtime(tmp_path, slack)
        rt.store.save_incident(incident("warning"))
        slack.fail_next("chat.postMessage", error="scripted", body='{"ok": true}', times=5)
        assert pipeline.notify(rt, "acme-1", 0, "slack").status == "failed"
        d = rt.store.get_delivery("acme-1:0:slack")
        assert d.status == "failed" and "lacks the message's channel and ts" in d.error
        assert no_claims_left(rt) == []


def test_slack_failing_for_good_is_failed_with_slacks_error_and_the_escalation_pages(tmp_path):
    with FakeSlack(token=TOKEN) as slack, FakePagerDuty() as pd:
        rt = runtime(tmp_path, slack, pd, pd_min="critical")  # the watch alone would not page
        rt.store.save_incident(incident("watch"))
        slack.fail_next("chat.postMessage", "channel_not_found", times=10)
        assert pipeline.notify(rt, "acme-1", 0, "slack").status == "failed"
        d = rt.store.get_delivery("acme-1:0:slack")
        assert (d.status, d.error) == ("failed", "slack chat.postMessage marketing #marketing: channel_not_found")
        tr = pipeline.escalate(rt.settings, rt.store, rt.store.get_incident("acme-1"), T0 + 120)
        assert tr is not None and "Slack failed" in tr["reason"]


def test_transient_errors_that_run_out_end_failed_and_page_never_silence(tmp_path):
    with FakeSlack(token=TOKEN) as slack:
        rt = runtime(tmp_path, slack)
        rt.store.save_incident(incident("watch"))
        slack.fail_next("chat.postMessage", status=503, error="service_unavailable", times=100)
        for attempt in range(1, pipeline.MAX_SEND_ATTEMPTS):
            with pytest.raises(pipeline.RetryLater) as info:
                pipeline.notify(rt, "acme-1", 0, "slack")
            d = rt.store.get_delivery("acme-1:0:slack")
            assert (d.status, d.attempts) == ("pending", attempt) and "HTTP 503" in d.error
            assert d.next_attempt_at is not None and info.value.retry_in > 0
        assert pipeline.notify(rt, "acme-1", 0, "slack").status == "failed"
        d = rt.store.get_delivery("acme-1:0:slack")
        assert d.status == "failed" and d.attempts == pipeline.MAX_SEND_ATTEMPTS
        assert d.error.startswith(f"gave up after {pipeline.MAX_SEND_ATTEMPTS} attempts: ") and "HTTP 503" in d.error
        assert rt.store.get_state(channel_failed_key("acme-1", "slack")) is not None  # escalation reads it
        assert pipeline.notify(rt, "acme-1", 0, "slack").status == "duplicate"  # final: never resent


def test_the_celery_task_ends_a_delivery_failed_when_its_retries_run_out(tmp_path, monkeypatch):
    from surgewatch.worker import tasks

    with FakeSlack(token=TOKEN) as slack:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config(tmp_path, slack)))
        monkeypatch.setenv("SURGEWATCH_CONFIG", str(path))
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setattr(pipeline.delivery, "backoff", lambda retries, floor=None: 0.0)
        tasks.runtime.cache_clear()
        try:
            tasks.runtime().store.save_incident(incident("watch"))
            slack.fail_next("chat.postMessage", status=503, error="service_unavailable", times=100)
            result = tasks.notify.apply(("acme-1", 0, "slack"))  # eager: each retry runs at once
            assert result.get() == {"key": "acme-1:0:slack", "status": "failed"}
            d = tasks.runtime().store.get_delivery("acme-1:0:slack")
            assert d.status == "failed" and d.attempts == pipeline.MAX_SEND_ATTEMPTS
        finally:
            tasks.runtime.cache_clear()


def test_any_exception_from_a_channel_is_a_failed_attempt_not_a_stuck_claim(tmp_path, monkeypatch):
    rt = runtime(tmp_path)
    rt.store.save_incident(incident("watch"))

    def broken(notification):
        raise KeyError("channel")

    monkeypatch.setattr(rt.channel("console"), "send", broken)
    assert pipeline.notify(rt, "acme-1", 0, "console").status == "failed"
    d = rt.store.get_delivery("acme-1:0:console")
    assert d.status == "failed" and "KeyError" in d.error and "'channel'" in d.error
    assert no_claims_left(rt) == []


def test_a_superseded_update_is_recorded_superseded_never_sent(tmp_path):
    rt = runtime(tmp_path)
    rt.store.save_incident(incident("watch", "warning"))
    assert pipeline.notify(rt, "acme-1", 0, "console").status == "superseded"
    d = rt.store.get_delivery("acme-1:0:console")
    assert (d.status, d.reason, d.sent_at) == ("superseded", "superseded by transition 1 (escalated)", None)


def test_a_wrong_slack_api_url_fails_every_delivery_and_the_count_of_sent_is_zero(tmp_path):
    with FakeSlack(token=TOKEN) as slack:
        rt = runtime(tmp_path, slack, slack_url=slack.base_url + "nope/")  # every call: unknown_method
        rt.store.save_incident(incident("watch", "warning"))
        for no in (0, 1):
            pipeline.notify(rt, "acme-1", no, "slack")
        statuses = {d.key: d.status for d in rt.store.list_deliveries()}
        assert statuses == {"acme-1:0:slack": "superseded", "acme-1:1:slack": "failed"}
        assert "unknown_method" in rt.store.get_delivery("acme-1:1:slack").error


def test_an_empty_receipt_never_overwrites_a_fuller_one(tmp_path, monkeypatch):
    rt = runtime(tmp_path)
    rt.store.save_incident(incident("watch", resolved=True))
    full = {"marketing": {"channel": "C1", "ts": "1.000100"}}
    rt.store.set_state(receipt_key("acme-1", "console"), full)
    monkeypatch.setattr(rt.channel("console"), "send", lambda n: {})
    assert pipeline.notify(rt, "acme-1", 1, "console").status == "sent"
    assert rt.store.get_state(receipt_key("acme-1", "console")) == full


def test_a_silenced_transition_is_suppressed_with_the_silence_and_the_console_still_pending(tmp_path):
    from surgewatch.actions.operator import silence
    from surgewatch.pipeline.evaluation import EvaluateOutcome, _outbox

    with FakeSlack(token=TOKEN) as slack:
        rt = runtime(tmp_path, slack)
        silence(rt, "Acme", 3600, "sam", "deploy window", now=T0)
        inc = incident("watch")
        inc["transitions"][0]["dispatched"] = False
        rt.store.save_incident(inc)
        outcome = EvaluateOutcome("Acme")
        _outbox(rt, "Acme", {"acme-1": inc}, inc, rt.store.get_state("silence:Acme"), outcome, T0 + 60)
        got = {d.channel: d for d in rt.store.list_deliveries("acme-1")}
        assert outcome.dispatch == [("acme-1", 0, "console")]
        assert got["console"].status == "pending"
        assert got["slack"].status == "suppressed" and got["slack"].reason.startswith("silence: deploy window (by sam")
        assert slack.calls_to("chat.postMessage") == []


def test_the_deliveries_command_lists_the_log_one_json_object_per_line(tmp_path):
    with FakePagerDuty() as pd:
        rt = runtime(tmp_path, pd=pd)
        rt.store.save_incident(incident("warning"))
        pd.fail_next(400, body={"errors": 5}, times=5)
        pipeline.notify(rt, "acme-1", 0, "pagerduty")
        pipeline.notify(rt, "acme-1", 0, "console")
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config(tmp_path, pd=pd)))
        proc = subprocess.run([sys.executable, "-m", "surgewatch.cli.main", "deliveries", "-c", str(path), "--json",
                               "--incident", "acme-1"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert {(r["incident"], r["transition"], r["channel"], r["status"]) for r in rows} == {
            ("acme-1", 0, "console", "sent"), ("acme-1", 0, "pagerduty", "failed")}
        for r in rows:
            assert {"incident", "transition", "channel", "status", "attempts", "error", "sent_at"} <= set(r)
        pd_row = next(r for r in rows if r["channel"] == "pagerduty")
        assert "HTTP 400" in pd_row["error"] and pd_row["sent_at"] is None and pd_row["attempts"] == 1
        table = subprocess.run([sys.executable, "-m", "surgewatch.cli.main", "deliveries", "-c", str(path)],
                               capture_output=True, text=True, timeout=60)
        assert table.returncode == 0 and "failed" in table.stdout and "1 failed, 1 sent" in table.stdout


def test_status_shows_a_failed_page_in_its_own_words(tmp_path):
    with FakePagerDuty() as pd:
        rt = runtime(tmp_path, pd=pd)
        rt.store.save_incident(incident("warning"))
        pd.fail_next(400, body={"message": ["bad"]}, times=5)
        pipeline.notify(rt, "acme-1", 0, "pagerduty")
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config(tmp_path, pd=pd)))
        run = [sys.executable, "-m", "surgewatch.cli.main", "status", "-c", str(path)]
        table = subprocess.run(run, capture_output=True, text=True, timeout=60, env={**__import__("os").environ,
                                                                                    "COLUMNS": "250"})
        assert table.returncode == 0, table.stderr
        assert "Failed deliveries" in table.stdout and "pagerduty" in table.stdout and "HTTP 400 bad" in table.stdout
        doc = json.loads(subprocess.run(run + ["--json"], capture_output=True, text=True, timeout=60).stdout)
        [failed] = doc["deliveries_not_sent"]
        assert (failed["channel"], failed["status"]) == ("pagerduty", "failed") and "HTTP 400 bad" in failed["error"]


def test_a_dead_attempts_claim_without_a_log_record_is_taken_over_without_posting_twice(tmp_path):
    import time

    from slack_sdk import WebClient

    from surgewatch.notifier.slack import METADATA_EVENT

    with FakeSlack(token=TOKEN) as slack:
        rt = runtime(tmp_path, slack)
        rt.store.save_incident(incident("watch"))
        # a notify task sent by hand (no outbox record) claimed, posted to #marketing, and died
        assert rt.store.claim("acme-1:0:slack", 1.0, time.time() - 60)
        WebClient(token=TOKEN, base_url=slack.base_url).chat_postMessage(
            channel="#marketing", text="the dead attempt's post",
            metadata={"event_type": METADATA_EVENT, "event_payload": {"key": "acme-1:0:slack", "audience": "marketing"}})
        assert rt.store.get_delivery("acme-1:0:slack") is None
        assert pipeline.notify(rt, "acme-1", 0, "slack").status == "sent"
        assert len(slack.messages("#marketing", include_replies=False)) == 1  # adopted, not posted again
        assert len(slack.messages("#ops", include_replies=False)) == 1
        assert rt.store.get_delivery("acme-1:0:slack").status == "sent"
