"""SlackChannel against the local fake Slack Web API, through the real slack_sdk WebClient."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Iterator

import pytest

from surgewatch.notifier import SlackChannel, SlackChannelError
from surgewatch.notifier.slack import PostPacer
from surgewatch.notifier.slack_blocks import ACTION_ACK, ACTION_FALSE_ALARM, ACTION_SILENCE_1H
from tests.fakes.slack_server import FakeSlack
from tests.test_notifier_contract import HOSTILE, SLACK_TOKEN, make_mention, make_notification


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=SLACK_TOKEN) as fake:
        yield fake


def channel(fake: FakeSlack, **kw: Any) -> SlackChannel:
    args: dict[str, Any] = dict(api_url=fake.base_url, marketing_channel="#marketing", ops_channel="#ops", timeout=5, pacer=None)
    args.update(kw)
    return SlackChannel(SLACK_TOKEN, **args)


def all_texts(obj: Any) -> Iterator[str]:
    """Every string value anywhere in a message (text, blocks, fields, buttons)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from all_texts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_texts(v)


def top_level(fake: FakeSlack, name: str) -> list[dict[str, Any]]:
    return fake.messages(name, include_replies=False)


def test_first_notification_posts_one_marketing_and_one_ops_message(slack: FakeSlack) -> None:
    receipt = channel(slack).send(make_notification())
    assert receipt is not None
    assert receipt["marketing"]["channel"] == slack.channel_id("#marketing")
    assert receipt["ops"]["channel"] == slack.channel_id("#ops")
    [marketing] = top_level(slack, "#marketing")
    [ops] = top_level(slack, "#ops")
    assert marketing["ts"] == receipt["marketing"]["ts"]
    assert ops["ts"] == receipt["ops"]["ts"]
    assert [c.method for c in slack.calls] == ["chat.postMessage", "chat.postMessage"]
    assert all(c.headers["Authorization"] == f"Bearer {SLACK_TOKEN}" for c in slack.calls)


def test_marketing_message_says_what_is_being_said_where_and_by_whom(slack: FakeSlack) -> None:
    channel(slack).send(make_notification())
    [msg] = top_level(slack, "#marketing")
    text = "\n".join(all_texts(msg["blocks"]))
    assert "<https://x.example/acmefan/status/1|acmefan1 on x>" in text  # top post, linked, with author
    assert "reach 12k" in text
    assert "u/acme_lover on reddit" in text  # the underscore cannot start italics
    assert "x 30 (62%) · reddit 12 (25%) · rss 6 (12%)" in text  # sources breakdown
    assert "Acme Live tickets drop at 10! post 1" in text
    assert "48 mentions/min vs 3.1 expected (x15.5)" in text


def test_ops_message_gives_rate_forecast_pages_runbook_and_buttons(slack: FakeSlack) -> None:
    channel(slack, actions=("never shown: the brand's own list wins",)).send(make_notification(actions=("Turn on the waiting room",)))
    [msg] = top_level(slack, "#ops")
    text = "\n".join(all_texts(msg["blocks"]))
    assert "*Observed*\n48 mentions/min (x15.5)" in text
    assert "*Baseline*\n3.1 mentions/min" in text
    assert "120 mentions/min" in text and "20 min" in text  # forecast peak and time to peak
    assert "<https://www.acme.example/tickets|/tickets> — 31 posts" in text
    assert "<https://wiki.acme.example/runbooks/surge|" in text
    assert "Turn on the waiting room" in text and "never shown" not in text
    [actions] = [b for b in msg["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [ACTION_ACK, ACTION_SILENCE_1H, ACTION_FALSE_ALARM]
    assert {e["value"] for e in actions["elements"]} == {"inc-1"}
    assert msg["text"].startswith("WARNING Acme opened: 48 mentions/min")  # the notification preview


def test_hostile_post_text_is_inert_in_every_block_of_both_messages(slack: FakeSlack) -> None:
    evil = make_mention(9, text=HOSTILE, author="<!here> <@U999>", url="https://x.example/9?a=1&b=<2>|x")
    n = make_notification(top_mentions=(evil,), site_pages=(("https://www.acme.example/<!channel>", 3),))
    channel(slack).send(n)
    messages = top_level(slack, "#marketing") + top_level(slack, "#ops")
    assert len(messages) == 2
    for msg in messages:
        for s in all_texts([msg["text"], msg["blocks"]]):
            for live in ("<!channel>", "<!here>", "<@U123>", "<@U999>", "<script>", "<https://evil.example|click>"):
                assert live not in s
            assert "@here" not in s  # broken by a zero-width joiner
            assert "|x>" not in s and "|click>" not in s  # the URL's own '|' cannot make a label
    marketing_text = "\n".join(all_texts(messages[0]["blocks"]))
    assert "&lt;!channel&gt; hi &lt;@U123&gt; &amp; &lt;script&gt;" in marketing_text  # shown, not executed
    assert "\u200b*bold\u200b*" in marketing_text  # mrkdwn markers neutralised


def test_second_notification_updates_both_messages_in_place_and_threads_what_changed(slack: FakeSlack) -> None:
    ch = channel(slack)
    first = ch.send(make_notification())
    second = ch.send(make_notification(key="inc-1:2:slack", event="escalated", severity="critical",
                                       previous_severity="warning", observed=130, previous_receipt=first))
    assert second is not None
    for audience, name in (("marketing", "#marketing"), ("ops", "#ops")):
        [parent] = top_level(slack, name)  # still one message: updated, not re-posted
        assert parent["ts"] == first[audience]["ts"] == second[audience]["ts"]
        assert parent["previous_versions"] == 1
        assert "CRITICAL" in parent["blocks"][0]["text"]["text"]
        [reply] = slack.replies(name, parent["ts"])
        assert "Escalated warning → critical" in reply["text"]
        assert "130 mentions/min" in reply["text"]
        assert second[audience]["last_reply_ts"] == reply["ts"]
    assert [c.method for c in slack.calls[2:]] == ["chat.update", "chat.postMessage"] * 2


def test_resolve_marks_the_message_resolved_drops_the_buttons_and_says_so_in_the_thread(slack: FakeSlack) -> None:
    ch = channel(slack)
    first = ch.send(make_notification())
    ch.send(make_notification(key="inc-1:2:slack", event="resolved", severity="warning", observed=3,
                              previous_receipt=first))
    [ops] = top_level(slack, "#ops")
    assert "resolved" in ops["blocks"][0]["text"]["text"]
    assert not [b for b in ops["blocks"] if b["type"] == "actions"]
    [reply] = slack.replies("#ops", ops["ts"])
    assert reply["text"].startswith(":white_check_mark: *Resolved*: back to 3 mentions/min")


def test_a_retry_after_a_partial_failure_updates_what_was_posted_instead_of_posting_twice(slack: FakeSlack) -> None:
    ch = channel(slack)
    slack.fail_next("chat.postMessage", error=None)  # marketing goes through...
    slack.fail_next("chat.postMessage", status=500)  # ...ops hits a Slack outage
    with pytest.raises(SlackChannelError) as info:
        ch.send(make_notification())
    partial = info.value.partial_receipt
    assert set(partial) == {"marketing"} and info.value.permanent is False
    receipt = ch.send(make_notification(previous_receipt=partial))
    assert receipt is not None
    assert len(top_level(slack, "#marketing")) == 1
    assert len(top_level(slack, "#ops")) == 1
    assert receipt["marketing"] == partial["marketing"]
    assert slack.replies("#marketing", partial["marketing"]["ts"]) == []  # "opened" needs no thread reply


def test_a_retried_escalation_does_not_thread_the_same_change_twice(slack: FakeSlack) -> None:
    ch = channel(slack)
    first = ch.send(make_notification())
    escalate = make_notification(key="inc-1:2:slack", event="escalated", severity="critical", previous_severity="warning")
    slack.fail_next("chat.update", error=None)  # marketing is updated and gets its thread reply...
    slack.fail_next("chat.update", status=502)  # ...then the ops update fails
    with pytest.raises(SlackChannelError) as info:
        ch.send(replace(escalate, previous_receipt=first))
    partial = info.value.partial_receipt
    assert partial["marketing"]["replied"] == ["inc-1:2:slack"] and partial["ops"] == first["ops"]
    retried = ch.send(replace(escalate, previous_receipt=partial))
    ch.send(replace(escalate, previous_receipt=retried))  # a redelivered task, once more
    for name in ("#marketing", "#ops"):
        [parent] = top_level(slack, name)
        assert len(slack.replies(name, parent["ts"])) == 1


def test_an_update_of_a_deleted_message_posts_a_fresh_one(slack: FakeSlack) -> None:
    ch = channel(slack, marketing_channel=None)
    gone = {"ops": {"channel": slack.channel_id("#ops"), "ts": "1699999999.000100"}}
    receipt = ch.send(make_notification(event="escalated", severity="critical", previous_receipt=gone))
    assert receipt is not None and receipt["ops"]["ts"] != gone["ops"]["ts"]
    assert len(top_level(slack, "#ops")) == 1


def test_only_the_configured_audiences_get_a_message(slack: FakeSlack) -> None:
    receipt = channel(slack, marketing_channel=None).send(make_notification())
    assert receipt is not None and set(receipt) == {"ops"}
    assert slack.messages("#marketing") == []


def test_the_chart_is_uploaded_into_the_marketing_thread(slack: FakeSlack) -> None:
    png = b"\x89PNG\r\n\x1a\nfake-chart"
    receipt = channel(slack, chart=lambda n: png).send(make_notification())
    assert receipt is not None and receipt["marketing"]["chart"] is True
    assert list(slack.uploaded().values()) == [png]
    [share] = [m for m in slack.messages("#marketing") if m.get("subtype") == "file_share"]
    assert share["thread_ts"] == receipt["marketing"]["ts"]
    assert share["files"][0]["title"] == "Acme: mentions per minute"


def test_a_failed_chart_upload_does_not_fail_the_alert(slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    slack.fail_next("files.getUploadURLExternal", "missing_scope")
    with caplog.at_level(logging.WARNING):
        receipt = channel(slack, chart=lambda n: b"png").send(make_notification())
    assert receipt is not None and receipt["marketing"]["chart"] is False
    assert "missing_scope" in caplog.text
    assert SLACK_TOKEN not in caplog.text


@pytest.mark.parametrize(
    "error, permanent",
    [
        ("invalid_auth", True), ("not_authed", True), ("account_inactive", True), ("token_revoked", True),
        ("channel_not_found", True), ("is_archived", True), ("not_in_channel", True), ("missing_scope", True),
        ("msg_too_long", True), ("invalid_blocks", True),
        ("internal_error", False), ("fatal_error", False), ("service_unavailable", False), ("some_new_error", False),
    ],
)
def test_slack_error_codes_are_sorted_into_permanent_and_transient(slack: FakeSlack, error: str, permanent: bool) -> None:
    slack.fail_next("chat.postMessage", error)
    with pytest.raises(SlackChannelError) as info:
        channel(slack).send(make_notification())
    assert info.value.permanent is permanent
    assert info.value.error == error
    assert error in str(info.value) and "#marketing" in str(info.value)


def test_a_channel_that_does_not_exist_is_a_permanent_error() -> None:
    with FakeSlack(token=SLACK_TOKEN, channels=["ops"]) as fake:
        with pytest.raises(SlackChannelError) as info:
            channel(fake).send(make_notification())
    assert info.value.permanent and info.value.error == "channel_not_found"


def test_an_archived_channel_is_a_permanent_error(slack: FakeSlack) -> None:
    slack.archive("#ops")
    with pytest.raises(SlackChannelError) as info:
        channel(slack).send(make_notification())
    assert info.value.permanent and info.value.error == "is_archived"
    assert set(info.value.partial_receipt) == {"marketing"}


def test_rate_limit_passes_slacks_retry_after_on(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", "ratelimited", retry_after=30)
    with pytest.raises(SlackChannelError) as info:
        channel(slack).send(make_notification())
    assert info.value.retry_after == 30.0 and not info.value.permanent


def test_slack_sdk_does_not_retry_inside_the_worker(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", "ratelimited", retry_after=1)
    with pytest.raises(SlackChannelError):
        channel(slack).send(make_notification())
    assert len(slack.calls_to("chat.postMessage")) == 1  # one attempt; the notify task owns retries


def test_the_token_is_in_no_repr_and_a_channel_needs_somewhere_to_post() -> None:
    ch = SlackChannel(SLACK_TOKEN, marketing_channel="#m")
    assert SLACK_TOKEN not in repr(ch) and "#m" in repr(ch)
    with pytest.raises(ValueError):
        SlackChannel(SLACK_TOKEN)
    with pytest.raises(ValueError):
        SlackChannel("", ops_channel="#ops")


def test_long_posts_are_cut_to_block_kit_limits(slack: FakeSlack) -> None:
    huge = make_mention(1, text="&" * 10_000, author="a" * 5000)
    many = tuple(make_mention(i) for i in range(1, 40))
    channel(slack).send(make_notification(top_mentions=(huge,) + many, brand="B" * 400))
    # The fake answers invalid_blocks past Block Kit limits, so reaching here means they held.
    [msg] = top_level(slack, "#marketing")
    assert len(msg["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in msg["blocks"] if b["type"] == "section" and "text" in b)
    assert len(msg["blocks"][0]["text"]["text"]) <= 150


def test_posts_to_one_channel_are_spaced_about_a_second_apart(slack: FakeSlack) -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = PostPacer(interval=1.0, max_wait=2.0, clock=lambda: now[0], sleep=sleep)
    ch = channel(slack, marketing_channel=None, pacer=pacer)
    first = ch.send(make_notification())
    ch.send(make_notification(key="inc-1:2:slack", event="escalated", severity="critical", previous_receipt=first))
    assert slept == [1.0]  # the thread reply waited its turn behind the first post ("#ops" and its id are one channel)
    burst = PostPacer(interval=1.0, max_wait=2.0, clock=lambda: 0.0, sleep=lambda s: None)  # many posts at once
    for _ in range(3):
        burst.wait_turn("x")  # waits 0, 1, 2 s
    with pytest.raises(SlackChannelError) as info:  # a 3 s wait is too long: refuse, do not block the worker
        burst.wait_turn("x")
    assert not info.value.permanent and info.value.retry_after == 3.0


def test_both_messages_carry_the_expected_site_traffic(slack: FakeSlack) -> None:
    from surgewatch.notifier.base import TrafficOutlook

    outlook = TrafficOutlook(normal_rpm=903.0, multiple=6.04, peak_rpm=5454.0, seconds_to_peak=1416.0,
                             basis="from 3 past surges, R² 0.91, typical error ±12%")
    channel(slack).send(make_notification(traffic_outlook=outlook))
    ops = "\n".join(all_texts(top_level(slack, "#ops")[0]["blocks"])).replace("\u200b", "")
    marketing = "\n".join(all_texts(top_level(slack, "#marketing")[0]["blocks"])).replace("\u200b", "")
    assert "*Site traffic:* about 6x normal (~5,500 req/min vs ~900) in ~25 min" in ops
    assert "Traffic model: from 3 past surges, R² 0.91, typical error ±12%" in ops
    assert "Expected: about 6x normal site traffic in ~25 min" in marketing
