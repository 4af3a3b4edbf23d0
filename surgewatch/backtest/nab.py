"""The Numenta Anomaly Benchmark's published scoring, re-implemented without pandas.

NAB (github.com/numenta/NAB, v1.1 "sweeper" scorer) scores a detector over a corpus of labelled series:

* the first 15% of each file (at most 750 rows) is a probationary period and is not scored;
* each labelled window earns the scaled sigmoid of the position of its *first* detection
  (``2*sigmoid(-5*pos) - 1`` divided by its value at the window's left edge, so a detection on the window's
  first row is worth exactly ``tpWeight``); a window with no detection costs ``fnWeight``;
* every detected row outside a window costs ``fpWeight`` times the scaled sigmoid of its distance past the
  preceding window (rows before any window, or 3+ window widths past one, cost the full ``fpWeight``);
* the threshold that turns anomaly scores into detections (``score >= threshold``) is the one that maximises
  the summed raw score over all files of the corpus;
* the raw score is normalised to 100 for a perfect detector and 0 for the null detector (NAB's null detector
  outputs 0.5 everywhere and gets the same threshold optimisation, which leaves it with no detections).

The arithmetic follows NAB's ``nab/sweeper.py`` (including its ``width - 1`` in the false-positive distance) so
the numbers agree with the official scorer run on the files written by ``--nab-results``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable, Mapping, Sequence

import numpy as np

PROBATION_PERCENT = 0.15
# NAB caps the probation at 15% of 5000 rows (nab/sweeper.py ``_getProbationaryLength``).
PROBATION_CAP_ROWS = PROBATION_PERCENT * 5000


@dataclass(frozen=True)
class CostMatrix:
    tp: float
    fp: float
    fn: float


# config/profiles.json in NAB v1.1; the short names are the keys of our reports.
PROFILES: dict[str, CostMatrix] = {
    "standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP": CostMatrix(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN": CostMatrix(tp=1.0, fp=0.11, fn=2.0),
}


@dataclass(frozen=True)
class LabelledSeries:
    """One file's anomaly scores and its windows as inclusive row ranges ``(first_row, last_row)``."""

    name: str
    scores: Sequence[float]
    windows: Sequence[tuple[int, int]]
    # rows not scored at the start; None: NAB's own (15%, at most 750).  The second half of a time split is 0: its
    # detector has run through the first half already
    probation: float | None = None

    @property
    def probation_rows(self) -> float:
        return probation_rows(len(self.scores)) if self.probation is None else self.probation


def scaled_sigmoid(position: float) -> float:
    """NAB's weighting: about 1 at a window's left edge (-1), 0 at its right edge (0), -1 far past it."""
    if position > 3.0:  # as NAB's sweeper: exactly 3.0 past a window still goes through the sigmoid
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probation_rows(n_rows: int) -> float:
    return min(math.floor(PROBATION_PERCENT * n_rows), PROBATION_CAP_ROWS)


def windows_from_timestamps(timestamps: Sequence[float], limits: Iterable[tuple[float, float]]) -> list[tuple[int, int]]:
    """Row ranges of windows given as (start, end) times; rows with start <= t <= end belong to the window."""
    out = []
    for start, end in limits:
        rows = [i for i, t in enumerate(timestamps) if start <= t <= end]
        if rows:
            out.append((rows[0], rows[-1]))
    return out


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # per scored row: score, weight if detected, window id (-1: none)


def _scaled_sigmoid_array(position: np.ndarray) -> np.ndarray:
    return np.where(position > 3.0, -1.0, 2.0 / (1.0 + np.exp(np.minimum(5.0 * position, 700.0))) - 1.0)


def _sweep_points(series: LabelledSeries, cost: CostMatrix, first_window_id: int) -> Arrays:
    """Weight every scorable row as if it were detected (NAB ``calcSweepScore``): scores, weights and window ids
    (-1 outside windows) of the rows past the probation."""
    n = len(series.scores)
    probation = series.probation_rows
    rows = np.arange(n)
    window = np.full(n, -1, dtype=np.int64)
    weight = np.full(n, -cost.fp)  # no window before: "really far away", as NAB's sweeper says
    ordered = sorted(series.windows)
    for wid, (left, right) in enumerate(ordered):
        width = float(right - left + 1)
        inside = rows[left:right + 1]
        window[left:right + 1] = first_window_id + wid
        weight[left:right + 1] = _scaled_sigmoid_array(-(right - inside + 1) / width) * cost.tp / _MAX_TP
    if ordered:
        rights = np.array([r for _, r in ordered])
        widths = np.array([float(r - l + 1) for l, r in ordered])
        outside = np.flatnonzero(window < 0)
        prev = np.searchsorted(rights, outside, side="left") - 1  # the last window that ended before the row
        after = outside[prev >= 0]
        k = prev[prev >= 0]
        # NAB divides by (width - 1) here; a one-row window would divide by zero there too.
        position = np.abs(rights[k] - after) / np.maximum(widths[k] - 1.0, 1.0)
        weight[after] = _scaled_sigmoid_array(position) * cost.fp
    keep = rows >= probation
    return np.asarray(series.scores, dtype=float)[keep], weight[keep], window[keep]


def _windows_scored(series: LabelledSeries) -> int:
    """Windows with at least one row past the probation: only these count against the null detector."""
    probation = series.probation_rows
    return sum(1 for _, right in series.windows if right >= probation)


def _best_threshold(arrays: Arrays, cost: CostMatrix, n_windows: int, midpoint: bool = False) -> tuple[float, float]:
    """Sweep thresholds from high to low over the pooled points (NAB ``calcScoreByThreshold``): every row at one
    score switches on together; a window counts once, with the best weight among its detected rows."""
    score, weight, window = arrays
    best_threshold, best_score = 1.1, -cost.fn * n_windows
    if len(score) == 0:
        return best_threshold, best_score
    order = np.argsort(-score, kind="stable")
    score, weight, window = score[order], weight[order], window[order]
    outside = window < 0
    gain = np.where(outside, weight, 0.0)  # false positives add their (negative) weight when switched on
    detected = np.zeros(len(score))
    inside = np.flatnonzero(~outside)
    if len(inside):
        # per window, the running best weight in sweep order: group by window (stable), accumulate the maximum with
        # an offset per group so that groups do not mix (weights are within [-1, 1] times the profile's tp)
        ids = window[inside]
        by_window = inside[np.argsort(ids, kind="stable")]
        groups = np.unique(window[by_window], return_inverse=True)[1]
        offset = groups * 10.0 * (abs(cost.tp) + 1.0)
        running = np.maximum.accumulate(weight[by_window] + offset) - offset
        first = np.ones(len(by_window), dtype=bool)
        first[1:] = groups[1:] != groups[:-1]
        previous = np.concatenate(([0.0], running[:-1]))
        gain[by_window] = np.where(first, running, running - previous)
        detected[by_window[first]] = 1.0
    total = np.cumsum(gain) - cost.fn * (n_windows - np.cumsum(detected))
    last_of_score = np.ones(len(score), dtype=bool)
    last_of_score[:-1] = score[1:] != score[:-1]
    candidates = np.flatnonzero(last_of_score)
    k = candidates[int(np.argmax(total[candidates]))]
    if total[k] > best_score:
        best_threshold, best_score = float(score[k]), float(total[k])
        if midpoint:
            # every threshold down to the next lower score scores the same here: take the middle of that interval,
            # not its top edge, so that a new series' burst scoring a little below the training ones still counts
            below = float(score[k + 1]) if k + 1 < len(score) else 0.0
            best_threshold = 0.5 * (best_threshold + below)
    return best_threshold, best_score


def score_file(series: LabelledSeries, cost: CostMatrix, threshold: float) -> float:
    """Raw NAB score of one file with detections ``score >= threshold``."""
    score, weight, window = _sweep_points(series, cost, 0)
    on = score >= threshold
    total = float(weight[on & (window < 0)].sum())
    hits = on & (window >= 0)
    best: dict[int, float] = {}
    for w, x in zip(window[hits].tolist(), weight[hits].tolist()):
        best[w] = max(best.get(w, -math.inf), x)
    n_windows = _windows_scored(series)
    return total + sum(best.values()) - cost.fn * (n_windows - len(best))


@dataclass(frozen=True)
class CorpusScore:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def normalised(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def score_corpus(series: Sequence[LabelledSeries], profile: str) -> CorpusScore:
    """Optimise the threshold over the whole corpus and normalise between the null and perfect detectors."""
    cost = PROFILES[profile]
    parts = []
    n_windows = 0
    for s in series:
        parts.append(_sweep_points(s, cost, n_windows))
        n_windows += len(s.windows)
    points = tuple(np.concatenate([p[j] for p in parts]) for j in range(3))
    scored_windows = sum(_windows_scored(s) for s in series)
    threshold, raw = _best_threshold(points, cost, scored_windows)
    _, null = _best_threshold((np.full(len(points[0]), 0.5), points[1], points[2]), cost, scored_windows)
    # NAB's perfect score counts every labelled window, probation or not.
    perfect = n_windows * cost.tp
    return CorpusScore(profile, threshold, raw, null, perfect)


def score_all_profiles(series: Sequence[LabelledSeries]) -> dict[str, CorpusScore]:
    return {name: score_corpus(series, name) for name in PROFILES}


def score_leave_one_out(series: Sequence[LabelledSeries], profile: str) -> float:
    """Normalised score when each file is scored at the threshold optimised on the *other* files.

    The in-sample score picks the threshold with the answers in view; this is the honest estimate of how the
    same detector does on a series it was not tuned on.  The held-out raw scores are summed and normalised
    with the whole corpus's null and perfect scores, so the two numbers are on the same scale."""
    if len(series) < 2:
        raise ValueError("leave-one-out needs at least two files")
    return score_nested({"": series}, profile, leave_out=1, midpoint=False).normalised


# -- honest protocols: every design choice made on series (or times) other than those scored -----------------
# ``designs`` maps a design's name to the corpus as that design scores it: the same series, in the same order,
# with the same windows.  A design is anything chosen by looking at labels (which records, their parameters);
# the threshold is chosen with it.

@dataclass(frozen=True)
class Choice:
    design: str
    threshold: float
    train: tuple[str, ...]  # the series the choice was made on
    scored: tuple[str, ...]  # the series it was then scored on


def choose_design(designs: Mapping[str, Sequence[LabelledSeries]], profile: str,
                  midpoint: bool = True) -> tuple[str, float]:
    """The design and threshold with the best pooled NAB score on the series given (and on nothing else).

    Ties go to the design listed first, so list the simplest first.  ``midpoint``: the threshold is the middle of
    the interval of thresholds that score best (NAB's sweep reports its top edge, which sits exactly on the
    lowest-scoring detected row and so misses a held-out burst that scores a hair lower)."""
    return _choose(designs, profile, {}, midpoint)


def _choose(designs: Mapping[str, Sequence[LabelledSeries]], profile: str,
            cache: dict[tuple[int, str], Arrays], midpoint: bool = True) -> tuple[str, float]:
    cost = PROFILES[profile]
    best: tuple[float, str, float] | None = None
    for name, corpus in designs.items():
        parts = []
        for s in corpus:
            key = (id(s), profile)
            arrays = cache.get(key)
            if arrays is None:
                # window ids unique across the cache, so across any pool of its series
                arrays = cache[key] = _sweep_points(s, cost, 1000 * len(cache))
            parts.append(arrays)
        pooled = tuple(np.concatenate([a[j] for a in parts]) for j in range(3))
        threshold, raw = _best_threshold(pooled, cost, sum(_windows_scored(s) for s in corpus), midpoint)
        if best is None or raw > best[0] + 1e-9:
            best = (raw, name, threshold)
    if best is None:
        raise ValueError("no design to choose from")
    return best[1], best[2]


def _check_aligned(designs: Mapping[str, Sequence[LabelledSeries]]) -> list[str]:
    names = None
    for corpus in designs.values():
        these = [s.name for s in corpus]
        if names is not None and these != names:
            raise ValueError("every design must score the same series in the same order")
        names = these
    if not names:
        raise ValueError("no series")
    return names


@dataclass(frozen=True)
class NestedScore:
    profile: str
    normalised: float
    choices: tuple[Choice, ...]
    held_out_raw: dict[str, float]  # each series' raw score, averaged over the folds that held it out


def score_nested(designs: Mapping[str, Sequence[LabelledSeries]], profile: str, leave_out: int = 2,
                 midpoint: bool = True) -> NestedScore:
    """Leave-``leave_out``-out over every combination of series: each fold chooses the design and the threshold on
    the other series only (``choose_design``) and scores the held-out ones at that choice.

    Each series is held out in several folds; its raw score is the mean over them, the means are summed and
    normalised with the whole corpus's null and perfect scores, as ``score_leave_one_out`` does.  With six
    series and ``leave_out=2``: 15 folds, each choosing on four series; each series scored in five of them."""
    names = _check_aligned(designs)
    n = len(names)
    if not 1 <= leave_out < n:
        raise ValueError(f"leave_out must be between 1 and {n - 1} for {n} series")
    cost = PROFILES[profile]
    totals = [0.0] * n
    folds = [0] * n
    choices = []
    cache: dict[tuple[int, str], Arrays] = {}  # each series' weighted rows, swept once per profile
    for held in combinations(range(n), leave_out):
        train = [i for i in range(n) if i not in held]
        name, threshold = _choose({d: [c[i] for i in train] for d, c in designs.items()}, profile, cache, midpoint)
        for i in held:
            totals[i] += score_file(designs[name][i], cost, threshold)
            folds[i] += 1
        choices.append(Choice(name, threshold, tuple(names[i] for i in train), tuple(names[i] for i in held)))
    whole = score_corpus(next(iter(designs.values())), profile)
    raw = {names[i]: totals[i] / folds[i] for i in range(n)}
    normalised = 100.0 * (sum(raw.values()) - whole.null) / (whole.perfect - whole.null)
    return NestedScore(profile, normalised, tuple(choices), raw)


def split_in_time(series: LabelledSeries) -> tuple[LabelledSeries, LabelledSeries]:
    """The first and second half of a series, cut at the middle row or the nearest row outside every window.

    The first half keeps NAB's probation; the second has none (its detector has seen the first half)."""
    n = len(series.scores)
    inside = set()
    for left, right in series.windows:
        inside.update(range(left, right + 1))
    mid = n // 2
    for k in range(n):
        if mid - k >= 1 and mid - k not in inside:
            mid = mid - k
            break
        if mid + k < n and mid + k not in inside:
            mid = mid + k
            break
    first = LabelledSeries(series.name, list(series.scores[:mid]), [w for w in series.windows if w[1] < mid])
    second = LabelledSeries(series.name, list(series.scores[mid:]),
                            [(a - mid, b - mid) for a, b in series.windows if a >= mid], probation=0.0)
    return first, second


@dataclass(frozen=True)
class TimeSplitScore:
    profile: str
    normalised: float  # second halves, at the design and threshold chosen on the first halves
    in_sample: float  # second halves, choosing on the second halves themselves (for contrast)
    choice: Choice


def score_time_split(designs: Mapping[str, Sequence[LabelledSeries]], profile: str) -> TimeSplitScore:
    """Choose the design and threshold on the first half of every series, score the second halves."""
    names = _check_aligned(designs)
    halves = {d: [split_in_time(s) for s in corpus] for d, corpus in designs.items()}
    name, threshold = choose_design({d: [h[0] for h in hs] for d, hs in halves.items()}, profile)
    second = [h[1] for h in halves[name]]
    cost = PROFILES[profile]
    whole = score_corpus(second, profile)
    raw = sum(score_file(s, cost, threshold) for s in second)
    best = max(score_corpus([h[1] for h in hs], profile).normalised for hs in halves.values())
    return TimeSplitScore(profile, 100.0 * (raw - whole.null) / (whole.perfect - whole.null), best,
                          Choice(name, threshold, tuple(f"{x} (first half)" for x in names),
                                 tuple(f"{x} (second half)" for x in names)))
