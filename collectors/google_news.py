"""Google News: the search RSS feed built from the brand's query, read by the RSS machinery.

``https://news.google.com/rss/search?q=<query>&hl=en-US&gl=US&ceid=US:en`` answers an RSS 2.0
document of up to 100 recent articles.  Google does not document this endpoint; its behaviour
(OR binding tighter than AND, ``-term`` exclusions, quoted phrases, the ``hl``/``gl``/``ceid``
edition parameters) is that of Google News search.  Every entry is re-checked locally with
:meth:`Query.matches`, so Google's looser matching never adds a mention the query excludes.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Callable
from urllib.parse import urlencode

import requests

from surgewatch.collectors.base import BrandSpec
from surgewatch.collectors.query import Query
from surgewatch.collectors.rss import RssCollector


class GoogleNewsCollector(RssCollector):
    name = "google_news"

    def __init__(
        self,
        *,
        api_url: str = "https://news.google.com/rss/search",
        hl: str = "en-US",
        gl: str = "US",
        ceid: str = "US:en",
        timeout: float = 10,
        max_bytes: int = 5_000_000,
        user_agent: str = "SurgeWatch/0.1",
        session: requests.Session | None = None,
        now: Callable[[], float | datetime] = time.time,
    ):
        super().__init__(
            [], timeout=timeout, max_bytes=max_bytes, user_agent=user_agent, session=session, now=now
        )
        self.api_url = api_url
        self.hl, self.gl, self.ceid = hl, gl, ceid

    def __repr__(self) -> str:
        return f"GoogleNewsCollector(api_url={self.api_url!r}, hl={self.hl!r}, gl={self.gl!r}, ceid={self.ceid!r})"

    def search_url(self, query: Query) -> str:
        params = {"q": query.to_google_news(), "hl": self.hl, "gl": self.gl, "ceid": self.ceid}
        separator = "&" if "?" in self.api_url else "?"
        return self.api_url + separator + urlencode(params)

    def feed_urls(self, brand: BrandSpec, query: Query) -> list[str]:
        # One feed per brand; its URL holds the query, so editing the query starts a fresh cursor.
        return [self.search_url(query)]
