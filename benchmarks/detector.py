"""Detection-quality benchmark: the NAB backtest on ../shared/data/nab, out of sample first, next to the published
detectors.

Out of sample (realTweets): the design (which records, their parameters: ``surgewatch.backtest.replay.DESIGNS``) and the
threshold are chosen on four series and scored on the other two, over all 15 pairs (nested leave-2-out), and chosen
on the first half of every series and scored on the second (time split).  Then in-sample, leave-one-series-out of
the threshold only, the ablation, the early warning (each window's lead before its labelled point, false alarms per
series-week), the same at a quarter of the volume (thinned), the two-sided variant, and the cost per point.

Usage: python benchmarks/detector.py [NAB_DIR] [--quick] [--experiments]   (last line of output: one JSON object)
  --quick: skip the thinned run and the two-sided variant.
  --experiments: also the routes tried to close the out-of-sample gap that did not (issue 14), each on the same 15
  nested folds: the design chosen by an inner leave-one-out inside each fold's four series, ensembles of the designs'
  scores (no design choice), and a logistic regression stacked over the designs' scores, fitted on each fold's four
  series only.  Slow (minutes).
"""
from __future__ import annotations

import json
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from surgewatch.detector.spike import DetectorParams, SpikeDetector  # noqa: E402
from surgewatch.backtest import nab  # noqa: E402
from surgewatch.backtest.replay import (DESIGNS, PUBLISHED, _parse_time, design_factory, keeps_records,  # noqa: E402
                                        load_series, render_report, run_backtest, run_series)

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


def _nested_with(corpora: dict[str, list[nab.LabelledSeries]], profile: str, choose) -> float:
    """Leave-2-out over the six series as ``nab.score_nested``, with ``choose(train_indices)`` returning the design
    and the series it scores (a list aligned with the corpus) from the training series alone; the threshold is then
    chosen on those training series."""
    cost = nab.PROFILES[profile]
    first = next(iter(corpora.values()))
    n = len(first)
    totals, folds = [0.0] * n, [0] * n
    for held in combinations(range(n), 2):
        train = [i for i in range(n) if i not in held]
        scored = choose(train)
        _, threshold = nab.choose_design({"x": [scored[i] for i in train]}, profile)
        for i in held:
            totals[i] += nab.score_file(scored[i], cost, threshold)
            folds[i] += 1
    whole = nab.score_corpus(first, profile)
    return 100.0 * (sum(t / k for t, k in zip(totals, folds)) - whole.null) / (whole.perfect - whole.null)


def experiments(nab_dir: Path) -> dict:
    """Routes tried to close the gap between the nested score and the target (83 standard, 75 low FP); none did."""
    from sklearn.linear_model import LogisticRegression

    windows_by_file = json.loads((nab_dir / "combined_windows.json").read_text())
    files = sorted(f for f in windows_by_file if f.startswith("realTweets/") and (nab_dir / f).is_file())
    corpora: dict[str, list[nab.LabelledSeries]] = {d: [] for d in DESIGNS}
    for rel in files:
        _, times, values = load_series(nab_dir / rel)
        windows = nab.windows_from_timestamps(times, [(_parse_time(a), _parse_time(b)) for a, b in windows_by_file[rel]])
        for d, overrides in DESIGNS.items():
            corpora[d].append(nab.LabelledSeries(rel, run_series(times, values, design_factory(**overrides))[0], windows))

    def combined(names: list[str], how) -> list[nab.LabelledSeries]:
        return [nab.LabelledSeries(s.name, list(how(np.array([corpora[d][i].scores for d in names]))), s.windows)
                for i, s in enumerate(corpora[next(iter(DESIGNS))])]

    def inner_choice(profile: str):
        def choose(train: list[int]) -> list[nab.LabelledSeries]:
            # each design's threshold-only leave-one-out score on the four training series; the best design
            best = max(corpora, key=lambda d: nab.score_leave_one_out([corpora[d][i] for i in train], profile))
            return corpora[best]
        return choose

    features = [np.column_stack([np.array([corpora[d][i].scores for d in DESIGNS]).T,
                                 np.array([corpora[d][i].scores for d in DESIGNS]).T > 0]) for i in range(len(files))]
    targets = []
    for i, s in enumerate(corpora[next(iter(DESIGNS))]):
        y = np.zeros(len(s.scores), dtype=int)  # 1: a window's first half (up to its label), -1: ignored
        for left, right in s.windows:
            y[left:(left + right) // 2 + 1] = 1
            y[(left + right) // 2 + 1:right + 1] = -1
        y[:int(s.probation_rows)] = -1
        targets.append(y)

    def stacked(train: list[int]) -> list[nab.LabelledSeries]:
        x = np.vstack([features[i] for i in train])
        y = np.concatenate([targets[i] for i in train])
        model = LogisticRegression(C=0.01, class_weight="balanced", max_iter=2000).fit(x[y >= 0], y[y >= 0])
        out = []
        for i, s in enumerate(corpora[next(iter(DESIGNS))]):
            p = model.predict_proba(features[i])[:, 1]
            p[features[i][:, :len(DESIGNS)].max(axis=1) <= 0] = 0.0  # no design's record beaten: no alarm
            out.append(nab.LabelledSeries(s.name, list(p), s.windows))
        return out

    params = [d for d, o in DESIGNS.items() if keeps_records(o)]
    rows = {
        "design chosen by inner leave-one-out": {p: _nested_with(corpora, p, inner_choice(p)) for p in nab.PROFILES},
        "median of all designs' scores": {p: _nested_with(corpora, p, lambda _t: combined(list(DESIGNS), lambda a: np.median(a, 0)))
                                          for p in nab.PROFILES},
        "mean of all designs' scores": {p: _nested_with(corpora, p, lambda _t: combined(list(DESIGNS), lambda a: a.mean(0)))
                                        for p in nab.PROFILES},
        "median over the parameter variants": {p: _nested_with(corpora, p, lambda _t: combined(params, lambda a: np.median(a, 0)))
                                               for p in nab.PROFILES},
        "logistic regression stacked on the designs": {p: _nested_with(corpora, p, stacked) for p in nab.PROFILES},
    }
    out = {k: {p: round(v, 2) for p, v in r.items()} for k, r in rows.items()}
    # the ensembles gain on the nested folds but lose on the time split (their threshold does not carry from the
    # first halves to the second): not a design that beats the shipped one out of sample on both protocols
    for label, names in (("median of all designs' scores", list(DESIGNS)), ("median over the parameter variants", params)):
        corpus = combined(names, lambda a: np.median(a, 0))
        out[label]["time_split"] = {p: round(nab.score_time_split({"x": corpus}, p).normalised, 2) for p in nab.PROFILES}
    shipped = corpora[next(iter(DESIGNS))]
    out["first design fixed"] = {
        "time_split": {p: round(nab.score_time_split({"x": shipped}, p).normalised, 2) for p in nab.PROFILES}}
    return out


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    run_experiments = "--experiments" in argv
    args = [a for a in argv[1:] if a not in ("--quick", "--experiments")]
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
    if run_experiments:
        tried = experiments(nab_dir)
        print("routes tried that did not beat the nested score (realTweets, nested leave-2-out, same folds)")
        for label, r in tried.items():
            if "standard" in r:
                print(_row(f"  {label}", r))
            if "time_split" in r:
                print(_row(f"    {'time split' if 'standard' in r else label + ', time split'}", r["time_split"]))
        summary["experiments_nested_leave_2_out"] = tried
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
