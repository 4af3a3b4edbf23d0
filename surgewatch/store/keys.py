"""Every store key family in one place, so a writer and its readers can never spell one differently.

Delivery keys (``<incident>:<transition no>:<channel>``) name one record of the delivery log; the
incident id is a slug and a timestamp (no ``:``), so the channel -- which may hold one, as in
``webhook:<name>`` -- is everything after the second colon.
"""
from __future__ import annotations


def delivery_key(incident_id: str, no: int, channel: str) -> str:
    return f"{incident_id}:{no}:{channel}"


def parse_delivery_key(key: str) -> tuple[str, int, str] | None:
    """``(incident, transition no, channel)``, or None for a key that is not a delivery's."""
    parts = key.split(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def receipt_key(incident_id: str, channel: str) -> str:
    """The channel's latest receipt for an incident (what a later update or thread reply needs)."""
    return f"receipt:{incident_id}:{channel}"


def channel_failed_key(incident_id: str, channel: str) -> str:
    """Set when a delivery of the incident on the channel ended ``failed`` (the escalation policy
    pages when the chat channel failed)."""
    return f"channel_failed:{incident_id}:{channel}"


def silence_key(brand: str) -> str:
    return f"silence:{brand}"


def verdict_key(brand: str) -> str:
    """The brand's latest verdict."""
    return f"verdict:{brand}"


def scored_key(brand: str) -> str:
    return f"scored:{brand}"


def detector_key(brand: str) -> str:
    return f"detector:{brand}"


def evaluate_lock_key(brand: str) -> str:
    return f"lock:evaluate:{brand}"


CONFIG_RELOAD_PREFIX = "config:reload:"


def config_reload_key(process: str) -> str:
    """A process's last look at a changed config file (``<role>@<host>``: accepted or refused, and
    why), written by :mod:`surgewatch.worker.reload`, read by ``status``."""
    return f"{CONFIG_RELOAD_PREFIX}{process}"
