"""RSS 2.0 / Atom feeds: poll each configured feed, keep the entries that match the brand's query.

Per poll and feed: a conditional GET (``If-None-Match`` / ``If-Modified-Since`` from the cursor; a
304 costs nothing), the body capped and timed by :func:`collectors.http.get_capped`, a guard
against entity-expansion documents, then feedparser on the bytes.

The cursor is ``{"feeds": {feed_key: {"etag", "modified", "seen"}}}``; ``seen`` holds the ids of
recent mentions, so an entry that stays in a feed for weeks is not counted again once the store's
dedup window has passed.  A feed that fails keeps its previous state (the cursor never advances
past what was not read), the other feeds are still collected, and the failure becomes one line in
``Batch.notes``; only when every feed fails does the poll raise :class:`SourceError`.
"""
from __future__ import annotations

import hashlib
import io
import re
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from xml.parsers import expat
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit

from concurrent.futures import ThreadPoolExecutor

import feedparser
import requests

from surgewatch.collectors.base import Batch, BrandSpec, Mention, SourceError
from surgewatch.collectors.http import FetchFailure, get_capped, redact_url, utc_now
from surgewatch.collectors.links import site_links
from surgewatch.collectors.query import Query, QueryError, parse_query

SEEN_PER_FEED = 500  # ids remembered per feed; feeds carry 10-100 entries, Google News up to 100
MAX_TEXT = 10_000  # characters of a mention's text kept (matching sees it all)
# A feed's clock or typo must not put a mention in a bucket that has not happened yet.
FUTURE_SLACK = timedelta(minutes=5)

# Tracking parameters that differ between syndicated copies of one story.
_TRACKING_PARAMS = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|igshid|mc_cid|mc_eid|_ga|_hsenc|_hsmi|ref_src)$",
    re.IGNORECASE,
)

# Fallback scan for prologs expat cannot read: any ENTITY declaration, in any of the encodings XML
# allows (UTF-16/32 interleave NUL bytes).
_ENTITY_DECL = re.compile(rb"<\x00{0,3}!\x00{0,3}E\x00{0,3}N\x00{0,3}T\x00{0,3}I\x00{0,3}T\x00{0,3}Y")
# The only declarations allowed through: a name bound to one character reference, which cannot
# expand (feedparser keeps the same kind; XHTML-ish feeds declare &nbsp; this way).
_SAFE_ENTITY_DECL = re.compile(rb'<!ENTITY\s+\w+\s+"&#x?[0-9a-fA-F]+;"\s*>')

ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"


class RssCollector:
    """Polls a fixed list of RSS/Atom feeds for every brand."""

    name = "rss"

    def __init__(
        self,
        feeds: list[str],
        *,
        timeout: float = 10,
        max_bytes: int = 5_000_000,
        user_agent: str = "SurgeWatch/0.1",
        session: requests.Session | None = None,
        now: Callable[[], float | datetime] = time.time,
        max_workers: int = 4,
    ):
        self.feeds = list(dict.fromkeys(feeds))
        self.max_workers = max(1, max_workers)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self.session = session or requests.Session()
        self.now = now

    def __repr__(self) -> str:
        return f"{type(self).__name__}(feeds={[redact_url(u) for u in self.feeds]!r})"

    def feed_urls(self, brand: BrandSpec, query: Query) -> list[str]:
        """The feeds to read for ``brand`` (the same list for every brand here)."""
        return self.feeds

    # -- one poll -----------------------------------------------------------------------------
    def fetch(self, brand: BrandSpec, cursor: dict[str, Any] | None) -> Batch:
        try:
            query = parse_query(brand.query)
        except QueryError as exc:
            raise SourceError(f"{self.name}: invalid query for brand {brand.name!r}: {exc}", permanent=True) from None
        urls = self.feed_urls(brand, query)
        if not urls:
            raise SourceError(f"{self.name}: no feeds configured", permanent=True)
        previous: dict[str, Any] = dict((cursor or {}).get("feeds") or {})
        now = utc_now(self.now)
        # An entry already counted from any feed is not counted again (syndication, restarts).
        already = {mid for state in previous.values() if isinstance(state, dict) for mid in state.get("seen") or ()}

        states: dict[str, Any] = {}
        found: dict[str, Mention] = {}
        failures: list[FetchFailure] = []
        keyed = [(url, feed_key(url)) for url in urls]
        prior = {key: previous[key] if isinstance(previous.get(key), dict) else {} for _, key in keyed}
        reads = self._read_all([(url, prior[key]) for url, key in keyed])
        notes: list[str] = []
        for (url, key), outcome in zip(keyed, reads):
            state = prior[key]
            if isinstance(outcome, FetchFailure):
                failures.append(outcome)
                notes.append(f"{self.name}: {outcome.message}")
                if state:
                    states[key] = state  # unchanged: the next poll retries from here
                continue
            parsed, validators, moved_to = outcome
            if moved_to:
                notes.append(f"{self.name}: {redact_url(url)} moved permanently to {redact_url(moved_to)}; update the config")
            if parsed is None:  # 304 Not Modified
                states[key] = state
                continue
            mine: list[str] = []
            for mention in self._mentions(parsed, brand, query, now):
                mine.append(mention.id)
                if mention.id not in already and mention.id not in found:
                    found[mention.id] = mention
            seen = list(dict.fromkeys(mine + list(state.get("seen") or ())))[:SEEN_PER_FEED]
            states[key] = {**validators, "seen": seen}

        if failures and len(failures) == len(urls):
            permanent = all(f.permanent for f in failures)
            waits = [f.retry_after for f in failures if f.retry_after is not None]
            detail = "; ".join(f.message for f in failures)
            raise SourceError(
                f"{self.name}: every feed failed: {detail}",
                permanent=permanent,
                retry_after=None if permanent or not waits else max(waits),
            )
        mentions = sorted(found.values(), key=lambda m: m.created_at)
        return Batch(mentions=mentions, cursor={"feeds": states}, requests_made=len(urls), notes=notes)

    # -- one feed -----------------------------------------------------------------------------
    def _read_all(self, jobs: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """:meth:`_read` every feed, a few at a time, so one slow feed (up to 3 x timeout) does not
        hold up the others; results (or the FetchFailure) in the order of ``jobs``."""

        def one(job: tuple[str, dict[str, Any]]) -> Any:
            try:
                return self._read(*job)
            except FetchFailure as failure:
                return failure

        if len(jobs) <= 1 or self.max_workers == 1:
            return [one(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(jobs)), thread_name_prefix="feed") as pool:
            return list(pool.map(one, jobs))

    def _read(self, url: str, state: dict[str, Any]) -> tuple[Any, dict[str, str | None], str | None]:
        """Fetch and parse one feed: (parsed or None when not modified, new validators, the new
        URL if the feed moved permanently)."""
        headers = {"User-Agent": self.user_agent, "Accept": ACCEPT}
        if state.get("etag"):
            headers["If-None-Match"] = str(state["etag"])
        if state.get("modified"):
            headers["If-Modified-Since"] = str(state["modified"])
        result = get_capped(
            self.session, url, headers=headers, timeout=self.timeout, max_bytes=self.max_bytes,
            now=lambda: utc_now(self.now).timestamp(),
        )
        moved_to = result.url if result.moved else None
        if result.status == 304:
            return None, {}, moved_to
        shown = redact_url(url)
        unsafe = _unsafe_entity(result.body)
        if unsafe:
            raise FetchFailure(
                f"{shown}: refused: the document declares XML entities ({unsafe}), a known denial-of-service"
                " pattern (billion laughs)",
                permanent=True,
            )
        response_headers = {"content-location": result.url}
        for name in ("content-type", "content-language"):
            if result.headers.get(name):
                response_headers[name] = result.headers[name]
        # A BytesIO, never the bytes themselves: feedparser treats a plain string as a URL or a
        # file path to open (its docs warn against passing untrusted strings).
        parsed = feedparser.parse(io.BytesIO(result.body), response_headers=response_headers)
        if not parsed.entries and (parsed.get("bozo") or not parsed.get("version")):
            problem = parsed.get("bozo_exception")
            why = f"{type(problem).__name__}: {_one_line(str(problem), 80)}" if problem else "no RSS or Atom root element"
            ctype = result.headers.get("content-type", "no content type")
            raise FetchFailure(f"{shown}: not an RSS/Atom feed ({_one_line(ctype, 60)}; {why})", permanent=True)
        validators = {"etag": result.headers.get("ETag"), "modified": result.headers.get("Last-Modified")}
        return parsed, validators, moved_to

    def _mentions(self, parsed: Any, brand: BrandSpec, query: Query, now: datetime) -> Iterable[Mention]:
        feed_lang = (parsed.get("feed") or {}).get("language") or ""
        for entry in parsed.entries:
            title, title_links = _text_of(entry.get("title_detail"), entry.get("title"))
            body_detail = entry.get("summary_detail")
            body_value = entry.get("summary")
            if not body_value and entry.get("content"):
                body_detail = entry["content"][0]
                body_value = body_detail.get("value")
            body, body_links = _text_of(body_detail, body_value)
            if not title and not body:
                continue
            if body and title and _words(body) <= _words(title):
                body = ""  # the summary only repeats the headline (Google News, many CMSs)
            text = title if not body or body == title else f"{title}\n{body}" if title else body
            if not query.matches(text):
                continue
            lang = ((entry.get("title_detail") or {}).get("language") or feed_lang or "").strip()
            if not query.accepts_lang(lang):
                continue
            link = (entry.get("link") or "").strip()
            urls = [link] + [l.get("href", "") for l in entry.get("links") or ()] + title_links + body_links
            yield Mention(
                source=self.name,
                id=entry_id(entry, title),
                brand=brand.name,
                text=text[:MAX_TEXT],
                created_at=_entry_time(entry, now),
                url=link,
                author=_one_line(_author(entry), 200),
                lang=lang[:16],
                site_links=site_links([u for u in urls if u], brand.site)[:20],
            )


# -- ids and links ------------------------------------------------------------------------------
def normalise_link(url: str) -> str:
    """The form of a link that syndicated copies share: no scheme, no ``www.``, no default port,
    no fragment, no tracking parameters, sorted query, no trailing slash; host lower-cased.

    >>> normalise_link("https://www.Example.com/a/b/?utm_source=x&id=2#top")
    'example.com/a/b?id=2'
    """
    text = url.strip()
    try:
        parts = urlsplit(text if "//" in text else "//" + text)
        host = (parts.hostname or "").rstrip(".").removeprefix("www.")
        port = parts.port
    except ValueError:  # untrusted text: "http://[broken"
        return text
    if port and port not in (80, 443):
        host = f"{host}:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING_PARAMS.match(k)]
    path = parts.path.rstrip("/")
    tail = "?" + urlencode(sorted(query)) if query else ""
    return host + path + tail


def entry_id(entry: Any, title: str = "") -> str:
    """A stable id for a feed entry: its normalised link (shared by syndicated copies), else its
    guid, else a hash of its title.  Long ids are hashed to keep cursors small."""
    link = (entry.get("link") or "").strip()
    if link:
        ident = normalise_link(link)
    elif entry.get("id"):
        ident = "guid:" + str(entry["id"]).strip()
    else:
        words = " ".join((title or entry.get("title") or "").casefold().split())
        ident = "title:" + hashlib.sha256(words.encode("utf-8")).hexdigest()[:32]
    if len(ident) > 200:
        ident = "sha256:" + hashlib.sha256(ident.encode("utf-8")).hexdigest()[:40]
    return ident


def feed_key(url: str) -> str:
    """The cursor key of a feed: its URL, unless the URL carries credentials, which must not be
    copied into the store; then a hash of it."""
    shown = redact_url(url)
    if shown == url:
        return url
    return "sha256:" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


# -- entry fields -------------------------------------------------------------------------------
class _TextAndLinks(HTMLParser):
    """Visible text and link targets of an HTML fragment (feedparser has already sanitised it)."""

    _BLOCK = frozenset({"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        if tag in self._BLOCK:
            self.parts.append(" ")
        for name, value in attrs:
            if name in ("href", "src") and value and tag in ("a", "area"):
                self.links.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        if tag in self._BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _text_of(detail: Any, value: Any) -> tuple[str, list[str]]:
    """Plain text (whitespace collapsed) and links of a title/summary, stripping HTML only when
    the feed says it is HTML (a plain-text title "AT&T <3 Acme" must survive)."""
    if not value:
        return "", []
    value = str(value)
    kind = (detail or {}).get("type") or "text/html"
    if "html" not in kind:
        return " ".join(value.split()), []
    parser = _TextAndLinks()
    parser.feed(value)
    parser.close()
    return " ".join("".join(parser.parts).split()), parser.links


def _entry_time(entry: Any, now: datetime) -> datetime:
    for name in ("published_parsed", "updated_parsed", "created_parsed"):
        stamp = entry.get(name)
        if stamp:
            try:
                when = datetime(*stamp[:6], tzinfo=timezone.utc)  # feedparser normalises to UTC
            except (TypeError, ValueError):
                continue
            return now if when > now + FUTURE_SLACK else when
    return now


def _author(entry: Any) -> str:
    if entry.get("author"):
        return str(entry["author"])
    source = entry.get("source") or {}
    return str(source.get("title") or "")  # Google News names the publisher here


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def _one_line(text: str, limit: int) -> str:
    return " ".join(str(text).split())[:limit]


class _RootReached(Exception):
    """The prolog is over: no entity can be declared past the root element's start tag."""


class _UnsafeEntity(Exception):
    pass


def _unsafe_entity(body: bytes) -> str | None:
    """The first ENTITY declaration that could expand (billion laughs, quadratic blowup) or reach
    outside (XXE), or None.

    feedparser's own defence strips such declarations with a line-anchored regex, which a
    one-line document slips past, and then relies on the expat it is linked with (2.4+ caps
    amplification, older builds do not).  So the prolog is read here first with expat itself, the
    way defusedxml does it (an ``EntityDeclHandler`` that refuses), stopping at the root element:
    the same grammar as the real parse, a few microseconds, and an entity quoted in an article's
    CDATA is not mistaken for a declaration.
    """
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)  # never fetch a DTD

    def on_entity(name, is_parameter, value, base, system_id, public_id, notation):  # noqa: ANN001
        # Harmless: a short literal with no markup, e.g. <!ENTITY nbsp "&#160;"> (expat has already
        # replaced the character reference).  A "&" could smuggle a reference in by double escaping.
        if is_parameter or value is None or system_id or public_id or len(value) > 16 or "&" in value or "<" in value:
            raise _UnsafeEntity(name)

    def on_start(name, attrs):  # noqa: ANN001
        raise _RootReached

    parser.EntityDeclHandler = on_entity
    parser.StartElementHandler = on_start
    try:
        parser.Parse(body, True)
    except _RootReached:
        return None
    except _UnsafeEntity as unsafe:
        return f"entity {_one_line(str(unsafe), 40)!r}"
    except (expat.ExpatError, ValueError):
        # expat cannot read this prolog (an encoding it does not know, say windows-1252): fall back
        # to refusing any declaration that is not a single character reference.
        for match in _ENTITY_DECL.finditer(body):
            start = match.start()
            end = body.find(b">", start, start + 4096)
            decl = body[start : end + 1] if end != -1 else body[start : start + 80]
            if b"\x00" in decl or not _SAFE_ENTITY_DECL.fullmatch(decl):
                return _one_line(decl.replace(b"\x00", b"")[:60].decode("utf-8", "replace"), 60)
    return None
