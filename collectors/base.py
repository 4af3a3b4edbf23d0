"""The Collector protocol and the Mention model every source produces.

A collector polls one source for one brand: ``fetch(brand, cursor) -> Batch``.  It never writes to
the store; the pipeline ingests the batch and only then saves ``batch.cursor`` (so a crash between
the two re-fetches, and the store's dedup by ``(source, id)`` absorbs the repeat).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from surgewatch.errors import ServiceError


@dataclass(frozen=True, slots=True)
class Mention:
    """One post, article or comment that matched a brand's query."""

    source: str  # "rss", "x", "reddit", ...
    id: str  # unique within the source (a guid, a tweet id, a reddit fullname)
    brand: str
    text: str
    created_at: datetime  # timezone-aware, UTC
    url: str = ""
    author: str = ""
    likes: int = 0
    reposts: int = 0
    replies: int = 0
    score: int = 0  # source-specific engagement score (reddit score, HN points)
    reach: int | None = None  # followers of the author, where the source tells
    lang: str = ""
    site_links: tuple[str, ...] = ()  # links in the post that point at the brand's own site

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None:
            raise ValueError(f"Mention {self.source}:{self.id} has a naive created_at; use UTC")

    @property
    def key(self) -> str:
        return f"{self.source}:{self.id}"

    @property
    def timestamp(self) -> float:
        return self.created_at.timestamp()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["created_at"] = self.created_at.astimezone(timezone.utc).isoformat()
        d["site_links"] = list(self.site_links)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Mention":
        d = dict(d)
        d["created_at"] = datetime.fromisoformat(d["created_at"])
        d["site_links"] = tuple(d.get("site_links") or ())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(slots=True)
class Batch:
    """What one poll returned.

    ``cursor`` is opaque, JSON-serialisable state for the next poll (an etag, a since_id); ``None``
    means "keep the stored cursor".  ``volume`` carries counts the source reports without posts
    (X's recent-counts endpoint): ``[(bucket_start_epoch, count), ...]``.
    """

    mentions: list[Mention] = field(default_factory=list)
    cursor: dict[str, Any] | None = None
    volume: list[tuple[float, int]] = field(default_factory=list)
    requests_made: int = 0
    retry_after: float | None = None  # the source asked us to wait this many seconds
    notes: list[str] = field(default_factory=list)  # non-fatal problems worth showing in health
    # A source whose counts come in ``volume`` (X) reads posts as a sample: they are kept (top posts,
    # dedup) but not counted, and its buckets are complete only up to ``complete_until`` (the last
    # census), which moves every ``complete_every`` seconds; scoring waits for it.
    posts_are_sample: bool = False
    complete_until: float | None = None
    complete_every: float | None = None


class SourceError(ServiceError):
    """A poll failed.  ``permanent`` means retrying cannot help (bad credentials, invalid query):
    the source is disabled for this brand and ops are told once.  Transient errors (timeouts,
    429, 5xx) are retried with backoff, honouring ``retry_after`` when the source sent one."""


@runtime_checkable
class Collector(Protocol):
    """One source.  Built from its config section; ``fetch`` does one poll for one brand."""

    name: str

    def fetch(self, brand: "BrandSpec", cursor: dict[str, Any] | None) -> Batch: ...


@dataclass(frozen=True, slots=True)
class BrandSpec:
    """What a collector needs to know about a brand (kept free of the config module)."""

    name: str
    query: str
    site: str | None = None
