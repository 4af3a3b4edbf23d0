"""A streaming, causal spike detector for mention counts.  Pure: numbers in, verdict out.

The detector does two different jobs and keeps them apart:

* ``Verdict.severity`` answers "is the mention rate far above normal *now*?" and drives incidents.  It follows
  the **level** of the current bucket (and of a short smoothed window) against the baseline, gated by both
  statistical surprise (decades of improbability, count-aware) and practical size (the ratio to the
  baseline), with a lower exit threshold and a cool-down so incidents do not flap.  A sustained surge stays
  watch / warning / critical for as long as it lasts and goes back to quiet when the rate does.
* ``Verdict.score`` is an anomaly likelihood in [0, 1] for ranking and benchmarks (NAB).  It answers "is this
  the most this brand has been talked about in weeks?": the bucket's count against a fading memory of the
  series' own record.  A burst scores once, on the bucket that beats the record; while it continues (or
  after it) nothing beats the record it has just set, so a benchmark (and a human) is told once, early.

The model, per bucket of ``bucket_seconds``:

* **Baseline** ``mu = level * hour_factor[hour of day] * weekday_factor[day of week]`` (multiplicative
  Holt-Winters without trend).  Updates use the observation clipped to ``clip_sigmas`` standard deviations,
  and stop altogether while the series is alarming, so a surge never leaks into what "normal" means (as
  river's ``protect_anomaly_detector``).  A level that stays alarming for ``relearn_after_s`` is a new normal
  and is learnt again.  Seasonal factors are learnt from the first bucket but only *used* once their slot has
  ``season_min_days`` days (weekday: weeks) of history, fading in over one more: one day cannot tell an
  hour-of-day pattern from one day's news.
* **Noise** count-aware tails (Poisson, or negative binomial with a dispersion learnt online as a ratio of
  averages, stable near zero); counts at or below ``min_count`` never alarm on their own.
* **Score** the log margin by which the count, shrunk by ``record_noise_sigmas`` Poisson standard deviations
  (a handful of mentions is not a record), beats the **record**: the highest shrunk count seen, fading in log
  space towards the typical level with a half-life of ``record_halflife_s``.  Scale-free (a ratio to the
  series' own past peaks, so no per-series threshold), count-aware, O(1) state.  A second record weighs
  **duration**: one bucket above the record may be a five-minute retweet storm, while hours of buckets at several
  times the baseline are a story that is running, even below the peak record.  The number of recent buckets whose
  (shrunk) count is more than ``surge_ratio`` times the baseline (and improbable under Poisson counts), beyond
  the first and decaying with a half-life of ``surge_halflife_s``, is scored against its own fading record
  (``surge_record_halflife_s``).  A third record weighs **frequency**: a day of news can come as separate short
  spikes, each back to the baseline within minutes, none a peak record and none long enough for the duration
  record.  A burst (a surging bucket with no surging bucket in the ``burst_gap_s`` before it) is counted, decaying
  with a half-life of ``burst_halflife_s``; from the ``burst_min``-th recent burst on, the count is scored against
  its own fading record.  The score is the largest of the three.  Why a record and not the
  surprise against the seasonal baseline: on NAB's real Twitter series the baseline surprise ranks ordinary
  daily news bursts level with the labelled events (65.7 even with a per-series oracle threshold), while
  "highest in about two weeks" separates them (80 with the same oracle, 79 with one threshold); people judge a burst against the biggest ones they
  remember, not against this hour's forecast.  ``two_sided`` also scores new lows (drops, level shifts down).

No I/O, no clock reads; ``state()`` is plain JSON and ``SpikeDetector(params, state)`` resumes exactly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Mapping

from surgewatch.detector.verdict import Forecast, Severity, Verdict

_LN10 = math.log(10.0)
_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_STATE_VERSION = 6  # bump when the layout changes: an old state is refused with ValueError ...
# ... unless listed here: version 4 lacks the duration and frequency records, version 5 the frequency record; a
# missing record starts empty
_MIGRATES = {4, 5}
_SETTLE = 20  # buckets before the baseline's own level is trusted enough to learn the noise around it
_MIN_FACTOR = 0.05  # floor of a seasonal factor
_LEVELS = (Severity.WATCH, Severity.WARNING, Severity.CRITICAL)


@dataclass(frozen=True)
class DetectorParams:
    bucket_seconds: int = 60
    warm_up_buckets: int | None = None  # None: six hours' worth of buckets (at least 30)
    min_count: float = 3.0  # a bucket (or window) with at most this many mentions never alarms on its own
    utc_offset_s: float = 0.0  # shift timestamps so that hour-of-day and weekday are the audience's local ones
    # -- baseline
    seasonality: bool = True  # hour-of-day and day-of-week factors
    season_min_days: float = 2.0  # an hour-of-day factor is used after this many days of its slot (weekday: weeks)
    level_halflife_s: float = 3 * 3600.0
    season_halflife_days: float = 7.0
    dispersion_halflife_s: float = 2 * 86400.0
    min_dispersion: float = 0.0025  # at least 5% multiplicative noise however large the counts
    clip_sigmas: float = 3.0
    relearn_after_s: float = 6 * 3600.0  # an alarm that lasts this long is a new normal: learn it
    # -- severity: a level needs both the surprise (decades) and the ratio to the baseline
    watch_decades: float = 5.0
    warning_decades: float = 7.0
    critical_decades: float = 10.0
    watch_ratio: float = 1.5
    warning_ratio: float = 3.0
    critical_ratio: float = 8.0
    exit_fraction: float = 0.5  # a level is held while surprise >= fraction*entry and ratio >= entry**fraction
    cooldown_buckets: int = 3  # ... and left only after this many buckets below that
    window_halflife_s: float = 180.0  # smoothing of the level view (a few buckets)
    # -- score (anomaly likelihood): how far the count beats the series' own fading record
    # the record's excess over the typical level halves in two weeks.  Chosen on NAB's realTweets and sharp there:
    # 10 days scores 76.4 standard, 20 days 70.5 (14: 78.8), because many labelled bursts beat the faded record by
    # only 35-45%; treat the NAB figure as optimistic for other brands
    record_halflife_s: float = 14 * 86400.0
    typical_halflife_s: float = 2 * 86400.0  # memory of the typical (log) level the record fades towards
    record_noise_sigmas: float = 1.0  # counts are shrunk by this many Poisson sd before they can beat a record
    record_scale: float = _LN2  # log margin over the record that maps to score 0.5 (doubling the record)
    # the duration record: how many recent buckets ran at surge_ratio x the baseline, against its own fading record.
    # On NAB's realTweets it lifts the score from 78.8 / 72.8 (standard / low FP) to 83.4 / 76.7 (left out: 78.2 /
    # 67.0 to 82.8 / 71.0), and as much or more at a half, a quarter and a tenth of the volume: it catches AMZN's
    # 1.5-hour surge that a two-bucket spike two days earlier had hidden.  Not a sharp optimum: every setting of
    # 3-6 h, 2.5-4x, scale 0.4-0.6 scores 80.6-83.8 standard.  The record lasts longer than the peak record:
    # hours-long surges are rarer than single-bucket spikes, so a smaller one stays news for longer (14 days: 82.0)
    surge_ratio: float = 4.0
    surge_decades: float = 4.0  # ... and improbable under Poisson counts: -log10 P(X >= count) at the baseline
    surge_halflife_s: float = 4 * 3600.0  # memory of the count of surging buckets
    surge_record_halflife_s: float = 28 * 86400.0
    surge_scale: float = 0.6  # log margin over the duration record that maps to score 0.5
    # the frequency record: separate bursts (surging buckets as for the duration record) within about a day, against
    # its own fading record (``surge_record_halflife_s``) on the same scale as the duration record.  On NAB's
    # realTweets it lifts 83.4 / 76.7 / 87.1 to 86.8 / 78.2 / 91.2 (left out 82.8 to 86.2 standard) and the thinned
    # runs on average: it catches GOOG's day of a dozen lone spikes at 5-8x the baseline.  Not a sharp optimum: a gap
    # of 15-60 minutes scores 86.0-87.4, three or five bursts 87.0 / 86.5 (left out 81.6 / 86.0); a one-day half-life
    # scores as well in-sample but 81.8 left out
    burst_gap_s: float = 1800.0  # a surging bucket is a new burst after this long without one
    burst_halflife_s: float = 12 * 3600.0  # memory of the count of bursts
    burst_min: float = 4.0  # bursts within about a half-life before the count is scored at all
    two_sided: bool = False  # also score new lows (for series where drops matter; mentions rarely do)
    source_watch: float = 3.0  # a source is "spiking" when its own surprise exceeds this many decades


class _Baseline:
    """Seasonal level and dispersion of one count stream (the total, or one source).

    Seasonal factors are ratios of per-slot *mean counts* (not means of ratios), which stays stable when
    counts are mostly zeros.  Dispersion is a ratio of averages for the same reason."""

    __slots__ = ("level", "hour_means", "day_means", "hour_visits", "day_visits", "hour_sum", "day_sum",
                 "sq_err", "mean_mu", "mean_mu2", "disp", "log_dev", "n")

    def __init__(self, d: Mapping[str, Any] | None = None) -> None:
        if d is None:
            self.level = -1.0  # not started
            self.hour_means: list[float] = [-1.0] * 24  # -1: slot not visited yet
            self.day_means: list[float] = [-1.0] * 7
            self.hour_visits: list[int] = [0] * 24
            self.day_visits: list[int] = [0] * 7
            self.hour_sum = 0.0
            self.day_sum = 0.0
            self.sq_err = 0.0
            self.mean_mu = 0.0
            self.mean_mu2 = 0.0
            self.disp = 0.05
            self.log_dev = 0.3
            self.n = 0
            return
        self.level = float(d["level"])
        self.hour_means = [float(x) for x in d["hours"]]
        self.day_means = [float(x) for x in d["days"]]
        self.hour_visits = [int(x) for x in d["hour_visits"]]
        self.day_visits = [int(x) for x in d["day_visits"]]
        self.hour_sum, self.day_sum = (float(x) for x in d["sums"])
        self.sq_err, self.mean_mu, self.mean_mu2 = (float(x) for x in d["moments"])
        self.disp = float(d["disp"])
        self.log_dev = float(d["log_dev"])
        self.n = int(d["n"])

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "hours": self.hour_means, "days": self.day_means,
                "hour_visits": self.hour_visits, "day_visits": self.day_visits, "sums": [self.hour_sum, self.day_sum],
                "moments": [self.sq_err, self.mean_mu, self.mean_mu2], "disp": self.disp, "log_dev": self.log_dev,
                "n": self.n}


class _Rates:
    """Per-update smoothing factors derived once from the params (time constants are in seconds, not buckets)."""

    def __init__(self, p: DetectorParams) -> None:
        b = float(p.bucket_seconds)
        self.level = 1.0 - 0.5 ** (b / p.level_halflife_s)
        # each hour-of-day slot is visited 3600/b times a day; each weekday slot 86400/b times a week
        self.per_day_hour = max(3600.0 / b, 1.0)
        self.hour = 1.0 - 0.5 ** (1.0 / (p.season_halflife_days * self.per_day_hour))
        self.per_week_day = max(86400.0 / b, 1.0)
        self.day = 1.0 - 0.5 ** (1.0 / (4.0 * self.per_week_day))  # weekday factors: about four weeks of memory
        self.disp = 1.0 - 0.5 ** (b / p.dispersion_halflife_s)
        self.record = 0.5 ** (b / p.record_halflife_s)
        self.typical = 1.0 - 0.5 ** (b / p.typical_halflife_s)
        self.surge = 0.5 ** (b / p.surge_halflife_s)
        self.surge_record = 0.5 ** (b / p.surge_record_halflife_s)
        self.burst = 0.5 ** (b / p.burst_halflife_s)
        self.burst_gap = p.burst_gap_s / b  # in buckets
        self.warm_up = p.warm_up_buckets if p.warm_up_buckets is not None else max(30, int(6 * 3600 / b))
        self.shape_discount = 0.5 ** (1.0 / max(3.0, 900.0 / b))  # the forecast's fit: half-life of 15 minutes
        self.window = 1.0 - 0.5 ** (1.0 / max(1.0, p.window_halflife_s / b))
        self.window_n = (2.0 - self.window) / self.window  # buckets whose plain sum has the EWMA's variance
        self.relearn = max(1, int(p.relearn_after_s / b))
        # severity ladder: (entry decades, entry ratio, stay decades, stay ratio) for watch, warning, critical
        f = p.exit_fraction
        self.ladder = tuple(
            (d, r, d * f, r ** f)
            for d, r in ((p.watch_decades, p.watch_ratio), (p.warning_decades, p.warning_ratio),
                         (p.critical_decades, p.critical_ratio))
        )


def _log10_tail(k: float, mu: float, var: float) -> float:
    """-log10 P(X >= k) for a count X with mean mu and variance var >= mu (Poisson or negative binomial).

    Exact pmf sums where it matters (the pmf at k from lgamma, then the geometric-ish upper terms); a normal
    approximation within one standard deviation (small surprise, where precision does not matter) and a
    log-normal with the same moments for large means (cheap, and the count is no longer discrete there)."""
    if k <= mu:
        return 0.0
    sd = math.sqrt(var)
    if k - mu <= sd:
        return _log10_normal_tail((k - 0.5 - mu) / sd)
    if mu > 80.0:
        s2 = math.log1p(var / (mu * mu))
        z = (math.log((k - 0.5) / mu) + 0.5 * s2) / math.sqrt(s2)
        return _log10_normal_tail(z)
    k = math.ceil(k - 1e-9)
    if var <= mu * 1.000001:  # Poisson
        log_pmf = k * math.log(mu) - mu - math.lgamma(k + 1.0)
        total, term, j = 1.0, 1.0, k
        for _ in range(400):
            j += 1
            term *= mu / j
            total += term
            if term < 1e-4 * total:
                break
    else:  # negative binomial with r = mu^2 / (var - mu), success probability q = mu / (r + mu)
        r = mu * mu / (var - mu)
        q = mu / (r + mu)
        log_pmf = math.lgamma(k + r) - math.lgamma(r) - math.lgamma(k + 1.0) + r * math.log1p(-q) + k * math.log(q)
        total, term, j = 1.0, 1.0, k
        for _ in range(400):
            term *= (j + r) / (j + 1) * q
            j += 1
            total += term
            if term < 1e-4 * total:
                break
    return max(0.0, -(log_pmf + math.log(total)) / _LN10)


@lru_cache(maxsize=16)
def _params_dict(params: DetectorParams) -> dict[str, Any]:
    # asdict() deep-copies every field: once per params, not once per saved state (a tick saves a thousand)
    return asdict(params)


def _log10_normal_tail(z: float) -> float:
    if z <= 0.0:
        return 0.0
    if z < 8.0:
        return -math.log10(0.5 * math.erfc(z / _SQRT2))
    # Mills ratio asymptote: erfc underflows long before the surprise stops mattering.
    return (0.5 * z * z + math.log(z * math.sqrt(2.0 * math.pi))) / _LN10


class SpikeDetector:
    def __init__(self, params: DetectorParams | None = None, state: dict | None = None) -> None:
        self.params = params or DetectorParams()
        self._rates = _Rates(self.params)
        self._sources: dict[str, _Baseline] = {}
        if state is None:
            self._total = _Baseline()
            self._last_t: float | None = None
            self._severity = Severity.QUIET
            self._below_exit = 0
            self._alarm_buckets = 0  # consecutive buckets not quiet
            self._win = -1.0  # short EWMA of the count (the level view) ...
            self._win_mu = -1.0  # ... and of the baseline over the same buckets
            # the forecast's discounted straight-line fit of log excess = c + g*t (t in buckets, 0 = now):
            # sums of w, w*t, w*t^2, w*y, w*t*y, and the episode's age in buckets
            self._fit = [0.0] * 6
            # the score's memory, in log(1 + count): record high, record low, typical level (None: not started)
            self._record: list[float] | None = None
            # the duration record: recent surging buckets (decaying); record and typical, in
            # log(buckets beyond the first)
            self._surge: list[float] | None = None
            # the frequency record: recent bursts (decaying); record and typical, in log(recent bursts); buckets
            # since the last surging one
            self._bursts: list[float] | None = None
        else:
            if not isinstance(state, Mapping) or (state.get("v") != _STATE_VERSION and state.get("v") not in _MIGRATES):
                found = state.get("v") if isinstance(state, Mapping) else type(state).__name__
                raise ValueError(f"unsupported detector state version {found!r} (expected {_STATE_VERSION})")
            try:
                self._total = _Baseline(state["total"])
                self._sources = {k: _Baseline(v) for k, v in state["sources"].items()}
                self._last_t = state["last_t"]
                self._severity = Severity(state["severity"])
                self._below_exit = int(state["below_exit"])
                self._alarm_buckets = int(state["alarm_buckets"])
                self._win, self._win_mu = (float(x) for x in state["window"])
                self._fit = [float(x) for x in state["fit"]]
                if len(self._fit) != 6:
                    raise ValueError("malformed detector state: fit")
                rec = state["record"]
                self._record = None if rec is None else [float(x) for x in rec]
                if self._record is not None and len(self._record) != 3:
                    raise ValueError("malformed detector state: record")
                surge = state["surge"] if state["v"] >= 5 else None
                self._surge = None if surge is None else [float(x) for x in surge]
                if self._surge is not None and len(self._surge) != 3:
                    raise ValueError("malformed detector state: surge")
                bursts = state["bursts"] if state["v"] >= 6 else None
                self._bursts = None if bursts is None else [float(x) for x in bursts]
                if self._bursts is not None and len(self._bursts) != 4:
                    raise ValueError("malformed detector state: bursts")
            except (KeyError, TypeError) as exc:
                raise ValueError(f"malformed detector state: {exc!r}") from exc

    def state(self) -> dict:
        return {
            "v": _STATE_VERSION,
            "params": dict(_params_dict(self.params)),  # informative; the caller passes params explicitly
            "total": self._total.to_dict(),
            "sources": {k: b.to_dict() for k, b in self._sources.items()},
            "last_t": self._last_t,
            "severity": self._severity.value,
            "below_exit": self._below_exit,
            "alarm_buckets": self._alarm_buckets,
            "window": [self._win, self._win_mu],
            "fit": self._fit,
            "record": self._record,
            "surge": self._surge,
            "bursts": self._bursts,
        }

    # -- the baseline ----------------------------------------------------------------------------------------

    def _slots(self, t: float) -> tuple[int, int]:
        if not self.params.seasonality:
            return 0, 0
        local = t + self.params.utc_offset_s
        hour = int(local // 3600.0) % 24
        day = (int(local // 86400.0) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
        return hour, day

    def _factors(self, b: _Baseline, hour: int, day: int) -> tuple[float, float]:
        """Hour-of-day and weekday factors, each faded in only once its slot has enough history."""
        if not self.params.seasonality:
            return 1.0, 1.0
        r = self._rates
        min_days = self.params.season_min_days
        fh = 1.0
        m = b.hour_means[hour]
        w = b.hour_visits[hour] / r.per_day_hour - min_days  # days of history beyond the minimum
        if w > 0.0 and m >= 0.0 and b.hour_sum > 0.0:
            visited = sum(1 for x in b.hour_means if x >= 0.0)
            raw = m * visited / b.hour_sum
            fh = raw if w >= 1.0 else 1.0 + w * (raw - 1.0)
        fd = 1.0
        m = b.day_means[day]
        w = b.day_visits[day] / r.per_week_day - min_days  # weeks of history beyond the minimum
        if w > 0.0 and m >= 0.0 and b.day_sum > 0.0:
            visited = sum(1 for x in b.day_means if x >= 0.0)
            raw = m * visited / b.day_sum
            fd = raw if w >= 1.0 else 1.0 + w * (raw - 1.0)
        # a slot that has only ever seen zeros must not make the expectation (and the deseasonalised level) absurd
        return (fh if fh > _MIN_FACTOR else _MIN_FACTOR), (fd if fd > _MIN_FACTOR else _MIN_FACTOR)

    def _expected(self, b: _Baseline, hour: int, day: int) -> float:
        if b.level < 0.0:
            return 0.0
        fh, fd = self._factors(b, hour, day)
        return b.level * fh * fd

    def _learn(self, b: _Baseline, count: float, hour: int, day: int, mu: float, var: float) -> None:
        """Move the baseline towards the clipped observation (robust Holt-Winters step)."""
        r = self._rates
        p = self.params
        if b.level < 0.0:
            b.level = max(count, 0.0)
            b.n = 1
            if p.seasonality:
                b.hour_visits[hour] += 1
                b.day_visits[day] += 1
            return
        sd = math.sqrt(var)
        lo = mu - p.clip_sigmas * sd
        hi = mu + p.clip_sigmas * sd
        x = hi if count > hi else (lo if count < lo else count)
        if x < 0.0:
            x = 0.0
        n = b.n
        b.n = n + 1
        # dispersion from E[(x - mu)^2] = E[mu] + disp * E[mu^2], as a ratio of averages (stable near zero).
        # The first buckets are skipped: there the level itself is still settling, and its error would be
        # mistaken for noise for days (the averages have a memory of days).
        a_disp = max(r.disp, 1.0 / (n - _SETTLE + 1)) if n >= _SETTLE else 0.0
        b.sq_err += a_disp * ((x - mu) ** 2 - b.sq_err)
        b.mean_mu += a_disp * (mu - b.mean_mu)
        b.mean_mu2 += a_disp * (mu * mu - b.mean_mu2)
        if n > 2 * _SETTLE and b.mean_mu2 > 0.0:
            d = (b.sq_err - b.mean_mu) / b.mean_mu2
            b.disp = p.min_dispersion if d < p.min_dispersion else (4.0 if d > 4.0 else d)
        # mean absolute log-ratio: the series' own multiplicative variability (Laplace scale)
        lr = math.log((count + 1.0) / (mu + 1.0))
        cap = p.clip_sigmas * 1.5 * b.log_dev
        lr = cap if lr > cap else (-cap if lr < -cap else lr)
        b.log_dev += max(r.disp, 1.0 / (n + 1)) * (abs(lr) - b.log_dev)
        if b.log_dev < 0.01:
            b.log_dev = 0.01
        # warm start: running means first, then the configured memory
        a_level = max(r.level, 1.0 / (n + 1))
        if not p.seasonality:
            b.level += a_level * (x - b.level)
            return
        fh, fd = self._factors(b, hour, day)
        b.level += a_level * (x / (fh * fd) - b.level)
        # per-slot mean counts; a slot's first visit starts from the level; early on each slot is a running mean
        # of its visits, later an EWMA with the configured memory
        visits = b.hour_visits[hour] = b.hour_visits[hour] + 1
        a_hour = max(r.hour, 1.0 / visits)
        old = b.hour_means[hour]
        if old < 0.0:
            old = b.level
            b.hour_sum += old
        new = old + a_hour * (x / fd - old)
        b.hour_means[hour] = new
        b.hour_sum += new - old
        visits = b.day_visits[day] = b.day_visits[day] + 1
        a_day = max(r.day, 1.0 / visits)
        old = b.day_means[day]
        if old < 0.0:
            old = b.level
            b.day_sum += old
        new = old + a_day * (x / fh - old)
        b.day_means[day] = new
        b.day_sum += new - old

    def _record_margin(self, count: float, seen: int) -> float:
        """Log margin by which this bucket beats the fading record (negative: it does not), then learn it.

        Counts are shrunk by ``record_noise_sigmas`` Poisson standard deviations first (stretched, for the low
        side), so that at a few mentions a bucket needs a real excess to set or beat a record.  The record fades in
        log space towards the typical level: after a big burst the brand can alarm again weeks later at a lower
        volume, and a brand whose volume grows keeps being compared with its recent self.  ``seen`` (buckets the
        baseline has learnt) makes the typical level a running mean at first, so one odd first bucket is forgotten."""
        p = self.params
        r = self._rates
        noise = p.record_noise_sigmas * math.sqrt(count)
        high = math.log1p(count - noise if count > noise else 0.0)
        low = math.log1p(count + noise)
        level = math.log1p(count)
        rec = self._record
        if rec is None:
            self._record = [high, low, level]
            return 0.0
        hi, lo, typical = rec
        # a handful of mentions never beats a record on its own; a drop to nothing can be a new low
        margin = high - hi if count > p.min_count else 0.0
        if p.two_sided and lo - low > margin:
            margin = lo - low
        # learn after scoring (causal): fade towards the typical level, then let this bucket set a new record
        hi = typical + (hi - typical) * r.record
        lo = typical + (lo - typical) * r.record
        rec[0] = high if high > hi else hi
        rec[1] = low if low < lo else lo
        a = 1.0 / (seen + 1) if seen + 1 < 1.0 / r.typical else r.typical
        rec[2] = typical + a * (level - typical)
        return margin

    def _surging(self, count: float, mu: float) -> bool:
        """Whether this bucket's count, shrunk as for the record, is more than ``surge_ratio`` times the baseline.

        The ratio is the practical size, the same for any brand's volume; at a fraction of a mention per bucket it is
        met by noise (4 against 0.5), so a surging bucket must also be improbable under Poisson counts
        (``surge_decades``)."""
        p = self.params
        if count <= p.min_count:
            return False
        noise = p.record_noise_sigmas * math.sqrt(count)
        return count - noise > p.surge_ratio * mu and _log10_tail(count, mu, mu) >= p.surge_decades

    def _surge_margin(self, surging: bool, seen: int) -> float:
        """Log margin by which the recent number of surging buckets beats its own fading record, then learn it.

        The record and its typical level are kept in log(buckets beyond the first) and fade as the peak record
        does.  As for the peak record, the margin is what the running number adds over the record, so it is largest on the second or third surging bucket after
        weeks without such a cluster (at most log 2: with ``surge_scale`` 0.6 this record's score stays below
        0.54); a surge that only matches the clusters of recent weeks adds nothing."""
        r = self._rates
        st = self._surge
        recent = (st[0] * r.surge if st is not None else 0.0) + (1.0 if surging else 0.0)
        # duration starts at the second bucket: one surging bucket alone is the peak record's business.  The one
        # before must lie within two half-lives (a quarter of it left), or a surge of days ago would leave crumbs
        # that each new lone bucket beats
        extra = recent - 1.0
        x = math.log1p(extra) if extra >= 0.25 else 0.0
        if st is None:
            self._surge = [recent, x, x]
            return 0.0
        st[0] = recent
        return self._beat_record(st, x, seen)

    def _beat_record(self, st: list[float], x: float, seen: int) -> float:
        """The duration and frequency records' step: the margin of ``x`` over the record ``st[1]``, then the
        record fades towards the typical level ``st[2]`` (``surge_record_halflife_s``), ``x`` may set a new one,
        and the typical level learns ``x`` (a running mean while ``seen`` is small)."""
        r = self._rates
        hi, typical = st[1], st[2]
        margin = x - hi
        hi = typical + (hi - typical) * r.surge_record
        st[1] = x if x > hi else hi
        a = 1.0 / (seen + 1) if seen + 1 < 1.0 / r.typical else r.typical
        st[2] = typical + a * (x - typical)
        return margin

    def _burst_margin(self, surging: bool, seen: int) -> float:
        """Log margin by which the recent number of separate bursts beats its own fading record, then learn it.

        A burst starts at a surging bucket after ``burst_gap_s`` without one: a spike of a few buckets, or an hour of
        them with short dips, is one burst.  One, two or three bursts in a day are ordinary news for a busy brand;
        from the ``burst_min``-th on, the log of the count is compared with the brand's own record, which fades as the
        duration record does.  Its first scoring burst after weeks without such a day scores log(burst_min) over a
        record near zero (0.70 with the duration record's ``surge_scale``)."""
        p = self.params
        r = self._rates
        st = self._bursts
        quiet_for = st[3] if st is not None else 1e9  # JSON has no infinity
        recent = (st[0] * r.burst if st is not None else 0.0) + (1.0 if surging and quiet_for > r.burst_gap else 0.0)
        x = math.log(recent) if recent >= p.burst_min else 0.0
        since = 0.0 if surging else min(quiet_for + 1.0, 1e9)
        if st is None:
            self._bursts = [recent, x, x, since]
            return 0.0
        st[0], st[3] = recent, since
        return self._beat_record(st, x, seen)

    # -- one bucket ------------------------------------------------------------------------------------------

    def update(self, t: float, count: float, by_source: Mapping[str, float] | None = None) -> Verdict:
        p = self.params
        count = float(count)
        if count < 0.0 or math.isnan(count):
            count = 0.0
        # Buckets the caller skipped held no mentions: replay them as zeros so the baseline stays honest.
        if self._last_t is not None and t > self._last_t:
            missing = int(round((t - self._last_t) / p.bucket_seconds)) - 1
            for k in range(min(missing, int(7 * 86400 / p.bucket_seconds))):
                self._step(self._last_t + (k + 1) * p.bucket_seconds, 0.0, None)
        return self._step(t, count, by_source)

    def _step(self, t: float, count: float, by_source: Mapping[str, float] | None) -> Verdict:
        p = self.params
        r = self._rates
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        hour, day = self._slots(t)
        b = self._total
        warming = b.n < r.warm_up
        mu = max(self._expected(b, hour, day), 1e-3)
        var = mu + b.disp * mu * mu

        # -- level views for severity: this bucket, and a short window (sum-equivalent of the EWMA) ----------
        if self._win < 0.0:
            self._win, self._win_mu = count, mu
        else:
            self._win += r.window * (count - self._win)
            self._win_mu += r.window * (mu - self._win_mu)
        s_point = _log10_tail(count, mu, var) if count > p.min_count else 0.0
        n = r.window_n
        w_sum, w_mu = self._win * n, max(self._win_mu, 1e-3) * n
        # extra-Poisson variation is correlated between neighbouring buckets: it does not average out in a window
        s_window = _log10_tail(w_sum, w_mu, w_mu + b.disp * w_mu * w_mu) if w_sum > p.min_count else 0.0
        point_ratio = count / mu
        window_ratio = self._win / max(self._win_mu, 1e-3)

        # -- score: how far this bucket beats the series' own fading record -----------------------------------
        margin = self._record_margin(count, b.n)
        surging = self._surging(count, mu)
        surge_margin = self._surge_margin(surging, b.n)
        burst_margin = self._burst_margin(surging, b.n)

        # -- sources spiking together -----------------------------------------------------------------------
        spiking = 0
        if by_source:
            for name, c in by_source.items():
                sb = self._sources.get(name)
                if sb is None:
                    sb = self._sources[name] = _Baseline()
                c = float(c) if c and c > 0 else 0.0
                smu = max(self._expected(sb, hour, day), 1e-3)
                svar = smu + sb.disp * smu * smu
                # per-source counts are small: the count model alone says whether one source is surprising
                ss = _log10_tail(c, smu, svar) if c > p.min_count else 0.0
                if sb.n >= r.warm_up and ss >= p.source_watch:
                    spiking += 1
                if self._severity is Severity.QUIET or self._alarm_buckets >= r.relearn:
                    self._learn(sb, c, hour, day, smu, svar)
            if spiking >= 2 and margin > 0.0:
                # independent corroboration: each extra source counts as beating the record by a further 25%,
                # with diminishing weight
                margin += math.log1p(spiking) * math.log(1.25)

        if warming:
            self._learn(b, count, hour, day, mu, var)
            return Verdict(at=t, observed=count, expected=mu, score=0.0, severity=Severity.QUIET, warming_up=True,
                           sources_spiking=spiking)

        severity = self._severity_for(((s_point, point_ratio), (s_window, window_ratio)))
        # The forecast fits the shape of the current episode only: buckets that are clearly part of a surge, from
        # its first one.  Older buckets would bend the curve (their leverage grows as t^4), and noise selected
        # for being above the baseline would fake an acceleration.
        if s_point >= 1.3 or s_window >= 2.0:
            self._learn_shape(count, mu)
        elif severity is Severity.QUIET:
            self._fit = [0.0] * 6
        self._alarm_buckets = self._alarm_buckets + 1 if severity is not Severity.QUIET else 0
        # The baseline learns only from unremarkable buckets (clipped), so a surge -- even its early ramp, before
        # it alarms -- never becomes "normal", unless it has lasted so long that it is the new normal.
        suspect = s_window >= r.ladder[0][2] and window_ratio >= r.ladder[0][3]
        if (severity is Severity.QUIET and not suspect) or self._alarm_buckets >= r.relearn:
            self._learn(b, count, hour, day, mu, var)

        # 0 unless the record falls; 0.5 when it is doubled (record_scale); -> 1 for a new order of magnitude
        score = margin / (margin + p.record_scale) if margin > 0.0 else 0.0
        if surge_margin > 0.0:
            score = max(score, surge_margin / (surge_margin + p.surge_scale))
        if burst_margin > 0.0:
            score = max(score, burst_margin / (burst_margin + p.surge_scale))
        forecast = self._forecast(count, mu) if severity is not Severity.QUIET else None
        return Verdict(at=t, observed=count, expected=mu, score=score, severity=severity, warming_up=False,
                       forecast=forecast, sources_spiking=spiking)

    def _severity_for(self, views: tuple[tuple[float, float], ...]) -> Severity:
        """Highest level whose entry thresholds (surprise and ratio) one view meets; hold a level while a view
        meets its lower stay thresholds, and step down only after ``cooldown_buckets`` below them."""
        ladder = self._rates.ladder
        entered = Severity.QUIET
        held = Severity.QUIET
        for level, (d_in, r_in, d_stay, r_stay) in zip(_LEVELS, ladder):
            for s, ratio in views:
                if s >= d_in and ratio >= r_in:
                    entered = level
                if s >= d_stay and ratio >= r_stay:
                    held = level
        cur = self._severity
        if entered.rank >= cur.rank:
            self._below_exit = 0
            self._severity = entered
            return entered
        if held.rank >= cur.rank:
            self._below_exit = 0
            return cur
        self._below_exit += 1
        if self._below_exit >= self.params.cooldown_buckets:
            self._below_exit = 0
            self._severity = held if held.rank > entered.rank else entered
        return self._severity

    def _learn_shape(self, count: float, mu: float) -> None:
        """Add this bucket to the discounted straight-line fit of the log excess over the baseline.

        The sums are kept relative to "now", so each step shifts every past t by -1 and discounts it: O(1) per
        bucket, no buffer.  Weights are the inverse variance of the log excess of a Poisson count
        (excess^2 / count), so noisy buckets near the baseline barely tilt the line."""
        S0, S1, S2, T0, T1, age = self._fit
        lam = self._rates.shape_discount
        S2 = lam * (S2 - 2.0 * S1 + S0)
        S1 = lam * (S1 - S0)
        T1 = lam * (T1 - T0)
        excess = count - mu
        w = excess * excess / count if excess > 1.0 else 0.0
        y = math.log(excess) if w > 0.0 else 0.0
        self._fit = [lam * S0 + w, S1, S2, lam * T0 + w * y, T1, age + 1.0]

    def _forecast(self, count: float, mu: float) -> Forecast:
        """Peak rate and time to peak from the growth of the surge so far.

        A surge that spreads by word of mouth grows like a power of its age, ``excess ~ age**k``; the slope of
        the log excess (fitted over the episode, discounted) gives ``k = slope * age``.  Nothing in a ramp says
        when it will stop, so the forecast takes the Copernican prior (Gott): the median remaining growth time
        equals the growth time so far.  The peak is then ``2**k`` times the current excess, ``age`` from now."""
        b = float(self.params.bucket_seconds)
        S0, S1, S2, T0, T1, age = self._fit
        current = max(count, mu)
        det = S0 * S2 - S1 * S1
        if S0 <= 0.0 or det <= 1e-12 * S0 * S0:
            return Forecast(peak_rate=current, seconds_to_peak=0.0, peak_ratio=current / max(mu, 1e-9))
        c = (T0 * S2 - T1 * S1) / det  # fitted log excess now
        g = (S0 * T1 - S1 * T0) / det  # its slope per bucket
        if g <= 0.0:  # flat or past the peak: the peak is now
            peak = max(mu + math.exp(c), current)
            return Forecast(peak_rate=peak, seconds_to_peak=0.0, peak_ratio=peak / max(mu, 1e-9))
        k = min(g * age, math.log2(100.0))  # at most a hundredfold from here
        steps = min(age, 6 * 3600.0 / b)
        peak = mu + math.exp(c) * 2.0 ** k
        return Forecast(peak_rate=peak, seconds_to_peak=steps * b, peak_ratio=peak / max(mu, 1e-9))
