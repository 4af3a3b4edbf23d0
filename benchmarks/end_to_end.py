"""End to end: from the first post of a surge appearing at a local feed to the alert at a local fake
Slack, p50 and p95 over at least 20 surges, through the real deployment: ``surgewatch beat``
(RedBeat) schedules, two ``surgewatch worker`` processes (concurrency 1 each) run collect,
evaluate and notify on a throwaway Redis (broker db 0, store db 1), the real ``google_news``
collector (the RSS machinery, one feed URL per brand) reads a local feed server and the real
slack-sdk posts to :class:`tests.fakes.slack_server.FakeSlack`.

Two configurations, one code path:

* **default intervals** (source interval 60 s, bucket 60 s, no extra evaluation lag: a bucket is
  scored once every source has polled after it closed), run on the shared simulated clock ``--speed`` times faster than real time
  (``SURGEWATCH_CLOCK=sim:...`` in every process; beat's schedule is compressed by the same
  factor).  Latencies are reported in simulated seconds: real seconds x speed.  What the workers
  spend (a few tens of real milliseconds a task) is inflated by the same factor, so these figures
  slightly overstate the processing part; the interval parts are exact.
* **short real time** (interval 5 s, bucket 10 s, evaluation lag 5 s, no clock override): the
  workers' own latencies measured honestly, on the wall clock.

Each brand gets one surge (``--factor`` x its baseline, from a random offset within the bucket so
poll and bucket phases are sampled fairly), staggered so the surges do not queue behind each other
on Slack's one-message-a-second pacing.  The detector starts warm: an hour (real time: 60 buckets)
of baseline counts is seeded in the store and ``warm_up_minutes`` is shorter than that.

Per surge the latency is split into what it is made of:

    first post -> end of the bucket that holds it            (bucket close: up to one bucket)
    -> end of the bucket the detector alarmed on             (detection buckets: usually none)
    -> + evaluation lag                                      (the wait that lets every poll covering
                                                              the bucket land: it hides the poll wait)
    -> the evaluate that scored it                           (wait for the next beat tick + run)
    -> the Slack message                                     (notify queue + render + post)

    python benchmarks/end_to_end.py [--mode both|default|realtime] [--surges 20] [--speed 30]

The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, too
sys.path.insert(0, str(Path(__file__).resolve().parent))


from surge import SOURCE, BrandFeeds, Script, pct, stop_all, wait_ready  # noqa: E402
from surgewatch.worker.settings import EVALUATE_TICKS_PER_BUCKET  # noqa: E402
from surgewatch.clock import SimClock  # noqa: E402
from tests.fakes.slack_server import FakeSlack  # noqa: E402
from surgewatch.pipeline import Runtime  # noqa: E402
from tests.support import Worker, write_config  # noqa: E402
from tests.support_faults import Beat, RedisServer  # noqa: E402

TOKEN = "xoxb-end-to-end-benchmark-token"
_BRAND = re.compile(r"Brand\d{3}")
_EVALUATED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*evaluated (Brand\d{3}): .* (watch|warning|critical)\s*$")


class TimedSlack(FakeSlack):
    """FakeSlack that notes the wall-clock time of every accepted chat.postMessage."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.posted: list[tuple[float, str, str]] = []  # (real time, brand, channel)

    def handle(self, method: str, payload: dict[str, Any], token: str | None) -> dict[str, Any]:
        answer = super().handle(method, payload, token)
        if method == "chat.postMessage" and answer.get("ok"):
            m = _BRAND.search(json.dumps(payload))
            self.posted.append((time.time(), m.group(0) if m else "", str(payload.get("channel"))))
        return answer


def evaluated_at(paths: list[Path]) -> dict[str, float]:
    """brand -> real time of the first evaluate that logged an alarming verdict (worker logs)."""
    out: dict[str, float] = {}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            m = _EVALUATED.search(line)
            if m:
                t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out[m.group(2)] = min(out.get(m.group(2), t), t)
    return out


def run(mode: str, *, surges: int, speed: float, factor: float, seed: int, folder: Path) -> dict[str, Any]:
    """One configuration; returns its figures (simulated seconds for the default mode)."""
    if mode == "default":
        interval, bucket, lag, warm_up_min, per_min = 60, 60, None, 30, 3.0
        stagger, first_after, surge_len, history = 80.0, 5 * 60.0, 10 * 60.0, 60
    else:
        speed = 1.0
        interval, bucket, lag, warm_up_min, per_min = 5, 10, 5, 5, 6.0
        stagger, first_after, surge_len, history = 3.0, 15.0, 60.0, 60
    # With no configured lag a bucket waits only for the next poll after it closes; that wait shows
    # in "to evaluate" (it is the poll wait, not a fixed lag).
    effective_lag = 0 if lag is None else lag
    brands = [f"Brand{i:03d}" for i in range(surges)]
    rng = random.Random(seed)
    out_dir = folder / mode
    out_dir.mkdir()
    with RedisServer() as server, TimedSlack(token=TOKEN) as slack:
        feeds = BrandFeeds(title="Simulated brand news").start()
        # sim_start == real_start: in the real-time mode the workers read the wall clock, and this
        # process's clock (which stamps the feed items) must agree with it to the millisecond.
        now = time.time()
        clock = SimClock(sim_start=now, real_start=now, speed=speed)
        config_path, settings = write_config(out_dir, {
            "brands": [{"name": b, "query": b, "site": f"https://www.{b.lower()}.example"} for b in brands],
            "sources": {SOURCE: {"interval": interval, "api_url": feeds.url("/rss/search")}},
            "channels": {"console": {}, "slack": {"api_url": slack.base_url, "marketing_channel": "#marketing",
                                                  "ops_channel": "#ops"}},
            "store": {"url": server.url(1)},
            "broker": {"url": server.url(0)},
            "detector": {"bucket_seconds": bucket, "warm_up_minutes": warm_up_min,
                         **({} if lag is None else {"evaluation_lag_seconds": lag})},
            "digest": {"enabled": False},
        })
        env = {"SLACK_BOT_TOKEN": TOKEN}
        if speed != 1.0:
            env["SURGEWATCH_CLOCK"] = clock.to_env()
        workers = [Worker(config_path, env, out_dir / f"worker{i}.log", concurrency=1) for i in range(2)]
        beat = None
        try:
            wait_ready(workers)
            rt = Runtime(settings)
            t0 = (math.floor(clock.now() / bucket) + 1) * bucket
            # A random phase within the bucket (or the stagger, when shorter): poll and bucket phases are sampled.
            starts = {b: t0 + first_after + i * stagger + rng.uniform(0, min(bucket, stagger)) for i, b in enumerate(brands)}
            segments = {b: [(t0, s, per_min), (s, s + surge_len, per_min * factor), (s + surge_len, s + 10**6, per_min)]
                        for b, s in starts.items()}
            script = Script(brands, clock, segments)
            feeds.items_at = script
            for b in brands:
                rt.store.set_volume(b, SOURCE, [(t, round(per_min * bucket / 60))
                                                for t in range(int(t0 - history * bucket), int(t0), bucket)])
            beat = Beat(config_path, env, out_dir / "beat.log", out_dir / "beat-schedule")
            # Run until every brand has its message, or the last surge is long past.
            give_up = max(starts.values()) + bucket * 8 + 2 * effective_lag
            real_give_up = time.time() + (give_up - clock.now()) / speed
            while time.time() < real_give_up:
                if {b for _, b, _ in slack.posted} >= set(brands):
                    break
                if not beat.alive():
                    raise RuntimeError(f"beat exited:\n{beat.log()[-3000:]}")
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            stop_all(([beat.stop] if beat is not None else []) + [w.stop for w in workers] + [feeds.stop])
        evaluations = evaluated_at([w.log_path for w in workers])
        rows = []
        for b in brands:
            first_post = script.first_post[b][starts[b]]
            posted = sorted(t for t, brand, _ in slack.posted if brand == b)
            incidents = sorted(rt.store.list_incidents(b), key=lambda i: i["opened_at"])
            opened = next((i for i in incidents if i["opened_at"] >= t0), None)
            early = [i for i in incidents if i["opened_at"] < first_post - bucket]
            row: dict[str, Any] = {"brand": b, "first_post": first_post, "false_alarms": len(early)}
            if posted and opened is not None:
                msg_sim = clock.sim_start + (posted[0] - clock.real_start) * speed
                alarm_bucket_end = opened["transitions"][0]["at"] + bucket
                first_bucket_end = math.floor(first_post / bucket) * bucket + bucket
                ev_real = evaluations.get(b)
                ev_sim = clock.sim_start + (ev_real - clock.real_start) * speed if ev_real else None
                poll = next((f for f in script.fetches[b] if f >= first_post), None)
                row.update({
                    "latency": msg_sim - first_post,
                    "bucket_close": first_bucket_end - first_post,
                    "detection_buckets": (alarm_bucket_end - first_bucket_end) / bucket,
                    "lag": effective_lag,
                    "to_evaluate": (ev_sim - (alarm_bucket_end + effective_lag)) if ev_sim else None,
                    "notify": (msg_sim - ev_sim) if ev_sim else None,
                    "notify_real": (posted[0] - ev_real) if ev_real else None,
                    "poll_wait": (poll - first_post) if poll is not None else None,
                })
            rows.append(row)
        rt.store.close()
    got = [r for r in rows if "latency" in r]
    lat = [r["latency"] for r in got]

    def med(key: str) -> float:
        vals = [r[key] for r in got if r.get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    figures = {
        "mode": mode, "speed": speed, "interval_s": interval, "bucket_s": bucket, "evaluation_lag_s": effective_lag,
        "surges": len(brands), "alerted": len(got), "false_alarms": sum(r["false_alarms"] for r in rows),
        "p50_s": round(pct(lat, 50), 1), "p95_s": round(pct(lat, 95), 1), "max_s": round(max(lat), 1) if lat else None,
        "median_parts_s": {"poll_wait (inside the lag)": round(med("poll_wait"), 1),
                           "bucket_close": round(med("bucket_close"), 1),
                           "detection_buckets": round(med("detection_buckets"), 2),
                           "evaluation_lag": effective_lag,
                           "to_evaluate (beat tick wait + run)": round(med("to_evaluate"), 1),
                           "notify (queue + render + post)": round(med("notify"), 2)},
        "notify_real_median_s": round(med("notify_real"), 3),
    }
    unit = "simulated s" if speed != 1 else "s"
    print(f"\n== {mode}: interval {interval} s, bucket {bucket} s, evaluation lag {effective_lag} s"
          + (f", simulated clock at {speed:g}x (1 real s = {speed:g} simulated s)" if speed != 1 else ", real time")
          + f"; baseline {per_min:g}/min per brand, surge {factor:g}x")
    print(f"   {len(got)} of {len(brands)} surges reached Slack; latency from the first surge post to the first "
          f"Slack message: p50 {figures['p50_s']} {unit}, p95 {figures['p95_s']} {unit}, max {figures['max_s']} {unit}")
    print("   brand    latency  = bucket close + detection buckets + lag + to evaluate + notify   (poll wait)")
    for r in got:
        print(f"   {r['brand']}  {r['latency']:7.1f}  = {r['bucket_close']:12.1f} + {r['detection_buckets']:8.0f} x {bucket}"
              f" + {r['lag']:3} + {r['to_evaluate'] if r['to_evaluate'] is not None else float('nan'):11.1f}"
              f" + {r['notify'] if r['notify'] is not None else float('nan'):6.2f}   ({r['poll_wait'] if r['poll_wait'] is not None else float('nan'):.1f})")
    print("   medians: " + ", ".join(f"{k} {v}" for k, v in figures["median_parts_s"].items())
          + f"; notify in real seconds {figures['notify_real_median_s']}")
    print(f"   beat runs {EVALUATE_TICKS_PER_BUCKET} evaluate ticks per bucket: a bucket whose last poll has landed waits "
          f"at most {bucket / EVALUATE_TICKS_PER_BUCKET:g} {unit} for the next one")
    if figures["false_alarms"]:
        print(f"   WARNING: {figures['false_alarms']} incident(s) opened before a surge began")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("both", "default", "realtime"), default="both")
    ap.add_argument("--surges", type=int, default=20, help="surges (one brand each) per configuration")
    ap.add_argument("--speed", type=float, default=30.0, help="simulated seconds per real second (default mode)")
    ap.add_argument("--factor", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="surgewatch-e2e-"))
    print(f"files in {folder}")
    print("Latency = bucket close (first post -> end of its bucket) + detection buckets (further buckets until the "
          "detector alarms) + evaluation lag (it covers the poll wait: every poll of the bucket has landed) + wait for "
          "the next evaluate tick and its run + notify (notify queue, render, Slack post).")
    results = {}
    for mode in (("default", "realtime") if args.mode == "both" else (args.mode,)):
        results[mode] = run(mode, surges=args.surges, speed=args.speed, factor=args.factor, seed=args.seed, folder=folder)
    d, r = results.get("default"), results.get("realtime")
    print(json.dumps({
        "p50_s": d["p50_s"] if d else None, "p95_s": d["p95_s"] if d else None,
        "speed": d["speed"] if d else None,
        "realtime_p50_s": r["p50_s"] if r else None, "realtime_p95_s": r["p95_s"] if r else None,
        "default": d, "realtime": r,
    }))


if __name__ == "__main__":
    main()
