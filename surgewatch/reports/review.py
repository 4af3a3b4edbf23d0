"""The post-event review: what happened during one incident, and what would have made it better.

The seed's eighth step is "event performance analysis to identify opportunities for improvement".
``build_review`` reads one incident and the counts around it from the store and answers the questions
a review meeting asks, with numbers rather than impressions:

* a timeline chart of mentions per source (and site traffic, when the team provides it) with every
  transition, alert and acknowledgement marked;
* the lead time achieved: first alert vs the traffic peak;
* the peak mention rate against what the detector forecast at each transition;
* what was sent, on which channel, to whom and when (the delivery log);
* a suggestion computed by *replaying* the stored history through the real detector with a lower
  opening threshold: how much earlier it would have alerted, and how many extra alerts it would
  have raised over the last 30 days where the current threshold stayed quiet;
* for a brand with a traffic model (``surgewatch.traffic``): the site traffic each alert predicted
  ("~4x at 11:24") against the real peak ("4.2x at 11:25"), the model being the one the alerts
  used when the store still holds it, else one refitted on the history before the incident.

Site traffic comes from the caller (``--traffic``), else from the brand's own ``traffic:`` history.

The replay re-runs both thresholds on the same stored counts, so "earlier" compares like with like
(the live detector may have started later, or restarted, than the history the store keeps).
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from surgewatch import clock
from surgewatch.detector.spike import SENSITIVITY_ALARMS_PER_WEEK, DetectorParams, SpikeDetector
from surgewatch.detector.traffic import MIN_LAG, SMOOTH_SECONDS, TrafficModel, TrafficModelError
from surgewatch.detector.verdict import Severity, Verdict
from surgewatch.notifier.base import human_multiple, human_rpm
from surgewatch.reports.charts import Marker, incident_chart
from surgewatch.reports.html import md_cell, render_page
from surgewatch.config import DetectorConfig, Settings
from surgewatch.incidents.lifecycle import IncidentPolicy, advance
from surgewatch.pipeline import Runtime
from surgewatch.store.base import Store
from surgewatch.traffic import STATE_PREFIX, TrafficHistoryError, fit_brand, load_history, outlook_from
from surgewatch.incidents.model import Incident, Transition

# Channels an incident may have been delivered on.  The configured ones are probed too; a channel
# removed from the config since the incident still shows in its history.
# A delivery's claimed_at is the sender's wall clock.  It is trusted as "when it went out" only
# when it falls shortly after the scored bucket closed; otherwise (a replayed history, the demo's
# simulated clock) the bucket close is the best honest estimate.
PLAUSIBLE_SEND_DELAY = 3600.0
REPLAY_DAYS = 30
# The detector parameter that decides when an incident opens, per severity, and how far to lower it
# for the suggestion: the surprise in decades of improbability (one decade: a 10x less rare bucket
# counts), or, for a detector with score thresholds in [0, 1], the score.
THRESHOLD_KNOBS = (("{severity}_decades", 1.0), ("{severity}", 0.1))
BEFORE_WINDOW = 2 * 3600.0  # the chart starts this long before the incident opened
AFTER_WINDOW = 30 * 60.0  # ... and ends this long after it resolved
TRAFFIC_SEARCH = 6 * 3600.0  # a traffic peak is looked for up to this long after the incident opened


class ReviewError(Exception):
    """The review cannot be built (unknown incident).  ``permanent``: retrying cannot help."""

    permanent = True


# -- incident facts shared with the digest ------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """One (transition, channel) notification as the store remembers it."""

    transition_no: int
    event: str  # opened | escalated | resolved
    severity: str
    channel: str
    status: str  # the delivery log's: pending | claimed | sent | failed | superseded | suppressed
    at: float  # when it went out, best known (see ``at_from``)
    at_from: str  # "sent" (when it went out) | "bucket close" (never sent: when it was due)
    recipients: tuple[str, ...] = ()  # "slack #C0123 (marketing)", "pagerduty dedup_key ..."
    error: str | None = None

    @property
    def is_alert(self) -> bool:
        return self.event != "resolved"

    @property
    def ok(self) -> bool:
        return self.status == "sent"


def _recipients(channel: str, receipt: dict[str, Any] | None) -> tuple[str, ...]:
    if not receipt:
        return ()
    if channel == "slack":
        out = []
        for audience in ("marketing", "ops"):
            entry = receipt.get(audience)
            if isinstance(entry, dict) and entry.get("channel"):
                out.append(f"{audience}: Slack {entry['channel']} (ts {entry.get('ts')})")
        return tuple(out)
    if channel == "pagerduty" and receipt.get("dedup_key"):
        return (f"PagerDuty {receipt.get('action', 'event')} dedup_key {receipt['dedup_key']}",)
    if channel.startswith("webhook:"):
        if receipt.get("dry_run"):
            return (f"{channel} {receipt.get('action', '')} (dry run)",)
        if receipt.get("skipped"):
            return (f"{channel} skipped: {receipt['skipped']}",)
        if receipt.get("status") is not None:
            return (f"{channel} {receipt.get('action', '')} HTTP {receipt['status']}",)
    return ()


def incident_deliveries(store: Store, settings: Settings, incident: Incident) -> list[Delivery]:
    """Every delivery of every transition of ``incident`` as the delivery log recorded it (never
    recomputed from today's config: a channel removed since still shows), in transition then
    channel order."""
    bucket = settings.detector.bucket_seconds
    transitions = {tr["no"]: tr for tr in incident.get("transitions", [])}
    out: list[Delivery] = []
    for d in sorted(store.list_deliveries(incident["id"]), key=lambda d: (d.transition, d.channel)):
        tr = transitions.get(d.transition) or {}
        bucket_close = float(tr.get("at", d.created_at or 0.0)) + bucket
        at, at_from = bucket_close, "bucket close"
        if d.sent_at is not None and bucket_close <= d.sent_at <= bucket_close + PLAUSIBLE_SEND_DELAY:
            at, at_from = float(d.sent_at), "sent"
        to = tr.get("to", "")
        severity = to if to != "resolved" else incident.get("severity", "")
        # what went wrong (failed), or why nothing was sent (suppressed, superseded)
        note = None if d.status == "sent" else (d.error if d.status in ("failed", "pending") else d.reason) or d.error
        out.append(Delivery(d.transition, d.event or tr.get("event", ""), severity, d.channel, d.status, at, at_from,
                            _recipients(d.channel, d.receipt), note))
    return out


def first_alert_at(incident: Incident, deliveries: Sequence[Delivery], bucket_seconds: int) -> float | None:
    """When the first alert went out: the first successful delivery of an opening or escalation;
    failing that (nothing delivered, e.g. no channel configured) the close of the opening bucket."""
    sent = [d.at for d in deliveries if d.is_alert and d.ok]
    if sent:
        return min(sent)
    firing = [t for t in incident.get("transitions", []) if t["event"] != "resolved"]
    return float(firing[0]["at"]) + bucket_seconds if firing else None


def traffic_peak(traffic: Sequence[tuple[float, float]] | None, start: float, end: float) -> tuple[float, float] | None:
    """(time, requests per minute) of the highest traffic sample in [start, end]."""
    if not traffic:
        return None
    inside = [(float(t), float(r)) for t, r in traffic if start <= t <= end]
    if not inside:
        return None
    return max(inside, key=lambda p: (p[1], -p[0]))


# -- replay -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayedIncident:
    opened_at: float
    ended_at: float  # resolved_at, or the last scored bucket for one still open at the end


def replay_incidents(
    counts: dict[str, dict[float, int]], start: float, end: float, params: DetectorParams, policy: IncidentPolicy,
    brand: str = "replay",
) -> list[ReplayedIncident]:
    """Feed every bucket in [start, end) through a fresh detector and the incident state machine,
    exactly as ``pipeline.evaluate`` does, and list the incidents it would have opened."""
    bucket = params.bucket_seconds
    detector = SpikeDetector(params)
    sources = sorted(counts)
    series = {s: {int(t): n for t, n in counts[s].items()} for s in sources}
    out: list[ReplayedIncident] = []
    incident: Incident | None = None
    t = int(start // bucket) * bucket
    while t < end:
        by_source = {s: float(series[s].get(t, 0)) for s in sources}
        verdict = detector.update(float(t), sum(by_source.values()), by_source)
        incident, _ = advance(incident, brand, verdict, policy)
        if incident is not None and incident["status"] == "resolved":
            out.append(ReplayedIncident(incident["opened_at"], incident["resolved_at"]))
            incident = None
        t += bucket
    if incident is not None:
        out.append(ReplayedIncident(incident["opened_at"], incident["last_at"]))
    return out


def threshold_knob(params: DetectorParams, severity: str) -> tuple[str, float]:
    """(parameter name, step) of the threshold for ``severity`` in this detector's params."""
    for pattern, step in THRESHOLD_KNOBS:
        name = pattern.format(severity=severity)
        if isinstance(getattr(params, name, None), (int, float)):
            return name, step
    raise ReviewError(f"the detector has no threshold parameter for {severity!r}")


@dataclass
class ReplayResult:
    threshold: str  # the detector parameter changed (the opening severity's threshold, or the alarm rate)
    current: float
    lowered: float
    history_start: float
    history_end: float
    current_opened_at: float | None  # when the replay with today's threshold opens this incident
    lowered_opened_at: float | None
    minutes_earlier: float | None
    current_alerts: int  # incidents the current threshold opens over the replayed history
    lowered_alerts: int
    extra_alerts: list[float] = field(default_factory=list)  # opened_at of alerts only the lower threshold raises
    # what a user writes in the config to get the lowered replay: a key path check-config accepts, and its value
    setting: str = ""
    setting_value: str = ""
    current_value: str = ""

    @property
    def history_days(self) -> float:
        return (self.history_end - self.history_start) / 86400


def _overlaps(a: ReplayedIncident, start: float, end: float) -> bool:
    return a.opened_at <= end and a.ended_at >= start


def suggest_threshold(
    store: Store, settings: Settings, incident: Incident, *, step: float | None = None,
    days: float = REPLAY_DAYS,
) -> ReplayResult | None:
    """Replay up to ``days`` of stored history before the incident (and the incident itself) with the
    current opening threshold and with it lowered by ``step`` (default: the knob's own step)."""
    rt = Runtime(settings, store)
    try:
        brand = rt.brand(str(incident["brand"]))
    except KeyError:
        brand = None  # no longer configured: the global settings
    params = rt.detector_params(brand.name if brand is not None else None)
    policy = IncidentPolicy(open_severity=Severity(settings.detector.open_severity),
                            resolve_after=settings.detector.resolve_after_quiet_buckets)
    bucket = params.bucket_seconds
    opened = float(incident["opened_at"])
    end_of_incident = float(incident.get("resolved_at") or incident.get("last_at") or opened)
    end = end_of_incident + bucket
    counts = store.counts(incident["brand"], opened - days * 86400, end)
    stamps = [float(t) for series in counts.values() for t in series]
    if not stamps:
        return None
    start = min(stamps)  # the brand's history starts with its first counted bucket
    if brand is not None and brand.sensitivity is not None and brand.sensitivity != "more":
        # a calibrated brand: its entry follows its own history whatever watch_decades says; the lever is the preset
        index = list(SENSITIVITY_ALARMS_PER_WEEK).index(brand.sensitivity)
        preset = list(SENSITIVITY_ALARMS_PER_WEEK)[index + 1]
        knob, current = "alarms_per_week", float(params.alarms_per_week or 0.0)
        lowered_value = SENSITIVITY_ALARMS_PER_WEEK[preset]
        setting, setting_value, current_value = (f"brands[{brand.name}].sensitivity", preset, brand.sensitivity)
    else:
        knob, default_step = threshold_knob(params, policy.open_severity.value)
        current = float(getattr(params, knob))
        lowered_value = round(current - (default_step if step is None else step), 4)
        # the config key that sets it (check-config rejects anything else): detector.<knob>
        setting = f"detector.{knob}" if knob in DetectorConfig.model_fields else f"the detector's {knob}"
        setting_value, current_value = f"{lowered_value:g}", f"{current:g}"
    lowered = replace(params, **{knob: lowered_value})
    now_runs = replay_incidents(counts, start, end, params, policy)
    low_runs = replay_incidents(counts, start, end, lowered, policy)
    # This incident in each replay: the earliest replayed incident that overlaps its span.
    ref = [r for r in now_runs if _overlaps(r, opened, end_of_incident)]
    ref_open = ref[0].opened_at if ref else None
    span_start = ref[0].opened_at if ref else opened
    span_end = max(ref[-1].ended_at, end_of_incident) if ref else end_of_incident
    low = [r for r in low_runs if _overlaps(r, span_start, span_end)]
    low_open = low[0].opened_at if low else None
    earlier = None
    if ref_open is not None and low_open is not None:
        earlier = max(0.0, (ref_open - low_open) / 60)
    extra = [r.opened_at for r in low_runs
             if not _overlaps(r, span_start, span_end) and not any(_overlaps(r, c.opened_at, c.ended_at) for c in now_runs)]
    return ReplayResult(knob, current, lowered_value, start, end, ref_open, low_open, earlier,
                        len(now_runs), len(low_runs), extra, setting, setting_value, current_value)


# -- site traffic: what the alerts predicted, what came ---------------------------------------------------
@dataclass(frozen=True)
class TrafficPredictionRow:
    """The site traffic one alert predicted (``multiple`` None: the model gave no estimate)."""

    transition_no: int
    severity: str
    made_at: float  # the scored bucket's close, the time the alert speaks of
    multiple: float | None
    peak_at: float | None
    peak_rpm: float | None
    beyond_history: bool = False


@dataclass(frozen=True)
class TrafficCheck:
    """The traffic model's predictions at each alert against the site's real peak.  ``unavailable``: one line
    saying why there is nothing to compare (then the other fields may be empty)."""

    model_line: str  # what the model rests on and where it comes from
    rows: tuple[TrafficPredictionRow, ...] = ()
    real_peak_at: float | None = None
    real_peak_rpm: float | None = None  # the 5-minute mean at the peak
    real_normal_rpm: float | None = None  # the model's normal traffic at that time
    typical_error: float = 0.0  # the model's own typical error on its past surges (0.12: ±12%)
    unavailable: str | None = None

    @property
    def real_multiple(self) -> float | None:
        if self.real_peak_rpm is None or not self.real_normal_rpm:
            return None
        return self.real_peak_rpm / self.real_normal_rpm

    def error(self, row: TrafficPredictionRow) -> tuple[float, float] | None:
        """(predicted / real - 1, predicted peak time - real peak time in seconds)."""
        real = self.real_multiple
        if row.multiple is None or row.peak_at is None or real is None or self.real_peak_at is None:
            return None
        return row.multiple / real - 1.0, row.peak_at - self.real_peak_at


def _stored_model(store: Store, brand: str) -> tuple[TrafficModel | None, float | None]:
    state = store.get_state(STATE_PREFIX + brand) or {}
    fitted_at = state.get("fitted_at")
    if not isinstance(state.get("model"), dict) or not isinstance(fitted_at, (int, float)):
        return None, None
    try:
        return TrafficModel.from_dict(state["model"]), float(fitted_at)
    except TrafficModelError:
        return None, None  # another version, or damaged: the alerts refitted too


def review_model(rt: Runtime, incident: Incident) -> tuple[TrafficModel | None, str]:
    """The brand's traffic model as the incident's alerts saw it, and a line saying where it comes from.

    The store keeps only the latest fit.  Fitted before the incident opened, it is the one the alerts used.
    Fitted since, it may have learnt from this very surge, so a model is refitted on the history before the
    incident when the brand's ``traffic:`` setting allows; the later one is the fallback, labelled as such."""
    brand = str(incident["brand"])
    opened = float(incident["opened_at"])
    first_alert = opened + rt.settings.detector.bucket_seconds
    tz = rt.settings.timezone
    stored, fitted_at = _stored_model(rt.store, brand)
    if stored is not None and fitted_at is not None and fitted_at <= first_alert:
        return stored, (f"{stored.basis()}; fitted {_fmt(fitted_at, tz)}, before the incident "
                        "(the model the alerts used)")
    try:
        cfg = rt.settings.brand(brand)
    except KeyError:
        cfg = None
    refit_error = ""
    if cfg is not None and cfg.traffic is not None:
        try:
            model = fit_brand(rt, cfg, opened)
            return model, f"{model.basis()}; refitted on the history before the incident opened"
        except TrafficHistoryError as exc:
            refit_error = f" (refitting failed: {exc})"
    if stored is not None and fitted_at is not None:
        return stored, (f"{stored.basis()}; fitted {_fmt(fitted_at, tz)}, after the incident opened: it may have "
                        f"learnt from this surge{refit_error}")
    if refit_error:
        return None, f"no traffic model{refit_error}"
    return None, "no traffic model for this brand (no `traffic:` setting, and none in the store)"


def smoothed_traffic(
    traffic: Sequence[tuple[float, float]], seconds: float = SMOOTH_SECONDS,
) -> list[tuple[float, float]]:
    """Each sample replaced by the mean of the samples within ``seconds / 2`` of it: the model learnt its
    multiples from 5-minute means, and the maximum of raw minutes is partly noise."""
    times = [t for t, _ in traffic]
    sums = [0.0]
    for _, r in traffic:
        sums.append(sums[-1] + r)
    out = []
    for t in times:
        lo, hi = bisect_left(times, t - seconds / 2), bisect_right(times, t + seconds / 2)
        out.append((t, (sums[hi] - sums[lo]) / (hi - lo)))
    return out


def traffic_check(
    model: TrafficModel | None, model_line: str, incident: Incident,
    traffic: Sequence[tuple[float, float]] | None, bucket_seconds: int, traffic_note: str = "",
) -> TrafficCheck:
    """Recompute every alert's outlook (``outlook_from``, as the notifier did) and find the real peak: the
    highest 5-minute mean of the site's traffic relative to the model's normal, from ``MIN_LAG`` before the
    incident opened to ``TRAFFIC_SEARCH`` after."""
    if model is None:
        return TrafficCheck(model_line, unavailable=f"No comparison: {model_line}.")
    opened = float(incident["opened_at"])
    rows = []
    for tr in incident.get("transitions", []):
        if tr["event"] == "resolved" or not tr.get("verdict"):
            continue
        made = float(tr["at"]) + bucket_seconds
        try:
            verdict = Verdict.from_dict(tr["verdict"])
        except (TypeError, KeyError, ValueError):
            continue  # stored by a version whose verdicts had other fields: no outlook to recompute
        o = outlook_from(model, verdict, bucket_seconds, made)
        rows.append(TrafficPredictionRow(tr["no"], tr["to"], made, o.multiple,
                                         made + o.seconds_to_peak if o.seconds_to_peak is not None else None,
                                         o.peak_rpm, o.beyond_history))
    window = [(t, r) for t, r in smoothed_traffic(traffic or ())
              if opened + MIN_LAG <= t <= opened + TRAFFIC_SEARCH]
    if not window:
        why = traffic_note or ("no site traffic for the incident's window (pass --traffic, or give the brand a "
                               "`traffic:` history)")
        return TrafficCheck(model_line, tuple(rows), typical_error=math.exp(model.peak_error) - 1,
                            unavailable=f"No comparison: {why}.")
    if not model.has_normal:
        return TrafficCheck(model_line, tuple(rows), unavailable=f"No comparison: {model.basis()}.")
    normals = [model.normal_at(t) or 0.0 for t, _ in window]
    k = max(range(len(window)), key=lambda i: (window[i][1] / normals[i] if normals[i] > 0 else 0.0, -i))
    check = TrafficCheck(model_line, tuple(rows), window[k][0], window[k][1], normals[k] or None,
                         math.exp(model.peak_error) - 1 if model.calibrated else 0.0)
    if not model.calibrated:
        real = check.real_multiple
        seen = (f"; the real peak was {real:.1f}x normal ({window[k][1]:,.0f} req/min)" if real is not None else "")
        return replace(check, unavailable=f"No comparison: the traffic model is {model.basis()}{seen}.")
    return check


# -- the review -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForecastRow:
    transition_no: int
    made_at: float  # when the forecast was available (bucket close)
    severity: str
    peak_rate: float  # mentions per bucket
    peak_at: float  # predicted time of the peak


@dataclass
class Review:
    incident: Incident
    timezone: str
    bucket_seconds: int
    window_start: float
    window_end: float
    counts: dict[str, dict[float, int]]
    deliveries: list[Delivery]
    first_alert_at: float | None
    onset_at: float | None  # estimated from the counts (see estimate_onset)
    peak_at: float | None
    peak_observed: float  # mentions in the busiest bucket (all sources)
    forecasts: list[ForecastRow]
    traffic: list[tuple[float, float]] | None
    traffic_peak_at: float | None
    traffic_peak_rpm: float | None
    replay: ReplayResult | None
    suggestions: list[str]
    chart_png: bytes
    replay_error: str | None = None
    traffic_check: TrafficCheck | None = None
    chart_markers: list[Marker] = field(default_factory=list)

    @property
    def incident_id(self) -> str:
        return str(self.incident["id"])

    @property
    def brand(self) -> str:
        return str(self.incident["brand"])

    @property
    def lead_seconds(self) -> float | None:
        """Traffic peak minus first alert: positive means the warning came first."""
        if self.first_alert_at is None or self.traffic_peak_at is None:
            return None
        return self.traffic_peak_at - self.first_alert_at

    @property
    def time_to_ack(self) -> float | None:
        acked = self.incident.get("acked_at")
        if acked is None or self.first_alert_at is None:
            return None
        return float(acked) - self.first_alert_at


def _brand_traffic(
    settings: Settings, brand: str, start: float, end: float,
) -> tuple[list[tuple[float, float]] | None, str]:
    """The site's traffic from the brand's ``traffic:`` history (CSV or Prometheus), and why not when it cannot."""
    try:
        cfg = settings.brand(brand)
    except KeyError:
        return None, ""
    if cfg.traffic is None:
        return None, ""
    try:
        points = load_history(cfg.traffic, start, end)
    except TrafficHistoryError as exc:
        return None, f"the site's traffic history cannot be read ({exc})"
    if not points:
        return None, "the site's traffic history has nothing for the incident's window"
    return sorted(points), ""


def estimate_onset(totals: dict[int, float], opened_bucket: int, expected: float, bucket: int) -> int | None:
    """The start of the climb that led to the opening bucket: walking back from it, the earliest
    bucket from which the 3-bucket mean stayed above 1.5x the expected level (+1, so a quiet brand's
    single post is not a climb).  An estimate, labelled as such wherever it is shown."""
    threshold = 1.5 * expected + 1.0

    def smooth(t: int) -> float:
        return sum(totals.get(t + k * bucket, 0.0) for k in (-1, 0, 1)) / 3.0

    if smooth(opened_bucket) <= threshold:
        return None
    t = opened_bucket
    while smooth(t - bucket) > threshold and opened_bucket - t < 24 * 3600:
        t -= bucket
    return t


def build_review(
    store: Store, settings: Settings, incident_id: str, traffic: Sequence[tuple[float, float]] | None = None,
    *, replay: bool = True,
) -> Review:
    incident = store.get_incident(incident_id)
    if incident is None:
        raise ReviewError(f"no incident {incident_id!r} in the store")
    bucket = settings.detector.bucket_seconds
    opened = float(incident["opened_at"])
    last = float(incident.get("resolved_at") or incident.get("last_at") or opened)
    start = math.floor((opened - BEFORE_WINDOW) / bucket) * bucket
    end = math.ceil((last + bucket + AFTER_WINDOW) / bucket) * bucket
    traffic_list = sorted((float(t), float(r)) for t, r in traffic) if traffic else None
    traffic_note = ""
    if traffic_list is None:
        traffic_list, traffic_note = _brand_traffic(settings, incident["brand"], opened - BEFORE_WINDOW,
                                                    max(end, opened + TRAFFIC_SEARCH + AFTER_WINDOW))
    model, model_line = review_model(Runtime(settings, store), incident)
    check = traffic_check(model, model_line, incident, traffic_list, bucket, traffic_note)
    predicted = [row for row in check.rows if row.multiple is not None and row.peak_at is not None]
    for row in predicted:  # the chart shows each predicted peak (one far beyond the search window stays off it)
        if row.peak_at is not None and row.peak_at <= opened + TRAFFIC_SEARCH:
            end = max(end, math.ceil((row.peak_at + AFTER_WINDOW / 2) / bucket) * bucket)
    if traffic_list:
        # Show the traffic peak even when it comes after the incident resolved.
        tp = traffic_peak(traffic_list, opened - BEFORE_WINDOW, opened + TRAFFIC_SEARCH)
        if tp is not None:
            end = max(end, math.ceil((tp[0] + AFTER_WINDOW / 2) / bucket) * bucket)
    counts = store.counts(incident["brand"], start, end)
    deliveries = incident_deliveries(store, settings, incident)
    first_alert = first_alert_at(incident, deliveries, bucket)

    totals: dict[int, float] = {}
    for series in counts.values():
        for t, n in series.items():
            totals[int(t)] = totals.get(int(t), 0.0) + n
    in_incident = {t: n for t, n in totals.items() if opened <= t <= last}
    peak_at, peak_observed = (max(in_incident.items(), key=lambda p: (p[1], -p[0])) if in_incident
                              else (None, float(incident.get("peak_observed") or 0.0)))
    peak_observed = max(peak_observed, float(incident.get("peak_observed") or 0.0))

    forecasts = []
    for tr in incident["transitions"]:
        f = (tr.get("verdict") or {}).get("forecast")
        if tr["event"] != "resolved" and f:
            made = float(tr["at"]) + bucket
            forecasts.append(ForecastRow(tr["no"], made, tr["to"], float(f["peak_rate"]),
                                         made + float(f["seconds_to_peak"])))
    opening = incident["transitions"][0]["verdict"] if incident["transitions"] else None
    onset = (estimate_onset(totals, int(opened), float(opening["expected"]), bucket)
             if opening is not None else None)

    tp = traffic_peak(traffic_list, opened - BEFORE_WINDOW, opened + TRAFFIC_SEARCH)
    result, replay_error = None, None
    if replay:
        try:
            result = suggest_threshold(store, settings, incident)
        except ArithmeticError as exc:
            # The detector failed on this history (a bug to report, not a reason to lose the
            # review): show everything else and say the suggestion is missing and why.
            replay_error = f"the replay through the detector failed: {exc.__class__.__name__}: {exc}"

    markers = [Marker(float(t["at"]) + bucket, _marker_label(t), "resolved" if t["event"] == "resolved" else t["event"])
               for t in incident["transitions"]]
    if first_alert is not None:
        markers.append(Marker(first_alert, "first alert sent", "alert"))
    if incident.get("acked_at"):
        markers.append(Marker(float(incident["acked_at"]), f"ack {incident.get('acked_by') or ''}".strip(), "ack"))
    if tp is not None:
        markers.append(Marker(tp[0], f"traffic peak {tp[1]:,.0f}/min", "traffic_peak"))
    for row in predicted:
        assert row.multiple is not None and row.peak_at is not None
        markers.append(Marker(row.peak_at, f"predicted ~{human_multiple(row.multiple)} (#{row.transition_no})",
                              "predicted_peak"))
    title = f"{incident['brand']} · incident {incident['id']}"
    chart = incident_chart(counts, bucket_seconds=bucket, start=start, end=end, markers=markers,
                           traffic=traffic_list, title=title, tz=settings.timezone)
    review = Review(incident, settings.timezone, bucket, start, end, counts, deliveries, first_alert,
                    float(onset) if onset is not None else None, float(peak_at) if peak_at is not None else None,
                    peak_observed, forecasts, traffic_list, tp[0] if tp else None, tp[1] if tp else None,
                    result, [], chart, replay_error, check, markers)
    review.suggestions = suggestions(review)
    return review


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def suggestions(r: Review) -> list[str]:
    out: list[str] = []
    if r.first_alert_at is not None and r.onset_at is not None:
        delay = r.first_alert_at - r.onset_at
        out.append(f"The first alert came {_minutes(delay)} after the estimated onset of the climb.")
    if r.lead_seconds is not None:
        if r.lead_seconds > 0:
            out.append(f"The first alert went out {_minutes(r.lead_seconds)} before the traffic peak.")
        else:
            out.append(f"The first alert went out {_minutes(-r.lead_seconds)} after the traffic peak: too late to "
                       "scale ahead of it.")
    rp = r.replay
    if rp is not None:
        extra = len(rp.extra_alerts)
        if rp.minutes_earlier and rp.minutes_earlier > 0:
            out.append(
                f"Setting {rp.setting}: {rp.setting_value} (now {rp.current_value}) would have alerted "
                f"{rp.minutes_earlier:.0f} min earlier, at the cost of {extra} extra alert{'s' if extra != 1 else ''} "
                f"in the {rp.history_days:.1f} days of stored history where the current threshold stayed quiet.")
        elif rp.lowered_opened_at is not None:
            out.append(f"Setting {rp.setting}: {rp.setting_value} would not have alerted earlier "
                       f"({extra} extra alert{'s' if extra != 1 else ''} in {rp.history_days:.1f} days); keep "
                       f"{rp.current_value}.")
    if r.forecasts and r.peak_observed:
        f = r.forecasts[0]
        ratio = f.peak_rate / r.peak_observed if r.peak_observed else float("inf")
        if ratio < 0.5:
            per_min = 60.0 / r.bucket_seconds
            out.append(f"The first forecast ({f.peak_rate * per_min:.0f}/min) was under half the real peak "
                       f"({r.peak_observed * per_min:.0f}/min); treat early forecasts as a floor.")
    check = r.traffic_check
    first = next((row for row in check.rows if check.error(row) is not None), None) if check else None
    if check is not None and first is not None:
        err, _ = check.error(first)  # type: ignore[misc]
        # beyond what the model says of itself on its past surges, and by enough to change what ops would do
        if abs(math.log1p(err)) > max(math.log1p(check.typical_error), math.log(1.25)):
            out.append(f"The traffic outlook at the first alert was {_signed_pct(err)} off the real peak "
                       f"(~{human_multiple(first.multiple or 0.0)} predicted, {check.real_multiple:.1f}x real), beyond "
                       f"its typical error of ±{100 * check.typical_error:.0f}%; its next daily refit learns from "
                       "this surge.")
    if r.replay_error:
        out.append(f"No threshold suggestion: {r.replay_error}.")
    failed = [d for d in r.deliveries if d.status == "failed"]
    if failed:
        out.append(f"{len(failed)} notification(s) failed: " + "; ".join(f"{d.channel}: {d.error}" for d in failed[:3]))
    if r.incident.get("acked_at") is None and any(d.is_alert and d.ok for d in r.deliveries):
        out.append("Nobody acknowledged the incident: check who is on call for this brand.")
    return out


# -- rendering ------------------------------------------------------------------------------------------
def _fmt(ts: float | None, tz: str, with_date: bool = True) -> str:
    if ts is None:
        return "—"
    return clock.local(ts, tz).strftime("%a %Y-%m-%d %H:%M" if with_date else "%H:%M")


def _lead_text(r: Review) -> str:
    if r.lead_seconds is None:
        return "unknown (no site traffic given)" if r.traffic is None else "unknown (no alert or no traffic peak)"
    word = "before" if r.lead_seconds >= 0 else "after"
    return f"{abs(r.lead_seconds) / 60:.0f} min {word} the traffic peak"


def _delivery_when(d: Any, r: Any) -> str:
    """When a delivery went out; for one that never did, when it was due, saying so."""
    when = _fmt(d.at, r.timezone, False)
    return when if d.at_from == "sent" else f"{when} (due; not sent)"


def _marker_label(transition: Transition) -> str:
    """``WATCH opened``, ``→ CRITICAL``, ``resolved``, ``paged`` (what the chart's line marks)."""
    event, to = transition["event"], str(transition["to"]).upper()
    if event == "opened":
        return f"{to} opened"
    if event == "escalated":
        return f"→ {to}"
    return event


def summary_rows(r: Review) -> list[tuple[str, str]]:
    per_min = 60.0 / r.bucket_seconds
    rows = [
        ("Brand", r.brand),
        ("Times in", r.timezone),  # every time below, the chart's axis included
        ("Opened", f"{_fmt(r.incident['opened_at'], r.timezone)} ({r.incident['transitions'][0]['to'] if r.incident['transitions'] else '?'})"),
        ("Peak severity", str(r.incident.get("severity"))),
        ("Resolved", _fmt(r.incident.get("resolved_at"), r.timezone) if r.incident.get("resolved_at") else "still open"),
        ("Estimated onset", _fmt(r.onset_at, r.timezone)),
        ("First alert", _fmt(r.first_alert_at, r.timezone)),
        ("Traffic peak", f"{_fmt(r.traffic_peak_at, r.timezone)} ({r.traffic_peak_rpm:,.0f} req/min)"
         if r.traffic_peak_at is not None else "unknown"),
        ("Lead time", _lead_text(r)),
        ("Peak mention rate", f"{r.peak_observed * per_min:.0f}/min at {_fmt(r.peak_at, r.timezone)}"),
        ("Acknowledged", f"{r.incident.get('acked_by')} at {_fmt(r.incident.get('acked_at'), r.timezone)}"
         + (f" ({r.time_to_ack / 60:.0f} min after the first alert)" if r.time_to_ack is not None else "")
         if r.incident.get("acked_at") else "no"),
    ]
    return rows


def forecast_rows(r: Review) -> list[tuple[str, str, str, str]]:
    per_min = 60.0 / r.bucket_seconds
    return [(f"#{f.transition_no} {f.severity}", _fmt(f.made_at, r.timezone, False),
             f"{f.peak_rate * per_min:.0f}/min at {_fmt(f.peak_at, r.timezone, False)}",
             f"{(f.peak_rate / r.peak_observed if r.peak_observed else 0):.2f}x the real peak")
            for f in r.forecasts]


def _signed_pct(x: float) -> str:
    return f"{'−' if x < 0 else '+'}{abs(100 * x):.0f}%"


def traffic_lines(r: Review) -> list[str]:
    """Above the table: what the model rests on and the real peak; or the one line saying why there is no
    comparison."""
    c = r.traffic_check
    if c is None:
        return []
    if c.unavailable:
        return [c.unavailable]
    real = c.real_multiple
    return [f"Model: {c.model_line}.",
            f"Real peak (5-minute mean): {real:.1f}x normal, {c.real_peak_rpm:,.0f} req/min at "
            f"{_fmt(c.real_peak_at, r.timezone, False)} (normal ~{human_rpm(c.real_normal_rpm)})."]


def traffic_rows(r: Review) -> list[tuple[str, str, str, str, str]]:
    """One row per alert: ``#0 watch | 11:02 | ~4x at 11:24 (~3,600 req/min) | 4.2x at 11:25 | −5%, 1 min early``."""
    c = r.traffic_check
    if c is None or c.unavailable:
        return []
    real = f"{c.real_multiple:.1f}x at {_fmt(c.real_peak_at, r.timezone, False)} ({c.real_peak_rpm:,.0f} req/min)"
    out = []
    for row in c.rows:
        if row.multiple is None or row.peak_at is None:
            out.append((f"#{row.transition_no} {row.severity}", _fmt(row.made_at, r.timezone, False),
                        "no estimate", real, "—"))
            continue
        predicted = (f"~{human_multiple(row.multiple)} at {_fmt(row.peak_at, r.timezone, False)} "
                     f"(~{human_rpm(row.peak_rpm)} req/min)" + (", beyond past surges" if row.beyond_history else ""))
        err, dt = c.error(row)  # type: ignore[misc]
        minutes = round(abs(dt) / 60)
        when = "on time" if minutes == 0 else f"{minutes} min {'early' if dt < 0 else 'late'}"
        out.append((f"#{row.transition_no} {row.severity}", _fmt(row.made_at, r.timezone, False), predicted, real,
                    f"{_signed_pct(err)}, {when}"))
    return out


def render_markdown(r: Review) -> str:
    lines = [f"# Post-event review: {md_cell(r.brand)} incident `{r.incident_id}`", "",
             "![timeline](review-chart.png)", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {md_cell(v)} |" for k, v in summary_rows(r)]
    lines += ["", "## Forecast vs real peak", ""]
    if r.forecasts:
        lines += ["| transition | made at | forecast peak | vs real |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in forecast_rows(r)]
    else:
        lines.append("No forecast was made (the incident never left the quiet side of the model).")
    if r.traffic_check is not None:
        lines += ["", "## Site traffic: predicted vs real", ""]
        lines += [md_cell(line) for line in traffic_lines(r)]
        if traffic_rows(r):
            lines += ["", "| transition | made at | predicted peak | real peak | error |", "|---|---|---|---|---|"]
            lines += [f"| {' | '.join(md_cell(c) for c in row)} |" for row in traffic_rows(r)]
    lines += ["", "## What was sent", ""]
    if r.deliveries:
        lines += ["| when | transition | channel | status | to |", "|---|---|---|---|---|"]
        for d in r.deliveries:
            lines.append(f"| {_delivery_when(d, r)} | #{d.transition_no} {d.event} {d.severity} "
                         f"| {d.channel} | {d.status}{' — ' + md_cell(d.error) if d.error else ''} "
                         f"| {md_cell('; '.join(d.recipients)) or '—'} |")
    else:
        lines.append("Nothing was sent (no channel delivered this incident).")
    lines += ["", "## Suggestions", ""]
    lines += [f"- {md_cell(s)}" for s in r.suggestions] or ["- None: the alert did its job."]
    if r.replay is not None:
        rp = r.replay
        lines += ["", f"Replay: {rp.history_days:.1f} days of stored history ({_fmt(rp.history_start, r.timezone)} to "
                  f"{_fmt(rp.history_end, r.timezone)}); {rp.setting} {rp.current_value} opens {rp.current_alerts} "
                  f"incident(s), {rp.setting_value} opens {rp.lowered_alerts}."]
    return "\n".join(lines) + "\n"


def render_html(r: Review) -> str:
    """One self-contained page (templates/review.html): inline CSS, the chart as a data: URI, every
    outside string escaped by the template."""
    return render_page(
        "review.html", r=r, summary=summary_rows(r), forecasts=forecast_rows(r) if r.forecasts else [],
        traffic_lines=traffic_lines(r) if r.traffic_check is not None else None,
        traffic=traffic_rows(r) if r.traffic_check is not None else [],
        deliveries=[(_delivery_when(d, r), f"#{d.transition_no} {d.event} {d.severity}",
                     d.channel, d.status + (f" — {d.error}" if d.error else ""), "; ".join(d.recipients) or "—")
                    for d in r.deliveries],
    )
