"""RedditCollector: praw/prawcore against the local Reddit API (tests.fakes.reddit_server)."""
from __future__ import annotations

import time

import pytest

from surgewatch.collectors.base import BrandSpec, SourceError
from surgewatch.collectors.reddit import RedditCollector
from tests.fakes.reddit_server import FakeReddit

SECRET = "reddit-secret-value"
AGENT = "surgewatch-tests/0.1 by u/surgewatch"
BRAND = BrandSpec(name="acme", query="acme -pie", site="acme.com")


@pytest.fixture
def reddit():
    with FakeReddit(client_secret=SECRET) as server:
        yield server


def collector(server: FakeReddit, **kwargs) -> RedditCollector:
    kwargs.setdefault("api_url", server.url)
    kwargs.setdefault("auth_url", server.url)
    return RedditCollector("test-client", SECRET, AGENT, **kwargs)


def test_it_searches_all_of_reddit_newest_first_with_lucene(reddit):
    collector(reddit).fetch(BRAND, None)
    [token, search] = reddit.requests
    assert token.path == "/api/v1/access_token" and b"grant_type=client_credentials" in token.body
    assert search.path == "/r/all/search/"
    assert search.query["q"] == "acme NOT pie"
    assert (search.query["sort"], search.query["syntax"], search.query["t"]) == ("new", "lucene", "day")
    assert AGENT in search.headers["user-agent"]


def test_configured_subreddits_are_searched_together_and_comments_streamed(reddit):
    reddit.add_post("acme in tech", subreddit="tech")
    reddit.add_post("acme in pics", subreddit="pics")  # not configured
    reddit.add_comment("acme support never answers", subreddit="sysadmin")
    reddit.add_comment("unrelated chatter", subreddit="sysadmin")
    batch = collector(reddit, subreddits=["tech", "r/startups"], comment_subreddits=["sysadmin"]).fetch(BRAND, None)
    assert sorted(m.text for m in batch.mentions) == ["acme in tech", "acme support never answers"]
    assert reddit.requests_to("/r/tech+startups/search/")[0].query["restrict_sr"] == "True"
    assert reddit.requests_to("/r/sysadmin/comments/")
    assert set(batch.cursor) == {"search", "comments"}


def test_a_post_maps_to_a_mention_with_permalink_score_and_site_links(reddit):
    post = reddit.add_post("Acme sale is live", selftext="details: https://shop.acme.com/sale.",
                           url="https://acme.com/blackfriday", score=412, num_comments=37, author="deals_bot")
    [m] = collector(reddit).fetch(BRAND, None).mentions
    assert m.id == f"t3_{post.id}"
    assert m.text == "Acme sale is live\n\ndetails: https://shop.acme.com/sale."
    assert m.url.startswith("https://www.reddit.com/r/test/comments/")
    assert (m.score, m.replies, m.author) == (412, 37, "deals_bot")
    assert m.site_links == ("https://acme.com/blackfriday", "https://shop.acme.com/sale")
    assert abs(m.created_at.timestamp() - post.created_utc) < 0.001


def test_posts_sharing_the_cursors_second_are_each_taken_once(reddit):
    second = time.time() - 30
    reddit.add_post("acme one", created_utc=second)
    c = collector(reddit)
    first = c.fetch(BRAND, None)
    reddit.add_post("acme two", created_utc=second)  # same second, published after the poll
    batch = c.fetch(BRAND, first.cursor)
    assert [m.text for m in batch.mentions] == ["acme two"]
    assert c.fetch(BRAND, batch.cursor).mentions == []


def test_a_post_indexed_late_by_search_is_still_taken(reddit):
    now = time.time()
    reddit.add_post("acme fresh", created_utc=now)
    c = collector(reddit)
    first = c.fetch(BRAND, None)
    reddit.add_post("acme indexed late", created_utc=now - 120)  # older than the cursor
    assert [m.text for m in c.fetch(BRAND, first.cursor).mentions] == ["acme indexed late"]


def test_the_walk_stops_at_the_cursor_instead_of_reading_every_page(reddit):
    base = time.time() - 3000
    for i in range(250):
        reddit.add_post(f"acme {i}", created_utc=base + i * 10)
    c = collector(reddit, limit=1000, overlap_seconds=60)
    first = c.fetch(BRAND, None)
    assert len(first.mentions) == 250
    reddit.add_post("acme new")
    pages_before = len(reddit.requests_to("/r/"))
    batch = c.fetch(BRAND, first.cursor)
    assert [m.text for m in batch.mentions] == ["acme new"]
    assert len(reddit.requests_to("/r/")) - pages_before == 1


def test_a_first_poll_reads_the_last_hour_not_the_history(reddit):
    reddit.add_post("acme last week", created_utc=time.time() - 7 * 86400)
    reddit.add_post("acme just now")
    assert [m.text for m in collector(reddit).fetch(BRAND, None).mentions] == ["acme just now"]


def test_a_very_long_post_is_clipped_after_matching(reddit):
    reddit.add_post("a long one", selftext="x " * 30_000 + "acme")
    [m] = collector(reddit).fetch(BRAND, None).mentions
    assert len(m.text) == 10_000 and m.text.endswith("…")


def test_hitting_the_limit_before_the_cursor_is_noted(reddit):
    c = collector(reddit, limit=5)
    first = c.fetch(BRAND, None)
    for i in range(8):
        reddit.add_post(f"acme burst {i}")
    batch = c.fetch(BRAND, first.cursor)
    assert len(batch.mentions) == 5
    assert any("limit of 5" in note for note in batch.notes)


def test_after_a_long_outage_the_search_window_widens(reddit):
    collector(reddit).fetch(BRAND, {"search": {"after": time.time() - 3 * 86400, "seen": []}})
    assert reddit.requests_to("/r/all/search/")[0].query["t"] == "week"


def test_the_token_is_fetched_once_and_reused(reddit):
    c = collector(reddit)
    cursor = None
    for _ in range(3):
        cursor = c.fetch(BRAND, cursor).cursor
    assert len(reddit.requests_to("/api/v1/access_token")) == 1


def test_an_exhausted_rate_limit_window_is_a_retry_after_not_a_sleep(reddit):
    c = collector(reddit)
    reddit.ratelimit_remaining = 0  # this answer spends the window
    reddit.ratelimit_reset = 300
    first = c.fetch(BRAND, None)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        c.fetch(BRAND, first.cursor)
    assert time.monotonic() - started < 1.5
    assert not caught.value.permanent
    assert 290 <= caught.value.retry_after <= 301


def test_a_429_uses_the_ratelimit_reset_seconds(reddit):
    reddit.rate_limited(reset_in=90)
    with pytest.raises(SourceError) as caught:
        collector(reddit).fetch(BRAND, None)
    assert not caught.value.permanent and 85 <= caught.value.retry_after <= 91


def test_invalid_grant_is_permanent(reddit):
    reddit.invalid_grant()
    with pytest.raises(SourceError) as caught:
        collector(reddit).fetch(BRAND, None)
    assert caught.value.permanent and "invalid_grant" in str(caught.value)


def test_a_wrong_client_secret_is_permanent_and_never_shown(reddit):
    with pytest.raises(SourceError) as caught:
        RedditCollector("test-client", "wrong-secret", AGENT, api_url=reddit.url,
                        auth_url=reddit.url).fetch(BRAND, None)
    assert caught.value.permanent
    assert "REDDIT_CLIENT_SECRET" in str(caught.value) and "wrong-secret" not in str(caught.value)


def test_a_malformed_listing_is_transient_and_named(reddit):
    reddit.fail_malformed(path="/r/")
    with pytest.raises(SourceError) as caught:
        collector(reddit).fetch(BRAND, None)
    assert not caught.value.permanent
    assert str(caught.value).startswith("reddit: malformed JSON")


def test_a_missing_subreddit_is_permanent(reddit):
    reddit.fail(302, b"", headers={"location": "/subreddits/search.json?q=nosuchsub"}, path="/r/")
    with pytest.raises(SourceError) as caught:
        collector(reddit, subreddits=["nosuchsub"]).fetch(BRAND, None)
    assert caught.value.permanent and "r/nosuchsub" in str(caught.value)


def test_the_secret_never_appears_in_the_repr(reddit):
    assert SECRET not in repr(collector(reddit))
