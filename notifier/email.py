"""The e-mail channel: the weekly digest (HTML with its chart inline, and a plain-text part) and,
from ``min_severity`` up, the alerts, through any SMTP server (smtplib, STARTTLS by default).

A refused recipient or a refused login is permanent (retrying cannot help); a connection that fails
or a 4xx answer is transient."""
from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from surgewatch.notifier import render
from surgewatch.notifier.base import ChannelError, Notification


class EmailChannel:
    name = "email"

    def __init__(self, *, smtp_host: str, smtp_port: int = 587, starttls: bool = True, username: str | None = None,
                 password: str | None = None, sender: str, to: list[str], timeout: float = 10.0):
        self.smtp_host, self.smtp_port, self.starttls = smtp_host, smtp_port, starttls
        self.username, self._password = username, password
        self.sender, self.to, self.timeout = sender, list(to), timeout

    # -- messages --------------------------------------------------------------------------------
    def alert_message(self, n: Notification) -> EmailMessage:
        title, body = render.plain_message(n)
        msg = self._message(title)
        msg.set_content(body)
        return msg

    def digest_message(self, subject: str, text: str, html: str | None, chart_png: bytes | None,
                       chart_cid: str | None = None) -> EmailMessage:
        """multipart/alternative: the plain text, then the HTML with the chart as an inline part
        (``cid:``; mail clients block ``data:`` images)."""
        msg = self._message(subject)
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
            if chart_png is not None and chart_cid is not None:
                msg.get_payload()[1].add_related(chart_png, "image", "png", cid=f"<{chart_cid}>",
                                                 filename="digest-chart.png")
        return msg

    @staticmethod
    def new_cid() -> str:
        return make_msgid(domain="surgewatch.local")[1:-1]

    def _message(self, subject: str) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = subject.replace("\r", " ").replace("\n", " ")[:250]
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        return msg

    # -- sending ---------------------------------------------------------------------------------
    def send(self, notification: Notification) -> dict[str, Any] | None:
        return self.deliver(self.alert_message(notification))

    def deliver(self, msg: EmailMessage) -> dict[str, Any]:
        where = f"email: {self.smtp_host}:{self.smtp_port}"
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self._password or "")
                refused = smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(f"{where} refused the login ({exc.smtp_code})", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise ChannelError(f"{where} refused every recipient: {', '.join(exc.recipients)}", permanent=True) from None
        except smtplib.SMTPResponseException as exc:
            words = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise ChannelError(f"{where} answered {exc.smtp_code} {words[:200]}",
                               permanent=500 <= exc.smtp_code < 600) from None
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            raise ChannelError(f"{where} unreachable: {type(exc).__name__}: {str(exc)[:200]}") from None
        if refused:
            raise ChannelError(f"{where} refused {', '.join(refused)} (the others got it)", permanent=True)
        return {"to": list(self.to), "message_id": msg.get("Message-ID")}

    def __repr__(self) -> str:
        return f"EmailChannel({self.smtp_host}:{self.smtp_port}, to={len(self.to)})"
