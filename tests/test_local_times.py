"""One time zone for people: every time a person reads (the console alert line, Slack, PagerDuty's
details, plain-text alerts, ``incidents``, ``deliveries``, ``fetch``, ``status``, ops messages) is
in the configured ``timezone``, with the zone shown; Slack shows ``<!date^…>`` (each reader's own
zone) with the configured zone as the fallback.  Machine fields stay UTC.

Times are 1 July 2026, when London is UTC+1 and New York UTC-4, so a time left in UTC shows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from surgewatch import pipeline
from surgewatch.config import parse_settings
from surgewatch.demo.feedserver import FeedServer
from surgewatch.notifier import render
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime, build_notification
from surgewatch.pipeline.ops_messages import When, slack_mrkdwn
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack

TOKEN = "xoxb-test-local-times-token"
ROUTING_KEY = "R0UT1NGKEY0123456789012345678901"
T = datetime(2026, 7, 1, 9, 4, tzinfo=timezone.utc).timestamp()  # the scored bucket; alerts say T + 60
AT = 1782896700  # T + 60: 09:05 UTC
# What people in each configured zone must be shown for AT (written out, not computed by our code).
SHOWN = {
    "UTC": "2026-07-01T09:05:00Z",
    "Europe/London": "2026-07-01T10:05:00+01:00",
    "America/New_York": "2026-07-01T05:05:00-04:00",
}
ZONES = list(SHOWN)


@pytest.fixture(autouse=True)
def secrets(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)


def config(tmp_path, tz, slack=None, pd=None, **extra):
    channels: dict = {"console": {}}
    if slack is not None:
        channels["slack"] = {"api_url": slack.base_url, "marketing_channel": "#marketing", "ops_channel": "#ops"}
    if pd is not None:
        channels["pagerduty"] = {"events_url": pd.events_url, "min_severity": "warning",
                                 "page_unacked_warning_after_minutes": None}
    return {"brands": [{"name": "Acme", "query": "acme"}], "channels": channels, "timezone": tz,
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}, **extra}


def runtime(tmp_path, tz, slack=None, pd=None):
    return Runtime(parse_settings(config(tmp_path, tz, slack, pd),
                                  env={"SLACK_BOT_TOKEN": TOKEN, "PAGERDUTY_ROUTING_KEY": ROUTING_KEY}))


def incident(*severities, resolved=False):
    trs, prev = [], "quiet"
    for i, sev in enumerate(severities):
        trs.append({"no": i, "at": T + i * 60, "event": "opened" if i == 0 else "escalated", "from": prev, "to": sev,
                    "verdict": {"at": T + i * 60, "observed": 40.0, "expected": 2.0, "score": 0.9, "severity": sev},
                    "dispatched": True})
        prev = sev
    if resolved:
        trs.append({"no": len(trs), "at": T + 3600, "event": "resolved", "from": prev, "to": "resolved",
                    "verdict": {"at": T + 3600, "observed": 2.0, "expected": 2.0, "score": 0.0, "severity": "quiet"},
                    "dispatched": True})
    return {"id": "acme-1", "brand": "Acme", "status": "resolved" if resolved else "open", "severity": prev,
            "opened_at": T, "resolved_at": T + 3600 if resolved else None, "acked_at": None, "acked_by": None,
            "transitions": trs}


def contexts(message: dict) -> list[str]:
    return [el["text"] for b in message.get("blocks", []) if b["type"] == "context" for el in b["elements"]]


# -- alerts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("tz", ZONES)
def test_the_console_alert_line_is_in_the_configured_zone(tmp_path, tz, capsys):
    rt = runtime(tmp_path, tz)
    rt.store.save_incident(incident("warning"))
    assert pipeline.notify(rt, "acme-1", 0, "console").status == "sent"
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{SHOWN[tz]} WARNING Acme opened: ")


@pytest.mark.parametrize("tz", ZONES)
def test_plain_text_alerts_give_the_local_time_and_machines_keep_utc(tmp_path, tz):
    rt = runtime(tmp_path, tz)
    inc = incident("warning")
    n = build_notification(rt, inc, inc["transitions"][0], "apprise")
    assert n.at.timestamp() == AT
    _, body = render.plain_message(n)  # Apprise services and e-mail
    assert body.endswith(f"Incident acme-1 at {SHOWN[tz]}")
    assert render.iso(n.at) == "2026-07-01T09:05:00Z"  # webhook payloads, PagerDuty's timestamp


@pytest.mark.parametrize("tz", ZONES)
def test_slack_messages_show_a_date_token_with_a_local_fallback(tmp_path, tz):
    with FakeSlack(token=TOKEN) as slack:
        rt = runtime(tmp_path, tz, slack=slack)
        rt.store.save_incident(incident("warning"))
        assert pipeline.notify(rt, "acme-1", 0, "slack").status == "sent"
        for name in ("#marketing", "#ops"):
            [message] = slack.messages(name, include_replies=False)
            assert contexts(message)[-1] == (f"SurgeWatch · incident `acme-1` · "
                                             f"<!date^{AT}^{{date_short_pretty}} {{time}}|{SHOWN[tz]}>")
        # the escalation's thread reply, a minute later, with its own time
        rt.store.save_incident(incident("warning", "critical"))
        assert pipeline.notify(rt, "acme-1", 1, "slack").status == "sent"
        [reply] = [m for m in slack.messages("#ops") if m.get("thread_ts") not in (None, m["ts"])]
    a_minute_later = {"UTC": "2026-07-01T09:06:00Z", "Europe/London": "2026-07-01T10:06:00+01:00",
                      "America/New_York": "2026-07-01T05:06:00-04:00"}[tz]
    assert contexts(reply) == [f"<!date^{AT + 60}^{{date_short_pretty}} {{time}}|{a_minute_later}>"]


def test_pagerduty_keeps_a_utc_timestamp_and_shows_people_the_local_time(tmp_path):
    with FakePagerDuty() as pd:
        rt = runtime(tmp_path, "America/New_York", pd=pd)
        rt.store.save_incident(incident("warning"))
        assert pipeline.notify(rt, "acme-1", 0, "pagerduty").status == "sent"
        [event] = pd.accepted("trigger")
    payload = event.body["payload"]
    assert payload["timestamp"] == "2026-07-01T09:05:00Z"  # Events v2: ISO 8601, as the API wants
    assert payload["custom_details"]["time"] == "2026-07-01T05:05:00-04:00"


def test_the_date_token_is_added_after_escaping_and_a_post_cannot_forge_one():
    forged = "<!date^0^{time}|now> <!channel>"
    text = slack_mrkdwn(("Source rss says ", forged, " since ", When(AT), "."), "Europe/London")
    assert text == ("Source rss says &lt;!date^0^{time}|now&gt; &lt;!channel&gt; since "
                    f"<!date^{AT}^{{date_short_pretty}} {{time}}|2026-07-01T10:05:00+01:00>.")


# -- ops messages ---------------------------------------------------------------------------------
def test_a_source_outage_is_told_in_local_time_on_the_console_and_as_a_date_token_in_slack(tmp_path, capsys):
    tz = "America/New_York"
    with FeedServer() as feed, FakeSlack(token=TOKEN) as slack:
        feed.route("/f.rss", status=503)
        sources = {"rss": {"feeds": [feed.url("/f.rss")], "alert_after_minutes": 10}}
        (tmp_path / "s").mkdir()
        console = Runtime(parse_settings({**config(tmp_path, tz), "sources": sources}))
        with_slack = Runtime(parse_settings({**config(tmp_path / "s", tz, slack=slack), "sources": sources},
                                            env={"SLACK_BOT_TOKEN": TOKEN}))
        said = []
        for rt in (console, with_slack):
            for minute in range(0, 14, 2):
                h = SourceHealth.load(rt.store, "rss", "Acme")
                h.backoff_until = None  # poll every time; the backoff has its own test
                h.save(rt.store)
                pipeline.collect(rt, "rss", "Acme", now=T + minute * 60)
            said += [line for line in capsys.readouterr().out.splitlines() if " OPS " in line]
        [line] = said
        # the console: the poster's clock and the failure's start, both in New York time
        assert line.startswith("2026-07-01T05:14:00-04:00 OPS Source rss for Acme has been failing since "
                               "2026-07-01T05:04:00-04:00: ")
        [posted] = slack.messages("#ops")
    assert posted["text"].startswith(f"Source rss for Acme has been failing since "
                                     f"<!date^{int(T)}^{{date_short_pretty}} {{time}}|2026-07-01T05:04:00-04:00>: ")


# -- the CLI --------------------------------------------------------------------------------------
def cli(*args, config_path, columns: str | None = "200"):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "surgewatch.cli.main", *args, "--config", str(config_path)],
                          capture_output=True, text=True, timeout=60, env=env)


def write(tmp_path, data) -> str:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_incidents_and_deliveries_list_local_times(tmp_path, tz, capsys, monkeypatch):
    path = write(tmp_path, config(tmp_path, tz))
    rt = Runtime(parse_settings(config(tmp_path, tz)))
    rt.store.save_incident(incident("warning", resolved=True))
    (tmp_path / "clock").write_text(str(AT + 30))
    monkeypatch.setenv("SURGEWATCH_CLOCK", f"file:{tmp_path / 'clock'}")  # sent 30 s after the bucket closed
    pipeline.notify(rt, "acme-1", 0, "console")
    monkeypatch.delenv("SURGEWATCH_CLOCK")
    capsys.readouterr()
    opened, resolved, sent = {"UTC": ("2026-07-01 09:04", "2026-07-01 10:04", "2026-07-01 09:05"),
                              "America/New_York": ("2026-07-01 05:04", "2026-07-01 06:04", "2026-07-01 05:05")}[tz]
    for command in ("incidents", "deliveries"):
        proc = cli(command, config_path=path, columns=None)  # a pipe: 80 columns, the times still whole
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0].strip() == f"{command.title()} (times in {tz})"
        [row] = [line.split("│") for line in proc.stdout.splitlines() if "│ acme" in line]
        assert (row[5:7] == [f" {opened} ", f" {resolved} "]) if command == "incidents" else (row[6] == f" {sent} ")
    assert json.loads(cli("incidents", "--json", config_path=path).stdout)[0]["opened_at"] == T  # machines: epoch


def test_fetch_prints_each_post_time_in_the_configured_zone(tmp_path):
    published = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    with FeedServer() as feed:
        feed.route("/f.rss", items=[{"id": "a", "title": "Acme Live tickets", "link": "https://n.example/1",
                                     "published": published}])
        path = write(tmp_path, {**config(tmp_path, "America/New_York"), "sources": {"rss": {"feeds": [feed.url("/f.rss")]}}})
        proc = cli("fetch", "rss", "--brand", "Acme", config_path=path)
        as_json = cli("fetch", "rss", "--brand", "Acme", "--json", config_path=path)
    assert proc.returncode == 0, proc.stderr
    new_york = published.astimezone(ZoneInfo("America/New_York"))  # EST (-05:00) or EDT (-04:00), by the date
    assert new_york.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
    assert proc.stdout.splitlines()[:2] == ["times in America/New_York",
                                            f"{new_york:%Y-%m-%d %H:%M} rss:n.example/1 Acme Live tickets https://n.example/1"]
    assert json.loads(as_json.stdout.splitlines()[0])["created_at"] == published.isoformat()  # machines: UTC


def test_status_says_its_zone_and_shows_silences_and_heartbeats_in_it(tmp_path):
    from surgewatch import clock
    from surgewatch.actions import operator

    tz = "Europe/London"
    path = write(tmp_path, config(tmp_path, tz))
    rt = Runtime(parse_settings(config(tmp_path, tz)))
    now = clock.now()
    rt.store.heartbeat("beat", now)
    entry = operator.silence(rt, "Acme", 3600, "ana", "launch", now)
    until = datetime.fromtimestamp(entry["until"], ZoneInfo("Europe/London"))
    proc = cli("status", config_path=path)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    shown_now = datetime.fromisoformat(first.removeprefix("now ").removesuffix(" (Europe/London)"))
    assert shown_now.utcoffset() == ZoneInfo("Europe/London").utcoffset(shown_now.replace(tzinfo=None))
    assert abs(shown_now.timestamp() - now) < 60
    assert "Silences (times in Europe/London)" in proc.stdout
    assert any(f"{until:%Y-%m-%d %H:%M} ({m} min more)" in proc.stdout for m in (59, 60))
    assert f"{datetime.fromtimestamp(now, ZoneInfo('Europe/London')):%Y-%m-%d %H:%M}" in proc.stdout.split("Heartbeats")[1]


def test_a_silenced_delivery_says_until_when_in_the_configured_zone(tmp_path):
    from surgewatch.actions.operator import silence
    from surgewatch.pipeline.evaluation import EvaluateOutcome, _outbox

    with FakeSlack(token=TOKEN) as slack:
        rt = runtime(tmp_path, "Europe/London", slack=slack)
        silence(rt, "Acme", 3600, "sam", "deploy window", now=T)
        inc = incident("watch")
        inc["transitions"][0]["dispatched"] = False
        rt.store.save_incident(inc)
        _outbox(rt, "Acme", {"acme-1": inc}, inc, rt.store.get_state("silence:Acme"), EvaluateOutcome("Acme"), T + 60)
    [slack_record] = [d for d in rt.store.list_deliveries("acme-1") if d.channel == "slack"]
    assert slack_record.reason == "silence: deploy window (by sam, until 2026-07-01T11:04:00+01:00)"


# -- the helper ------------------------------------------------------------------------------------
@pytest.mark.parametrize("tz, shown", [
    (None, "2026-07-01T09:05:00Z"), ("UTC", "2026-07-01T09:05:00Z"), ("Etc/UTC", "2026-07-01T09:05:00Z"),
    ("Europe/London", "2026-07-01T10:05:00+01:00"), ("Asia/Kathmandu", "2026-07-01T14:50:00+05:45"),
])
def test_stamp_shows_the_zone_as_an_offset_and_utc_as_z(tz, shown):
    from surgewatch import clock

    assert clock.stamp(AT + 0.9, tz) == shown  # to the second
    assert datetime.fromisoformat(shown.replace("Z", "+00:00")).timestamp() == AT  # and it reads back
    assert clock.stamp(datetime(2026, 7, 1, 9, 5), tz) == shown  # a naive datetime is UTC


def test_london_in_winter_is_local_time_at_offset_zero_not_utc():
    from surgewatch import clock

    assert clock.stamp(datetime(2026, 11, 28, 10, 5, tzinfo=timezone.utc), "Europe/London") == "2026-11-28T10:05:00+00:00"
    assert clock.brief(datetime(2026, 11, 28, 10, 5, tzinfo=timezone.utc), "America/New_York") == "2026-11-28 05:05"
