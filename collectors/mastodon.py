"""Mastodon: hashtag timelines of one instance, plus full-text search when a token is given.

* ``GET /api/v1/timelines/tag/:hashtag`` (public on most instances, no token):
  https://docs.joinmastodon.org/methods/timelines/#tag
* ``GET /api/v2/search?type=statuses`` (needs ``MASTODON_ACCESS_TOKEN``; instances only search
  posts whose authors opted in to search): https://docs.joinmastodon.org/methods/search/#v2

Status ids are time-ordered per instance, so each stream pages *forward* with ``min_id`` from the
newest id it has read ("immediately newer than"), which neither skips a busy minute (as
``since_id`` would, returning only the newest page) nor re-reads.  The cursor is
``{"streams": {"tag:acme": "<newest id>", "search:acme": "..."}}``.

One instance sees only what reaches it through federation: a post from a server no one on this
instance follows is invisible, so counts here are a sample of the fediverse, not a census.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

import requests

from surgewatch.collectors.base import Batch, BrandSpec, Mention, SourceError
from surgewatch.collectors.links import (
    FIRST_POLL_LOOKBACK,
    as_int,
    clip,
    brand_query,
    extract_urls,
    guarded_session,
    html_to_text,
    json_body,
    parse_time,
    raise_for_http,
    site_links,
    transport_error,
)

RESET_HEADERS = ("x-ratelimit-reset",)  # an ISO 8601 time on Mastodon
MAX_STREAMS = 10


def _time(status: dict[str, Any]) -> float | None:
    when = parse_time(status.get("created_at"))
    return when.timestamp() if when else None


def _id_key(status_id: str) -> tuple[int, str]:
    # Ids are numeric strings of varying length: compare as numbers.
    return (int(status_id), status_id) if status_id.isdigit() else (0, status_id)


class MastodonCollector:
    name = "mastodon"

    def __init__(
        self,
        *,
        api_url: str = "https://mastodon.social",
        hashtags: list[str] | None = None,
        access_token: str | None = None,
        limit: int = 40,
        max_pages: int = 3,
        now: Callable[[], float] = time.time,
    ):
        self.api_url = api_url.rstrip("/")
        self.hashtags = [h.strip().lstrip("#") for h in hashtags or [] if h.strip().lstrip("#")]
        self._token = access_token or None
        self.limit = min(40, max(1, int(limit)))  # Mastodon's maximum page
        self.max_pages = max(1, int(max_pages))
        self.now = now
        self._session = guarded_session(retries=1, user_agent="surgewatch (brand mention monitor)")

    def __repr__(self) -> str:
        return f"MastodonCollector(api_url={self.api_url!r}, hashtags={self.hashtags!r}, token={'set' if self._token else 'none'})"

    def streams(self, query) -> list[tuple[str, str, dict[str, Any]]]:
        """(cursor key, path, params) for each stream this brand reads."""
        tags = self.hashtags or [t for t in query.to_plain_terms() if t.replace("_", "").isalnum()]
        out = [(f"tag:{t.lower()}", f"/api/v1/timelines/tag/{t}", {}) for t in tags]
        if self._token:
            for group in query.any_of:
                q = " ".join(t.quoted() for t in group)
                out.append((f"search:{q}", "/api/v2/search", {"q": q, "type": "statuses", "resolve": "false"}))
        return out[:MAX_STREAMS]

    def fetch(self, brand: BrandSpec, cursor: dict[str, Any] | None) -> Batch:
        query = brand_query("mastodon", brand.query)
        previous = dict((cursor or {}).get("streams") or {})
        streams = self.streams(query)
        batch = Batch()
        if not streams:
            raise SourceError("mastodon: no hashtag to follow: set sources.mastodon.hashtags (or a "
                              "MASTODON_ACCESS_TOKEN for search)", permanent=True)
        taken: set[str] = set()  # one status can come from a tag and from search
        new_state: dict[str, str] = {}
        for key, path, params in streams:
            if key in previous:
                newest = self._forward(key, path, params, str(previous[key]), brand, query, batch, taken)
            else:
                newest = self._backfill(key, path, params, brand, query, batch, taken)
            if newest:
                new_state[key] = newest
        batch.cursor = {"streams": new_state}
        return batch

    def _forward(self, key, path, params, newest: str, brand, query, batch, taken) -> str:
        """Pages immediately newer than the cursor, oldest page first."""
        for _ in range(self.max_pages):
            statuses = self._page(path, {**params, "min_id": newest}, batch)
            if not statuses:
                return newest
            newest = max([newest, *(str(s["id"]) for s in statuses)], key=_id_key)
            self._collect(statuses, brand, query, batch, taken)
            if len(statuses) < self.limit:
                return newest  # a short page is the end
        batch.notes.append(f"mastodon: {key} has more than {self.max_pages} new pages; continuing next poll")
        return newest

    def _backfill(self, key, path, params, brand, query, batch, taken) -> str | None:
        """A first poll: the last hour, newest page first (walking back with ``max_id``)."""
        horizon = self.now() - FIRST_POLL_LOOKBACK
        newest: str | None = None
        oldest: str | None = None
        for _ in range(self.max_pages):
            statuses = self._page(path, {**params, "max_id": oldest} if oldest else params, batch)
            if not statuses:
                break
            ids = [str(s["id"]) for s in statuses]
            newest = max(ids + ([newest] if newest else []), key=_id_key)
            oldest = min(ids, key=_id_key)
            recent = [s for s in statuses if (_time(s) or horizon) >= horizon]
            self._collect(recent, brand, query, batch, taken)
            if len(recent) < len(statuses) or len(statuses) < self.limit:
                break
        return newest

    def _collect(self, statuses, brand, query, batch, taken) -> None:
        for status in statuses:
            mention = self._mention(status, brand, query)
            if mention is not None and mention.id not in taken:
                taken.add(mention.id)
                batch.mentions.append(mention)

    def _page(self, path: str, params: dict[str, Any], batch: Batch) -> list[dict]:
        params = {**params, "limit": self.limit}
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            response = self._session.get(self.api_url + path, params=params, headers=headers)
        except requests.RequestException as exc:
            raise transport_error("mastodon", exc) from None
        batch.requests_made += 1
        raise_for_http("mastodon", response, self.now, *RESET_HEADERS,
                       credential_hint="check MASTODON_ACCESS_TOKEN (read:search scope) or the "
                                       "instance's public timeline settings")
        body = json_body("mastodon", response)
        if isinstance(body, dict):  # /api/v2/search wraps statuses
            body = body.get("statuses")
        if not isinstance(body, list):
            raise SourceError(f"mastodon: unexpected answer from {path} (no list of statuses)")
        return [s for s in body if isinstance(s, dict) and s.get("id") is not None]

    def _mention(self, status: dict[str, Any], brand: BrandSpec, query) -> Mention | None:
        if status.get("reblog"):
            return None  # a boost repeats a post already counted where it was written
        content = str(status.get("content") or "")
        text = html_to_text(content)
        spoiler = str(status.get("spoiler_text") or "")
        if spoiler:
            text = f"{spoiler}\n\n{text}"
        lang = str(status.get("language") or "")
        if not query.matches(text) or not query.accepts_lang(lang):
            return None
        created = parse_time(status.get("created_at"))
        if created is None:
            created = datetime.fromtimestamp(self.now(), tz=timezone.utc)
        account = status.get("account") if isinstance(status.get("account"), dict) else {}
        card = status.get("card") if isinstance(status.get("card"), dict) else {}
        urls = extract_urls(content)
        if isinstance(card.get("url"), str):
            urls.insert(0, card["url"])
        followers = account.get("followers_count")
        return Mention(
            source="mastodon",
            id=str(status.get("uri") or status["id"]),  # the uri is global; the id is per instance
            brand=brand.name,
            text=clip(text),
            created_at=created,
            url=str(status.get("url") or status.get("uri") or ""),
            author=str(account.get("acct") or ""),
            likes=as_int(status.get("favourites_count")),
            reposts=as_int(status.get("reblogs_count")),
            replies=as_int(status.get("replies_count")),
            reach=as_int(followers) if followers is not None else None,
            lang=lang,
            site_links=site_links(urls, brand.site),
        )
