"""Numbers in words, shared by every channel so a page, a Slack message and a log line agree.

Detector numbers are per bucket; people think per minute, so rates are shown per minute.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from surgewatch import clock
from surgewatch.notifier.base import Notification
from surgewatch.notifier.escape import log_text, slack_date


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
    """For machines (webhook payloads, PagerDuty's ``timestamp``): ISO 8601 UTC, whatever the zone."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(n: Notification) -> str:
    """For people: the notification's time in the configured zone, offset shown
    (``2026-07-01T10:05:00+01:00``; ``...Z`` in UTC).  ``n.at`` carries that zone."""
    return clock.stamp(n.at)


def slack_when(n: Notification) -> str:
    """For Slack: ``<!date^…>``, shown in each reader's own zone, with :func:`when` as the fallback."""
    return slack_date(n.at)


def rate_phrase(n: Notification) -> str:
    """``48 mentions/min vs 3.1 expected (x15.5)``"""
    observed = per_minute(n.observed, n.bucket_seconds)
    expected = per_minute(n.expected, n.bucket_seconds)
    return f"{number(observed)} mentions/min vs {number(expected)} expected ({ratio(n)})"


def forecast_peak_per_minute(n: Notification) -> float | None:
    """The forecast peak in mentions/min, never below the rate already observed (a forecast under
    what is happening reads as "it is over" when it is not)."""
    if n.forecast_peak_rate is None:
        return None
    return max(n.forecast_peak_rate, n.observed) * 60.0 / n.bucket_seconds


def forecast_phrase(n: Notification) -> str | None:
    """``peak ~120/min in ~20 min``, or None without a forecast."""
    peak = forecast_peak_per_minute(n)
    if peak is None:
        return None
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


# Chat services turn these into mass mentions (Discord, Teams, Mattermost): outside text must not.
_MASS_MENTION = re.compile(r"@(?=(everyone|here|channel|all)\b)", re.IGNORECASE)


def plain_text(s: object, limit: int = 300) -> str:
    """Outside text for a plain-text alert: one line, no control or bidi characters, no @everyone."""
    return _MASS_MENTION.sub("@\u2060", log_text(s, limit))  # a word joiner breaks the mention


def plain_message(n: Notification) -> tuple[str, str]:
    """(title, body) of a plain-text alert (Apprise services, e-mail): the console line's facts, one
    per line, every outside string through :func:`plain_text`."""
    severity = n.severity.upper() if n.event != "resolved" else "RESOLVED"
    title = plain_text(f"[{severity}] {n.brand} {event_phrase(n)}", 200)
    lines = [plain_text(summary(n), 500)]
    if n.event != "resolved":
        outlook = n.traffic_outlook
        if outlook is not None and outlook.calibrated:
            lines.append(plain_text(f"Site traffic: {outlook.phrase()}", 300))
        if n.planned_event:
            lines.append(plain_text(n.planned_event, 200))
        for m in n.top_mentions[:3]:
            lines.append(plain_text(f'{m.source} @{m.author or "?"}: "{m.text}" {m.url}', 400))
        if n.runbook_url:
            lines.append(plain_text(f"Runbook: {n.runbook_url}", 300))
    if n.acknowledged_by:
        lines.append(plain_text(f"Acknowledged by {n.acknowledged_by}", 200))
    lines.append(f"Incident {plain_text(n.incident_id, 100)} at {when(n)}")
    return title, "\n".join(lines)

