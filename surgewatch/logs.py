"""Logging set-up with a last line of defence: any known secret value that reaches a log record
(through a library's debug output, an exception text, a URL) is replaced by ``***``."""
from __future__ import annotations

import logging
import os

SECRET_ENV_NAMES = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "PAGERDUTY_ROUTING_KEY",
    "X_BEARER_TOKEN",
    "REDDIT_CLIENT_ID",
    "REDDIT_CLIENT_SECRET",
    "BLUESKY_APP_PASSWORD",
    "MASTODON_ACCESS_TOKEN",
    "SURGEWATCH_WEBHOOK_SECRET",
)


def _secrets() -> list[str]:
    # Short values would redact ordinary words; real tokens are long.
    return [v for name in SECRET_ENV_NAMES if len(v := os.environ.get(name, "")) >= 6]


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _secrets()
        if not secrets:
            return True
        message = record.getMessage()
        redacted = message
        for s in secrets:
            redacted = redacted.replace(s, "***")
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for s in secrets:
                text = text.replace(s, "***")
            record.exc_text = text
            record.exc_info = None
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactSecrets) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactSecrets())
        root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("urllib3", "slack_sdk", "prawcore", "tweepy"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
