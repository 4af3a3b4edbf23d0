"""NAB scoring on cases small enough to check by hand."""
import math

import pytest

from surgewatch.backtest.replay import nab


def _series(n=100, windows=((50, 59),), hits=(), name="s"):
    scores = [0.0] * n
    for i in hits:
        scores[i] = 1.0
    return nab.LabelledSeries(name, scores, list(windows))


def test_scaled_sigmoid_matches_the_published_values():
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == pytest.approx(2 / (1 + math.exp(15)) - 1)  # NAB: -1 only past 3.0
    assert nab.scaled_sigmoid(3.0) != -1.0 and nab.scaled_sigmoid(3.01) == -1.0


def test_probation_is_fifteen_percent_capped_at_750_rows():
    assert nab.probation_rows(100) == 15
    assert nab.probation_rows(20000) == 750


def test_a_perfect_detector_scores_100_and_the_null_detector_0():
    perfect = _series(hits=[50])
    null = _series()
    for profile in nab.PROFILES:
        assert nab.score_corpus([perfect], profile).normalised == pytest.approx(100.0)
        assert nab.score_corpus([null], profile).normalised == pytest.approx(0.0)


def test_a_detection_at_the_window_start_beats_one_at_its_end():
    early = nab.score_file(_series(hits=[50]), nab.PROFILES["standard"], 0.5)
    late = nab.score_file(_series(hits=[59]), nab.PROFILES["standard"], 0.5)
    assert early == pytest.approx(1.0)
    # last row of a 10-row window: position -(59-59+1)/10 = -0.1
    assert late == pytest.approx(nab.scaled_sigmoid(-0.1) / nab.scaled_sigmoid(-1.0))
    assert late < 0.3 < early


def test_false_positives_cost_the_profile_weight_before_any_window_and_less_just_after_one():
    cost = nab.PROFILES["reward_low_FP"]
    before = nab.score_file(_series(hits=[20, 50]), cost, 0.5)
    assert before == pytest.approx(1.0 - 0.22, abs=1e-12)  # exactly the weight: NAB's -1 with no window before
    # one row past a 10-row window: NAB's distance is |59-60| / (10-1)
    after = nab.score_file(_series(hits=[50, 60]), cost, 0.5)
    assert after == pytest.approx(1.0 + 0.22 * nab.scaled_sigmoid(1 / 9))
    assert before < after < 1.0


def test_detections_in_the_probation_period_are_not_scored():
    cost = nab.PROFILES["standard"]
    assert nab.score_file(_series(hits=[5, 50]), cost, 0.5) == pytest.approx(1.0)


def test_a_missed_window_costs_the_false_negative_weight():
    assert nab.score_file(_series(), nab.PROFILES["reward_low_FN"], 0.5) == pytest.approx(-2.0)


def test_the_threshold_is_optimised_over_the_whole_corpus():
    # File a: the window peak scores 0.9, noise 0.8; file b: window 0.7, noise 0.6.
    a = nab.LabelledSeries("a", [0.0] * 30 + [0.8] + [0.0] * 19 + [0.9] + [0.0] * 49, [(50, 59)])
    b = nab.LabelledSeries("b", [0.0] * 30 + [0.6] + [0.0] * 19 + [0.7] + [0.0] * 49, [(50, 59)])
    result = nab.score_corpus([a, b], "standard")
    # 0.7 catches both windows and pays one false positive (0.8): 2 - 0.11 beats 1 - 1 (threshold 0.9)
    assert result.threshold == 0.7
    assert result.raw == pytest.approx(2 - 0.11)
    assert result.normalised == pytest.approx(100 * (2 - 0.11 + 2) / 4)
    assert math.isclose(result.null, -2.0)


def test_window_rows_come_from_timestamps_inclusive_of_both_ends():
    times = [float(i * 300) for i in range(10)]
    assert nab.windows_from_timestamps(times, [(600.0, 1500.0)]) == [(2, 5)]


def test_leave_one_out_scores_each_file_at_the_threshold_the_others_chose():
    # a: window 0.9, noise 0.8; b: window 0.7, noise 0.6.  Held out, a is scored at b's best threshold (0.7:
    # window and noise both detected) and b at a's (0.9: its window is missed).
    a = nab.LabelledSeries("a", [0.0] * 30 + [0.8] + [0.0] * 19 + [0.9] + [0.0] * 49, [(50, 59)])
    b = nab.LabelledSeries("b", [0.0] * 30 + [0.6] + [0.0] * 19 + [0.7] + [0.0] * 49, [(50, 59)])
    raw = (1.0 - 0.11) + (-1.0)
    assert nab.score_leave_one_out([a, b], "standard") == pytest.approx(100 * (raw + 2) / 4)
    assert nab.score_leave_one_out([a, b], "standard") < nab.score_corpus([a, b], "standard").normalised
    with pytest.raises(ValueError):
        nab.score_leave_one_out([a], "standard")
