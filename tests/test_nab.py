"""NAB scoring on cases small enough to check by hand."""
import math

import pytest

from surgewatch.backtest import nab


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


def _scored(n=100, window=(50, 59), at=(), name="s"):
    scores = [0.0] * n
    for i in at:
        scores[i] = 0.9
    return nab.LabelledSeries(name, scores, [window])


def _two_designs(poison_first=False):
    # "late" detects each window in its middle; "early" at its start but with one false alarm before it, which still
    # pays (0.89 against 0.86 a series).  Poisoned, "early" has twenty false alarms on the first series only.
    late = [_scored(at=(55,), name=f"s{i}") for i in range(3)]
    early = [_scored(at=(30, 50), name=f"s{i}") for i in range(3)]
    if poison_first:
        early[0] = _scored(at=tuple(range(20, 40)) + (50,), name="s0")
    return {"late": late, "early": early}


def test_a_nested_fold_chooses_without_the_series_it_scores_and_with_the_ones_it_trains_on():
    clean = nab.score_nested(_two_designs(), "standard", leave_out=1)
    poisoned = nab.score_nested(_two_designs(poison_first=True), "standard", leave_out=1)
    choice = {c.scored: c.design for c in poisoned.choices}
    # the fold scoring s0 never sees its twenty false alarms: it still chooses "early", and s0 pays for them
    assert {c.scored: c.design for c in clean.choices} == {("s0",): "early", ("s1",): "early", ("s2",): "early"}
    assert choice[("s0",)] == "early"
    assert poisoned.held_out_raw["s0"] < -1.0
    # the folds that train on s0 do see them, and choose "late"
    assert choice[("s1",)] == choice[("s2",)] == "late"
    assert all(set(c.scored).isdisjoint(c.train) for c in poisoned.choices)
    # choosing on everything (in-sample) picks "late" for all three and scores above the nested figure
    name, _ = nab.choose_design(_two_designs(poison_first=True), "standard")
    assert name == "late"
    assert poisoned.normalised < nab.score_corpus(_two_designs(poison_first=True)["late"], "standard").normalised


def test_nested_leave_two_out_runs_every_pair_and_scores_each_series_in_as_many_folds():
    designs = {"a": [_scored(at=(52,), name=f"s{i}") for i in range(4)]}
    nested = nab.score_nested(designs, "standard", leave_out=2)
    assert len(nested.choices) == 6
    assert sorted(s for c in nested.choices for s in c.scored) == sorted([f"s{i}" for i in range(4)] * 3)
    with pytest.raises(ValueError):
        nab.score_nested(designs, "standard", leave_out=4)
    with pytest.raises(ValueError):
        nab.score_nested({"a": designs["a"], "b": designs["a"][::-1]}, "standard")


def test_a_time_split_cuts_outside_windows_and_chooses_on_the_first_halves_only():
    # windows in both halves; "a" detects the first-half window, "b" the second-half one
    def series(at):
        s = [0.0] * 200
        for i in at:
            s[i] = 0.9
        return nab.LabelledSeries("x", s, [(40, 49), (95, 104), (150, 159)])
    first, second = nab.split_in_time(series(()))
    assert len(first.scores) + len(second.scores) == 200
    assert len(first.scores) not in range(95, 105)  # not inside the middle window
    assert second.probation == 0.0 and second.windows == [(w[0] - len(first.scores), w[1] - len(first.scores))
                                                           for w in [(95, 104), (150, 159)] if w[0] >= len(first.scores)]
    split = nab.score_time_split({"a": [series((40,))], "b": [series((150,))]}, "standard")
    assert split.choice.design == "a"  # the only one that finds anything in the first half
    assert split.normalised < split.in_sample


def test_the_vectorised_sweep_matches_a_row_by_row_count():
    # rows before any window cost fp; a window is worth the weight of its earliest detected row
    s = nab.LabelledSeries("s", [0.0] * 20 + [0.7] + [0.0] * 29 + [0.2, 0.8] + [0.0] * 48, [(50, 59)])
    cost = nab.PROFILES["standard"]
    threshold, raw = nab._best_threshold(nab._sweep_points(s, cost, 0), cost, 1)
    # at 0.8 only the window's second row: its weight (best); at 0.7 the false alarm too; at 0.2 the first row
    # (worth 1) with the false alarm
    second = nab.scaled_sigmoid(-(59 - 51 + 1) / 10) / nab.scaled_sigmoid(-1.0)
    assert raw == pytest.approx(second) and threshold == 0.8
    assert nab.score_file(s, cost, 0.7) == pytest.approx(second - 0.11)
    assert nab.score_file(s, cost, 0.2) == pytest.approx(1.0 - 0.11)
