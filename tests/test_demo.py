"""`surgewatch demo`: the whole pipeline against the simulated world, as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest
import yaml

from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack

pytestmark = pytest.mark.slow


def run_demo(*args, env=None, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "surgewatch.cli.main", "demo", "--json", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def t(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_the_demo_alerts_after_the_onset_and_before_the_traffic_peak(tmp_path):
    result, proc = run_demo("--keep", str(tmp_path / "demo"), "--seconds", "30")
    assert result["alerts"], "the demo raised no alert"
    assert all({"at", "brand", "severity"} <= set(a) for a in result["alerts"])
    assert t(result["first_alert"]) >= t(result["surge_onset"]), "an alert fired before the surge"
    assert min(t(a["at"]) for a in result["alerts"]) >= t(result["surge_onset"])
    assert result["lead_seconds"] == t(result["traffic_peak"]) - t(result["first_alert"]) > 0
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "demo" / "surgewatch.db").exists()  # history left to look at
    # The traffic model calibrated on the backfilled weeks: the first ops alert says what is coming.
    import re

    outlook = result["traffic_outlook"]
    found = re.match(r"Site traffic: about ([\d.]+)x normal \(~[\d,]+ req/min vs ~[\d,]+\) in ~\d+ min", outlook or "")
    assert found, outlook
    assert float(found[1]) > 1.5, "a 25x mention surge must read as well above normal site traffic"


def test_the_demo_sends_to_the_channels_of_a_config_and_nothing_twice(tmp_path, monkeypatch):
    token, key, secret = "xoxb-demo-test-token", "R0UT1NGKEY0123456789012345678901", "whsec-demo-0123456789"
    from tests.test_notifier_contract import WebhookReceiver  # a local receiver that checks signatures

    with FakeSlack(token=token) as slack, FakePagerDuty() as pd, WebhookReceiver() as hook:
        cfg = tmp_path / "channels.yaml"
        cfg.write_text(yaml.safe_dump({
            "brands": [{"name": "placeholder", "query": "x"}],
            "channels": {"slack": {"api_url": slack.base_url, "marketing_channel": "#marketing", "ops_channel": "#ops"},
                         "pagerduty": {"events_url": pd.events_url, "min_severity": "critical"}},
            "traffic_controls": [{"name": "scale-web", "url": hook.url, "min_severity": "warning", "dry_run": False,
                                  "body": {"action": "scale_up", "brand": "{brand}"},
                                  "undo": {"action": "scale_down", "brand": "{brand}"}}],
        }))
        env = {**__import__("os").environ, "SLACK_BOT_TOKEN": token, "PAGERDUTY_ROUTING_KEY": key,
               "SURGEWATCH_WEBHOOK_SECRET": secret}
        result, proc = run_demo("--config", str(cfg), "--temporary", "--seconds", "30", env=env)
        assert len(slack.messages("#ops", include_replies=False)) == 1
        assert len(slack.messages("#marketing", include_replies=False)) == 1
        assert slack.calls_to("chat.update"), "escalations update the first message in place"
        triggers, resolves = pd.accepted("trigger"), pd.accepted("resolve")
        assert triggers and len(resolves) == 1
        assert {e.dedup_key for e in triggers} == {resolves[0].dedup_key}
        from surgewatch.notifier.webhook import verify_signature

        bodies = [json.loads(r.body) for r in hook.requests]
        assert [b["action"] for b in bodies][0] == "scale_up" and [b["action"] for b in bodies][-1] == "scale_down"
        assert [b["action"] for b in bodies].count("scale_down") == 1
        headers = [{k.lower(): v for k, v in r.headers.items()} for r in hook.requests]
        keys = [h["idempotency-key"] for h in headers]
        assert len(keys) == len(set(keys)), "a webhook call was sent twice"
        for r, h in zip(hook.requests, headers):
            assert verify_signature(secret, h["x-surgewatch-timestamp"], r.body, h["x-surgewatch-signature"],
                                    idempotency_key=h["idempotency-key"])
