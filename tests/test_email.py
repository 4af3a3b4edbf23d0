"""The e-mail channel and the digest by e-mail, against a real SMTP server on loopback (aiosmtpd),
through smtplib."""
from __future__ import annotations

import email
import email.policy
import re
from typing import Any, Iterator

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message

from surgewatch.config import ConfigError, configured_channels, parse_settings
from surgewatch.notifier.base import ChannelError
from surgewatch.notifier.email import EmailChannel
from tests.test_notifier_contract import free_port, make_notification


class Inbox(Message):
    def __init__(self) -> None:
        super().__init__(email.message.EmailMessage)
        self.messages: list[email.message.EmailMessage] = []

    def handle_message(self, message: Any) -> None:
        self.messages.append(email.message_from_bytes(message.as_bytes(), policy=email.policy.default))


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def channel(port: int, **kw: Any) -> EmailChannel:
    return EmailChannel(smtp_host="127.0.0.1", smtp_port=port, starttls=False, sender="surgewatch@acme.example",
                        to=["marketing@acme.example", "ops@acme.example"], timeout=5, **kw)


def test_an_alert_e_mail_names_the_brand_and_the_rate(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    receipt = channel(port).send(make_notification())
    (msg,) = inbox.messages
    assert msg["Subject"] == "[WARNING] Acme opened" and msg["From"] == "surgewatch@acme.example"
    assert msg["To"] == "marketing@acme.example, ops@acme.example"
    assert "48 mentions/min vs 3.1 expected" in msg.get_content()
    assert receipt["to"] == ["marketing@acme.example", "ops@acme.example"]


def test_the_digest_e_mail_has_a_text_part_and_html_with_its_chart_inline(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    ch = channel(port)
    png = b"\x89PNG\r\n\x1a\nfake-chart"
    ch.deliver(ch.digest_message("Acme weekly digest 2026-W48", "# Acme\n3,407 mentions", "<p>x</p>", None))
    cid = ch.new_cid()
    ch.deliver(ch.digest_message("Acme weekly digest 2026-W48", "# Acme\n3,407 mentions",
                                 f'<h1>Acme</h1><img src="cid:{cid}">', png, cid))
    msg = inbox.messages[-1]
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html_part = msg.get_body(("html",))
    assert "3,407 mentions" in text and f"cid:{cid}" in html_part.get_content()
    images = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0]["Content-ID"] == f"<{cid}>" and images[0].get_content() == png


def test_nobody_listening_is_a_transient_failure_naming_the_server() -> None:
    with pytest.raises(ChannelError) as caught:
        channel(free_port()).send(make_notification())
    assert not caught.value.permanent and "email: 127.0.0.1:" in str(caught.value)


def test_a_refused_login_is_permanent_and_never_shows_the_password(smtp: tuple[Inbox, int]) -> None:
    _, port = smtp
    with pytest.raises(ChannelError) as caught:
        channel(port, username="bot", password="hunter2-secret").send(make_notification())
    assert "hunter2-secret" not in str(caught.value)
    assert "email:" in str(caught.value)  # the server does not offer AUTH: smtplib refuses to log in


def test_e_mail_is_the_digest_only_unless_alerts_are_asked_for() -> None:
    base = {"brands": [{"name": "Acme", "query": "acme"}]}
    mail = {"smtp_host": "127.0.0.1", "from": "sw@acme.example", "to": ["m@acme.example"]}
    assert "email" not in configured_channels(parse_settings({**base, "channels": {"email": mail}}, env={}))
    alerting = parse_settings({**base, "channels": {"email": {**mail, "min_severity": "critical"}}}, env={})
    assert "email" in configured_channels(alerting)


def test_a_bad_address_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"brands": [{"name": "Acme", "query": "acme"}],
                        "channels": {"email": {"smtp_host": "h", "from": "sw@acme.example", "to": ["not-an-address"]}}},
                       env={})
    assert any("channels.email.to" in e and "not-an-address" in e for e in caught.value.errors)


@pytest.mark.slow
def test_after_the_demo_digest_send_e_mails_the_weekly_digest(smtp: tuple[Inbox, int], tmp_path) -> None:
    """The issue's check: ``surgewatch demo --config FILE --keep DIR`` with an e-mail channel, then
    ``surgewatch digest --week W --config DIR/config.yaml --send``."""
    import subprocess
    import sys

    from tests.test_demo import run_demo

    inbox, port = smtp
    cfg = tmp_path / "channels.yaml"
    cfg.write_text(yaml.safe_dump({
        "brands": [{"name": "placeholder", "query": "x"}],
        "channels": {"email": {"smtp_host": "127.0.0.1", "smtp_port": port, "starttls": False,
                               "from": "surgewatch@acme.example", "to": ["marketing@acme.example"]}},
    }))
    run_demo("--config", str(cfg), "--keep", str(tmp_path / "demo"), "--seconds", "30")
    proc = subprocess.run([sys.executable, "-m", "surgewatch", "digest", "--week", "2026-W48", "--config",
                           str(tmp_path / "demo" / "config.yaml"), "--out", str(tmp_path / "digests"), "--send"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "by e-mail to marketing@acme.example" in proc.stdout
    (msg,) = inbox.messages
    assert msg["Subject"].startswith("Acme weekly digest 2026-W48")
    html = msg.get_body(("html",)).get_content()
    cid = re.search(r'src="cid:([^"]+)"', html)
    assert cid, "the HTML part shows its chart inline"
    assert any(p["Content-ID"] == f"<{cid[1]}>" for p in msg.walk() if p.get_content_type() == "image/png")
    assert "Acme" in msg.get_body(("plain",)).get_content()
