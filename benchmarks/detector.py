"""Detection-quality benchmark: the NAB backtest on ../shared/data/nab, out of sample first, next to the published
detectors.

Out of sample (realTweets): the design (which records, their parameters: ``surgewatch.backtest.replay.DESIGNS``) and the
threshold are chosen on four series and scored on the other two, over all 15 pairs (nested leave-2-out), and chosen
on the first half of every series and scored on the second (time split).  Then in-sample, leave-one-series-out of
the threshold only, the ablation, the early warning (each window's lead before its labelled point, false alarms per
series-week), the same at a quarter of the volume (thinned), the two-sided variant, and the cost per point.

Usage: python benchmarks/detector.py [NAB_DIR] [--quick]   (last line of output: one JSON object)
  --quick: skip the thinned run and the two-sided variant.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from surgewatch.detector.spike import DetectorParams, SpikeDetector  # noqa: E402
from surgewatch.backtest.replay import DESIGNS, PUBLISHED, load_series, render_report, run_backtest  # noqa: E402

COST_LIMIT_US = 20.0  # the statistical stage's budget per point (issue 14)


def two_sided(bucket_seconds: int) -> SpikeDetector:
    return SpikeDetector(DetectorParams(bucket_seconds=bucket_seconds, two_sided=True))


def _row(label: str, sc: dict) -> str:
    return (f"{label:<44}{sc.get('standard', float('nan')):>10.1f}{sc.get('reward_low_FP', float('nan')):>10.1f}"
            f"{sc.get('reward_low_FN', float('nan')):>10.1f}")


def cost_per_point(nab_dir: Path, repeats: int = 3) -> float:
    """Best of ``repeats`` timed passes of the shipped detector over every realTweets series (µs per point)."""
    series = [load_series(p) for p in sorted((nab_dir / "realTweets").glob("*.csv"))]
    best = float("inf")
    for _ in range(repeats):
        rows = 0
        start = time.perf_counter()
        for _, times, values in series:
            det = SpikeDetector(DetectorParams(bucket_seconds=300))
            for t, v in zip(times, values):
                det.update(t, v)
            rows += len(values)
        best = min(best, 1e6 * (time.perf_counter() - start) / max(1, rows))
    return best


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    args = [a for a in argv[1:] if a != "--quick"]
    nab_dir = Path(args[0]) if args else REPO.parent / "shared" / "data" / "nab"
    labels = nab_dir / "combined_windows.json"
    if not labels.is_file():
        print(f"NAB data not found at {nab_dir}; nothing to benchmark", file=sys.stderr)
        return 2
    result = run_backtest(nab_dir, labels, nab_results=None, progress=False, designs=DESIGNS)
    print(render_report(result))
    print()
    summary: dict = {"out_of_sample": {c: {"nested_leave_2_out": p["nested"],
                                          "time_split": {k: v["second_half"] for k, v in p["time_split"].items()},
                                          "early_warning": p["early_warning"]}
                                      for c, p in result["protocols"].items()},
                     "in_sample": result["scores"], "leave_one_out_threshold_only": result["leave_one_out"],
                     "early_warning_in_sample": result["early_warning_in_sample"],
                     "restricted_design_spaces": {c: p["restricted"] for c, p in result["protocols"].items()},
                     "ablation": {c: p["ablation"] for c, p in result["protocols"].items()},
                     "thresholds": result["thresholds"]}
    if not quick:
        thinned = run_backtest(nab_dir, labels, nab_results=None, progress=False, designs=DESIGNS, thin=0.25)
        both = run_backtest(nab_dir, labels, nab_results=None, progress=False, factory=two_sided)
        print(f"{'':<44}{'standard':>10}{'low_FP':>10}{'low_FN':>10}")
        for category, p in thinned["protocols"].items():
            print(f"{category}, thinned to 25% of the mentions")
            print(_row("  nested leave-2-out", p["nested"]))
            print(_row("  in-sample", thinned["scores"][category]))
            ew = p["early_warning"]
            print(f"  early warning (nested): {ew['found']:g}/{ew['windows']:g} found, median lead "
                  f"{ew['median_lead_min']} min, {ew['false_alarms_per_series_week']} false alarms per series-week")
        for category in sorted(both["scores"]):
            print(_row(f"two-sided, {category}, in-sample", both["scores"][category]))
            print(_row("    leave one series out", both["leave_one_out"].get(category, {})))
        summary["thinned_0.25"] = {c: {"nested_leave_2_out": p["nested"], "early_warning": p["early_warning"]}
                                   for c, p in thinned["protocols"].items()}
        summary["two_sided"] = {"scores": both["scores"], "leave_one_out": both["leave_one_out"]}
    print("published, realTweets (all 10 series)")
    for name, (a, b, c) in PUBLISHED.items():
        print(f"  {name:<42}{a:>10.1f}{b:>10.1f}{c:>10.1f}")
    us = cost_per_point(nab_dir)
    print(f"cost of the shipped detector: {us:.1f} us per point (budget {COST_LIMIT_US:g})")
    summary["us_per_point"] = round(us, 2)
    summary["us_per_point_budget"] = COST_LIMIT_US
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
