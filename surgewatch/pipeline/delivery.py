"""Stage 4, deliver: claim (incident, transition, channel) in the store, send, record."""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from surgewatch import clock
from surgewatch.detector.verdict import Verdict
from surgewatch.notifier.base import ChannelError, Notification
from surgewatch.pipeline.routing import CHAT_CHANNELS, routes
from surgewatch.pipeline.runtime import NotReady, Runtime
from surgewatch.registry import MissingCredential
from surgewatch.traffic import traffic_outlook

log = logging.getLogger("surgewatch.pipeline.delivery")


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
        # what the site should expect (None without a traffic history or once resolved)
        traffic_outlook=(traffic_outlook(rt, incident["brand"], verdict, transition["at"] + bucket)
                         if transition["event"] != "resolved" else None),
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
            store.mark_sent(key, {"superseded_by": later[0]["no"]})
        return NotifyOutcome(key, "superseded")
    notification = build_notification(rt, incident, transition, channel)  # may raise NotReady
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
