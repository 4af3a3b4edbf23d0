"""A local Hacker News Algolia search API for tests and demos.

``GET /api/v1/search_by_date?query=&tags=&numericFilters=created_at_i>N&hitsPerPage=&page=`` ->
``{"hits": [...], "nbHits", "page", "nbPages", "hitsPerPage", "processingTimeMS", "query", "params"}``
newest first, with hits shaped like https://hn.algolia.com/api (``objectID``, ``created_at``,
``created_at_i``, ``title``, ``url``, ``author``, ``points``, ``story_text``, ``comment_text``,
``num_comments``, ``story_id``, ``_tags``).  Use ``HackerNewsCollector(api_url=fake.url + "/api/v1")``.
"""
from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from tests.fakes.x_server import FakeAPIServer, RecordedRequest, iso_z, loose_match

_ids = itertools.count(41000000)


@dataclass
class FakeItem:
    id: int
    kind: str  # "story" or "comment"
    created_at: float
    title: str = ""
    text: str = ""  # story_text / comment_text (HTML, as HN stores it)
    url: str | None = None
    author: str = "pg"
    points: int | None = 1
    num_comments: int | None = 0
    minimal: bool = False  # answer only objectID and the text, as a trimmed export would


class FakeHackerNews(FakeAPIServer):
    def __init__(self, *, clock: Callable[[], float] = time.time):
        super().__init__(clock=clock)
        self.items: list[FakeItem] = []

    def add_story(self, title: str, *, url: str | None = None, text: str = "",
                  created_at: float | None = None, **fields: Any) -> FakeItem:
        return self._add("story", created_at, title=title, url=url, text=text, **fields)

    def add_comment(self, text: str, *, created_at: float | None = None, **fields: Any) -> FakeItem:
        return self._add("comment", created_at, text=text, points=None, num_comments=None, **fields)

    def _add(self, kind: str, created_at: float | None, **fields: Any) -> FakeItem:
        item = FakeItem(next(_ids), kind, self.clock() if created_at is None else created_at, **fields)
        self.items.append(item)
        return item

    def rate_limited(self) -> None:
        # Algolia answers 429 with a JSON message and no reset header (the limit is per hour/IP).
        self.fail(429, {"message": "Too many requests", "status": 429}, path="/api/v1/")

    def route(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if request.path != "/api/v1/search_by_date":
            return 404, {}, {"error": "Not Found"}
        q = request.query
        kinds = set(re.findall(r"story|comment", q.get("tags", ""))) or {"story", "comment"}
        after = 0
        for op, value in re.findall(r"created_at_i\s*(>=|>)\s*(\d+)", q.get("numericFilters", "")):
            after = int(value) + (1 if op == ">" else 0)
        found = [i for i in self.items if i.kind in kinds and i.created_at >= after
                 and loose_match(q.get("query", ""), f"{i.title} {i.text}")]
        found.sort(key=lambda i: (-i.created_at, -i.id))
        per_page = min(1000, int(q.get("hitsPerPage", 20)))
        page = int(q.get("page", 0))
        hits = found[page * per_page : (page + 1) * per_page]
        nb_pages = (len(found) + per_page - 1) // per_page
        return 200, {}, {"hits": [self._hit(i) for i in hits], "nbHits": len(found), "page": page,
                         "nbPages": nb_pages, "hitsPerPage": per_page, "exhaustiveNbHits": True,
                         "processingTimeMS": 1, "query": q.get("query", ""), "params": ""}

    @staticmethod
    def _hit(i: FakeItem) -> dict[str, Any]:
        story = i.kind == "story"
        if i.minimal:
            return {"objectID": str(i.id), "title": i.title} if story else \
                {"objectID": str(i.id), "comment_text": i.text}
        return {
            "_tags": [i.kind, f"author_{i.author}", f"story_{i.id}" if story else "story_1"],
            "author": i.author,
            "created_at": iso_z(i.created_at),
            "created_at_i": int(i.created_at),
            "objectID": str(i.id),
            "title": i.title if story else None,
            "url": i.url,
            "points": i.points,
            "num_comments": i.num_comments,
            "story_text": i.text if story and i.text else None,
            "comment_text": None if story else i.text,
            "story_id": i.id if story else 1,
            "story_title": None if story else "Parent story",
            "parent_id": None if story else 1,
            "updated_at": iso_z(i.created_at),
        }
