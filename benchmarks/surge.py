"""A 25x surge for 10 (simulated) minutes through real Celery workers on Redis: does the collect queue
drain within one bucket interval after every tick, how many tasks a second do two workers run, and
how much Redis memory does one tracked brand cost?

The world, all local:

* a throwaway ``redis-server`` on a free port (broker in db 0, store in db 1; the shared 6379 is
  never touched);
* one feed per brand, served by a local feed server that answers the Google News search URL
  (``/rss/search?q=<brand query>``): the ``google_news`` source is the RSS machinery with one feed
  URL per brand, which is what a per-brand feed needs (``sources.rss.feeds`` is one list that
  every brand polls).  A feed lists its newest 100 items of the last 20 minutes, as Google News
  caps its answer at 100;
* a baseline of ``--baseline`` mentions a minute per brand, evenly spaced, then ``--factor`` x that
  for ``--surge-minutes`` (every brand at once: the worst case for the collect queue);
* ``--workers`` ``surgewatch worker`` processes with ``--concurrency`` each, every worker consuming
  collect, detect and notify (the default deployment);
* this process plays beat: at every simulated minute boundary (the source interval and the
  bucket, both the 60 s defaults) it sends one ``collect`` per brand to the collect queue and then
  one ``evaluate`` per brand to the detect queue, with beat's ``expires``;
* every process shares an accelerated simulated clock (``SURGEWATCH_CLOCK=sim:...``, ``--speed``
  simulated seconds per real second), so a 60 s bucket lasts 60/speed real seconds.  The workload
  of one tick is the same at any speed; only the time allowed to drain it shrinks, so a tick that
  drains at --speed drains with more room at real time.

Measured: ``LLEN collect`` (and detect, notify) on the broker every 20 ms; per tick, when its last
collect finished (from the worker logs: ``Task surgewatch.collect[<id>] succeeded in <s>``) against
the tick's deadline, one bucket later; tasks per second while a tick drains; mentions stored
against mentions published (nothing lost); and, before the workers start, the memory of a
simulated day per brand (the same ingest and evaluate code, in this process), with the detector's
state size and an estimate of the steady state (dedup ids kept up to 1.5 x the dedup TTL, counts 35 days).

    python benchmarks/surge.py [--brands 50] [--speed 10] [--workers 2] [--concurrency 1]

The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, too

import numpy as np  # noqa: E402
import redis  # noqa: E402

from surgewatch.collectors.base import Mention  # noqa: E402
from surgewatch import pipeline  # noqa: E402
from surgewatch.clock import SimClock  # noqa: E402
from surgewatch.config import parse_settings  # noqa: E402
from surgewatch.demo.feedserver import FeedServer, _Handler  # noqa: E402
from surgewatch.pipeline import Runtime  # noqa: E402
from tests.support import Worker, sender_for, write_config  # noqa: E402
from tests.support_faults import RedisServer  # noqa: E402

BUCKET = 60
FEED_WINDOW = 20 * 60  # a feed lists the last 20 minutes...
FEED_CAP = 100  # ... newest 100 items at most (Google News answers up to 100)
SOURCE = "google_news"


# -- the world: one feed per brand ------------------------------------------------------------------
class _BrandFeedHandler(_Handler):
    """Serves ``/rss/search?q=<query>`` as the feed of the brand whose query that is, by handing
    the stock handler the path ``/brand/<name>`` (FeedServer.items_at sees only the path)."""

    def _serve(self, send_body: bool) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/rss/search":
            q = (parse_qs(parts.query).get("q") or [""])[0].strip('"')
            self.path = f"/brand/{q}?{parts.query}"
        super()._serve(send_body)


class BrandFeeds(FeedServer):
    """A :class:`FeedServer` with one feed per brand behind the Google News search URL."""

    def start(self) -> "BrandFeeds":
        super().start()
        assert self._httpd is not None
        self._httpd.RequestHandlerClass = type("BrandFeedHandler", (_BrandFeedHandler,), {"feed_server": self})
        return self


class Script:
    """Every item each brand's feed will publish (published times in simulated epoch seconds),
    and what the feed shows at a simulated time."""

    def __init__(self, brands: list[str], clock: SimClock,
                 segments: list[tuple[float, float, float]] | dict[str, list[tuple[float, float, float]]]):
        """``segments``: (start, end, mentions per minute) in simulated time, for every brand (or a
        dict brand -> its own segments); items are evenly spaced with a per-brand phase, so each
        minute holds the rate exactly."""
        self.clock = clock
        self.items: dict[str, list[dict[str, Any]]] = {}
        self.times: dict[str, np.ndarray] = {}
        self.first_post: dict[str, dict[float, float]] = {}  # brand -> segment start -> first post's time
        self.fetches: dict[str, list[float]] = {b: [] for b in brands}  # simulated times each feed was read
        for i, brand in enumerate(brands):
            items: list[dict[str, Any]] = []
            n = 0
            phase = (i * 0.37) % 1.0
            for start, end, per_min in (segments[brand] if isinstance(segments, dict) else segments):
                gap = 60.0 / per_min
                t = start + phase * gap
                first = None
                while t < end:
                    n += 1
                    first = t if first is None else first
                    items.append({
                        "id": f"{brand}-{n}",
                        "title": f"{brand} tickets: post {n} about the launch",
                        "summary": f"More at https://www.{brand.lower()}.example/tickets (post {n})",
                        "link": f"https://news.example/{brand}/{n}",
                        "published": datetime.fromtimestamp(t, timezone.utc),
                        "author": f"user{n % 997}",
                    })
                    t += gap
                self.first_post.setdefault(brand, {})[start] = first if first is not None else start
            self.items[brand] = items
            self.times[brand] = np.array([it["published"].timestamp() for it in items])

    def __call__(self, path: str) -> list[dict[str, Any]] | None:
        if not path.startswith("/brand/"):
            return None
        brand = path.removeprefix("/brand/")
        if brand not in self.items:
            return None
        now = self.clock.now()
        self.fetches[brand].append(now)
        times = self.times[brand]
        lo = int(np.searchsorted(times, now - FEED_WINDOW, side="right"))
        hi = int(np.searchsorted(times, now, side="right"))
        lo = max(lo, hi - FEED_CAP)
        return list(reversed(self.items[brand][lo:hi]))  # newest first, as feeds are

    def published(self, brand: str, start: float, end: float) -> int:
        times = self.times[brand]
        return int(np.searchsorted(times, end, side="right") - np.searchsorted(times, start, side="left"))


# -- worker logs --------------------------------------------------------------------------------------
_DONE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*Task (surgewatch\.\w+)\[([^\]]+)\] (succeeded|raised|retry)[^\d]*([\d.]+)?")


def task_log(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """task id -> {"task", "done_at" (epoch, local-time log stamps), "runtime", "outcome"} from
    Celery's INFO lines ``Task surgewatch.collect[<id>] succeeded in 0.02s: {...}``."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            m = _DONE.search(line)
            if not m:
                continue
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out[m.group(3)] = {"task": m.group(2), "done_at": stamp, "outcome": m.group(4),
                               "runtime": float(m.group(5)) if m.group(5) else None}
    return out


class QueueSampler(threading.Thread):
    """LLEN of every queue on the broker every ``every`` seconds: (real time, {queue: length})."""

    def __init__(self, url: str, queues: tuple[str, ...] = ("collect", "detect", "notify"), every: float = 0.02):
        super().__init__(daemon=True, name="queue-sampler")
        self.client = redis.Redis.from_url(url)
        self.queues, self.every = queues, every
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with self.client.pipeline(transaction=False) as pipe:
                for q in self.queues:
                    pipe.llen(q)
                lengths = pipe.execute()
            self.samples.append((time.time(), dict(zip(self.queues, lengths))))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def wait_ready(workers: list[Worker], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(" ready." in w.log() for w in workers):
            return
        for w in workers:
            if w.proc.poll() is not None:
                sys.exit(f"a worker exited with code {w.proc.returncode}:\n{w.log()[-3000:]}")
        time.sleep(0.1)
    sys.exit("the workers did not get ready in time:\n" + "\n".join(w.log()[-2000:] for w in workers))


def stop_all(steps: list[Any]) -> None:
    """Run every clean-up step even if one fails (a worker left running would outlive the run),
    then raise the first failure."""
    failure: BaseException | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other steps
            failure = failure or exc
    if failure is not None:
        raise failure


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks."""
    return float(np.percentile(np.array(values, dtype=float), q)) if values else float("nan")


# -- memory of a simulated day -------------------------------------------------------------------------
def memory_of_a_day(url: str, brands: int, per_min: float) -> dict[str, Any]:
    """Ingest a day of mentions for ``brands`` brands and evaluate the day, in this process, on an
    empty database of an otherwise idle server; used_memory after minus before, per brand."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    names = [f"Day{i:03d}" for i in range(brands)]
    settings = parse_settings({
        "brands": [{"name": b, "query": b} for b in names],
        "sources": {SOURCE: {"interval": 60}},
        "channels": {"console": {}},
        "store": {"url": url},
        "detector": {"bucket_seconds": BUCKET, "evaluation_lag_seconds": 0, "warm_up_minutes": 60},
    })
    rt = Runtime(settings)
    store = rt.store
    end = math.floor(time.time() / 86400) * 86400  # a whole UTC day: [end - 1 day, end)
    start = end - 86400
    store.ingest([])  # load the script
    before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    gap = 60.0 / per_min
    for i, b in enumerate(names):
        batch: list[Mention] = []
        t = start + (i * 0.37 % 1.0) * gap
        n = 0
        while t < end:
            n += 1
            batch.append(Mention(
                source=SOURCE, id=f"https://news.example/{b}/{n}", brand=b,
                text=f"{b} tickets: post {n} about the launch More at https://www.{b.lower()}.example/tickets",
                created_at=datetime.fromtimestamp(t, timezone.utc), url=f"https://news.example/{b}/{n}",
                author=f"user{n % 997}", site_links=(f"https://www.{b.lower()}.example/tickets",)))
            t += gap
            if len(batch) >= 500:
                store.ingest(batch)
                batch = []
        store.ingest(batch)
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    pipeline.evaluate_until_current(rt, names, now=end)  # scores the whole day: 1,440 buckets a brand
    evaluate_s = time.perf_counter() - started
    after = client.info("memory")["used_memory"]
    state = store.get_state(f"detector:{names[0]}") or {}
    # Where one brand's bytes go (MEMORY USAGE includes each key's overhead).
    kinds: dict[str, int] = {}
    for key in client.scan_iter(match=f"*{names[0]}*", count=1000):
        k = key.decode()
        kind = ("dedup ids" if ":d:" in k else "counts" if ":c:" in k else "recent posts" if ":r:" in k
                else "count index" if ":s:" in k else "other")
        kinds[kind] = kinds.get(kind, 0) + int(client.memory_usage(key, samples=0) or 0)
    state_hash = next((k for k in client.scan_iter(match="*state", count=1000)), None)
    per_brand_state = 0
    if state_hash is not None:
        for field in (f"detector:{names[0]}", f"verdict:{names[0]}"):
            per_brand_state += len(client.hget(state_hash, field) or b"")
    kinds["detector + verdict state (JSON in the state hash)"] = per_brand_state
    per_brand = (after - before) / brands
    # Steady state: dedup ids are kept one to 1.5 TTLs (3 partitions of half the TTL), counts 35 days
    # (one hash per source per day), recent posts capped at 500, state constant.
    dedup_days = 1.5 * settings.store.dedup_ttl_days
    steady = (kinds.get("dedup ids", 0) * dedup_days + kinds.get("counts", 0) * 35 + kinds.get("recent posts", 0)
              + kinds.get("count index", 0) + per_brand_state)
    client.flushdb()
    store.close()
    return {"brands": brands, "mentions_per_brand": int(per_min * 1440), "used_memory_delta": after - before,
            "per_brand_bytes": per_brand, "breakdown": kinds, "detector_state_bytes": len(json.dumps(state)),
            "steady_state_per_brand_bytes": int(steady), "dedup_days": dedup_days, "ingest_s": ingest_s, "evaluate_s": evaluate_s}


# -- the run ----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brands", type=int, default=50)
    ap.add_argument("--baseline", type=float, default=3.0, help="mentions a minute per brand")
    ap.add_argument("--factor", type=float, default=25.0, help="surge rate / baseline rate")
    ap.add_argument("--surge-minutes", type=int, default=10)
    ap.add_argument("--before-minutes", type=int, default=5, help="live baseline minutes before the surge")
    ap.add_argument("--after-minutes", type=int, default=2)
    ap.add_argument("--speed", type=float, default=10.0, help="simulated seconds per real second")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--memory-brands", type=int, default=None, help="brands in the simulated day (default --brands)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="surgewatch-surge-"))
    brands = [f"Brand{i:03d}" for i in range(args.brands)]

    with RedisServer() as server:
        print(f"throwaway redis-server on port {server.port}; files in {folder}")
        mem = memory_of_a_day(server.url(2), args.memory_brands or args.brands, args.baseline)
        print(f"memory: a simulated day of {mem['mentions_per_brand']:,} mentions per brand for {mem['brands']} brands "
              f"(ingest {mem['ingest_s']:.1f}s, evaluate {mem['evaluate_s']:.1f}s): used_memory +{mem['used_memory_delta']:,} "
              f"bytes = {mem['per_brand_bytes']:,.0f} bytes per brand; detector state {mem['detector_state_bytes']:,} bytes")
        for kind, size in sorted(mem["breakdown"].items(), key=lambda kv: -kv[1]):
            print(f"    {kind:<52} {size:>10,} bytes")
        print(f"  steady state (dedup {mem['dedup_days']:g} days, counts 35 days, recent capped): about "
              f"{mem['steady_state_per_brand_bytes']:,} bytes per brand")

        broker_url, store_url = server.url(0), server.url(1)
        speed = args.speed
        clock = SimClock(sim_start=math.floor(time.time()), real_start=time.time(), speed=speed)
        feeds = BrandFeeds(title="Simulated brand news").start()
        config_path, settings = write_config(folder, {
            "brands": [{"name": b, "query": b} for b in brands],
            "sources": {SOURCE: {"interval": 60, "api_url": feeds.url("/rss/search")}},
            "channels": {"console": {}},
            "store": {"url": store_url},
            "broker": {"url": broker_url},
            # warm_up 30 min over 60 seeded minutes: the detector is live before the surge
            "detector": {"bucket_seconds": BUCKET, "warm_up_minutes": 30},
            "digest": {"enabled": False},
        })
        env = {"SURGEWATCH_CLOCK": clock.to_env()}
        workers = [Worker(config_path, env, folder / f"worker{i}.log", concurrency=args.concurrency)
                   for i in range(args.workers)]
        sampler = None
        try:
            wait_ready(workers)
            rt = Runtime(settings)
            # The timeline, in simulated time, starting at the next minute boundary but one.
            t0 = (math.floor(clock.now() / BUCKET) + 2) * BUCKET
            surge_at = t0 + args.before_minutes * 60
            calm_at = surge_at + args.surge_minutes * 60
            end = calm_at + args.after_minutes * 60
            script = Script(brands, clock, [(t0, surge_at, args.baseline), (surge_at, calm_at, args.baseline * args.factor),
                                            (calm_at, end + 600, args.baseline)])
            feeds.items_at = script
            # An hour of history, so the detector has a baseline (its first evaluate catches up on it).
            for i, b in enumerate(brands):
                rt.store.set_volume(b, SOURCE, [(t, int(args.baseline)) for t in range(int(t0 - 3600), int(t0), BUCKET)])
            sender = sender_for(settings)
            sampler = QueueSampler(broker_url)
            sampler.start()
            ticks: list[dict[str, Any]] = []
            k = 0
            print(f"{args.brands} brands, {args.workers} worker(s) x concurrency {args.concurrency}, speed {speed:g}x "
                  f"(a 60 s bucket = {BUCKET / speed:.1f} real s); baseline {args.baseline:g}/min per brand, "
                  f"surge {args.factor:g}x for {args.surge_minutes} min")
            while True:
                t = t0 + k * BUCKET  # simulated time of tick k
                if t > end:
                    break
                real_at = clock.real_start + (t - clock.sim_start) / speed
                delay = real_at - time.time()
                if delay > 0:
                    time.sleep(delay)
                sent_at = time.time()
                ids = []
                for b in brands:
                    tid = f"collect-{k}-{b}"
                    sender.send_task("surgewatch.collect", args=(SOURCE, b), queue="collect", task_id=tid,
                                     expires=BUCKET / speed * 3)
                    ids.append(tid)
                eids = []
                for b in brands:
                    tid = f"evaluate-{k}-{b}"
                    sender.send_task("surgewatch.evaluate", args=(b,), queue="detect", task_id=tid,
                                     expires=BUCKET / speed * 3)
                    eids.append(tid)
                phase = "surge" if surge_at <= t < calm_at + 60 else "baseline"
                ticks.append({"k": k, "sim": t, "sent_at": sent_at, "send_s": time.time() - sent_at,
                              "collects": ids, "evaluates": eids, "phase": phase})
                k += 1
            # Let the last tick finish (one more bucket), then read the logs.
            time.sleep(BUCKET / speed + 1.0)
        finally:
            stop_all([w.stop for w in workers] + [feeds.stop] + ([sampler.stop] if sampler is not None else []))

        with open(folder / "queue_lengths.csv", "w", encoding="utf-8") as f:  # for a plot: LLEN over time
            f.write("real_time,simulated_time," + ",".join(sampler.queues) + "\n")
            for ts, lengths in sampler.samples:
                sim = clock.sim_start + (ts - clock.real_start) * speed
                f.write(f"{ts:.3f},{sim:.1f}," + ",".join(str(lengths[q]) for q in sampler.queues) + "\n")
        done = task_log([w.log_path for w in workers])
        deadline_s = BUCKET / speed
        rows = []
        for tick in ticks:
            col = [done.get(i) for i in tick["collects"]]
            ev = [done.get(i) for i in tick["evaluates"]]
            finished = [c["done_at"] for c in col if c]
            ev_finished = [e["done_at"] for e in ev if e]
            last = max(finished) - tick["sent_at"] if len(finished) == len(col) else None
            ev_last = max(ev_finished) - tick["sent_at"] if len(ev_finished) == len(ev) else None
            window = [(ts, s) for ts, s in sampler.samples if tick["sent_at"] <= ts < tick["sent_at"] + deadline_s]
            rows.append({**tick, "collect_done": len(finished), "collect_drain_s": last, "evaluate_drain_s": ev_last,
                         "queue_max": max((s["collect"] for _, s in window), default=0),
                         "collect_runtime": [c["runtime"] for c in col if c and c["runtime"] is not None],
                         "drained": last is not None and last <= deadline_s})
        print()
        print(" tick  sim time  phase     collect queue max  collects done  drained (real s)  evaluates done (real s)  in time")
        for r in rows:
            stamp = datetime.fromtimestamp(r["sim"], timezone.utc).strftime("%H:%M")
            drain = "-" if r["collect_drain_s"] is None else f"{r['collect_drain_s']:.2f}"
            edrain = "-" if r["evaluate_drain_s"] is None else f"{r['evaluate_drain_s']:.2f}"
            print(f" {r['k']:>4}  {stamp:>8}  {r['phase']:<8}  {r['queue_max']:>17}  {r['collect_done']:>6}/{len(r['collects']):<6}"
                  f"  {drain:>16}  {edrain:>23}  {'yes' if r['drained'] else 'NO'}")
        surge_rows = [r for r in rows if r["phase"] == "surge"]
        queue_max = max((s["collect"] for _, s in sampler.samples), default=0)
        drained_all = all(r["drained"] for r in surge_rows) and bool(surge_rows)
        # Throughput while a tick drains: its tasks (collects + evaluates) over the time to finish them all.
        rates = []
        for r in rows:
            if r["collect_drain_s"] is not None and r["evaluate_drain_s"] is not None:
                rates.append((len(r["collects"]) + len(r["evaluates"])) / max(r["collect_drain_s"], r["evaluate_drain_s"]))
        surge_rates = [rate for r, rate in zip(rows, rates) if r["phase"] == "surge"]
        all_done = [d for d in done.values() if d["task"] in ("surgewatch.collect", "surgewatch.evaluate")]
        # Capacity: tasks finished while the collect queue was not empty (the workers had work
        # waiting), over that time; it holds whether or not ticks overlap.
        busy_s, busy_tasks = 0.0, 0
        finished_at = sorted(d["done_at"] for d in all_done)
        for (ts, lengths), (nxt, _) in zip(sampler.samples, sampler.samples[1:]):
            if lengths["collect"] > 0:
                busy_s += nxt - ts
                busy_tasks += int(np.searchsorted(finished_at, nxt) - np.searchsorted(finished_at, ts))
        busy_rate = busy_tasks / busy_s if busy_s else float("nan")
        span = (max(d["done_at"] for d in all_done) - rows[0]["sent_at"]) if all_done else float("nan")
        runtimes_base = [x for r in rows if r["phase"] == "baseline" for x in r["collect_runtime"]]
        runtimes_surge = [x for r in surge_rows for x in r["collect_runtime"]]
        eval_runtimes = [d["runtime"] for d in all_done if d["task"] == "surgewatch.evaluate" and d["runtime"] is not None]
        # Nothing lost, nothing twice: every post a feed had published by its brand's last poll is
        # stored, once (the feed server notes when each feed was read).
        stored = published = 0
        store = Runtime(settings).store
        for b in brands:
            published += script.published(b, t0, max(script.fetches[b], default=t0))
            stored += sum(sum(s.values()) for s in store.counts(b, t0, end + 3600).values())
        incidents = sum(len(store.list_incidents(b)) for b in brands)
        state = store.get_state(f"detector:{brands[0]}") or {}
        redis_memory = redis.Redis.from_url(store_url).info("memory")["used_memory"]
        store.close()

    tasks_per_s = statistics.median(surge_rates) if surge_rates else float("nan")
    print()
    print(f"collect queue: max {queue_max} messages (LLEN collect, sampled every 20 ms); each tick sends "
          f"{args.brands} collects + {args.brands} evaluates")
    slowest = max((r["collect_drain_s"] if r["collect_drain_s"] is not None else float("inf")) for r in surge_rows)
    print(f"every surge tick's collects done within one bucket ({deadline_s:.1f} real s = 60 simulated s): "
          f"{'yes' if drained_all else 'NO'}; slowest surge tick {slowest:.2f} real s "
          f"({slowest / deadline_s:.0%} of the bucket)")
    print(f"throughput while a tick drains: median {tasks_per_s:.1f} tasks/s in surge ticks "
          f"({statistics.median(rates) if rates else float('nan'):.1f} over all ticks); {len(all_done)} tasks in {span:.1f} s overall; "
          f"while work was waiting in the collect queue: {busy_rate:.1f} tasks/s (capacity)")
    print(f"collect task runtime (worker log): baseline median {pct(runtimes_base, 50) * 1000:.0f} ms, "
          f"surge median {pct(runtimes_surge, 50) * 1000:.0f} ms / p95 {pct(runtimes_surge, 95) * 1000:.0f} ms; "
          f"evaluate median {pct(eval_runtimes, 50) * 1000:.0f} ms")
    print(f"mentions stored {stored:,} of {published:,} published up to the last poll "
          f"({'none lost, none twice' if stored == published else f'{published - stored:+,} missing'}); "
          f"incidents opened: {incidents} of {args.brands} brands")
    if stored < published:
        print(f"  (a feed lists its newest {FEED_CAP} items: at {args.baseline * args.factor:g}/min, polls more than "
              f"{FEED_CAP / (args.baseline * args.factor) * 60:.0f} simulated s apart miss posts; a backed-up collect "
              f"queue or expired collects spread them that far)")
    print(f"at real time (speed 1) a tick has 60 s to drain; here it had {deadline_s:.1f} s: the same work, "
          f"{speed:g}x less room; queue lengths over time in {folder / 'queue_lengths.csv'}")
    print(json.dumps({
        "queue_max": queue_max,
        "drained_within_bucket": drained_all,
        "tasks_per_s": round(tasks_per_s, 1),
        "memory_per_brand_bytes": round(mem["per_brand_bytes"]),
        "memory_steady_state_per_brand_bytes": mem["steady_state_per_brand_bytes"],
        "detector_state_bytes": len(json.dumps(state)) if state else mem["detector_state_bytes"],
        "brands": args.brands, "baseline_per_min": args.baseline, "surge_factor": args.factor,
        "surge_minutes": args.surge_minutes, "workers": args.workers, "concurrency": args.concurrency,
        "speed": speed, "bucket_real_s": round(deadline_s, 2),
        "slowest_surge_drain_s": None if not drained_all else round(max(r["collect_drain_s"] for r in surge_rows), 3),
        "busy_tasks_per_s": round(busy_rate, 1),
        "collect_runtime_surge_median_ms": round(pct(runtimes_surge, 50) * 1000, 1),
        "mentions_published": published, "mentions_stored": stored, "incidents": incidents,
        "redis_used_memory_end": redis_memory,
    }))


if __name__ == "__main__":
    main()
