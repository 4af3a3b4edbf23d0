"""Hacker News through the Algolia search API (no key needed).

``GET {api_url}/search_by_date?query=...&tags=(story,comment)&numericFilters=created_at_i>=N``,
newest first, ``hitsPerPage`` up to 1000.  https://hn.algolia.com/api

Algolia ANDs the words of a query and has no OR, so each OR-group of the brand query is one
request; phrases and exclusions are left to the local re-check.  Algolia publishes items a little
after HN does, so the cursor re-reads the last ``overlap_seconds`` and skips ids already taken.
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
    html_to_text,
    json_body,
    parse_time,
    raise_for_http,
    site_links,
    transport_error,
)

MAX_GROUPS = 5  # OR-groups searched per poll: each one is a request
class HackerNewsCollector:
    name = "hackernews"

    def __init__(
        self,
        *,
        api_url: str = "https://hn.algolia.com/api/v1",
        hits_per_page: int = 100,
        max_pages: int = 3,
        overlap_seconds: float = 300.0,
        retries: int = 2,
        now: Callable[[], float] = time.time,
    ):
        self.api_url = api_url.rstrip("/")
        self.hits_per_page = min(1000, max(1, int(hits_per_page)))
        self.max_pages = max(1, int(max_pages))
        self.overlap_seconds = float(overlap_seconds)
        self.now = now
        self._session = guarded_session(retries=retries, user_agent="surgewatch (brand mention monitor)")

    def fetch(self, brand: BrandSpec, cursor: dict[str, Any] | None) -> Batch:
        query = brand_query("hackernews", brand.query)
        window = TimeWindowCursor(cursor, self.overlap_seconds,
                                  first_poll_since=self.now() - FIRST_POLL_LOOKBACK)
        since = int(window.floor)
        batch = Batch()
        groups = [" ".join(t.text for t in group) for group in query.any_of]
        if len(groups) > MAX_GROUPS:
            batch.notes.append(f"hackernews: only the first {MAX_GROUPS} OR-groups are searched")
        for words in groups[:MAX_GROUPS]:
            for page in range(self.max_pages):
                body = self._get(words, since, page)
                batch.requests_made += 1
                for hit in body.get("hits") or []:
                    mention = self._take(hit, window, brand, query) if isinstance(hit, dict) else None
                    if mention is not None:
                        batch.mentions.append(mention)
                if page + 1 >= as_int(body.get("nbPages")):
                    break
            else:
                batch.notes.append(f"hackernews: more than {self.max_pages} pages for {words!r}; "
                                   "older items skipped")
        batch.cursor = window.state()
        return batch

    def _get(self, words: str, since: int, page: int) -> dict[str, Any]:
        params = {"query": words, "tags": "(story,comment)", "numericFilters": f"created_at_i>={since}",
                  "hitsPerPage": self.hits_per_page, "page": page}
        try:
            response = self._session.get(f"{self.api_url}/search_by_date", params=params)
        except requests.RequestException as exc:
            raise transport_error("hackernews", exc) from None
        raise_for_http("hackernews", response, self.now)
        body = json_body("hackernews", response)
        if not isinstance(body, dict):
            raise SourceError("hackernews: unexpected answer (not a JSON object)")
        return body

    def _take(self, hit: dict[str, Any], window: TimeWindowCursor, brand: BrandSpec,
              query) -> Mention | None:
        object_id = str(hit.get("objectID") or "")
        if not object_id:
            return None
        created_i = hit.get("created_at_i")
        when = (datetime.fromtimestamp(float(created_i), tz=timezone.utc)
                if isinstance(created_i, (int, float)) else parse_time(hit.get("created_at")))
        if when is None:
            when = datetime.fromtimestamp(self.now(), tz=timezone.utc)
        if not window.take(object_id, when.timestamp()):
            return None
        title = str(hit.get("title") or "")
        body = str(hit.get("story_text") or hit.get("comment_text") or "")
        text = "\n\n".join(p for p in (title, html_to_text(body)) if p)
        if not query.matches(text):
            return None
        urls = extract_urls(body)
        if isinstance(hit.get("url"), str):
            urls.insert(0, hit["url"])
        return Mention(
            source="hackernews",
            id=object_id,
            brand=brand.name,
            text=clip(text),
            created_at=when,
            url=f"https://news.ycombinator.com/item?id={object_id}",
            author=str(hit.get("author") or ""),
            replies=as_int(hit.get("num_comments")),
            score=as_int(hit.get("points")),
            site_links=site_links(urls, brand.site),
        )
