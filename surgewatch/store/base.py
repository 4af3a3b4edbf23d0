"""The Store protocol.  Two implementations pass the same contract suite (tests/test_store_contract.py):
``RedisStore`` (cluster mode) and ``SqliteStore`` (the embedded default).

Time is always epoch seconds (float); buckets start at multiples of ``bucket_seconds``.
Incidents are JSON objects owned by :mod:`surgewatch.incidents.lifecycle`; the store only needs their
``id``, ``brand``, ``status`` ("open" | "resolved") and ``opened_at`` to index them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from surgewatch.collectors.base import Mention
from surgewatch.incidents.model import Incident


@dataclass(frozen=True, slots=True)
class IngestResult:
    new: int  # mentions counted for the first time
    duplicates: int  # seen before (same source, brand and id within the dedup TTL): not counted again


# What became of one (incident, transition, channel).  ``pending`` (waiting for its first or next
# attempt) and ``claimed`` (an attempt is sending right now) are the outbox; the others are final.
DELIVERY_STATUSES = ("pending", "claimed", "sent", "failed", "superseded", "suppressed")
FINAL_DELIVERY_STATUSES = frozenset({"sent", "failed", "superseded", "suppressed"})


@dataclass(slots=True)
class Delivery:
    """One record of the delivery log (Alertmanager's notification log, healthchecks' Notification
    row): what happened to one transition of one incident on one channel -- never what was meant to.

    ``reason``: why it was ``suppressed`` ("silence: ...", "route: ...", "planned event: ...") or
    ``superseded`` ("superseded by transition 2").  ``error``: the service's last answer in its own
    words (secrets scrubbed by the channel), kept on a later success too.  ``receipt``: what the
    service returned (Slack channel and ts, PagerDuty dedup_key, webhook response code)."""

    incident: str
    transition: int
    channel: str
    status: str = "pending"
    event: str | None = None  # the transition's event: opened | escalated | paged | repeat | resolved
    brand: str | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    receipt: dict[str, Any] | None = None
    error: str | None = None
    reason: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    sent_at: float | None = None
    claimed_at: float | None = None
    lease_until: float | None = None

    @property
    def key(self) -> str:
        from .keys import delivery_key

        return delivery_key(self.incident, self.transition, self.channel)

    @property
    def final(self) -> bool:
        return self.status in FINAL_DELIVERY_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Delivery":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@runtime_checkable
class Store(Protocol):
    bucket_seconds: int

    # -- mentions -------------------------------------------------------------------------------
    def ingest(self, mentions: Sequence[Mention], *, count: bool = True) -> IngestResult:
        """Dedup by (source, brand, id) -- a post naming two brands counts for each -- count each new
        mention into its (brand, source, bucket), keep it in the brand's capped list of recent
        mentions.  One batch is one round trip / one transaction.  ``count=False``: the posts are a
        sample of a source whose volume comes from ``set_volume`` -- dedup and keep them, count
        nothing.  Raises StoreError when the store cannot be reached."""

    def set_volume(self, brand: str, source: str, points: Sequence[tuple[float, int]]) -> None:
        """Counts reported by a source without posts (X recent counts): SET, not add, so a re-poll
        of the same buckets is idempotent.  Points falling in one bucket are summed; 0 removes it."""

    def counts(self, brand: str, start: float, end: float) -> dict[str, dict[float, int]]:
        """{source: {bucket_start: count}} for buckets with start <= bucket_start < end (non-zero only)."""

    def counts_many(self, windows: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, dict[float, int]]]:
        """``counts`` for many brands at once, {brand: (start, end)} -> {brand: counts}; brands with no
        counts in their window are left out.  A fixed number of round trips whatever the number of
        brands (an evaluate tick reads a thousand brands)."""

    def recent(self, brand: str, limit: int = 50) -> list[Mention]:
        """Newest first (by created_at)."""

    # -- cursors and small JSON state (detector state, source health, silences, ...) -----------
    def get_cursor(self, source: str, brand: str) -> dict[str, Any] | None: ...

    def set_cursor(self, source: str, brand: str, cursor: dict[str, Any]) -> None: ...

    def get_state(self, name: str) -> dict[str, Any] | None: ...

    def set_state(self, name: str, value: dict[str, Any]) -> None: ...

    def get_states(self, names: Sequence[str]) -> list[dict[str, Any] | None]:
        """``get_state`` of each name, in order, in one round trip."""

    def set_states(self, values: Mapping[str, dict[str, Any]]) -> None:
        """``set_state`` of each entry, in one round trip."""

    def list_state(self, prefix: str) -> dict[str, dict[str, Any]]:
        """All state entries whose name starts with ``prefix``."""

    # -- incidents ------------------------------------------------------------------------------
    def save_incident(self, incident: Incident) -> None:
        """Write unconditionally (imports, tests).  Every writer of a live incident uses
        ``replace_incident`` instead, through :mod:`surgewatch.incidents.updates`."""

    def replace_incident(self, incident: Incident, expected_version: int) -> bool:
        """Compare-and-swap: write ``incident`` with ``version`` = ``expected_version`` + 1 only if the
        stored version is ``expected_version`` (0 for an incident not stored yet, or stored without
        one).  False, and nothing written, when another writer got there first."""

    def get_incident(self, incident_id: str) -> Incident | None: ...

    def open_incident(self, brand: str) -> dict[str, Any] | None:
        """The brand's open incident, if any (at most one per brand)."""

    def open_incidents(self, brands: Sequence[str]) -> dict[str, Incident]:
        """{brand: open incident} for those of ``brands`` that have one."""

    def list_incidents(self, brand: str | None = None, since: float | None = None) -> list[Incident]:
        """Newest first by opened_at; ``since`` keeps those with opened_at >= since."""

    # -- exactly-once notifications ---------------------------------------------------------------
    def claim(self, key: str, lease_seconds: float, now: float) -> bool:
        """Take the right to send ``key``.  True for the first caller; False while another holds an
        unexpired lease or once it is marked sent.  An expired lease can be taken over."""

    def claim_many(self, keys: Sequence[str], lease_seconds: float, now: float) -> list[bool]:
        """``claim`` of each key (one True/False per key, in order), in one round trip."""

    def mark_sent(self, key: str, receipt: dict[str, Any] | None) -> None: ...

    def release(self, key: str) -> None:
        """Give a claim back after a failure that was certainly not a delivery (so a retry may send)."""

    def release_many(self, keys: Sequence[str]) -> None:
        """``release`` of each key, in one round trip."""

    def delivery(self, key: str) -> dict[str, Any] | None:
        """{"status": "claimed"|"sent"|..., "receipt": ..., "claimed_at": ..., "lease_until": ...} or None."""

    # -- the delivery log -------------------------------------------------------------------------
    # Delivery records share the claims above: ``claim`` takes a ``pending`` record (or none, or a
    # claim whose lease ran out) and refuses every final status, so one claim -> send -> record path
    # serves every channel.
    def add_pending(self, deliveries: Sequence[Delivery]) -> None:
        """Record each delivery unless a record of its key exists already (a re-listed outbox entry
        must not reset a record that has moved on).  One round trip."""

    def record_delivery(self, delivery: Delivery) -> None:
        """Write the whole record (status, attempts, receipt, error, times), whatever was there."""

    def get_delivery(self, key: str) -> Delivery | None:
        """The record of ``key`` (its status and lease as the claim sees them), or None."""

    def list_deliveries(self, incident: str | None = None) -> list[Delivery]:
        """Every delivery record (of one incident), oldest first by ``created_at``."""

    # -- heartbeats (watching the watcher) ------------------------------------------------------
    def heartbeat(self, name: str, at: float) -> None:
        """Record that ``name`` (``beat``, ``worker:<queue>:<host>``, ``evaluate:<entry>``) was alive
        at ``at``.  A heartbeat never moves back: two writers racing keep the later time."""

    def heartbeats(self, prefix: str = "") -> dict[str, float]:
        """{name: last time} for every heartbeat whose name starts with ``prefix``."""

    def ping(self) -> bool:
        """True when the store answers."""

    def close(self) -> None: ...
