"""Issue 13, the collector half: a source that answers in a way we cannot use is a recorded, named
failure, never a bare exception, a silent zero, a leaked token, a pause until 2036 or a hang.

Every test here runs the real clients (tweepy, praw, requests) against the local fakes, and each
reproduces one finding of the adversarial run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from surgewatch.collectors.base import BrandSpec, SourceError
from surgewatch.collectors.reddit import RedditCollector
from surgewatch.collectors.waits import MAX_WAIT, parse_reset, parse_retry_after, wait_from_headers
from surgewatch.collectors.x import XCollector
from surgewatch import pipeline
from tests.fakes.reddit_server import FakeReddit
from tests.fakes.x_server import COUNTS_PATH, SEARCH_PATH, FakeX
from surgewatch.demo.feedserver import FeedServer
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime
from tests.fakes.drip import DripServer
from tests.support import write_config

TOKEN = "AAAAAAAAAAAAAAAAAAAAAsecretbearer0123456789"
REDDIT_SECRET = "reddit-secret-0123456789"
BRAND = BrandSpec(name="acme", query="acme")
TEN_YEARS = 10 * 365 * 86400


# -- one parser for every wait, capped ---------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("120", 120.0), ("999999999", MAX_WAIT), ("-5", 0.0), ("nan", None), ("inf", MAX_WAIT), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("Fri, 01 Jan 2100 00:00:00 GMT", MAX_WAIT), ("", None), (None, None),
])
def test_retry_after_is_read_one_way_and_capped_at_an_hour(value, expected):
    assert parse_retry_after(value, time.time()) == expected


def test_reset_headers_read_as_an_epoch_seconds_or_an_iso_time_and_are_capped():
    now = 1_796_000_000.0
    assert parse_reset(str(int(now) + 120), now) == 120.0  # X, Bluesky: epoch seconds
    assert parse_reset(str(int(now) + TEN_YEARS), now) == MAX_WAIT  # X, ten years ahead
    assert parse_reset("315360000", now) == MAX_WAIT  # Reddit: seconds until the reset, ten years
    assert parse_reset("540", now) == 540.0
    midnight = datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp()
    assert parse_reset("2026-11-30T00:02:00.000Z", midnight) == 120.0  # Mastodon: an ISO time
    assert wait_from_headers({"Retry-After": "999999999"}, now) == MAX_WAIT
    assert wait_from_headers({"x-ratelimit-reset": "nan"}, now, "x-ratelimit-reset") is None


def test_the_notifiers_and_every_collector_share_the_one_parser():
    import surgewatch.collectors.http as feed_http
    import surgewatch.collectors.links as links

    assert feed_http.parse_retry_after is parse_retry_after
    assert links.retry_after_from({"Retry-After": "999999999"}, time.time) == MAX_WAIT


def test_an_rss_503_with_retry_after_999999999_waits_an_hour_at_most():
    from surgewatch.collectors.rss import RssCollector

    with FeedServer() as feed:
        feed.route("/down.rss", status=503, retry_after=999999999)
        with pytest.raises(SourceError) as caught:
            RssCollector([feed.url("/down.rss")], timeout=5).fetch(BRAND, None)
    assert not caught.value.permanent and caught.value.retry_after == MAX_WAIT


# -- X: wrong shapes are named source errors, never a TypeError or a silent zero ----------------------
def _x(server: FakeX, **kw) -> XCollector:
    return XCollector(TOKEN, api_url=server.url, quiet_posts_every=0, **kw)


@pytest.mark.parametrize("path, body, field", [
    (COUNTS_PATH, {"data": 5}, "data"),
    (COUNTS_PATH, {"data": [{"start": "2026-12-07T00:00:00.000Z", "tweet_count": "lots"}]}, "tweet_count"),
    (SEARCH_PATH, {"data": [{"id": "1", "text": "acme"}], "meta": ["x"]}, "meta"),
    (SEARCH_PATH, {"data": [{"id": "1", "text": "acme"}], "includes": ["x"]}, "includes"),
    (SEARCH_PATH, {"data": [{"id": "1", "text": "acme", "public_metrics": "many"}]}, "public_metrics"),
    (SEARCH_PATH, {"data": [{"id": "1" * 40, "text": "acme"}]}, "id"),
])
def test_an_x_answer_of_the_wrong_shape_is_a_source_error_naming_source_brand_and_field(path, body, field):
    with FakeX(bearer_token=TOKEN) as server:
        server.fail(200, body, path=path, times=5)
        with pytest.raises(SourceError) as caught:
            _x(server).fetch(BRAND, None)
    text = str(caught.value)
    assert text.startswith("x: ") and "'acme'" in text and field in text, text
    assert "Error" not in text  # no bare Python exception name


def test_a_tweet_count_that_is_not_a_number_is_an_error_not_a_zero():
    with FakeX(bearer_token=TOKEN) as server:
        server.fail(200, {"data": [{"start": "2026-12-07T00:00:00.000Z", "end": "2026-12-07T00:01:00.000Z",
                                    "tweet_count": "lots"}]}, path=COUNTS_PATH)
        with pytest.raises(SourceError, match="tweet_count"):
            _x(server).fetch(BRAND, None)


def test_an_x_401_that_echoes_the_bearer_token_never_shows_it():
    with FakeX(bearer_token=TOKEN) as server:
        server.fail(401, {"title": "Unauthorized", "type": "about:blank", "status": 401,
                          "detail": f"Authorization: Bearer {TOKEN} is not valid ({TOKEN})"}, times=5)
        with pytest.raises(SourceError) as caught:
            _x(server).fetch(BRAND, None)
    assert caught.value.permanent
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    assert "Bearer ***" in str(caught.value)


def test_an_x_429_with_a_reset_ten_years_ahead_waits_an_hour_at_most():
    with FakeX(bearer_token=TOKEN) as server:
        server.rate_limited(path="/2/", reset_in=TEN_YEARS)
        collector = _x(server)
        with pytest.raises(SourceError) as caught:
            collector.fetch(BRAND, None)
        assert caught.value.retry_after is not None and caught.value.retry_after <= MAX_WAIT
        # The collector's own hold on the endpoint is capped too: an hour on, it asks X again.
        assert all(until <= time.time() + MAX_WAIT + 1 for until in collector._blocked_until.values())


# -- Reddit -----------------------------------------------------------------------------------------
def _reddit(server: FakeReddit, **kw) -> RedditCollector:
    return RedditCollector("test-client", REDDIT_SECRET, "surgewatch-tests/0.1", api_url=server.url,
                           auth_url=server.url, **kw)


@pytest.mark.parametrize("created_utc", [1e20, "nan", float("inf"), -5, "lots"])
def test_a_reddit_created_utc_out_of_range_is_a_source_error(created_utc):
    from tests.fakes.reddit_server import FakeThing, _thing_json

    post = _thing_json(FakeThing("t3", "abc1", "test", 0.0, title="acme is down"))
    post["created_utc"] = created_utc
    with FakeReddit(client_secret=REDDIT_SECRET) as server:
        server.fail(200, {"kind": "Listing", "data": {"after": None, "dist": 1,
                                                      "children": [{"kind": "t3", "data": post}]}}, path="/r/")
        with pytest.raises(SourceError) as caught:
            _reddit(server).fetch(BRAND, None)
    assert str(caught.value).startswith("reddit: ") and "created_utc" in str(caught.value)


def test_a_reddit_reset_of_ten_years_is_capped_at_an_hour():
    with FakeReddit(client_secret=REDDIT_SECRET) as server:
        server.rate_limited(reset_in=315360000)
        with pytest.raises(SourceError) as caught:
            _reddit(server).fetch(BRAND, None)
    assert caught.value.retry_after is not None and caught.value.retry_after <= MAX_WAIT


def test_a_reddit_first_poll_lists_the_posts_older_than_its_look_back_with_the_reason():
    with FakeReddit(client_secret=REDDIT_SECRET) as server:
        for n in range(6):
            server.add_post(f"acme old post {n}", created_utc=time.time() - 3 * 3600 - n * 60)
        server.add_post("acme new post")
        batch = _reddit(server).fetch(BRAND, None)
    assert [m.text for m in batch.mentions] == ["acme new post"]
    assert sorted(s.text for s in batch.skipped) == [f"acme old post {n}" for n in range(6)]
    assert all("older than the first poll's look-back" in s.reason for s in batch.skipped)


# -- overall deadlines -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda url: XCollector(TOKEN, api_url=url, timeout=2),
    lambda url: RedditCollector("id", REDDIT_SECRET, "ua", api_url=url, auth_url=url, timeout=2),
], ids=["x", "reddit"])
@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "status line and headers"])
def test_a_dripping_server_is_abandoned_at_the_configured_timeout(make, headers_too):
    with DripServer(every=0.5, body=b'{"data": []}' + b" " * 200, headers_too=headers_too) as drip:
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            make(drip.url).fetch(BRAND, None)
        took = time.monotonic() - started
    assert took < 10, took  # a 2 s timeout, two requests at most (Reddit's token, or one retry)
    assert "within 2s" in str(caught.value)


# -- the pipeline records every failure and alerts while backing off ----------------------------------
@pytest.fixture
def x_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    with FakeX(bearer_token=TOKEN) as server:
        path, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "sources": {"x": {"api_url": server.url, "alert_after_minutes": 15}},
            "channels": {"console": {}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        rt = Runtime(settings)
        rt.settings_path = path
        yield rt, server


def test_pipeline_collect_records_a_wrong_shaped_answer_after_a_good_poll(x_runtime):
    rt, server = x_runtime
    now = time.time()
    SourceHealth("x", "Acme", status="ok", last_success=now - 60, polls=1).save(rt.store)  # a good poll before
    server.fail(200, {"data": 5}, path=COUNTS_PATH, times=5)
    outcome = pipeline.collect(rt, "x", "Acme", now=now)
    health = SourceHealth.load(rt.store, "x", "Acme")
    assert outcome.status == "failed" and health.status != "ok"
    assert health.last_error.startswith("x: counts answer") and "x: x:" not in health.last_error


class _Broken:
    """A collector with a bug: what pipeline.collect must still record (the net under the models)."""

    name = "x"

    def fetch(self, brand, cursor):
        return None + 1  # TypeError


def test_pipeline_collect_records_any_exception_a_collector_raises(x_runtime):
    rt, _ = x_runtime
    now = time.time()
    assert pipeline.collect(rt, "x", "Acme", now=now).status == "ok"
    rt._collectors["x"] = _Broken()
    outcome = pipeline.collect(rt, "x", "Acme", now=now + 60)
    health = SourceHealth.load(rt.store, "x", "Acme")
    assert outcome.status == "failed" and health.status == "degraded"
    assert health.last_error.startswith("x: could not use the answer for brand 'Acme'")
    assert "TypeError" not in health.last_error


def test_the_token_x_echoes_is_not_stored_logged_or_alerted(x_runtime, caplog, capsys):
    rt, server = x_runtime
    server.fail(401, {"title": "Unauthorized", "detail": f"Bearer {TOKEN} rejected"}, times=5)
    outcome = pipeline.collect(rt, "x", "Acme", now=time.time())
    assert outcome.status == "disabled"
    stored = json.dumps(rt.store.get_state(SourceHealth.key("x", "Acme")))
    alert = capsys.readouterr().out  # the console ops poster: the source-outage alert
    assert "Source x for Acme is disabled" in alert
    for where in (stored, caplog.text, alert, outcome.message):
        assert TOKEN not in where
    status = subprocess.run([sys.executable, "-m", "surgewatch.cli.main", "status", "--json", "--config",
                             str(rt.settings_path)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "Bearer ***" in status.stdout and TOKEN not in status.stdout + status.stderr


def test_a_worker_poll_against_a_dripping_server_ends_at_the_configured_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    with DripServer(every=2.0, body=b'{"data": []}' + b" " * 200) as drip:
        _, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "sources": {"x": {"api_url": drip.url, "timeout": 2}},
            "channels": {"console": {}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        started = time.monotonic()
        outcome = pipeline.collect(Runtime(settings), "x", "Acme", now=time.time())
        took = time.monotonic() - started
    assert outcome.status == "failed" and "within 2s" in outcome.message
    assert took < 10, took  # a Celery worker is held for the timeout, not until the soft time limit


def test_a_source_backing_off_past_alert_after_minutes_raises_the_outage_alert(x_runtime, capsys):
    rt, server = x_runtime
    now = time.time()
    server.rate_limited(path="/2/", reset_in=TEN_YEARS)
    assert pipeline.collect(rt, "x", "Acme", now=now).status == "failed"
    health = SourceHealth.load(rt.store, "x", "Acme")
    assert health.backoff_until <= now + MAX_WAIT + 1  # not 2036
    capsys.readouterr()
    # Backing off: the skipped polls still consider the outage alert once alert_after_minutes pass.
    outcome = pipeline.collect(rt, "x", "Acme", now=now + 16 * 60)
    assert outcome.status == "skipped"
    assert "Source x for Acme has been failing since" in capsys.readouterr().out


def test_a_stored_backoff_until_2036_is_cut_to_the_configured_cap(x_runtime):
    rt, _ = x_runtime
    now = time.time()
    health = SourceHealth("x", "Acme", status="ok", last_success=now - 60, backoff_until=now + TEN_YEARS)
    health.save(rt.store)
    outcome = pipeline.collect(rt, "x", "Acme", now=now)
    assert outcome.status == "skipped"
    assert SourceHealth.load(rt.store, "x", "Acme").backoff_until <= now + MAX_WAIT


def test_a_paused_source_alerts_after_alert_after_minutes_without_a_failure(x_runtime, capsys):
    rt, _ = x_runtime
    now = time.time()
    # X held back on a spent rate limit (a success with retry_after): no failure, and yet no poll.
    health = SourceHealth("x", "Acme", status="degraded", last_success=now - 20 * 60, backoff_until=now + 600)
    health.save(rt.store)
    assert pipeline.collect(rt, "x", "Acme", now=now).status == "skipped"
    assert "Source x for Acme has been failing since" in capsys.readouterr().out


# -- the CLI: one line naming the source, no exception name, no token, in bounded time ---------------
def _cli(*args: str, config: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "surgewatch.cli.main", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": os.getcwd(), **env})


X_HOSTILE = [
    (COUNTS_PATH, 200, {"data": 5}),
    (COUNTS_PATH, 200, {"data": [{"start": "2026-12-07T00:00:00.000Z", "tweet_count": "lots"}]}),
    (SEARCH_PATH, 200, {"data": [{"id": "1", "text": "acme"}], "meta": [1]}),
    (SEARCH_PATH, 200, {"data": [{"id": "1", "text": "acme"}], "includes": ["x"]}),
    (SEARCH_PATH, 200, {"data": [{"id": "1", "text": "acme", "public_metrics": "many"}]}),
    (SEARCH_PATH, 200, {"data": [{"id": "1" * 40, "text": "acme"}]}),
    (SEARCH_PATH, 200, b"<html>502</html>"),
    (SEARCH_PATH, 200, b"[" * 100_000),
    (SEARCH_PATH, 401, {"title": "Unauthorized", "detail": f"Bearer {TOKEN} is not valid"}),
    (SEARCH_PATH, 429, {"title": "Too Many Requests"}),
]


def test_fetch_x_against_each_hostile_answer_exits_with_one_line_naming_the_source(tmp_path):
    with FakeX(bearer_token=TOKEN) as server:
        path, _ = write_config(tmp_path, {"brands": [{"name": "Acme", "query": "acme"}],
                                          "sources": {"x": {"api_url": server.url}},
                                          "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        for route, status, body in X_HOSTILE:
            server._failures.clear()
            server.fail(status, body, path=route, times=10,
                        headers={"x-rate-limit-reset": str(int(time.time()) + TEN_YEARS)} if status == 429 else None)
            proc = _cli("fetch", "x", "--brand", "Acme", config=path, env={"X_BEARER_TOKEN": TOKEN})
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert proc.returncode != 0, (route, body, proc.stdout)
            assert len(lines) == 1 and lines[0].startswith("error: x: "), (route, body, proc.stderr)
            assert "x: x:" not in lines[0] and "Error:" not in lines[0] and TOKEN not in proc.stderr + proc.stdout


@pytest.mark.parametrize("source", ["x", "reddit"])
def test_fetch_against_a_dripping_server_with_timeout_5_ends_within_30_seconds(tmp_path, source):
    with DripServer(every=2.0, body=b'{"data": []}' + b" " * 200) as drip:
        cfg = {"x": {"api_url": drip.url, "timeout": 5},
               "reddit": {"api_url": drip.url, "auth_url": drip.url, "timeout": 5}}[source]
        path, _ = write_config(tmp_path, {"brands": [{"name": "Acme", "query": "acme"}],
                                          "sources": {source: cfg},
                                          "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        started = time.monotonic()
        proc = _cli("fetch", source, "--brand", "Acme", config=path, timeout=60,
                    env={"X_BEARER_TOKEN": TOKEN, "REDDIT_CLIENT_ID": "id", "REDDIT_CLIENT_SECRET": REDDIT_SECRET})
        took = time.monotonic() - started
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and took < 30, (took, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: "), proc.stderr


def test_fetch_reddit_shows_the_posts_too_old_to_count_each_with_its_reason(tmp_path):
    with FakeReddit(client_secret=REDDIT_SECRET) as server:
        for n in range(6):  # a recorded answer: six posts, all older than a first poll's look-back
            server.add_post(f"acme launch thread {n}", created_utc=time.time() - 5 * 3600 - n * 600)
        path, _ = write_config(tmp_path, {"brands": [{"name": "Acme", "query": "acme"}],
                                          "sources": {"reddit": {"api_url": server.url, "auth_url": server.url}},
                                          "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        proc = _cli("fetch", "reddit", "--brand", "Acme", config=path,
                    env={"REDDIT_CLIENT_ID": "test-client", "REDDIT_CLIENT_SECRET": REDDIT_SECRET})
    assert proc.returncode == 0, proc.stderr
    shown = [line for line in proc.stdout.splitlines() if "acme launch thread" in line]
    assert len(shown) == 6 and all("[skipped: older than the first poll's look-back" in line for line in shown)
    assert proc.stdout.strip().endswith("0 matching, 6 skipped")


def test_fetch_names_the_source_once_when_every_feed_fails(tmp_path):
    with FeedServer() as feed:
        feed.route("/down.rss", status=503, retry_after=999999999)
        path, _ = write_config(tmp_path, {"brands": [{"name": "Acme", "query": "acme"}],
                                          "sources": {"rss": {"feeds": [feed.url("/down.rss")]}},
                                          "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        proc = _cli("fetch", "rss", "--brand", "Acme", config=path, env={})
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: rss: every feed failed") and "rss: rss:" not in proc.stderr
