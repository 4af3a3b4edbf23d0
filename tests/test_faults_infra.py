"""Redis restarted mid-run, and two beats on one broker.  Each test starts its own throwaway
``redis-server`` on a free port (never the shared 6379): restarting it must not disturb anyone."""
from __future__ import annotations

import json

import time
from datetime import datetime, timezone

import pytest
import redis

from surgewatch.demo.feedserver import FeedServer
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime
from tests.support import Worker, wait_until, write_config
from tests.support_faults import Beat, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.celery, pytest.mark.slow]

INTERVAL = 2  # seconds between polls: beat runs on the real clock here


def live_items(path: str):
    if path != "/news.rss":
        return None
    now = time.time()
    # A new post every second; each poll finds the last minute's.
    return [{"id": f"p{int(t)}", "title": f"Acme Live post {int(t)}", "link": f"https://news.example/{int(t)}",
             "published": datetime.fromtimestamp(int(t), timezone.utc)} for t in range(int(now) - 60, int(now) + 1)]


@pytest.fixture
def server():
    with RedisServer() as s:
        yield s


def config(tmp_path, server: RedisServer, feed: FeedServer):
    return write_config(tmp_path, {
        "brands": [{"name": "Acme", "query": '"Acme Live"'}],
        "sources": {"rss": {"interval": INTERVAL, "timeout": 2, "feeds": [feed.url("/news.rss")]}},
        "channels": {"console": {}},
        "store": {"url": server.url(1)},
        "broker": {"url": server.url(0)},
        "detector": {"bucket_seconds": 10, "warm_up_minutes": 1, "evaluation_lag_seconds": 0},
    })


def polls(rt: Runtime) -> int:
    try:
        return SourceHealth.load(rt.store, "rss", "Acme").polls
    except Exception:  # noqa: BLE001 - the store is down while Redis restarts: "no answer yet"
        return 0


@pytest.fixture(scope="module")
def redis_restarted(tmp_path_factory):
    """Worker and beat run on a throwaway Redis, which is killed and started again (empty).  Beat is
    supervised the way systemd's ``Restart=always`` would: started again if it exits."""
    tmp_path = tmp_path_factory.mktemp("redis-restart")
    with RedisServer() as server, FeedServer(items_at=live_items) as feed:
        path, settings = config(tmp_path, server, feed)
        rt = Runtime(settings)
        worker = Worker(path, {}, tmp_path / "worker.log", concurrency=1)
        beats = [Beat(path, {}, tmp_path / "beat0.log", tmp_path / "beat-schedule")]
        try:
            wait_until(lambda: polls(rt) >= 2, 60, "polls before the restart", worker)
            worker_pid = worker.proc.pid
            server.restart(down_for=3.0)  # a crash: nothing persisted, every key is gone
            requests_at_restart = len(feed.requests_to("/news.rss"))
            time.sleep(5)
            beat_survived = beats[0].alive()

            def resumed() -> bool:
                if not beats[-1].alive():  # the supervisor's restart
                    beats.append(Beat(path, {}, tmp_path / f"beat{len(beats)}.log", tmp_path / "beat-schedule"))
                return polls(rt) >= 2

            # The store was emptied with Redis: health starts again from zero.  New polls prove that
            # beat schedules again and the worker consumes again.
            wait_until(resumed, 60, "polls after the restart", worker)
            counts = rt.store.counts("Acme", time.time() - 3600, time.time() + 60)
            yield {
                "beat_survived": beat_survived,
                "beat_starts": len(beats),
                "worker_alive": worker.proc.poll() is None and worker.proc.pid == worker_pid,
                "worker_log": worker.log(),
                "new_requests": len(feed.requests_to("/news.rss")) - requests_at_restart,
                "counted_after": sum(counts.get("rss", {}).values()),
                "beat_log": beats[0].log(),
            }
        finally:
            for b in beats:
                b.stop()
            worker.stop()


def test_the_worker_reconnects_after_redis_restarts_and_tasks_run_again(redis_restarted):
    r = redis_restarted
    assert r["worker_alive"], "the worker process exited (a crash loop under a supervisor)"
    assert "Connected to redis://" in r["worker_log"].split("Cannot connect", 1)[-1], "no reconnect logged"
    assert r["new_requests"] > 0 and r["counted_after"] > 0
    assert r["beat_starts"] <= 2, "beat restarted more than once: a crash loop"


def test_beat_survives_a_redis_restart_without_a_supervisor(redis_restarted):
    assert redis_restarted["beat_survived"], redis_restarted["beat_log"][-1500:]


def collect_tasks(broker: redis.Redis) -> int:
    """The surgewatch.collect tasks waiting in the collect queue (beat also sends each queue a
    heartbeat task, which is not a poll)."""
    return sum(1 for raw in broker.lrange("collect", 0, -1) if json.loads(raw)["headers"]["task"] == "surgewatch.collect")


def test_a_second_beat_on_the_same_broker_does_not_double_the_schedule(tmp_path, server):
    with FeedServer(items_at=live_items) as feed:
        path, settings = config(tmp_path, server, feed)
        first = Beat(path, {}, tmp_path / "beat1.log", tmp_path / "beat1-schedule")
        second = None
        broker = redis.Redis.from_url(server.url(0))
        try:
            # No worker: scheduled tasks pile up in the "collect" list, where they can be counted.
            wait_until(lambda: broker.llen("collect") >= 1, 60, "the first beat's first tick")
            second = Beat(path, {}, tmp_path / "beat2.log", tmp_path / "beat2-schedule")
            time.sleep(4)  # the second beat starts and asks for the lock
            start = collect_tasks(broker)
            window = 12.0
            time.sleep(window)
            sent = collect_tasks(broker) - start
            one_beat = window / INTERVAL
            assert sent <= one_beat + 1, f"{sent} collect tasks in {window:g}s: more than one beat's {one_beat:g}"
            assert sent >= one_beat - 2, f"only {sent} collect tasks in {window:g}s"
            assert first.alive() and second.alive()
            # The second beat is waiting for the lock rather than ticking.
            assert "acquiring lock" in second.log().lower() or "lock" in second.log().lower()
            # When the first beat dies, the second takes over within the lock timeout (60 s): too long
            # to wait here, so the takeover itself is left to RedBeat's own tests.
        finally:
            for b in (first, second):
                if b is not None:
                    b.stop()
            broker.close()
