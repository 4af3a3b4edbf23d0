"""Getting the digest out: Slack (the real slack-sdk against the local fake Slack), the
``surgewatch digest`` / ``surgewatch review`` commands, and the Monday 09:00 schedule across a
daylight-saving change."""
from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import typer
import yaml
from slack_sdk import WebClient
from typer.testing import CliRunner

from surgewatch.collectors.base import Mention
from surgewatch.reports.charts import png_size
from surgewatch.config import parse_settings
from surgewatch.reports.digest import ZonedCrontab, build_digest, digest_schedule, send_digest_to_slack, slack_blocks
from tests.fakes.slack_server import FakeSlack, validate_blocks
from surgewatch.cli.reports import digest, review
from surgewatch.store import open_store
from tests.test_digest import MONDAY, WEEK, History, local, seed_incidents, settings_for

TOKEN = "xoxb-digest-test"
UTC = timezone.utc
LONDON = ZoneInfo("Europe/London")


def test_the_digest_goes_to_slack_as_blocks_with_the_chart_in_the_thread(make_store, tmp_path):
    store = make_store(recent_cap=2000)
    History().seed(store)
    store.ingest([Mention("rss", "evil", "Acme", "<!channel> *free* <https://evil.example|acme.example>",
                          datetime.fromtimestamp(local(MONDAY, 12), UTC), url="https://news.example/evil",
                          author="@here", likes=10_000)])
    d = build_digest(store, settings_for(tmp_path), "Acme", WEEK)
    assert validate_blocks(slack_blocks(d)) == []
    with FakeSlack(token=TOKEN) as slack:
        client = WebClient(token=TOKEN, base_url=slack.base_url)
        receipt = send_digest_to_slack(d, client, "#marketing")
        top = slack.messages("#marketing", include_replies=False)
        assert len(top) == 1 and top[0]["ts"] == receipt["ts"]
        text = str(top[0]["blocks"])
        assert f"{d.total:,} mentions of Acme in {WEEK}" in text
        # the stranger's post cannot ping the channel or relabel a link
        assert "<!channel>" not in text and "<https://evil.example|" not in text and "@here" not in text
        assert "&lt;!channel&gt;" in text
        uploads = slack.uploaded()
        assert list(uploads.values()) == [d.chart_png] and png_size(d.chart_png) == (1200, 600)
        assert receipt["file"] in uploads
        shared = slack.replies("#marketing", receipt["ts"])
        assert [f["id"] for f in shared[0]["files"]] == [receipt["file"]]


def _write_config(tmp_path: Path, slack_url: str | None = None) -> Path:
    data = {
        "brands": [{"name": "Acme", "query": '"Acme Live" OR acmelive', "site": "https://www.acme.example"}],
        "sources": {"rss": {"feeds": ["http://127.0.0.1:1/f.rss"]}},
        "channels": {"console": {}},
        "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}", "recent_cap": 2000},
        "timezone": "America/New_York",
    }
    if slack_url:
        data["channels"]["slack"] = {"api_url": slack_url, "marketing_channel": "#marketing"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _app() -> typer.Typer:
    # what surgewatch/cli.py does with these two functions
    app = typer.Typer()
    app.command("digest")(digest)
    app.command("review")(review)
    return app


def test_the_digest_command_writes_markdown_html_and_the_chart_and_can_send(tmp_path, monkeypatch):
    with FakeSlack(token=TOKEN) as slack:
        config = _write_config(tmp_path, slack.base_url)
        settings = parse_settings(yaml.safe_load(config.read_text()))
        store = open_store(settings.store.url, recent_cap=2000)
        History().seed(store)
        seed_incidents(store, local(MONDAY, 15))
        store.close()
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        result = CliRunner().invoke(_app(), ["digest", "-c", str(config), "--week", WEEK, "--out", str(tmp_path / "out"),
                                             "--send"])
        assert result.exit_code == 0, result.output
        folder = tmp_path / "out" / f"acme-{WEEK}"
        assert sorted(p.name for p in folder.iterdir()) == ["digest-chart.png", "digest.html", "digest.md"]
        assert png_size((folder / "digest-chart.png").read_bytes()) == (1200, 600)
        assert str(folder / "digest.md") in result.output and "sent to Slack" in result.output
        assert len(slack.messages("#marketing", include_replies=False)) == 1 and len(slack.uploaded()) == 1
        assert TOKEN not in result.output


def test_the_review_command_reads_traffic_from_csv(tmp_path):
    config = _write_config(tmp_path)
    settings = parse_settings(yaml.safe_load(config.read_text()))
    store = open_store(settings.store.url)
    History().seed(store)
    opened = local(MONDAY, 15)
    seed_incidents(store, opened)
    store.close()
    csv = tmp_path / "traffic.csv"
    peak = opened + 50 * 60
    rows = ["timestamp,requests_per_minute"] + [
        f"{datetime.fromtimestamp(opened + k * 60, UTC).isoformat()},{9000 if opened + k * 60 == peak else 1500}"
        for k in range(0, 120)]
    csv.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(_app(), ["review", "acme-a", "-c", str(config), "--out", str(tmp_path / "r"),
                                         "--traffic", str(csv)])
    assert result.exit_code == 0, result.output
    # the first alert went out 90 s after the opening bucket began (see seed_incidents)
    assert f"lead {(peak - opened - 90) / 60:.0f} min before the traffic peak" in result.output
    folder = tmp_path / "r" / "acme-a"
    assert sorted(p.name for p in folder.iterdir()) == ["review-chart.png", "review.html", "review.md"]
    assert "| Traffic peak |" in (folder / "review.md").read_text()


def test_the_commands_print_config_and_input_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("brands: []\ntimezone: Mars/Olympus\n")
    runner = CliRunner()
    result = runner.invoke(_app(), ["digest", "-c", str(bad)])
    assert result.exit_code == 1
    assert "brands" in result.output and "unknown time zone 'Mars/Olympus'" in result.output
    assert "Traceback" not in result.output
    config = _write_config(tmp_path)
    result = runner.invoke(_app(), ["digest", "-c", str(config), "--week", "2026-W99"])
    assert result.exit_code == 1 and "2026 has no week 99" in result.output
    result = runner.invoke(_app(), ["review", "nope", "-c", str(config)])
    assert result.exit_code == 1 and "no incident 'nope'" in result.output
    result = runner.invoke(_app(), ["digest", "-c", str(config), "--send"])
    assert result.exit_code == 1 and "channels.slack" in result.output


# -- the schedule -------------------------------------------------------------------------------
def _next_run(schedule: ZonedCrontab, last_run: datetime, now: datetime) -> datetime:
    """When beat would run the task next, as an absolute time (UTC)."""
    schedule.nowfun = lambda: now
    # remaining_estimate is an elapsed time: add it in UTC (wall-clock arithmetic would add the DST hour)
    return now.astimezone(UTC) + schedule.remaining_estimate(last_run)


@pytest.fixture
def london(tmp_path):
    return settings_for(tmp_path, tz="Europe/London")


def test_the_digest_fires_at_nine_local_on_both_sides_of_the_autumn_dst_change(london):
    schedule = digest_schedule(london)  # Monday 09:00 Europe/London
    # Monday 19 Oct 2026 09:00 BST (08:00 UTC); the clocks go back on Sunday 25 October.
    last = datetime(2026, 10, 19, 9, 0, tzinfo=LONDON)
    nxt = _next_run(schedule, last, last + timedelta(seconds=5))
    assert nxt == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)  # 09:00 GMT = 09:00 UTC
    assert nxt.astimezone(LONDON).hour == 9
    following = _next_run(schedule, nxt.astimezone(LONDON), nxt + timedelta(seconds=5))
    assert following == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    # is_due flips exactly at 09:00 local, not at 09:00 of the old offset (08:00 UTC) or of UTC+1 (10:00)
    schedule.nowfun = lambda: datetime(2026, 10, 26, 8, 59, 30, tzinfo=UTC)
    assert not schedule.is_due(last).is_due
    schedule.nowfun = lambda: datetime(2026, 10, 26, 9, 0, 30, tzinfo=UTC)
    assert schedule.is_due(last).is_due


def test_the_digest_fires_at_nine_local_across_the_spring_change_and_with_configured_keys(london):
    schedule = digest_schedule(london)
    last = datetime(2027, 3, 22, 9, 0, tzinfo=LONDON)  # GMT; the clocks go forward on Sunday 28 March
    assert _next_run(schedule, last, last + timedelta(seconds=5)) == datetime(2027, 3, 29, 8, 0, tzinfo=UTC)  # 09:00 BST
    friday = digest_schedule(london, day_of_week="fri", hour=16, minute=30)
    last = datetime(2026, 10, 23, 16, 30, tzinfo=LONDON)
    assert _next_run(friday, last, last + timedelta(seconds=5)) == datetime(2026, 10, 30, 16, 30, tzinfo=UTC)


def test_a_plain_crontab_would_have_drifted_which_is_why_the_zone_is_explicit(london):
    from celery import Celery
    from celery.schedules import crontab

    app = Celery(set_as_current=False)  # the app's zone: UTC by default
    plain = crontab(minute=0, hour=9, day_of_week="mon", app=app)
    last = datetime(2026, 10, 19, 8, 0, tzinfo=UTC)
    plain.nowfun = lambda: last + timedelta(seconds=5)
    zoned = digest_schedule(london)
    assert (last + timedelta(seconds=5) + plain.remaining_estimate(last)).astimezone(LONDON).hour == 10  # 09:00 UTC = 10:00 BST
    assert _next_run(zoned, last, last + timedelta(seconds=5)).astimezone(LONDON).hour == 9


def test_the_schedule_survives_beats_pickled_schedule_file(london):
    schedule = pickle.loads(pickle.dumps(digest_schedule(london, hour=7)))
    assert isinstance(schedule, ZonedCrontab) and schedule.zone == "Europe/London" and schedule.hour == {7}
    last = datetime(2026, 10, 19, 7, 0, tzinfo=LONDON)
    assert _next_run(schedule, last, last + timedelta(seconds=5)) == datetime(2026, 10, 26, 7, 0, tzinfo=UTC)


def _two_brand_runtime(tmp_path, slack):
    from surgewatch.pipeline import Runtime

    settings = parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}, {"name": "Bolt", "query": "bolt"}],
        "channels": {"slack": {"api_url": slack.base_url, "marketing_channel": "#marketing"}},
        "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"},
        "timezone": "UTC",
    }, "test")
    return Runtime(settings)


def test_one_brands_slack_error_does_not_cost_the_other_brands_their_digest(tmp_path, monkeypatch):
    from surgewatch.reports.digest import deliver_weekly_digests

    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    with FakeSlack(token=TOKEN) as slack:
        rt = _two_brand_runtime(tmp_path, slack)
        slack.fail_next("chat.postMessage", "channel_not_found", times=1)  # the first brand's post
        entries = deliver_weekly_digests(rt)
        assert [(e["brand"], e["sent"]) for e in entries] == [("Acme", False), ("Bolt", True)]
        assert "channel_not_found" in entries[0]["error"]
        posted = slack.messages("#marketing", include_replies=False)
        assert len(posted) == 1 and "Bolt" in str(posted[0]["blocks"])
        # the failed brand is not marked as sent: the next run (or a retry) sends it
        again = deliver_weekly_digests(rt)
        assert [(e["brand"], e["sent"]) for e in again] == [("Acme", True), ("Bolt", False)]
        assert again[1].get("duplicate") is True
        assert len(slack.messages("#marketing", include_replies=False)) == 2


def test_the_weekly_task_fans_out_one_retried_task_per_brand(tmp_path, monkeypatch):
    from surgewatch.worker import tasks

    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    with FakeSlack(token=TOKEN) as slack:
        rt = _two_brand_runtime(tmp_path, slack)
        monkeypatch.setattr(tasks, "runtime", lambda: rt)
        monkeypatch.setattr(tasks, "backoff", lambda retries, floor=None: 0.0)
        sent = []
        monkeypatch.setattr(tasks.digest_brand, "apply_async", lambda args, queue: sent.append((args, queue)))
        summary = tasks.digest.apply().get()
        assert [a[0] for a, _ in sent] == ["Acme", "Bolt"] and {q for _, q in sent} == {"notify"}
        assert all(a[1] == summary["week"] for a, _ in sent)
        # Slack is rate limiting the first brand's post: that brand's task retries, and gets through
        slack.fail_next("chat.postMessage", "ratelimited", retry_after=0, times=2)
        first = tasks.digest_brand.apply(sent[0][0]).get()
        assert first["sent"] is True
        second = tasks.digest_brand.apply(sent[1][0]).get()
        assert second["sent"] is True
        assert len(slack.messages("#marketing", include_replies=False)) == 2


@pytest.mark.slow
def test_the_digest_of_the_demo_week_counts_the_notifications_the_demo_counted(tmp_path):
    """The demo's summary and the digest's scorecard read one delivery log with one function."""
    from datetime import date

    from surgewatch.config import load_settings
    from surgewatch.reports.digest import render_markdown, week_name
    from tests.test_demo import run_demo

    result, _ = run_demo("--keep", str(tmp_path / "demo"), "--seconds", "30")
    settings = load_settings(tmp_path / "demo" / "config.yaml")
    store = open_store(settings.store.url)
    try:
        d = build_digest(store, settings, "Acme", week_name(date.fromisoformat(result["surge_onset"][:10])))
    finally:
        store.close()
    assert d.scorecard.sent == result["notifications_sent"] > 0
    assert d.scorecard.deliveries.by_status == result["deliveries"]
    assert d.scorecard.deliveries.by_channel == result["deliveries_by_channel"]
    assert f"| Notifications sent | {result['notifications_sent']} (" in render_markdown(d)
    # the demo's feeds carry no reach or engagement: its stories stand in for top posts
    assert d.headlines and d.headlines[0].copies > 1
