"""Acknowledge, silence and false-alarm feedback, from the CLI, on a real store."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from surgewatch.actions import operator
from tests.fakes.pagerduty_server import FakePagerDuty
from surgewatch.pipeline import Runtime
from tests.support import write_config

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc).timestamp()


def incident(id_="acme-1", status="open"):
    return {"id": id_, "brand": "Acme", "status": status, "severity": "critical", "opened_at": T0,
            "resolved_at": None, "last_at": T0, "peak_observed": 50, "peak_score": 0.9, "quiet_buckets": 0,
            "acked_by": None, "acked_at": None,
            "transitions": [{"no": 0, "at": T0, "event": "opened", "from": "quiet", "to": "critical",
                             "verdict": {}, "dispatched": True}]}


@pytest.fixture
def rt(tmp_path):
    path, settings = write_config(tmp_path, {"brands": [{"name": "Acme", "query": "acme"}],
                                             "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
    rt = Runtime(settings)
    rt.store.save_incident(incident())
    rt.config_path = path
    return rt


def cli(rt, *args):
    return subprocess.run([sys.executable, "-m", "surgewatch.cli.main", *args, "--config", str(rt.config_path)],
                          capture_output=True, text=True)


def test_ack_from_the_cli_records_who_and_when(rt):
    proc = cli(rt, "ack", "acme-1", "--by", "sam")
    assert proc.returncode == 0, proc.stderr
    assert "acknowledged by sam" in proc.stdout and "pager: not paged" in proc.stdout
    inc = rt.store.get_incident("acme-1")
    assert inc["acked_by"] == "sam" and inc["acked_at"] is not None
    again = cli(rt, "ack", "acme-1", "--by", "kim")
    assert "already acknowledged by sam" in again.stdout


def test_ack_of_an_unknown_incident_is_one_clear_line(rt):
    proc = cli(rt, "ack", "nope")
    assert proc.returncode == 1 and "no incident 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_ack_acknowledges_the_pagerduty_alert_when_it_paged(tmp_path, monkeypatch):
    with FakePagerDuty() as pd:
        _, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "channels": {"pagerduty": {"events_url": pd.events_url}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "R0UT1NGKEY0123456789012345678901")
        rt = Runtime(settings)
        rt.store.save_incident(incident())
        rt.store.claim("acme-1:0:pagerduty", 60, T0)
        rt.store.mark_sent("acme-1:0:pagerduty", {"dedup_key": "acme-1"})
        result = operator.acknowledge(rt, "acme-1", "sam", T0 + 60)
        assert result.pager == "acknowledged"
        events = pd.accepted("acknowledge")
        assert len(events) == 1 and events[0].dedup_key == "acme-1"


def test_silence_mutes_a_brand_until_it_expires(rt):
    proc = cli(rt, "silence", "acme", "--for", "2h", "--reason", "planned TV ad", "--by", "kim")
    assert proc.returncode == 0, proc.stderr
    entry = operator.active_silence(rt, "Acme", datetime.now(timezone.utc).timestamp())
    assert entry["reason"] == "planned TV ad" and entry["by"] == "kim"
    assert operator.active_silence(rt, "Acme", entry["until"] + 1) is None
    assert cli(rt, "silence", "Acme", "--off").returncode == 0
    assert operator.active_silence(rt, "Acme", entry["created_at"]) is None


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)])
def test_durations_parse(text, seconds):
    assert operator.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2x", "-1h", "1h junk"])
def test_bad_durations_are_named(text):
    with pytest.raises(operator.OperatorError, match="cannot read duration"):
        operator.parse_duration(text)


def test_false_alarm_feedback_is_stored(rt):
    proc = cli(rt, "false-alarm", "acme-1", "--by", "kim", "--note", "bot traffic")
    assert proc.returncode == 0, proc.stderr
    inc = rt.store.get_incident("acme-1")
    assert inc["feedback"] == "false_alarm" and inc["feedback_note"] == "bot traffic"
