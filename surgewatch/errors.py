"""The one error shape for calls to the outside world (a source's API, a channel's service)."""
from __future__ import annotations


class ServiceError(Exception):
    """A call to an outside service failed.  ``permanent`` means retrying cannot help (bad
    credentials, an invalid query, a channel that is gone); otherwise the caller retries with
    backoff, waiting at least ``retry_after`` seconds when the service said so.  ``str()`` is the
    message alone, in the service's own words (secrets scrubbed by whoever raised it)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message
