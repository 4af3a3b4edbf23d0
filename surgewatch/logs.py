"""Logging set-up with a last line of defence: every record passes :func:`surgewatch.redact.redact`
(known secret values, URL passwords, ``Bearer`` tokens) before it is written, whatever wrote it --
our code, a library's debug output, an exception text.  Every process sets it up: the CLI for
each command (``surgewatch.cli.main``), Celery workers and beat through ``setup_logging``."""
from __future__ import annotations

import logging

from surgewatch.redact import SECRET_ENV_NAMES, redact

__all__ = ["RedactSecrets", "SECRET_ENV_NAMES", "setup"]


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
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
