"""The spike detector: causal, honest at low counts, seasonal, calm after a surge."""
import json
import math
import random
from dataclasses import replace

import numpy as np

import pytest

from surgewatch.detector.spike import DetectorParams, SpikeDetector
from surgewatch.detector.verdict import Severity

T0 = 1_700_000_000 - (1_700_000_000 % 86400)  # a midnight, UTC
MINUTE = DetectorParams(bucket_seconds=60)


def _poisson(rng, lam):
    # Knuth's method: fine for the small rates used here
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _stream(n, rate, seed=1, bucket=60, start=T0):
    rng = random.Random(seed)
    return [(start + i * bucket, _poisson(rng, rate(i) if callable(rate) else rate)) for i in range(n)]


def _run(det, points):
    return [det.update(t, c) for t, c in points]


def test_appending_future_points_never_changes_earlier_verdicts():
    points = _stream(3000, 2.0, seed=7)
    points[2500] = (points[2500][0], 40)
    short = _run(SpikeDetector(MINUTE), points[:2600])
    long = _run(SpikeDetector(MINUTE), points)
    assert short == long[:2600]


def test_a_restored_state_gives_identical_verdicts_and_is_small_json():
    points = _stream(4000, lambda i: 1.0 + (i % 1440) / 500, seed=3)
    det = SpikeDetector(MINUTE)
    _run(det, points[:3000])
    blob = json.dumps(det.state())
    assert len(blob) < 50_000
    restored = SpikeDetector(MINUTE, json.loads(blob))
    assert _run(restored, points[3000:]) == _run(det, points[3000:])


def test_the_state_stays_compact_after_a_week_with_several_sources():
    det = SpikeDetector(DetectorParams(bucket_seconds=300))
    for t, c in _stream(7 * 288, 20.0, bucket=300):
        det.update(t, c, {"x": c // 2, "reddit": c // 3, "rss": c - c // 2 - c // 3})
    assert len(json.dumps(det.state())) < 50_000


def test_update_does_not_mutate_its_inputs():
    det = SpikeDetector(MINUTE)
    by_source = {"x": 3.0, "reddit": 1.0}
    for t, c in _stream(500, 2.0):
        det.update(t, c, by_source)
    assert by_source == {"x": 3.0, "reddit": 1.0}


def _openings(verdicts):
    """Incidents a verdict stream would open: transitions from quiet to anything louder."""
    return sum(1 for a, b in zip(verdicts, verdicts[1:]) if a.severity is Severity.QUIET and b.severity is not Severity.QUIET)


def test_a_quiet_poisson_day_at_half_a_mention_a_minute_raises_almost_no_alerts():
    det = SpikeDetector(MINUTE)
    verdicts = _run(det, _stream(2 * 1440, 0.5, seed=11))
    day2 = verdicts[1440:]
    assert _openings(day2) <= 1
    assert max(v.score for v in day2) < 0.5


def test_two_days_at_a_third_of_a_mention_a_minute_open_at_most_one_watch():
    for seed in (21, 22, 23):
        verdicts = _run(SpikeDetector(MINUTE), _stream(2 * 1440, 0.3, seed=seed))
        assert _openings(verdicts) <= 1
        assert all(v.severity <= Severity.WATCH for v in verdicts)


def test_a_jump_from_two_to_twenty_a_minute_alerts_within_three_buckets():
    det = SpikeDetector(MINUTE)
    points = _stream(1440, 2.0, seed=15)
    _run(det, points)
    t = points[-1][0]
    rng = random.Random(3)
    surge = [det.update(t + 60 * (k + 1), _poisson(rng, 20.0)) for k in range(3)]
    assert any(v.severity >= Severity.WATCH for v in surge)


def test_a_jump_to_twenty_a_minute_is_flagged_within_two_buckets():
    det = SpikeDetector(MINUTE)
    points = _stream(1440, 0.5, seed=5)
    _run(det, points)
    t = points[-1][0]
    surge = [det.update(t + 60 * (k + 1), 20) for k in range(5)]
    assert surge[0].severity is not Severity.QUIET or surge[1].severity is not Severity.QUIET
    assert max(surge[0].severity.rank, surge[1].severity.rank) >= Severity.WARNING.rank
    assert surge[0].observed == 20 and surge[0].expected < 2
    assert surge[0].forecast is not None and surge[0].forecast.peak_rate >= 20


def test_a_daily_peak_does_not_alert_once_the_detector_has_seen_a_few_days():
    def rate(i):  # 5-minute buckets, a peak of 60 at noon and 5 at night
        hour = (i % 288) / 12
        return 5 + 55 * math.exp(-((hour - 12) ** 2) / 8)
    points = _stream(10 * 288, rate, seed=2, bucket=300)
    verdicts = _run(SpikeDetector(DetectorParams(bucket_seconds=300)), points)
    last_days = verdicts[7 * 288:]
    noisy = [v for v in last_days if v.severity is not Severity.QUIET]
    assert len(noisy) <= 3
    noon = [v for v in last_days if 11 <= ((v.at - T0) % 86400) / 3600 <= 13]
    assert max(v.expected for v in noon) > 30  # it learnt the peak rather than ignoring it


def test_a_past_spike_does_not_inflate_the_baseline():
    det = SpikeDetector(MINUTE)
    points = _stream(1440, 3.0, seed=4)
    _run(det, points)
    t = points[-1][0]
    for k in range(10):
        det.update(t + 60 * (k + 1), 300)
    after = det.update(t + 60 * 11, 3)
    assert after.expected < 6


def test_severity_does_not_flap_while_a_surge_hovers_around_the_threshold():
    det = SpikeDetector(MINUTE)
    points = _stream(1440, 2.0, seed=9)
    _run(det, points)
    t = points[-1][0]
    rng = random.Random(1)
    severities = [det.update(t + 60 * (k + 1), 12 + rng.choice([-3, 0, 3])).severity for k in range(40)]
    first = next(i for i, s in enumerate(severities) if s is not Severity.QUIET)
    assert first < 3
    assert Severity.QUIET not in severities[first:]
    changes = sum(1 for a, b in zip(severities, severities[1:]) if a != b)
    assert changes <= 3


def test_a_lasting_surge_is_one_alert_in_the_score_not_a_hundred():
    det = SpikeDetector(MINUTE)
    points = _stream(1440, 2.0, seed=12)
    _run(det, points)
    t = points[-1][0]
    verdicts = [det.update(t + 60 * (k + 1), 40) for k in range(100)]
    high = [v for v in verdicts if v.score >= 0.5]
    assert 1 <= len(high) <= 3
    # ... while the severity, which follows the level, keeps the incident open for the whole surge
    assert all(v.severity is Severity.CRITICAL for v in verdicts[2:])


def test_missing_buckets_count_as_zero_mentions():
    gappy, full = SpikeDetector(MINUTE), SpikeDetector(MINUTE)
    points = _stream(2000, 1.5, seed=6)
    with_zeros = [(t, c if i % 7 else 0) for i, (t, c) in enumerate(points)]
    a = [gappy.update(t, c) for i, (t, c) in enumerate(with_zeros) if i % 7 or i == 0]
    b = [v for i, v in enumerate(_run(full, with_zeros)) if i % 7 or i == 0]
    assert a == b


def test_the_detector_warms_up_before_it_scores():
    det = SpikeDetector(MINUTE)
    first = _run(det, _stream(30, 1.0))
    assert all(v.warming_up and v.score == 0.0 and v.severity is Severity.QUIET for v in first)


def test_several_sources_spiking_together_raise_the_score():
    def feed(sources_up):
        det = SpikeDetector(MINUTE)
        streams = [_stream(1440, 3.0, seed=s) for s in (8, 9, 10)]
        for (t, a), (_, b), (_, c) in zip(*streams):
            det.update(t, a + b + c, {"x": a, "reddit": b, "rss": c})
        t = T0 + 1440 * 60
        by_source = {"x": 16, "reddit": 16, "rss": 16} if sources_up == 3 else {"x": 46, "reddit": 1, "rss": 1}
        return det.update(t, 48, by_source)

    broad, narrow = feed(3), feed(1)
    assert broad.sources_spiking == 3 and narrow.sources_spiking == 1
    assert broad.score > narrow.score


def test_scores_stay_in_the_unit_interval_on_wild_input():
    det = SpikeDetector(MINUTE)
    rng = random.Random(0)
    for i in range(3000):
        v = det.update(T0 + 60 * i, rng.choice([0, 0, 1, 5, 1e6, 3.5, float("nan")]))
        assert 0.0 <= v.score <= 1.0


@pytest.mark.parametrize("bucket", [60, 300])
def test_a_point_costs_less_than_twenty_microseconds(bucket):
    import time
    det = SpikeDetector(DetectorParams(bucket_seconds=bucket))
    points = _stream(20000, 30.0, bucket=bucket)
    start = time.perf_counter()
    for t, c in points:
        det.update(t, c)
    per_point = (time.perf_counter() - start) / len(points) * 1e6
    assert per_point < 60  # generous: the machine is shared; benchmarks/detector.py prints the real figure


# -- the product's demo scenario (surgewatch/demo.py): a quiet morning, then a ticket launch ------------------

DEMO_START = 1_795_761_000  # 2026-11-27 06:30 UTC, a Friday
DEMO_ONSET = DEMO_START + 180 * 60  # 09:30
DEMO_PEAK = DEMO_ONSET + 35 * 60  # 10:05


def _demo_day(seed):
    """Poisson ~3.5/min with a gentle morning rise; from 09:30 a ((t-onset)/35min)^2.5 ramp to 40x, then an
    18-minute half-life.  Returns (t, count, true rate, true baseline rate) per minute."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(int(6.5 * 60)):
        t = DEMO_START + 60 * i
        base = 3.5 * (1.0 + 0.3 * math.sin(math.pi * min(1.0, (t - DEMO_START) / (6 * 3600))))
        if t < DEMO_ONSET:
            surge = 0.0
        elif t < DEMO_PEAK:
            surge = ((t - DEMO_ONSET) / (35 * 60)) ** 2.5
        else:
            surge = 0.5 ** ((t - DEMO_PEAK) / (18 * 60))
        rate = base * (1.0 + 39.0 * surge)
        rows.append((t, int(rng.poisson(rate)), rate, base))
    return rows


def _run_demo(seed):
    det = SpikeDetector(DetectorParams(bucket_seconds=60, warm_up_buckets=90))
    return [(det.update(t, c), rate, base) for t, c, rate, base in _demo_day(seed)]


def _first(rows, pred):
    return next((v.at for v, _, _ in rows if pred(v)), None)


@pytest.mark.parametrize("seed", [20261127, 1, 2])
def test_the_demo_surge_opens_early_escalates_before_the_peak_and_resolves_after_it(seed):
    rows = _run_demo(seed)
    before = [v for v, _, _ in rows if v.at < DEMO_ONSET]
    assert all(v.severity is Severity.QUIET for v in before)
    watch = _first(rows, lambda v: v.severity >= Severity.WATCH)
    warning = _first(rows, lambda v: v.severity >= Severity.WARNING)
    # At 8 minutes the rate is only ~2x and the surge has added ~8 mentions in all: no honest test can tell
    # that from noise, so the bar is a few minutes later (the report gives the measured figures).
    assert watch is not None and watch - DEMO_ONSET <= 16 * 60
    assert warning is not None and warning < DEMO_PEAK
    at_peak = next(v for v, _, _ in rows if v.at == DEMO_PEAK)
    assert at_peak.severity is Severity.CRITICAL
    # the incident stays open (never quiet) from its first watch until the rate is back near 2x the baseline
    under_2x = next(v.at for v, rate, base in rows if v.at > DEMO_PEAK and rate < 2 * base)
    assert all(v.severity is not Severity.QUIET for v, rate, base in rows if watch <= v.at and rate > 3 * base)
    # ... and quiet within an hour of that, for good
    after = [v for v, _, _ in rows if v.at >= under_2x + 60 * 60]
    assert after and all(v.severity is Severity.QUIET for v in after)


@pytest.mark.parametrize("seed", [20261127, 1, 2])
def test_the_surge_does_not_leak_into_the_baseline(seed):
    rows = _run_demo(seed)
    pre = [v.expected for v, _, _ in rows if DEMO_ONSET - 30 * 60 <= v.at < DEMO_ONSET]
    pre_baseline = sum(pre) / len(pre)
    under_2x = next(v.at for v, rate, base in rows if v.at > DEMO_PEAK and rate < 2 * base)
    during = [v.expected for v, _, _ in rows if DEMO_ONSET <= v.at <= under_2x]
    assert max(during) < 2 * pre_baseline
    # ... nor does the first day's hour of day: no jump of the expected level at 10:00
    ten = next(v for v, _, _ in rows if v.at == DEMO_ONSET + 30 * 60)
    before_ten = next(v for v, _, _ in rows if v.at == DEMO_ONSET + 29 * 60)
    assert abs(ten.expected - before_ten.expected) < 0.1 * before_ten.expected


@pytest.mark.parametrize("seed", [20261127, 1, 2])
def test_the_forecast_sees_the_peak_coming_within_a_small_factor(seed):
    rows = _run_demo(seed)
    true_peak = max(rate for _, rate, _ in rows)
    early = [v for v, _, _ in rows if DEMO_PEAK - 15 * 60 <= v.at <= DEMO_PEAK - 10 * 60]
    assert all(v.forecast is not None for v in early)
    ratios = [v.forecast.peak_rate / true_peak for v in early]
    assert all(1 / 3 <= r <= 3 for r in ratios), ratios
    assert all(v.forecast.seconds_to_peak > 0 for v in early)


def test_a_state_of_an_older_layout_is_refused_or_migrated_so_the_pipeline_never_crashes():
    with pytest.raises(ValueError):
        SpikeDetector(MINUTE, {"v": 2, "total": {}, "sources": {}})
    current = SpikeDetector(MINUTE).state()
    with pytest.raises(ValueError):
        SpikeDetector(MINUTE, {**current, "v": 3})  # the layout before the record score
    # version 4 lacks the duration and frequency records: it is read (the learned baseline is kept), they start empty
    learned = SpikeDetector(MINUTE)
    for i in range(600):
        learned.update(T0 + 60 * i, 5.0 + i % 3)
    v4 = {k: v for k, v in learned.state().items() if k not in ("surge", "bursts")} | {"v": 4}
    migrated = SpikeDetector(MINUTE, v4)
    assert migrated.state()["total"] == learned.state()["total"] and migrated.state()["surge"] is None
    assert migrated.state()["bursts"] is None
    assert migrated.state()["v"] == current["v"]
    # version 5 lacks only the frequency record: the duration record is kept
    v5 = {k: v for k, v in learned.state().items() if k != "bursts"} | {"v": 5}
    migrated = SpikeDetector(MINUTE, v5)
    assert migrated.state()["surge"] == learned.state()["surge"] is not None and migrated.state()["bursts"] is None
    migrated.update(T0 + 60 * 600, 5.0)  # and it runs on
    with pytest.raises(ValueError):
        SpikeDetector(MINUTE, {**current, "v": 99})
    with pytest.raises(ValueError):
        SpikeDetector(MINUTE, {"v": current["v"]})  # right version, missing fields


# -- the score: how far a bucket beats the series' own fading record -------------------------------------------

FIVE_MIN = DetectorParams(bucket_seconds=300)
DAY = 288  # five-minute buckets


def _bursty_days(days, seed, bursts=(), rate=20.0):
    """Poisson at ``rate`` per five minutes, with ``bursts`` as {bucket index: count}."""
    points = _stream(days * DAY, rate, seed=seed, bucket=300)
    return [(t, dict(bursts).get(i, c)) for i, (t, c) in enumerate(points)]


def test_the_biggest_burst_in_weeks_scores_high_and_a_smaller_one_days_later_does_not():
    points = _bursty_days(10, seed=31, bursts={4 * DAY: 400, 6 * DAY: 200})
    verdicts = _run(SpikeDetector(FIVE_MIN), points)
    assert verdicts[4 * DAY].score >= 0.7  # twentyfold the usual rate: far above any bucket seen so far
    assert verdicts[6 * DAY].score == 0.0  # half the burst two days ago: not a record, however unusual today
    # once, not for the rest of the day: nothing else in the ordinary days comes near
    assert sorted(v.score for v in verdicts[2 * DAY:])[-2] < 0.3


def test_the_record_fades_so_a_smaller_burst_weeks_later_scores_again():
    points = _bursty_days(40, seed=32, bursts={2 * DAY: 1000, 38 * DAY: 250})
    verdicts = _run(SpikeDetector(FIVE_MIN), points)
    assert verdicts[2 * DAY].score >= 0.8
    assert verdicts[38 * DAY].score >= 0.5  # five weeks on, a quarter of that burst is news again


def test_a_burst_scores_the_same_at_any_scale_of_mentions():
    def burst_score(rate):
        points = _bursty_days(6, seed=33, bursts={5 * DAY: int(rate * 12)}, rate=rate)
        return _run(SpikeDetector(FIVE_MIN), points)[5 * DAY].score

    small, large = burst_score(15.0), burst_score(1500.0)
    assert small > 0.5 and large > 0.5
    assert abs(small - large) < 0.15  # a twelvefold burst: only the Poisson shrinkage of small counts differs


def test_a_drop_to_nothing_scores_only_when_the_score_is_two_sided():
    points = _bursty_days(6, seed=34, rate=200.0)
    points[5 * DAY] = (points[5 * DAY][0], 0)
    one = _run(SpikeDetector(FIVE_MIN), points)[5 * DAY]
    two = _run(SpikeDetector(replace(FIVE_MIN, two_sided=True)), points)[5 * DAY]
    assert one.score == 0.0
    assert two.score >= 0.8


# -- the duration record: hours of surging buckets are news even below the peak record -------------------------

NO_DURATION = replace(FIVE_MIN, surge_ratio=1e9)


def _spike_then_surge(seed):
    """Poisson 20 per five minutes; a two-bucket spike of 400-500 on day 3, two hours at ~120 (6x) on day 5."""
    points = _bursty_days(7, seed=seed, bursts={3 * DAY: 400, 3 * DAY + 1: 500})
    rng = random.Random(seed)
    surge = range(5 * DAY, 5 * DAY + 24)
    return [(t, 120 + rng.randint(-12, 12) if i in surge else c) for i, (t, c) in enumerate(points)], surge


@pytest.mark.parametrize("seed", [35, 36, 37])
def test_hours_at_six_times_the_usual_rate_score_though_a_taller_short_spike_came_first(seed):
    points, surge = _spike_then_surge(seed)
    with_duration = _run(SpikeDetector(FIVE_MIN), points)
    peak_only = _run(SpikeDetector(NO_DURATION), points)
    assert max(v.score for v in peak_only[surge.start:surge.stop]) == 0.0  # 120 never beats the 500 of two days ago
    best = max(v.score for v in with_duration[surge.start:surge.stop])
    assert best >= 0.3
    spike = range(3 * DAY, 3 * DAY + 2)
    assert best > max(v.score for i, v in enumerate(with_duration[DAY:], DAY) if i not in surge and i not in spike)
    # the spike's first bucket is the peak record's alone; its second is already a (short) cluster
    assert with_duration[3 * DAY].score == peak_only[3 * DAY].score >= 0.7


def test_lone_surging_buckets_days_apart_never_count_as_duration():
    bursts = {d * DAY + 100: 150 for d in (2, 3, 4, 5)}  # 7.5x, one bucket a day
    points = _bursty_days(7, seed=38, bursts=bursts)
    assert _run(SpikeDetector(FIVE_MIN), points) == _run(SpikeDetector(NO_DURATION), points)


# -- the frequency record: a day of separate spikes is news even when no spike or run of them is a record --------

NO_BURSTS = replace(FIVE_MIN, burst_min=1e9)


def _surge_then_lone_spikes(seed, every, count=8):
    """Poisson 20 per five minutes; two hours at 400 on day 2 (a record in height and in duration), then on day 6
    ``count`` lone buckets of 140 (7x), ``every`` buckets apart."""
    bursts = {2 * DAY + k: 400 for k in range(24)}
    spikes = [6 * DAY + every * k for k in range(count)]
    bursts.update({i: 140 for i in spikes})
    return _bursty_days(8, seed=seed, bursts=bursts), spikes


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_a_day_of_separate_spikes_scores_though_neither_their_height_nor_their_duration_is_a_record(seed):
    points, spikes = _surge_then_lone_spikes(seed, every=18)  # every 90 minutes, back to 20 in between
    with_bursts = _run(SpikeDetector(FIVE_MIN), points)
    without = _run(SpikeDetector(NO_BURSTS), points)
    assert max(without[i].score for i in spikes) < 0.3  # the peak and duration records of day 2 still stand
    assert max(with_bursts[i].score for i in spikes) >= 0.5
    # it is the fourth spike that makes the day unusual, not the first three
    assert [with_bursts[i].score for i in spikes[:3]] == [without[i].score for i in spikes[:3]]


def test_a_few_lone_spikes_a_day_are_not_a_frequency_record():
    # three a day, eight hours apart, for days: ordinary for this brand, whatever the spikes' height
    bursts = {d * DAY + 96 * k + 10: 140 for d in range(1, 8) for k in range(3)}
    points = _bursty_days(8, seed=44, bursts=bursts)
    assert _run(SpikeDetector(FIVE_MIN), points) == _run(SpikeDetector(NO_BURSTS), points)


def test_an_hour_of_spikes_with_short_dips_is_one_burst():
    # twelve spiking buckets in an hour and a half, each followed by a quiet one: one burst, not twelve
    def recent_bursts(bursts):
        det = SpikeDetector(FIVE_MIN)
        _run(det, _bursty_days(6, seed=45, bursts=bursts)[:4 * DAY + 30])
        return det.state()["bursts"][0]

    one = recent_bursts({4 * DAY: 300})
    assert 0.8 < one <= 1.0  # one burst, a little faded
    assert recent_bursts({4 * DAY + 2 * k: 300 for k in range(12)}) == pytest.approx(one)
    assert recent_bursts({4 * DAY + 12 * k: 300 for k in range(2)}) > 1.5 * one  # an hour apart: two
