"""The plain code behind the Celery tasks: collect, evaluate, notify.

Each function takes a :class:`Runtime` (settings, store, collectors, channels) and does one unit of
work idempotently, so a redelivered task is harmless:

* ``collect``  -- poll one source for one brand; ingest (dedup by source+id); only then save the cursor.
* ``evaluate`` -- score every completed bucket since the last run with the pure detector; move the
  brand's incident; list the transitions still to be dispatched (an outbox: re-listed until marked).
* ``notify``   -- claim (incident, transition, channel) in the store, send, mark sent.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from collectors.base import BrandSpec, Collector, Mention, SourceError
from detector.spike import DetectorParams, SpikeDetector
from detector.verdict import Severity, Verdict
from slack_sdk.errors import SlackClientError

from notifier.base import Channel, ChannelError, Notification
from surgewatch import clock
from surgewatch.calendar import planned_note
from surgewatch.config import Settings
from surgewatch.health import SourceHealth
from surgewatch.incidents import IncidentPolicy, advance
from surgewatch.registry import MissingCredential, build_channel, build_collector, configured_channels
from surgewatch.store import open_store
from surgewatch.store.base import Store

log = logging.getLogger("surgewatch.pipeline")

MAX_MENTION_AGE = 2 * 86400  # older posts are history, not a surge: shown by `fetch`, not counted
FUTURE_TOLERANCE = 300  # clocks disagree a little; further ahead than this is clamped to "now"
FIRST_LOOK_BACK = 86400  # a new brand's first evaluation starts at its first mention within this window
MAX_CATCH_UP = 7 * 86400  # after a long outage, do not replay more than a week
NOTIFY_LEASE = 120.0  # a claim's lease when a channel states no timeout (and for approved traffic controls)


class NotReady(Exception):
    """Not yet: a later notification waits for the incident's first message on the same channel
    (it must update and thread under it), or another attempt holds the claim.  The task retries
    in ``retry_in`` seconds."""

    def __init__(self, message: str, retry_in: float = 1.0):
        super().__init__(message)
        self.retry_in = retry_in


class Runtime:
    """Settings plus lazily built store, collectors and channels (one per process)."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self._store = store
        self._collectors: dict[str, Collector] = {}
        self._channels: dict[str, Channel] = {}

    @property
    def store(self) -> Store:
        if self._store is None:
            s = self.settings
            self._store = open_store(
                s.store.url,
                bucket_seconds=s.detector.bucket_seconds,
                dedup_ttl=s.store.dedup_ttl_days * 86400,
                recent_cap=s.store.recent_cap,
            )
        return self._store

    def collector(self, name: str) -> Collector:
        if name not in self._collectors:
            self._collectors[name] = build_collector(self.settings, name)
        return self._collectors[name]

    def channel(self, name: str) -> Channel:
        if name not in self._channels:
            self._channels[name] = build_channel(self.settings, name, self.store)
        return self._channels[name]

    def scoring_horizon(self, brand: str, now: float) -> float:
        """The time up to which the brand's counts are complete: ``evaluation_lag`` ago, and not
        past the last successful poll of any working source (a bucket scored before its poll has
        landed would read as a drop to zero).  A source that has not succeeded for three intervals
        is stalled or failing and no longer holds scoring back (its health alert covers it)."""
        horizon = now - self.evaluation_lag()
        for source, cfg in self.settings.sources.enabled().items():
            h = SourceHealth.load(self.store, source, brand)
            if not h.last_success:
                continue
            if h.last_success >= now - 3 * cfg.interval - self.evaluation_lag():
                horizon = min(horizon, h.last_success)
        return horizon

    def notify_lease(self, channel: str) -> float:
        """How long a claimed delivery stays ours: longer than one send can take (its request
        timeouts, twice for Slack's two audiences, plus pacing), so a live sender is never taken
        over, and short enough that a send that died is redone soon."""
        c = self.settings.channels
        timeout: float | None = None
        if channel == "slack" and c.slack is not None:
            timeout = c.slack.timeout
        elif channel == "pagerduty" and c.pagerduty is not None:
            timeout = c.pagerduty.timeout
        elif channel.startswith("webhook:"):
            timeout = next((t.timeout for t in self.settings.traffic_controls if f"webhook:{t.name}" == channel), None)
        elif channel == "console":
            timeout = 1.0
        return NOTIFY_LEASE if timeout is None else 3 * timeout + 10

    def brand_spec(self, brand: str) -> BrandSpec:
        b = self.settings.brand(brand)
        return BrandSpec(name=b.name, query=b.query, site=b.site)

    def detector_params(self) -> DetectorParams:
        d = self.settings.detector
        warm_up = None if d.warm_up_minutes is None else max(1, d.warm_up_minutes * 60 // d.bucket_seconds)
        return DetectorParams(bucket_seconds=d.bucket_seconds, warm_up_buckets=warm_up)

    def evaluation_lag(self) -> float:
        d = self.settings.detector
        if d.evaluation_lag_seconds is not None:
            return d.evaluation_lag_seconds
        intervals = [s.interval for s in self.settings.sources.enabled().values()]
        return max(intervals, default=0)


# -- collect ----------------------------------------------------------------------------------------
@dataclass
class CollectOutcome:
    source: str
    brand: str
    status: str  # ok | skipped | failed | disabled
    fetched: int = 0
    new: int = 0
    duplicates: int = 0
    skipped: list[tuple[Mention, str]] = field(default_factory=list)
    message: str = ""
    retry_after: float | None = None


def admit(mentions: list[Mention], now: float) -> tuple[list[Mention], list[tuple[Mention, str]]]:
    """Which mentions count.  Far-past posts are skipped (they would be counted into buckets the
    detector scored long ago); future timestamps beyond a clock-skew tolerance are clamped to now."""
    kept: list[Mention] = []
    skipped: list[tuple[Mention, str]] = []
    for m in mentions:
        ts = m.timestamp
        if ts < now - MAX_MENTION_AGE:
            skipped.append((m, f"too old to count (created {m.created_at.isoformat()})"))
        elif ts > now + FUTURE_TOLERANCE:
            kept.append(_with_time(m, now))
        else:
            kept.append(m)
    return kept, skipped


def _with_time(m: Mention, ts: float) -> Mention:
    return replace(m, created_at=datetime.fromtimestamp(ts, timezone.utc))


def collect(rt: Runtime, source: str, brand: str, now: float | None = None) -> CollectOutcome:
    now = clock.now() if now is None else now
    store = rt.store
    health = SourceHealth.load(store, source, brand)
    if health.status == "disabled":
        return CollectOutcome(source, brand, "disabled", message=health.last_error or "disabled")
    if health.backoff_until and health.backoff_until > now:
        return CollectOutcome(source, brand, "skipped", message=f"backing off until {_iso(health.backoff_until)}")
    cursor = store.get_cursor(source, brand)
    try:
        batch = rt.collector(source).fetch(rt.brand_spec(brand), cursor)
    except MissingCredential as exc:
        health.record_failure(now, str(exc), permanent=True)
        source_outage_alert(rt, health, now)
        health.save(store)
        log.error("source %s for %s disabled: %s", source, brand, exc)
        return CollectOutcome(source, brand, "disabled", message=str(exc))
    except SourceError as exc:
        health.record_failure(now, exc.message, permanent=exc.permanent, retry_after=exc.retry_after)
        source_outage_alert(rt, health, now)
        health.save(store)
        log.warning("source %s for %s failed (%s): %s", source, brand, "permanent" if exc.permanent else "transient", exc)
        return CollectOutcome(
            source, brand, "disabled" if exc.permanent else "failed", message=exc.message, retry_after=exc.retry_after
        )
    kept, skipped = admit(batch.mentions, now)
    result = store.ingest(kept)
    if batch.volume:
        store.set_volume(brand, source, batch.volume)
    # The cursor moves only now that everything it covers is stored (a crash before this line
    # re-fetches the same posts next time, and the dedup absorbs them).
    if batch.cursor is not None:
        store.set_cursor(source, brand, batch.cursor)
    health.record_success(now, requests=batch.requests_made, notes=batch.notes, retry_after=batch.retry_after)
    source_outage_alert(rt, health, now)
    health.save(store)
    return CollectOutcome(
        source, brand, "ok", fetched=len(batch.mentions), new=result.new, duplicates=result.duplicates, skipped=skipped
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- evaluate ---------------------------------------------------------------------------------------
@dataclass
class EvaluateOutcome:
    brand: str
    verdicts: list[Verdict] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    dispatch: list[tuple[str, int, str]] = field(default_factory=list)  # (incident_id, transition no, channel)
    busy: bool = False


def _min_severity(settings: Settings, channel: str) -> Severity | None:
    """The lowest severity a channel acts on (None: every transition)."""
    if channel == "pagerduty" and settings.channels.pagerduty is not None:
        return Severity(settings.channels.pagerduty.min_severity)
    if channel.startswith("webhook:"):
        for t in settings.traffic_controls:
            if f"webhook:{t.name}" == channel:
                return Severity(t.min_severity)
    return None


def routes(settings: Settings, incident: dict[str, Any], transition: dict[str, Any]) -> list[str]:
    """Which channels hear about a transition.  Pager and traffic controls act from their minimum
    severity up, and hear the resolve only if they acted on the incident.  A "paged" transition
    (the escalation policy's) goes to the pager alone."""
    if transition["event"] == "paged":
        return ["pagerduty"] if settings.channels.pagerduty is not None else []
    out = []
    approval_only = {f"webhook:{t.name}" for t in settings.traffic_controls if t.approval}
    for name in configured_channels(settings):
        if name in approval_only:
            # Runs only when a human clicks its Slack button; its undo follows only if it ran.
            if transition["event"] == "resolved" and name.removeprefix("webhook:") in incident.get("approved_controls", []):
                out.append(name)
            continue
        if transition["event"] == "resolved":
            if _min_severity(settings, name) is not None and not _acted(settings, incident, name):
                continue
        elif not _acts_on(settings, name, transition):
            continue
        out.append(name)
    return out


def _acts_on(settings: Settings, channel: str, transition: dict[str, Any]) -> bool:
    if transition["event"] == "paged":
        return channel == "pagerduty"
    threshold = _min_severity(settings, channel)
    return threshold is None or Severity(transition["to"]).rank >= threshold.rank


def _acted(settings: Settings, incident: dict[str, Any], channel: str) -> bool:
    return any(t["event"] != "resolved" and _acts_on(settings, channel, t) and not _held_back(t, channel)
               for t in incident["transitions"])


def _held_back(transition: dict[str, Any], channel: str) -> bool:
    """The pager stayed quiet for this transition: the surge was the planned one."""
    return channel == "pagerduty" and (transition.get("planned") or {}).get("page") is False


def _planned(settings: Settings, brand: str, at: float, observed: float) -> dict[str, Any] | None:
    if not settings.calendar.events:
        return None
    events = settings.planned_events()
    per_min = observed * 60 / settings.detector.bucket_seconds
    return planned_note(events, brand, at, per_min, lead_minutes=settings.calendar.lead_minutes,
                        k=settings.calendar.bigger_factor)


def escalate(settings: Settings, store: Store, incident: dict[str, Any], now: float) -> dict[str, Any] | None:
    """The escalation policy: page a warning nobody acknowledged in time, or page because Slack
    failed permanently.  Returns the "paged" transition it appended, if any."""
    pd = settings.channels.pagerduty
    if pd is None or incident["status"] != "open" or _acted(settings, incident, "pagerduty"):
        return None
    reason = None
    planned = None
    if settings.calendar.events:
        latest = store.get_state(f"verdict:{incident['brand']}") or incident["transitions"][-1]["verdict"]
        planned = _planned(settings, incident["brand"], now, latest.get("observed", 0.0))
    if planned is not None and not planned["page"]:
        return None  # the planned surge, as big as planned: no page, Slack already says why
    warnings = [t for t in incident["transitions"] if t["to"] in ("warning", "critical")]
    wait = pd.page_unacked_warning_after_minutes
    if wait is not None and warnings and not incident.get("acked_at") and now - (warnings[0]["at"] + settings.detector.bucket_seconds) >= wait * 60:
        reason = f"warning not acknowledged within {wait} min"
    failed = store.get_state(f"channel_failed:{incident['id']}:slack")
    if pd.page_when_slack_fails and failed:
        reason = f"Slack failed: {failed.get('error', 'permanent error')}"
    if planned is not None:  # here only when bigger than planned
        bigger = (f"{planned['observed_per_min']:g}/min is more than {settings.calendar.bigger_factor:g}x the planned "
                  f"{planned['expected_peak_per_min']:g}/min ({planned['name']})")
        reason = bigger if reason is None else f"{reason}; {bigger}"
    if reason is None:
        return None
    last = incident["transitions"][-1]
    tr = {"no": len(incident["transitions"]), "at": now, "event": "paged", "from": incident["severity"],
          "to": incident["severity"], "verdict": last["verdict"], "dispatched": False, "reason": reason}
    if planned is not None:
        tr["planned"] = planned
    incident["transitions"].append(tr)
    return tr


def evaluate(rt: Runtime, brand: str, now: float | None = None) -> EvaluateOutcome:
    now = clock.now() if now is None else now
    store = rt.store
    brand = rt.settings.brand(brand).name
    lock = f"lock:evaluate:{brand}"
    # Two workers must not score the same brand at once (beat could queue two ticks after a stall).
    if not store.claim(lock, 60.0, time.time()):
        return EvaluateOutcome(brand, busy=True)
    try:
        return _evaluate_locked(rt, brand, now)
    finally:
        store.release(lock)


def _evaluate_locked(rt: Runtime, brand: str, now: float) -> EvaluateOutcome:
    store = rt.store
    bucket = rt.settings.detector.bucket_seconds
    end = math.floor(rt.scoring_horizon(brand, now) / bucket) * bucket  # buckets before `end` are complete
    saved = store.get_state(f"detector:{brand}")
    params = rt.detector_params()
    detector = None
    if saved:
        try:
            detector = SpikeDetector(params, saved["detector"])
            start = saved["next_at"]
        except (ValueError, KeyError, TypeError) as exc:
            # A state from an older detector version: start afresh (warm-up again) rather than crash.
            log.warning("detector state for %s not usable (%s); starting a fresh baseline", brand, exc)
    if detector is None:
        # A brand's history starts with its first counted mention (within the last day): scoring
        # the empty buckets before it would teach the detector a baseline of zero.
        recent = store.counts(brand, end - FIRST_LOOK_BACK, end)
        first = min((t for series in recent.values() for t, c in series.items() if c > 0), default=None)
        if first is None:
            return EvaluateOutcome(brand)
        detector = SpikeDetector(params)
        start = int(first)
    start = max(start, end - MAX_CATCH_UP // bucket * bucket)
    outcome = EvaluateOutcome(brand)
    policy = IncidentPolicy(
        open_severity=Severity(rt.settings.detector.open_severity),
        resolve_after=rt.settings.detector.resolve_after_quiet_buckets,
    )
    incident = store.open_incident(brand)
    touched: dict[str, dict[str, Any]] = {}
    if start < end:
        counts = store.counts(brand, start, end)
        t = start
        while t < end:
            by_source = {source: float(series.get(t, 0)) for source, series in counts.items()}
            verdict = detector.update(t, sum(by_source.values()), by_source)
            outcome.verdicts.append(verdict)
            before = incident
            incident, transition = advance(incident, brand, verdict, policy)
            if incident is not None and incident is not before:
                touched[incident["id"]] = incident
            if transition is not None:
                outcome.transitions.append(transition)
            if incident is not None and incident["status"] == "resolved":
                incident = None
            t += bucket
        # Incidents first, detector state second: if we die in between, the replay re-scores the
        # same buckets and `advance` ignores those it has already seen.
        log.info("evaluated %s: %d bucket(s) from %s, last %s observed=%.0f expected=%.1f %s", brand,
                 len(outcome.verdicts), _iso(start), _iso(outcome.verdicts[-1].at), outcome.verdicts[-1].observed,
                 outcome.verdicts[-1].expected, outcome.verdicts[-1].severity.value)
        for inc in touched.values():
            store.save_incident(inc)
        store.set_state(f"detector:{brand}", {"next_at": end, "detector": detector.state()})
        if outcome.verdicts:
            store.set_state(f"verdict:{brand}", outcome.verdicts[-1].to_dict())
    # The outbox: every transition not yet handed to the notify queue, including ones a crashed
    # run saved but never dispatched.
    candidates = dict(touched)
    open_now = store.open_incident(brand)
    if open_now is not None:
        open_now = candidates.setdefault(open_now["id"], open_now)
        paged = escalate(rt.settings, store, open_now, now)
        if paged is not None:
            outcome.transitions.append(paged)
            store.save_incident(open_now)
    silenced = store.get_state(f"silence:{brand}")
    if silenced and silenced.get("until", 0) <= now:
        silenced = None
    for inc in candidates.values():
        changed = False
        for tr in inc["transitions"]:
            if tr.get("dispatched"):
                continue
            channels = routes(rt.settings, inc, tr)
            if tr["event"] in ("opened", "escalated") and "planned" not in tr:
                note = _planned(rt.settings, brand, tr["at"], tr["verdict"].get("observed", 0.0))
                if note is not None:
                    tr["planned"] = note
                    changed = True
            if _held_back(tr, "pagerduty"):
                # The planned surge, as big as planned: Slack and the console say so; no page.
                channels = [c for c in channels if c != "pagerduty"]
            if silenced is not None:
                # A silence mutes every channel but the console log; the transition is still recorded.
                channels = [c for c in channels if c == "console"]
                tr["silenced"] = {"reason": silenced.get("reason", ""), "by": silenced.get("by", ""),
                                  "until": silenced["until"]}
                changed = True
            for channel in channels:
                outcome.dispatch.append((inc["id"], tr["no"], channel))
            if not channels:
                tr["dispatched"] = True
                changed = True
        if changed:
            store.save_incident(inc)
    return outcome


def mark_dispatched(rt: Runtime, dispatch: list[tuple[str, int, str]]) -> None:
    by_incident: dict[str, set[int]] = {}
    for incident_id, no, _ in dispatch:
        by_incident.setdefault(incident_id, set()).add(no)
    for incident_id, nos in by_incident.items():
        inc = rt.store.get_incident(incident_id)
        if inc is None:
            continue
        for tr in inc["transitions"]:
            if tr["no"] in nos:
                tr["dispatched"] = True
        rt.store.save_incident(inc)


# -- notify -----------------------------------------------------------------------------------------
def delivery_key(incident_id: str, no: int, channel: str) -> str:
    return f"{incident_id}:{no}:{channel}"


def receipt_key(incident_id: str, channel: str) -> str:
    return f"receipt:{incident_id}:{channel}"


def build_notification(rt: Runtime, incident: dict[str, Any], transition: dict[str, Any], channel: str) -> Notification:
    store = rt.store
    brand_cfg = rt.settings.brand(incident["brand"])
    verdict = Verdict.from_dict(transition["verdict"])
    bucket = rt.settings.detector.bucket_seconds
    window_start = incident["opened_at"] - 10 * bucket
    recent = [m for m in store.recent(incident["brand"], 200) if m.timestamp >= window_start]
    top = sorted(recent, key=lambda m: ((m.reach or 0) + m.likes + m.reposts * 2 + m.score, m.timestamp), reverse=True)
    sources = Counter(m.source for m in recent)
    pages = Counter(link for m in recent for link in m.site_links)
    for earlier in incident["transitions"][: transition["no"]]:
        d = store.delivery(delivery_key(incident["id"], earlier["no"], channel))
        if d and d.get("status") == "claimed":
            # Updates and thread replies hang off the incident's first message: wait for it.
            raise NotReady(f"{incident['id']} transition {earlier['no']} on {channel} is still being sent")
    # The channel's latest receipt for this incident (including what a failed attempt did deliver),
    # so this send updates those messages instead of posting new ones.
    previous = store.get_state(receipt_key(incident["id"], channel))
    forecast = verdict.forecast
    return Notification(
        key=delivery_key(incident["id"], transition["no"], channel),
        incident_id=incident["id"],
        brand=incident["brand"],
        event=transition["event"],
        severity=transition["to"] if transition["to"] != "resolved" else incident["severity"],
        previous_severity=transition["from"],
        at=datetime.fromtimestamp(transition["at"] + bucket, timezone.utc),
        observed=verdict.observed,
        expected=verdict.expected,
        score=verdict.score,
        bucket_seconds=bucket,
        forecast_peak_rate=forecast.peak_rate if forecast else None,
        forecast_seconds_to_peak=forecast.seconds_to_peak if forecast else None,
        top_mentions=tuple(top[:5]),
        sources=dict(sources),
        site=brand_cfg.site,
        site_pages=tuple(pages.most_common(5)),
        runbook_url=brand_cfg.runbook_url,
        actions=tuple(brand_cfg.actions),
        planned_event=_describe_planned(transition.get("planned")),
        approval_controls=tuple(t.name for t in rt.settings.traffic_controls if t.approval),
        acknowledged_by=incident.get("acked_by"),
        previous_receipt=previous,
    )


def _describe_planned(note: dict[str, Any] | None) -> str | None:
    if not note:
        return None
    if note.get("page"):
        return f"planned: {note.get('name')}, but bigger than planned"
    return f"planned: {note.get('name')}, expected"


@dataclass
class NotifyOutcome:
    key: str
    status: str  # sent | duplicate | failed
    message: str = ""


def notify(rt: Runtime, incident_id: str, no: int, channel: str) -> NotifyOutcome:
    store = rt.store
    key = delivery_key(incident_id, no, channel)
    incident = store.get_incident(incident_id)
    if incident is None or no >= len(incident["transitions"]):
        return NotifyOutcome(key, "failed", f"no transition {no} in incident {incident_id}")
    notification = build_notification(rt, incident, incident["transitions"][no], channel)  # may raise NotReady
    before = store.delivery(key)
    # Claim before sending, mark after: a second worker (or a redelivery) finds the claim and stays quiet.
    if not store.claim(key, rt.notify_lease(channel), time.time()):
        held = store.delivery(key) or {}
        if held.get("status") == "claimed":
            # Another attempt holds the claim: a live worker sending right now, or one that died
            # (a pool child killed mid-send). Come back when its lease has run out: if it finished,
            # the delivery reads "sent"; if it died, this attempt takes the claim over and sends.
            left = float(held.get("lease_until") or 0) - time.time()
            raise NotReady(f"{key} is claimed by another attempt", retry_in=max(1.0, left + 1.0))
        return NotifyOutcome(key, "duplicate")
    if before is not None and before.get("status") == "claimed":
        notification = replace(notification, takeover=True)  # we took over a dead attempt's claim
    try:
        receipt = rt.channel(channel).send(notification)
    except MissingCredential as exc:
        store.mark_sent(key, {"error": str(exc), "permanent": True})
        log.error("channel %s cannot send: %s", channel, exc)
        return NotifyOutcome(key, "failed", str(exc))
    except ChannelError as exc:
        if exc.permanent:
            # Retrying cannot help; remember the failure (for escalation and status), never resend.
            store.mark_sent(key, {"error": exc.message, "permanent": True})
            store.set_state(f"channel_failed:{incident_id}:{channel}", {"error": exc.message, "key": key})
            log.error("channel %s failed permanently for %s: %s", channel, key, exc.message)
            return NotifyOutcome(key, "failed", exc.message)
        partial = getattr(exc, "partial_receipt", None)
        if partial:
            store.set_state(receipt_key(incident_id, channel), partial)
        store.release(key)
        raise
    receipt = {**(receipt or {}), "sent_at": clock.now()}
    store.mark_sent(key, receipt)
    if receipt:
        store.set_state(receipt_key(incident_id, channel), receipt)
    return NotifyOutcome(key, "sent")


# -- messages to ops that are not incidents (reminders, source outages) ----------------------------
def ops_poster(rt: Runtime, now: float) -> Any:
    """``post(text)``: Slack's ops channel when it is configured (text escaped), else the console."""
    from notifier.escape import log_text, slack_text
    from surgewatch.config import secret_from

    slack = rt.settings.channels.slack
    token = secret_from(slack.token, "SLACK_BOT_TOKEN") if slack is not None else None
    if slack is not None and token and slack.ops_channel:
        from slack_sdk import WebClient

        client = WebClient(token=token, base_url=slack.api_url, timeout=int(slack.timeout))

        def post(text: str) -> None:
            client.chat_postMessage(channel=slack.ops_channel, text=slack_text(text, 3000))

        return post

    def post_console(text: str) -> None:
        print(f"{_iso(now)} OPS {log_text(text, 500)}", flush=True)

    return post_console


def send_reminders(rt: Runtime, now: float | None = None) -> list[str]:
    """Remind ops before each planned event (once each)."""
    from surgewatch.calendar import send_due_reminders

    now = clock.now() if now is None else now
    events = rt.settings.planned_events()
    if not events:
        return []
    return send_due_reminders(rt.store, events, now, ops_poster(rt, now), rt.settings.timezone)


def source_outage_alert(rt: Runtime, health: SourceHealth, now: float) -> str | None:
    """Tell ops once when a source has been failing longer than its ``alert_after_minutes`` (or
    was disabled), and once when it recovers.  A silent collector is the worst failure this tool
    can have: a quiet channel must mean a quiet world.  Returns what was said, if anything."""
    cfg = getattr(rt.settings.sources, health.source, None)
    if cfg is None:
        return None
    text = None
    if health.failing_since is not None and health.alerted_since != health.failing_since:
        if health.status == "disabled" or now - health.failing_since >= cfg.alert_after_minutes * 60:
            what = "is disabled" if health.status == "disabled" else f"has been failing since {_iso(health.failing_since)}"
            text = (f"Source {health.source} for {health.brand} {what}: {health.last_error}. "
                    f"Mentions from it are not being counted, so a surge there would go unnoticed.")
            key = f"source-alert:{health.source}:{health.brand}:{health.failing_since}:down"
            health.alerted_since = health.failing_since
    elif health.failing_since is None and health.alerted_since is not None and health.status in ("ok", "degraded"):
        text = f"Source {health.source} for {health.brand} has recovered (last success {_iso(now)})."
        key = f"source-alert:{health.source}:{health.brand}:{health.alerted_since}:up"
        health.alerted_since = None
    if text is None:
        return None
    # Claimed like any notification, so a redelivered collect never says it twice.
    if rt.store.claim(key, 60.0, time.time()):
        try:
            ops_poster(rt, now)(text)
        except (SlackClientError, OSError) as exc:  # the poll's own outcome must not be lost to this
            rt.store.release(key)
            log.error("could not tell ops about %s/%s: %s", health.source, health.brand, type(exc).__name__)
            return None
        rt.store.mark_sent(key, {"text": text})
    return text
