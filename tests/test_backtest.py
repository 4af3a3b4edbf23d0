"""The NAB backtest on the shared data (skipped where ../shared is absent)."""
import csv
import json
from pathlib import Path

import pytest

from surgewatch.backtest.replay import render_report, run_backtest

# CI copies shared/ beside the clone: <parent>/main (this repo) and <parent>/shared.
NAB_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"
LABELS = NAB_DIR / "combined_windows.json"

needs_nab = pytest.mark.skipif(not LABELS.is_file(), reason=f"NAB data not found at {NAB_DIR} (../shared is absent)")


def _tiny_corpus(root: Path, names=("X",), burst_at=(2000,)) -> Path:
    """Synthetic series, 5-minute buckets, a clear burst in each one's labelled window (centred on row 2000)."""
    windows = {}
    (root / "realTweets").mkdir(parents=True)
    for k, (name, at) in enumerate(zip(names, burst_at)):
        rows = []
        for i in range(3000):
            value = 20 + ((i + k) % 7)
            if at <= i < at + 4:
                value = 400
            rows.append((f"2015-03-{1 + i // 288:02d} {(i % 288) // 12:02d}:{(i % 12) * 5:02d}:00", value))
        with (root / "realTweets" / f"Twitter_volume_{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value"])
            w.writerows(rows)
        windows[f"realTweets/Twitter_volume_{name}.csv"] = [[rows[1900][0] + ".000000", rows[2100][0] + ".000000"]]
    labels = root / "windows.json"
    labels.write_text(json.dumps(windows))
    return labels


def test_a_clear_burst_in_its_window_scores_near_the_top_and_results_follow_nab_layout(tmp_path):
    labels = _tiny_corpus(tmp_path / "data")
    out = tmp_path / "results"
    result = run_backtest(tmp_path / "data", labels, nab_results=out, progress=False)
    assert result["scores"]["realTweets"]["standard"] > 80
    series = result["series"][0]
    assert series["delays_s"][0] is not None and series["delays_s"][0] <= 100 * 300 + 300
    written = out / "surgewatch" / "realTweets" / "surgewatch_Twitter_volume_X.csv"
    with written.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert len(rows) == 3001
    assert rows[1][0] == "2015-03-01 00:00:00"
    assert "realTweets" in render_report(result)


@needs_nab
@pytest.mark.slow
def test_the_nab_backtest_runs_on_the_shared_data_and_beats_the_windowed_gaussian():
    result = run_backtest(NAB_DIR.parent.parent / "data" / "nab", LABELS, nab_results=None, progress=False)
    tweets = result["scores"]["realTweets"]
    print(render_report(result))
    assert set(result["scores"]) == {"realTweets", "realKnownCause"}
    assert {"standard", "reward_low_FP", "reward_low_FN"} <= set(tweets)
    # floors under what we reach (~86.8 standard and ~78 low-FP in-sample; ~86 and ~72 left out), above the
    # peak and duration records without the frequency record (83.4 / 76.7, 82.8 left out), so losing any of the
    # three fails here; the benchmark prints the real figures
    assert tweets["standard"] > 85 and tweets["reward_low_FP"] > 77
    held_out = result["leave_one_out"]["realTweets"]
    assert held_out["standard"] > 84 and held_out["standard"] <= tweets["standard"] + 1e-9
    assert len(result["series"]) == 13
    assert result["us_per_point"] < 100


def test_thinning_keeps_each_mention_with_the_given_probability_and_only_thins_counts():
    from surgewatch.backtest.replay import thin_counts

    counts = [float(c) for c in range(200)] * 50
    thinned = thin_counts(counts, 0.25, 7)
    assert thinned == thin_counts(counts, 0.25, 7)  # the same draw for the same seed
    assert all(0 <= t <= c and t == int(t) for t, c in zip(thinned, counts))
    assert sum(thinned) == pytest.approx(0.25 * sum(counts), rel=0.01)
    assert thin_counts([20.5, 3.0], 0.5, 0) is None  # a temperature is not a count of mentions
    with pytest.raises(ValueError):
        thin_counts(counts, 0.0, 0)


def test_a_thinned_backtest_still_finds_a_clear_burst_and_says_it_was_thinned(tmp_path):
    labels = _tiny_corpus(tmp_path / "data")
    result = run_backtest(tmp_path / "data", labels, nab_results=None, progress=False, thin=0.25)
    assert result["thin"] == 0.25
    assert result["scores"]["realTweets"]["standard"] > 80
    assert "thinned to 25%" in render_report(result)


def test_the_cli_thins_on_request_and_prints_the_json_line_last(tmp_path):
    from typer.testing import CliRunner

    from surgewatch.cli.main import app

    labels = _tiny_corpus(tmp_path / "data")
    runner = CliRunner()
    done = runner.invoke(app, ["backtest", str(tmp_path / "data"), "--labels", str(labels), "--thin", "0.5",
                               "--seed", "3", "--json"])
    assert done.exit_code == 0, done.output
    last = json.loads(done.output.strip().splitlines()[-1])
    assert last["thin"] == 0.5 and last["scores"]["realTweets"]["standard"] > 80
    assert "early_warning_in_sample" in last and "protocols" in last
    refused = runner.invoke(app, ["backtest", str(tmp_path / "data"), "--labels", str(labels), "--thin", "0"])
    assert refused.exit_code == 1 and "--thin must be above 0" in refused.output


def test_early_warning_counts_each_window_at_its_labelled_point_and_false_alarms_per_week(tmp_path):
    # bursts at the labelled point (row 2000, the window's centre) and one hour (12 rows) before it
    labels = _tiny_corpus(tmp_path / "data", names=("X", "Y"), burst_at=(2000, 1988))
    result = run_backtest(tmp_path / "data", labels, nab_results=None, progress=False)
    warning = result["early_warning_in_sample"]["realTweets"]
    assert warning["windows"] == 2 and warning["found"] == 2
    assert warning["at_or_before_label"] == 2
    assert warning["median_lead_min"] == 30.0  # leads 0 and 60 minutes
    assert warning["false_alarms_per_series_week"] == 0.0
    assert "median lead +30 min" in render_report(result)


def test_the_nested_protocol_scores_every_series_out_of_sample_with_designs_chosen_without_it(tmp_path):
    labels = _tiny_corpus(tmp_path / "data", names=("A", "B", "C", "D"), burst_at=(2000, 1995, 2010, 1990))
    designs = {"shipped": {}, "peak only": {"duration_record": False, "frequency_record": False}}
    result = run_backtest(tmp_path / "data", labels, nab_results=None, progress=False, designs=designs)
    protocol = result["protocols"]["realTweets"]
    assert len(protocol["choices"]["standard"]) == 6  # every pair of the four series held out once
    for choice in protocol["choices"]["standard"]:
        assert set(choice["held_out"]).isdisjoint(choice["chosen_on"]) and len(choice["chosen_on"]) == 2
        assert choice["design"] in designs
    assert protocol["nested"]["standard"] > 80  # a clear burst per series is found out of sample too
    assert protocol["early_warning"]["windows"] == 4 and protocol["early_warning"]["found"] == 4
    assert set(protocol["ablation"]) == set(designs)
    report = render_report(result)
    assert report.index("OUT OF SAMPLE") < report.index("IN SAMPLE")


def test_the_restricted_design_spaces_keep_the_records_and_say_they_are_not_out_of_sample_for_that_rule(tmp_path):
    labels = _tiny_corpus(tmp_path / "data", names=("A", "B", "C", "D"), burst_at=(2000, 1995, 2010, 1990))
    designs = {"shipped": {}, "peak only": {"duration_record": False, "frequency_record": False},
               "surge ratio 3": {"surge_ratio": 3.0}, "with rise": {"rise_record": True}}
    result = run_backtest(tmp_path / "data", labels, nab_results=None, progress=False, designs=designs)
    protocol = result["protocols"]["realTweets"]
    restricted = protocol["restricted"]
    assert restricted["all records, params chosen"]["designs"] == ["shipped", "surge ratio 3"]
    fixed = restricted["first design, threshold only"]
    assert fixed["designs"] == ["shipped"]
    for profile in ("standard", "reward_low_FP", "reward_low_FN"):
        # the fixed design's row is its own threshold-only nested score, on the same folds
        assert fixed[profile] == protocol["ablation"]["shipped"]["threshold_nested"][profile]
        assert fixed[profile] > 80  # a clear burst per series is found at a threshold chosen on the others
    assert "not out of sample for that rule" in render_report(result)


@needs_nab
@pytest.mark.slow
def test_on_the_shared_data_the_out_of_sample_figures_are_printed_first_and_chosen_without_the_scored_series():
    from surgewatch.backtest.replay import DESIGNS

    result = run_backtest(NAB_DIR, LABELS, nab_results=None, progress=False, designs=DESIGNS)
    protocol = result["protocols"]["realTweets"]
    assert len(protocol["choices"]["standard"]) == 15  # every pair of the six series
    for choice in protocol["choices"]["standard"]:
        assert len(choice["chosen_on"]) == 4 and set(choice["held_out"]).isdisjoint(choice["chosen_on"])
    tweets = result["scores"]["realTweets"]
    # out of sample is below in-sample (the design was tuned on these series), and well above the null detector
    for profile in ("standard", "reward_low_FP", "reward_low_FN"):
        assert 50 < protocol["nested"][profile] < tweets[profile]
        assert 50 < protocol["time_split"][profile]["second_half"]
    warning = protocol["early_warning"]
    assert warning["windows"] == 18 and warning["found"] >= 12 and warning["false_alarms_per_series_week"] < 2
    report = render_report(result)
    assert report.index("OUT OF SAMPLE") < report.index("IN SAMPLE") and "median lead" in report
