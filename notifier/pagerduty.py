"""PagerDuty channel: Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/overview/).

One PagerDuty alert per incident: ``dedup_key`` = the incident id, so an escalation re-triggers the
same alert (PagerDuty updates it instead of opening a second one), ``acknowledge`` silences the
pages, and ``resolve`` closes it.

Responses (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/#response-codes):
202 accepted; 400 the event is invalid (permanent: sending it again gets the same answer);
429 too many events for this routing key (~120/min); 5xx PagerDuty trouble (retry).
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import requests

from surgewatch.notifier import render
from surgewatch.notifier.base import Notification
from surgewatch.notifier.escape import log_text
from surgewatch.notifier.http_errors import error_for_exception, error_for_status

log = logging.getLogger(__name__)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITY = {"watch": "info", "warning": "warning", "critical": "critical"}  # PD: critical/error/warning/info
SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255
# PagerDuty sends no Retry-After with its 429; its guidance is to back off and retry, and the
# issue's policy is 3 tries 30 s apart.
DEFAULT_RETRY_AFTER_429 = 30.0


def dedup_key_for(incident_id: str) -> str:
    """The incident id, or a stable digest when it is longer than PagerDuty's 255 characters."""
    if len(incident_id) <= DEDUP_KEY_LIMIT:
        return incident_id
    return "surgewatch-" + hashlib.sha256(incident_id.encode()).hexdigest()


class PagerDutyChannel:
    name = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        *,
        events_url: str = EVENTS_URL,
        timeout: float = 10,
        session: requests.Session | None = None,
        client_name: str = "SurgeWatch",
        client_url: str | None = None,
    ):
        if not routing_key:
            raise ValueError("PagerDutyChannel needs a routing key (PAGERDUTY_ROUTING_KEY)")
        self._routing_key = routing_key
        self.events_url = events_url
        self.timeout = timeout
        self._session = session or requests.Session()
        self.client_name = client_name
        self.client_url = client_url

    def __repr__(self) -> str:  # the routing key lets anyone page our on-call: never shown
        return f"PagerDutyChannel(events_url={self.events_url!r})"

    # ---- event bodies ---------------------------------------------------------------------------

    def trigger_event(self, n: Notification) -> dict[str, Any]:
        outlook = n.traffic_outlook
        short = outlook.short_phrase() if outlook is not None else None
        traffic = f"; {short}" if short else ""
        # the traffic part comes last: when a long brand name forces a cut, the mention numbers survive
        summary = log_text(f"[{n.severity.upper()}] {render.summary(n)}{traffic}", SUMMARY_LIMIT)
        details: dict[str, Any] = {
            "incident_id": n.incident_id,
            # for people reading the incident: the configured zone (``timestamp`` below stays UTC,
            # as Events v2 wants, and PagerDuty shows it in each user's own zone)
            "time": render.when(n),
            "event": n.event,
            "severity": n.severity,
            "previous_severity": n.previous_severity,
            "observed_per_min": _round(render.per_minute(n.observed, n.bucket_seconds)),
            "expected_per_min": _round(render.per_minute(n.expected, n.bucket_seconds)),
            "ratio": None if n.ratio == float("inf") else round(n.ratio, 2),
            "score": round(n.score, 3),
            "bucket_seconds": n.bucket_seconds,
            "forecast_peak_per_min": _round(render.per_minute(n.forecast_peak_rate, n.bucket_seconds)),
            "forecast_seconds_to_peak": _round(n.forecast_seconds_to_peak),
            "sources": dict(n.sources),
            "site": n.site,
            "site_pages": [{"url": log_text(u, 500), "posts": c} for u, c in n.site_pages[:10]],
            "top_posts": [
                {"source": m.source, "author": log_text(m.author, 100), "url": log_text(m.url, 500),
                 "reach": m.reach, "text": log_text(m.text, 280)}
                for m in n.top_mentions[:3]
            ],
        }
        if outlook is not None:
            details["site_traffic"] = {
                "text": outlook.phrase(),
                "expected_multiple": _round(outlook.multiple),
                "expected_peak_per_min": _round(outlook.peak_rpm),
                "normal_per_min": _round(outlook.normal_rpm),
                "seconds_to_peak": _round(outlook.seconds_to_peak),
                "basis": outlook.basis,
            }
        links = []
        if n.runbook_url:
            links.append({"href": n.runbook_url, "text": "Runbook"})
        for url, count in n.site_pages[:3]:
            if _is_http(url):
                links.append({"href": url, "text": log_text(f"Site page linked by {count} posts", 100)})
        for m in n.top_mentions[:3]:
            if _is_http(m.url):
                links.append({"href": m.url, "text": log_text(f"Top post by {m.author or '?'} on {m.source}", 100)})
        event: dict[str, Any] = {
            "routing_key": self._routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key_for(n.incident_id),
            "payload": {
                "summary": summary,
                "source": urlsplit(n.site).hostname if n.site and urlsplit(n.site).hostname else "surgewatch",
                "severity": SEVERITY.get(n.severity, "warning"),
                "timestamp": render.iso(n.at),
                "component": n.brand,
                "group": "brand-mentions",
                "class": "mention_surge",
                "custom_details": details,
            },
            "client": self.client_name,
        }
        if self.client_url:
            event["client_url"] = self.client_url
        if links:
            event["links"] = links
        return event

    def _simple_event(self, action: str, incident_id: str) -> dict[str, Any]:
        return {"routing_key": self._routing_key, "event_action": action, "dedup_key": dedup_key_for(incident_id)}

    # ---- sending --------------------------------------------------------------------------------

    def send(self, notification: Notification) -> dict[str, Any] | None:
        n = notification
        if n.event == "resolved":
            return self._post(self._simple_event("resolve", n.incident_id))
        if n.event in ("acknowledged", "acked"):
            return self._post(self._simple_event("acknowledge", n.incident_id))
        # opened and escalated: the same dedup_key, so an escalation updates the open alert.
        return self._post(self.trigger_event(n))

    def acknowledge(self, incident_id: str) -> dict[str, Any]:
        """Called when someone acks in Slack or with ``surgewatch ack``."""
        return self._post(self._simple_event("acknowledge", incident_id))

    def resolve(self, incident_id: str) -> dict[str, Any]:
        return self._post(self._simple_event("resolve", incident_id))

    def _post(self, event: dict[str, Any]) -> dict[str, Any]:
        what = f"pagerduty {event['event_action']} {log_text(event.get('dedup_key'), 80)}"
        try:
            resp = self._session.post(self.events_url, json=event, timeout=self.timeout)
        except requests.RequestException as e:
            raise error_for_exception(what, e) from None  # the request in the cause holds the key
        if resp.status_code == 202 or resp.status_code == 200:
            body = _json(resp)
            key = body.get("dedup_key")
            return {"dedup_key": key if isinstance(key, str) and key else event.get("dedup_key"),
                    "action": event["event_action"]}
        detail = _detail(_json(resp)).replace(self._routing_key, "***")
        raise error_for_status(what, resp.status_code, resp.headers, detail, default_retry_after=DEFAULT_RETRY_AFTER_429)


def _detail(body: dict[str, Any]) -> str:
    """PagerDuty's own words from an error answer, whatever shape its fields have: documented as
    ``message`` (a string) and ``errors`` (a list of strings), but a proxy or a changed API may send
    a number, a list or an object (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/)."""

    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "; ".join(v if isinstance(v, str) else json.dumps(v) for v in value[:5])
        return json.dumps(value)[:300]

    message = body.get("message")
    detail = text(message) if message not in (None, "", []) else text(body.get("status") or "")
    errors = body.get("errors")
    if errors not in (None, "", []):
        detail += ("errors: " if not detail else ": errors: " if not isinstance(errors, list) else ": ") + text(errors)
    return detail


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _is_http(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").scheme in ("http", "https")
