"""Mentions to site traffic: the calibrated model, its history loaders (CSV, Prometheus over real HTTP), the
cache in the store, the config, and the line ops read ("about 6x normal (~5,400 req/min vs ~900) in ~25 min").

The model is checked on synthetic worlds whose truth is known: weeks of minutes with a daily and weekly
rhythm, Poisson mentions, noisy traffic, and mention surges that the traffic follows with a set lag.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from scipy.signal import lfilter

from surgewatch.detector.traffic import TrafficModel, TrafficModelError, fit_traffic_model, predict_traffic
from surgewatch.detector.verdict import Forecast, Severity, Verdict
from surgewatch.notifier import ConsoleChannel
from surgewatch.notifier.base import TrafficOutlook
from surgewatch.notifier.pagerduty import PagerDutyChannel
from surgewatch.notifier.slack_blocks import change_text, marketing_blocks, ops_blocks
from surgewatch.config import ConfigError, parse_settings
from tests.fakes.prometheus_server import FakePrometheus
from surgewatch.pipeline import Runtime
from surgewatch.traffic import (
    STATE_PREFIX,
    TrafficHistoryError,
    load_csv_history,
    load_prometheus_history,
    traffic_outlook,
)
from tests.test_notifier_contract import make_notification

DAY = 86400.0
START = 1_764_547_200.0  # 2025-12-01 00:00 UTC, a Monday
TOKEN = "prom-SECRET-token-0123456789"
QUERY = "sum(rate(http_requests_total{job='web'}[5m])) * 60"


# -- a synthetic world -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Surge:
    at: float
    peak_ratio: float  # mentions at the peak / normal
    ramp: float = 35 * 60.0  # onset to mention peak
    half_life: float = 18 * 60.0

    @property
    def peak_at(self) -> float:
        return self.at + self.ramp


def _shape(t: np.ndarray, s: Surge) -> np.ndarray:
    """0 before the onset, a steepening climb to 1 at the peak (word spreading), then a decay."""
    x = np.zeros_like(t)
    up = (t >= s.at) & (t < s.peak_at)
    x[up] = ((t[up] - s.at) / s.ramp) ** 2.5
    down = t >= s.peak_at
    x[down] = 0.5 ** ((t[down] - s.peak_at) / s.half_life)
    return x


@dataclass
class World:
    t: np.ndarray  # minute starts
    rpm: np.ndarray  # site requests per minute (noisy)
    normal_rpm: np.ndarray  # the site's true normal
    response: np.ndarray  # true traffic multiple (noise-free)
    mention_normal: np.ndarray  # true normal mentions per minute
    counts: dict[float, int]  # mentions per minute (non-zero only)

    def traffic(self, end: float | None = None) -> list[tuple[float, float]]:
        keep = self.t < (end if end is not None else math.inf)
        return list(zip(self.t[keep].tolist(), self.rpm[keep].tolist()))

    def mentions(self, end: float | None = None) -> dict[float, int]:
        return {t: n for t, n in self.counts.items() if end is None or t < end}

    def true_traffic_peak(self, s: Surge) -> tuple[float, float]:
        """(time, multiple) of the real traffic peak after surge ``s``."""
        w = (self.t >= s.at) & (self.t < s.at + 6 * 3600)
        j = int(np.argmax(self.response[w]))
        return float(self.t[w][j]), float(self.response[w][j])

    def mention_normal_at(self, at: float) -> float:
        return float(self.mention_normal[int((at - START) // 60)])


def make_world(days: float, surges: Sequence[Surge] = (), *, response: str = "power", elasticity: float = 0.55,
               lag: float = 20 * 60.0, visitors_per_excess: float = 5 / 24, linger_minutes: float = 0.0,
               mentions_per_min: float = 2.0, rpm: float = 900.0, noise: float = 0.05, seed: int = 1,
               site_events: Sequence[tuple[float, float, float]] = ()) -> World:
    """``response``: "power" (traffic multiple = mention multiple ** elasticity, the model's own form) or
    "linear" (extra traffic proportional to extra mentions, which a power law only approximates).
    ``linger_minutes``: visitors stay, so the traffic is the response smoothed by an exponential kernel.
    ``site_events``: (start, factor, seconds) traffic changes with no mention behind them (outages, mailings)."""
    rng = np.random.default_rng(seed)
    t = START + 60.0 * np.arange(int(days * 1440))
    hour = ((t - START) % DAY) / 3600
    weekend = (((t - START) // DAY) % 7) >= 5
    mention_normal = mentions_per_min * (0.6 + 0.5 * np.sin(2 * np.pi * (hour - 9) / 24)) * np.where(weekend, 0.8, 1.0)
    ratio = np.ones_like(t)
    lagged = np.ones_like(t)
    for s in surges:
        ratio += (s.peak_ratio - 1) * _shape(t, s)
        lagged += (s.peak_ratio - 1) * _shape(t - lag, s)
    counts = rng.poisson(mention_normal * ratio)
    growth = 1 + 0.003 * (t - START) / DAY
    normal_rpm = rpm * (1.0 + 0.5 * np.sin(2 * np.pi * (hour - 7) / 24)) * np.where(weekend, 0.7, 1.0) * growth
    multiple = lagged ** elasticity if response == "power" else 1 + visitors_per_excess * (lagged - 1)
    if linger_minutes:
        a = 1 - math.exp(-1 / linger_minutes)
        multiple = 1 + lfilter([a], [1, a - 1], multiple - 1)
    traffic_multiple = multiple.copy()
    for at, factor, seconds in site_events:
        traffic_multiple *= np.where((t >= at) & (t < at + seconds), factor, 1.0)
    noisy = normal_rpm * traffic_multiple * np.exp(rng.normal(0, noise, len(t)))
    return World(t, noisy, normal_rpm, multiple, mention_normal,
                 {float(a): int(c) for a, c in zip(t, counts) if c})


def fit(world: World, end: float, start: float = START, **kw: Any) -> TrafficModel:
    return fit_traffic_model(world.traffic(end), world.mentions(end), start=start, end=end, bucket_seconds=60,
                             mentions_from=start, **kw)


THREE_SURGES = (Surge(START + 3 * DAY + 10 * 3600, 8), Surge(START + 11 * DAY + 14 * 3600, 25),
                Surge(START + 19 * DAY + 19 * 3600, 15))
HELD_OUT = Surge(START + 29 * DAY + 10.5 * 3600, 20, ramp=30 * 60)
CUT = START + 29 * DAY  # the model learns from the history before this; the held-out surge comes after


@pytest.fixture(scope="module")
def known_world() -> World:
    # many mentions a minute, so counting noise does not blur the relation being recovered
    return make_world(28, THREE_SURGES, response="power", elasticity=0.55, lag=20 * 60, mentions_per_min=20)


@pytest.fixture(scope="module")
def realistic_world() -> World:
    return make_world(30, (*THREE_SURGES, HELD_OUT), response="linear", linger_minutes=5, seed=7)


# -- the model -------------------------------------------------------------------------------------
def test_a_known_elasticity_and_lag_are_recovered(known_world: World) -> None:
    model = fit(known_world, START + 28 * DAY)
    assert model.calibrated, model.reason
    assert model.n_surges == 3
    assert model.elasticity == pytest.approx(0.55, rel=0.05)
    assert model.lag_seconds == pytest.approx(20 * 60, abs=120)
    assert model.r2 > 0.9
    assert [round(lag / 60) for lag in model.surge_lags] == pytest.approx([20, 20, 20], abs=4)


def test_a_held_out_surge_is_predicted_within_a_fifth(realistic_world: World) -> None:
    model = fit(realistic_world, CUT)
    assert model.calibrated and model.n_surges == 3  # the held-out surge lies after the cut
    normal = realistic_world.mention_normal_at(HELD_OUT.peak_at)
    at = HELD_OUT.at + 15 * 60  # an alert during the climb, with a perfect forecast of the mention peak
    p = predict_traffic(model, mention_peak_per_min=normal * HELD_OUT.peak_ratio, mention_normal_per_min=normal,
                        seconds_to_mention_peak=HELD_OUT.peak_at - at, at=at)
    peak_t, peak_multiple = realistic_world.true_traffic_peak(HELD_OUT)
    assert p.multiple == pytest.approx(peak_multiple, rel=0.2)
    assert at + p.seconds_to_peak == pytest.approx(peak_t, abs=5 * 60)
    true_normal = float(realistic_world.normal_rpm[int((peak_t - START) // 60)])
    assert p.normal_rpm == pytest.approx(true_normal, rel=0.08)
    assert p.peak_rpm == pytest.approx(p.normal_rpm * p.multiple)


def test_the_normal_profile_is_the_median_week_not_inflated_by_past_surges() -> None:
    # a long, big surge on one Wednesday afternoon of four: the mean of that hour would be inflated
    surges = [Surge(START + 9 * DAY + 14 * 3600, 30, ramp=40 * 60, half_life=40 * 60)]
    world = make_world(28, surges, lag=0.0, seed=3)
    model = fit(world, START + 28 * DAY)
    wednesday_3pm = START + 23 * DAY + 15 * 3600
    truth = float(world.normal_rpm[int((wednesday_3pm - START) // 60)])
    assert model.normal_at(wednesday_3pm) == pytest.approx(truth, rel=0.05)
    # the scenario does test something: the mean of that hour over the four Wednesdays is far higher
    hours = [(START + d * DAY + 15 * 3600 - START) // 60 for d in (2, 9, 16, 23)]
    mean = np.mean(np.concatenate([world.rpm[int(h):int(h) + 60] for h in hours]))
    assert mean > 1.2 * truth


def test_the_normal_profile_knows_the_weekend() -> None:
    model = fit(make_world(21, seed=4), START + 21 * DAY)
    saturday_noon, monday_noon = START + 19 * DAY + 12 * 3600, START + 21 * DAY + 12 * 3600
    assert model.weekly_slots == 168
    assert model.normal_at(saturday_noon) / model.normal_at(monday_noon) == pytest.approx(0.7, rel=0.05)
    # the stored profile starts on Monday 00:00, as documented
    assert model.normal_rpm[5 * 24 + 12] / model.normal_rpm[12] == pytest.approx(0.7, rel=0.05)


def test_a_local_time_zone_moves_the_hours_of_the_profile() -> None:
    world = make_world(21, seed=4)
    utc, tokyo = fit(world, START + 21 * DAY), fit(world, START + 21 * DAY, utc_offset_s=9 * 3600)
    at = START + 21 * DAY + 3 * 3600
    assert utc.normal_at(at) == pytest.approx(tokyo.normal_at(at), rel=0.02)  # same instant, same traffic
    assert utc.normal_rpm != tokyo.normal_rpm  # filed under other slots


def test_without_past_surges_it_says_uncalibrated_and_gives_no_multiple() -> None:
    model = fit(make_world(28, seed=5), START + 28 * DAY)
    assert not model.calibrated
    assert "no past mention surge" in model.reason and "28 days" in model.reason
    p = predict_traffic(model, mention_peak_per_min=50, mention_normal_per_min=2, seconds_to_mention_peak=600,
                        at=START + 28 * DAY)
    assert p.multiple is None and p.peak_rpm is None and p.seconds_to_peak is None
    assert p.normal_rpm is not None and p.basis.startswith("uncalibrated: no past mention surge")


def test_a_short_history_is_uncalibrated_and_says_how_short() -> None:
    world = make_world(1.5, [Surge(START + 10 * 3600, 20)])
    model = fit(world, START + 1.5 * DAY)
    assert not model.calibrated and not model.has_normal
    assert model.reason == "only 1.5 days of site traffic history (at least 2 needed)"


def test_surges_that_never_moved_the_traffic_leave_it_uncalibrated() -> None:
    world = make_world(28, THREE_SURGES, elasticity=0.0, seed=6)
    model = fit(world, START + 28 * DAY)
    assert not model.calibrated
    assert model.n_surges == 3 and "did not move site traffic" in model.reason


def test_a_surge_still_under_way_when_the_history_ends_is_not_learnt_from(realistic_world: World) -> None:
    model = fit(realistic_world, HELD_OUT.peak_at + 30 * 60)
    assert model.n_surges == 3


def test_a_site_outage_during_a_past_surge_does_not_tilt_the_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    biggest = THREE_SURGES[1]
    outage = (biggest.peak_at + 20 * 60, 0.1, 15 * 60)  # the site at a tenth of its traffic at the top
    world = make_world(28, THREE_SURGES, elasticity=0.55, mentions_per_min=20, site_events=[outage])
    model = fit(world, START + 28 * DAY)
    assert model.calibrated
    assert model.elasticity == pytest.approx(0.55, rel=0.05)

    # the scenario does test robustness: a squared loss on the same cells is pulled well down
    def weighted_least_squares(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
        return float(np.sum(w * x * y) / np.sum(w * x * x))

    monkeypatch.setattr("detector.traffic._huber_through_origin", weighted_least_squares)
    assert fit(world, START + 28 * DAY).elasticity < 0.55 * 0.9


@pytest.mark.parametrize("traffic, mentions", [
    ([], {}),
    ([(START + 60 * i, 0.0) for i in range(4 * 1440)], {}),  # a site with no traffic at all
    ([(START + 60 * i, v) for i, v in enumerate([float("nan"), float("inf"), -1.0, 1e12] * 1440)], {START: 5}),
    ([(START + 3600 * i, 900.0) for i in range(24 * 5)], {START + 60 * i: 400 for i in range(5 * 1440)}),
])
def test_odd_histories_give_an_uncalibrated_model_never_a_crash(traffic: list, mentions: dict) -> None:
    import json

    model = fit_traffic_model(traffic, mentions, start=START, end=START + 5 * DAY, bucket_seconds=60, mentions_from=START)
    assert not model.calibrated and model.reason
    json.dumps(model.to_dict(), allow_nan=False)  # the store keeps it as JSON
    p = predict_traffic(model, mention_peak_per_min=100, mention_normal_per_min=0, seconds_to_mention_peak=60,
                        at=START + 5 * DAY)
    assert p.multiple is None and p.basis.startswith("uncalibrated: ")


def test_the_model_survives_the_json_state_and_refuses_a_damaged_one(known_world: World) -> None:
    import json

    model = fit(known_world, START + 28 * DAY)
    again = TrafficModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.elasticity == model.elasticity and again.lag_seconds == model.lag_seconds
    assert again.normal_at(START + 27 * DAY) == pytest.approx(model.normal_at(START + 27 * DAY), rel=1e-4)
    with pytest.raises(TrafficModelError):
        TrafficModel.from_dict({**model.to_dict(), "normal_rpm": [1.0, 2.0]})
    with pytest.raises(TrafficModelError):
        TrafficModel.from_dict({**model.to_dict(), "version": 99})
    with pytest.raises(TrafficModelError):
        TrafficModel.from_dict({**model.to_dict(), "surprise": 1})


def test_the_peak_comes_the_learnt_lag_after_the_mention_peak(known_world: World) -> None:
    model = fit(known_world, START + 28 * DAY)
    p = predict_traffic(model, mention_peak_per_min=400, mention_normal_per_min=20, seconds_to_mention_peak=600,
                        at=START + 28 * DAY)
    assert p.seconds_to_peak == pytest.approx(600 + model.lag_seconds)
    assert p.multiple == pytest.approx(math.exp(model.elasticity * math.log((400 + model.mention_pseudo_per_min)
                                                                            / (20 + model.mention_pseudo_per_min))))
    assert not p.beyond_history
    bigger = predict_traffic(model, mention_peak_per_min=20 * 200, mention_normal_per_min=20, seconds_to_mention_peak=0,
                             at=START + 28 * DAY)
    assert bigger.beyond_history  # 200x: far beyond the 25x the model learnt from


# -- the CSV loader --------------------------------------------------------------------------------
def write(tmp_path: Path, text: str | bytes, name: str = "traffic.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_the_csv_loader_reads_epoch_and_iso_times_a_header_and_comments(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,requests_per_minute\n# exported by nginx-stats\n"
                        "1764547200,900\n2025-12-01T00:01:00Z,910.5\n2025-12-01T00:02:00,920\n\n"
                        "2025-12-01T01:02:00+01:00,930\n")
    assert load_csv_history(p, START, START + DAY) == [(START, 900.0), (START + 60, 910.5), (START + 120, 920.0),
                                                       (START + 120, 930.0)]
    assert load_csv_history(p, START + 61, START + DAY) == [(START + 120, 920.0), (START + 120, 930.0)]


@pytest.mark.parametrize("content, message", [
    ("1764547200,900,extra\n", "traffic.csv:1: expected 2 columns (timestamp,requests_per_minute), got 3"),
    ("1764547200,900\n1764547260,lots\n", "traffic.csv:2: 'lots' is not a number of requests per minute"),
    ("1764547200,-5\n", "traffic.csv:1: requests per minute must be a finite number >= 0, got '-5'"),
    ("1764547200,nan\n", "traffic.csv:1: requests per minute must be a finite number >= 0, got 'nan'"),
    ("1764547200,900\nyesterday,900\n", "traffic.csv:2: 'yesterday' is neither epoch seconds nor an ISO 8601 time"),
    ("1764547200000,900\n", "traffic.csv:1: timestamp '1764547200000' is after 2100: milliseconds?"),
    ("17645,900\n", "traffic.csv:1: timestamp '17645' is before 2000"),
    ("timestamp,requests_per_minute\n", "traffic.csv: no data rows"),
    ("", "traffic.csv: no data rows"),
    ("2025-12-01T00:00:00Z,not a number\n", "traffic.csv:1: 'not a number' is not a number"),
    (b"1764547200,900\n\xff\xfe,1\n", "traffic.csv:2: not UTF-8 text (byte 15)"),
    ("1764547200,900\n1764547260,\"900\n", "traffic.csv:2: unexpected end of data"),
    ("1764547200,900\x00\n", "traffic.csv:1: '900\\x00' is not a number"),
])
def test_the_csv_loader_names_the_line_and_the_problem(tmp_path: Path, content: str | bytes, message: str) -> None:
    p = write(tmp_path, content)
    with pytest.raises(TrafficHistoryError) as info:
        load_csv_history(p, START, START + DAY)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_or_oversized_csv_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TrafficHistoryError, match="traffic CSV .*nowhere.csv: file not found"):
        load_csv_history(tmp_path / "nowhere.csv", START, START + DAY)
    monkeypatch.setattr("surgewatch.traffic.CSV_MAX_BYTES", 10)
    with pytest.raises(TrafficHistoryError, match="15 bytes is more than the 10-byte limit"):
        load_csv_history(write(tmp_path, "1764547200,900\n"), START, START + DAY)


# -- the Prometheus loader, over real HTTP ---------------------------------------------------------
def prometheus_config(url: str, token: str | None = TOKEN, step: int = 60, query: str = QUERY) -> Any:
    brand = {"name": "Acme", "query": "acme",
             "traffic": {"prometheus": {"url": url, "query": query, "step_seconds": step,
                                        **({"bearer_token": "${PROM_TOKEN}"} if token else {})}}}
    settings = parse_settings({"brands": [brand]}, env={"PROM_TOKEN": token} if token else {})
    return settings.brands[0].traffic.prometheus


@pytest.fixture
def prometheus() -> Any:
    with FakePrometheus(bearer_token=TOKEN) as fake:
        yield fake


def test_prometheus_history_is_read_in_chunks_the_server_accepts_with_the_bearer_token(prometheus: FakePrometheus) -> None:
    samples = [(START + 60 * i, 900.0 + i % 7) for i in range(int(35 * 1440))]
    prometheus.set_series(QUERY, samples, {"job": "web"})
    got = load_prometheus_history(prometheus_config(prometheus.url), START, START + 35 * DAY)
    assert got == samples
    requests = prometheus.query_requests
    assert len(requests) == 6  # 50,400 points at most 10,000 a request: Prometheus refuses more than 11,000
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in requests)
    assert all(r.query["query"] == QUERY and r.query["step"] == "60" for r in requests)
    starts = [float(r.query["start"]) for r in requests]
    assert starts == sorted(starts) and starts[0] == START


def test_prometheus_gaps_and_nan_are_left_out(prometheus: FakePrometheus) -> None:
    prometheus.set_series(QUERY, [(START, 900.0), (START + 60, float("nan")), (START + 3600, 950.0)])
    got = load_prometheus_history(prometheus_config(prometheus.url), START, START + 2 * 3600)
    # NaN replaces 900 and is a gap; nothing is current from five minutes on (lookback) until 950 at one hour
    assert [t for t, _ in got] == [START, *[START + 3600 + 60 * i for i in range(6)]]
    assert got[0][1] == 900.0 and got[1][1] == 950.0


def refused(prometheus: FakePrometheus, **kw: Any) -> str:
    cfg = prometheus_config(prometheus.url, **kw)
    with pytest.raises(TrafficHistoryError) as info:
        load_prometheus_history(cfg, START, START + DAY, timeout=5)
    message = str(info.value)
    assert TOKEN not in message and "\n" not in message
    assert message.startswith(f"Prometheus {prometheus.url}/api/v1/query_range: ")
    return message


def test_a_wrong_token_is_a_401_that_says_to_check_it(prometheus: FakePrometheus) -> None:
    assert refused(prometheus, token="not-the-token").endswith("HTTP 401 (check bearer_token): Unauthorized")
    assert refused(prometheus, token=None).endswith("HTTP 401 (check bearer_token): Unauthorized")


def test_a_query_prometheus_cannot_parse_is_named_with_prometheus_words(prometheus: FakePrometheus) -> None:
    prometheus.refuse(QUERY, '1:9: parse error: unexpected "}" in label matching')
    assert refused(prometheus).endswith('HTTP 400 bad_data: 1:9: parse error: unexpected "}" in label matching')


@pytest.mark.parametrize("status, kind, text", [(422, "execution", "query processing would load too many samples"),
                                                (503, "timeout", "query timed out in expression evaluation")])
def test_execution_errors_and_query_timeouts_are_named(prometheus: FakePrometheus, status: int, kind: str, text: str) -> None:
    prometheus.refuse(QUERY, text, error_type=kind, status=status)
    assert refused(prometheus).endswith(f"HTTP {status} {kind}: {text}")


def test_a_proxy_error_page_a_cut_off_body_and_a_huge_body_are_named(prometheus: FakePrometheus) -> None:
    prometheus.fail(502, b"<html>Bad Gateway</html>")
    assert refused(prometheus).endswith("HTTP 502: <html>Bad Gateway</html>")
    prometheus.fail_malformed()
    assert refused(prometheus).endswith("the answer is not JSON")
    prometheus.fail_huge(25_000_000)
    assert refused(prometheus).endswith("answer exceeds the 20000000-byte limit")


def test_a_server_echoing_the_token_does_not_get_it_into_the_message(prometheus: FakePrometheus) -> None:
    prometheus.fail(500, {"status": "error", "errorType": "internal", "error": f"bad header Bearer {TOKEN}"})
    assert refused(prometheus).endswith("HTTP 500 internal: bad header Bearer ***")


def test_a_query_returning_several_series_asks_for_one(prometheus: FakePrometheus) -> None:
    prometheus.set_series(QUERY, [(START, 1.0)], {"instance": "web-1"})
    prometheus.set_series(QUERY, [(START, 2.0)], {"instance": "web-2"}, add=True)
    message = refused(prometheus)
    assert "the query returns 2 series" in message and '"instance": "web-1"' in message and "sum(...)" in message


def test_negative_rates_and_foreign_shapes_are_refused(prometheus: FakePrometheus) -> None:
    prometheus.set_series(QUERY, [(START, -3.0)])
    assert "negative requests per minute (-3)" in refused(prometheus)
    prometheus.fail(200, {"status": "success", "data": {"resultType": "vector", "result": []}})
    assert refused(prometheus).endswith("expected a matrix (range query), got 'vector'")
    prometheus.fail(200, {"status": "success", "data": {"resultType": "matrix", "result": [{"values": [[1, 2]]}]}})
    assert 'malformed sample [1, 2] (expected [unix time, "value"])' in refused(prometheus)


def test_a_slow_or_absent_prometheus_times_out_or_cannot_connect() -> None:
    with FakePrometheus(delay=1.0) as slow:
        cfg = prometheus_config(slow.url, token=None)
        with pytest.raises(TrafficHistoryError, match=r"timed out \(read, 0.3s\)"):
            load_prometheus_history(cfg, START, START + DAY, timeout=0.3)
    from tests.test_notifier_contract import free_port

    cfg = prometheus_config(f"http://127.0.0.1:{free_port()}", token=None)
    with pytest.raises(TrafficHistoryError, match=r"query_range: cannot connect$"):
        load_prometheus_history(cfg, START, START + DAY, timeout=1)


def test_the_fake_refuses_what_prometheus_refuses(prometheus: FakePrometheus) -> None:
    import requests

    url = f"{prometheus.url}/api/v1/query_range"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    too_many = requests.get(url, params={"query": QUERY, "start": 0, "end": 11_001 * 60, "step": 60}, headers=auth, timeout=5)
    assert too_many.status_code == 400 and too_many.json() == {
        "status": "error", "errorType": "bad_data",
        "error": "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"}
    backwards = requests.get(url, params={"query": QUERY, "start": 100, "end": 50, "step": "1m"}, headers=auth, timeout=5)
    assert backwards.json()["error"] == "end timestamp must not be before start time"
    bad_step = requests.get(url, params={"query": QUERY, "start": 0, "end": 60, "step": "soon"}, headers=auth, timeout=5)
    assert bad_step.json()["error"] == 'invalid parameter "step": cannot parse "soon" to a valid duration'


# -- configuration ---------------------------------------------------------------------------------
def config_errors(traffic: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings({"brands": [{"name": "Acme", "query": "acme", "traffic": traffic}]}, "test.yaml", env or {})
    return info.value.errors


def test_the_traffic_setting_takes_a_csv_or_a_prometheus_query() -> None:
    s = parse_settings({"brands": [{"name": "Acme", "query": "acme", "traffic": {"csv": "traffic.csv"}}]}, env={})
    assert s.brands[0].traffic.csv == "traffic.csv" and s.brands[0].traffic.prometheus is None
    cfg = prometheus_config("http://prometheus:9090")
    assert cfg.bearer_token.get_secret_value() == TOKEN and cfg.step_seconds == 60
    assert TOKEN not in repr(cfg) and TOKEN not in str(cfg.model_dump())


@pytest.mark.parametrize("traffic, error", [
    ({}, "brands[0].traffic: set exactly one of csv (a file path) and prometheus (url, query)"),
    ({"csv": "a.csv", "prometheus": {"url": "http://p:9090", "query": "up"}},
     "brands[0].traffic: set exactly one of csv (a file path) and prometheus (url, query)"),
    ({"csv": ""}, "brands[0].traffic.csv: String should have at least 1 character"),
    ({"prometheus": {"url": "prometheus:9090", "query": "up"}},
     "brands[0].traffic.prometheus.url: must be an http(s) URL such as http://prometheus:9090"),
    ({"prometheus": {"url": "http://p:9090"}}, "brands[0].traffic.prometheus.query: field required"),
    ({"prometheus": {"url": "http://p:9090", "query": "up", "step_seconds": 1}},
     "brands[0].traffic.prometheus.step_seconds: Input should be greater than or equal to 10"),
    ({"prometheus": {"url": "http://p:9090", "query": "up", "token": "x"}},
     "brands[0].traffic.prometheus.token: unknown key (check the spelling; see config/example.yaml)"),
    ({"prometheus": {"url": "http://p:9090", "query": "up", "bearer_token": "${PROM_TOKEN}"}},
     "brands[0].traffic.prometheus.bearer_token: environment variable PROM_TOKEN is not set"),
])
def test_a_bad_traffic_setting_is_named_with_its_path(traffic: Any, error: str) -> None:
    assert error in config_errors(traffic)


# -- the entry point: cache, failures, never the alert's problem -----------------------------------
def settings_for(traffic: dict[str, Any], timezone: str = "UTC") -> Any:
    return parse_settings({"brands": [{"name": "Acme", "query": "acme", "traffic": traffic}], "timezone": timezone},
                          env={"PROM_TOKEN": TOKEN})


def verdict_at(at: float, *, expected: float, peak: float, to_peak: float) -> Verdict:
    return Verdict(at=at, observed=expected * 4, expected=expected, score=0.9, severity=Severity.WARNING,
                   forecast=Forecast(peak_rate=peak, seconds_to_peak=to_peak, peak_ratio=peak / expected))


@pytest.fixture(scope="module")
def history_csv(tmp_path_factory: pytest.TempPathFactory, realistic_world: World) -> Path:
    p = tmp_path_factory.mktemp("traffic") / "acme-traffic.csv"
    p.write_text("timestamp,requests_per_minute\n" + "".join(f"{t:.0f},{r:.1f}\n" for t, r in realistic_world.traffic(CUT)))
    return p


def store_with_mentions(make_store: Any, world: World, end: float) -> Any:
    store = make_store(bucket_seconds=60)
    store.set_volume("Acme", "x", sorted(world.mentions(end).items()))
    return store


def test_the_outlook_comes_from_the_brands_history_and_is_cached(make_store: Any, history_csv: Path,
                                                                realistic_world: World, tmp_path: Path) -> None:
    store = store_with_mentions(make_store, realistic_world, CUT)
    copy = tmp_path / "traffic.csv"
    copy.write_bytes(history_csv.read_bytes())
    rt = Runtime(settings_for({"csv": str(copy)}), store)
    normal = realistic_world.mention_normal_at(HELD_OUT.peak_at)
    bucket = HELD_OUT.at + 14 * 60
    at = bucket + 60
    verdict = verdict_at(bucket, expected=normal, peak=normal * HELD_OUT.peak_ratio, to_peak=HELD_OUT.peak_at - at)
    outlook = traffic_outlook(rt, "Acme", verdict, at)
    assert outlook is not None and outlook.calibrated
    peak_t, peak_multiple = realistic_world.true_traffic_peak(HELD_OUT)
    assert outlook.multiple == pytest.approx(peak_multiple, rel=0.2)
    assert at + outlook.seconds_to_peak == pytest.approx(peak_t, abs=5 * 60)
    assert outlook.basis.startswith("from 3 past surges, R² ")
    state = store.get_state(STATE_PREFIX + "Acme")
    assert state["fitted_at"] == at and state["model"]["calibrated"] is True
    copy.unlink()  # the cached model is used for a day: the file is not read again
    cached = traffic_outlook(rt, "Acme", verdict, at + 3600)
    assert cached is not None and cached.multiple == outlook.multiple
    # a day later it must refit and cannot: the model fitted earlier stands in for a week, then nothing
    stale = traffic_outlook(rt, "Acme", verdict, at + 2 * DAY)
    assert stale is not None and stale.multiple == outlook.multiple
    assert traffic_outlook(rt, "Acme", verdict, at + 8 * DAY) is None


def test_a_changed_setting_refits_at_once(make_store: Any, history_csv: Path, realistic_world: World) -> None:
    store = store_with_mentions(make_store, realistic_world, CUT)
    verdict = verdict_at(CUT, expected=2, peak=40, to_peak=600)
    first = traffic_outlook(Runtime(settings_for({"csv": str(history_csv)}), store), "Acme", verdict, CUT + 60)
    assert first is not None and first.calibrated
    with FakePrometheus(bearer_token=TOKEN) as prom:  # same history, now from Prometheus
        prom.set_series(QUERY, realistic_world.traffic(CUT))
        rt = Runtime(settings_for({"prometheus": {"url": prom.url, "query": QUERY, "bearer_token": "${PROM_TOKEN}"}}), store)
        second = traffic_outlook(rt, "Acme", verdict, CUT + 120)
        assert len(prom.query_requests) == 6
    assert second is not None and second.multiple == pytest.approx(first.multiple, rel=0.01)


def test_a_failing_prometheus_costs_the_alert_nothing_and_is_not_asked_again_at_once(
        make_store: Any, realistic_world: World, caplog: pytest.LogCaptureFixture) -> None:
    store = store_with_mentions(make_store, realistic_world, CUT)
    with FakePrometheus(bearer_token=TOKEN) as prom:
        prom.fail(503, {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}, times=10)
        rt = Runtime(settings_for({"prometheus": {"url": prom.url, "query": QUERY, "bearer_token": "${PROM_TOKEN}"}}), store)
        verdict = verdict_at(CUT, expected=2, peak=40, to_peak=600)
        with caplog.at_level(logging.INFO, logger="surgewatch.traffic"):
            assert traffic_outlook(rt, "Acme", verdict, CUT + 60) is None
            assert traffic_outlook(rt, "Acme", verdict, CUT + 120) is None
        assert len(prom.query_requests) == 1  # the failure is remembered for a while
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert "site traffic history of Acme unavailable" in warning.getMessage()
        assert "HTTP 503 unavailable: TSDB not ready" in warning.getMessage()
        assert TOKEN not in caplog.text
        assert store.get_state(STATE_PREFIX + "Acme")["error"].endswith("TSDB not ready")
        assert traffic_outlook(rt, "Acme", verdict, CUT + 60 + 16 * 60) is None  # retried after 15 min
        assert len(prom.query_requests) == 2


def test_a_model_fitted_earlier_stands_in_while_the_history_cannot_be_read(
        make_store: Any, realistic_world: World) -> None:
    store = store_with_mentions(make_store, realistic_world, CUT)
    with FakePrometheus(bearer_token=TOKEN) as prom:
        prom.set_series(QUERY, realistic_world.traffic(CUT))
        rt = Runtime(settings_for({"prometheus": {"url": prom.url, "query": QUERY, "bearer_token": "${PROM_TOKEN}"}}), store)
        verdict = verdict_at(CUT, expected=2, peak=40, to_peak=600)
        good = traffic_outlook(rt, "Acme", verdict, CUT)
        prom.fail(500, b"oops", times=10)
        later = traffic_outlook(rt, "Acme", verdict, CUT + 1.5 * DAY)
    assert good is not None and later is not None and later.multiple == pytest.approx(good.multiple)


def test_brands_without_a_traffic_setting_and_quiet_verdicts_get_no_outlook(make_store: Any) -> None:
    rt = Runtime(parse_settings({"brands": [{"name": "Acme", "query": "acme"}]}, env={}), make_store())
    assert traffic_outlook(rt, "Acme", verdict_at(CUT, expected=2, peak=40, to_peak=600), CUT) is None
    rt = Runtime(settings_for({"csv": "/nonexistent.csv"}), make_store())
    quiet = replace(verdict_at(CUT, expected=2, peak=40, to_peak=600), severity=Severity.QUIET)
    assert traffic_outlook(rt, "Acme", quiet, CUT) is None
    assert rt.store.get_state(STATE_PREFIX + "Acme") is None  # nothing was even tried


def test_a_damaged_cached_model_is_refitted(make_store: Any, history_csv: Path, realistic_world: World) -> None:
    store = store_with_mentions(make_store, realistic_world, CUT)
    rt = Runtime(settings_for({"csv": str(history_csv)}), store)
    verdict = verdict_at(CUT, expected=2, peak=40, to_peak=600)
    assert traffic_outlook(rt, "Acme", verdict, CUT) is not None
    state = store.get_state(STATE_PREFIX + "Acme")
    store.set_state(STATE_PREFIX + "Acme", {**state, "model": {**state["model"], "normal_rpm": ["x"]}})
    assert traffic_outlook(rt, "Acme", verdict, CUT + 60) is not None
    assert store.get_state(STATE_PREFIX + "Acme")["fitted_at"] == CUT + 60


# -- what people read ------------------------------------------------------------------------------
OUTLOOK = TrafficOutlook(normal_rpm=903.0, multiple=6.04, peak_rpm=5454.0, seconds_to_peak=23.6 * 60,
                         basis="from 3 past surges, R² 0.91, typical error ±12%")
UNCALIBRATED = TrafficOutlook(normal_rpm=903.0, multiple=None, peak_rpm=None, seconds_to_peak=None,
                              basis="uncalibrated: no past mention surge (3x normal or more) with site traffic "
                                    "recorded in 12 days of history")


def texts(blocks: list[dict[str, Any]]) -> str:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out += [f["text"] for f in b.get("fields", [])] + [e.get("text", "") for e in b.get("elements", []) if e.get("type") == "mrkdwn"]
    return "\n".join(out).replace("\u200b", "")


def test_ops_read_the_multiple_the_numbers_and_the_time_and_what_it_rests_on() -> None:
    text = texts(ops_blocks(make_notification(traffic_outlook=OUTLOOK)))
    assert "*Site traffic:* about 6x normal (~5,500 req/min vs ~900) in ~25 min" in text
    assert "Traffic model: from 3 past surges, R² 0.91, typical error ±12%" in text
    assert "Site traffic" not in texts(ops_blocks(make_notification()))


def test_ops_are_told_when_there_is_no_estimate_and_why() -> None:
    text = texts(ops_blocks(make_notification(traffic_outlook=UNCALIBRATED)))
    assert ("*Site traffic:* no estimate yet (uncalibrated: no past mention surge (3x normal or more) with site "
            "traffic recorded in 12 days of history); normal now ~900 req/min") in text
    assert "x normal (~" not in text and "Traffic model:" not in text


def test_marketing_gets_the_short_line_and_nothing_when_uncalibrated() -> None:
    assert "Expected: about 6x normal site traffic in ~25 min" in texts(marketing_blocks(make_notification(traffic_outlook=OUTLOOK)))
    assert "site traffic" not in texts(marketing_blocks(make_notification(traffic_outlook=UNCALIBRATED)))


def test_the_tildes_of_our_own_line_cannot_strike_it_through_in_slack() -> None:
    [section] = [b for b in ops_blocks(make_notification(traffic_outlook=OUTLOOK)) if "Site traffic" in b.get("text", {}).get("text", "")]
    assert "\u200b~5,500" in section["text"]["text"] and "\u200b~900" in section["text"]["text"]


def test_an_escalation_thread_reply_carries_the_traffic_line() -> None:
    n = make_notification(event="escalated", severity="critical", previous_severity="warning", traffic_outlook=OUTLOOK)
    assert change_text(n).replace("\u200b", "").endswith("; about 6x normal site traffic in ~25 min")


def test_a_resolved_incident_says_nothing_about_traffic_to_come() -> None:
    n = make_notification(event="resolved", traffic_outlook=OUTLOOK)
    assert "Site traffic" not in texts(ops_blocks(n)) and "site traffic" not in texts(marketing_blocks(n))
    assert "site traffic" not in ConsoleChannel().format(n)


def test_the_console_line_ends_with_the_traffic_outlook() -> None:
    line = ConsoleChannel().format(make_notification(top_mentions=(), traffic_outlook=OUTLOOK))
    assert line.endswith("peak ~120/min in ~20 min; site traffic about 6x normal (~5,500 req/min vs ~900) in ~25 min")
    assert "site traffic" not in ConsoleChannel().format(make_notification(top_mentions=(), traffic_outlook=UNCALIBRATED))


def test_pagerduty_gets_the_numbers_in_custom_details_and_the_line_in_the_summary() -> None:
    event = PagerDutyChannel("k" * 32).trigger_event(make_notification(traffic_outlook=OUTLOOK))
    assert event["payload"]["summary"].endswith("; peak ~120/min in ~20 min; about 6x normal site traffic in ~25 min")
    assert event["payload"]["custom_details"]["site_traffic"] == {
        "text": "about 6x normal (~5,500 req/min vs ~900) in ~25 min", "expected_multiple": 6.04,
        "expected_peak_per_min": 5454.0, "normal_per_min": 903.0, "seconds_to_peak": 1416.0,
        "basis": "from 3 past surges, R² 0.91, typical error ±12%"}
    details = PagerDutyChannel("k" * 32).trigger_event(make_notification(traffic_outlook=UNCALIBRATED))["payload"]["custom_details"]
    assert details["site_traffic"]["expected_multiple"] is None and details["site_traffic"]["basis"].startswith("uncalibrated")


@pytest.mark.parametrize("outlook, phrase", [
    (replace(OUTLOOK, multiple=1.05, peak_rpm=948.0), "no clear rise expected (normal ~900 req/min)"),
    (replace(OUTLOOK, multiple=1.43, peak_rpm=1291.0), "about 1.4x normal (~1,300 req/min vs ~900) in ~25 min"),
    (replace(OUTLOOK, multiple=24.6, peak_rpm=22_214.0, seconds_to_peak=20), "about 25x normal (~22,000 req/min vs ~900) now"),
    (replace(OUTLOOK, seconds_to_peak=7 * 60), "about 6x normal (~5,500 req/min vs ~900) in ~7 min"),
    (replace(OUTLOOK, seconds_to_peak=80 * 60), "about 6x normal (~5,500 req/min vs ~900) in ~1 h 15 min"),
    (replace(OUTLOOK, beyond_history=True),
     "about 6x normal (~5,500 req/min vs ~900) in ~25 min — bigger than any past surge, a rough guess"),
])
def test_numbers_are_rounded_for_humans(outlook: TrafficOutlook, phrase: str) -> None:
    assert outlook.phrase() == phrase


# -- wiring: the notification and the hourly refit -----------------------------------------------
def test_a_notification_built_by_the_pipeline_carries_the_outlook_until_resolved(
        make_store: Any, history_csv: Path, realistic_world: World) -> None:
    from surgewatch.pipeline import build_notification
    from surgewatch.traffic import refresh_models

    store = store_with_mentions(make_store, realistic_world, CUT)
    rt = Runtime(settings_for({"csv": str(history_csv)}), store)
    # the hourly beat task fits the model ahead of any alert
    assert refresh_models(rt, CUT).get("Acme", "").startswith("from 3 past surges")
    assert store.get_state(STATE_PREFIX + "Acme")["fitted_at"] == CUT
    normal = realistic_world.mention_normal_at(CUT)
    opened = verdict_at(CUT, expected=normal, peak=normal * 12, to_peak=1200)
    resolved = Verdict(at=CUT + 3600, observed=normal, expected=normal, score=0.0, severity=Severity.QUIET)
    incident = {"id": "acme-1", "brand": "Acme", "status": "resolved", "severity": "warning", "opened_at": CUT,
                "transitions": [
                    {"no": 0, "at": CUT, "event": "opened", "from": "quiet", "to": "warning",
                     "verdict": opened.to_dict()},
                    {"no": 1, "at": CUT + 3600, "event": "resolved", "from": "warning", "to": "resolved",
                     "verdict": resolved.to_dict()}]}
    first = build_notification(rt, incident, incident["transitions"][0], "console")
    assert first.traffic_outlook is not None and first.traffic_outlook.calibrated
    assert first.traffic_outlook.multiple > 1.5
    assert "site traffic about" in ConsoleChannel().format(first)
    last = build_notification(rt, incident, incident["transitions"][1], "console")
    assert last.traffic_outlook is None


def test_beat_refits_hourly_on_the_detect_queue_only_where_a_brand_has_a_history(history_csv: Path) -> None:
    from surgewatch.worker.settings import beat_schedule

    entry = beat_schedule(settings_for({"csv": str(history_csv)}))["traffic-models"]
    assert entry["task"] == "surgewatch.traffic_models" and entry["options"]["queue"] == "detect"
    assert entry["schedule"].total_seconds() == 3600
    plain = parse_settings({"brands": [{"name": "Acme", "query": "acme"}]})
    assert "traffic-models" not in beat_schedule(plain)


def test_the_traffic_model_command_shows_the_calibration_and_names_what_is_missing(
        tmp_path: Path, history_csv: Path, realistic_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from surgewatch.cli.main import app
    from surgewatch.store.sqlite import SqliteStore
    from tests.support import write_config

    db = tmp_path / "sw.db"
    store = SqliteStore(str(db))
    store.set_volume("Acme", "x", sorted(realistic_world.mentions(CUT).items()))
    store.close()
    path, _ = write_config(tmp_path, {
        "brands": [{"name": "Acme", "query": "acme", "traffic": {"csv": str(history_csv)}},
                   {"name": "Plain", "query": "plain"}],
        "store": {"url": f"sqlite:///{db}"}})
    (tmp_path / "clock").write_text(str(CUT))
    monkeypatch.setenv("SURGEWATCH_CLOCK", f"file:{tmp_path / 'clock'}")
    runner = CliRunner()
    shown = runner.invoke(app, ["traffic-model", "Acme", "-c", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "from 3 past surges" in shown.output and "traffic peaks ~" in shown.output
    assert "mentions at 25x normal peaking now -> about" in shown.output
    as_json = runner.invoke(app, ["traffic-model", "acme", "-c", str(path), "--json"])
    model = TrafficModel.from_dict(json.loads(as_json.output.strip().splitlines()[-1]))
    assert model.calibrated and model.n_surges == 3
    plain = runner.invoke(app, ["traffic-model", "Plain", "-c", str(path)])
    assert plain.exit_code == 1 and "has no traffic: setting" in plain.output
    unknown = runner.invoke(app, ["traffic-model", "Nobody", "-c", str(path)])
    assert unknown.exit_code == 1 and "no brand named 'Nobody'" in unknown.output
