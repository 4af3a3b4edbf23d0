"""A local stand-in for PagerDuty's Events API v2, for tests and ``surgewatch demo``.

``POST /v2/enqueue`` with a JSON event; answers like the real API
(https://developer.pagerduty.com/docs/events-api-v2/trigger-events/): 202
``{"status": "success", "message": "Event processed", "dedup_key": ...}``; 400
``{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`` when a required
field is missing or wrong; 429 / 5xx when scripted with :meth:`FakePagerDuty.fail_next`.  It keeps
the alert state per ``dedup_key`` (triggered -> acknowledged -> resolved) the way PagerDuty does.

    with FakePagerDuty() as pd:
        PagerDutyChannel("k" * 32, events_url=pd.events_url).send(notification)
        assert pd.alerts[incident_id] == "triggered"
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from surgewatch.demo.background import BackgroundHTTPServer
from tests.fakes.http_server import QuietServer

SEVERITIES = ("critical", "error", "warning", "info")
ACTIONS = ("trigger", "acknowledge", "resolve")




@dataclass(frozen=True)
class PagerDutyEvent:
    """One request the fake received (accepted or not)."""

    body: Any
    headers: dict[str, str]
    status: int
    response: dict[str, Any]

    @property
    def action(self) -> str | None:
        return self.body.get("event_action") if isinstance(self.body, dict) else None

    @property
    def dedup_key(self) -> str | None:
        return self.response.get("dedup_key") or (self.body.get("dedup_key") if isinstance(self.body, dict) else None)


@dataclass
class _Failure:
    status: int
    retry_after: float | None
    delay: float
    remaining: int
    body: Any = None  # the JSON answer, when scripted (else PagerDuty's documented one for the status)


def validate_event(event: Any, routing_keys: set[str] | None = None) -> list[str]:
    """The checks the real endpoint makes before it accepts an event."""
    if not isinstance(event, dict):
        return ["Event object must be a JSON object"]
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("'routing_key' is missing or blank")
    elif routing_keys is not None and key not in routing_keys:
        errors.append("Invalid routing key")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is missing or invalid (expected trigger, acknowledge or resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary:
                errors.append("'payload.summary' is missing or blank")
            elif len(summary) > 1024:
                errors.append("'payload.summary' must be at most 1024 characters")
            if not isinstance(payload.get("source"), str) or not payload.get("source"):
                errors.append("'payload.source' is missing or blank")
            if payload.get("severity") not in SEVERITIES:
                errors.append("'payload.severity' must be one of critical, error, warning, info")
            cd = payload.get("custom_details")
            if cd is not None and not isinstance(cd, (dict, str, list, int, float, bool)):
                errors.append("'payload.custom_details' is invalid")
        for link in event.get("links") or []:
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                errors.append("'links' entries need an 'href'")
    return errors


class FakePagerDuty(BackgroundHTTPServer):
    """``routing_keys``: the keys that exist (others get 400 "Invalid routing key"); ``None``
    accepts any non-blank key."""

    def __init__(self, routing_keys: list[str] | None = None, *, host: str = "127.0.0.1"):
        super().__init__(host)
        self.routing_keys = set(routing_keys) if routing_keys is not None else None
        self._lock = threading.RLock()
        self._failures: list[_Failure] = []
        self.events: list[PagerDutyEvent] = []
        self.alerts: dict[str, str] = {}  # dedup_key -> triggered | acknowledged | resolved

    def handler_class(self) -> type:
        return type("Handler", (_Handler,), {"pd": self})

    def server_class(self) -> type:
        return QuietServer

    @property
    def events_url(self) -> str:
        return f"http://{self._host}:{self.port}/v2/enqueue"

    def fail_next(self, status: int = 429, *, retry_after: float | None = None, delay: float = 0.0, times: int = 1,
                  body: Any = None) -> None:
        """Answer the next ``times`` events with ``status`` (429 or 5xx, or any status with ``body``, the
        JSON to answer, e.g. a wrong-shaped 400 ``{"errors": 5}``); ``delay`` sleeps first."""
        with self._lock:
            self._failures.append(_Failure(status, retry_after, delay, times, body))

    def accepted(self, action: str | None = None) -> list[PagerDutyEvent]:
        with self._lock:
            return [e for e in self.events if e.status == 202 and (action is None or e.action == action)]

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            if not self._failures:
                return None
            f = self._failures[0]
            f.remaining -= 1
            if f.remaining <= 0:
                self._failures.pop(0)
            return f

    def handle(self, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        failure = self._take_failure()
        if failure is not None:
            if failure.delay:
                time.sleep(failure.delay)
            if failure.status != 202:
                answer = ({"status": "throttle event", "message": "Requests for this service are arriving too quickly.  Please retry later."}
                          if failure.status == 429 else {"status": "error", "message": "Internal error"})
                if failure.body is not None:
                    answer = failure.body
                extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                with self._lock:
                    self.events.append(PagerDutyEvent(body, headers, failure.status, answer))
                return failure.status, answer, extra
        errors = validate_event(body, self.routing_keys)
        if errors:
            answer = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
            with self._lock:
                self.events.append(PagerDutyEvent(body, headers, 400, answer))
            return 400, answer, {}
        with self._lock:
            key = body.get("dedup_key") or uuid.uuid4().hex
            action = body["event_action"]
            state = self.alerts.get(key)
            if action == "trigger":
                # A trigger on a resolved key opens a new alert; on an open one it only updates it.
                self.alerts[key] = "triggered" if state in (None, "resolved", "triggered") else state
            elif state is not None and state != "resolved":
                # acknowledge/resolve of an unknown key is accepted and ignored, like the real API.
                self.alerts[key] = "acknowledged" if action == "acknowledge" else "resolved"
            answer = {"status": "success", "message": "Event processed", "dedup_key": key}
            self.events.append(PagerDutyEvent(body, headers, 202, answer))
        return 202, answer, {}


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for each.
    disable_nagle_algorithm = True
    pd: FakePagerDuty
    server_version = "FakePagerDuty/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, answer: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/v2/enqueue":
            self._reply(404, {"status": "error", "message": "Not found"})
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            answer = {"status": "invalid event", "message": "Event object is invalid", "errors": ["Malformed JSON"]}
            with self.pd._lock:
                self.pd.events.append(PagerDutyEvent(raw, dict(self.headers.items()), 400, answer))
            self._reply(400, answer)
            return
        status, answer, extra = self.pd.handle(body, dict(self.headers.items()))
        self._reply(status, answer, extra)
