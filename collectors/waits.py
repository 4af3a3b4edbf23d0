"""How long a service asked us to wait: one parser for ``Retry-After`` and the vendors' reset headers.

Every collector (and the notifiers) reads its waits here, so one rule holds everywhere: a wait is
never negative, never NaN, and never longer than ``cap`` (default :data:`MAX_WAIT`, an hour).  A
service that answers ``Retry-After: 999999999`` or a reset ten years ahead is misbehaving, and
obeying it would silence a source until 2036 without anyone being told; capped, the source is
asked again within the hour and, if it keeps refusing, its outage alert goes out.

* ``Retry-After``: delay-seconds or an HTTP-date (RFC 9110 10.2.3).
* reset headers (named by the caller): epoch seconds (X ``x-rate-limit-reset``, Bluesky
  ``ratelimit-reset``), seconds until the reset (Reddit ``x-ratelimit-reset``) or an ISO 8601
  time (Mastodon ``x-ratelimit-reset``).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable

MAX_WAIT = 3600.0  # seconds: the longest wait a source may impose on us, unless configured
MIN_WAIT = 1.0  # a "come back now" after a 429 still deserves a second
# An epoch reset (X, Bluesky) is far larger than any seconds-until-reset (Reddit's is < 600).
_EPOCH_FLOOR = 1e9


def clamp_wait(seconds: float | None, cap: float = MAX_WAIT) -> float | None:
    """``seconds`` bounded to ``[0, cap]``; None stays None, NaN becomes None."""
    if seconds is None or not math.isfinite(seconds):
        return cap if seconds is not None and seconds == math.inf else None
    return min(max(0.0, seconds), cap)


def _header_text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def parse_retry_after(value: Any, now: float, *, cap: float = MAX_WAIT) -> float | None:
    """``Retry-After`` as seconds from ``now`` (epoch), capped; None when absent or unreadable."""
    text = _header_text(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return clamp_wait(number, cap)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return clamp_wait(when.timestamp() - now, cap)


def parse_reset(value: Any, now: float, *, cap: float = MAX_WAIT) -> float | None:
    """A rate-limit reset header as seconds from ``now``, capped: epoch seconds, seconds until the
    reset, or an ISO 8601 time.  None when absent or unreadable."""
    text = _header_text(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return clamp_wait(when.timestamp() - now, cap)
    if not math.isfinite(number):
        return None
    return clamp_wait(number - now if number > _EPOCH_FLOOR else number, cap)


def header(headers: Any, name: str) -> Any:
    """A header by name, case-insensitively, from a requests/urllib3 mapping or a plain dict."""
    if not headers:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    if value is not None:
        return value
    for key, value in getattr(headers, "items", lambda: [])():
        if str(key).lower() == name.lower():
            return value
    return None


def wait_from_headers(headers: Any, now: Callable[[], float] | float, *reset_names: str,
                      cap: float = MAX_WAIT, floor: float = MIN_WAIT) -> float | None:
    """Seconds to wait from ``Retry-After`` or else the first readable of ``reset_names``; at least
    ``floor`` and at most ``cap``.  None when the answer said nothing usable."""
    at = now() if callable(now) else float(now)
    wait = parse_retry_after(header(headers, "retry-after"), at, cap=cap)
    for name in reset_names:
        if wait is not None:
            break
        wait = parse_reset(header(headers, name), at, cap=cap)
    return None if wait is None else min(cap, max(floor, wait))
