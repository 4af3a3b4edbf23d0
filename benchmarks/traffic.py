"""Traffic-model accuracy: does "about 6x normal traffic in ~25 min" match what the site then gets?

Synthetic worlds whose truth is known: 30 days of minutes with a daily and weekly rhythm, Poisson mentions from
two sources, noisy site traffic growing slowly, and four mention surges (random size, shape, time of day) that the
traffic follows with a random lag.  The model is fitted on the first 29 days (three past surges) and judged on the
fourth, held out, under three responses of the site:

* **power law**: traffic multiple = mention multiple ** elasticity (the model's own form);
* **linear**: extra traffic proportional to extra mentions, which a power law only approximates;
* **linear, visitors stay ~5 min**: the same, smoothed by an exponential kernel (a visit lasts).

Two questions per world and response:

1. the model alone: given a perfect forecast of the mention peak 10 minutes into the climb, how far is the
   predicted traffic peak (multiple of normal, and time) from the true one?
2. end to end: the real :class:`SpikeDetector` reads the minutes; at the first verdict reaching watch, warning
   and critical during the held-out surge, ``surgewatch.traffic.outlook_from`` turns its forecast into the
   outlook an alert would carry.  How far is that from the true peak?

Errors: peak multiple as predicted / true - 1 (median and p90 of its size, and the median sign: the bias);
time as predicted peak time - true peak time in minutes (negative: predicted too early).  Also timed: one fit on
29 days of minutes, and ``traffic_outlook`` on a SQLite store, cold (CSV + store + fit) and cached.

    python benchmarks/traffic.py [--worlds 20] [--seed 0]

The last line of stdout is one JSON object.  About 30 s for 20 worlds.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from surgewatch.detector.spike import DetectorParams, SpikeDetector  # noqa: E402
from surgewatch.detector.traffic import TrafficModel, fit_traffic_model, predict_traffic  # noqa: E402
from surgewatch.detector.verdict import Severity, Verdict  # noqa: E402
from surgewatch.config import parse_settings  # noqa: E402
from surgewatch.pipeline import Runtime  # noqa: E402
from surgewatch.store import open_store  # noqa: E402
from surgewatch.traffic import outlook_from, traffic_outlook  # noqa: E402

DAY = 86400.0
START = 1_764_547_200.0  # 2025-12-01 00:00 UTC, a Monday
WORLD_DAYS = 30
CUT = START + 29 * DAY  # the model learns from the minutes before this; the held-out surge comes after
PAST_SURGE_DAYS = (3, 11, 19)
BUCKET = 60
SOURCES = (("x", 0.7), ("reddit", 0.3))  # share of the mentions per source
KINDS = (("power", "power law", 0.0), ("linear", "linear", 0.0), ("linear+linger", "linear, visitors stay ~5 min", 5.0))
LEVELS = (Severity.WATCH, Severity.WARNING, Severity.CRITICAL)
PERFECT_FORECAST_AFTER = 10 * 60.0  # the model-only prediction is made this far into the climb
AFTER_SURGE = 6 * 3600.0  # the true traffic peak is looked for this long after the onset
CACHED_CALLS = 300


# -- a synthetic world ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Surge:
    at: float
    peak_ratio: float  # mentions at the peak / normal
    ramp: float  # onset to mention peak
    half_life: float

    @property
    def peak_at(self) -> float:
        return self.at + self.ramp


def _shape(t: np.ndarray, s: Surge) -> np.ndarray:
    """0 before the onset, a steepening climb to 1 at the peak (word spreading), then a halving decay."""
    x = np.zeros_like(t)
    up = (t >= s.at) & (t < s.peak_at)
    x[up] = ((t[up] - s.at) / s.ramp) ** 2.5
    down = t >= s.peak_at
    x[down] = 0.5 ** ((t[down] - s.peak_at) / s.half_life)
    return x


@dataclass
class World:
    t: np.ndarray  # minute starts
    mention_normal: np.ndarray  # true normal mentions per minute
    by_source: dict[str, np.ndarray]  # mentions per minute and source
    surges: tuple[Surge, ...]  # the last one is held out
    lag: float
    elasticity: float  # the power-law response's
    visitors_per_excess: float  # the linear responses'
    response: dict[str, np.ndarray]  # per kind: the true traffic multiple (noise-free)
    rpm: dict[str, np.ndarray]  # per kind: the site's requests per minute, noisy

    @property
    def held_out(self) -> Surge:
        return self.surges[-1]

    def total(self) -> np.ndarray:
        return sum(self.by_source.values())  # type: ignore[return-value]

    def mentions_before(self, end: float) -> dict[float, float]:
        total = self.total()
        keep = (self.t < end) & (total > 0)
        return dict(zip(self.t[keep].tolist(), total[keep].astype(float).tolist()))

    def traffic_before(self, kind: str, end: float) -> list[tuple[float, float]]:
        keep = self.t < end
        return list(zip(self.t[keep].tolist(), self.rpm[kind][keep].tolist()))

    def true_peak(self, kind: str) -> tuple[float, float]:
        """(time, multiple of normal) of the site's true traffic peak after the held-out surge."""
        s = self.held_out
        w = (self.t >= s.at) & (self.t < s.at + AFTER_SURGE)
        j = int(np.argmax(self.response[kind][w]))
        return float(self.t[w][j]), float(self.response[kind][w][j])


def make_world(rng: np.random.Generator) -> World:
    t = START + 60.0 * np.arange(WORLD_DAYS * 1440)
    hour = ((t - START) % DAY) / 3600
    weekend = (((t - START) // DAY) % 7) >= 5
    surges = tuple(Surge(START + d * DAY + rng.uniform(8, 17) * 3600, float(rng.uniform(6, 30)),
                         ramp=float(rng.uniform(20, 45)) * 60, half_life=float(rng.uniform(12, 30)) * 60)
                   for d in (*PAST_SURGE_DAYS, 29))
    lag = float(rng.uniform(10, 35)) * 60
    elasticity = float(rng.uniform(0.4, 0.8))
    visitors = float(rng.uniform(0.1, 0.35))
    mentions_per_min = float(rng.uniform(1.0, 5.0))
    mention_normal = mentions_per_min * (0.6 + 0.5 * np.sin(2 * np.pi * (hour - 9) / 24)) * np.where(weekend, 0.8, 1.0)
    ratio = np.ones_like(t)
    lagged = np.ones_like(t)
    for s in surges:
        ratio += (s.peak_ratio - 1) * _shape(t, s)
        lagged += (s.peak_ratio - 1) * _shape(t - lag, s)
    total = rng.poisson(mention_normal * ratio)
    by_source: dict[str, np.ndarray] = {}
    left = total
    for i, (name, share) in enumerate(SOURCES):
        rest = sum(sh for _, sh in SOURCES[i:])
        by_source[name] = left if i == len(SOURCES) - 1 else rng.binomial(left, share / rest)
        left = left - by_source[name]
    normal_rpm = (float(rng.uniform(300, 3000)) * (1.0 + 0.5 * np.sin(2 * np.pi * (hour - 7) / 24))
                  * np.where(weekend, 0.7, 1.0) * (1 + 0.003 * (t - START) / DAY))
    noise = np.exp(rng.normal(0, 0.05, len(t)))
    response: dict[str, np.ndarray] = {}
    rpm: dict[str, np.ndarray] = {}
    for kind, _, linger in KINDS:
        multiple = lagged ** elasticity if kind == "power" else 1 + visitors * (lagged - 1)
        if linger:
            a = 1 - math.exp(-1 / linger)
            multiple = 1 + lfilter([a], [1, a - 1], multiple - 1)
        response[kind] = multiple
        rpm[kind] = normal_rpm * multiple * noise
    return World(t, mention_normal, by_source, surges, lag, elasticity, visitors, response, rpm)


def fit(world: World, kind: str) -> TrafficModel:
    return fit_traffic_model(world.traffic_before(kind, CUT), world.mentions_before(CUT), start=START, end=CUT,
                             bucket_seconds=BUCKET, mentions_from=START)


def first_verdicts(world: World) -> dict[Severity, Verdict]:
    """The real detector over the minutes up to the end of the held-out surge: the first verdict reaching each
    level from the surge's onset on (the detector is not told about the cut: it runs on, as in production)."""
    detector = SpikeDetector(DetectorParams(bucket_seconds=BUCKET))
    held = world.held_out
    out: dict[Severity, Verdict] = {}
    names = [name for name, _ in SOURCES]
    columns = [world.by_source[name] for name in names]
    for i in range(int((held.at + 3 * 3600 - START) // 60)):
        t = float(world.t[i])
        by_source = {name: float(col[i]) for name, col in zip(names, columns)}
        v = detector.update(t, sum(by_source.values()), by_source)
        if t < held.at or v.warming_up:
            continue
        for level in LEVELS:
            if level not in out and v.severity >= level:
                out[level] = v
        if len(out) == len(LEVELS):
            break
    return out


# -- figures -------------------------------------------------------------------------------------------
def _pct(x: float) -> float:
    return round(100 * x, 1)


def summarise(errors: list[float], minutes: list[float]) -> dict[str, Any]:
    """Peak-multiple errors (predicted / true - 1) and timing errors (minutes) into the reported figures."""
    if not errors:
        return {"n": 0}
    size = np.abs(errors)
    return {
        "n": len(errors),
        "peak_err_median_pct": _pct(float(np.median(size))),
        "peak_err_p90_pct": _pct(float(np.percentile(size, 90))),
        "peak_bias_pct": _pct(float(np.median(errors))),
        "time_err_median_min": round(float(np.median(np.abs(minutes))), 1),
        "time_err_p90_min": round(float(np.percentile(np.abs(minutes), 90)), 1),
        "time_bias_min": round(float(np.median(minutes)), 1),
    }


def cached_call_timing(world: World, verdict: Verdict) -> dict[str, float]:
    """``traffic_outlook`` as the notifier calls it, on a SQLite store: the first call loads the CSV and the
    store's counts and fits; the next ones read the model from the store's state."""
    with tempfile.TemporaryDirectory() as folder:
        csv = Path(folder) / "traffic.csv"
        csv.write_text("timestamp,requests_per_minute\n"
                       + "".join(f"{t:.0f},{r:.1f}\n" for t, r in world.traffic_before("linear+linger", CUT)))
        settings = parse_settings({
            "brands": [{"name": "Bench", "query": "bench", "traffic": {"csv": str(csv)}}],
            "store": {"url": f"sqlite:///{folder}/store.db"},
        }, "benchmark", env={})
        store = open_store(settings.store.url, bucket_seconds=BUCKET)
        try:
            for name, _ in SOURCES:
                column = world.by_source[name]
                keep = (world.t < CUT) & (column > 0)
                store.set_volume("Bench", name, list(zip(world.t[keep].tolist(), column[keep].astype(int).tolist())))
            rt = Runtime(settings, store)
            at = verdict.at + BUCKET
            t0 = time.perf_counter()
            cold = traffic_outlook(rt, "Bench", verdict, at)
            cold_s = time.perf_counter() - t0
            assert cold is not None, "the cold call must fit a model"
            calls = []
            for k in range(CACHED_CALLS):
                t0 = time.perf_counter()
                traffic_outlook(rt, "Bench", verdict, at + k)
                calls.append(time.perf_counter() - t0)
        finally:
            store.close()
    return {"cold_s": round(cold_s, 3), "cached_median_ms": round(1000 * statistics.median(calls), 3),
            "cached_p99_ms": round(1000 * float(np.percentile(calls, 99)), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--worlds", type=int, default=20, help="synthetic worlds per response (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0,
                    help="world i is built from the seed (SEED, i) (default: %(default)s)")
    args = ap.parse_args()
    if args.worlds < 1:
        ap.error("--worlds must be at least 1")

    # scikit-learn is imported on the first fit (~1 s): load it now so that the fit times are fits
    importlib.import_module("sklearn.linear_model")

    started = time.perf_counter()
    model_only: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k, _, _ in KINDS}
    e2e: dict[str, dict[str, tuple[list[float], list[float]]]] = {
        k: {lv.value: ([], []) for lv in LEVELS} for k, _, _ in KINDS}
    calibrated = {k: 0 for k, _, _ in KINDS}
    stated = {k: [] for k, _, _ in KINDS}  # the model's own "typical error" on its past surges
    no_estimate = {k: {lv.value: 0 for lv in LEVELS} for k, _, _ in KINDS}
    missed = {lv.value: 0 for lv in LEVELS}
    alert_after_onset: dict[str, list[float]] = {lv.value: [] for lv in LEVELS}
    true_lead: dict[str, list[float]] = {lv.value: [] for lv in LEVELS}
    # the detector's own forecast of the mention peak: most of the end-to-end error starts here
    mention_err: dict[str, tuple[list[float], list[float]]] = {lv.value: ([], []) for lv in LEVELS}
    fit_seconds: list[float] = []
    timing_world: tuple[World, Verdict] | None = None
    for i in range(args.worlds):
        world = make_world(np.random.default_rng((args.seed, i)))
        held = world.held_out
        firsts = first_verdicts(world)
        mention_normal = float(world.mention_normal[int((held.peak_at - START) // 60)])
        for level in LEVELS:
            v = firsts.get(level)
            if v is None:
                missed[level.value] += 1
                continue
            alert_after_onset[level.value].append((v.at + BUCKET - held.at) / 60)
            true_lead[level.value].append((world.true_peak("linear+linger")[0] - v.at - BUCKET) / 60)
            if v.forecast is not None:
                mention_err[level.value][0].append(v.forecast.peak_rate / (mention_normal * held.peak_ratio) - 1)
                mention_err[level.value][1].append((v.at + BUCKET + v.forecast.seconds_to_peak - held.peak_at) / 60)
        if timing_world is None and Severity.WARNING in firsts:
            timing_world = (world, firsts[Severity.WARNING])
        for kind, _, _ in KINDS:
            t0 = time.perf_counter()
            model = fit(world, kind)
            fit_seconds.append(time.perf_counter() - t0)
            if not model.calibrated:
                continue
            calibrated[kind] += 1
            stated[kind].append(math.exp(model.peak_error) - 1)
            peak_t, peak_multiple = world.true_peak(kind)
            at = held.at + PERFECT_FORECAST_AFTER
            p = predict_traffic(model, mention_peak_per_min=mention_normal * held.peak_ratio,
                                mention_normal_per_min=mention_normal, seconds_to_mention_peak=held.peak_at - at, at=at)
            assert p.multiple is not None and p.seconds_to_peak is not None
            model_only[kind][0].append(p.multiple / peak_multiple - 1)
            model_only[kind][1].append((at + p.seconds_to_peak - peak_t) / 60)
            for level, v in firsts.items():
                o = outlook_from(model, v, BUCKET, v.at + BUCKET)
                if o.multiple is None or o.seconds_to_peak is None:
                    no_estimate[kind][level.value] += 1
                    continue
                e2e[kind][level.value][0].append(o.multiple / peak_multiple - 1)
                e2e[kind][level.value][1].append((v.at + BUCKET + o.seconds_to_peak - peak_t) / 60)
    accuracy_s = time.perf_counter() - started
    timing = cached_call_timing(*timing_world) if timing_world is not None else {}

    n = args.worlds
    figures: dict[str, Any] = {"worlds": n, "seed": args.seed, "history_days": 29, "past_surges": len(PAST_SURGE_DAYS),
                               "model_only": {}, "end_to_end": {}, "detector": {}}
    print(f"traffic model on {n} synthetic worlds per response: 29 days of minutes with {len(PAST_SURGE_DAYS)} past "
          "surges, the 4th held out")
    print("errors: peak multiple predicted/true - 1 (|median|, p90 of size, bias = median sign); peak time "
          "predicted - true in min (negative: too early)")
    print()
    print(f"model alone, perfect mention forecast {PERFECT_FORECAST_AFTER / 60:.0f} min into the climb")
    print(f"  {'response':<31}{'calibrated':>11}{'|peak err|':>11}{'p90':>8}{'bias':>8}{'|time err|':>12}{'p90':>8}"
          f"{'bias':>8}{'stated ±':>10}")
    for kind, label, _ in KINDS:
        s = summarise(*model_only[kind])
        s["calibrated"] = calibrated[kind]
        s["stated_typical_err_pct"] = _pct(float(np.median(stated[kind]))) if stated[kind] else None
        figures["model_only"][kind] = s
        if s["n"]:
            print(f"  {label:<31}{calibrated[kind]:>8}/{n:<2}{s['peak_err_median_pct']:>10.1f}%"
                  f"{s['peak_err_p90_pct']:>7.1f}%{s['peak_bias_pct']:>+7.1f}%{s['time_err_median_min']:>8.1f} min"
                  f"{s['time_err_p90_min']:>8.1f}"
                  f"{s['time_bias_min']:>+8.1f}{s['stated_typical_err_pct']:>9.1f}%")
        else:
            print(f"  {label:<31}{calibrated[kind]:>8}/{n:<2}  (never calibrated)")
    print()
    print("detector (real SpikeDetector, two sources): first verdict of each level in the held-out surge")
    for level in LEVELS:
        lv = level.value
        after, lead = alert_after_onset[lv], true_lead[lv]
        d = {"reached": n - missed[lv],
             "alert_after_onset_median_min": round(float(np.median(after)), 1) if after else None,
             "lead_to_true_peak_median_min": round(float(np.median(lead)), 1) if lead else None,
             "mention_forecast": summarise(*mention_err[lv])}
        figures["detector"][lv] = d
        print(f"  {lv:<9} reached in {d['reached']}/{n}; median {d['alert_after_onset_median_min']} min after the "
              f"onset, {d['lead_to_true_peak_median_min']} min before the true traffic peak (visitors stay)")
        f = d["mention_forecast"]
        if f["n"]:
            print(f"            its forecast of the mention peak: median {f['peak_bias_pct']:+.1f}% "
                  f"(|err| {f['peak_err_median_pct']:.1f}%, p90 {f['peak_err_p90_pct']:.1f}%), peak time "
                  f"{f['time_bias_min']:+.1f} min (|err| {f['time_err_median_min']:.1f})")
    print()
    print("end to end: outlook_from(model, that verdict) vs the true peak")
    print(f"  {'response':<31}{'level':<10}{'n':>4}{'|peak err|':>11}{'p90':>8}{'bias':>8}{'|time err|':>12}{'p90':>8}"
          f"{'bias':>8}")
    for kind, label, _ in KINDS:
        figures["end_to_end"][kind] = {}
        for level in LEVELS:
            s = summarise(*e2e[kind][level.value])
            s["no_estimate"] = no_estimate[kind][level.value]
            figures["end_to_end"][kind][level.value] = s
            if s["n"]:
                print(f"  {label:<31}{level.value:<10}{s['n']:>4}{s['peak_err_median_pct']:>10.1f}%"
                      f"{s['peak_err_p90_pct']:>7.1f}%{s['peak_bias_pct']:>+7.1f}%{s['time_err_median_min']:>8.1f} min"
                      f"{s['time_err_p90_min']:>8.1f}{s['time_bias_min']:>+8.1f}")
            else:
                print(f"  {label:<31}{level.value:<10}{0:>4}  (no estimate)")
    print()
    figures["fit_s"] = {"median": round(statistics.median(fit_seconds), 3), "max": round(max(fit_seconds), 3),
                        "fits": len(fit_seconds)}
    figures["outlook_call"] = timing
    figures["accuracy_run_s"] = round(accuracy_s, 1)
    print(f"fit on 29 days of minutes: median {figures['fit_s']['median']:.3f} s, max {figures['fit_s']['max']:.3f} s "
          f"({len(fit_seconds)} fits)")
    if timing:
        print(f"traffic_outlook on SQLite: cold (CSV + store counts + fit + state write) {timing['cold_s']:.3f} s; "
              f"cached median {timing['cached_median_ms']:.2f} ms, p99 {timing['cached_p99_ms']:.2f} ms "
              f"({CACHED_CALLS} calls)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
