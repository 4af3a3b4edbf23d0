"""Stage 4, deliver: claim (incident, transition, channel) in the store, send, record."""
from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from surgewatch import clock
from surgewatch.detector.verdict import Verdict
from surgewatch.notifier.base import ChannelError, Notification
from surgewatch.pipeline.routing import CHAT_CHANNELS, routes
from surgewatch.pipeline.runtime import NotReady, Runtime
from surgewatch.notifier.escape import log_text
from surgewatch.registry import MissingCredential
from surgewatch.store.base import Delivery
from surgewatch.store.keys import channel_failed_key, delivery_key, receipt_key
from surgewatch.traffic import traffic_outlook
from surgewatch.incidents.model import Incident, PlannedNote, Transition

log = logging.getLogger("surgewatch.pipeline.delivery")


def build_notification(rt: Runtime, incident: Incident, transition: Transition, channel: str) -> Notification:
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
        at=clock.local(transition["at"] + bucket, rt.settings.timezone),  # shown in the configured zone
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
        # what the site should expect (None without a traffic history or once resolved)
        traffic_outlook=(traffic_outlook(rt, incident["brand"], verdict, transition["at"] + bucket)
                         if transition["event"] != "resolved" else None),
    )


def _describe_planned(note: PlannedNote | None) -> str | None:
    if not note:
        return None
    if note.get("page"):
        return f"planned: {note.get('name')}, but bigger than planned"
    return f"planned: {note.get('name')}, expected"


@dataclass
class NotifyOutcome:
    key: str
    status: str  # sent | failed | superseded | duplicate (another attempt already finished it)
    message: str = ""


# One first attempt and eight retries (about four minutes of backoff), then the delivery is failed.
MAX_SEND_ATTEMPTS = 9


def backoff(retries: int, floor: float | None = None) -> float:
    """Jittered exponential backoff that honours a Retry-After floor."""
    return max(floor or 0.0, min(300.0, 2.0**retries) * random.uniform(0.5, 1.5))


class RetryLater(ChannelError):
    """A transient failure with attempts left: the delivery is back to ``pending`` with its
    ``next_attempt_at``; the caller (the notify task) retries in ``retry_in`` seconds."""

    def __init__(self, cause: ChannelError, retry_in: float):
        super().__init__(cause.message, permanent=False, retry_after=cause.retry_after)
        self.retry_in = retry_in


def _record_of(rt: Runtime, key: str, incident_id: str, no: int, channel: str,
               incident: Incident | None) -> Delivery:
    found = rt.store.get_delivery(key)
    if found is not None:
        return found
    now = clock.now()
    tr = incident["transitions"][no] if incident is not None and no < len(incident["transitions"]) else None
    return Delivery(incident_id, no, channel, event=tr["event"] if tr is not None else None,
                    brand=incident.get("brand") if incident else None, created_at=now, updated_at=now)


def _finish(rt: Runtime, record: Delivery, status: str, *, error: str | None = None, reason: str | None = None,
            receipt: dict[str, Any] | None = None) -> Delivery:
    now = clock.now()
    record.status, record.updated_at = status, now
    record.claimed_at = record.lease_until = record.next_attempt_at = None
    if error is not None:
        record.error = error
    if reason is not None:
        record.reason = reason
    if receipt is not None:
        record.receipt = receipt
    if status == "sent":
        record.sent_at = now
    rt.store.record_delivery(record)
    return record


def fail_delivery(rt: Runtime, record: Delivery, error: str) -> NotifyOutcome:
    """End a delivery as ``failed`` -- never as silence: remember it for the escalation policy (a
    failed chat message pages), tell ops when a page failed, and log it."""
    _finish(rt, record, "failed", error=error)
    rt.store.set_state(channel_failed_key(record.incident, record.channel), {"error": error, "key": record.key})
    log.error("delivery %s failed after %d attempt(s): %s", log_text(record.key, 300), record.attempts, error)
    if record.channel == "pagerduty":
        _tell_ops(rt, f":rotating_light: SurgeWatch could not page for incident {record.incident} "
                      f"({record.event or 'transition ' + str(record.transition)}): {error}")
    return NotifyOutcome(record.key, "failed", error)


def _tell_ops(rt: Runtime, text: str) -> None:
    from surgewatch.pipeline.ops_messages import ops_poster

    try:
        ops_poster(rt, clock.now())(text)
    except Exception as exc:  # noqa: BLE001 -- telling ops is best effort; the log and `status` still say it
        log.error("could not tell ops (%s): %s", type(exc).__name__, log_text(str(exc), 300))


def give_up(rt: Runtime, incident_id: str, no: int, channel: str, why: str) -> NotifyOutcome:
    """The caller stops trying (its own retry budget ran out): the delivery ends ``failed``."""
    key = delivery_key(incident_id, no, channel)
    record = _record_of(rt, key, incident_id, no, channel, rt.store.get_incident(incident_id))
    if record.final:
        return NotifyOutcome(key, "duplicate")
    return fail_delivery(rt, record, why)


def notify(rt: Runtime, incident_id: str, no: int, channel: str, *, max_attempts: int = MAX_SEND_ATTEMPTS) -> NotifyOutcome:
    """One claim -> send -> record path for every channel.  The delivery ends ``sent`` (with the
    service's receipt), ``superseded``, or ``failed`` (permanent errors, any unexpected exception,
    and transient errors once ``max_attempts`` sends have failed); a transient failure with attempts
    left goes back to ``pending`` and raises :class:`RetryLater`."""
    store = rt.store
    key = delivery_key(incident_id, no, channel)
    incident = store.get_incident(incident_id)
    record = _record_of(rt, key, incident_id, no, channel, incident)
    if record.final:
        return NotifyOutcome(key, "duplicate")
    if incident is None or no >= len(incident["transitions"]):
        if store.claim(key, rt.notify_lease(channel), time.time()):
            return fail_delivery(rt, record, f"no transition {no} in incident {incident_id}")
        return NotifyOutcome(key, "failed", f"no transition {no} in incident {incident_id}")
    transition = incident["transitions"][no]
    # (Only chat channels skip straight to a resolve: a pager or a traffic control still gets its
    # trigger or action before the resolve or undo.)
    newer = ("opened", "escalated", "resolved") if channel in CHAT_CHANNELS else ("opened", "escalated")
    later = [t for t in incident["transitions"][no + 1:]
             if t["event"] in newer and channel in routes(rt.settings, incident, t)]
    if later and transition["event"] in ("opened", "escalated", "repeat"):
        # Grouping: a newer state of the incident is already due on this channel, so this older
        # one is not sent on its own (the newer message says everything it would have).
        if store.claim(key, rt.notify_lease(channel), time.time()):
            _finish(rt, record, "superseded", reason=f"superseded by transition {later[0]['no']} ({later[0]['event']})")
        return NotifyOutcome(key, "superseded")
    notification = build_notification(rt, incident, transition, channel)  # may raise NotReady
    # (read from the claim itself: a claim taken without a log record -- a task sent by hand or by an
    # older version -- is a dead attempt's claim all the same)
    before = store.delivery(key)
    # Claim before sending, mark after: a second worker (or a redelivery) finds the claim and stays quiet.
    if not store.claim(key, rt.notify_lease(channel), time.time()):
        held = store.delivery(key) or {}
        if held.get("status") == "claimed":
            # Another attempt holds the claim: a live worker sending right now, or one that died
            # (a pool child killed mid-send).  Look again an eighth of a lease later (a live send
            # takes milliseconds; then the delivery reads "sent" and this attempt is done), and at
            # the latest when the lease has run out: then a dead attempt's claim is taken over.
            lease_until = float(held.get("lease_until") or 0)
            lease = lease_until - float(held.get("claimed_at") or lease_until)
            left = lease_until - time.time()
            raise NotReady(f"{key} is claimed by another attempt", retry_in=max(1.0, min(left + 1.0, lease / 8)))
        return NotifyOutcome(key, "duplicate")
    if before is not None and before.get("status") == "claimed":
        notification = replace(notification, takeover=True)  # we took over a dead attempt's claim
    record.attempts += 1
    try:
        receipt = rt.channel(channel).send(notification)
    except MissingCredential as exc:
        return fail_delivery(rt, record, str(exc))
    except ChannelError as exc:
        _keep_receipt(rt, incident_id, channel, getattr(exc, "partial_receipt", None))
        if exc.permanent:
            # Retrying cannot help: failed now (escalation and status read it), never resent.
            return fail_delivery(rt, record, exc.message)
        if record.attempts >= max_attempts:
            return fail_delivery(rt, record, f"gave up after {record.attempts} attempts: {exc.message}")
        retry_in = backoff(record.attempts - 1, exc.retry_after)
        record.status, record.error = "pending", exc.message
        record.updated_at = clock.now()
        record.next_attempt_at = record.updated_at + retry_in
        record.claimed_at = record.lease_until = None
        store.record_delivery(record)  # gives the claim back: the retry claims the pending record
        raise RetryLater(exc, retry_in) from None
    except Exception as exc:  # noqa: BLE001 -- any answer we could not handle is a failed attempt, recorded
        # A wrong-shaped answer (a field missing, a number where a list was due) is not cured by
        # sending again, and must not leave the delivery claimed: failed, in the channel's words.
        log.exception("channel %s raised on %s", channel, log_text(key, 300))
        return fail_delivery(rt, record, f"{channel}: unexpected answer ({type(exc).__name__}: {log_text(str(exc), 300)})")
    receipt = dict(receipt or {})
    _keep_receipt(rt, incident_id, channel, receipt)
    _finish(rt, record, "sent", receipt=receipt)
    return NotifyOutcome(key, "sent")


def _keep_receipt(rt: Runtime, incident_id: str, channel: str, receipt: dict[str, Any] | None) -> None:
    """Remember what the channel delivered for the incident, so later sends update those messages.
    An empty receipt never overwrites a fuller one: what it lacks is kept from before."""
    if not receipt:
        return
    key = receipt_key(incident_id, channel)
    previous = rt.store.get_state(key) or {}
    rt.store.set_state(key, {**previous, **receipt})
