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
from typing import Iterable, Sequence

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
NAB_PROFILE_NAMES = {"standard": "standard", "reward_low_FP": "reward_low_FP_rate", "reward_low_FN": "reward_low_FN_rate"}


@dataclass(frozen=True)
class LabelledSeries:
    """One file's anomaly scores and its windows as inclusive row ranges ``(first_row, last_row)``."""

    name: str
    scores: Sequence[float]
    windows: Sequence[tuple[int, int]]


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


@dataclass(frozen=True)
class _Point:
    score: float
    weight: float  # the row's contribution if it is detected (positive in a window, negative outside)
    window: int | None  # global window id, None outside windows


def _sweep_points(series: LabelledSeries, cost: CostMatrix, first_window_id: int) -> list[_Point]:
    """Weight every scorable row as if it were detected (NAB ``calcSweepScore``)."""
    n = len(series.scores)
    probation = probation_rows(n)
    in_window: dict[int, tuple[int, int, int]] = {}
    for wid, (left, right) in enumerate(sorted(series.windows)):
        for i in range(left, right + 1):
            in_window[i] = (first_window_id + wid, left, right)
    points: list[_Point] = []
    prev_right: int | None = None
    prev_width = 0.0
    for i, score in enumerate(series.scores):
        hit = in_window.get(i)
        if hit is not None:
            wid, left, right = hit
            width = float(right - left + 1)
            weight = scaled_sigmoid(-(right - i + 1) / width) * cost.tp / _MAX_TP
            if i == right:
                prev_right, prev_width = right, width
        else:
            wid = None
            if prev_right is None:
                weight = -1.0 * cost.fp  # no window before: "really far away", as NAB's sweeper says
            else:
                # NAB divides by (width - 1) here; a one-row window would divide by zero there too.
                position = abs(prev_right - i) / max(prev_width - 1.0, 1.0)
                weight = scaled_sigmoid(position) * cost.fp
        if i >= probation:
            points.append(_Point(score, weight, wid))
    return points


def _windows_scored(series: LabelledSeries) -> int:
    """Windows with at least one row past the probation: only these count against the null detector."""
    probation = probation_rows(len(series.scores))
    return sum(1 for _, right in series.windows if right >= probation)


def _best_threshold(points: list[_Point], cost: CostMatrix, n_windows: int) -> tuple[float, float]:
    """Sweep thresholds from high to low over the pooled points (NAB ``calcScoreByThreshold``)."""
    ordered = sorted(points, key=lambda p: p.score, reverse=True)
    window_best: dict[int, float] = {}
    fp_sum = 0.0
    tp_sum = 0.0  # sum over detected windows of their best weight
    n_detected = 0
    best_threshold, best_score = 1.1, -cost.fn * n_windows
    i = 0
    while i < len(ordered):
        threshold = ordered[i].score
        # Every row at this score switches on together.
        while i < len(ordered) and ordered[i].score == threshold:
            p = ordered[i]
            if p.window is None:
                fp_sum += p.weight
            else:
                old = window_best.get(p.window)
                if old is None:
                    window_best[p.window] = p.weight
                    tp_sum += p.weight
                    n_detected += 1
                elif p.weight > old:
                    window_best[p.window] = p.weight
                    tp_sum += p.weight - old
            i += 1
        score = fp_sum + tp_sum - cost.fn * (n_windows - n_detected)
        if score > best_score:
            best_threshold, best_score = threshold, score
    return best_threshold, best_score


def score_file(series: LabelledSeries, cost: CostMatrix, threshold: float) -> float:
    """Raw NAB score of one file with detections ``score >= threshold``."""
    total = 0.0
    best: dict[int, float] = {}
    for p in _sweep_points(series, cost, 0):
        if p.score < threshold:
            continue
        if p.window is None:
            total += p.weight
        else:
            best[p.window] = max(best.get(p.window, -math.inf), p.weight)
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
    points: list[_Point] = []
    null_points: list[_Point] = []
    n_windows = 0
    for s in series:
        pts = _sweep_points(s, cost, n_windows)
        points.extend(pts)
        null_points.extend(_Point(0.5, p.weight, p.window) for p in pts)
        n_windows += len(s.windows)
    scored_windows = sum(_windows_scored(s) for s in series)
    threshold, raw = _best_threshold(points, cost, scored_windows)
    _, null = _best_threshold(null_points, cost, scored_windows)
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
    cost = PROFILES[profile]
    whole = score_corpus(series, profile)
    raw = 0.0
    for i, held_out in enumerate(series):
        threshold = score_corpus([s for j, s in enumerate(series) if j != i], profile).threshold
        raw += score_file(held_out, cost, threshold)
    return 100.0 * (raw - whole.null) / (whole.perfect - whole.null)
