"""The store's one typed error, in the project's usual shape (see collectors.base.SourceError)."""
from __future__ import annotations

from surgewatch.redact import redact_url

__all__ = ["StoreError", "redact_url"]


class StoreError(Exception):
    """The store could not do what was asked.  ``permanent`` means retrying cannot help (bad
    credentials, a URL that names no store); a transient error (server down, timeout) may clear
    on a retry with backoff.  Messages name the store by :func:`redact_url`, never its password."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent

    def __str__(self) -> str:
        return self.message
