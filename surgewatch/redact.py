"""The one redactor: every URL, error text and log line that leaves a process goes through here.

Three things are hidden:
- known secret values: the credential environment variables (``SECRET_ENV_NAMES``) and every secret
  the loaded config holds (``register_secret``: ``SecretStr`` fields, passwords in store and broker
  URLs), wherever they appear -- an outside service may echo a token back in its error text;
- the password of a URL (``redis://:pw@host``, ``user:pw@``) and secret-looking query values
  (``?password=``, ``?api_key=``, ``?token=``);
- ``Bearer <token>`` / ``Basic <credentials>`` / ``password=...`` (also ``token=``, ``secret=``) in free text.

It imports nothing of the project, so collectors and notifiers can use it too.
"""
from __future__ import annotations

import os
import re
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

SECRET_ENV_NAMES = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "PAGERDUTY_ROUTING_KEY",
    "X_BEARER_TOKEN",
    "REDDIT_CLIENT_ID",
    "REDDIT_CLIENT_SECRET",
    "BLUESKY_APP_PASSWORD",
    "MASTODON_ACCESS_TOKEN",
    "SURGEWATCH_WEBHOOK_SECRET",
    "PROMETHEUS_TOKEN",
)
# Short values would mask ordinary words in every log line; real tokens are long.
MIN_SECRET_LENGTH = 6

# Query parameters whose values are secrets in some URLs (private feeds, API gateways, Redis).
SECRET_PARAM = re.compile(r"(key|token|secret|pass|pwd|sig|auth|session|credential)", re.IGNORECASE)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
# A credential after an auth scheme has a digit in it; "Basic configuration." is prose.
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic)(\s+)(?=[A-Za-z._~+/=%-]*[0-9])[A-Za-z0-9._~+/=%-]{6,}",
                          re.IGNORECASE)
_KEY_VALUE = re.compile(
    r"\b([A-Za-z_]*(?:password|passwd|secret|token|api_key|apikey)[A-Za-z_]*)(\s*=\s*)(\"?)([^\s\"'&,;]{3,})",
    re.IGNORECASE)

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Hide ``value`` from every redacted text in this process from now on."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _registered.add(value)


def known_secrets() -> list[str]:
    """Longest first, so that a secret containing another is masked whole."""
    values = {v for name in SECRET_ENV_NAMES if len(v := os.environ.get(name, "")) >= MIN_SECRET_LENGTH}
    with _lock:
        values |= _registered
    return sorted(values, key=len, reverse=True)


def redact_url(url: str, *, hide_query: bool = False) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``; secret-looking query
    values (``?password=``, ``?api_key=``) masked, or every query value with ``hide_query`` (webhook
    URLs, whose parameters are often the credential).  A URL with nothing to hide comes back
    unchanged (``sqlite:////abs/path`` is not folded to ``sqlite://abs/path``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        # "user:password@" keeps the user; a lone token may be a password put where the user goes
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:{MASK}@{hostport}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, MASK if (hide_query or SECRET_PARAM.search(k)) and v else v) for k, v in pairs]
        if masked != pairs:
            query = urlencode(masked, safe="*:/")
    if (netloc, query) == (parts.netloc, parts.query):
        return _mask_known(url, known_secrets())
    return _mask_known(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)), known_secrets())


def redact(text: str) -> str:
    """Free text (an error message, a log line) with every secret this module knows masked."""
    if not text:
        return text
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}", text)
    return _mask_known(text, known_secrets())


def _mask_known(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text
