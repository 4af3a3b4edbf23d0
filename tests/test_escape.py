"""Outside text made safe for Slack, HTML and logs."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.notifier.escape import (
    ELLIPSIS, SLACK_TIME, ZERO_WIDTH_JOINER, ZERO_WIDTH_SPACE, html_text, log_text, slack_date, slack_link, slack_text,
    slack_url,
)


@pytest.mark.parametrize(
    "special",
    ["<!channel>", "<!here>", "<!everyone>", "<@U123>", "<#C1>", "<https://evil|click>", "<!subteam^S1|@ops>",
     "<!date^1392734382^{date}|x>", "<mailto:a@b.c|mail>"],
)
def test_slack_control_sequences_become_plain_text(special: str) -> None:
    out = slack_text(f"hi {special} there")
    assert "<" not in out and ">" not in out
    assert out.startswith("hi &lt;") and out.endswith("&gt; there")


def test_ampersands_are_escaped_so_entities_in_posts_stay_literal() -> None:
    assert slack_text("A & B &lt; C", mrkdwn=False) == "A &amp; B &amp;lt; C"


@pytest.mark.parametrize("word", ["@channel", "@here", "@everyone", "@HERE", "@Channel!"])
def test_broadcast_words_get_a_zero_width_joiner(word: str) -> None:
    out = slack_text(f"ping {word} now")
    assert word not in out
    assert "@" + ZERO_WIDTH_JOINER in out


def test_a_person_mention_in_plain_words_is_left_alone() -> None:
    assert slack_text("thanks @channelfour", mrkdwn=False) == "thanks @channelfour"


def test_mrkdwn_markers_cannot_pair_up_but_plain_text_keeps_them() -> None:
    out = slack_text("*bold* _it_ ~strike~ `code`")
    for marker in "*_~`":
        assert re.search(rf"(?<!{ZERO_WIDTH_SPACE}){re.escape(marker)}", out) is None
    assert slack_text("*bold*", mrkdwn=False) == "*bold*"


def test_truncation_counts_the_escaped_length_and_never_cuts_an_entity() -> None:
    out = slack_text("&" * 100, limit=12)
    assert len(out) <= 12 and out.endswith(ELLIPSIS)
    assert out == "&amp;&amp;" + ELLIPSIS
    assert slack_text("short", limit=12) == "short"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=2, max_value=300))
def test_slack_text_never_lets_a_control_character_through_and_respects_the_limit(s: str, limit: int) -> None:
    out = slack_text(s, limit)
    assert "<" not in out and ">" not in out
    assert re.search(r"&(?!amp;|lt;|gt;)", out) is None
    assert len(out) <= limit
    assert re.search(r"@(channel|here|everyone)\b", out, re.IGNORECASE) is None


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://www.acme.example/tickets?a=1&b=2", "https://www.acme.example/tickets?a=1&amp;b=2"),
        ("https://evil.example/x|click here", None),  # whitespace: not one URL
        ("https://evil.example/x|label>", "https://evil.example/x%7Clabel%3E"),
        ("javascript:alert(1)", None),
        ("ftp://files.example/x", None),
        ("", None),
    ],
)
def test_slack_url_keeps_only_http_links_that_cannot_escape_their_brackets(url: str, expected: str | None) -> None:
    assert slack_url(url) == expected


def test_slack_link_falls_back_to_the_label_when_the_url_is_unsafe() -> None:
    assert slack_link("javascript:alert(1)", "<!channel>") == "&lt;!channel&gt;"
    assert slack_link("https://a.example/p", "x|y") == "<https://a.example/p|x|y>"


def test_html_text_escapes_markup_and_quotes() -> None:
    assert html_text('<script>alert("x")</script> & \'') == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;"
    assert html_text("abcdef", limit=4) == "abc" + ELLIPSIS


def test_log_text_keeps_one_line_without_control_or_bidi_characters() -> None:
    out = log_text("line1\nFAKE 2026 CRITICAL\r\x1b[31mred\u202eevil\u2028x\ty")
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and "\u202e" not in out and "\u2028" not in out
    assert out.startswith("line1 FAKE 2026 CRITICAL")
    assert len(log_text("x" * 1000, limit=50)) == 50


INVISIBLE = {"LRM": "\u200e", "RLM": "\u200f", "ALM": "\u061c", "RLO": "\u202e", "LRI": "\u2066", "ZWNJ": "\u200c",
             "ZWSP": "\u200b", "BOM": "\ufeff", "word joiner": "\u2060", "tag A": "\U000e0041",
             "cancel tag": "\U000e007f", "soft hyphen": "\u00ad"}


@pytest.mark.parametrize("name", sorted(INVISIBLE))
def test_invisible_and_bidi_characters_never_reach_slack(name) -> None:
    ch = INVISIBLE[name]
    out = slack_text(f"Acme{ch} launch {ch}today{ch}")
    assert ch not in out.replace(ZERO_WIDTH_SPACE, "") and "Acme launch today" == out
    assert ch not in slack_text(f"plain{ch}", mrkdwn=False)


def test_an_invisible_character_inside_a_link_target_is_percent_encoded() -> None:
    link = slack_link("https://evil.example/\u202egpj.exe?x=\u200e1\ufeff", "photo")
    assert "\u202e" not in link and "\u200e" not in link and "\ufeff" not in link
    assert "%E2%80%AEgpj.exe" in link and "%E2%80%8E1" in link


def test_emoji_built_with_the_zero_width_joiner_stay_intact() -> None:
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert family in slack_text(f"Acme {family}")


def test_an_underscore_inside_a_name_is_left_alone_so_it_can_be_copied() -> None:
    # "set X_BEARER_TOKEN" copied from an alert used to carry two zero-width spaces
    assert slack_text("set X_BEARER_TOKEN and snake_case_2") == "set X_BEARER_TOKEN and snake_case_2"


@pytest.mark.parametrize("text", ["_it_", "a _it_ b", "(_it_)", "_X_BEARER_", "x__y", "@here_x _@channel_"])
def test_an_underscore_that_could_open_or_close_italics_is_still_neutralised(text) -> None:
    out = slack_text(text)
    for m in re.finditer("_", out):
        i = m.start()
        before, after = out[i - 1] if i else " ", out[i + 1] if i + 1 < len(out) else " "
        assert before == ZERO_WIDTH_SPACE or (before.isalnum() and after.isalnum()), (text, out)
    assert "@here" not in out and "@channel" not in out  # mention escaping is untouched


# -- Slack dates: our own markup, shown in each reader's zone --------------------------------------
@pytest.mark.parametrize("tz, fallback", [
    ("UTC", "2026-07-01T09:05:00Z"),
    ("Europe/London", "2026-07-01T10:05:00+01:00"),
    ("America/New_York", "2026-07-01T05:05:00-04:00"),
    ("Asia/Kolkata", "2026-07-01T14:35:00+05:30"),
])
def test_a_slack_date_carries_the_epoch_and_a_fallback_in_the_configured_zone(tz: str, fallback: str) -> None:
    assert slack_date(1782896700.0, tz) == f"<!date^1782896700^{{date_short_pretty}} {{time}}|{fallback}>"
    assert slack_date(1782896700.9, tz, SLACK_TIME) == f"<!date^1782896700^{{time}}|{fallback}>"


def test_a_slack_date_survives_beside_escaped_text_but_not_inside_it() -> None:
    """The token is added after escaping: escaping it (as any ``<!date…>`` from a post is) makes it
    literal text, so it must never go through slack_text."""
    token = slack_date(1782896700.0, "UTC")
    line = f"{slack_text('post says <!date^0^{time}|now> & *bold*')} · {token}"
    assert line.endswith(" · " + token) and line.count("<!date^") == 1
    assert slack_text(token).startswith("&lt;!date^")

