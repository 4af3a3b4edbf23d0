"""Traffic-control webhooks: templated body, verifiable signature, idempotency key, dry run."""
from __future__ import annotations

import json
import logging
from typing import Iterator

import pytest

from surgewatch.notifier import ChannelError, WebhookAction
from surgewatch.notifier.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature
from tests.test_notifier_contract import WEBHOOK_SECRET, WebhookReceiver, make_notification

TEMPLATE = {
    "action": "waiting_room.enable",
    "brand": "{brand}",
    "reason": "{brand} surge {severity}: {observed_per_min}/min, x{ratio}",
    "numbers": {"rate": "{observed_per_min}", "peak": "{forecast_peak_per_min}", "eta_s": "{forecast_seconds_to_peak}"},
}
UNDO = {"action": "waiting_room.disable", "incident": "{incident_id}"}
NOW = 1_795_000_000.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


def action(url: str, **kw: object) -> WebhookAction:
    args: dict = dict(secret=WEBHOOK_SECRET, body_template=TEMPLATE, undo_template=UNDO, dry_run=False, timeout=5, clock=lambda: NOW)
    args.update(kw)
    return WebhookAction("waiting_room", url, **args)


def test_the_receiver_can_verify_the_signature_and_deduplicate_by_key(receiver: WebhookReceiver) -> None:
    receipt = action(receiver.url).send(make_notification(key="inc-1:1:waiting_room"))
    assert receipt == {"action": "do", "status": 200, "idempotency_key": "inc-1:1:waiting_room"}
    [req] = receiver.requests
    ts, sig, key = req.headers[TIMESTAMP_HEADER], req.headers[SIGNATURE_HEADER], req.headers[IDEMPOTENCY_HEADER]
    assert ts == str(int(NOW))
    assert verify_signature(WEBHOOK_SECRET, ts, req.body, sig, idempotency_key=key, now=NOW + 10)
    assert not verify_signature("another-secret", ts, req.body, sig, idempotency_key=key, now=NOW)
    assert not verify_signature(WEBHOOK_SECRET, ts, req.body + b" ", sig, idempotency_key=key, now=NOW)  # body tampered
    assert not verify_signature(WEBHOOK_SECRET, str(int(NOW) + 1), req.body, sig, idempotency_key=key,
                                now=NOW)  # timestamp swapped
    assert not verify_signature(WEBHOOK_SECRET, ts, req.body, sig, idempotency_key=key,
                                now=NOW + 3600)  # replayed an hour later
    # the key is signed: a replay cannot pass as a new action with another key, or without one
    assert not verify_signature(WEBHOOK_SECRET, ts, req.body, sig, idempotency_key="inc-1:2:waiting_room", now=NOW)
    assert not verify_signature(WEBHOOK_SECRET, ts, req.body, sig, now=NOW)
    assert req.headers[IDEMPOTENCY_HEADER] == "inc-1:1:waiting_room"
    assert req.headers["Content-Type"] == "application/json"
    assert req.path == "/hooks/waiting-room?token=urlSECRET"


def test_the_signature_is_hmac_sha256_over_timestamp_dot_key_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"123.inc-1:0:scale.{}", hashlib.sha256).hexdigest()
    assert sign("k", "123", "{}", "inc-1:0:scale") == f"sha256={expected}"
    assert sign("k", "123", "{}") == "sha256=" + hmac.new(b"k", b"123.{}", hashlib.sha256).hexdigest()


@pytest.mark.parametrize("timestamp, body, signature, key", [
    (None, b"{}", "sha256=00", "k"),  # no timestamp header
    (str(int(NOW)), b"{}", None, "k"),  # no signature header
    (str(int(NOW)), None, "sha256=00", "k"),  # no body
    (str(int(NOW)), b"\xff\xfe not utf-8", "sha256=00", "k"),
    ("soon", b"{}", "sha256=00", "k"),
    ("nan", b"{}", "sha256=00", "k"),
    (str(int(NOW)), b"{}", "sha256=\u00e9\u00e9", "k"),  # a non-ASCII signature header
    (str(int(NOW)), b"{}", "sha256=00", 5),
])
def test_verify_signature_answers_false_instead_of_raising_on_a_malformed_request(timestamp, body, signature, key):
    assert verify_signature(WEBHOOK_SECRET, timestamp, body, signature, idempotency_key=key, now=NOW) is False


def test_a_non_utf8_body_signed_as_bytes_verifies() -> None:
    body = b"\xff\xfe raw"
    sig = sign(WEBHOOK_SECRET, str(int(NOW)), body, "k1")
    assert verify_signature(WEBHOOK_SECRET, str(int(NOW)), body, sig, idempotency_key="k1", now=NOW)


def test_the_body_is_templated_from_the_notifications_numbers_keeping_their_types(receiver: WebhookReceiver) -> None:
    action(receiver.url).send(make_notification(severity="critical"))
    body = json.loads(receiver.requests[0].body)
    assert body == {
        "action": "waiting_room.enable",
        "brand": "Acme",
        "reason": "Acme surge critical: 48.0/min, x15.484",
        "numbers": {"rate": 48.0, "peak": 120.0, "eta_s": 1200},
    }


def test_resolve_sends_the_undo_body(receiver: WebhookReceiver) -> None:
    receipt = action(receiver.url).send(make_notification(event="resolved", key="inc-1:3:waiting_room"))
    assert receipt is not None and receipt["action"] == "undo"
    assert json.loads(receiver.requests[0].body) == {"action": "waiting_room.disable", "incident": "inc-1"}


def test_transitions_below_the_threshold_or_without_an_undo_send_nothing(receiver: WebhookReceiver) -> None:
    a = action(receiver.url, min_severity="critical", undo_template=None)
    assert "skipped" in (a.send(make_notification(severity="warning")) or {})
    assert "skipped" in (a.send(make_notification(event="resolved")) or {})
    assert receiver.requests == []


def test_dry_run_logs_the_call_and_sends_nothing(receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="surgewatch.notifier.webhook"):
        receipt = action(receiver.url, dry_run=True).send(make_notification())
    assert receiver.requests == []
    assert receipt is not None and receipt["dry_run"] is True and receipt["body"]["numbers"]["rate"] == 48.0
    assert "dry run" in caplog.text and "waiting_room.enable" in caplog.text
    assert "urlSECRET" not in caplog.text and WEBHOOK_SECRET not in caplog.text


def test_an_unknown_placeholder_fails_at_start_up_not_during_a_surge() -> None:
    with pytest.raises(ValueError, match="observed_per_hour"):
        WebhookAction("x", "https://hooks.example/x", body_template={"r": "{observed_per_hour}"})


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError):
        WebhookAction("x", "file:///etc/passwd", body_template={})


def test_a_409_from_an_idempotent_receiver_counts_as_done(receiver: WebhookReceiver) -> None:
    receiver.script.append((409, {}, 0.0))
    receipt = action(receiver.url).send(make_notification())
    assert receipt is not None and receipt["duplicate"] is True


def test_retries_of_one_transition_carry_the_same_idempotency_key(receiver: WebhookReceiver) -> None:
    receiver.script.append((503, {"Retry-After": "2"}, 0.0))
    a = action(receiver.url)
    n = make_notification(key="inc-1:2:waiting_room")
    with pytest.raises(ChannelError) as info:
        a.send(n)
    assert info.value.retry_after == 2 and not info.value.permanent
    a.send(n)
    assert [r.headers[IDEMPOTENCY_HEADER] for r in receiver.requests] == ["inc-1:2:waiting_room"] * 2


def test_no_secret_in_repr_or_errors(receiver: WebhookReceiver) -> None:
    receiver.script.append((400, {}, 0.0))
    a = action(receiver.url)
    assert WEBHOOK_SECRET not in repr(a) and "urlSECRET" not in repr(a)
    with pytest.raises(ChannelError) as info:
        a.send(make_notification())
    assert info.value.permanent
    assert "urlSECRET" not in str(info.value) and WEBHOOK_SECRET not in str(info.value)
