"""Numbers in words, shared by every channel so a page, a Slack message and a log line agree.

Detector numbers are per bucket; people think per minute, so rates are shown per minute.
"""
from __future__ import annotations

from datetime import datetime, timezone

from surgewatch.notifier.base import Notification


def per_minute(count_per_bucket: float | None, bucket_seconds: int) -> float | None:
    if count_per_bucket is None:
        return None
    return count_per_bucket * 60.0 / bucket_seconds if bucket_seconds > 0 else float(count_per_bucket)


def number(x: float | None) -> str:
    """48, 3.1, 0.25, 1.2k: short, and never "48.000001"."""
    if x is None:
        return "?"
    if x != x or x in (float("inf"), float("-inf")):
        return "∞"
    ax = abs(x)
    if ax >= 10_000:
        return f"{x / 1000:.0f}k"
    if ax >= 1_000:
        return f"{x / 1000:.1f}k"
    if ax >= 10:
        return f"{x:.0f}"
    if ax >= 1:
        return f"{x:.1f}".rstrip("0").rstrip(".")
    return f"{x:.2f}".rstrip("0").rstrip(".") or "0"


def ratio(n: Notification) -> str:
    r = n.ratio
    if r == float("inf"):
        return "x∞ (no baseline yet)"
    return f"x{r:.1f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = max(0, int(round(seconds)))
    if s < 90:
        return f"{s} s"
    m = round(s / 60)
    if m < 90:
        return f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_phrase(n: Notification) -> str:
    """``48 mentions/min vs 3.1 expected (x15.5)``"""
    observed = per_minute(n.observed, n.bucket_seconds)
    expected = per_minute(n.expected, n.bucket_seconds)
    return f"{number(observed)} mentions/min vs {number(expected)} expected ({ratio(n)})"


def forecast_phrase(n: Notification) -> str | None:
    """``peak ~120/min in ~20 min``, or None without a forecast."""
    if n.forecast_peak_rate is None:
        return None
    peak = per_minute(n.forecast_peak_rate, n.bucket_seconds)
    if n.forecast_seconds_to_peak is None:
        return f"peak ~{number(peak)}/min"
    return f"peak ~{number(peak)}/min in ~{duration(n.forecast_seconds_to_peak)}"


def event_phrase(n: Notification) -> str:
    if n.event == "escalated":
        return f"escalated {n.previous_severity} → {n.severity}"
    if n.event == "resolved":
        return "resolved"
    return "opened"


def summary(n: Notification) -> str:
    """One sentence for a pager summary or a notification preview.  ``n.brand`` comes from config,
    but the caller still escapes for its medium."""
    parts = [f"{n.brand} {event_phrase(n)}: {rate_phrase(n)}"]
    fc = forecast_phrase(n)
    if fc and n.event != "resolved":
        parts.append(fc)
    return "; ".join(parts)
