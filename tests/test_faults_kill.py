"""SIGKILL in the middle of notify, collect and evaluate: real Redis (broker DB 9, store DB 8), real
`surgewatch worker` subprocesses, the real RSS collector against a local feed server and the real
slack-sdk against a local fake Slack.

Two kinds of crash behave differently with Celery's Redis transport and must both be covered:

* the whole worker dies (machine lost, `kill -9` of the main process): its unacknowledged message
  stays in the broker's ``unacked`` hash and is redelivered only after ``visibility_timeout``
  (600 s), by whichever worker starts or sweeps next.  The tests age the message (and the claim's
  wall-clock lease) instead of waiting ten minutes -- see :func:`tests.support_faults.age_unacked`.
* one pool child dies (the OOM killer picks it): the main process sees the loss and, with
  ``task_reject_on_worker_lost``, requeues the message *at once*, while the dead child's claim in
  the store is still live.
"""
from __future__ import annotations

import math
import os
import signal
import time
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import redis

from surgewatch.detector.spike import SpikeDetector
from tests.fakes.slack_server import FakeSlack
from surgewatch.demo.feedserver import FeedServer
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime, delivery_key
from tests.support import FileClock, Worker, redis_db_url, sender_for, wait_until, write_config
from tests.support_faults import age_unacked, expire_claims, seed_incident, unacked_count

pytestmark = [pytest.mark.redis, pytest.mark.celery, pytest.mark.slow]

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc).timestamp()
TOKEN = "xoxb-fault-suite-token-77"
VISIBILITY = 600  # celery_settings: broker_transport_options["visibility_timeout"]


class World:
    """One brand, one feed, Slack with a marketing and an ops channel, store and broker on Redis."""

    def __init__(self, tmp_path: Path, redis_url: str, feed: FeedServer, slack: FakeSlack, items: list[dict]):
        self.tmp_path = tmp_path
        self.store_url, self.broker_url = redis_db_url(redis_url, 8), redis_db_url(redis_url, 9)
        for url in (self.store_url, self.broker_url):
            redis.Redis.from_url(url).flushdb()
        self.clock = FileClock(tmp_path / "clock", T0)
        self.feed, self.slack, self.items = feed, slack, items
        self.config, self.settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": '"Acme Live" OR acmelive -jobs', "site": "https://www.acme.example"}],
            "sources": {"rss": {"interval": 60, "timeout": 5, "feeds": [feed.url("/news.rss")]}},
            "channels": {"slack": {"api_url": slack.base_url, "marketing_channel": "#marketing",
                                   "ops_channel": "#ops", "timeout": 10}},
            "store": {"url": self.store_url},
            "broker": {"url": self.broker_url},
            "detector": {"bucket_seconds": 60, "warm_up_minutes": 30, "evaluation_lag_seconds": 0},
        })
        self.rt = Runtime(self.settings)
        self.sender = sender_for(self.settings)
        self.workers: list[Worker] = []

    def start_worker(self, concurrency: int = 1) -> Worker:
        n = len(self.workers)
        w = Worker(self.config, {"SURGEWATCH_CLOCK": self.clock.env, "SLACK_BOT_TOKEN": TOKEN},
                   self.tmp_path / f"worker{n}.log", concurrency=concurrency)
        self.workers.append(w)
        return w

    def logs(self) -> str:
        return "\n".join(w.log()[-4000:] for w in self.workers)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def pool_children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (Celery's prefork pool children), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def matching_items(now: float) -> list[dict]:
    items = []
    for k in range(60):
        at = now - 30 * 60 + k * 30
        items.append({"id": f"m{k}", "title": f"Acme Live update {k}", "link": f"https://news.example/p/{k}",
                      "published": datetime.fromtimestamp(at, timezone.utc)})
        items.append({"id": f"n{k}", "title": "Acme jobs fair", "link": f"https://news.example/j/{k}",
                      "published": datetime.fromtimestamp(at + 1, timezone.utc)})
    return items


@contextmanager
def make_world(tmp_path: Path, redis_url: str) -> Iterator[World]:
    items = matching_items(T0)
    with FeedServer(items_at=lambda path: items if path == "/news.rss" else None) as feed, FakeSlack(token=TOKEN) as slack:
        w = World(tmp_path, redis_url, feed, slack, items)
        try:
            yield w
        finally:
            w.stop()


@pytest.fixture
def world(tmp_path, redis_url):
    with make_world(tmp_path, redis_url) as w:
        yield w


def top_level(slack: FakeSlack, channel: str) -> list[dict]:
    return slack.messages(channel, include_replies=False)


def ready(world: World, worker: Worker) -> None:
    """Wait until the worker has connected and consumes (Celery logs "celery@host ready.")."""
    wait_until(lambda: "ready." in worker.log(), 60, "the worker to start", worker)


# -- notify -------------------------------------------------------------------------------------------
def _start_slow_notify(world: World) -> tuple[dict, str]:
    inc = seed_incident(world.rt.store, "Acme", T0 - 120)
    key = delivery_key(inc["id"], 0, "slack")
    # The first post (marketing) hangs 4 s inside Slack, then Slack posts it anyway: the request had
    # arrived whole, as with the real API when a client gives up mid-response.
    world.slack.fail_next("chat.postMessage", error=None, delay=4.0)
    world.sender.send_task("surgewatch.notify", args=(inc["id"], 0, "slack"), queue="notify")
    return inc, key


@pytest.fixture(scope="module")
def killed_worker_mid_notify(tmp_path_factory, redis_url):
    """Runs once for the tests that read it.  The whole worker is SIGKILLed while Slack is slowly handling the marketing post; a new
    worker starts after the visibility timeout has (simulated to have) passed."""
    with make_world(tmp_path_factory.mktemp("killed-worker"), redis_url) as world:
        outcome = _kill_worker_mid_notify(world)
        world.stop()  # the broker and store DBs are shared with the next test: no worker may linger
        yield outcome


def _kill_worker_mid_notify(world: World) -> tuple[World, dict, str]:
    w1 = world.start_worker()
    ready(world, w1)
    inc, key = _start_slow_notify(world)
    wait_until(lambda: (world.rt.store.delivery(key) or {}).get("status") == "claimed", 30, "the claim", w1)
    time.sleep(0.5)  # the post is now inside the fake Slack's 4 s delay
    w1.kill()
    # Slack finishes handling the request it already had.
    wait_until(lambda: top_level(world.slack, "#marketing"), 10, "Slack to post the in-flight message")
    assert unacked_count(world.broker_url) == 1, "the killed task must still be owned by the broker"
    # Ten minutes later: the message's visibility timeout and the claim's 120 s lease have passed.
    assert age_unacked(world.broker_url, VISIBILITY + 1) == 1
    assert expire_claims(world.rt.store, VISIBILITY + 1) == 1
    w2 = world.start_worker()
    wait_until(lambda: (world.rt.store.delivery(key) or {}).get("status") == "sent", 60,
               "the redelivered notify to finish", w2)
    return world, inc, key


def test_a_notify_killed_with_its_worker_is_redelivered_and_nothing_is_lost(killed_worker_mid_notify):
    world, inc, key = killed_worker_mid_notify
    assert len(top_level(world.slack, "#ops")) == 1, "the ops message was never in flight: exactly one"
    assert len(top_level(world.slack, "#marketing")) >= 1
    assert world.rt.store.delivery(key)["receipt"]["ops"]["ts"]
    assert unacked_count(world.broker_url) == 0
    assert "Traceback" not in world.workers[1].log()


def test_a_notify_killed_with_its_worker_never_posts_the_same_message_twice(killed_worker_mid_notify):
    world, inc, key = killed_worker_mid_notify
    assert len(top_level(world.slack, "#marketing")) == 1


@pytest.fixture(scope="module")
def killed_child_mid_notify(tmp_path_factory, redis_url):
    """Runs once for the tests that read it.  Only the pool child running the notify is SIGKILLed (the OOM killer's choice); the worker's
    main process survives, sees the loss and requeues the message at once."""
    with make_world(tmp_path_factory.mktemp("killed-child"), redis_url) as world:
        outcome = _kill_child_mid_notify(world)
        alive = outcome[3].proc.poll() is None
        world.stop()
        yield outcome + (alive,)


def _kill_child_mid_notify(world: World) -> tuple[World, dict, str, Worker]:
    w1 = world.start_worker()
    ready(world, w1)
    inc, key = _start_slow_notify(world)
    wait_until(lambda: (world.rt.store.delivery(key) or {}).get("status") == "claimed", 30, "the claim", w1)
    time.sleep(0.5)
    children = pool_children(w1.proc.pid)
    assert len(children) == 1, f"expected one pool child, found {children}"
    os.kill(children[0], signal.SIGKILL)
    wait_until(lambda: "WorkerLostError" in w1.log() or "exited with 'signal 9" in w1.log(), 20,
               "the worker to notice the lost child", w1)
    # The requeued message runs again on the respawned child, finds the dead attempt's claim and
    # retries once its lease (3 x the Slack timeout + 10 s) has run out; then it takes the claim over.
    wait_until(lambda: (world.rt.store.delivery(key) or {}).get("status") == "sent", 90,
               "the requeued notify to take over the claim and finish", w1)
    time.sleep(6)  # the fake Slack's delay, plus a margin for any second post
    return world, inc, key, w1


def test_a_requeued_notify_after_a_child_is_killed_does_not_post_twice(killed_child_mid_notify):
    world, inc, key, w1, alive = killed_child_mid_notify
    assert len(top_level(world.slack, "#marketing")) == 1
    assert len(top_level(world.slack, "#ops")) <= 1
    assert alive, "the worker's main process must survive a lost child"


def test_a_requeued_notify_after_a_child_is_killed_still_reaches_every_audience(killed_child_mid_notify):
    world, inc, key, w1, alive = killed_child_mid_notify
    assert len(top_level(world.slack, "#ops")) == 1, "the ops audience never heard of the incident"
    assert world.rt.store.delivery(key)["status"] == "sent"


# -- collect ------------------------------------------------------------------------------------------
def test_a_collect_killed_mid_poll_counts_every_post_exactly_once_after_restart(world):
    world.feed.route("/news.rss", items=world.items, delay=3.0)
    w1 = world.start_worker()
    ready(world, w1)
    world.sender.send_task("surgewatch.collect", args=("rss", "Acme"), queue="collect")
    # The feed server records a request only once it answers: wait for the task to be taken instead.
    wait_until(lambda: unacked_count(world.broker_url) == 1, 30, "the worker to take the collect", w1)
    time.sleep(1.0)  # inside the feed's 3 s delay
    w1.kill()
    assert SourceHealth.load(world.rt.store, "rss", "Acme").polls == 0, "the kill must land before the poll ended"
    assert world.rt.store.get_cursor("rss", "Acme") is None
    world.feed.route("/news.rss", items=world.items)  # the feed answers promptly again
    assert age_unacked(world.broker_url, VISIBILITY + 1) == 1
    w2 = world.start_worker()
    wait_until(lambda: SourceHealth.load(world.rt.store, "rss", "Acme").polls >= 1, 60, "the redelivered collect", w2)
    # A beat tick after the restart polls the same window again: the dedup absorbs it.
    world.sender.send_task("surgewatch.collect", args=("rss", "Acme"), queue="collect")
    wait_until(lambda: SourceHealth.load(world.rt.store, "rss", "Acme").polls >= 2, 30, "a second collect", w2)
    expected = sum(1 for i in world.items if i["title"].startswith("Acme Live"))
    counts = world.rt.store.counts("Acme", T0 - 7200, T0 + 7200)
    assert sum(counts.get("rss", {}).values()) == expected == 60
    cursor = world.rt.store.get_cursor("rss", "Acme")
    assert cursor and cursor["feeds"], "the cursor is saved once the ingest succeeded"
    assert unacked_count(world.broker_url) == 0


# -- evaluate -----------------------------------------------------------------------------------------
def _scored_up_to_now(world: World) -> None:
    # Every bucket up to now is already scored: the evaluate under test only runs the outbox.
    detector = SpikeDetector(world.rt.detector_params())
    world.rt.store.set_state("detector:Acme", {"next_at": math.floor(T0 / 60) * 60, "detector": detector.state()})


def _healthy(world: World) -> None:
    h = SourceHealth("rss", "Acme", status="ok", last_success=T0 - 60, polls=1)
    h.save(world.rt.store)


def test_a_transition_saved_by_an_evaluate_killed_before_dispatch_is_sent_once_by_the_next(world):
    # The state a crash between save_incident() and notify.apply_async() leaves: an incident whose
    # "opened" transition is saved but not dispatched.
    _healthy(world)
    inc = seed_incident(world.rt.store, "Acme", T0 - 120)
    _scored_up_to_now(world)
    w = world.start_worker()
    ready(world, w)
    for _ in range(2):  # the next tick re-dispatches from the outbox; the one after must not
        world.sender.send_task("surgewatch.evaluate", args=("Acme",), queue="detect")
        wait_until(lambda: all(t.get("dispatched") for t in world.rt.store.get_incident(inc["id"])["transitions"]),
                   30, "the outbox to dispatch", w)
        wait_until(lambda: (world.rt.store.delivery(delivery_key(inc["id"], 0, "slack")) or {}).get("status") == "sent",
                   30, "the notification", w)
    time.sleep(1.0)
    assert len(top_level(world.slack, "#ops")) == 1
    assert len(top_level(world.slack, "#marketing")) == 1


def test_a_transition_dispatched_twice_by_a_killed_evaluate_reaches_slack_once(world):
    # The state a crash between notify.apply_async() and mark_dispatched() leaves: the notify task is
    # already queued, and the transition is still "not dispatched", so the next evaluate queues it again.
    _healthy(world)
    inc = seed_incident(world.rt.store, "Acme", T0 - 120)
    _scored_up_to_now(world)
    world.sender.send_task("surgewatch.notify", args=(inc["id"], 0, "slack"), queue="notify")
    world.sender.send_task("surgewatch.evaluate", args=("Acme",), queue="detect")
    w = world.start_worker(concurrency=2)
    wait_until(lambda: all(t.get("dispatched") for t in world.rt.store.get_incident(inc["id"])["transitions"]),
               60, "the outbox to dispatch", w)
    wait_until(lambda: (world.rt.store.delivery(delivery_key(inc["id"], 0, "slack")) or {}).get("status") == "sent",
               30, "the notification", w)
    wait_until(lambda: unacked_count(world.broker_url) == 0, 30, "both notify tasks to finish", w)
    time.sleep(1.0)
    assert len(top_level(world.slack, "#ops")) == 1
    assert len(top_level(world.slack, "#marketing")) == 1
