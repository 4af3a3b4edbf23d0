"""Detection-quality benchmark: the NAB backtest on ../shared/data/nab next to the published detectors.

Usage: python benchmarks/detector.py [NAB_DIR]   (last line of output: one JSON object)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from surgewatch.backtest import PUBLISHED, render_report, run_backtest  # noqa: E402


def main(argv: list[str]) -> int:
    nab_dir = Path(argv[1]) if len(argv) > 1 else REPO.parent / "shared" / "data" / "nab"
    labels = nab_dir / "combined_windows.json"
    if not labels.is_file():
        print(f"NAB data not found at {nab_dir}; nothing to benchmark", file=sys.stderr)
        return 2
    result = run_backtest(nab_dir, labels, nab_results=None, progress=False)
    print(render_report(result))
    tweets = result["scores"].get("realTweets", {})
    print()
    print(f"{'realTweets':<32}{'standard':>10}{'low_FP':>10}{'low_FN':>10}")
    print(f"{'surgewatch (6 series)':<32}{tweets.get('standard', float('nan')):>10.1f}"
          f"{tweets.get('reward_low_FP', float('nan')):>10.1f}{tweets.get('reward_low_FN', float('nan')):>10.1f}")
    for name, (a, b, c) in PUBLISHED.items():
        print(f"{name + ' (10 series)':<32}{a:>10.1f}{b:>10.1f}{c:>10.1f}")
    summary = {"scores": result["scores"], "us_per_point": result["us_per_point"],
               "thresholds": result["thresholds"]}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
