"""Evaluation cost: one evaluate tick over 1,000 brands x 3 sources by one process on Redis.

Seeds a day of per-minute counts for every brand and source (``store.set_volume``: SET, so a rerun is
idempotent), warms one detector on that day and gives every brand a copy of its state (warming a
thousand detectors one by one would measure the detector, not the tick), then times one tick the
way the beat schedule runs it: ``pipeline.evaluate_many(rt, chunk)`` for every chunk of
``EVALUATE_CHUNK`` brands, each brand scoring the one bucket that just completed.
The issue's target: under 1 second per tick for 1,000 brands.

    python benchmarks/evaluate.py [--url redis://127.0.0.1:6379/8] [--brands 1000]

The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from surgewatch.detector.spike import SpikeDetector  # noqa: E402
from surgewatch import pipeline  # noqa: E402
from surgewatch.worker.settings import EVALUATE_CHUNK  # noqa: E402
from surgewatch.config import parse_settings  # noqa: E402
from surgewatch.pipeline import Runtime  # noqa: E402

SOURCES = ("rss", "x", "reddit")
BUCKET = 60
LEVELS = 20  # brands' baseline rates: 1 to 20 mentions a minute per source
DAY = 86400


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="a Redis database to FLUSH and use (default: a throwaway redis-server)")
    ap.add_argument("--brands", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=EVALUATE_CHUNK, help="brands per evaluate task (default: %(default)s)")
    ap.add_argument("--seed-minutes", type=int, default=120)
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of one tick")
    ap.add_argument("--ticks", type=int, default=3, help="timed ticks (one bucket each); the median is reported")
    args = ap.parse_args()
    if args.url is None:
        from tests.support_faults import RedisServer

        with RedisServer() as server:
            run(args, server.url(0))
    else:
        run(args, args.url)


def run(args: argparse.Namespace, url: str) -> None:
    redis.Redis.from_url(url).flushdb()
    brands = [f"Brand{i:04d}" for i in range(args.brands)]
    settings = parse_settings({
        "brands": [{"name": b, "query": f'"{b}"'} for b in brands],
        "sources": {"rss": {"feeds": ["https://news.example/a.rss"]}, "hackernews": {}, "bluesky": {}},
        "channels": {"console": {}},
        "store": {"url": url},
        "detector": {"bucket_seconds": BUCKET, "evaluation_lag_seconds": 0, "warm_up_minutes": 60},
    })
    rt = Runtime(settings)
    store = rt.store
    now = math.floor(time.time() / BUCKET) * BUCKET
    start = now - DAY
    rng = random.Random(1)

    t = time.perf_counter()
    # Brands run at LEVELS different rates.  A day for the first brand of each rate, whose detector is
    # warmed; the last --seed-minutes for the others (seeding a full day for 1,000 brands takes over
    # a minute and the tick reads only the newest buckets).
    for i, b in enumerate(brands):
        base = 1 + i % LEVELS
        minutes = DAY // BUCKET if i < LEVELS else args.seed_minutes
        buckets = [now - k * BUCKET for k in range(minutes, -args.ticks, -1)]
        for s in SOURCES:
            store.set_volume(b, s, [(ts, max(0, int(rng.gauss(base, math.sqrt(base))))) for ts in buckets])
    seed_s = time.perf_counter() - t

    t = time.perf_counter()
    states = []
    for level in range(min(LEVELS, len(brands))):
        detector = SpikeDetector(rt.detector_params())
        counts = store.counts(brands[level], start, now)
        for k in range(DAY // BUCKET):
            ts = start + k * BUCKET
            by = {s: float(counts.get(s, {}).get(ts, 0)) for s in SOURCES}
            detector.update(ts, sum(by.values()), by)
        states.append(detector.state())
    store.set_states({f"detector:{b}": {"next_at": now, "detector": states[i % LEVELS]} for i, b in enumerate(brands)})
    state = states[0]
    warm_s = time.perf_counter() - t
    state_bytes = len(json.dumps({"next_at": now, "detector": state}))

    chunks = [brands[i:i + args.chunk] for i in range(0, len(brands), args.chunk)]
    ticks = []
    for k in range(args.ticks):
        tick_now = now + (k + 1) * BUCKET
        t = time.perf_counter()
        scored = sum(len(o.verdicts) for chunk in chunks for o in pipeline.evaluate_many(rt, chunk, now=tick_now))
        ticks.append(time.perf_counter() - t)
        assert scored == len(brands), f"tick {k}: scored {scored} buckets for {len(brands)} brands"
    tick = statistics.median(ticks)
    # Beat runs several ticks per bucket: the ones between two bucket ends find nothing to score.
    t = time.perf_counter()
    idle = sum(len(o.verdicts) for chunk in chunks for o in pipeline.evaluate_many(rt, chunk, now=tick_now + BUCKET / 2))
    quiet_tick = time.perf_counter() - t
    assert idle == 0, f"a tick between bucket ends scored {idle} buckets"
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for chunk in chunks:
            pipeline.evaluate_many(rt, chunk, now=now + (args.ticks + 1) * BUCKET)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
    r = redis.Redis.from_url(url)
    figures = {
        "brands": len(brands), "sources": len(SOURCES), "chunk": args.chunk, "tick_s": round(tick, 3),
        "ticks_s": [round(x, 3) for x in ticks], "quiet_tick_s": round(quiet_tick, 3), "per_brand_ms": round(tick / len(brands) * 1000, 3),
        "target_s": 1.0, "meets_target": tick < 1.0, "seed_s": round(seed_s, 1), "warm_s": round(warm_s, 1),
        "detector_state_bytes": state_bytes, "redis_keys": r.dbsize(),
        "open_incidents": len(store.open_incidents(brands)),
        "redis_used_memory_bytes": r.info("memory")["used_memory"],
    }
    print(f"seeded counts for {len(brands)} brands x {len(SOURCES)} sources in {seed_s:.1f}s; "
          f"warmed a detector in {warm_s:.1f}s ({state_bytes} bytes of state per brand)")
    print(f"one evaluate tick over {len(brands)} brands: median {tick:.3f}s of {ticks} "
          f"({figures['per_brand_ms']} ms per brand); target < 1 s: {'met' if tick < 1 else 'NOT met'}")
    print(f"a tick between two bucket ends (nothing to score): {quiet_tick:.3f}s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
