"""The post-event review, from history scored by the real pipeline in a real store.

Two days of minute counts (a noisy baseline with a few bumps, then a surge) go into the store; the
real ``pipeline.evaluate`` scores them and opens the incident; the test adds what the notifier and an
operator would have written (deliveries, an acknowledgement).  The review's numbers are checked
against values computed here from the seeded series and, for the threshold suggestion, against an
independent replay through the detector.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from surgewatch.detector.spike import DetectorParams, SpikeDetector
from surgewatch.detector.traffic import TrafficModel
from surgewatch.detector.verdict import Severity
from surgewatch.notifier.base import human_multiple, human_rpm
from surgewatch import pipeline
from surgewatch.reports.charts import png_size
from surgewatch.config import parse_settings
from surgewatch.ops.health import SourceHealth
from surgewatch.incidents.lifecycle import IncidentPolicy, advance
from surgewatch.pipeline import Runtime
from surgewatch.store.base import Delivery
from surgewatch.reports.review import ReviewError, build_review, render_html, render_markdown
from surgewatch.traffic import STATE_PREFIX

T0 = datetime(2026, 11, 25, 0, 0, tzinfo=timezone.utc).timestamp()  # history starts Wednesday 00:00 UTC
HOURS = 44
SURGE_AT = T0 + 40 * 3600  # Thursday 16:00 UTC: a 40-minute climb to ~25x
WARM_UP_MINUTES = 180


def settings_for(tmp_path):
    return parse_settings({
        "brands": [{"name": "Acme", "query": '"Acme Live"', "site": "https://www.acme.example"}],
        "sources": {"rss": {"interval": 60, "feeds": ["http://127.0.0.1:1/f.rss"]}},
        "channels": {"console": {}, "pagerduty": {"routing_key": "k"}},
        "store": {"url": f"sqlite:///{tmp_path / 'unused.db'}"},
        "detector": {"bucket_seconds": 60, "warm_up_minutes": WARM_UP_MINUTES, "evaluation_lag_seconds": 0,
                     "resolve_after_quiet_buckets": 10},
        "timezone": "Europe/London",
    }, "test")


def series() -> dict[str, list[tuple[float, int]]]:
    """Per-minute counts for two sources: Poisson around 3/min and 1/min, four short bumps that a
    lower threshold may take for surges, and the real surge."""
    rng = np.random.default_rng(2026)
    out: dict[str, list[tuple[float, int]]] = {"rss": [], "x": []}
    bumps = [T0 + h * 3600 for h in (9, 17, 26, 33)]
    for i in range(HOURS * 60):
        t = T0 + i * 60
        factor = 1.0
        for b in bumps:
            if b <= t < b + 6 * 60:
                factor = 3.0
        if t >= SURGE_AT:
            x = min(1.0, (t - SURGE_AT) / (40 * 60))
            factor = 1.0 + 24.0 * x ** 2 if t < SURGE_AT + 40 * 60 else 1.0 + 24.0 * 0.5 ** ((t - SURGE_AT - 2400) / 900)
        for source, base in (("rss", 3.0), ("x", 1.0)):
            n = int(rng.poisson(base * factor))
            if n:
                out[source].append((t, n))
    return out


def totals(data) -> dict[float, int]:
    out: dict[float, int] = {}
    for points in data.values():
        for t, n in points:
            out[t] = out.get(t, 0) + n
    return out


@pytest.fixture
def scored(make_store, tmp_path):
    """The store after the real pipeline scored the history; returns (store, settings, data, incident)."""
    store = make_store()
    settings = settings_for(tmp_path)
    data = series()
    for source, points in data.items():
        store.set_volume("Acme", source, points)
    SourceHealth("rss", "Acme", status="ok", last_success=T0).save(store)
    rt = Runtime(settings, store)
    pipeline.evaluate(rt, "Acme", now=T0 + 60)  # the first run scores one bucket and starts the detector
    pipeline.evaluate_until_current(rt, ["Acme"], now=T0 + HOURS * 3600)  # then it catches up the rest
    # the incident the surge opened (the bumps before it may have opened others)
    incidents = sorted((i for i in store.list_incidents("Acme") if i["opened_at"] >= SURGE_AT - 600),
                       key=lambda i: i["opened_at"])
    assert incidents and incidents[0]["opened_at"] <= SURGE_AT + 40 * 60, "the surge must open an incident"
    return store, settings, data, incidents[0]


def deliver(store, incident, channel, no, delay, receipt, status="sent", error=None):
    """What the notifier writes: the delivery log's record of a send."""
    at = incident["transitions"][no]["at"] + 60 + delay
    store.record_delivery(Delivery(incident["id"], no, channel, status=status, event=incident["transitions"][no]["event"],
                                   brand="Acme", attempts=1, receipt=receipt, error=error, created_at=at - delay,
                                   updated_at=at, sent_at=at if status == "sent" else None))


def test_the_review_lists_a_webhook_delivery_and_one_whose_channel_left_the_config(scored):
    store, settings, data, incident = scored
    # a control that ran, and one that failed and has since been removed from the config
    deliver(store, incident, "webhook:scale-web", 0, 3, {"action": "scale_up", "status": 202})
    deliver(store, incident, "webhook:gone-now", 0, 4, None, status="failed", error="webhook gone-now: HTTP 500")
    r = build_review(store, settings, incident["id"])
    by_channel = {d.channel: d for d in r.deliveries if d.transition_no == 0}
    assert by_channel["webhook:scale-web"].status == "sent"
    assert by_channel["webhook:scale-web"].recipients == ("webhook:scale-web scale_up HTTP 202",)
    assert (by_channel["webhook:gone-now"].status, by_channel["webhook:gone-now"].error) == (
        "failed", "webhook gone-now: HTTP 500")
    assert "webhook:gone-now" in render_markdown(r)


def test_a_superseded_update_is_superseded_in_the_review_not_sent(scored):
    store, settings, data, incident = scored
    store.record_delivery(Delivery(incident["id"], 0, "console", status="superseded", reason="superseded by transition 1",
                                   created_at=incident["opened_at"], updated_at=incident["opened_at"]))
    r = build_review(store, settings, incident["id"])
    d = next(d for d in r.deliveries if (d.channel, d.transition_no) == ("console", 0))
    assert (d.status, d.error, d.ok) == ("superseded", "superseded by transition 1", False)


def test_an_unknown_incident_is_a_clear_error(make_store, tmp_path):
    with pytest.raises(ReviewError, match="no incident 'nope'"):
        build_review(make_store(), settings_for(tmp_path), "nope")


def test_the_review_numbers_are_the_stored_numbers(scored):
    store, settings, data, incident = scored
    deliver(store, incident, "console", 0, 5, {})
    deliver(store, incident, "pagerduty", 0, 8, {"dedup_key": "sw-x", "action": "trigger"})
    first_alert = incident["transitions"][0]["at"] + 60 + 5
    incident["acked_by"], incident["acked_at"] = "sam", first_alert + 7 * 60
    store.save_incident(incident)
    traffic = [(SURGE_AT + k * 60, 1500.0 + (9000.0 if k == 55 else 100.0 * (k % 3))) for k in range(-60, 180)]

    r = build_review(store, settings, incident["id"], traffic)

    assert r.first_alert_at == first_alert
    assert r.traffic_peak_at == SURGE_AT + 55 * 60 and r.traffic_peak_rpm == 10500.0
    assert r.lead_seconds == SURGE_AT + 55 * 60 - first_alert
    assert r.time_to_ack == 7 * 60
    t = totals(data)
    end = incident["resolved_at"] or incident["last_at"]
    inside = {k: v for k, v in t.items() if incident["opened_at"] <= k <= end}
    assert r.peak_observed == max(inside.values()) == incident["peak_observed"]
    assert r.peak_at == min(k for k, v in inside.items() if v == max(inside.values()))
    firing = [tr for tr in incident["transitions"] if tr["event"] != "resolved" and tr["verdict"]["forecast"]]
    assert [f.peak_rate for f in r.forecasts] == [tr["verdict"]["forecast"]["peak_rate"] for tr in firing]
    assert [(d.channel, d.transition_no, d.status) for d in r.deliveries if d.status == "sent"] == [
        ("console", 0, "sent"), ("pagerduty", 0, "sent")]
    # the rest is what the pipeline's outbox recorded and nobody sent: pending or suppressed, never "sent"
    assert {d.status for d in r.deliveries if d.status != "sent"} <= {"pending", "suppressed"}
    assert [d.recipients for d in r.deliveries if d.channel == "pagerduty" and d.status == "sent"] == [
        ("PagerDuty trigger dedup_key sw-x",)]
    assert r.counts == store.counts("Acme", r.window_start, r.window_end)
    assert png_size(r.chart_png) == (1200, 600)

    md = render_markdown(r)
    assert f"| Lead time | {(SURGE_AT + 55 * 60 - first_alert) / 60:.0f} min before the traffic peak |" in md
    assert "| Acknowledged | sam at " in md and "(7 min after the first alert)" in md
    assert "| Times in | Europe/London |" in md  # the review names the zone its times are in
    page = render_html(r)
    assert "<td>Times in</td><td>Europe/London</td>" in page
    assert re.findall(r"<(?:img|script|link)\b[^>]*(?:src|href)=\"https?:", page) == []
    assert page.count('src="data:image/png;base64,') == 1


def replay_by_hand(data, settings, knob: str, value: float, end: float) -> list[tuple[float, float]]:
    """An independent replay: the detector and the incident machine, bucket by bucket; returns the
    (opened_at, ended_at) of every incident."""
    d = settings.detector
    params = replace(DetectorParams(bucket_seconds=60, warm_up_buckets=d.warm_up_minutes), **{knob: value})
    detector = SpikeDetector(params)
    policy = IncidentPolicy(Severity(d.open_severity), d.resolve_after_quiet_buckets)
    per_source = {s: dict(points) for s, points in data.items()}
    start = min(t for points in data.values() for t, _ in points)
    spans, incident, t = [], None, start
    while t < end:
        by_source = {s: float(per_source[s].get(t, 0)) for s in sorted(per_source)}
        v = detector.update(t, sum(by_source.values()), by_source)
        incident, _ = advance(incident, "Acme", v, policy)
        if incident is not None and incident["status"] == "resolved":
            spans.append((incident["opened_at"], incident["resolved_at"]))
            incident = None
        t += 60
    if incident is not None:
        spans.append((incident["opened_at"], incident["last_at"]))
    return spans


def test_the_threshold_suggestion_replays_the_stored_history(scored):
    store, settings, data, incident = scored
    r = build_review(store, settings, incident["id"])
    rp = r.replay
    assert rp is not None and rp.lowered < rp.current
    assert rp.current == getattr(DetectorParams(), rp.threshold)  # today's value of the opening threshold
    end = (incident["resolved_at"] or incident["last_at"]) + 60
    now_spans = replay_by_hand(data, settings, rp.threshold, rp.current, end)
    low_spans = replay_by_hand(data, settings, rp.threshold, rp.lowered, end)
    # The replay with today's threshold finds the incident the live pipeline opened, at the same bucket.
    assert rp.current_opened_at == incident["opened_at"] in [o for o, _ in now_spans]
    assert rp.current_alerts == len(now_spans) and rp.lowered_alerts == len(low_spans)
    ref = [(o, e) for o, e in now_spans if o <= incident["resolved_at"] and e >= incident["opened_at"]]
    ref_start, ref_end = ref[0][0], max(ref[-1][1], incident["resolved_at"])
    low = [o for o, e in low_spans if o <= ref_end and e >= ref_start]
    assert rp.lowered_opened_at == low[0]
    assert rp.minutes_earlier == max(0.0, (incident["opened_at"] - low[0]) / 60)
    # (whether a lower threshold sees this climb sooner depends on the detector's tuning; the
    # numbers above pin the review to an independent replay either way)
    overlaps = lambda o, e, a, b: o <= b and e >= a  # noqa: E731
    extra = [o for o, e in low_spans if not overlaps(o, e, ref_start, ref_end)
             and not any(overlaps(o, e, a, b) for a, b in now_spans)]
    assert rp.extra_alerts == extra
    assert rp.history_start == T0 and math.isclose(rp.history_days, (end - T0) / 86400)
    text = " ".join(r.suggestions)
    if rp.minutes_earlier > 0:
        assert f"would have alerted {rp.minutes_earlier:.0f} min earlier" in text
        assert f"at the cost of {len(extra)} extra alert" in text
    else:
        assert f"would not have alerted earlier ({len(extra)} extra alert" in text
    print(f"replay: {rp.threshold} {rp.current:g} -> {rp.lowered:g}: {rp.minutes_earlier:.0f} min earlier, "
          f"{len(extra)} extra alerts in {rp.history_days:.1f} days; current opens {rp.current_alerts}, "
          f"lowered {rp.lowered_alerts}")


# -- site traffic: what the alerts predicted against what came -------------------------------------------
LAG = 20 * 60.0
ELASTICITY = 0.5
PSEUDO = 0.2  # mentions per minute
REAL_PEAK_AT = SURGE_AT + 50 * 60


def test_the_threshold_suggestion_names_a_key_that_check_config_accepts_and_the_detector_reads(scored, tmp_path):
    store, settings, data, incident = scored
    rp = build_review(store, settings, incident["id"]).replay
    assert rp.setting == "detector.watch_decades" and rp.setting_value == f"{rp.lowered:g}"
    text = " ".join(build_review(store, settings, incident["id"]).suggestions)
    assert f"Setting detector.watch_decades: {rp.setting_value} (now {rp.current_value})" in text or \
        f"Setting detector.watch_decades: {rp.setting_value} would not" in text
    # written into the config as suggested, it passes check-config and is the threshold the replay lowered
    raw = settings.model_dump(mode="json", exclude_none=True)
    section, key = rp.setting.split(".")
    raw[section][key] = float(rp.setting_value)
    applied = parse_settings(raw, "test")
    assert getattr(Runtime(applied, store).detector_params("Acme"), rp.threshold) == rp.lowered


def test_a_brand_with_a_sensitivity_is_told_which_preset_to_set(scored, tmp_path):
    store, settings, data, incident = scored
    raw = settings.model_dump(mode="json", exclude_none=True)
    raw["brands"][0]["sensitivity"] = "balanced"
    tuned = parse_settings(raw, "test")
    rp = build_review(store, tuned, incident["id"]).replay
    assert (rp.setting, rp.setting_value, rp.current_value) == ("brands[Acme].sensitivity", "more", "balanced")
    assert rp.threshold == "alarms_per_week" and rp.lowered > rp.current
    raw["brands"][0]["sensitivity"] = rp.setting_value
    assert parse_settings(raw, "test").brands[0].sensitivity == "more"


def normal_rpm(t: float) -> float:
    """The hand-made model's normal: it rises by the hour, so a real multiple depends on when the peak came."""
    slot = (int(t // 3600) + 3 * 24) % 168  # 1970-01-01 was a Thursday; slot 0 is Monday 00:00
    return 600.0 + 5.0 * slot


def hand_model(**changes) -> TrafficModel:
    model = TrafficModel(grid_seconds=60, utc_offset_s=0.0, traffic_days=28.0,
                         normal_rpm=tuple(normal_rpm(s * 3600 - 3 * 86400) for s in range(168)), weekly_slots=168,
                         level=1.0, mention_pseudo_per_min=PSEUDO, calibrated=True, reason="", elasticity=ELASTICITY,
                         lag_seconds=LAG, n_surges=3, n_points=200, r2=0.9, peak_error=math.log(1.1),
                         largest_surge_ratio=40.0)
    return replace(model, **changes)


def store_model(store, model: TrafficModel, fitted_at: float) -> None:
    store.set_state(STATE_PREFIX + "Acme", {"version": 1, "fingerprint": "f", "fitted_at": fitted_at,
                                            "model": model.to_dict(), "error": None, "failed_at": None})


def site_traffic(start: float = SURGE_AT - 2 * 3600, end: float = SURGE_AT + 4 * 3600) -> list[tuple[float, float]]:
    """The site's minutes: its normal, and a surge of up to 4.2x normal peaking at REAL_PEAK_AT (20-minute sides)."""
    out = []
    for t in np.arange(start, end, 60.0):
        bump = max(0.0, 1.0 - abs(t - REAL_PEAK_AT) / 1200)
        out.append((float(t), normal_rpm(t) * (1.0 + 3.2 * bump)))
    return out


def hhmm(t: float) -> str:
    return datetime.fromtimestamp(t, ZoneInfo("Europe/London")).strftime("%H:%M")


def traffic_section(md: str) -> list[str]:
    lines = md.split("## Site traffic: predicted vs real\n\n", 1)[1].split("\n\n## ", 1)[0]
    return [line for line in lines.splitlines() if line]


def test_each_alert_prediction_is_set_against_the_real_traffic_peak(scored):
    store, settings, _, incident = scored
    store_model(store, hand_model(), fitted_at=T0 + 3600)  # fitted before the incident: what the alerts used
    traffic = site_traffic()

    r = build_review(store, settings, incident["id"], traffic, replay=False)

    # the real peak, computed here: 5-minute centred means over normal, from 30 min before the opening on
    times = np.array([t for t, _ in traffic])
    rpm = np.array([v for _, v in traffic])
    means = np.array([rpm[(times >= t - 150) & (times <= t + 150)].mean() for t in times])
    ratio = means / np.array([normal_rpm(t) for t in times])
    inside = (times >= incident["opened_at"] - 1800) & (times <= incident["opened_at"] + 6 * 3600)
    k = int(np.flatnonzero(inside)[np.argmax(ratio[inside])])
    c = r.traffic_check
    assert c is not None and c.unavailable is None
    assert c.real_peak_at == times[k] == REAL_PEAK_AT
    assert c.real_multiple == pytest.approx(ratio[k]) and 3.5 < c.real_multiple < 4.2  # smoothing shaves the tip
    assert c.real_normal_rpm == normal_rpm(REAL_PEAK_AT)

    # each alert's prediction, recomputed here from the stored verdict and the model's equations
    firing = [tr for tr in incident["transitions"] if tr["event"] != "resolved"]
    assert [row.transition_no for row in c.rows] == [tr["no"] for tr in firing] and firing
    for row, tr in zip(c.rows, firing):
        v = tr["verdict"]
        peak, to_peak = ((v["forecast"]["peak_rate"], v["forecast"]["seconds_to_peak"]) if v["forecast"]
                         else (v["observed"], 0.0))
        mention_ratio = (peak + PSEUDO) / (v["expected"] + PSEUDO)
        made = tr["at"] + 60
        assert row.made_at == made
        assert row.multiple == pytest.approx(mention_ratio ** ELASTICITY if mention_ratio > 1 else 1.0)
        assert row.peak_at == pytest.approx(made + max(0.0, to_peak + LAG))
        assert row.peak_rpm == pytest.approx(normal_rpm(row.peak_at) * row.multiple)

    md = render_markdown(r)
    section = traffic_section(md)
    assert section[0].startswith("Model: from 3 past surges, R² 0.90, typical error ±10%; fitted ")
    assert section[0].endswith("before the incident (the model the alerts used).")
    assert section[1] == (f"Real peak (5-minute mean): {ratio[k]:.1f}x normal, {means[k]:,.0f} req/min at "
                          f"{hhmm(REAL_PEAK_AT)} (normal ~{human_rpm(normal_rpm(REAL_PEAK_AT))}).")
    assert "| transition | made at | predicted peak | real peak | error |" in section
    for row, tr in zip(c.rows, firing):
        err = row.multiple / ratio[k] - 1
        minutes = round(abs(row.peak_at - REAL_PEAK_AT) / 60)
        when = "on time" if minutes == 0 else f"{minutes} min {'early' if row.peak_at < REAL_PEAK_AT else 'late'}"
        expected = (f"| #{tr['no']} {tr['to']} | {hhmm(row.made_at)} | ~{human_multiple(row.multiple)} at "
                    f"{hhmm(row.peak_at)} (~")
        line = next(line for line in section if line.startswith(expected))
        assert line.endswith(f"| {ratio[k]:.1f}x at {hhmm(REAL_PEAK_AT)} ({means[k]:,.0f} req/min) | "
                             f"{'−' if err < 0 else '+'}{abs(100 * err):.0f}%, {when} |")
    assert "<h2>Site traffic: predicted vs real</h2>" in render_html(r)

    # the chart marks every predicted peak next to the real one
    predicted = sorted(m.at for m in r.chart_markers if m.kind == "predicted_peak")
    assert predicted == sorted(row.peak_at for row in c.rows)
    assert any(m.kind == "traffic_peak" and m.at == REAL_PEAK_AT for m in r.chart_markers)

    # a review meeting hears about an outlook far off the mark, and only then
    first_err = c.rows[0].multiple / ratio[k] - 1
    flagged = [s for s in r.suggestions if s.startswith("The traffic outlook at the first alert was")]
    assert len(flagged) == (1 if abs(math.log1p(first_err)) > math.log(1.25) else 0)
    print(f"traffic check: real {ratio[k]:.2f}x at {hhmm(REAL_PEAK_AT)}; predicted "
          + ", ".join(f"{row.multiple:.2f}x at {hhmm(row.peak_at)}" for row in c.rows))


@pytest.mark.parametrize("off_by", [2.0, 1.05, 0.5])
def test_only_an_outlook_far_off_the_real_peak_becomes_a_suggestion(scored, off_by):
    store, settings, _, incident = scored
    store_model(store, hand_model(), fitted_at=T0 + 3600)
    first = build_review(store, settings, incident["id"], site_traffic(), replay=False).traffic_check
    # the elasticity that puts the first alert's prediction at ``off_by`` times the real peak
    log_mention_ratio = math.log(first.rows[0].multiple) / ELASTICITY
    store_model(store, hand_model(elasticity=math.log(off_by * first.real_multiple) / log_mention_ratio),
                fitted_at=T0 + 3600)
    r = build_review(store, settings, incident["id"], site_traffic(), replay=False)
    c = r.traffic_check
    assert c.rows[0].multiple == pytest.approx(off_by * c.real_multiple)
    flagged = [s for s in r.suggestions if s.startswith("The traffic outlook at the first alert was")]
    if off_by == 1.05:
        assert flagged == []
    else:
        err = off_by - 1
        assert flagged == [f"The traffic outlook at the first alert was {'−' if err < 0 else '+'}{abs(100 * err):.0f}% "
                           f"off the real peak (~{human_multiple(c.rows[0].multiple)} predicted, "
                           f"{c.real_multiple:.1f}x real), beyond its typical error of ±10%; its next daily refit "
                           "learns from this surge."]


def test_a_model_fitted_after_the_incident_is_labelled_as_such(scored):
    store, settings, _, incident = scored
    store_model(store, hand_model(), fitted_at=incident["opened_at"] + 2 * 3600)
    r = build_review(store, settings, incident["id"], site_traffic(), replay=False)
    assert r.traffic_check.rows and r.traffic_check.unavailable is None
    assert traffic_section(render_markdown(r))[0].endswith(
        "after the incident opened: it may have learnt from this surge.")


def test_without_a_model_or_without_site_traffic_the_review_says_so_in_one_line(scored):
    store, settings, _, incident = scored
    r = build_review(store, settings, incident["id"], site_traffic(), replay=False)
    assert traffic_section(render_markdown(r)) == [
        "No comparison: no traffic model for this brand (no `traffic:` setting, and none in the store)."]
    assert not [m for m in r.chart_markers if m.kind == "predicted_peak"]

    store_model(store, hand_model(), fitted_at=T0 + 3600)
    r = build_review(store, settings, incident["id"], replay=False)
    assert traffic_section(render_markdown(r)) == [
        "No comparison: no site traffic for the incident's window (pass --traffic, or give the brand a "
        "`traffic:` history)."]


def test_a_brand_with_a_traffic_history_gets_its_traffic_and_a_model_fitted_as_of_the_incident(scored, tmp_path):
    store, _, _, incident = scored
    csv = tmp_path / "acme-traffic.csv"
    # three days of the site's minutes (the store holds under two of mentions: the refit is uncalibrated)
    csv.write_text("timestamp,requests_per_minute\n" + "".join(
        f"{t:.0f},{v:.1f}\n" for t, v in site_traffic(T0 - 86400, SURGE_AT + 6 * 3600)))
    settings = parse_settings({
        "brands": [{"name": "Acme", "query": '"Acme Live"', "traffic": {"csv": str(csv)}}],
        "sources": {"rss": {"interval": 60, "feeds": ["http://127.0.0.1:1/f.rss"]}},
        "store": {"url": f"sqlite:///{tmp_path / 'unused.db'}"},
        "detector": {"bucket_seconds": 60, "warm_up_minutes": WARM_UP_MINUTES, "evaluation_lag_seconds": 0,
                     "resolve_after_quiet_buckets": 10},
        "timezone": "Europe/London",
    }, "test")

    r = build_review(store, settings, incident["id"], replay=False)  # no --traffic

    assert r.traffic_peak_at == REAL_PEAK_AT and r.lead_seconds is not None  # read from the brand's CSV
    (line,) = traffic_section(render_markdown(r))
    assert line.startswith("No comparison: the traffic model is uncalibrated: less than two days of mention history")
    assert "; the real peak was " in line
    assert store.get_state(STATE_PREFIX + "Acme") is None  # the alert path's cache is left alone

    csv.unlink()
    r = build_review(store, settings, incident["id"], replay=False)
    (line,) = traffic_section(render_markdown(r))
    assert line.startswith("No comparison: no traffic model (refitting failed: traffic CSV ")
    assert "file not found" in line
    assert r.traffic is None and r.lead_seconds is None


def test_the_review_command_names_the_line_of_a_bad_traffic_csv(tmp_path):
    from typer.testing import CliRunner

    from surgewatch.cli.main import app
    from tests.support import write_config

    path, _ = write_config(tmp_path, {"brands": [{"name": "Acme", "query": "acme"}],
                                      "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
    bad = tmp_path / "traffic.csv"
    bad.write_text("timestamp,requests_per_minute\n1764547200,900\n1764547260,lots\n")
    done = CliRunner().invoke(app, ["review", "acme-1", "-c", str(path), "--traffic", str(bad)])
    assert done.exit_code == 1
    assert "traffic.csv:3: 'lots' is not a number of requests per minute" in done.output
    assert "Traceback" not in done.output


def test_the_sent_table_reads_as_times_not_field_names(tmp_path) -> None:
    from surgewatch.reports.review import Delivery as SentRow, _delivery_when

    class R:
        timezone = "UTC"

    sent = SentRow(0, "opened", "watch", "console", "sent", 1_764_236_700.0, "sent", ())
    due = SentRow(1, "escalated", "warning", "slack", "failed", 1_764_236_760.0, "bucket close", ())
    assert "(" not in _delivery_when(sent, R()) and "sent_at" not in _delivery_when(sent, R())
    assert _delivery_when(due, R()).endswith("(due; not sent)")
