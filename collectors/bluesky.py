"""Bluesky through the XRPC endpoint ``app.bsky.feed.searchPosts`` (plain HTTP, no SDK needed).

https://docs.bsky.app/docs/api/app-bsky-feed-search-posts

Anonymous search on the public AppView (``https://public.api.bsky.app``) is switched off whenever
Bluesky is under bot load (403 since January 2025, see bluesky-social/atproto#3423), and never
pages with ``cursor`` when anonymous (bluesky-social/bsky-docs#296).  With a handle and an app
password the collector logs in (``com.atproto.server.createSession`` on the PDS, ``auth_url``) and
searches through the PDS, which proxies ``app.bsky.*`` calls to the AppView: the supported path.

Each OR-group of the brand query is one request (``q`` has no OR); posts are re-checked locally.
The cursor is a :class:`TimeWindowCursor` on the post's sort time, sent as ``since``.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

import requests

from surgewatch.collectors.base import Batch, BrandSpec, Mention, SourceError
from surgewatch.collectors.links import (
    FIRST_POLL_LOOKBACK,
    TimeWindowCursor,
    as_int,
    clip,
    brand_query,
    extract_urls,
    guarded_session,
    json_body,
    parse_time,
    raise_for_http,
    site_links,
    transport_error,
)

SEARCH = "/xrpc/app.bsky.feed.searchPosts"
CREATE_SESSION = "/xrpc/com.atproto.server.createSession"
MAX_GROUPS = 5
FUTURE_SLACK = 300.0  # createdAt is set by the client and can lie; indexedAt is the server's
RESET_HEADERS = ("ratelimit-reset",)  # epoch seconds, IETF draft RateLimit headers

LOGIN_HINT = ("set BLUESKY_HANDLE and BLUESKY_APP_PASSWORD (an app password from Settings > "
              "Privacy and security > App passwords): Bluesky refuses anonymous search under load")


class BlueskyCollector:
    name = "bluesky"

    def __init__(
        self,
        *,
        api_url: str = "https://public.api.bsky.app",
        handle: str | None = None,
        app_password: str | None = None,
        auth_url: str = "https://bsky.social",
        limit: int = 100,
        max_pages: int = 3,
        overlap_seconds: float = 300.0,
        now: Callable[[], float] = time.time,
    ):
        self.api_url = api_url.rstrip("/")
        self.auth_url = auth_url.rstrip("/")
        self.handle = handle or None
        self._password = app_password or None
        self.limit = min(100, max(1, int(limit)))  # the lexicon's maximum
        self.max_pages = max(1, int(max_pages))
        self.overlap_seconds = float(overlap_seconds)
        self.now = now
        self._session = guarded_session(retries=1, user_agent="surgewatch (brand mention monitor)")
        self._access_jwt: str | None = None

    def __repr__(self) -> str:
        return f"BlueskyCollector(api_url={self.api_url!r}, handle={self.handle!r})"

    @property
    def logged_in_mode(self) -> bool:
        return bool(self.handle and self._password)

    def fetch(self, brand: BrandSpec, cursor: dict[str, Any] | None) -> Batch:
        query = brand_query("bluesky", brand.query)
        window = TimeWindowCursor(cursor, self.overlap_seconds,
                                  first_poll_since=self.now() - FIRST_POLL_LOOKBACK)
        since = window.floor
        batch = Batch()
        for group in query.any_of[:MAX_GROUPS]:
            q = " ".join(t.quoted() for t in group)
            page_cursor: str | None = None
            # Anonymous search cannot page (the AppView answers 403 to ``cursor``).
            pages = self.max_pages if self.logged_in_mode else 1
            for _ in range(pages):
                params: dict[str, Any] = {"q": q, "sort": "latest", "limit": self.limit,
                                          "since": _iso(since)}
                if query.lang:
                    params["lang"] = query.lang
                if page_cursor:
                    params["cursor"] = page_cursor
                body = self._search(params, batch)
                for post in body.get("posts") or []:
                    mention = self._take(post, window, brand, query) if isinstance(post, dict) else None
                    if mention is not None:
                        batch.mentions.append(mention)
                page_cursor = body.get("cursor") if isinstance(body.get("cursor"), str) else None
                if not page_cursor or not body.get("posts"):
                    break
        if len(query.any_of) > MAX_GROUPS:
            batch.notes.append(f"bluesky: only the first {MAX_GROUPS} OR-groups are searched")
        batch.cursor = window.state()
        return batch

    # -- HTTP ----------------------------------------------------------------------------------
    def _search(self, params: dict[str, Any], batch: Batch) -> dict[str, Any]:
        headers = {}
        base = self.api_url
        if self.logged_in_mode:
            headers["Authorization"] = f"Bearer {self._login(batch)}"
            base = self.auth_url
        response = self._get(base + SEARCH, params, headers, batch)
        if self.logged_in_mode and _expired(response):
            self._access_jwt = None  # access tokens live about two hours: log in again, once
            headers["Authorization"] = f"Bearer {self._login(batch)}"
            response = self._get(base + SEARCH, params, headers, batch)
        if response.status_code == 403 and not self.logged_in_mode:
            raise SourceError(f"bluesky: anonymous search refused (403); {LOGIN_HINT}", permanent=True)
        raise_for_http("bluesky", response, self.now, *RESET_HEADERS,
                       credential_hint="check BLUESKY_HANDLE and BLUESKY_APP_PASSWORD")
        body = json_body("bluesky", response)
        if not isinstance(body, dict):
            raise SourceError("bluesky: unexpected answer (not a JSON object)")
        return body

    def _get(self, url: str, params: dict[str, Any], headers: dict[str, str], batch: Batch) -> requests.Response:
        try:
            response = self._session.get(url, params=params, headers=headers)
        except requests.RequestException as exc:
            raise transport_error("bluesky", exc) from None
        batch.requests_made += 1
        return response

    def _login(self, batch: Batch) -> str:
        if self._access_jwt:
            return self._access_jwt
        try:
            response = self._session.post(self.auth_url + CREATE_SESSION,
                                          json={"identifier": self.handle, "password": self._password})
        except requests.RequestException as exc:
            raise transport_error("bluesky", exc) from None
        batch.requests_made += 1
        if response.status_code in (400, 401):  # AuthenticationRequired / InvalidPassword
            raise SourceError(f"bluesky: login refused for {self.handle!r}; check BLUESKY_HANDLE "
                              "and BLUESKY_APP_PASSWORD", permanent=True)
        raise_for_http("bluesky", response, self.now, *RESET_HEADERS)
        body = json_body("bluesky", response)
        token = body.get("accessJwt") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceError("bluesky: login answer without an access token")
        self._access_jwt = token
        return token

    # -- mapping -------------------------------------------------------------------------------
    def _take(self, post: dict[str, Any], window: TimeWindowCursor, brand: BrandSpec,
              query) -> Mention | None:
        uri = post.get("uri")
        if not isinstance(uri, str) or not uri:
            return None
        record = post.get("record") if isinstance(post.get("record"), dict) else {}
        indexed = parse_time(post.get("indexedAt"))
        created = parse_time(record.get("createdAt")) or indexed
        now = self.now()
        if created is None or created.timestamp() > now + FUTURE_SLACK:
            # A client clock far ahead must not put a post in a bucket that has not happened.
            sane_index = indexed is not None and indexed.timestamp() <= now + FUTURE_SLACK
            created = indexed if sane_index else datetime.fromtimestamp(now, tz=timezone.utc)
        if not window.take(uri, created.timestamp()):
            return None
        text = str(record.get("text") or "")
        langs = record.get("langs") if isinstance(record.get("langs"), list) else []
        lang = str(langs[0]) if langs else ""
        if not query.matches(text) or not query.accepts_lang(lang):
            return None
        author = post.get("author") if isinstance(post.get("author"), dict) else {}
        handle = str(author.get("handle") or author.get("did") or "")
        return Mention(
            source="bluesky",
            id=uri,
            brand=brand.name,
            text=clip(text),
            created_at=created,
            url=_web_url(uri, handle),
            author=handle,
            likes=as_int(post.get("likeCount")),
            reposts=as_int(post.get("repostCount")) + as_int(post.get("quoteCount")),
            replies=as_int(post.get("replyCount")),
            lang=lang,
            site_links=site_links(_links(record, text), brand.site),
        )


def _links(record: dict[str, Any], text: str) -> list[str]:
    """Links live in facets (the text shows them shortened) and in external embeds (cards)."""
    urls: list[str] = []
    for facet in record.get("facets") or []:
        for feature in (facet.get("features") or []) if isinstance(facet, dict) else []:
            if isinstance(feature, dict) and isinstance(feature.get("uri"), str):
                urls.append(feature["uri"])
    embed = record.get("embed") if isinstance(record.get("embed"), dict) else {}
    external = embed.get("external") if isinstance(embed.get("external"), dict) else {}
    if isinstance(external.get("uri"), str):
        urls.append(external["uri"])
    return urls + extract_urls(text)


def _web_url(uri: str, handle: str) -> str:
    # at://did:plc:abc/app.bsky.feed.post/3kxyz -> https://bsky.app/profile/<handle>/post/3kxyz
    parts = uri.removeprefix("at://").split("/")
    if len(parts) == 3 and parts[1] == "app.bsky.feed.post":
        return f"https://bsky.app/profile/{handle or parts[0]}/post/{parts[2]}"
    return ""


def _expired(response: requests.Response) -> bool:
    if response.status_code not in (400, 401):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") in ("ExpiredToken", "InvalidToken")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
