"""Messages to ops that are not incidents: planned-event reminders and source outages."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from surgewatch import clock
from surgewatch.notifier.escape import log_text
from surgewatch.pipeline.runtime import Runtime

SLACK_TEXT_LIMIT = 3000


@dataclass(frozen=True, slots=True)
class When:
    """A time inside an ops message (epoch seconds).  Each poster shows it its own way: Slack as
    ``<!date^…>`` (each reader's own zone), the console in the configured zone."""

    ts: float


Part = str | When


def plain(parts: tuple[Part, ...], tz: str) -> str:
    """The message as plain text, times in the configured zone (what the console prints and what
    the store records as said)."""
    return "".join(clock.stamp(p.ts, tz) if isinstance(p, When) else p for p in parts)


def slack_mrkdwn(parts: tuple[Part, ...], tz: str, limit: int = SLACK_TEXT_LIMIT) -> str:
    """The message for Slack: text escaped, each time a ``<!date^…>`` token added after escaping
    (escaping would make it literal), the whole within ``limit``."""
    from surgewatch.notifier.escape import slack_date, slack_text

    out: list[str] = []
    left = limit
    for p in parts:
        piece = slack_date(p.ts, tz) if isinstance(p, When) else slack_text(p, max(left, 1))
        if len(piece) > left:
            break  # a date token is never cut in half: it is left out with what follows
        out.append(piece)
        left -= len(piece)
    return "".join(out)


def ops_poster(rt: Runtime, now: float) -> Any:
    """``post(*parts)``: Slack's ops channel when it is configured (text escaped), else the console.
    A part is text or a :class:`When`."""
    from surgewatch.config import secret_from

    tz = rt.settings.timezone
    slack = rt.settings.channels.slack
    token = secret_from(slack.token, "SLACK_BOT_TOKEN") if slack is not None else None
    if slack is not None and token and slack.ops_channel:
        from surgewatch.registry import slack_web_client

        client = slack_web_client(rt.settings, token)

        def post(*parts: Part) -> None:
            client.chat_postMessage(channel=slack.ops_channel, text=slack_mrkdwn(parts, tz))

        return post

    def post_console(*parts: Part) -> None:
        print(f"{clock.stamp(now, tz)} OPS {log_text(plain(parts, tz), 500)}", flush=True)

    return post_console


def send_reminders(rt: Runtime, now: float | None = None) -> list[str]:
    """Remind ops before each planned event (once each)."""
    from surgewatch.incidents.calendar import send_due_reminders

    now = clock.now() if now is None else now
    events = rt.settings.planned_events()
    if not events:
        return []
    return send_due_reminders(rt.store, events, now, ops_poster(rt, now), rt.settings.timezone)
