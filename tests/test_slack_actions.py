"""Slack's buttons over Socket Mode: the real slack_sdk SocketModeClient against the local fake
(Web API + WebSocket), a real SQLite store, a fake PagerDuty and a local webhook receiver."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from typer.testing import CliRunner

from surgewatch.detector.verdict import Severity, Verdict
from surgewatch.notifier.slack_blocks import ACTION_ACK, ACTION_FALSE_ALARM, ACTION_SILENCE_1H
from surgewatch.actions import operator
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack
from surgewatch.actions.operator import OperatorError
from surgewatch.pipeline import Runtime
from surgewatch.actions.slack_listener import (
    ACTION_RUN_CONTROL,
    ListenerError,
    SlackActionListener,
    approved_key,
    run_traffic_control,
)
from tests.support import write_config
from tests.test_notifier_contract import HOSTILE, WEBHOOK_SECRET, WebhookReceiver, make_notification

BOT = "xoxb-bot-SECRETbottoken"
APP = "xapp-1-A0FAKEAPP1-SECRETapptoken"
PD_KEY = "R0UT1NGKEYsecret0000000000000000"
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc).timestamp()
NOW = T0 + 300
USER = "U0HUMAN001"
ROOT = Path(__file__).resolve().parents[1]


def verdict(at: float = T0, severity: str = "critical") -> dict[str, Any]:
    return Verdict(at=at, observed=48, expected=3.0, score=0.99, severity=Severity(severity)).to_dict()


def incident(id_: str = "acme-1", status: str = "open") -> dict[str, Any]:
    """The incident dict of surgewatch/incidents.py, opened at critical."""
    return {"id": id_, "brand": "Acme", "status": status, "severity": "critical", "opened_at": T0,
            "resolved_at": None, "last_at": T0, "peak_observed": 48, "peak_score": 0.99, "quiet_buckets": 0,
            "acked_by": None, "acked_at": None,
            "transitions": [{"no": 0, "at": T0, "event": "opened", "from": "quiet", "to": "critical",
                             "verdict": verdict(), "dispatched": True}]}


@dataclass
class World:
    slack: FakeSlack
    pd: FakePagerDuty
    hooks: WebhookReceiver
    rt: Runtime
    listener: SlackActionListener
    config: Path
    ops: dict[str, str]  # the ops message: {"channel", "ts"}

    def click(self, action_id: str, value: str = "acme-1", **kw: Any) -> str:
        kw.setdefault("channel", self.ops["channel"])
        kw.setdefault("message_ts", self.ops["ts"])
        kw.setdefault("user_id", USER)
        return self.slack.push_interaction(action_id, value, **kw)

    def wait_outcomes(self, n: int, timeout: float = 5.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.listener.outcomes) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.listener.outcomes) >= n, f"only {len(self.listener.outcomes)} of {n} clicks handled"
        return list(self.listener.outcomes)

    def thread(self) -> list[dict[str, Any]]:
        return self.slack.replies(self.ops["channel"], self.ops["ts"])

    def ops_message(self) -> dict[str, Any]:
        return next(m for m in self.slack.messages(self.ops["channel"]) if m["ts"] == self.ops["ts"])


def _button_ids(message: dict[str, Any]) -> list[str]:
    return [el["action_id"] for b in message.get("blocks", []) if b["type"] == "actions" for el in b["elements"]]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", PD_KEY)
    monkeypatch.setenv("SURGEWATCH_WEBHOOK_SECRET", WEBHOOK_SECRET)
    with FakeSlack(token=BOT, app_token=APP) as slack, FakePagerDuty() as pd, WebhookReceiver() as hooks:
        path, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "channels": {"slack": {"api_url": slack.base_url, "ops_channel": "#ops"},
                         "pagerduty": {"events_url": pd.events_url}},
            "traffic_controls": [{"name": "waiting_room", "url": hooks.url, "min_severity": "warning", "dry_run": False, "approval": True,
                                  "body": {"action": "waiting_room.enable", "rate": "{observed_per_min}"}}],
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        slack.join("#ops", USER)  # the clicker is on the ops team (who may press the action buttons)
        rt = Runtime(settings)
        rt.store.save_incident(incident())
        receipt = rt.channel("slack").send(make_notification(key="acme-1:0:slack", incident_id="acme-1"))
        assert receipt is not None
        listener = SlackActionListener(rt, APP, BOT, slack.base_url, now=lambda: NOW)
        listener.start()
        try:
            yield World(slack, pd, hooks, rt, listener, path, receipt["ops"])
        finally:
            listener.stop()
        assert "SECRET" not in repr(listener)


def page(world: World) -> None:
    """As if the pipeline had paged this incident (what operator.acknowledge checks)."""
    world.rt.channel("pagerduty").send(make_notification(key="acme-1:0:pagerduty", incident_id="acme-1", severity="critical"))
    world.rt.store.claim("acme-1:0:pagerduty", 60, time.time())
    world.rt.store.mark_sent("acme-1:0:pagerduty", {"dedup_key": "acme-1"})


# ---- the buttons ----------------------------------------------------------------------------------

def test_acknowledge_is_acked_at_once_recorded_threaded_and_acknowledges_the_page(world: World) -> None:
    page(world)
    envelope = world.click(ACTION_ACK)
    assert world.slack.wait_for_ack(envelope) == {"envelope_id": envelope}
    latency = world.slack.ack_latency(envelope)
    assert latency is not None and latency < 3.0
    [outcome] = world.wait_outcomes(1)
    assert outcome.status == "done"
    inc = world.rt.store.get_incident("acme-1")
    assert inc["acked_by"] == f"@sam ({USER})" and inc["acked_at"] == NOW
    [reply] = world.thread()
    assert reply["text"].startswith(f":white_check_mark: Acknowledged by <@{USER}>")
    assert "PagerDuty alert acknowledged" in reply["text"]
    [ack] = world.pd.accepted("acknowledge")
    assert ack.dedup_key == "acme-1" and world.pd.alerts["acme-1"] == "acknowledged"
    # The message keeps the other buttons and says who acknowledged.
    message = world.ops_message()
    assert _button_ids(message) == [ACTION_SILENCE_1H, ACTION_FALSE_ALARM]
    assert any(f"Acknowledged by <@{USER}>" in json.dumps(b) for b in message["blocks"] if b["type"] == "context")
    # when, in each reader's own zone (the config's UTC as the fallback)
    notes = [el["text"] for b in message["blocks"] if b["type"] == "context" for el in b["elements"]]
    assert f":white_check_mark: Acknowledged by <@{USER}> at <!date^{int(NOW)}^{{time}}|2026-11-27T09:05:00Z>" in notes


def test_acknowledge_of_an_incident_that_never_paged_sends_nothing_to_pagerduty(world: World) -> None:
    world.click(ACTION_ACK)
    world.wait_outcomes(1)
    assert world.rt.store.get_incident("acme-1")["acked_by"]
    assert world.pd.events == []
    assert "PagerDuty" not in world.thread()[0]["text"]


def test_silence_1h_silences_the_brand_for_an_hour(world: World) -> None:
    world.click(ACTION_SILENCE_1H)
    [outcome] = world.wait_outcomes(1)
    assert outcome.status == "done"
    entry = operator.active_silence(world.rt, "Acme", NOW)
    assert entry is not None and entry["until"] == NOW + 3600 and entry["by"] == f"@sam ({USER})"
    assert operator.active_silence(world.rt, "Acme", NOW + 3601) is None
    assert "silenced for 1 h by <@U0HUMAN001>" in world.thread()[0]["text"]
    assert f"(until <!date^{int(NOW) + 3600}^{{time}}|2026-11-27T10:05:00Z>)" in world.thread()[0]["text"]
    world.click(ACTION_SILENCE_1H)  # a second click does not stack another silence or message
    assert world.wait_outcomes(2)[1].status == "already"
    assert len(world.thread()) == 1


def test_false_alarm_stores_the_feedback_for_the_review_and_the_digest(world: World) -> None:
    world.click(ACTION_FALSE_ALARM)
    [outcome] = world.wait_outcomes(1)
    assert outcome.status == "done"
    inc = world.rt.store.get_incident("acme-1")
    assert inc["feedback"] == "false_alarm" and inc["feedback_by"] == f"@sam ({USER})" and inc["feedback_at"] == NOW
    assert "false alarm" in world.thread()[0]["text"]
    assert ACTION_FALSE_ALARM not in _button_ids(world.ops_message())


def test_a_double_click_acknowledges_once(world: World) -> None:
    page(world)
    first = world.click(ACTION_ACK)
    second = world.click(ACTION_ACK)  # pushed before the first is handled: two worker threads race
    outcomes = world.wait_outcomes(2)
    assert world.slack.wait_for_ack(first) and world.slack.wait_for_ack(second)
    assert sorted(o.status for o in outcomes) == ["already", "done"]
    assert len(world.thread()) == 1
    assert len(world.pd.accepted("acknowledge")) == 1
    [private] = world.slack.ephemerals
    assert private["user"] == USER and "already acknowledged by @sam" in private["text"]


def test_an_unknown_incident_gets_a_private_answer_and_the_listener_keeps_working(world: World) -> None:
    world.click(ACTION_ACK, value="acme-404")
    [outcome] = world.wait_outcomes(1)
    assert outcome.status == "refused"
    [private] = world.slack.ephemerals
    assert private["user"] == USER and "no incident 'acme-404'" in private["text"]
    assert world.thread() == []
    world.click(ACTION_ACK)
    assert world.wait_outcomes(2)[1].status == "done"


def test_hostile_user_names_and_values_are_escaped(world: World) -> None:
    world.click(ACTION_ACK, user_name=HOSTILE)
    world.click(ACTION_FALSE_ALARM, user_name=HOSTILE)
    world.click(ACTION_SILENCE_1H, value=HOSTILE)
    # not a Slack id: no mention, and (an action button) refused, since no one can tell who clicked
    world.click(ACTION_FALSE_ALARM, user_name=HOSTILE, user_id="<!channel>")
    outcomes = world.wait_outcomes(4)  # handled on the SDK's threads: in any order
    assert sorted(o.status for o in outcomes if o.action_id == ACTION_FALSE_ALARM) == ["done", "refused"]
    posted = [m["text"] for m in world.thread()] + [e["text"] for e in world.slack.ephemerals]
    posted += [json.dumps(b) for b in world.ops_message()["blocks"]]
    assert len(posted) >= 4
    for text in posted:
        for raw in ("<!channel>", "<@U123>", "<script>", "<https://evil.example|click>"):
            assert raw not in text
    assert any("&lt;!channel&gt;" in t for t in posted)
    assert "@\u200dhere" in " ".join(posted)
    inc = world.rt.store.get_incident("acme-1")
    assert "\n" not in inc["acked_by"] and inc["acked_by"].endswith(f"({USER})")
    assert inc["feedback_by"].startswith("@<!channel>")  # stored as text; escaped wherever it is shown


def test_buttons_of_other_apps_are_ignored_but_still_acked(world: World) -> None:
    envelope = world.click("someone_elses_button", value="x")
    assert world.slack.wait_for_ack(envelope)
    assert world.wait_outcomes(1)[0].status == "ignored"
    assert world.thread() == [] and world.slack.ephemerals == []


# ---- the approved traffic control -----------------------------------------------------------------

def test_run_action_runs_the_traffic_control_once_after_a_human_clicks(world: World) -> None:
    value = "acme-1|waiting_room"
    world.click(ACTION_RUN_CONTROL, value=value)
    world.click(ACTION_RUN_CONTROL, value=value)
    outcomes = world.wait_outcomes(2)
    assert sorted(o.status for o in outcomes) == ["already", "done"]
    [req] = world.hooks.requests
    assert req.headers["Idempotency-Key"] == approved_key("acme-1", "waiting_room") == "acme-1:approved:waiting_room"
    assert json.loads(req.body) == {"action": "waiting_room.enable", "rate": 48.0}
    assert "X-SurgeWatch-Signature" in req.headers
    delivery = world.rt.store.delivery("acme-1:approved:waiting_room")
    assert delivery["status"] == "sent" and delivery["receipt"]["by"] == f"@sam ({USER})"
    assert world.rt.store.get_incident("acme-1")["approved_controls"] == [{"name": "waiting_room", "by": f"@sam ({USER})", "at": NOW}]
    # the delivery log accounts for the run, on the transition it acted on
    [logged] = [d for d in world.rt.store.list_deliveries("acme-1") if d.channel == "webhook:waiting_room"]
    assert (logged.transition, logged.status, logged.attempts, logged.receipt["status"]) == (0, "sent", 1, 200)
    assert logged.reason == f"approved in Slack by @sam ({USER})"
    [reply] = world.thread()
    text = reply["text"].replace("\u200b", "")  # the zero-width space that keeps "_" from starting italics
    assert "waiting_room ran (HTTP 200)" in text and f"approved by <@{USER}>" in text


def test_a_transient_webhook_failure_can_be_retried_by_clicking_again(world: World) -> None:
    world.hooks.script.append((503, {}, 0.0))
    first = run_traffic_control(world.rt, "acme-1", "waiting_room", "sam", NOW)
    assert first.status == "failed" and "click again" in first.message
    second = run_traffic_control(world.rt, "acme-1", "waiting_room", "sam", NOW)
    assert second.status == "sent"
    assert run_traffic_control(world.rt, "acme-1", "waiting_room", "kim", NOW).status == "duplicate"
    assert len(world.hooks.requests) == 2


def test_run_action_refuses_unknown_controls_and_resolved_incidents(world: World) -> None:
    with pytest.raises(OperatorError, match="no traffic control named 'nope'"):
        run_traffic_control(world.rt, "acme-1", "nope", "sam", NOW)
    world.rt.store.save_incident({**incident("acme-2"), "status": "resolved", "resolved_at": NOW})
    with pytest.raises(OperatorError, match="already resolved"):
        run_traffic_control(world.rt, "acme-2", "waiting_room", "sam", NOW)
    world.click(ACTION_RUN_CONTROL, value="acme-1")  # no "|name": a clear private answer
    world.wait_outcomes(1)
    assert "does not name a traffic control" in world.slack.ephemerals[0]["text"]
    assert world.hooks.requests == []


# ---- the connection -------------------------------------------------------------------------------

def test_the_listener_reconnects_when_slack_asks_it_to(world: World) -> None:
    world.slack.refresh_sockets()
    assert world.slack.wait_for(lambda f: len(f.calls_to("apps.connections.open")) == 2, 5)
    assert world.slack.wait_for_socket(5)
    world.click(ACTION_ACK)
    assert world.wait_outcomes(1)[0].status == "done"


def test_a_rejected_app_token_is_one_clear_error_without_the_token(world: World) -> None:
    bad = SlackActionListener(world.rt, "xapp-1-WRONG-SECRETother", BOT, world.slack.base_url)
    with pytest.raises(ListenerError) as info:
        bad.start()
    assert "invalid_auth" in str(info.value) and "SECRET" not in str(info.value)
    with pytest.raises(ListenerError, match="xapp-"):
        SlackActionListener(world.rt, BOT, BOT, world.slack.base_url)


def test_fake_socket_mode_refuses_a_bot_token_and_an_unknown_ticket(world: World) -> None:
    r = requests.post(world.slack.base_url + "apps.connections.open", headers={"Authorization": f"Bearer {BOT}"}, timeout=5)
    assert r.json() == {"ok": False, "error": "not_allowed_token_type"}
    port = world.slack.socket_port  # where apps.connections.open sends apps
    r = requests.get(f"http://127.0.0.1:{port}/link/?ticket=forged", timeout=5,
                     headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status_code == 401


def test_the_command_without_an_app_token_is_one_line_and_exit_1(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    from surgewatch.cli.main import app

    result = CliRunner().invoke(app, ["slack-listener", "--config", str(world.config)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "SLACK_APP_TOKEN is not set" in lines[0]


def test_the_command_listens_until_sigterm(world: World) -> None:
    env = {**os.environ, "SLACK_APP_TOKEN": APP, "SLACK_BOT_TOKEN": BOT, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "surgewatch", "slack-listener", "--config", str(world.config)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert world.slack.wait_for_socket(15, count=2), proc.stderr.read() if proc.poll() is not None else "no connection"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, err = proc.communicate()
    assert "SECRET" not in err and "Traceback" not in err


# ---- who may press what -----------------------------------------------------------------------------

GUEST = "U0GUEST0001"


def test_a_guest_outside_the_ops_channel_cannot_run_a_control_silence_or_mark_a_false_alarm(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.click(ACTION_RUN_CONTROL, value="acme-1|waiting_room", user_id=GUEST, user_name="guest")
    world.click(ACTION_SILENCE_1H, user_id=GUEST, user_name="guest")
    world.click(ACTION_FALSE_ALARM, user_id=GUEST, user_name="guest")
    outcomes = world.wait_outcomes(3)
    assert [o.status for o in outcomes] == ["refused"] * 3
    assert world.hooks.requests == []  # the traffic control was not POSTed
    assert operator.active_silence(world.rt, "Acme", NOW) is None
    assert "feedback" not in world.rt.store.get_incident("acme-1")
    refusals = [e for e in world.slack.ephemerals if e.get("user") == GUEST]
    assert len(refusals) == 3 and all("only members of the ops channel #ops" in e["text"] for e in refusals)
    assert world.thread() == []  # nothing said in public
    assert sum("refused" in r.getMessage() and GUEST in r.getMessage() for r in caplog.records) == 3
    # acknowledging stays open to whoever sees the alert
    world.click(ACTION_ACK, user_id=GUEST, user_name="guest")
    assert world.wait_outcomes(4)[3].status == "done"


def test_a_click_on_a_message_surgewatch_did_not_post_does_nothing(world: World) -> None:
    # our button copied onto a message in #random that another app (or a person) posted
    foreign = {"type": "message", "ts": "1700000000.999900", "text": "click me", "user": "U0SOMEONE1",
               "blocks": world.ops_message()["blocks"]}
    world.click(ACTION_ACK, channel="#random", message_ts="1700000000.999900", message=foreign)
    [outcome] = world.wait_outcomes(1)
    assert outcome.status == "refused" and "own alert messages" in outcome.reply
    assert world.rt.store.get_incident("acme-1")["acked_by"] is None


def _listener_with(world: World, monkeypatch: pytest.MonkeyPatch, **slack_cfg: Any) -> SlackActionListener:
    """The world's listener, restarted with more channels.slack settings."""
    from surgewatch.config import load_settings

    data = __import__("yaml").safe_load(world.config.read_text())
    data["channels"]["slack"].update(slack_cfg)
    world.config.write_text(__import__("yaml").safe_dump(data))
    world.listener.stop()
    world.rt = Runtime(load_settings(world.config))
    world.listener = SlackActionListener(world.rt, APP, BOT, world.slack.base_url, now=lambda: NOW).start()
    return world.listener


def test_allowed_users_and_usergroups_decide_instead_of_the_ops_channel(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.slack.add_usergroup("S0ONCALL01", "U0ONCALL001")
    listener = _listener_with(world, monkeypatch, allowed_users=["U0LEAD0001"], allowed_usergroups=["S0ONCALL01"])
    try:
        world.click(ACTION_SILENCE_1H, user_id=USER)  # in #ops, but not on the lists
        world.click(ACTION_FALSE_ALARM, user_id="U0ONCALL001", user_name="oncall")  # in the group
        world.click(ACTION_RUN_CONTROL, value="acme-1|waiting_room", user_id="U0LEAD0001", user_name="lead")
        by_action = {o.action_id: o for o in world.wait_outcomes(3)}  # handled in any order
        assert {a: o.status for a, o in by_action.items()} == {
            ACTION_SILENCE_1H: "refused", ACTION_FALSE_ALARM: "done", ACTION_RUN_CONTROL: "done"}
        assert "you are not allowed to do that" in by_action[ACTION_SILENCE_1H].reply
        assert world.rt.store.get_incident("acme-1")["feedback_by"] == "@oncall (U0ONCALL001)"
        assert len(world.hooks.requests) == 1
    finally:
        listener.stop()


def test_the_buttons_that_change_things_ask_for_confirmation(world: World) -> None:
    from tests.fakes.slack_server import validate_blocks

    blocks = world.ops_message()["blocks"]
    assert validate_blocks(blocks) == []
    buttons = {el["action_id"]: el for b in blocks if b["type"] == "actions" for el in b["elements"]}
    assert "confirm" not in buttons[ACTION_ACK]
    for action_id in (ACTION_SILENCE_1H, ACTION_FALSE_ALARM):
        dialog = buttons[action_id]["confirm"]
        assert dialog["title"]["text"].endswith("?") and dialog["deny"]["text"] == "Cancel"
    run = world.rt.channel("slack").render(make_notification(key="k", incident_id="acme-1",
                                                             approval_controls=("waiting_room",)), "ops")
    [control] = [el for b in run if b["type"] == "actions" for el in b["elements"] if el["action_id"] == ACTION_RUN_CONTROL]
    assert control["confirm"]["title"]["text"] == "Run waiting_room?" and control["confirm"]["style"] == "danger"
    assert validate_blocks(run) == []
