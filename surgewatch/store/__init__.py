"""Stores: where mentions, counts, cursors, incidents and delivery claims live.

``open_store(url)`` picks the implementation from the URL scheme:

    sqlite:///relative/path.db     the embedded default (path relative to the working directory)
    sqlite:////absolute/path.db
    redis://host:6379/0            cluster mode; also rediss:// (TLS) and unix:///path/redis.sock
"""
from __future__ import annotations

from typing import Any

from .base import IngestResult, Store
from .errors import StoreError, redact_url

__all__ = ["IngestResult", "Store", "StoreError", "open_store"]


def open_store(url: str, *, bucket_seconds: int = 60, **kw: Any) -> Store:
    """Build the store a URL names.  ``kw`` goes to the implementation (``dedup_ttl``,
    ``recent_cap``, and for Redis ``retention_seconds`` and ``prefix``)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        # like SQLAlchemy: three slashes then a relative path, four for an absolute one
        path = url[len("sqlite:///"):] if url.lower().startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise ValueError(f"store URL {url!r} names no database file; "
                             "use sqlite:///relative.db or sqlite:////absolute/path.db")
        return SqliteStore(path, bucket_seconds=bucket_seconds, **kw)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        return RedisStore(url, bucket_seconds=bucket_seconds, **kw)
    raise ValueError(f"unsupported store URL {redact_url(url)!r}: expected sqlite:///file.db, "
                     "redis://host:port/db or rediss://host:port/db")
