"""Messages to ops that are not incidents: planned-event reminders and source outages."""
from __future__ import annotations

from typing import Any

from surgewatch import clock
from surgewatch.notifier.escape import log_text
from surgewatch.pipeline.runtime import Runtime


def ops_poster(rt: Runtime, now: float) -> Any:
    """``post(text)``: Slack's ops channel when it is configured (text escaped), else the console."""
    from surgewatch.notifier.escape import slack_text
    from surgewatch.config import secret_from

    slack = rt.settings.channels.slack
    token = secret_from(slack.token, "SLACK_BOT_TOKEN") if slack is not None else None
    if slack is not None and token and slack.ops_channel:
        from surgewatch.registry import slack_web_client

        client = slack_web_client(rt.settings, token)

        def post(text: str) -> None:
            client.chat_postMessage(channel=slack.ops_channel, text=slack_text(text, 3000))

        return post

    def post_console(text: str) -> None:
        print(f"{clock.iso(now)} OPS {log_text(text, 500)}", flush=True)

    return post_console


def send_reminders(rt: Runtime, now: float | None = None) -> list[str]:
    """Remind ops before each planned event (once each)."""
    from surgewatch.incidents.calendar import send_due_reminders

    now = clock.now() if now is None else now
    events = rt.settings.planned_events()
    if not events:
        return []
    return send_due_reminders(rt.store, events, now, ops_poster(rt, now), rt.settings.timezone)
