"""From mentions to site traffic: a model calibrated on the brand's own history.  Pure: numbers in, model out.

Ops do not act on "25x mentions"; they act on "about 6x normal traffic in ~25 minutes".  How much traffic
a mention brings differs by brand and by site (a link in every post, or none), so the mapping is learnt
from the brand's own past: the site's requests per minute and the brand's mentions over the same weeks.

The model, on a common grid of ``grid_seconds`` (the coarser of the mention bucket and the traffic step):

* **Normal traffic** per hour of the week (Monday 00:00 local first): the *median* of the site's (5-minute
  smoothed) requests per minute in that hour over the weeks of history.  A surge fills one hour slot in one
  week out of four, so it cannot move the median; a mean would be inflated by every past surge.  A slot seen in
  fewer than two weeks falls back to the median of its hour of day, then to the overall median.  Day-to-day
  drift (growth, holidays) is the daily median of the log ratio to that profile, removed before fitting, and the
  last day's level is kept to scale the profile at prediction time.
* **Excess ratios**: traffic ``y = traffic / normal``; mentions ``x = (rate + c) / (normal + c)`` with the
  mention baseline learnt the same way and a pseudo-rate ``c`` of one mention per smoothing window, so a
  brand that is usually silent does not divide by zero (the same ``c`` is used when predicting).
* **Past surges**: runs where smoothed mentions stay above ``EXCURSION_RATIO`` x normal whose peak reaches
  ``SURGE_RATIO`` x and at least ``MIN_SURGE_MENTIONS`` mentions above normal, with site traffic recorded over
  the run and ``MAX_LAG`` after it (a surge still under way when the history ends is not learnt from).
* **Lag**: the shift that maximises the rank correlation of ``log x(t)`` and ``log y(t + lag)`` around past
  surges (between ``MIN_LAG`` and ``MAX_LAG``), refined between grid cells by a parabola through the best three.
* **Elasticity**: ``log y(t + lag) = elasticity * log x(t)``, a line through the origin (no mention excess,
  no traffic excess) fitted to every grid cell of every past surge with scikit-learn's ``HuberRegressor``,
  each cell weighted by its ``log x`` (the peak is what is predicted): a cell where the site had trouble of
  its own (an outage, a mailing) is an outlier, and a squared loss would let it tilt the line.  Fit quality:
  R^2 over the cells within ``OUTLIER_SIGMAS`` robust standard deviations of the line (the others are counted
  apart), and the typical error of the past surges'
  peak multiples when each is predicted from its own mention peak.

Too little history, no past surge, or surges that did not move the traffic (R^2 below ``MIN_R2``, or more than
``MAX_OUTLIER_SHARE`` of the cells outlying) leave the
model **uncalibrated**: it then predicts no multiple at all.  The alternative, assuming traffic grows like
mentions, would announce "25x normal traffic" for the demo's 25x mention surge whose real traffic peak was 6x:
an estimate four times too high teaches ops to ignore the line.  The normal traffic is still given.

No I/O, no clock reads; ``TrafficModel.to_dict()`` is plain JSON and ``TrafficModel.from_dict`` restores it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

MODEL_VERSION = 1
HOURS_PER_WEEK = 168
SMOOTH_SECONDS = 300.0  # both series are averaged over 5 minutes: single minutes of a few mentions are noise
MIN_LAG = -30 * 60.0  # traffic may lead a little (the site announced before people talked about it)
MAX_LAG = 3 * 3600.0
EXCURSION_RATIO = 1.5  # a past surge's cells: smoothed mentions at least this x normal
SURGE_RATIO = 3.0  # ... and its peak at least this x normal
MIN_SURGE_MENTIONS = 10.0  # ... and this many mentions above normal over the run
MIN_SURGE_Z = 8.0  # ... which is this many Poisson standard deviations: a few weeks of minutes hold 5-sigma noise
MERGE_GAP = 10 * 60.0  # dips shorter than this inside one surge do not split it
MIN_TRAFFIC_DAYS = 2.0  # less site history than this: no normal profile worth the name
MIN_FIT_POINTS = 10
MIN_R2 = 0.3
OUTLIER_SIGMAS = 4.0  # a cell this many robust standard deviations off the line is site trouble, not signal
MAX_OUTLIER_SHARE = 0.25
MIN_COVERAGE = 0.8  # a surge is learnt from only when traffic was recorded for this share of its window
_WEEK = 7 * 86400
_DAY = 86400


class TrafficModelError(ValueError):
    """A stored model that cannot be read back (another version, or damaged)."""


@dataclass(frozen=True)
class TrafficModel:
    grid_seconds: int
    utc_offset_s: float
    traffic_days: float  # days of site traffic behind the normal profile
    normal_rpm: tuple[float, ...]  # HOURS_PER_WEEK slots, Monday 00:00 (local) first; empty: no traffic history
    weekly_slots: int  # slots with two weeks or more of history (the others fall back to the hour of day)
    level: float  # the last day's traffic relative to the profile (growth since the median weeks)
    mention_pseudo_per_min: float
    calibrated: bool
    reason: str  # why it is not calibrated; "" when it is
    elasticity: float = 0.0
    lag_seconds: float = 0.0
    n_surges: int = 0
    n_points: int = 0
    n_outliers: int = 0  # cells the robust fit set aside (site trouble of its own)
    r2: float = 0.0  # over the other cells
    peak_error: float = 0.0  # median |log(predicted / real)| of past surges' peak multiples (0.1: about 10%)
    largest_surge_ratio: float = 0.0  # the biggest past mention surge learnt from (x normal)
    surge_lags: tuple[float, ...] = field(default_factory=tuple)  # mention peak to traffic peak, per past surge
    version: int = MODEL_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["normal_rpm"] = [round(x, 3) for x in self.normal_rpm]
        d["surge_lags"] = list(self.surge_lags)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrafficModel":
        if not isinstance(d, Mapping) or d.get("version") != MODEL_VERSION:
            raise TrafficModelError("not a traffic model of this version")
        try:
            model = cls(**{**d, "normal_rpm": tuple(float(x) for x in d["normal_rpm"]),
                           "surge_lags": tuple(float(x) for x in d.get("surge_lags", ()))})
        except (TypeError, ValueError, KeyError) as exc:
            raise TrafficModelError(f"damaged traffic model: {exc}") from None
        if model.normal_rpm and (len(model.normal_rpm) != HOURS_PER_WEEK
                                 or not all(math.isfinite(x) and x >= 0 for x in model.normal_rpm)):
            raise TrafficModelError("damaged traffic model: bad normal profile")
        return model

    @property
    def has_normal(self) -> bool:
        return bool(self.normal_rpm)

    def normal_at(self, t: float) -> float | None:
        """The site's normal requests per minute at epoch ``t``."""
        if not self.normal_rpm:
            return None
        return self.normal_rpm[_hour_of_week(np.asarray([t]), self.utc_offset_s)[0]] * self.level

    def basis(self) -> str:
        """What the numbers rest on, in a few words for the alert."""
        if not self.calibrated:
            return f"uncalibrated: {self.reason}"
        surges = f"{self.n_surges} past surge{'s' if self.n_surges != 1 else ''}"
        return f"from {surges}, R² {self.r2:.2f}, typical error ±{100 * (math.exp(self.peak_error) - 1):.0f}%"


@dataclass(frozen=True)
class TrafficPrediction:
    normal_rpm: float | None  # the site's normal requests/min at the predicted peak (or now, uncalibrated)
    multiple: float | None  # expected peak traffic / normal; None when the model is uncalibrated
    peak_rpm: float | None
    seconds_to_peak: float | None  # from ``at``
    basis: str
    beyond_history: bool = False  # the mention surge is bigger than any the model learnt from


# -- time slots -------------------------------------------------------------------------------------------
def _hour_of_week(t: np.ndarray, offset: float) -> np.ndarray:
    local = np.floor((t + offset) / 3600.0).astype(np.int64)
    # 1970-01-01 was a Thursday: shift by three days so that slot 0 is Monday 00:00
    return (local + 3 * 24) % HOURS_PER_WEEK


def _index(t: np.ndarray, offset: float, period: int) -> np.ndarray:
    return np.floor((t + offset + 3 * _DAY) / period).astype(np.int64)


# -- series on the grid ----------------------------------------------------------------------------------
def _on_grid(times: np.ndarray, values: np.ndarray, start: float, grid: int, n: int, *, mean: bool) -> np.ndarray:
    """Samples into grid cells: the mean (a rate) or the sum (counts); NaN where a cell got nothing."""
    cells = np.floor((times - start) / grid).astype(np.int64)
    keep = (cells >= 0) & (cells < n) & np.isfinite(values)
    cells, values = cells[keep], values[keep]
    total = np.bincount(cells, weights=values, minlength=n).astype(float)  # int when there is nothing
    if not mean:
        return total
    count = np.bincount(cells, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _centered_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Moving average over ``k`` cells centred on each (so it shifts neither series in time); NaN where fewer
    than half of the window is known."""
    if k <= 1:
        return values.copy()
    n = len(values)
    known = np.isfinite(values)
    cs = np.concatenate(([0.0], np.cumsum(np.where(known, values, 0.0))))
    cn = np.concatenate(([0], np.cumsum(known)))
    idx = np.arange(n)
    lo = np.clip(idx - k // 2, 0, n)
    hi = np.clip(idx + k // 2 + 1, 0, n)
    s, c = cs[hi] - cs[lo], cn[hi] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c * 2 >= k, s / np.maximum(c, 1), np.nan)


def _seasonal_median(t: np.ndarray, values: np.ndarray, offset: float) -> tuple[np.ndarray, int]:
    """Median per hour-of-week slot (two weeks of history or more), else of the hour of day (two days or
    more), else overall.  Returns the 168 values and how many slots had their own weekly median."""
    known = np.isfinite(values)
    t, values = t[known], values[known]
    how = _hour_of_week(t, offset)
    hod = how % 24
    week = _index(t, offset, _WEEK)
    day = _index(t, offset, _DAY)
    overall = float(np.median(values))
    table = np.full(HOURS_PER_WEEK, overall)
    weekly = 0
    order = np.argsort(how, kind="stable")
    bounds = np.searchsorted(how[order], np.arange(HOURS_PER_WEEK + 1))
    by_hour: dict[int, float] = {}
    for h in range(24):
        m = hod == h
        if m.any() and len(np.unique(day[m])) >= 2:
            by_hour[h] = float(np.median(values[m]))
    for s in range(HOURS_PER_WEEK):
        rows = order[bounds[s]:bounds[s + 1]]
        if len(rows) and len(np.unique(week[rows])) >= 2:
            table[s] = float(np.median(values[rows]))
            weekly += 1
        elif s % 24 in by_hour:
            table[s] = by_hour[s % 24]
    return table, weekly


def _daily_level(t: np.ndarray, log_ratio: np.ndarray, offset: float) -> np.ndarray:
    """Each cell's day's median log ratio (0 for a day with too little data): growth and holidays, not surges
    (a surge fills far less than half a day)."""
    day = _index(t, offset, _DAY)
    out = np.zeros(len(t))
    known = np.isfinite(log_ratio)
    for d in np.unique(day):
        m = day == d
        k = m & known
        if k.sum() * 4 >= m.sum():
            out[m] = float(np.median(log_ratio[k]))
    return out


def _runs(mask: np.ndarray, merge: int) -> list[tuple[int, int]]:
    """[start, end] index pairs of True runs, joining runs separated by at most ``merge`` False cells."""
    idx = np.flatnonzero(mask)
    if not len(idx):
        return []
    runs: list[list[int]] = [[int(idx[0]), int(idx[0])]]
    for i in idx[1:]:
        if i - runs[-1][1] - 1 <= merge:
            runs[-1][1] = int(i)
        else:
            runs.append([int(i), int(i)])
    return [(a, b) for a, b in runs]


# -- fitting ---------------------------------------------------------------------------------------------
def fit_traffic_model(
    traffic: Sequence[tuple[float, float]],
    mentions: Mapping[float, float],
    *,
    start: float,
    end: float,
    bucket_seconds: int,
    mentions_from: float | None = None,
    utc_offset_s: float = 0.0,
) -> TrafficModel:
    """Fit the model on ``[start, end)``.

    ``traffic``: (epoch seconds, requests per minute) samples at any regular step; ``mentions``: mention
    counts per bucket start (all sources summed; buckets absent are zero from ``mentions_from`` on, and
    unknown before it: a store's history starts somewhere).
    """
    t_arr = np.asarray([p[0] for p in traffic], dtype=float)
    r_arr = np.asarray([p[1] for p in traffic], dtype=float)
    ok = np.isfinite(t_arr) & np.isfinite(r_arr) & (r_arr >= 0) & (t_arr >= start) & (t_arr < end)
    t_arr, r_arr = t_arr[ok], r_arr[ok]
    step = float(np.median(np.diff(np.unique(t_arr)))) if len(np.unique(t_arr)) > 2 else 60.0
    grid = int(max(bucket_seconds, min(round(step), 3600), 60))
    k = max(1, int(round(SMOOTH_SECONDS / grid)) | 1)  # odd, so the window is centred on its cell
    pseudo = 60.0 / (k * grid)  # one mention per smoothing window, per minute
    start = math.floor(start / grid) * grid
    n = max(0, int(math.ceil((end - start) / grid)))
    empty = TrafficModel(grid, utc_offset_s, 0.0, (), 0, 1.0, pseudo, False, "")

    traffic_days = len(t_arr) * step / _DAY
    if n == 0 or traffic_days < MIN_TRAFFIC_DAYS:
        return _replace(empty, traffic_days=traffic_days,
                        reason=f"only {traffic_days:.1f} days of site traffic history (at least {MIN_TRAFFIC_DAYS:g} needed)")
    t = start + grid * np.arange(n, dtype=float)
    traffic_s = _centered_mean(_on_grid(t_arr, r_arr, start, grid, n, mean=True), k)
    profile, weekly = _seasonal_median(t, traffic_s, utc_offset_s)
    normal = np.maximum(profile[_hour_of_week(t, utc_offset_s)], 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        ly_raw = np.log(traffic_s / normal)
    ly_raw[~np.isfinite(ly_raw)] = np.nan
    known = np.isfinite(ly_raw)
    # the level of the last day the history holds (an export may lag behind ``end``)
    recent = ly_raw[known & (t > t[known][-1] - _DAY)] if known.any() else ly_raw[:0]
    level = math.exp(float(np.median(recent))) if len(recent) >= 10 else 1.0
    model = _replace(empty, traffic_days=traffic_days, normal_rpm=tuple(float(x) for x in profile),
                     weekly_slots=weekly, level=level)

    m_times = np.asarray(list(mentions.keys()), dtype=float)
    m_counts = np.asarray(list(mentions.values()), dtype=float)
    counts = _on_grid(m_times, m_counts, start, grid, n, mean=False)
    if mentions_from is not None:
        counts[t + grid <= mentions_from] = np.nan
    mention_s = _centered_mean(counts * 60.0 / grid, k)  # per minute
    if np.isfinite(mention_s).sum() * grid < MIN_TRAFFIC_DAYS * _DAY:
        return _replace(model, reason="less than two days of mention history")
    m_profile, _ = _seasonal_median(t, mention_s, utc_offset_s)
    m_normal = m_profile[_hour_of_week(t, utc_offset_s)]
    lx = np.log((mention_s + pseudo) / (m_normal + pseudo))
    lx -= _daily_level(t, lx, utc_offset_s)
    ly = ly_raw - _daily_level(t, ly_raw, utc_offset_s)

    lag_lo, lag_hi = int(math.floor(MIN_LAG / grid)), int(math.ceil(MAX_LAG / grid))
    merge = int(MERGE_GAP // grid)
    surges: list[tuple[int, int]] = []
    for a, b in _runs(np.nan_to_num(lx, nan=-1.0) >= math.log(EXCURSION_RATIO), merge):
        peak = a + int(np.nanargmax(lx[a:b + 1]))
        seen = float(np.nansum(counts[a:b + 1]))
        usual = float(np.sum(m_normal[a:b + 1])) * grid / 60.0
        if (lx[peak] < math.log(SURGE_RATIO) or seen - usual < MIN_SURGE_MENTIONS
                or (seen - usual) / math.sqrt(usual + 1.0) < MIN_SURGE_Z):
            continue
        lo, hi = max(0, a + lag_lo), min(n, b + lag_hi + 1)
        if hi - lo <= 0 or b + lag_hi >= n or np.isfinite(ly[lo:hi]).mean() < MIN_COVERAGE:
            continue  # traffic not recorded around it, or still under way at the end of the history
        surges.append((a, b))
    days = (end - start) / _DAY
    if not surges:
        return _replace(model, reason=f"no past mention surge ({SURGE_RATIO:g}x normal or more) with site traffic "
                                      f"recorded in {days:.0f} days of history")

    lag_cells = _best_lag(lx, ly, surges, lag_lo, lag_hi, pad=int(30 * 60 // grid))
    shift = int(round(lag_cells))
    xs: list[float] = []
    ys: list[float] = []
    peaks: list[tuple[float, float]] = []
    surge_lags: list[float] = []
    for a, b in surges:
        cells = np.arange(a, b + 1)
        later = cells + shift
        inside = (later >= 0) & (later < n)
        pair_ok = inside.copy()
        pair_ok[inside] = np.isfinite(ly[later[inside]]) & np.isfinite(lx[cells[inside]])
        xs.extend(lx[cells[pair_ok]])
        ys.extend(ly[later[pair_ok]])
        m_peak = a + int(np.nanargmax(lx[a:b + 1]))
        window = ly[max(0, a + lag_lo):min(n, b + lag_hi + 1)]
        if np.isfinite(window).any():
            t_peak = max(0, a + lag_lo) + int(np.nanargmax(window))
            peaks.append((float(lx[m_peak]), float(ly[t_peak])))
            surge_lags.append(float((t_peak - m_peak) * grid))
    x = np.asarray(xs)
    y = np.asarray(ys)
    if len(x) < MIN_FIT_POINTS:
        return _replace(model, n_surges=len(surges), n_points=len(x),
                        reason=f"too few points to fit ({len(x)} in {len(surges)} past surge(s))")
    # weighted by log x: what is predicted is the peak, and a surge's long tails near normal would
    # otherwise outvote its few cells near the top (where the response bends, the line is not straight)
    elasticity = _huber_through_origin(x, y, np.maximum(x, 0.0))
    # R² without the cells far off the line (an outage's): they are counted as outliers, not as a bad fit
    spread = y - elasticity * x
    scale = 1.4826 * float(np.median(np.abs(spread - np.median(spread))))
    outliers = np.abs(spread) > OUTLIER_SIGMAS * max(scale, 1e-6)
    inliers = ~outliers
    residual = y[inliers] - elasticity * x[inliers]
    total = float(np.sum((y[inliers] - y[inliers].mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / total if total > 0 else 0.0
    peak_error = float(np.median([abs(elasticity * px - py) for px, py in peaks])) if peaks else 0.0
    fitted = _replace(model, elasticity=float(elasticity), lag_seconds=float(lag_cells * grid), n_surges=len(surges),
                      n_points=len(x), n_outliers=int(outliers.sum()), r2=r2, peak_error=peak_error,
                      largest_surge_ratio=float(math.exp(max(p[0] for p in peaks))) if peaks else 0.0,
                      surge_lags=tuple(surge_lags))
    if elasticity <= 0.0 or r2 < MIN_R2 or outliers.mean() > MAX_OUTLIER_SHARE:
        return _replace(fitted, reason=f"past mention surges did not move site traffic consistently "
                                       f"(R² {r2:.2f}, {outliers.mean():.0%} of cells far off, {len(surges)} surge(s))")
    return _replace(fitted, calibrated=True, reason="")


def _replace(model: TrafficModel, **changes: Any) -> TrafficModel:
    return TrafficModel(**{**asdict(model), **changes})


def _best_lag(lx: np.ndarray, ly: np.ndarray, surges: list[tuple[int, int]], lo: int, hi: int, pad: int) -> float:
    """Lag (in cells, fractional) maximising the rank correlation of log x(t) with log y(t + lag) over the
    surges' cells (padded by ``pad``): over the whole history it would be all noise, and ranks keep a quarter
    of an hour of site outage from dragging the best lag towards itself."""
    n = len(lx)
    rows = np.unique(np.concatenate([np.arange(max(0, a - pad), min(n, b + pad + 1)) for a, b in surges]))
    lags = np.arange(lo, hi + 1)
    corr = np.full(len(lags), -np.inf)
    for j, lag in enumerate(lags):
        later = rows + lag
        ok = (later >= 0) & (later < n)
        xa, yb = lx[rows[ok]], ly[later[ok]]
        both = np.isfinite(xa) & np.isfinite(yb)
        if both.sum() < MIN_FIT_POINTS:
            continue
        rx, ry = _ranks(xa[both]), _ranks(yb[both])
        sx, sy = rx.std(), ry.std()
        if sx > 0 and sy > 0:
            corr[j] = float(np.mean((rx - rx.mean()) * (ry - ry.mean())) / (sx * sy))
    j = int(np.argmax(corr))
    if not np.isfinite(corr[j]):
        return 0.0
    if 0 < j < len(lags) - 1 and np.isfinite(corr[j - 1]) and np.isfinite(corr[j + 1]):
        # the peak of the parabola through the best cell and its neighbours
        c0, c1, c2 = corr[j - 1], corr[j], corr[j + 1]
        denom = c0 - 2 * c1 + c2
        if denom < 0:
            return float(lags[j] + 0.5 * (c0 - c2) / denom)
    return float(lags[j])


def _ranks(v: np.ndarray) -> np.ndarray:
    out = np.empty(len(v))
    out[np.argsort(v, kind="stable")] = np.arange(len(v))
    return out


def _huber_through_origin(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> float:
    from sklearn.linear_model import HuberRegressor  # imported here: loading scikit-learn costs ~1 s

    # alpha=0: no shrinkage of the slope towards zero (it would bias the multiple down)
    reg = HuberRegressor(fit_intercept=False, alpha=0.0, epsilon=1.35, max_iter=500)
    reg.fit(x.reshape(-1, 1), y, sample_weight=weight)
    return float(reg.coef_[0])


# -- predicting ------------------------------------------------------------------------------------------
def predict_traffic(
    model: TrafficModel,
    *,
    mention_peak_per_min: float,
    mention_normal_per_min: float,
    seconds_to_mention_peak: float,
    at: float,
) -> TrafficPrediction:
    """Traffic at the peak of a mention surge: ``mention_peak_per_min`` against ``mention_normal_per_min``,
    ``seconds_to_mention_peak`` after ``at`` (epoch seconds, the end of the scored bucket)."""
    if not model.calibrated:
        return TrafficPrediction(model.normal_at(at), None, None, None, model.basis())
    ratio = (max(mention_peak_per_min, 0.0) + model.mention_pseudo_per_min) / (
        max(mention_normal_per_min, 0.0) + model.mention_pseudo_per_min)
    lx = math.log(ratio) if ratio > 1.0 else 0.0
    multiple = math.exp(model.elasticity * lx)
    seconds = max(0.0, seconds_to_mention_peak + model.lag_seconds)
    normal = model.normal_at(at + seconds)
    peak = normal * multiple if normal is not None else None
    beyond = model.largest_surge_ratio > 0 and ratio > 2.0 * model.largest_surge_ratio
    return TrafficPrediction(normal, multiple, peak, seconds, model.basis(), beyond)
