"""Detection-quality benchmark: the NAB backtest on ../shared/data/nab next to the published detectors.

Runs the shipped detector (one-sided score: surges) and the two-sided variant (also new lows, for series where
drops matter, such as NAB's realKnownCause), in-sample and leave-one-series-out.

Usage: python benchmarks/detector.py [NAB_DIR]   (last line of output: one JSON object)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from surgewatch.detector.spike import DetectorParams, SpikeDetector  # noqa: E402
from surgewatch.backtest.replay import PUBLISHED, render_report, run_backtest  # noqa: E402


def two_sided(bucket_seconds: int) -> SpikeDetector:
    return SpikeDetector(DetectorParams(bucket_seconds=bucket_seconds, two_sided=True))


def _row(label: str, sc: dict) -> str:
    return (f"{label:<40}{sc.get('standard', float('nan')):>10.1f}{sc.get('reward_low_FP', float('nan')):>10.1f}"
            f"{sc.get('reward_low_FN', float('nan')):>10.1f}")


def main(argv: list[str]) -> int:
    nab_dir = Path(argv[1]) if len(argv) > 1 else REPO.parent / "shared" / "data" / "nab"
    labels = nab_dir / "combined_windows.json"
    if not labels.is_file():
        print(f"NAB data not found at {nab_dir}; nothing to benchmark", file=sys.stderr)
        return 2
    result = run_backtest(nab_dir, labels, nab_results=None, progress=False)
    both = run_backtest(nab_dir, labels, nab_results=None, progress=False, factory=two_sided)
    print(render_report(result))
    print()
    print(f"{'':<40}{'standard':>10}{'low_FP':>10}{'low_FN':>10}")
    for category in sorted(result["scores"]):
        print(category)
        print(_row("  surgewatch (shipped, one-sided)", result["scores"][category]))
        print(_row("    leave one series out", result["leave_one_out"].get(category, {})))
        print(_row("  surgewatch two-sided", both["scores"][category]))
        print(_row("    leave one series out", both["leave_one_out"].get(category, {})))
    print("published, realTweets (all 10 series)")
    for name, (a, b, c) in PUBLISHED.items():
        print(f"  {name:<38}{a:>10.1f}{b:>10.1f}{c:>10.1f}")
    summary = {"scores": result["scores"], "leave_one_out": result["leave_one_out"],
               "two_sided": {"scores": both["scores"], "leave_one_out": both["leave_one_out"]},
               "us_per_point": result["us_per_point"], "thresholds": result["thresholds"]}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
