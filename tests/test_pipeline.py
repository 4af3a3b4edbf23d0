"""collect -> evaluate -> notify as plain function calls on the embedded store (no Celery):
cursors, outbox, exactly-once claims and clear failures."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from surgewatch import pipeline
from surgewatch.demo.feedserver import FeedServer
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime
from tests.support import write_config

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc).timestamp()


def feed_items(now: float, surge_from: float | None = None) -> list[dict]:
    items = []
    for minute in range(-20, int((now - T0) // 60) + 1):
        start = T0 + minute * 60
        rate = 30 if surge_from is not None and start >= surge_from else 2
        for k in range(rate):
            t = start + k * 60 / rate + 1
            if now - 20 * 60 < t <= now:
                items.append({"id": f"{minute}-{k}", "title": f"Acme Live news {minute}-{k}",
                              "link": f"https://n.example/{minute}/{k}",
                              "published": datetime.fromtimestamp(t, timezone.utc)})
    return list(reversed(items))


@pytest.fixture
def env(tmp_path):
    state = {"now": T0, "surge_from": None}
    with FeedServer(items_at=lambda p: feed_items(state["now"], state["surge_from"]) if p == "/f.rss" else None) as feed:
        _, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": '"Acme Live"'}],
            "sources": {"rss": {"interval": 300, "feeds": [feed.url("/f.rss"), feed.url("/missing.rss")]}},
            "channels": {"console": {}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"},
            "detector": {"warm_up_minutes": 30, "evaluation_lag_seconds": 0, "resolve_after_quiet_buckets": 3},
        })
        yield state, Runtime(settings), feed


def test_a_poll_counts_matches_saves_the_cursor_and_notes_the_bad_feed(env):
    state, rt, feed = env
    out = pipeline.collect(rt, "rss", "Acme", now=T0)
    assert out.status == "ok" and out.new == 40  # 20 minutes x 2 per minute
    assert rt.store.get_cursor("rss", "Acme") is not None
    health = SourceHealth.load(rt.store, "rss", "Acme")
    assert health.status == "degraded" and any("/missing.rss" in n for n in health.notes)
    again = pipeline.collect(rt, "rss", "Acme", now=T0)
    assert again.new == 0  # conditional GET or dedup: nothing is counted twice


def test_a_surge_opens_one_incident_and_the_outbox_dispatches_each_transition_once(env, capsys):
    state, rt, feed = env
    opened = None
    for k in range(0, 20):
        state["now"] = T0 + k * 300
        if k == 10:
            state["surge_from"] = state["now"] - 300
        pipeline.collect(rt, "rss", "Acme", now=state["now"])
        outcome = pipeline.evaluate(rt, "Acme", now=state["now"])
        if k < 9:
            assert not outcome.transitions, f"alert before the surge at step {k}"
        for incident_id, no, channel in outcome.dispatch:
            first = pipeline.notify(rt, incident_id, no, channel)
            second = pipeline.notify(rt, incident_id, no, channel)  # a redelivered task
            assert first.status == "sent" and second.status == "duplicate"
        pipeline.mark_dispatched(rt, outcome.dispatch)
        if outcome.transitions and opened is None:
            opened = outcome.transitions[0]
    assert opened is not None and opened["event"] == "opened"
    assert len(rt.store.list_incidents("Acme")) == 1
    printed = capsys.readouterr().out
    assert printed.count("Acme") >= 1 and "opened" in printed.lower()
    # Re-running evaluate at the same time re-dispatches nothing.
    assert pipeline.evaluate(rt, "Acme", now=state["now"]).dispatch == []


def test_a_permanent_source_error_disables_the_source_once(tmp_path):
    with FeedServer() as feed:
        feed.route("/gone.rss", status=410)
        _, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "sources": {"rss": {"feeds": [feed.url("/gone.rss")]}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"},
        })
        rt = Runtime(settings)
        first = pipeline.collect(rt, "rss", "Acme", now=T0)
        assert first.status == "disabled" and "/gone.rss" in first.message
        assert pipeline.collect(rt, "rss", "Acme", now=T0 + 60).status == "disabled"
        assert len(feed.requests) == 1  # a disabled source is not polled again
        assert rt.store.get_cursor("rss", "Acme") is None


def test_a_transient_error_backs_off_and_keeps_the_cursor(tmp_path):
    with FeedServer() as feed:
        feed.route("/busy.rss", status=503, retry_after=120)
        _, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "sources": {"rss": {"feeds": [feed.url("/busy.rss")]}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"},
        })
        rt = Runtime(settings)
        rt.store.set_cursor("rss", "Acme", {"feeds": {}})
        out = pipeline.collect(rt, "rss", "Acme", now=T0)
        assert out.status == "failed" and "503" in out.message
        assert pipeline.collect(rt, "rss", "Acme", now=T0 + 60).status == "skipped"  # Retry-After honoured
        assert rt.store.get_cursor("rss", "Acme") == {"feeds": {}}
        assert SourceHealth.load(rt.store, "rss", "Acme").backoff_until >= T0 + 120


def test_old_and_future_mentions_are_skipped_or_clamped():
    from surgewatch.collectors.base import Mention

    now = T0
    old = Mention("rss", "a", "Acme", "x", datetime.fromtimestamp(now - 3 * 86400, timezone.utc))
    future = Mention("rss", "b", "Acme", "x", datetime.fromtimestamp(now + 86400, timezone.utc))
    fine = Mention("rss", "c", "Acme", "x", datetime.fromtimestamp(now - 60, timezone.utc))
    kept, skipped = pipeline.admit([old, future, fine], now)
    assert [m.id for m in kept] == ["b", "c"] and kept[0].timestamp == now
    assert skipped[0][0].id == "a" and "too old" in skipped[0][1]


def test_a_source_failing_past_its_alert_time_tells_ops_once_and_once_when_it_recovers(tmp_path, capsys):
    with FeedServer() as feed:
        route = feed.route("/f.rss", status=503)
        _, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "sources": {"rss": {"feeds": [feed.url("/f.rss")], "alert_after_minutes": 10}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"},
        })
        rt = Runtime(settings)
        said = []
        for minute in range(0, 30, 2):
            h = SourceHealth.load(rt.store, "rss", "Acme")
            h.backoff_until = None  # poll every time; the backoff has its own test
            h.save(rt.store)
            pipeline.collect(rt, "rss", "Acme", now=T0 + minute * 60)
            said += [line for line in capsys.readouterr().out.splitlines() if " OPS " in line]
        assert len(said) == 1 and "rss for Acme has been failing since" in said[0] and "503" in said[0]
        route.status = 200
        for minute in range(30, 36, 2):
            pipeline.collect(rt, "rss", "Acme", now=T0 + minute * 60 + 3600)
            said += [line for line in capsys.readouterr().out.splitlines() if " OPS " in line]
        assert len(said) == 2 and "has recovered" in said[1]


def test_x_and_reddit_collect_through_the_same_pipeline_from_config(tmp_path, monkeypatch):
    """The card's sources built from config (credentials from the environment), one collect each
    through pipeline.collect: posts counted once, X's volume stored, cursors saved."""
    from tests.fakes.reddit_server import FakeReddit
    from tests.fakes.x_server import FakeX

    now = time.time()
    with FakeX(bearer_token="x-bearer-0123456789") as x, FakeReddit(client_secret="r-secret-0123456789") as reddit:
        for k in range(3):
            x.add_tweet(f"Acme Live is trending {k}", created_at=now - 60 * k, followers=100 * k)
        x.add_tweet("apple pie with acme jam", created_at=now)  # the query excludes pie: not counted
        reddit.add_post("Acme Live tickets thread", created_utc=now - 30)
        monkeypatch.setenv("X_BEARER_TOKEN", "x-bearer-0123456789")
        monkeypatch.setenv("REDDIT_CLIENT_ID", "test-client")
        monkeypatch.setenv("REDDIT_CLIENT_SECRET", "r-secret-0123456789")
        _, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme -pie"}],
            "sources": {"x": {"api_url": x.url}, "reddit": {"api_url": reddit.url, "auth_url": reddit.url}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        rt = Runtime(settings)
        out_x = pipeline.collect(rt, "x", "Acme", now=now)
        out_r = pipeline.collect(rt, "reddit", "Acme", now=now)
        assert (out_x.status, out_x.new) == ("ok", 3) and (out_r.status, out_r.new) == ("ok", 1)
        assert rt.store.get_cursor("x", "Acme") and rt.store.get_cursor("reddit", "Acme")
        again = pipeline.collect(rt, "reddit", "Acme", now=now + 60)
        assert again.new == 0  # the cursor and the dedup: nothing counted twice
        counts = rt.store.counts("Acme", now - 3600, now + 60)
        assert set(counts) == {"x", "reddit"} and sum(counts["reddit"].values()) == 1
        assert SourceHealth.load(rt.store, "x", "Acme").requests >= 2  # counts + search: the spend is visible


def test_x_buckets_hold_its_counts_not_its_sampled_posts_and_wait_for_them(tmp_path, monkeypatch):
    """X's posts are a sample and its counts endpoint the census: a bucket holds the census only,
    and is scored once the counts covering it are in (every 5 minutes), not after any poll."""
    from tests.fakes.x_server import FakeX

    t0 = 1_795_000_000 // 3600 * 3600 + 20  # 20 s into a minute
    clock = {"now": t0}
    with FakeX(bearer_token="x-bearer-0123456789", clock=lambda: clock["now"]) as x:
        for k in range(30):
            x.add_tweet(f"Acme Live news {k}", created_at=t0 - 620 + 20 * k)  # the last 40 s ago
        monkeypatch.setenv("X_BEARER_TOKEN", "x-bearer-0123456789")
        _, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "sources": {"x": {"api_url": x.url, "interval": 60, "max_results": 10}},  # busy: posts every poll
            "detector": {"evaluation_lag_seconds": 0},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        rt = Runtime(settings)
        rt.collector("x").now = lambda: clock["now"]  # the collector's clock: the test's
        assert pipeline.collect(rt, "x", "Acme", now=t0).status == "ok"
        census = rt.store.counts("Acme", t0 - 3600, t0 + 3600)["x"]
        assert sum(census.values()) == 30  # the counts endpoint's minutes, each post once
        horizon = rt.scoring_horizon("Acme", t0)
        assert horizon == t0 - 20 - 60  # counts end 30 s before the request: the minute before is whole
        # a minute later: new posts are read (a sample), the counts are not due yet
        for k in range(5):
            x.add_tweet(f"Acme Live later {k}", created_at=t0 + 5 + k)
        clock["now"] = t0 + 60
        out = pipeline.collect(rt, "x", "Acme", now=t0 + 60)
        assert out.status == "ok" and out.new == 5  # kept, deduped ...
        assert rt.store.counts("Acme", t0 - 3600, t0 + 3600)["x"] == census  # ... and not counted
        assert len(rt.store.recent("Acme", 50)) == 35
        assert rt.scoring_horizon("Acme", t0 + 60) == horizon  # scoring waits for the census
        # after five minutes the counts come again and take the new posts in, once each
        clock["now"] = t0 + 300
        pipeline.collect(rt, "x", "Acme", now=t0 + 300)
        assert sum(rt.store.counts("Acme", t0 - 3600, t0 + 3600)["x"].values()) == 35
        assert rt.scoring_horizon("Acme", t0 + 300) == t0 + 300 - 20 - 60
        # with no counts for three of their intervals, X no longer holds the brand back
        assert rt.scoring_horizon("Acme", t0 + 300 + 3 * 300 + 1) == t0 + 300 + 3 * 300 + 1


def test_a_delivery_claimed_by_a_live_attempt_is_looked_at_again_soon_not_after_the_whole_lease(tmp_path):
    from surgewatch.pipeline import NotReady, delivery_key
    from tests.support_faults import seed_incident

    _, settings = write_config(tmp_path, {
        "brands": [{"name": "Acme", "query": "acme"}], "channels": {"console": {}},
        "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
    rt = Runtime(settings)
    inc = seed_incident(rt.store, "Acme", T0)
    key = delivery_key(inc["id"], 0, "console")
    lease = rt.notify_lease("console")
    assert rt.store.claim(key, lease, time.time())  # another worker is sending it right now
    with pytest.raises(NotReady, match="claimed by another attempt") as caught:
        pipeline.notify(rt, inc["id"], 0, "console")
    assert caught.value.retry_in == pytest.approx(max(1.0, lease / 8), abs=0.01)
    rt.store.mark_sent(key, {})  # the other attempt finished: the retry finds it sent
    assert pipeline.notify(rt, inc["id"], 0, "console").status == "duplicate"
