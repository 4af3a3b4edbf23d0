"""The store's one typed error, in the project's usual shape (see collectors.base.SourceError)."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


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


def redact_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0`` (also ``?password=``)."""
    if "@" not in url and "password" not in url.lower():
        return url  # nothing to hide; and urlunsplit would fold "sqlite:////abs" to "sqlite://abs"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable store URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        # "user:password@" keeps the user; a lone token may be a password put where the user goes
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if "password" in k.lower() else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
