"""How fast one process can ingest mentions: RedisStore.ingest (dedup + bucket counts + recent
posts, one EVALSHA per batch), next to what the same Redis does for ``redis-benchmark -t incr
-P 16`` in the same run.  The ratio is the figure that travels between machines; the absolute
rate is what the issue's target (>= 100,000 mentions/s per process) is about.  The headline
figure uses batches the way the pipeline makes them (one collect task = one brand x one source);
batches of 200 and batches mixing every brand and source are printed next to it, and SQLite
ingest throughput for reference.  Each figure is the median of --runs timed runs, each checked:
every mention must have been counted exactly once.

    python benchmarks/ingest.py [--url redis://127.0.0.1:6379/7] [--mentions 100000] [--batch 500]

If nothing answers at --url, a throwaway redis-server is started on a free port (and stopped).
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, too

import redis  # noqa: E402

from surgewatch.collectors.base import Mention  # noqa: E402
from surgewatch.store.errors import redact_url  # noqa: E402
from surgewatch.store.redis import RedisStore  # noqa: E402
from surgewatch.store.sqlite import SqliteStore  # noqa: E402

SOURCES = ("rss", "x", "reddit")
WORDS = ("Acme", "Live", "tickets", "on", "sale", "today", "queue", "site", "down?", "presale", "code",
         "🎟️", "wow", "finally", "tour", "dates", "announced", "#AcmeLive", "link", "below")


def make_mentions(n: int, brands: int, run: str, start: float, per_task: int = 0) -> list[Mention]:
    """n unique mentions over ``brands`` brands and three sources, about 40 per second of
    created_at (a surge), slightly out of order the way polled sources deliver them.

    ``per_task``: each run of that many mentions has one brand and one source, the way one
    collect task (one brand x one source) hands its batch to ingest; 0 mixes every brand and
    source in every batch (the harder case for the store: a dozen groups per batch)."""
    texts = [" ".join(WORDS[(v * 7 + k * 3) % len(WORDS)] for k in range(12 + v % 9)) for v in range(97)]
    out = []
    for i in range(n):
        g = i // per_task if per_task else i
        out.append(Mention(
            source=SOURCES[(g // brands) % 3 if per_task else g % 3], id=f"{run}-{i}",
            brand=f"Brand {g % brands} {run}",
            text=f"{texts[i % 97]} #{i}",
            created_at=datetime.fromtimestamp(start + i / 40 + (i % 7) * 0.3, timezone.utc),
            url=f"https://news.example/{run}/{i}", author=f"user{i % 997}", likes=i % 50,
            reposts=i % 7, reach=None if i % 2 else 1000 + i, lang="en"))
    return out


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def start_redis() -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("no Redis answers at --url and redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/15"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline:
            server.kill()
            sys.exit(f"started {binary} on port {port} but it never answered")
        time.sleep(0.05)
    return server, url


def time_ingest(store, mentions: list[Mention], batch: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) to ingest ``mentions`` in batches of ``batch``."""
    batches = [mentions[i:i + batch] for i in range(0, len(mentions), batch)]
    cpu, started = time.process_time(), time.perf_counter()
    for b in batches:
        store.ingest(b)
    return time.perf_counter() - started, time.process_time() - cpu


def counted(store, brands: int, run: str, start: float) -> int:
    return sum(n for b in range(brands)
               for series in store.counts(f"Brand {b} {run}", start - 86400, start + 86400).values()
               for n in series.values())


def script_usec(client: redis.Redis) -> float:
    """Total microseconds Redis has spent in EVALSHA (all clients: approximate on a shared server)."""
    return float(client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


def redis_incr_p16(url: str, requests: int) -> float | None:
    """Requests per second of ``redis-benchmark -t incr -P 16 -q -n <requests>`` on the same server."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    parts = urlsplit(url)
    cmd = [binary, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379),
           "-t", "incr", "-P", "16", "-q", "-n", str(requests)]
    db = (parts.path or "/0").strip("/") or "0"
    cmd += ["--dbnum", db]
    if parts.scheme == "rediss":
        cmd.append("--tls")
    env = dict(os.environ)
    if parts.password:
        cmd += ["--no-auth-warning", "-a", parts.password]  # argv, never printed
        if parts.username:
            cmd += ["--user", parts.username]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    # -q prints progress lines separated by \r, then "INCR: 612745.06 requests per second, p50=..."
    found = re.findall(r"INCR: ([\d.]+) requests per second", out.stdout)
    if not found:
        print(f"redis-benchmark gave no figure: {out.stdout[-200:]!r} {out.stderr[-200:]!r}", file=sys.stderr)
        return None
    with redis.Redis.from_url(url) as client:
        client.delete("counter:__rand_int__")  # the one key redis-benchmark's INCR test writes
    return float(found[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="redis://127.0.0.1:6379/7")
    ap.add_argument("--mentions", type=int, default=100_000, help="mentions per timed Redis run")
    ap.add_argument("--batch", type=int, default=500, help="mentions per ingest call (200-500 typical)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per scenario; the median is reported")
    ap.add_argument("--brands", type=int, default=10)
    ap.add_argument("--sqlite-mentions", type=int, default=50_000, help="0 skips the SQLite figure")
    ap.add_argument("--incr-requests", type=int, default=1_000_000)
    args = ap.parse_args()

    server = None
    url = args.url
    if not redis_answers(url):
        print(f"nothing answers at {redact_url(url)}: starting a throwaway redis-server")
        server, url = start_redis()
    run = uuid.uuid4().hex[:8]
    prefix = f"swbench:{run}:"
    store = RedisStore(url, prefix=prefix)
    try:
        info = redis.Redis.from_url(url).info("server")
        print(f"Redis {info['redis_version']} at {redact_url(url)}; Python {platform.python_version()}; "
              f"{os.cpu_count()} CPUs; batches of {args.batch}, {args.brands} brands, {len(SOURCES)} sources")
        start = time.time() - 3600
        store.ingest(make_mentions(2000, args.brands, f"{run}w", start))  # warm up: script, connection

        client = redis.Redis.from_url(url)
        exact = True
        # (label, batch size, one brand x source per batch?) -> median mentions/s, best, costs
        scenarios = [("per collect task", args.batch, True), ("per collect task", 200, True),
                     ("mixed brands and sources", args.batch, False)]
        results: dict[tuple[str, int, bool], tuple[float, float, float, float]] = {}
        for label, batch, per_task in dict.fromkeys(scenarios):
            rates, py_us, redis_us = [], [], []
            for r in range(args.runs):
                tag = f"{run}b{batch}{'t' if per_task else 'm'}r{r}"
                mentions = make_mentions(args.mentions, args.brands, tag, start, batch if per_task else 0)
                before = script_usec(client)
                wall, cpu = time_ingest(store, mentions, batch)
                redis_us.append((script_usec(client) - before) / len(mentions))
                # a fast wrong answer is no figure: every mention must be counted exactly once
                got = counted(store, args.brands, tag, start)
                if got != len(mentions):
                    exact = False
                    print(f"run {tag}: counted {got:,} of {len(mentions):,} mentions (was the database "
                          "flushed by another process during the run?)")
                py_us.append(cpu * 1e6 / len(mentions))
                rates.append(len(mentions) / wall)
            res = results[(label, batch, per_task)] = (statistics.median(rates), max(rates),
                                                      statistics.median(py_us), statistics.median(redis_us))
            print(f"RedisStore.ingest, batches of {batch}, {label}: {res[0]:>10,.0f} mentions/s (median of "
                  f"{args.runs}: {', '.join(f'{x:,.0f}' for x in rates)}); per mention {res[2]:.2f} us "
                  f"Python CPU + {res[3]:.2f} us in the Redis script")
        main_figure = results[scenarios[0]]
        mentions_per_s = main_figure[0]

        print(f"every mention counted exactly once: {'yes' if exact else 'NO'}")

        incr = redis_incr_p16(url, args.incr_requests)
        if incr is None:
            print("redis-benchmark -t incr -P 16: not available")
        else:
            print(f"redis-benchmark -t incr -P 16 -n {args.incr_requests}: {incr:>12,.0f} requests/s")
        ratio = mentions_per_s / incr if incr else None
        if ratio is not None:
            print(f"ratio mentions/s : pipelined INCR/s = {ratio:.3f}")

        sqlite_rate = None
        if args.sqlite_mentions:
            with tempfile.TemporaryDirectory() as tmp:
                lite = SqliteStore(os.path.join(tmp, "bench.db"))
                mentions = make_mentions(args.sqlite_mentions, args.brands, f"{run}s", start)
                sqlite_rate = len(mentions) / time_ingest(lite, mentions, args.batch)[0]
                lite.close()
            print(f"SqliteStore.ingest, batches of {args.batch}: {sqlite_rate:>12,.0f} mentions/s (reference)")
    finally:
        store.close()
        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
        if server is not None:
            server.terminate()
            server.wait(timeout=10)

    print(json.dumps({
        "mentions_per_s": round(mentions_per_s),
        "redis_incr_p16_per_s": None if incr is None else round(incr),
        "ratio": None if ratio is None else round(ratio, 4),
        "batch": args.batch,
        "mentions_per_s_best": round(main_figure[1]),
        "mentions_per_s_batch_200": round(results[scenarios[1]][0]),
        "mentions_per_s_mixed_batches": round(results[scenarios[2]][0]),
        "python_cpu_us_per_mention": round(main_figure[2], 2),
        "redis_script_us_per_mention": round(main_figure[3], 2),
        "sqlite_mentions_per_s": None if sqlite_rate is None else round(sqlite_rate),
        "counted_exactly_once": exact,
        "target_met": mentions_per_s >= 100_000,
        "redis_started_here": server is not None,
    }))


if __name__ == "__main__":
    main()
