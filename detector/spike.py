"""A streaming, causal spike detector for mention counts.  Pure: numbers in, verdict out.

The model, per bucket of ``bucket_seconds``:

* **Baseline** ``mu = level * hour_factor[hour of day] * weekday_factor[day of week]`` (multiplicative
  Holt-Winters without trend).  Every update uses the observation *clipped* to ``clip_sigmas`` standard
  deviations of the expected level, so a spike moves the baseline by a bounded step and does not teach the
  model that spikes are normal; a lasting level shift is still absorbed within hours.
* **Noise** two views, and a bucket must be surprising under both (``tail="laplace"``, the default): the count
  noise (exact Poisson tail ``-log10 P(X >= observed)``: honest when the expectation is 0.4 mentions; counts at
  or below ``min_count`` never alarm on their own) and the series' own multiplicative variability (a Laplace
  tail on ``log((observed+1)/(expected+1))`` with its mean absolute value learned online: heavy enough for
  news-driven bursts).  ``tail="nb"`` uses a negative-binomial tail ``var = mu + dispersion*mu**2`` instead; the
  dispersion is learned as a ratio of clipped averages either way and deflates the onset trigger below.
* **Calibration** the surprise is re-expressed in decades of *this series'* rarity (peaks over a threshold with
  an exponential tail, learned online), so one threshold means about the same alert rate on a quiet brand and
  on a news-driven one: scale-free, no per-series tuning.
* **Onset** a CUSUM of the log-likelihood ratio "rate tripled" vs "rate as expected" (deflated by the
  overdispersion) catches a surge that is still modest bucket by bucket but persistent.
* **Breadth** when several sources are each surprising, the combined evidence grows (Fisher-style bonus).
* **Novelty** the anomaly score reports *new* evidence: once a surge is under way its score needs to beat the
  episode's running peak to stay high, so one surge is one alert and not a hundred.  Severity (with a lower
  exit threshold and a cool-down) keeps the incident open meanwhile.

No I/O, no clock reads; ``state()`` is plain JSON and ``SpikeDetector(params, state)`` resumes exactly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from detector.verdict import Forecast, Severity, Verdict

_LN10 = math.log(10.0)
_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_STATE_VERSION = 2  # bump when the layout changes: an old state is refused with ValueError


@dataclass(frozen=True)
class DetectorParams:
    bucket_seconds: int = 60
    # Score thresholds (score in [0, 1]; score = s / (s + score_scale) with s the surprise in decades).
    watch: float = 0.5
    warning: float = 0.6
    critical: float = 0.72
    exit: float = 0.35  # severity steps down only below this ...
    cooldown_buckets: int = 3  # ... for this many consecutive buckets
    score_scale: float = 6.0  # surprise (decades of improbability) that maps to score 0.5
    warm_up_buckets: int | None = None  # None: six hours' worth of buckets (at least 30)
    min_count: float = 3.0  # a bucket with at most this many mentions never alarms on its own
    seasonality: bool = True  # hour-of-day and day-of-week factors
    level_halflife_s: float = 3 * 3600.0
    season_halflife_days: float = 7.0
    dispersion_halflife_s: float = 2 * 86400.0
    min_dispersion: float = 0.0025  # at least 5% multiplicative noise however large the counts
    clip_sigmas: float = 3.0
    cusum_ratio: float = 3.0  # the onset trigger looks for a tripling of the rate (a surge, not drift)
    episode_decay_halflife_s: float = 6 * 3600.0  # how fast the memory of a surge's peak fades
    source_watch: float = 3.0  # a source is "spiking" when its own surprise exceeds this many decades
    calibrate: bool = True  # rescale surprise by how often this series has been surprising (extreme-value tail)
    calibration_halflife_s: float = 7 * 86400.0
    calibration_base: float = 2.0  # surprise (decades) above which the tail of surprises is tracked
    tail: str = "laplace"  # "laplace": log-scale Laplace tail capped by Poisson; "nb": negative binomial tail
    utc_offset_s: float = 0.0  # shift timestamps so that hour-of-day and weekday are the audience's local ones


class _Baseline:
    """Seasonal level and dispersion of one count stream (the total, or one source).

    Seasonal factors are ratios of per-slot *mean counts* (not means of ratios), which stays stable when
    counts are mostly zeros.  Dispersion is a ratio of averages for the same reason."""

    __slots__ = ("level", "hour_means", "day_means", "hour_sum", "day_sum", "sq_err", "mean_mu", "mean_mu2", "disp", "log_dev", "n")

    def __init__(self, d: Mapping[str, Any] | None = None) -> None:
        if d is None:
            self.level = -1.0  # not started
            self.hour_means: list[float] = [-1.0] * 24  # -1: slot not visited yet
            self.day_means: list[float] = [-1.0] * 7
            self.sq_err = 0.0
            self.mean_mu = 0.0
            self.mean_mu2 = 0.0
            self.disp = 0.05
            self.log_dev = 0.3
            self.n = 0
        else:
            self.level = float(d["level"])
            self.hour_means = [float(x) for x in d["hours"]]
            self.day_means = [float(x) for x in d["days"]]
            self.sq_err, self.mean_mu, self.mean_mu2 = (float(x) for x in d["moments"])
            self.disp = float(d["disp"])
            self.log_dev = float(d["log_dev"])
            self.n = int(d["n"])
            self.hour_sum, self.day_sum = (float(x) for x in d["sums"])
            return
        self.hour_sum = 0.0
        self.day_sum = 0.0

    def hour_factor(self, hour: int) -> float:
        m = self.hour_means[hour]
        visited = sum(1 for x in self.hour_means if x >= 0.0)
        if m < 0.0 or self.hour_sum <= 0.0:
            return 1.0
        return m * visited / self.hour_sum

    def day_factor(self, day: int) -> float:
        m = self.day_means[day]
        visited = sum(1 for x in self.day_means if x >= 0.0)
        if m < 0.0 or self.day_sum <= 0.0:
            return 1.0
        return m * visited / self.day_sum

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "hours": self.hour_means, "days": self.day_means,
                "moments": [self.sq_err, self.mean_mu, self.mean_mu2], "disp": self.disp, "log_dev": self.log_dev, "n": self.n,
                "sums": [self.hour_sum, self.day_sum]}


class _Rates:
    """Per-update smoothing factors derived once from the params (time constants are in seconds, not buckets)."""

    def __init__(self, p: DetectorParams) -> None:
        b = float(p.bucket_seconds)
        self.level = 1.0 - 0.5 ** (b / p.level_halflife_s)
        # each hour-of-day slot is visited 3600/b times a day; each weekday slot 86400/b times a week
        per_day_hour = max(3600.0 / b, 1.0)
        self.hour = 1.0 - 0.5 ** (1.0 / (p.season_halflife_days * per_day_hour))
        per_week_day = max(86400.0 / b, 1.0)
        self.day = 1.0 - 0.5 ** (1.0 / (4.0 * per_week_day))  # weekday factors: about four weeks of memory
        self.disp = 1.0 - 0.5 ** (b / p.dispersion_halflife_s)
        self.episode = 0.5 ** (b / p.episode_decay_halflife_s)
        self.warm_up = p.warm_up_buckets if p.warm_up_buckets is not None else max(30, int(6 * 3600 / b))
        self.calib = 1.0 - 0.5 ** (b / p.calibration_halflife_s)
        self.fast = 1.0 - 0.5 ** (1.0 / max(1.0, 900.0 / b))  # ~15 min smoothing for growth and forecast


def _log10_upper_tail(k: float, mu: float, var: float) -> float:
    """-log10 P(X >= k) for X with mean mu and variance var >= mu (negative binomial / log-normal)."""
    if k <= mu:
        return 0.0
    if mu < 30.0 and k < 200.0 and k == int(k):
        ki = int(k)
        if var <= mu * 1.000001:  # Poisson
            term = math.exp(-mu)
            cdf = term
            for j in range(1, ki):
                term *= mu / j
                cdf += term
            tail = 1.0 - cdf
            if tail < 1e-12:  # cancellation: fall back to the leading term of the tail series
                tail = term * mu / ki if ki > 0 else 1.0
        else:
            r = mu * mu / (var - mu)
            q = mu / (r + mu)
            term = math.exp(r * math.log1p(-q))
            cdf = term
            for j in range(1, ki):
                term *= (j - 1 + r) / j * q
                cdf += term
            tail = 1.0 - cdf
            if tail < 1e-12:
                tail = term * (ki - 1 + r) / ki * q if ki > 0 else 1.0
        return -math.log10(tail) if tail > 0 else 300.0
    # Large counts: log-normal with the same mean and variance, half a count of continuity correction.
    s2 = math.log1p(var / (mu * mu))
    z = (math.log((k - 0.5) / mu) + 0.5 * s2) / math.sqrt(s2) if k > 0.5 else 0.0
    return _log10_normal_tail(z)


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
            self._cusum = 0.0
            self._episode_peak = 0.0  # surprise (decades) already reported in the current surge
            self._severity = Severity.QUIET
            self._below_exit = 0
            self._fast = -1.0  # fast EWMA of the count, for growth
            self._growth = 0.0  # EWMA of log growth per bucket
            self._accel = 0.0
            # peaks-over-threshold tail of the surprise: how often it exceeds the base, and by how much on average
            self._exceed_rate = 10.0 ** -self.params.calibration_base
            self._mean_excess = 1.0 / _LN10
        else:
            if state.get("v") != _STATE_VERSION:
                raise ValueError(f"unsupported detector state version {state.get('v')!r}")
            self._total = _Baseline(state["total"])
            self._sources = {k: _Baseline(v) for k, v in state["sources"].items()}
            self._last_t = state["last_t"]
            self._cusum = float(state["cusum"])
            self._episode_peak = float(state["episode_peak"])
            self._severity = Severity(state["severity"])
            self._below_exit = int(state["below_exit"])
            self._fast = float(state["fast"])
            self._growth = float(state["growth"])
            self._accel = float(state["accel"])
            self._exceed_rate = float(state["exceed_rate"])
            self._mean_excess = float(state["mean_excess"])

    def state(self) -> dict:
        return {
            "v": _STATE_VERSION,
            "params": asdict(self.params),  # informative; the caller passes params explicitly
            "total": self._total.to_dict(),
            "sources": {k: b.to_dict() for k, b in self._sources.items()},
            "last_t": self._last_t,
            "cusum": self._cusum,
            "episode_peak": self._episode_peak,
            "severity": self._severity.value,
            "below_exit": self._below_exit,
            "fast": self._fast,
            "growth": self._growth,
            "accel": self._accel,
            "exceed_rate": self._exceed_rate,
            "mean_excess": self._mean_excess,
        }

    # -- the model -------------------------------------------------------------------------------------------

    def _slots(self, t: float) -> tuple[int, int]:
        if not self.params.seasonality:
            return 0, 0
        local = t + self.params.utc_offset_s
        hour = int(local // 3600.0) % 24
        day = (int(local // 86400.0) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
        return hour, day

    def _expected(self, b: _Baseline, hour: int, day: int) -> float:
        if not self.params.seasonality:
            return b.level
        return b.level * b.hour_factor(hour) * b.day_factor(day)

    def _learn(self, b: _Baseline, count: float, hour: int, day: int, mu: float, var: float) -> None:
        """Move the baseline towards the clipped observation (robust Holt-Winters step)."""
        r = self._rates
        p = self.params
        if b.level < 0.0:
            b.level = max(count, 0.0)
            b.n = 1
            return
        sd = math.sqrt(var)
        lo = mu - p.clip_sigmas * sd
        hi = mu + p.clip_sigmas * sd
        x = hi if count > hi else (lo if count < lo else count)
        if x < 0.0:
            x = 0.0
        n = b.n
        b.n = n + 1
        # dispersion from E[(x - mu)^2] = E[mu] + disp * E[mu^2], as a ratio of averages (stable near zero)
        a_disp = max(r.disp, 1.0 / (n + 1))
        b.sq_err += a_disp * ((x - mu) ** 2 - b.sq_err)
        b.mean_mu += a_disp * (mu - b.mean_mu)
        b.mean_mu2 += a_disp * (mu * mu - b.mean_mu2)
        if n > 30 and b.mean_mu2 > 0.0:
            d = (b.sq_err - b.mean_mu) / b.mean_mu2
            b.disp = p.min_dispersion if d < p.min_dispersion else (4.0 if d > 4.0 else d)
        # mean absolute log-ratio: the series' own multiplicative variability (Laplace scale)
        lr = math.log((count + 1.0) / (mu + 1.0))
        cap = p.clip_sigmas * 1.5 * b.log_dev
        lr = cap if lr > cap else (-cap if lr < -cap else lr)
        b.log_dev += a_disp * (abs(lr) - b.log_dev)
        if b.log_dev < 0.01:
            b.log_dev = 0.01
        # warm start: running means first, then the configured memory
        a_level = max(r.level, 1.0 / (n + 1))
        if not p.seasonality:
            b.level += a_level * (x - b.level)
            return
        fh = b.hour_factor(hour)
        fd = b.day_factor(day)
        b.level += a_level * (x / (fh * fd) - b.level)
        # per-slot mean counts; a slot's first visit starts from the level, and early on each slot is a running
        # mean of its visits (about n/24 so far for an hour slot), later an EWMA with the configured memory
        a_hour = max(r.hour, 1.0 / (1.0 + n / 24.0))
        old = b.hour_means[hour]
        if old < 0.0:
            old = b.level
            b.hour_sum += old
        new = old + a_hour * (x / fd - old)
        b.hour_means[hour] = new
        b.hour_sum += new - old
        a_day = max(r.day, 1.0 / (1.0 + n / 7.0))
        old = b.day_means[day]
        if old < 0.0:
            old = b.level
            b.day_sum += old
        new = old + a_day * (x / fh - old)
        b.day_means[day] = new
        b.day_sum += new - old

    def _surprise(self, b: _Baseline, count: float, hour: int, day: int, tail: str | None = None) -> tuple[float, float, float]:
        mu = max(self._expected(b, hour, day), 1e-3)
        var = mu + b.disp * mu * mu
        s = 0.0
        if count > self.params.min_count and count > mu:
            if (tail or self.params.tail) == "laplace":
                # surprising only if both the count noise (Poisson, exact) and the series' own log-scale
                # variability (Laplace: heavy enough for news-driven bursts) say so
                lr = math.log((count + 1.0) / (mu + 1.0))
                s_log = (lr / b.log_dev + _LN2) / _LN10
                s_pois = _log10_upper_tail(count, mu, mu)
                s = s_log if s_log < s_pois else s_pois
            else:
                s = _log10_upper_tail(count, mu, var)
        return s, mu, var

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
        s_point, mu, var = self._surprise(b, count, hour, day)

        # CUSUM onset trigger: log-likelihood ratio of "rate x cusum_ratio" against "rate as expected", in counts
        # deflated by the overdispersion (a negative binomial bucket carries 1/(1+disp*mu) of a Poisson's evidence).
        R = p.cusum_ratio
        # (The overdispersion deflation is what keeps this honest for large counts; a Laplace-bounded version
        # was tried and scored far worse on NAB: its bounded evidence hides the burst itself.)
        llr = (count * math.log(R) - (R - 1.0) * mu) / (1.0 + b.disp * mu)
        self._cusum = max(0.0, self._cusum + llr)
        s_cusum = self._cusum / _LN10 if count > p.min_count else 0.0
        s = max(s_point, s_cusum)

        # sources spiking together
        spiking = 0
        if by_source:
            s_best = 0.0
            for name, c in by_source.items():
                sb = self._sources.get(name)
                if sb is None:
                    sb = self._sources[name] = _Baseline()
                c = float(c) if c and c > 0 else 0.0
                # per-source counts are small: the count model alone says whether one source is surprising
                ss, smu, svar = self._surprise(sb, c, hour, day, tail="nb")
                if sb.n >= r.warm_up and ss >= p.source_watch:
                    spiking += 1
                    s_best = max(s_best, ss)
                self._learn(sb, c, hour, day, smu, svar)
            if spiking >= 2 and s > 0.0:
                # independent corroboration: each extra source adds evidence, with diminishing weight
                s += math.log10(1.0 + spiking) * p.source_watch * 0.5

        # growth and acceleration of the smoothed rate, for the forecast
        if self._fast < 0.0:
            self._fast = count
        prev_fast = self._fast
        self._fast += r.fast * (count - self._fast)
        g = math.log((self._fast + 1.0) / (prev_fast + 1.0))
        prev_growth = self._growth
        self._growth += r.fast * (g - self._growth)
        self._accel += r.fast * ((self._growth - prev_growth) - self._accel)

        self._learn(b, count, hour, day, mu, var)
        if p.calibrate:
            s = self._calibrate(s)
        if warming:
            self._cusum = 0.0
            return Verdict(at=t, observed=count, expected=mu, score=0.0, severity=Severity.QUIET, warming_up=True,
                           sources_spiking=spiking)

        # Novelty: within a surge only evidence beyond the surge's peak so far scores high.
        self._episode_peak *= r.episode
        novel = s - self._episode_peak if s > self._episode_peak else 0.0
        if s > self._episode_peak:
            self._episode_peak = s
        raw = s / (s + p.score_scale)
        score = novel / (novel + p.score_scale) if novel > 0 else 0.0
        severity = self._severity_for(raw)
        forecast = self._forecast(count, mu) if severity is not Severity.QUIET else None
        return Verdict(at=t, observed=count, expected=mu, score=score, severity=severity, warming_up=False,
                       forecast=forecast, sources_spiking=spiking)

    def _calibrate(self, s: float) -> float:
        """Express the surprise in decades of *this series'* rarity (peaks over threshold, exponential tail).

        A model that is right gives P(surprise > u + x) = 10^-(u + x); a series with heavier tails than its noise
        model (news-driven brands) exceeds u more often and by more.  Measuring both online and rescaling makes
        one threshold mean the same alert rate on every series, with no per-series tuning."""
        p = self.params
        u = p.calibration_base
        a = self._rates.calib
        rate, excess = self._exceed_rate, self._mean_excess
        calibrated = s
        if s > u:
            calibrated = -math.log10(rate) + (s - u) * (1.0 / _LN10) / excess
        elif rate > 10.0 ** -u:  # below the base: shrink in proportion so that the map stays monotone
            calibrated = s * (-math.log10(rate)) / u
        # learn after scoring (causal)
        hit = 1.0 if s > u else 0.0
        self._exceed_rate = rate + a * (hit - rate)
        if hit:
            self._mean_excess = excess + 0.05 * (min(s - u, 20.0) - excess)
        return calibrated

    def _severity_for(self, level_score: float) -> Severity:
        p = self.params
        if level_score >= p.critical:
            new = Severity.CRITICAL
        elif level_score >= p.warning:
            new = Severity.WARNING
        elif level_score >= p.watch:
            new = Severity.WATCH
        else:
            new = Severity.QUIET
        cur = self._severity
        if new.rank >= cur.rank:
            self._below_exit = 0
            self._severity = new
            return new
        # stepping down: only after the score has stayed under the exit threshold for the cool-down
        if level_score >= p.exit:
            self._below_exit = 0
            return cur
        self._below_exit += 1
        if self._below_exit >= p.cooldown_buckets:
            self._below_exit = 0
            self._severity = new
        return self._severity

    def _forecast(self, count: float, mu: float) -> Forecast:
        """Peak rate and time to peak, extrapolating the growth so far with its (negative) acceleration."""
        b = float(self.params.bucket_seconds)
        current = max(self._fast, count)
        g, a = self._growth, self._accel
        if g <= 0.0:
            peak, steps = current, 0.0
        else:
            horizon = 6 * 3600.0 / b
            if a < 0.0:  # decelerating: the peak is where the growth reaches zero
                steps = min(-g / a, horizon)
                log_gain = min(g * steps + 0.5 * a * steps * steps, math.log(100.0))
            else:  # no deceleration seen yet: extrapolate an hour at most, at most tenfold
                steps = min(3600.0 / b, horizon)
                log_gain = min(g * steps, math.log(10.0))
            peak = current * math.exp(log_gain)
        base = max(mu, 1e-9)
        return Forecast(peak_rate=peak, seconds_to_peak=steps * b, peak_ratio=peak / base)
