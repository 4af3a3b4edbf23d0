"""Sorting plain-HTTP failures (PagerDuty, webhooks) into permanent and transient ChannelErrors.

One rule for every channel that speaks HTTP through ``requests``: 408/425/429/5xx and network
trouble are worth a retry (honouring ``Retry-After``); any other 4xx means our request or our
configuration is wrong, and sending it again cannot help.
"""
from __future__ import annotations

from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Mapping

import requests

from surgewatch.notifier.base import ChannelError
from surgewatch.notifier.escape import log_text

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not headers:
        return None
    value = None
    for k, v in headers.items():
        if k.lower() == "retry-after":
            value = v
            break
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def error_for_status(what: str, status: int, headers: Mapping[str, str] | None, detail: str = "",
                     *, default_retry_after: float | None = None) -> ChannelError:
    detail = log_text(detail, 200)
    msg = f"{what}: HTTP {status}" + (f" {detail}" if detail else "")
    if status in RETRYABLE_STATUSES or status >= 500:
        ra = retry_after_seconds(headers)
        if ra is None and status == 429:
            ra = default_retry_after
        return ChannelError(msg, retry_after=ra)
    return ChannelError(msg, permanent=True)


def error_for_exception(what: str, exc: requests.RequestException) -> ChannelError:
    """Network-level failures.  Messages name the failure kind, not the request (whose body may
    hold a routing key or whose URL may hold a token)."""
    if isinstance(exc, requests.Timeout):
        return ChannelError(f"{what}: timed out")
    if isinstance(exc, requests.exceptions.SSLError):
        return ChannelError(f"{what}: TLS error", permanent=True)
    if isinstance(exc, requests.ConnectionError):
        return ChannelError(f"{what}: cannot connect")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)):
        return ChannelError(f"{what}: invalid URL", permanent=True)
    return ChannelError(f"{what}: request failed ({type(exc).__name__})")
