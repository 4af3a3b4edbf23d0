"""The Collector protocol and the Mention model every source produces.

A collector polls one source for one brand: ``fetch(brand, cursor) -> Batch``.  It never writes to
the store; the pipeline ingests the batch and only then saves ``batch.cursor`` (so a crash between
the two re-fetches, and the store's dedup by ``(source, id)`` absorbs the repeat).
"""
from __future__ import annotations

import dataclasses
import logging
import re
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
    # What the source returned but the collector did not take, with the reason (older than the
    # look-back, already taken, no match): ``surgewatch fetch`` shows them; the pipeline ignores them.
    skipped: list["Skipped"] = field(default_factory=list)
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


MAX_SKIPPED = 500  # skipped items kept per batch: enough to explain a poll, bounded against a flood


@dataclass(frozen=True, slots=True)
class Skipped:
    """One item a source returned that the poll did not take, and why."""

    source: str
    id: str
    text: str
    reason: str
    created_at: datetime | None = None
    url: str = ""


def skip(batch: "Batch", source: str, item_id: Any, text: Any, reason: str, *,
         created_at: datetime | None = None, url: Any = "") -> None:
    """Record a skipped item on ``batch`` (bounded by :data:`MAX_SKIPPED`)."""
    if len(batch.skipped) < MAX_SKIPPED:
        batch.skipped.append(Skipped(source, str(item_id)[:200], str(text or "")[:500], reason,
                                     created_at, str(url or "")[:500]))


# Credentials a service may echo back in an error (X repeats the Authorization header in some 401
# details; OAuth endpoints echo tokens in query strings).  Scrubbed from every SourceError message,
# so no token reaches the log, the stored health, ``status`` or an ops alert.
_CREDENTIAL_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/%-]{8,}=*"),
    re.compile(r"(?i)\b(access_token|refresh_token|client_secret|api_key|apikey|password|token|secret|"
               r"sig|signature)(\s*[=:]\s*|%3D)[^\s&\"',;)]+"),
)


_SECRETS: dict[str, None] = {}  # the credentials collectors were built with (remember_secret), oldest first
MAX_SECRETS = 64  # Bluesky's access tokens are renewed every two hours: keep the recent ones


def remember_secret(value: str | None) -> None:
    """Scrub ``value`` from every SourceError from now on: a service may echo a token back bare,
    without the "Bearer" that the patterns recognise."""
    if value and len(value) >= 8:
        _SECRETS.pop(value, None)
        _SECRETS[value] = None
        while len(_SECRETS) > MAX_SECRETS:
            del _SECRETS[next(iter(_SECRETS))]


def scrub(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` with credential-looking values, the remembered secrets and each of ``secrets``
    masked as ``***``."""
    for secret in (*secrets, *sorted(_SECRETS, key=len, reverse=True)):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return text


class SourceError(ServiceError):
    """A poll failed.  ``permanent`` means retrying cannot help (bad credentials, invalid query):
    the source is disabled for this brand and ops are told once.  Transient errors (timeouts,
    429, 5xx) are retried with backoff, honouring ``retry_after`` when the source sent one.
    The message is one line with no echoed credential."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(scrub(" ".join(str(message).split())), permanent=permanent, retry_after=retry_after)


def source_message(source: str, message: str) -> str:
    """``message`` prefixed with ``source: `` unless it already is (no "x: x: ...")."""
    text = str(message)
    return text if text.startswith(f"{source}:") else f"{source}: {text}"


log = logging.getLogger("collectors")


def fetch_checked(collector: "Collector", brand: "BrandSpec", cursor: dict[str, Any] | None) -> Batch:
    """``collector.fetch`` with every failure as a :class:`SourceError` naming the source and the
    brand.  Collectors validate what they read and raise SourceError themselves; this is the net
    under them, so that a bug or an answer nobody foresaw is still recorded in the source's health
    (and shown as one line by ``fetch``), never a bare ``TypeError`` that leaves health ``ok``."""
    name = getattr(collector, "name", "source")
    try:
        return collector.fetch(brand, cursor)
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - the net: recorded, logged with its type, re-raised typed
        log.error("%s for %s: unexpected %s while reading the answer", name, brand.name, type(exc).__name__,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        raise SourceError(f"{name}: could not use the answer for brand {brand.name!r} (an unexpected "
                          f"{_kind(exc)} while reading it)") from exc


def _kind(exc: BaseException) -> str:
    # A plain-words label rather than the bare class name ("TypeError: ..."), which tells ops nothing.
    if isinstance(exc, (TypeError, ValueError, KeyError, IndexError, AttributeError)):
        return "value of the wrong type or shape"
    if isinstance(exc, (OverflowError, ArithmeticError)):
        return "number out of range"
    if isinstance(exc, MemoryError):
        return "answer too large for memory"
    if isinstance(exc, (TimeoutError, OSError)):
        return "network failure"
    return "failure"


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
