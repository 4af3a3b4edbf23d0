"""The Channel protocol: one module per channel, one small contract.

``Channel.send(notification)`` either returns a receipt (JSON-serialisable: what a later update or
thread reply needs, such as Slack's ``channel`` and ``ts``) or raises :class:`ChannelError` saying
whether a retry can help -- never a bare bool (the caller could not tell "retry" from "give up").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from collectors.base import Mention


@dataclass(frozen=True, slots=True)
class Notification:
    key: str  # "<incident_id>:<transition_no>:<channel>" -- the exactly-once claim key
    incident_id: str
    brand: str
    event: str  # "opened" | "escalated" | "resolved"
    severity: str  # watch | warning | critical (the incident's severity after the transition)
    previous_severity: str
    at: datetime
    observed: float  # mentions in the last bucket
    expected: float  # baseline mentions per bucket
    score: float
    bucket_seconds: int
    forecast_peak_rate: float | None = None
    forecast_seconds_to_peak: float | None = None
    top_mentions: tuple[Mention, ...] = ()
    sources: dict[str, int] = field(default_factory=dict)  # mentions per source, recent window
    site: str | None = None
    site_pages: tuple[tuple[str, int], ...] = ()  # (url on the brand's site, posts linking to it)
    runbook_url: str | None = None
    actions: tuple[str, ...] = ()  # suggested actions for ops, from the brand's config
    planned_event: str | None = None  # "planned: <name>, expected" when the surge is a calendar event
    approval_controls: tuple[str, ...] = ()  # traffic controls a human may run from a button
    acknowledged_by: str | None = None
    takeover: bool = False  # an earlier attempt claimed this and died: check before sending again
    previous_receipt: dict[str, Any] | None = None  # this channel's receipt for the incident's first message

    @property
    def ratio(self) -> float:
        return self.observed / self.expected if self.expected > 0 else float("inf")


class ChannelError(Exception):
    """Sending failed.  ``permanent`` (bad token, channel gone): do not retry, tell ops once.
    Otherwise retry with backoff, waiting at least ``retry_after`` seconds when given."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


@runtime_checkable
class Channel(Protocol):
    name: str

    def send(self, notification: Notification) -> dict[str, Any] | None: ...
