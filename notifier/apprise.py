"""The Apprise channel: alerts to the 100+ services Apprise speaks (Microsoft Teams, Discord,
e-mail, Opsgenie, Telegram, Mattermost, ...), one URL per service
(https://github.com/caronc/apprise/wiki).

Apprise cannot tell a permanent failure from a transient one, so every failure is transient: the
delivery is retried with backoff and ends ``failed`` when the retries run out.  When some services
took the message and others did not, the error carries a partial receipt naming the ones that did,
and the retry sends to the others only, so nobody gets the alert twice."""
from __future__ import annotations

from typing import Any

import apprise

from surgewatch.notifier import render
from surgewatch.notifier.base import ChannelError, Notification
from surgewatch.notifier.escape import log_text

NOTIFY_TYPES = {"watch": apprise.NotifyType.INFO, "warning": apprise.NotifyType.WARNING,
                "critical": apprise.NotifyType.FAILURE}
def scheme(url: str) -> str:
    """The part of an Apprise URL that is safe to show (the rest may hold a token)."""
    return url.split("://", 1)[0] if "://" in url else "?"


class AppriseChannel:
    name = "apprise"

    def __init__(self, urls: list[str], *, timeout: float = 10.0):
        if not urls:
            raise ValueError("apprise: no URLs")
        self._urls = list(urls)
        self._timeout = timeout
        self._services: list[apprise.Apprise] = []
        for i, url in enumerate(self._urls):
            one = apprise.Apprise()
            if not one.add(url):
                raise ValueError(f"apprise: urls[{i}] ({scheme(url)}://...) is not a URL Apprise supports")
            self._services.append(one)

    def message(self, n: Notification) -> tuple[str, str]:
        return render.plain_message(n)

    def send(self, n: Notification) -> dict[str, Any] | None:
        title, body = self.message(n)
        notify_type = apprise.NotifyType.SUCCESS if n.event == "resolved" else NOTIFY_TYPES.get(n.severity, apprise.NotifyType.INFO)
        earlier = n.previous_receipt or {}
        done = set(earlier.get("sent_to", ())) if earlier.get("key") == n.key else set()
        failures: list[str] = []
        for i, service in enumerate(self._services):
            if i in done:
                continue  # a retry after a partial failure: this one has it already
            result = service.notify(body=body, title=title, notify_type=notify_type,
                                    body_format=apprise.NotifyFormat.TEXT, timeout=self._timeout)
            if result:
                done.add(i)
            else:
                failures.append(f"urls[{i}] ({scheme(self._urls[i])}): {self._reason(result)}")
        if failures:
            raise _PartialFailure(f"apprise: {len(failures)} of {len(self._services)} services failed: "
                                  + "; ".join(failures), {"key": n.key, "sent_to": sorted(done)})
        return {"services": len(self._services), "sent_to": sorted(done), "key": n.key}

    def _reason(self, result: Any) -> str:
        """The service's own words from Apprise's log, with the URLs (and their tokens) left out."""
        words = []
        for entry in result.logs():
            text = str(getattr(entry, "message", entry))
            if any(u in text for u in self._urls):
                continue
            words.append(log_text(text, 200))
        return words[-1] if words else "no answer"

    def __repr__(self) -> str:
        return f"AppriseChannel({len(self._urls)} URL(s): {', '.join(scheme(u) for u in self._urls)})"


class _PartialFailure(ChannelError):
    """Some services failed: retry, and send only to the others (``partial_receipt``)."""

    def __init__(self, message: str, partial_receipt: dict[str, Any]):
        super().__init__(message, permanent=False)
        self.partial_receipt = partial_receipt
