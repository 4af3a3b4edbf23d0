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
from datetime import datetime, tzinfo
from urllib.parse import quote

from surgewatch import clock

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
# Not "\b": "_" is a word character to re, but "@here_x" may still notify (Slack ends the keyword there).
_BROADCAST_WORDS = re.compile(r"@(channel|here|everyone)(?![A-Za-z0-9])", re.IGNORECASE)
ZERO_WIDTH_JOINER = "\u200d"

# mrkdwn styling markers.  Slack has no backslash escape; a zero-width space before the marker
# stops it from opening or closing a span (a marker must touch whitespace or punctuation), so a
# post cannot bold, strike or code-fence our own text around it.
_MRKDWN_MARKERS = frozenset("*_~`")
ZERO_WIDTH_SPACE = "\u200b"


# Bidirectional embedding/override/isolate controls (U+202A-U+202E, U+2066-U+2069): a post could
# reverse the text that follows it in our message.
_INVISIBLE_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def _invisible(ch: str) -> bool:
    """A character that is not shown but changes what is shown or copied: every format character
    (category Cf: LRM, RLM, ALM, the bidi controls, ZWSP, ZWNJ, BOM, word joiner, tag characters...)
    and every control character but newline and tab.  The zero-width joiner stays: emoji sequences
    (family, profession, flag-with-modifier emoji) are built with it, and it cannot reorder text."""
    if ch == ZERO_WIDTH_JOINER:
        return False
    category = unicodedata.category(ch)
    return category == "Cf" or (category == "Cc" and ch not in "\n\t")


def _slack_units(s: str, *, mrkdwn: bool) -> list[str]:
    """The escaped form of ``s`` as a list of indivisible pieces (one per input character), so
    truncation can never cut an entity such as ``&amp;`` in half."""
    s = "".join(ch for ch in s if not _invisible(ch))
    s = _BROADCAST_WORDS.sub(lambda m: "@" + ZERO_WIDTH_JOINER + m.group(1), s)
    units: list[str] = []
    for i, ch in enumerate(s):
        if ch in _SLACK_ENTITIES:
            units.append(_SLACK_ENTITIES[ch])
        elif mrkdwn and ch in _MRKDWN_MARKERS and not (ch == "_" and _inside_a_word(s, i)):
            units.append(ZERO_WIDTH_SPACE + ch)
        else:
            units.append(ch)
    return units


def _inside_a_word(s: str, i: int) -> bool:
    # An underscore between two letters or digits (X_BEARER_TOKEN, snake_case) can neither open nor
    # close an italic span -- a marker must touch whitespace or punctuation -- so it needs no
    # zero-width space, and leaving it out keeps the name intact when copied from the alert.
    return 0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()


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
    # An invisible character in a link target (U+202E reversing "gpj.exe", an RLM, a BOM) is
    # percent-encoded: the link still goes where it went, and nothing in it is hidden or reordered.
    url = "".join(quote(ch, safe="") if _invisible(ch) or (ch.isspace() and ch != " ") else ch for ch in url)
    url = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return url if len(url) <= 2000 else None


def slack_link(url: str, label: object, limit: int = 300) -> str:
    """``<url|label>`` with both halves made safe; just the escaped label when the URL is unusable."""
    safe_label = slack_text(label, limit)
    safe_url = slack_url(url)
    return f"<{safe_url}|{safe_label}>" if safe_url else safe_label


# Slack shows a date token in each reader's own zone and clock format
# (https://api.slack.com/reference/surfaces/formatting#date-formatting): "Today 10:05 AM" in New York,
# "Today 15:05" in London, from one message.
SLACK_DATE_TIME = "{date_short_pretty} {time}"
SLACK_TIME = "{time}"


def slack_date(at: float | datetime, tz: str | tzinfo | None = None, tokens: str = SLACK_DATE_TIME) -> str:
    """``<!date^EPOCH^TOKENS|FALLBACK>``: a time every reader sees in their own zone.  The fallback,
    for clients that cannot format dates, is the time in the configured zone ``tz`` (a datetime
    keeps its own zone when ``tz`` is None), as :func:`surgewatch.clock.stamp` writes it.

    This is our own markup: insert it into text that is already escaped.  Passed through
    :func:`slack_text` it becomes literal text, as any ``<!...>`` from a post must."""
    dt = clock.local(at, tz)
    fallback = slack_text(clock.stamp(dt), 100, mrkdwn=False).replace("|", "/")
    return f"<!date^{int(dt.timestamp())}^{tokens}|{fallback}>"


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
