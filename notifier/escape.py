"""Make outside text (posts, titles, author names) safe for each place it is shown.

Every string that came from a post goes through one of these before it reaches Slack, an HTML page
or a log line.  A post is written by a stranger: in Slack it must not ping a workspace
(``<!channel>``), link somewhere under a false label (``<https://evil|click>``) or restyle our
message; in HTML it must not run script; in a log it must not forge a line.
"""
from __future__ import annotations

import html
import re
import unicodedata

ELLIPSIS = "…"

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks): section text 3000 chars,
# a section field 2000, a header's plain text 150, a context element 3000.
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
HEADER_TEXT_LIMIT = 150

# Slack's escaping rules (https://api.slack.com/reference/surfaces/formatting#escaping): only these
# three characters are control characters; escaping them makes every <!special>, <@user>,
# <#channel> and <url|label> sequence plain text.
_SLACK_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}

# With ``link_names`` (or a client that re-parses), plain ``@channel`` still notifies everybody.
# A zero-width joiner after the ``@`` keeps the word readable but no longer a keyword.
_BROADCAST_WORDS = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
ZERO_WIDTH_JOINER = "\u200d"

# mrkdwn styling markers.  Slack has no backslash escape; a zero-width space before the marker
# stops it from opening or closing a span (a marker must touch whitespace or punctuation), so a
# post cannot bold, strike or code-fence our own text around it.
_MRKDWN_MARKERS = frozenset("*_~`")
ZERO_WIDTH_SPACE = "\u200b"


# Bidirectional embedding/override/isolate controls (U+202A-U+202E, U+2066-U+2069): a post could
# reverse the text that follows it in our message.
_INVISIBLE_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def _slack_units(s: str, *, mrkdwn: bool) -> list[str]:
    """The escaped form of ``s`` as a list of indivisible pieces (one per input character), so
    truncation can never cut an entity such as ``&amp;`` in half."""
    s = _BROADCAST_WORDS.sub(lambda m: "@" + ZERO_WIDTH_JOINER + m.group(1), s)
    units: list[str] = []
    for ch in s:
        if ch in _INVISIBLE_CONTROLS or (unicodedata.category(ch) == "Cc" and ch not in "\n\t"):
            continue  # bidi overrides and control characters could disguise the text around them
        if ch in _SLACK_ENTITIES:
            units.append(_SLACK_ENTITIES[ch])
        elif mrkdwn and ch in _MRKDWN_MARKERS:
            units.append(ZERO_WIDTH_SPACE + ch)
        else:
            units.append(ch)
    return units


def _join_within(units: list[str], limit: int | None) -> str:
    total = sum(len(u) for u in units)
    if limit is None or total <= limit:
        return "".join(units)
    budget = limit - len(ELLIPSIS)
    out: list[str] = []
    used = 0
    for u in units:
        if used + len(u) > budget:
            break
        out.append(u)
        used += len(u)
    return "".join(out).rstrip() + ELLIPSIS


def slack_text(s: object, limit: int | None = SECTION_TEXT_LIMIT, *, mrkdwn: bool = True) -> str:
    """Outside text for a Slack ``mrkdwn`` (or ``plain_text`` with ``mrkdwn=False``) field.

    ``limit`` counts the escaped length, which is what Slack measures.
    """
    return _join_within(_slack_units("" if s is None else str(s), mrkdwn=mrkdwn), limit)


def slack_url(url: str) -> str | None:
    """A URL that can sit inside ``<url|label>``, or ``None`` when it cannot be made safe.

    Only http(s) links are kept; ``|`` and ``>`` would end the link early and let the rest of the
    string become a label of the attacker's choosing, so they are percent-encoded.
    """
    url = (url or "").strip()
    if not re.match(r"^https?://[^\s]+$", url, re.IGNORECASE):
        return None
    url = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return url if len(url) <= 2000 else None


def slack_link(url: str, label: object, limit: int = 300) -> str:
    """``<url|label>`` with both halves made safe; just the escaped label when the URL is unusable."""
    safe_label = slack_text(label, limit)
    safe_url = slack_url(url)
    return f"<{safe_url}|{safe_label}>" if safe_url else safe_label


def html_text(s: object, limit: int | None = None) -> str:
    """Outside text for an HTML page (the weekly digest): escaped, quotes included."""
    s = "" if s is None else str(s)
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 1, 0)].rstrip() + ELLIPSIS
    return html.escape(s, quote=True)


def log_text(s: object, limit: int = 300) -> str:
    """Outside text for one log line: no newlines, no control or bidi-override characters (which
    could forge a log line or hide text), whitespace collapsed, capped."""
    s = "" if s is None else str(s)
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in s)
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: max(limit - 1, 0)].rstrip() + ELLIPSIS
    return cleaned
