"""Traffic-control webhooks: scale up, switch on a waiting room, warm a cache -- and undo on resolve.

The receiver must be able to trust and de-duplicate what we send, so every request carries:
- ``X-SurgeWatch-Timestamp``: Unix seconds when it was signed (receivers reject old ones: replay);
- ``X-SurgeWatch-Signature: sha256=<hex>``: HMAC-SHA256 with the shared secret over
  ``f"{timestamp}.{idempotency_key}.{body}"`` (the Stripe/Slack scheme, so signing the timestamp
  stops a replay with a fresh timestamp; the key is signed too, so a replay cannot pose as a new
  action by changing it);
- ``Idempotency-Key``: the notification key, the same on every retry of one transition.

Dry-run (the example config's default) logs what would be sent and sends nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import requests

from surgewatch.notifier import render
from surgewatch.notifier.base import Notification
from surgewatch.notifier.http_errors import error_for_exception, error_for_status
from surgewatch.redact import redact_url

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-SurgeWatch-Signature"
TIMESTAMP_HEADER = "X-SurgeWatch-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_RANK = {"quiet": 0, "watch": 1, "warning": 2, "critical": 3}


def template_values(n: Notification, action: str) -> dict[str, Any]:
    """What a body template may use, as ``"{name}"``.  Only numbers and config strings: no post
    text ever reaches a traffic-control endpoint."""
    return {
        "action": action,
        "key": n.key,
        "incident_id": n.incident_id,
        "brand": n.brand,
        "event": n.event,
        "severity": n.severity,
        "previous_severity": n.previous_severity,
        "at": render.iso(n.at),
        "observed": n.observed,
        "expected": n.expected,
        "observed_per_min": round(render.per_minute(n.observed, n.bucket_seconds) or 0.0, 3),
        "expected_per_min": round(render.per_minute(n.expected, n.bucket_seconds) or 0.0, 3),
        "ratio": None if n.ratio == float("inf") else round(n.ratio, 3),
        "score": n.score,
        "forecast_peak_per_min": None if n.forecast_peak_rate is None else round(render.per_minute(n.forecast_peak_rate, n.bucket_seconds) or 0.0, 3),
        "forecast_seconds_to_peak": n.forecast_seconds_to_peak,
        "site": n.site,
    }


def render_template(template: Any, values: dict[str, Any]) -> Any:
    """Fill ``"{name}"`` placeholders.  A string that is exactly one placeholder takes the value
    with its type (``"{observed_per_min}"`` -> 48.0), so receivers get numbers, not strings.
    Only ``{word}`` is recognised -- no ``str.format`` attribute or index lookups."""
    if isinstance(template, dict):
        return {k: render_template(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render_template(v, values) for v in template]
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: "" if values[m.group(1)] is None else str(values[m.group(1)]), template)
    return template


_PLACEHOLDER_LIKE = re.compile(r"\{[^{}\s]+\}")


def _strings(template: Any) -> list[str]:
    if isinstance(template, dict):
        return [s for k, v in template.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(template, list):
        return [s for v in template for s in _strings(v)]
    return [template] if isinstance(template, str) else []


def unknown_placeholders(template: Any) -> list[str]:
    """What in a template looks like a placeholder but is not one :func:`template_values` fills,
    sorted: an unknown ``{name}``, or ``{observed:.1f}`` / ``{brand.name}`` (only ``{name}`` is
    recognised, and those would be sent as written)."""
    found = {m.group(0)[1:-1] for s in _strings(template) for m in _PLACEHOLDER_LIKE.finditer(s)}
    return sorted(found - set(_SAMPLE_KEYS))


def sign(secret: str, timestamp: str, body: str | bytes, idempotency_key: str | None = None) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``"{timestamp}.{idempotency_key}.{body}"`` (over
    ``"{timestamp}.{body}"`` when there is no key): the key is signed, so a replay cannot pass as a
    new action by changing it."""
    raw = body if isinstance(body, bytes) else body.encode()
    prefix = f"{timestamp}." if idempotency_key is None else f"{timestamp}.{idempotency_key}."
    digest = hmac.new(secret.encode(), prefix.encode() + raw, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str | None, body: str | bytes | None, signature: str | None, *,
                     idempotency_key: str | None = None, tolerance: float = 300, now: float | None = None) -> bool:
    """What a receiver does: constant-time compare, and refuse timestamps older than ``tolerance``.
    Pass the request's ``Idempotency-Key`` header: it is part of what is signed.  Never raises on
    what a request carries: a missing header, a non-UTF-8 body or a malformed timestamp is False."""
    if not (isinstance(timestamp, str) and isinstance(signature, str) and isinstance(body, (str, bytes))):
        return False
    if idempotency_key is not None and not isinstance(idempotency_key, str):
        return False
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
        expected = sign(secret, timestamp, body, idempotency_key)
    except (ValueError, UnicodeError):
        return False
    return age <= tolerance and hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def _redacted(url: str) -> str:
    """The URL for logs and errors: no password, and no query values (they often carry tokens)."""
    return redact_url(url, hide_query=True)


class WebhookAction:
    """One configured action (``name``: "waiting_room", "scale_up", ...).

    ``body_template`` is sent for ``opened``/``escalated`` transitions at or above
    ``min_severity``; ``undo_template`` (if any) on ``resolved``.  Other transitions are skipped
    (``send`` returns ``{"skipped": reason}``), so the action can sit on a route that also gets
    watch-level notifications.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secret: str | None = None,
        body_template: dict[str, Any],
        undo_template: dict[str, Any] | None = None,
        min_severity: str = "warning",
        dry_run: bool = True,
        timeout: float = 10,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook {name}: url must be http(s)")
        if min_severity not in _RANK:
            raise ValueError(f"webhook {name}: min_severity must be one of watch, warning, critical")
        self.name = name
        self.url = url
        self._secret = secret
        self.body_template = body_template
        self.undo_template = undo_template
        self.min_severity = min_severity
        self.dry_run = dry_run
        self.timeout = timeout
        self._session = session or requests.Session()
        self._clock = clock
        # Fail at start-up, not in the middle of a surge, when a template names an unknown value.
        for which, tpl in (("body_template", body_template), ("undo_template", undo_template)):
            unknown = unknown_placeholders(tpl)
            if unknown:
                raise ValueError(f"webhook {name}: {which} uses unknown placeholders {unknown}; known: {sorted(_SAMPLE_KEYS)}")

    def __repr__(self) -> str:
        return f"WebhookAction(name={self.name!r}, url={_redacted(self.url)!r}, dry_run={self.dry_run})"

    def request_for(self, n: Notification) -> tuple[str, dict[str, Any]] | None:
        """(action, body) this notification calls for, or None."""
        if n.event == "resolved":
            return ("undo", render_template(self.undo_template, template_values(n, "undo"))) if self.undo_template else None
        if _RANK.get(n.severity, 0) < _RANK[self.min_severity]:
            return None
        return "do", render_template(self.body_template, template_values(n, "do"))

    def send(self, notification: Notification) -> dict[str, Any] | None:
        n = notification
        req = self.request_for(n)
        if req is None:
            return {"skipped": f"{n.event} at {n.severity} needs no {self.name} call"}
        action, payload = req
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        timestamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp, IDEMPOTENCY_HEADER: n.key,
                   "User-Agent": "SurgeWatch-webhook/1"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body, n.key)
        what = f"webhook {self.name} {action} {_redacted(self.url)}"
        if self.dry_run:
            log.info("%s: dry run, not sent; body=%s idempotency_key=%s", what, body, n.key)
            return {"dry_run": True, "action": action, "body": payload, "idempotency_key": n.key}
        try:
            resp = self._session.post(self.url, data=body.encode(), headers=headers, timeout=self.timeout)
        except requests.RequestException as e:
            raise error_for_exception(what, e) from None
        if 200 <= resp.status_code < 300:
            return {"action": action, "status": resp.status_code, "idempotency_key": n.key}
        # 409 from an idempotent receiver means "already done with this key": success for us.
        if resp.status_code == 409:
            return {"action": action, "status": 409, "idempotency_key": n.key, "duplicate": True}
        raise error_for_status(what, resp.status_code, resp.headers, resp.text[:200] if resp.text else "")


_SAMPLE_KEYS = (
    "action", "key", "incident_id", "brand", "event", "severity", "previous_severity", "at", "observed", "expected",
    "observed_per_min", "expected_per_min", "ratio", "score", "forecast_peak_per_min", "forecast_seconds_to_peak", "site",
)
KNOWN_PLACEHOLDERS = _SAMPLE_KEYS

__all__ = ["WebhookAction", "sign", "verify_signature", "render_template", "template_values", "unknown_placeholders",
           "KNOWN_PLACEHOLDERS"]
