"""``pipeline.evaluate_many``: a chunk of brands scored with a fixed number of store round trips,
with the same verdicts, incidents and outbox as scoring each brand on its own.  Runs on both stores."""
from __future__ import annotations

import math
import time
import uuid

import pytest
import redis.connection

from surgewatch import pipeline
from surgewatch.config import parse_settings
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime
from surgewatch.store.redis import RedisStore

T0 = 1_795_000_000 // 86400 * 86400 + 8 * 3600  # 08:00 UTC on a fixed day
HOURS = 4  # 240 buckets: one tick scores them all (pipeline.MAX_TICK_BUCKETS)


def settings_for(brands: list[str]):
    return parse_settings({
        "brands": [{"name": b, "query": b} for b in brands],
        "sources": {"rss": {"interval": 60, "feeds": ["https://news.example/a.rss"]},
                    "hackernews": {"interval": 60}},
        "channels": {"console": {}},
        "detector": {"bucket_seconds": 60, "warm_up_minutes": 60, "evaluation_lag_seconds": 0,
                     "resolve_after_quiet_buckets": 3},
    })


def seed(store, brand: str, *, surge_at: float | None, level: int, hours: int = HOURS) -> None:
    """``hours`` of per-minute counts from two sources, ending at T0; a 12x surge from ``surge_at``."""
    for source, share in (("rss", 1), ("hackernews", 2)):
        points = []
        for k in range(hours * 60):
            t = T0 - hours * 3600 + k * 60
            n = level * share + (k * 7 + share) % 3  # steady with a little wobble
            if surge_at is not None and t >= surge_at:
                n *= 12
            points.append((t, n))
        store.set_volume(brand, source, points)


def comparable(outcome: pipeline.EvaluateOutcome) -> tuple:
    return ([(v.at, v.observed, round(v.expected, 9), v.severity.value, round(v.score, 9)) for v in outcome.verdicts],
            [(t["event"], t["from"], t["to"], t["at"]) for t in outcome.transitions],
            [(no, channel) for _, no, channel in outcome.dispatch])


def test_a_chunk_scores_every_brand_exactly_as_one_by_one(make_store):
    chunk = [f"A{i}" for i in range(6)]
    single = [f"B{i}" for i in range(6)]
    store = make_store()
    rt = Runtime(settings_for(chunk + single), store=store)
    for i, (a, b) in enumerate(zip(chunk, single)):
        surge_at = T0 - 20 * 60 if i % 3 == 0 else None  # brands 0 and 3 surge
        seed(store, a, surge_at=surge_at, level=1 + i)
        seed(store, b, surge_at=surge_at, level=1 + i)
    # Two ticks: the first starts every detector from its brand's first count, the second scores on.
    for now in (T0 - 30 * 60, T0):
        together = pipeline.evaluate_many(rt, chunk, now=now)
        apart = [pipeline.evaluate(rt, b, now=now) for b in single]
        assert [o.brand for o in together] == chunk
        for a, b in zip(together, apart):
            assert comparable(a) == comparable(b)
            assert not a.busy
        assert sum(len(o.verdicts) for o in together) > 0
    # the surges opened incidents, the steady brands none
    assert {i["brand"] for i in store.list_incidents()} == {"A0", "A3", "B0", "B3"}
    for a, b in zip(chunk, single):
        state_a, state_b = store.get_states([f"detector:{a}", f"detector:{b}"])
        assert state_a == state_b
        assert store.get_state(f"verdict:{a}") == store.get_state(f"verdict:{b}")


def test_a_brand_locked_by_another_worker_is_busy_and_the_rest_of_the_chunk_is_scored(make_store):
    brands = ["A", "B", "C"]
    store = make_store()
    rt = Runtime(settings_for(brands), store=store)
    for b in brands:
        seed(store, b, surge_at=None, level=2)
    assert store.claim("lock:evaluate:B", 60.0, time.time())  # another worker holds B
    out = pipeline.evaluate_many(rt, ["a", "B", "C", "A"], now=T0)  # names match case-insensitively, once each
    assert [o.brand for o in out] == brands
    assert [o.busy for o in out] == [False, True, False]
    assert out[0].verdicts and out[2].verdicts and not out[1].verdicts
    # the chunk gave back its own locks and left the other worker's alone
    assert store.delivery("lock:evaluate:A") is None and store.delivery("lock:evaluate:C") is None
    assert store.delivery("lock:evaluate:B")["status"] == "claimed"


def test_a_source_that_has_not_polled_past_a_bucket_holds_back_only_its_own_brand(make_store):
    store = make_store()
    rt = Runtime(settings_for(["A", "B"]), store=store)
    for b in ("A", "B"):
        seed(store, b, surge_at=None, level=2)
        for source in ("rss", "hackernews"):
            SourceHealth(source, b, status="ok", last_success=T0, polls=1).save(store)
    # B's Hacker News poll last succeeded two minutes ago (within three intervals: not stalled)
    SourceHealth("hackernews", "B", status="ok", last_success=T0 - 120, polls=1).save(store)
    a, b = pipeline.evaluate_many(rt, ["A", "B"], now=T0)
    assert a.verdicts[-1].at == T0 - 60
    assert b.verdicts[-1].at == T0 - 180  # the last bucket closed before B's last Hacker News poll
    assert store.get_state("detector:B")["next_at"] == T0 - 120
    # once it is stalled (no success for three intervals) it no longer holds B back
    c, d = pipeline.evaluate_many(rt, ["A", "B"], now=T0 + 120)
    assert d.verdicts[-1].at == T0 - 60  # caught up to its RSS poll at T0
    assert not c.verdicts  # A: already scored up to T0, where both its sources last polled


@pytest.fixture
def redis_store(redis_url):
    store = RedisStore(redis_url, prefix=f"swtest:{uuid.uuid4().hex[:12]}:")
    yield store
    keys = list(store._redis.scan_iter(match=f"{store.prefix}*", count=1000))
    if keys:
        store._redis.delete(*keys)
    store.close()


@pytest.mark.redis
def test_a_chunk_costs_the_same_round_trips_whatever_its_size(redis_store, monkeypatch):
    store = redis_store
    brands = [f"brand {i}" for i in range(60)]
    rt = Runtime(settings_for(brands), store=store)
    for i, b in enumerate(brands):
        seed(store, b, surge_at=None, level=1 + i % 5)
    pipeline.evaluate_many(rt, brands, now=T0 - 60)  # start every detector (reads a day of counts)
    sent: list[int] = []
    real = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(1)
        return real(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    small = pipeline.evaluate_many(rt, brands[:5], now=T0)
    small_trips = len(sent)
    sent.clear()
    large = pipeline.evaluate_many(rt, brands[5:], now=T0)
    assert all(len(o.verdicts) == 1 for o in small + large)
    assert len(sent) == small_trips, "a chunk's round trips must not grow with its size"
    assert small_trips <= 10
    # a tick with no new bucket (ticks run several times per bucket) reads no detector state
    sent.clear()
    quiet = pipeline.evaluate_many(rt, brands, now=T0 + 30)
    assert not any(o.verdicts for o in quiet) and not any(o.busy for o in quiet)
    assert len(sent) == 4  # locks, small states, open incidents, unlock
    assert math.isfinite(large[-1].verdicts[-1].expected)


def test_a_brand_far_behind_catches_up_a_bounded_stretch_per_tick_and_ends_where_one_pass_would(make_store):
    store = make_store()
    rt = Runtime(settings_for(["Late", "Twin", "Third"]), store=store)
    hours = 10
    for b in ("Late", "Twin"):
        seed(store, b, surge_at=T0 - 40 * 60, level=3, hours=hours)
    start = T0 - hours * 3600
    scored, ticks = 0, 0
    while True:  # a few ticks at the same moment, each at most MAX_TICK_BUCKETS buckets
        (late,) = pipeline.evaluate_many(rt, ["Late"], now=T0)
        if not late.verdicts:
            break
        assert len(late.verdicts) <= pipeline.MAX_TICK_BUCKETS
        assert late.verdicts[0].at == start + scored * 60  # each tick goes on where the last stopped
        scored += len(late.verdicts)
        ticks += 1
    assert scored == hours * 60 and ticks == math.ceil(hours * 60 / pipeline.MAX_TICK_BUCKETS)
    # the same detector state and incidents as a brand scored in one pass
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "MAX_TICK_BUCKETS", 10**6)
        (twin,) = pipeline.evaluate_many(rt, ["Twin"], now=T0)
    assert len(twin.verdicts) == hours * 60
    # evaluate_until_current does the ticks in one call
    seed(store, "Third", surge_at=T0 - 40 * 60, level=3, hours=hours)
    (third,) = pipeline.evaluate_until_current(rt, ["Third"], now=T0)
    assert [v.at for v in third.verdicts] == [v.at for v in twin.verdicts]
    assert [t["event"] for t in third.transitions] == [t["event"] for t in twin.transitions]
    assert store.get_state("detector:Late")["detector"] == store.get_state("detector:Twin")["detector"]
    assert [(i["opened_at"], i["severity"]) for i in store.list_incidents("Late")] == \
        [(i["opened_at"], i["severity"]) for i in store.list_incidents("Twin")]


def test_a_name_the_config_no_longer_has_is_skipped_and_the_rest_of_the_chunk_is_scored(make_store, caplog):
    store = make_store()
    rt = Runtime(settings_for(["A", "B"]), store=store)
    for b in ("A", "B"):
        seed(store, b, surge_at=None, level=2)
    with caplog.at_level("WARNING", logger="surgewatch.pipeline"):
        out = pipeline.evaluate_many(rt, ["A", "Gone <!channel>", "B"], now=T0)
    assert [o.brand for o in out] == ["A", "B"] and all(o.verdicts for o in out)
    assert any("is not a brand of the config" in r.getMessage() for r in caplog.records)
    with pytest.raises(KeyError, match="no brand named"):
        pipeline.evaluate(rt, "Gone", now=T0)  # one brand asked for by name still says so
