"""The fake Slack Web API itself: the real slack_sdk client must see Slack's documented answers."""
from __future__ import annotations

import json
import threading

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.fakes.slack_server import FakeSlack, channel_id_for

TOKEN = "xoxb-fake-token"


@pytest.fixture
def fake() -> FakeSlack:
    with FakeSlack(token=TOKEN) as f:
        yield f


def client(fake: FakeSlack, token: str = TOKEN) -> WebClient:
    return WebClient(token=token, base_url=fake.base_url, retry_handlers=[], timeout=5)


def test_post_message_answers_like_slack_and_maps_a_channel_name_to_a_stable_id(fake: FakeSlack) -> None:
    r = client(fake).chat_postMessage(channel="#marketing", text="hello")
    assert r["ok"] is True
    assert r["channel"] == channel_id_for("marketing") == fake.channel_id("marketing")
    assert r["ts"] == "1700000000.000100"
    assert r["message"]["text"] == "hello" and r["message"]["bot_id"]
    assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/api/")


def test_history_returns_top_level_messages_newest_first_and_replies_live_in_the_thread(fake: FakeSlack) -> None:
    c = client(fake)
    first = c.chat_postMessage(channel="#ops", text="one")
    c.chat_postMessage(channel="#ops", text="two")
    c.chat_postMessage(channel=first["channel"], thread_ts=first["ts"], text="reply")
    history = c.conversations_history(channel=first["channel"])
    assert [m["text"] for m in history["messages"]] == ["two", "one"]
    replies = c.conversations_replies(channel=first["channel"], ts=first["ts"])
    assert [m["text"] for m in replies["messages"]] == ["one", "reply"]
    assert history["messages"][1]["reply_count"] == 1


def test_update_replaces_the_message_and_needs_the_channel_id(fake: FakeSlack) -> None:
    c = client(fake)
    r = c.chat_postMessage(channel="#ops", text="v1")
    u = c.chat_update(channel=r["channel"], ts=r["ts"], text="v2")
    assert u["text"] == "v2" and u["ts"] == r["ts"]
    assert fake.messages("#ops")[0]["text"] == "v2"
    with pytest.raises(SlackApiError) as info:
        c.chat_update(channel="#ops", ts=r["ts"], text="v3")
    assert info.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as info:
        c.chat_update(channel=r["channel"], ts="1.000000", text="v3")
    assert info.value.response["error"] == "message_not_found"


def test_tokens_are_checked_like_slack(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as info:
        client(fake, token="xoxb-wrong").auth_test()
    assert info.value.response["error"] == "invalid_auth"
    raw = requests.post(fake.base_url + "auth.test", timeout=5).json()
    assert raw == {"ok": False, "error": "not_authed"}
    assert client(fake).auth_test()["user_id"]
    fake.revoke_token()
    with pytest.raises(SlackApiError):
        client(fake).auth_test()


def test_form_encoded_calls_with_a_token_field_work_too(fake: FakeSlack) -> None:
    blocks = json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}])
    raw = requests.post(fake.base_url + "chat.postMessage", data={"token": TOKEN, "channel": "ops", "blocks": blocks}, timeout=5)
    assert raw.json()["ok"] is True
    assert fake.messages("#ops")[0]["blocks"][0]["text"]["text"] == "hi"


def test_rate_limit_is_a_429_with_retry_after(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", "ratelimited", retry_after=12)
    with pytest.raises(SlackApiError) as info:
        client(fake).chat_postMessage(channel="#ops", text="x")
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "12"
    assert client(fake).chat_postMessage(channel="#ops", text="x")["ok"]  # only the next call failed


def test_invalid_blocks_are_refused_as_slack_does(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as info:
        client(fake).chat_postMessage(channel="#ops", text="x", blocks=[{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}])
    assert info.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as info, pytest.warns(UserWarning):  # slack_sdk warns about no text too
        client(fake).chat_postMessage(channel="#ops")
    assert info.value.response["error"] == "no_text"


def test_files_upload_v2_goes_through_all_three_steps(fake: FakeSlack) -> None:
    c = client(fake)
    r = c.chat_postMessage(channel="#marketing", text="surge")
    up = c.files_upload_v2(channel=r["channel"], thread_ts=r["ts"], content=b"PNGDATA", filename="chart.png", title="Chart")
    assert up["file"]["title"] == "Chart"
    assert [x.method for x in fake.calls[1:]] == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    assert fake.uploaded() == {up["file"]["id"]: b"PNGDATA"}
    assert fake.replies("#marketing", r["ts"])[0]["files"][0]["id"] == up["file"]["id"]


def test_channels_can_be_listed_and_looked_up(fake: FakeSlack) -> None:
    c = client(fake)
    c.chat_postMessage(channel="#ops", text="x")
    listed = c.conversations_list()["channels"]
    assert [ch["name"] for ch in listed] == ["ops"]
    assert c.conversations_info(channel=listed[0]["id"])["channel"]["name"] == "ops"


def test_calls_are_recorded_safely_from_many_threads(fake: FakeSlack) -> None:
    c = client(fake)
    threads = [threading.Thread(target=lambda i=i: c.chat_postMessage(channel="#ops", text=str(i))) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.calls_to("chat.postMessage")) == 20
    assert len({m["ts"] for m in fake.messages("#ops")}) == 20


def test_an_unknown_method_is_an_api_error_not_an_http_error(fake: FakeSlack) -> None:
    r = requests.post(fake.base_url + "chat.postMesage", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 200
    assert r.json() == {"ok": False, "error": "unknown_method", "req_method": "chat.postMesage"}
