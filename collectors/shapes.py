"""The vendors' answers as pydantic models, checked at the edge.

A collector reads an answer only after it has passed its model here, so a wrong shape (``{"data":
5}``, ``public_metrics: "many"``, a 40-digit id, ``created_utc: 1e20``) is a :class:`SourceError`
that names the source, the brand and the field ("x: search answer for 'acme': data.0.id: ..."),
never a ``TypeError`` three calls later, and never a silent 0 (``tweet_count: "lots"``).

Models list only the fields SurgeWatch reads and ignore the rest (vendors add fields all the
time).  Numbers are bounded: counts to what a real post can reach, times to 1970..2100.
"""
from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from surgewatch.collectors.base import SourceError

Count = Annotated[int, Field(ge=0, le=10**13)]  # likes, views, followers: X's biggest are ~10^11
Score = Annotated[int, Field(ge=-10**13, le=10**13)]  # Reddit scores go negative
Epoch = Annotated[float, Field(ge=0, le=4_102_444_800, allow_inf_nan=False)]  # up to 2100-01-01
SnowflakeId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}$")]  # 63-bit
Text = Annotated[str, StringConstraints(max_length=1_000_000)]
Short = Annotated[str, StringConstraints(max_length=4096)]
Link = Annotated[str, StringConstraints(max_length=65_536)]  # a long URL is odd, not a reason to drop a poll


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- X API v2 ---------------------------------------------------------------------------------------
# https://docs.x.com/x-api/posts/recent-search  https://docs.x.com/x-api/posts/recent-post-counts
class XMetrics(Answer):
    like_count: Count = 0
    retweet_count: Count = 0
    quote_count: Count = 0
    reply_count: Count = 0
    impression_count: Count = 0


class XUrl(Answer):
    expanded_url: Link | None = None
    unwound_url: Link | None = None


class XEntities(Answer):
    urls: list[XUrl] | None = None


class XTweet(Answer):
    id: SnowflakeId
    text: Text = ""
    created_at: Short | None = None
    lang: Short | None = None
    author_id: Short | None = None
    public_metrics: XMetrics | None = None
    entities: XEntities | None = None


class XUserMetrics(Answer):
    followers_count: Count | None = None


class XUser(Answer):
    id: Short
    username: Short | None = None
    public_metrics: XUserMetrics | None = None


class XIncludes(Answer):
    users: list[XUser] | None = None


class XSearchMeta(Answer):
    newest_id: SnowflakeId | None = None
    next_token: Short | None = None
    result_count: Count | None = None


class XSearch(Answer):
    data: list[XTweet] | None = None
    includes: XIncludes | None = None
    meta: XSearchMeta | None = None


class XCountBucket(Answer):
    start: Short
    end: Short | None = None
    tweet_count: Count


class XCountsMeta(Answer):
    total_tweet_count: Count | None = None


class XCounts(Answer):
    data: list[XCountBucket]
    meta: XCountsMeta | None = None


# -- Reddit (the fields praw hands us in ``vars(thing)``) ---------------------------------------------
class RedditThing(Answer):
    id: Short | None = None
    author: Short = ""  # praw's Redditor, as its name
    name: Short | None = None
    created_utc: Epoch | None = None
    title: Text | None = None
    selftext: Text | None = None
    body: Text | None = None
    permalink: Link | None = None
    url: Link | None = None
    num_comments: Count | None = None
    score: Score | None = None


# -- Hacker News (Algolia) -------------------------------------------------------------------------
# https://hn.algolia.com/api
class HackerNewsHit(Answer):
    objectID: Short
    created_at_i: Epoch | None = None
    created_at: Short | None = None
    title: Text | None = None
    story_text: Text | None = None
    comment_text: Text | None = None
    url: Link | None = None
    author: Short | None = None
    points: Score | None = None
    num_comments: Count | None = None


class HackerNewsSearch(Answer):
    hits: list[HackerNewsHit] | None = None
    nbPages: Count | None = None


# -- Bluesky ----------------------------------------------------------------------------------------
# https://docs.bsky.app/docs/api/app-bsky-feed-search-posts
class BlueskyLink(Answer):
    uri: Link | None = None  # a facet's link feature, or an external embed (a card)


class BlueskyFacet(Answer):
    features: list[BlueskyLink] | None = None


class BlueskyEmbed(Answer):
    external: BlueskyLink | None = None


class BlueskyRecord(Answer):
    createdAt: Short | None = None
    text: Text | None = None
    langs: list[Short] | None = None
    facets: list[BlueskyFacet] | None = None
    embed: BlueskyEmbed | None = None


class BlueskyAuthor(Answer):
    handle: Short | None = None
    did: Short | None = None


class BlueskyPost(Answer):
    uri: Link
    indexedAt: Short | None = None
    record: BlueskyRecord | None = None
    author: BlueskyAuthor | None = None
    likeCount: Count | None = None
    repostCount: Count | None = None
    quoteCount: Count | None = None
    replyCount: Count | None = None


class BlueskySearch(Answer):
    posts: list[BlueskyPost] | None = None
    cursor: Short | None = None


# -- Mastodon ---------------------------------------------------------------------------------------
# https://docs.joinmastodon.org/entities/Status/
class MastodonAccount(Answer):
    acct: Short | None = None
    followers_count: Count | None = None


class MastodonCard(Answer):
    url: Link | None = None


class MastodonStatus(Answer):
    id: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_-]{1,40}$")]
    uri: Link | None = None
    url: Link | None = None
    created_at: Short | None = None
    content: Text | None = None
    spoiler_text: Text | None = None
    language: Short | None = None
    reblog: dict[str, Any] | None = None
    account: MastodonAccount | None = None
    card: MastodonCard | None = None
    favourites_count: Count | None = None
    reblogs_count: Count | None = None
    replies_count: Count | None = None


M = TypeVar("M", bound=BaseModel)


def checked(model: type[M], body: Any, *, source: str, brand: str, what: str) -> M:
    """``body`` as ``model``, or a transient :class:`SourceError` naming the source, the brand, the
    answer and the first fields that were wrong (never their values: outside text, possibly huge)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise SourceError(f"{source}: {what} for brand {brand!r} has the wrong shape: {describe(exc)}") from None


def describe(exc: ValidationError, limit: int = 3) -> str:
    """The first ``limit`` problems as ``path: message``, e.g. ``data: Input should be a valid list``."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "(the whole answer)"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
