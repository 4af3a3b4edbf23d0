"""Every channel through the same failures (apprise-style): timeout, rate limit with Retry-After,
server error, rejected request, rejected credentials, nothing listening.  Each must end as a
ChannelError that says whether a retry helps, and none may show its secret.

The real client libraries (slack_sdk, requests) talk to local fakes speaking the vendors' wire
formats; nothing of ours is mocked.
"""
from __future__ import annotations

import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.http_server import QuietServer

import pytest

from surgewatch.collectors.base import Mention
from surgewatch.notifier import Channel, ChannelError, PagerDutyChannel, SlackChannel, WebhookAction
from surgewatch.notifier.base import Notification
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack

SLACK_TOKEN = "xoxb-1111-2222-SECRETslacktoken"
PD_KEY = "R0UT1NGKEYsecret0000000000000000"
WEBHOOK_SECRET = "whsec-SECRET-shared-with-receiver"
AT = datetime(2026, 11, 28, 10, 5, tzinfo=timezone.utc)
HOSTILE = "<!channel> hi <@U123> & <script>alert(1)</script> <https://evil.example|click> @here *bold* `code`"




def make_mention(i: int = 1, **kw: Any) -> Mention:
    base: dict[str, Any] = dict(
        source="x", id=str(i), brand="Acme", text=f"Acme Live tickets drop at 10! post {i}", created_at=AT,
        url=f"https://x.example/acmefan/status/{i}", author=f"acmefan{i}", likes=40 * i, reposts=12, replies=3,
        reach=12_000 * i, site_links=("https://www.acme.example/tickets",),
    )
    base.update(kw)
    return Mention(**base)


def make_notification(**kw: Any) -> Notification:
    base: dict[str, Any] = dict(
        key="inc-1:1:slack", incident_id="inc-1", brand="Acme", event="opened", severity="warning",
        previous_severity="quiet", at=AT, observed=48, expected=3.1, score=0.991, bucket_seconds=60,
        forecast_peak_rate=120, forecast_seconds_to_peak=1200,
        top_mentions=(make_mention(1), make_mention(2, source="reddit", author="u/acme_lover", reach=None)),
        sources={"x": 30, "reddit": 12, "rss": 6}, site="https://www.acme.example",
        site_pages=(("https://www.acme.example/tickets", 31), ("https://www.acme.example/", 4)),
        runbook_url="https://wiki.acme.example/runbooks/surge",
    )
    base.update(kw)
    return Notification(**base)


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- a generic webhook receiver ----------------------------------------------------------------


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint that records what it gets and answers a scripted status."""

    requests: list[ReceivedRequest] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], float]] = field(default_factory=list)  # (status, headers, delay)
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for each.
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, delay = receiver.script.pop(0) if receiver.script else (200, {}, 0.0)
                if delay:
                    time.sleep(delay)
                receiver.requests.append(ReceivedRequest(self.path, dict(self.headers.items()), body))
                out = b'{"ok": true}' if status < 400 else b'{"error": "nope"}'
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/waiting-room?token=urlSECRET"


# ---- one harness per channel: build it against its fake, script each failure ---------------------


class SlackHarness:
    name = "slack"
    secret = SLACK_TOKEN

    def __enter__(self) -> "SlackHarness":
        self.fake = FakeSlack(token=SLACK_TOKEN).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.stop()

    def channel(self, timeout: float = 5, url: str | None = None) -> SlackChannel:
        return SlackChannel(SLACK_TOKEN, api_url=url or self.fake.base_url, marketing_channel="#marketing",
                            ops_channel="#ops", timeout=timeout, pacer=None)

    def dead_url(self) -> str:
        return f"http://127.0.0.1:{free_port()}/api/"

    def script(self, case: str) -> None:
        f = self.fake
        {
            "timeout": lambda: f.fail_next("chat.postMessage", error=None, delay=1.0),
            "rate_limited": lambda: f.fail_next("chat.postMessage", "ratelimited", retry_after=7),
            "server_error": lambda: f.fail_next("chat.postMessage", status=503),
            "bad_request": lambda: f.fail_next("chat.postMessage", "invalid_blocks"),
            "auth_rejected": f.revoke_token,
        }[case]()


class PagerDutyHarness:
    name = "pagerduty"
    secret = PD_KEY

    def __enter__(self) -> "PagerDutyHarness":
        self.fake = FakePagerDuty(routing_keys=[PD_KEY]).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.stop()

    def channel(self, timeout: float = 5, url: str | None = None) -> PagerDutyChannel:
        return PagerDutyChannel(PD_KEY, events_url=url or self.fake.events_url, timeout=timeout)

    def dead_url(self) -> str:
        return f"http://127.0.0.1:{free_port()}/v2/enqueue"

    def script(self, case: str) -> None:
        f = self.fake
        {
            "timeout": lambda: f.fail_next(202, delay=1.0),
            "rate_limited": lambda: f.fail_next(429, retry_after=7),
            "server_error": lambda: f.fail_next(500),
            # An event PagerDuty refuses: the fake validates like the real endpoint.
            "bad_request": lambda: setattr(self, "_wrong_key", True),
            "auth_rejected": lambda: setattr(self, "_wrong_key", True),
        }[case]()
        if getattr(self, "_wrong_key", False):
            self.fake.routing_keys = {"someone-elses-key"}


class WebhookHarness:
    name = "webhook"
    secret = WEBHOOK_SECRET

    def __enter__(self) -> "WebhookHarness":
        self.fake = WebhookReceiver().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.__exit__()

    def channel(self, timeout: float = 5, url: str | None = None) -> WebhookAction:
        return WebhookAction("waiting_room", url or self.fake.url, secret=WEBHOOK_SECRET,
                             body_template={"enable": True, "rate": "{observed_per_min}"}, dry_run=False, timeout=timeout)

    def dead_url(self) -> str:
        return f"http://127.0.0.1:{free_port()}/hooks/x?token=urlSECRET"

    def script(self, case: str) -> None:
        self.fake.script.append(
            {
                "timeout": (200, {}, 1.0),
                "rate_limited": (429, {"Retry-After": "7"}, 0.0),
                "server_error": (502, {}, 0.0),
                "bad_request": (422, {}, 0.0),
                "auth_rejected": (401, {}, 0.0),
            }[case]
        )


HARNESSES = [SlackHarness, PagerDutyHarness, WebhookHarness]

# case -> (permanent, retry_after)
EXPECTED = {
    "timeout": (False, None),
    "rate_limited": (False, 7.0),
    "server_error": (False, None),
    "bad_request": (True, None),
    "auth_rejected": (True, None),
}


def _assert_secret_hidden(err: BaseException, *secrets: str) -> None:
    shown = [str(err), repr(err), "".join(traceback.format_exception(err))]
    for s in secrets:
        for text in shown:
            assert s not in text


@pytest.mark.parametrize("harness", HARNESSES, ids=lambda h: h.name)
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_channel_sorts_each_failure_into_permanent_or_transient(harness: type, case: str) -> None:
    permanent, retry_after = EXPECTED[case]
    with harness() as h:
        h.script(case)
        ch = h.channel(timeout=0.3 if case == "timeout" else 5)
        with pytest.raises(ChannelError) as info:
            ch.send(make_notification(key=f"inc-1:1:{h.name}"))
    err = info.value
    assert err.permanent is permanent, str(err)
    assert err.retry_after == retry_after, str(err)
    assert h.name in str(err).lower()
    _assert_secret_hidden(err, h.secret, "urlSECRET")


@pytest.mark.parametrize("harness", HARNESSES, ids=lambda h: h.name)
def test_every_channel_reports_nothing_listening_as_transient(harness: type) -> None:
    with harness() as h:
        with pytest.raises(ChannelError) as info:
            h.channel(timeout=2, url=h.dead_url()).send(make_notification())
    assert info.value.permanent is False
    _assert_secret_hidden(info.value, h.secret, "urlSECRET")


@pytest.mark.parametrize("harness", HARNESSES, ids=lambda h: h.name)
def test_every_channel_succeeds_after_a_transient_failure_when_retried(harness: type) -> None:
    with harness() as h:
        h.script("server_error")
        ch = h.channel()
        n = make_notification()
        with pytest.raises(ChannelError):
            ch.send(n)
        receipt = ch.send(n)
    assert receipt, "the retry must return a receipt"


@pytest.mark.parametrize("harness", HARNESSES, ids=lambda h: h.name)
def test_every_channel_hides_its_secret_from_repr_and_satisfies_the_protocol(harness: type) -> None:
    with harness() as h:
        ch = h.channel()
        assert isinstance(ch, Channel)
        assert h.secret not in repr(ch)
        assert "urlSECRET" not in repr(ch)


def test_every_configurable_channel_has_one_row_in_the_registration_table() -> None:
    from surgewatch.config import Channels, TrafficControl
    from surgewatch.registry import CHANNELS

    fields = {name: info.annotation for name, info in Channels.model_fields.items()}
    assert set(CHANNELS) == set(fields) | {"webhook"}
    for name, row in CHANNELS.items():
        model = TrafficControl if name == "webhook" else fields[name].__args__[0]  # X | None
        assert row.config is model, name


def test_every_registered_channel_builds_from_its_config_and_has_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    from surgewatch.config import parse_settings
    from surgewatch.registry import build_channel, configured_channels

    settings = parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}],
        "channels": {"console": {}, "slack": {"ops_channel": "#ops"}, "pagerduty": {}},
        "traffic_controls": [{"name": "scale", "url": "http://127.0.0.1:9/scale", "body": {"action": "up"}}],
    }, env={})
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "R" * 32)
    names = configured_channels(settings)
    assert names == ["console", "slack", "pagerduty", "webhook:scale"]
    for name in names:
        assert isinstance(build_channel(settings, name), Channel), name


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "Sat, 28 Nov 2026 10:05:30 GMT"}, 30.0),
        ({"Retry-After": "Sat, 28 Nov 2026 10:00:00 GMT"}, 0.0),  # already past
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(headers: dict[str, str], expected: float | None) -> None:
    from surgewatch.notifier.http_errors import retry_after_seconds

    assert retry_after_seconds(headers, now=AT) == expected
