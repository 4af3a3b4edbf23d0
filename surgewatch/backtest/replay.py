"""Run the spike detector over NAB-format series and score it the way NAB does.

Input layout (as in NAB): ``DIR/<category>/<file>.csv`` with a ``timestamp,value`` header, and a windows JSON
``{"<category>/<file>.csv": [["start", "end"], ...]}``.  Each series gets its own detector with
``bucket_seconds`` taken from the series' own spacing; the anomaly score NAB sees is ``verdict.score``.

``thin`` replays the count series as if the brand were smaller: each mention is kept with probability ``thin``
(binomial thinning; a thinned Poisson stream is Poisson, so the bursts keep their shape and lose counts).  Six
series are few, and the leave-one-out figure swings by points when one window's score crosses the threshold;
the same labels at a quarter or a tenth of the volume check that a change holds where counts are small, as for
most brands.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from surgewatch.detector.spike import DetectorParams, SpikeDetector
from surgewatch.backtest.replay import nab

DETECTOR_NAME = "surgewatch"
WEEK_S = 7 * 86400.0


def _parse_time(text: str) -> float:
    # NAB timestamps are naive; read them as UTC so that hour-of-day is the file's own clock.
    return datetime.fromisoformat(text.strip()).replace(tzinfo=timezone.utc).timestamp()


def load_series(path: Path) -> tuple[list[str], list[float], list[float]]:
    raw_times: list[str] = []
    values: list[float] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected a 'timestamp,value' header, got {header!r}")
        for row in reader:
            if not row:
                continue
            raw_times.append(row[0])
            values.append(float(row[1]))
    return raw_times, [_parse_time(t) for t in raw_times], values


def bucket_seconds_of(times: list[float]) -> int:
    steps = [b - a for a, b in zip(times, times[1:]) if b > a]
    return max(1, int(round(statistics.median(steps)))) if steps else 60


def thin_counts(values: list[float], fraction: float, seed: int | list[int]) -> list[float] | None:
    """Each mention kept with probability ``fraction``; None when the values are not counts (then nothing to thin)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"thin must be in (0, 1], got {fraction}")
    if any(v < 0 or v != int(v) for v in values):
        return None
    rng = np.random.default_rng(seed)
    return [float(x) for x in rng.binomial(np.asarray(values, dtype=np.int64), fraction)]


DetectorFactory = Callable[[int], SpikeDetector]


def default_factory(bucket_seconds: int) -> SpikeDetector:
    return SpikeDetector(DetectorParams(bucket_seconds=bucket_seconds))


def run_series(times: list[float], values: list[float], factory: DetectorFactory = default_factory) -> tuple[list[float], float]:
    """Anomaly score per row, and the microseconds spent per row."""
    det = factory(bucket_seconds_of(times))
    scores = []
    start = time.perf_counter()
    for t, v in zip(times, values):
        scores.append(det.update(t, v).score)
    elapsed = time.perf_counter() - start
    return scores, 1e6 * elapsed / max(1, len(values))


def _onsets(flags: list[bool]) -> list[int]:
    return [i for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1])]


def run_backtest(data_dir: Path, labels: Path, *, nab_results: Path | None = None, progress: bool = False,
                 factory: DetectorFactory = default_factory, thin: float | None = None, seed: int = 0) -> dict:
    data_dir = Path(data_dir)
    windows_by_file: dict[str, list[list[str]]] = json.loads(Path(labels).read_text())
    series_info: list[dict[str, Any]] = []
    by_category: dict[str, list[nab.LabelledSeries]] = {}
    total_us = 0.0
    total_rows = 0
    for rel in sorted(windows_by_file):
        path = data_dir / rel
        if not path.is_file():
            continue
        category = rel.split("/")[0]
        raw_times, times, values = load_series(path)
        if thin is not None:
            thinned = thin_counts(values, thin, [seed, zlib.crc32(rel.encode())])  # each file its own draw
            if thinned is None:
                continue  # not a count series: "a smaller brand" means nothing for a temperature
            values = thinned
        scores, us = run_series(times, values, factory)
        total_us += us * len(values)
        total_rows += len(values)
        limits = [(_parse_time(a), _parse_time(b)) for a, b in windows_by_file[rel]]
        windows = nab.windows_from_timestamps(times, limits)
        s = nab.LabelledSeries(rel, scores, windows)
        by_category.setdefault(category, []).append(s)
        series_info.append({"file": rel, "category": category, "times": times, "series": s, "us_per_point": us})
        if nab_results is not None:
            _write_nab_result(Path(nab_results), rel, raw_times, values, scores)
        if progress:
            print(f"  {rel}: {len(values)} rows, {us:.1f} us/point", file=sys.stderr)

    scores_out: dict[str, dict[str, float]] = {}
    loo_out: dict[str, dict[str, float]] = {}
    thresholds: dict[str, dict[str, float]] = {}
    for category, group in sorted(by_category.items()):
        results = nab.score_all_profiles(group)
        scores_out[category] = {name: round(r.normalised, 2) for name, r in results.items()}
        thresholds[category] = {name: r.threshold for name, r in results.items()}
        if len(group) >= 2:
            loo_out[category] = {name: round(nab.score_leave_one_out(group, name), 2) for name in nab.PROFILES}

    per_series = []
    for info in series_info:
        s: nab.LabelledSeries = info["series"]
        times = info["times"]
        threshold = thresholds[info["category"]]["standard"]
        flags = [x >= threshold for x in s.scores]
        probation = nab.probation_rows(len(times))
        delays: list[float | None] = []
        in_window = set()
        for left, right in s.windows:
            in_window.update(range(left, right + 1))
            first = next((i for i in range(max(left, int(probation)), right + 1) if flags[i]), None)
            delays.append(None if first is None else times[first] - times[left])
        false_alarms = [i for i in _onsets(flags) if i >= probation and i not in in_window]
        scored_span = times[-1] - times[min(int(probation), len(times) - 1)]
        per_series.append({
            "file": info["file"],
            "category": info["category"],
            "delays_s": delays,
            "false_alarms": len(false_alarms),
            "false_alarm_times": [datetime.fromtimestamp(times[i], timezone.utc).strftime("%Y-%m-%d %H:%M") for i in false_alarms],
            "false_alarms_per_week": round(len(false_alarms) * WEEK_S / scored_span, 2) if scored_span > 0 else 0.0,
            "us_per_point": round(info["us_per_point"], 2),
        })
    return {
        "detector": DETECTOR_NAME,
        "thin": thin,
        "scores": scores_out,
        "leave_one_out": loo_out,
        "thresholds": thresholds,
        "us_per_point": round(total_us / max(1, total_rows), 2),
        "series": per_series,
    }


def _write_nab_result(out: Path, rel: str, raw_times: list[str], values: list[float], scores: list[float]) -> None:
    category, filename = rel.split("/", 1)
    target = out / DETECTOR_NAME / category / f"{DETECTOR_NAME}_{filename}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for t, v, s in zip(raw_times, values, scores):
            w.writerow([t, repr(v) if v != int(v) else int(v), repr(s)])


PUBLISHED = {  # NAB scoreboard, realTweets (standard, reward_low_FP, reward_low_FN)
    "ARTime": (83.2, 74.6, 88.8),
    "contextOSE": (74.5, 73.1, 76.9),
    "Numenta HTM": (69.3, 63.5, 73.5),
    "Twitter ADVec": (59.6, 35.8, 69.0),
    "windowed Gaussian": (51.4, 16.3, 64.6),
}


def render_report(result: dict) -> str:
    lines = ["NAB scores (normalised: null detector 0, perfect 100; threshold optimised per category)"]
    if result.get("thin") is not None:
        lines.append(f"count series thinned to {100 * result['thin']:g}% of their mentions (a smaller brand)")
    lines += [f"{'category':<18}{'standard':>10}{'low_FP':>10}{'low_FN':>10}"]
    for category, sc in result["scores"].items():
        lines.append(f"{category:<18}{sc['standard']:>10.1f}{sc['reward_low_FP']:>10.1f}{sc['reward_low_FN']:>10.1f}")
    loo = result.get("leave_one_out") or {}
    if loo:
        lines.append("leave one series out (threshold optimised on the other series of the category):")
        for category, sc in loo.items():
            lines.append(f"{category:<18}{sc['standard']:>10.1f}{sc['reward_low_FP']:>10.1f}{sc['reward_low_FN']:>10.1f}")
    lines.append("published on realTweets (all 10 series):")
    for name, (a, b, c) in PUBLISHED.items():
        lines.append(f"  {name:<16}{a:>10.1f}{b:>10.1f}{c:>10.1f}")
    lines.append(f"cost: {result['us_per_point']:.1f} us per point")
    lines.append("")
    lines.append("per series (standard threshold): detection delay from each window's start; false alarms outside windows")
    for s in result["series"]:
        delays = ", ".join("missed" if d is None else f"{d / 3600:.1f}h" for d in s["delays_s"])
        lines.append(f"  {s['file']:<58} delays [{delays}]  false alarms {s['false_alarms']} "
                     f"({s['false_alarms_per_week']:.2f}/week)  {s['us_per_point']:.1f} us/pt")
    return "\n".join(lines)
