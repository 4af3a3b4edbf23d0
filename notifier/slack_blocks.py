"""Block Kit messages for the two Slack audiences.  Pure functions: a Notification in, blocks out.

Marketing asks "what is being said, where, by whom"; ops asks "how much traffic, when, what do I
do".  Both read the same incident, so the numbers come from :mod:`notifier.render`.

Every string that came from a post (text, author, URL, site page) goes through
:func:`notifier.escape.slack_text` / :func:`slack_link`; config strings (brand, runbook) too,
because an escaped clean string is unchanged and one rule is easier to check than two.
Limits: https://api.slack.com/reference/block-kit/blocks (50 blocks, section text 3000,
fields 10 x 2000, header 150, button text 75).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from surgewatch.collectors.base import Mention
from surgewatch.notifier import render
from surgewatch.notifier.base import Notification
from surgewatch.notifier.escape import FIELD_TEXT_LIMIT, HEADER_TEXT_LIMIT, SECTION_TEXT_LIMIT, slack_link, slack_text

Block = dict[str, Any]

MAX_TOP_POSTS = 5
MAX_SITE_PAGES = 8
POST_EXCERPT_CHARS = 400
SEVERITY_EMOJI = {"watch": ":eyes:", "warning": ":warning:", "critical": ":rotating_light:", "resolved": ":white_check_mark:"}

# action_id of the buttons on the ops message; the Socket Mode handler dispatches on these and
# reads the incident id from ``value``.
ACTION_ACK = "surgewatch_ack"
ACTION_SILENCE_1H = "surgewatch_silence_1h"
ACTION_FALSE_ALARM = "surgewatch_false_alarm"
ACTION_RUN = "surgewatch_run_action"  # value "<incident_id>|<traffic control name>"


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text[:SECTION_TEXT_LIMIT])}


def _header(text: str) -> Block:
    # Header text is plain_text: no mrkdwn parsing, but mentions are still made inert by slack_text.
    return {"type": "header", "text": {"type": "plain_text", "text": slack_text(text, HEADER_TEXT_LIMIT, mrkdwn=False), "emoji": True}}


def _context(*parts: str) -> Block:
    return {"type": "context", "elements": [_mrkdwn(p) for p in parts if p][:10]}


def _fields(pairs: list[tuple[str, str]]) -> Block:
    return {"type": "section", "fields": [_mrkdwn(f"*{k}*\n{v}"[:FIELD_TEXT_LIMIT]) for k, v in pairs[:10]]}


def _state(n: Notification) -> str:
    return "resolved" if n.event == "resolved" else n.severity


def _title(n: Notification, audience: str) -> str:
    state = _state(n)
    emoji = SEVERITY_EMOJI.get(state, "")
    if state == "resolved":
        return f"{emoji} {n.brand}: mention surge resolved"
    what = "mentions surging" if audience == "marketing" else "traffic surge expected"
    return f"{emoji} {n.brand}: {what} ({state.upper()})"


def fallback_text(n: Notification) -> str:
    """The ``text`` Slack shows in notifications and screen readers when blocks are present."""
    return slack_text(f"{_state(n).upper()} {render.summary(n)}", 3000)


def _post_block(m: Mention) -> Block:
    who = f"{m.author or 'someone'} on {m.source}"
    head = slack_link(m.url, who) if m.url else slack_text(who)
    stats = [f"reach {render.number(m.reach)}"] if m.reach is not None else []
    if m.likes or m.reposts or m.replies:
        stats.append(f"{m.likes} likes · {m.reposts} reposts · {m.replies} replies")
    elif m.score:
        stats.append(f"score {m.score}")
    # Newlines collapsed so a post cannot start its own block quote or list inside ours.
    excerpt = slack_text(" ".join(m.text.split()), POST_EXCERPT_CHARS)
    line = f"*{head}*" + (f"  ({slack_text(' · '.join(stats), 200)})" if stats else "")
    return _section(f"{line}\n>{excerpt}" if excerpt else line)


def _sources_line(n: Notification) -> str | None:
    if not n.sources:
        return None
    parts = sorted(n.sources.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(v for _, v in parts) or 1
    return " · ".join(f"{slack_text(k, 50)} {v} ({100 * v / total:.0f}%)" for k, v in parts[:10])


def marketing_blocks(n: Notification) -> list[Block]:
    blocks: list[Block] = [_header(_title(n, "marketing"))]
    if n.planned_event:
        blocks.append(_section(f":calendar: *{slack_text(n.planned_event, 300)}*"))
    blocks.append(_section(f"*{slack_text(render.rate_phrase(n))}*"))
    short = n.traffic_outlook.short_phrase() if n.traffic_outlook is not None and n.event != "resolved" else None
    if short:
        blocks.append(_section(f"Expected: {slack_text(short)}"))
    sources = _sources_line(n)
    if sources:
        blocks.append(_section(f"*Where:* {sources}"))
    if n.top_mentions and n.event != "resolved":
        blocks.append({"type": "divider"})
        blocks.append(_section("*What is being said* (top posts)"))
        blocks.extend(_post_block(m) for m in n.top_mentions[:MAX_TOP_POSTS])
    blocks.append(_context(_footer(n)))
    return blocks


def _footer(n: Notification) -> str:
    """``SurgeWatch · incident `inc-1` · <!date^…>``: the time in each reader's own zone."""
    return f"SurgeWatch · incident `{slack_text(n.incident_id, 100, mrkdwn=False)}` · {render.slack_when(n)}"


def _page_label(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def ops_blocks(n: Notification, *, buttons: bool = True, actions: tuple[str, ...] = ()) -> list[Block]:
    blocks: list[Block] = [_header(_title(n, "ops"))]
    if n.planned_event:
        blocks.append(_section(f":calendar: *{slack_text(n.planned_event, 300)}*"))
    # What ops need first: how much traffic, and when (brands with a traffic history).
    if n.traffic_outlook is not None and n.event != "resolved":
        blocks.extend(_traffic_blocks(n))
    fields = [
        ("Observed", slack_text(f"{render.number(render.per_minute(n.observed, n.bucket_seconds))} mentions/min ({render.ratio(n)})")),
        ("Baseline", slack_text(f"{render.number(render.per_minute(n.expected, n.bucket_seconds))} mentions/min")),
    ]
    if n.forecast_peak_rate is not None and n.event != "resolved":
        fields.append(("Forecast peak", slack_text(f"~{render.number(render.forecast_peak_per_minute(n))} mentions/min")))
        fields.append(("Time to peak", slack_text(f"~{render.duration(n.forecast_seconds_to_peak)}")))
    fields.append(("Severity", slack_text(f"{n.severity}" + (f" (was {n.previous_severity})" if n.event == "escalated" else ""))))
    if n.site:
        fields.append(("Site", slack_link(n.site, n.site)))
    blocks.append(_fields(fields))
    if n.site_pages and n.event != "resolved":
        lines = [f"• {slack_link(url, _page_label(url), 200)} — {count} posts" for url, count in n.site_pages[:MAX_SITE_PAGES]]
        blocks.append(_section("*Pages the posts link to* (warm these first)\n" + "\n".join(lines)))
    if actions and n.event != "resolved":
        blocks.append(_section("*Suggested actions*\n" + "\n".join(f"• {slack_text(a, 300)}" for a in actions[:10])))
    if n.runbook_url:
        blocks.append(_section(f":book: Runbook: {slack_link(n.runbook_url, n.runbook_url)}"))
    if n.acknowledged_by:
        blocks.append(_context(f":white_check_mark: Acknowledged by {slack_text(n.acknowledged_by, 100)}"))
    if buttons and n.event != "resolved":
        elements = [] if n.acknowledged_by else [_button("Acknowledge", ACTION_ACK, n.incident_id, style="primary")]
        elements += [
            _button("Silence 1 h", ACTION_SILENCE_1H, n.incident_id, confirm=_confirm(
                "Silence for 1 hour?", f"Mutes Slack and PagerDuty alerts for {n.brand} for an hour. "
                "Incidents are still recorded.", "Silence")),
            _button("False alarm", ACTION_FALSE_ALARM, n.incident_id, style="danger", confirm=_confirm(
                "Mark as a false alarm?", f"Records this {n.brand} incident as a false alarm, for the detector's "
                "review and the weekly digest.", "False alarm")),
        ]
        # Traffic controls that need a human's approval: one button each (at most Slack's 25 elements).
        elements += [_button(f"Run {name}"[:75], ACTION_RUN, f"{n.incident_id}|{name}", confirm=_confirm(
            f"Run {name}?", f"Calls the {name} traffic control now, for {n.brand}. It runs once per incident.",
            "Run", danger=True)) for name in n.approval_controls[:20]]
        blocks.append({"type": "actions", "block_id": "surgewatch_incident_actions", "elements": elements})
    blocks.append(_context(_footer(n)))
    return blocks


def _traffic_blocks(n: Notification) -> list[Block]:
    """``Site traffic: about 6x normal (~5,400 req/min vs ~900) in ~25 min`` and what the estimate rests on."""
    outlook = n.traffic_outlook
    assert outlook is not None
    # slack_text on our own text too: its two tildes would otherwise strike the numbers through
    blocks = [_section(f"*Site traffic:* {slack_text(outlook.phrase())}")]
    if outlook.calibrated:
        blocks.append(_context(f"Traffic model: {slack_text(outlook.basis, 300)}"))
    return blocks


def _button(label: str, action_id: str, value: str, style: str | None = None, confirm: Block | None = None) -> Block:
    b: Block = {"type": "button", "text": {"type": "plain_text", "text": label}, "action_id": action_id, "value": value[:2000]}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def _confirm(title: str, text: str, confirm: str, *, danger: bool = False) -> Block:
    """Slack's "are you sure?" dialog on a button that changes things
    (https://api.slack.com/reference/block-kit/composition-objects#confirm): title <= 100,
    text <= 300, buttons <= 30 characters, all plain text (a brand name needs no escaping there)."""
    dialog: Block = {"title": {"type": "plain_text", "text": title[:100]}, "text": {"type": "plain_text", "text": text[:300]},
                     "confirm": {"type": "plain_text", "text": confirm[:30]}, "deny": {"type": "plain_text", "text": "Cancel"}}
    if danger:
        dialog["style"] = "danger"
    return dialog


def change_text(n: Notification) -> str:
    """The thread reply (mrkdwn) that says what changed since the message above was first posted."""
    rate = slack_text(render.rate_phrase(n))
    if n.event == "resolved":
        return f"{SEVERITY_EMOJI['resolved']} *Resolved*: back to {rate}"
    if n.event == "escalated":
        head = f"{SEVERITY_EMOJI.get(n.severity, '')} *Escalated {slack_text(n.previous_severity, 20)} → {slack_text(n.severity, 20)}*: {rate}"
        fc = render.forecast_phrase(n)
        short = n.traffic_outlook.short_phrase() if n.traffic_outlook is not None else None
        # slack_text also guards our own "~120/min in ~20 min": two tildes would strike it through.
        return head + (f"; {slack_text(fc)}" if fc else "") + (f"; {slack_text(short)}" if short else "")
    if n.event == "repeat":
        return f"{SEVERITY_EMOJI.get(n.severity, '')} *Still {slack_text(n.severity, 20)}*, not acknowledged: {rate}"
    return f"*Update*: {rate}"


def change_blocks(n: Notification) -> list[Block]:
    return [_section(change_text(n)), _context(render.slack_when(n))]
