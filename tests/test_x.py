"""XCollector: tweepy against the local X API v2 server (tests.fakes.x_server)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from surgewatch.collectors.base import BrandSpec, SourceError
from surgewatch.collectors.links import snowflake_time
from surgewatch.collectors.x import XCollector
from tests.fakes.x_server import COUNTS_PATH, SEARCH_PATH, FakeX

TOKEN = "AAAA-test-bearer-token"
BRAND = BrandSpec(name="acme", query="acme -pie", site="acme.com")


class Clock:
    def __init__(self, start: float | None = None):
        self.t = time.time() if start is None else start

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def x():
    with FakeX(bearer_token=TOKEN) as server:
        yield server


def test_snowflake_time_follows_the_documented_formula():
    epoch_ms = 1_700_000_000_123
    tweet_id = (epoch_ms - 1288834974657) << 22 | 0x3FFFFF  # worker and sequence bits set
    assert snowflake_time(tweet_id) == datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    assert snowflake_time(str(tweet_id)).tzinfo is timezone.utc


def test_tweepy_is_redirected_to_the_configured_api_url_with_the_bearer_token(x):
    XCollector(TOKEN, api_url=x.url).fetch(BRAND, None)
    assert {r.path for r in x.requests} == {COUNTS_PATH, SEARCH_PATH}
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in x.requests)
    assert all("tweepy" in r.headers["user-agent"].lower() for r in x.requests)


def test_it_asks_for_the_fields_it_maps_and_minute_counts(x):
    XCollector(TOKEN, api_url=x.url, max_results=250).fetch(BRAND, None)
    [search] = x.requests_to(SEARCH_PATH)
    assert search.query["query"] == "acme -pie"
    assert search.query["max_results"] == "100"  # clamped to X's limit instead of a 400 every poll
    assert search.query["tweet.fields"] == "created_at,public_metrics,lang,entities"
    assert search.query["expansions"] == "author_id"
    assert search.query["user.fields"] == "public_metrics"
    [counts] = x.requests_to(COUNTS_PATH)
    assert counts.query["granularity"] == "minute"
    assert counts.query["start_time"].endswith(":00Z")


def test_a_tweet_becomes_a_mention_with_reach_engagement_and_site_links(x):
    tweet = x.add_tweet("Acme checkout is broken 😡 https://t.co/x0", author="bigvoice", followers=120_000,
                        likes=7, retweets=3, quotes=2, replies=5, impressions=9000, lang="en",
                        urls=("https://www.acme.com/checkout?step=2", "https://elsewhere.org/acme"))
    [m] = XCollector(TOKEN, api_url=x.url).fetch(BRAND, None).mentions
    assert m.id == str(tweet.id)
    assert m.url == f"https://x.com/i/web/status/{tweet.id}"
    assert m.author == "bigvoice" and m.reach == 120_000
    assert (m.likes, m.reposts, m.replies, m.score) == (7, 5, 5, 9000)
    assert m.site_links == ("https://www.acme.com/checkout?step=2",)
    assert m.lang == "en"
    assert abs(m.created_at.timestamp() - tweet.created_at) < 0.001


def test_volume_comes_from_the_counts_endpoint_in_minute_buckets(x):
    now = time.time()
    for age in (400, 390, 200, 100):  # the counts endpoint sees what search also returns...
        x.add_tweet("acme outage", created_at=now - age)
    x.add_tweet("acme pie", created_at=now - 100)  # ...including what our query excludes
    batch = XCollector(TOKEN, api_url=x.url, now=lambda: now).fetch(BRAND, None)
    assert all(start % 60 == 0 for start, _ in batch.volume)
    assert sum(n for _, n in batch.volume) == 5
    assert len(batch.mentions) == 4


def test_a_lang_filter_drops_posts_in_other_languages(x):
    x.add_tweet("acme en panne", lang="fr")
    x.add_tweet("acme is down", lang="en")
    brand = BrandSpec(name="acme", query="acme lang:en")
    batch = XCollector(TOKEN, api_url=x.url).fetch(brand, None)
    assert [m.text for m in batch.mentions] == ["acme is down"]
    assert x.requests_to(SEARCH_PATH)[0].query["query"] == "acme lang:en"


LATE_EVENING = datetime(2026, 11, 27, 23, 0, tzinfo=timezone.utc).timestamp()  # allowance = whole budget
MIDNIGHT = datetime(2026, 11, 28, 0, 0, tzinfo=timezone.utc).timestamp()


def test_the_daily_budget_stops_reading_posts_and_says_so(x):
    clock = Clock(LATE_EVENING)
    for i in range(40):
        x.add_tweet(f"acme {i}", created_at=clock.t - 100 + i)
    collector = XCollector(TOKEN, api_url=x.url, max_requests_per_day=4, max_results=10, max_pages=10, now=clock)
    first = collector.fetch(BRAND, None)
    # counts + 2 search pages; the last request is kept for the next counts call
    assert first.requests_made == 3 and len(first.mentions) == 20
    clock.t += 300
    first = collector.fetch(BRAND, first.cursor)
    assert first.volume and first.mentions == [] and first.cursor["requests_today"] == 4
    assert any("daily budget" in note for note in first.notes)

    x.requests.clear()
    clock.t += 300
    second = collector.fetch(BRAND, first.cursor)
    assert second.requests_made == 0 and x.requests == []
    assert second.cursor["since_id"] == first.cursor["since_id"]

    clock.t = LATE_EVENING + 86400  # a new UTC day: the budget is back
    third = collector.fetch(BRAND, second.cursor)
    assert third.requests_made >= 2 and third.cursor["requests_today"] == third.requests_made


def test_a_busy_stream_is_paced_along_the_day_and_counts_are_never_starved(x):
    clock = Clock(MIDNIGHT)
    collector = XCollector(TOKEN, api_url=x.url, max_requests_per_day=480, max_results=10, now=clock)
    cursor = None
    read: list[str] = []
    for minute in range(120):  # two hours of 60 s polls, 12 posts a minute: always busy
        for i in range(12):
            x.add_tweet(f"acme {minute}-{i}", created_at=clock.t - 1)
        batch = collector.fetch(BRAND, cursor)
        cursor = batch.cursor
        read += [m.text for m in batch.mentions]
        assert cursor["requests_today"] <= 480 * (clock.t - MIDNIGHT + 3600) / 86400 + 1
        clock.t += 60
    assert len(x.requests_to(COUNTS_PATH)) == 24  # every 5 minutes, whatever the poll interval
    assert 55 <= cursor["requests_today"] <= 61  # 3 hours' worth of 480/day by 02:00
    # Nothing read twice; a sample of the 1440 posts (the counts carry the census).
    assert len(read) == len(set(read)) >= 250


def test_a_quiet_stream_reads_posts_every_ten_minutes_and_loses_none(x):
    clock = Clock(MIDNIGHT + 12 * 3600)
    collector = XCollector(TOKEN, api_url=x.url, now=clock)
    cursor = None
    read: list[str] = []
    for minute in range(60):
        x.add_tweet(f"acme {minute}", created_at=clock.t - 1)
        batch = collector.fetch(BRAND, cursor)
        cursor = batch.cursor
        read += [m.text for m in batch.mentions]
        clock.t += 60
    assert len(x.requests_to(SEARCH_PATH)) == 6 and len(x.requests_to(COUNTS_PATH)) == 12
    assert sorted(read) == sorted(f"acme {m}" for m in range(51))  # up to the last read, at minute 50


def test_counts_are_skipped_between_their_intervals(x):
    clock = Clock(LATE_EVENING)
    collector = XCollector(TOKEN, api_url=x.url, counts_every=300, quiet_posts_every=0, now=clock)
    first = collector.fetch(BRAND, None)
    clock.t += 60
    second = collector.fetch(BRAND, first.cursor)
    assert first.volume and second.volume == []
    assert len(x.requests_to(COUNTS_PATH)) == 1 and len(x.requests_to(SEARCH_PATH)) == 2
    # the counts are the census, complete up to the minute they were read; posts are a sample
    assert first.complete_until == (LATE_EVENING - 30) // 60 * 60 and second.complete_until is None
    assert first.posts_are_sample and second.posts_are_sample and first.complete_every == 300


def test_spent_rate_limit_is_honoured_without_calling_or_sleeping(x):
    x.add_tweet("acme first")
    x.remaining[SEARCH_PATH] = 1  # this answer will say remaining: 0
    collector = XCollector(TOKEN, api_url=x.url, quiet_posts_every=0)
    first = collector.fetch(BRAND, None)
    assert len(first.mentions) == 1

    x.add_tweet("acme second")
    started = time.monotonic()
    second = collector.fetch(BRAND, first.cursor)
    assert time.monotonic() - started < 2
    assert len(x.requests_to(SEARCH_PATH)) == 1  # not called again before the reset
    assert second.mentions == [] and second.cursor["since_id"] == first.cursor["since_id"]
    assert second.retry_after is not None and second.retry_after > 800
    assert any("rate limit" in note for note in second.notes)


def test_a_429_gives_retry_after_from_x_rate_limit_reset(x):
    clock = Clock()
    x.rate_limited(path=SEARCH_PATH, reset_in=300)
    with pytest.raises(SourceError) as caught:
        XCollector(TOKEN, api_url=x.url, now=clock).fetch(BRAND, {"since_id": None})
    assert not caught.value.permanent
    assert 295 <= caught.value.retry_after <= 301


def test_the_free_tier_403_is_permanent_and_says_what_to_do(x):
    x.free_tier()
    with pytest.raises(SourceError) as caught:
        XCollector(TOKEN, api_url=x.url).fetch(BRAND, None)
    message = str(caught.value)
    assert caught.value.permanent
    assert "X_BEARER_TOKEN" in message and "paid" in message
    assert "client-not-enrolled" in message
    assert TOKEN not in message


def test_a_wrong_token_is_permanent(x):
    with pytest.raises(SourceError) as caught:
        XCollector("wrong-token", api_url=x.url).fetch(BRAND, None)
    assert caught.value.permanent and "401" in str(caught.value)


def test_an_invalid_query_is_permanent_without_calling_x(x):
    with pytest.raises(SourceError) as caught:
        XCollector(TOKEN, api_url=x.url).fetch(BrandSpec(name="acme", query='"unclosed'), None)
    assert caught.value.permanent and x.requests == []


def test_a_since_id_older_than_the_search_window_is_dropped(x):
    old_id = (int((time.time() - 8 * 86400) * 1000) - 1288834974657) << 22
    x.add_tweet("acme now")
    batch = XCollector(TOKEN, api_url=x.url).fetch(BRAND, {"since_id": str(old_id)})
    assert "since_id" not in x.requests_to(SEARCH_PATH)[0].query
    assert [m.text for m in batch.mentions] == ["acme now"]


def test_reading_stops_at_max_pages_newest_first(x):
    for i in range(30):
        x.add_tweet(f"acme {i}")
    batch = XCollector(TOKEN, api_url=x.url, max_results=10, max_pages=2).fetch(BRAND, None)
    assert len(batch.mentions) == 20
    assert [m.text for m in batch.mentions][:1] == ["acme 29"]  # newest first
    assert batch.notes == []  # a sample by design: the counts are the census, health stays ok


def test_the_token_never_appears_in_the_repr():
    assert TOKEN not in repr(XCollector(TOKEN))


def test_the_token_never_reaches_the_logs_even_at_debug(x, caplog):
    import logging

    with caplog.at_level(logging.DEBUG):
        XCollector(TOKEN, api_url=x.url).fetch(BRAND, None)
    assert caplog.records  # tweepy did log (responses), so the check below means something
    assert all(TOKEN not in record.getMessage() for record in caplog.records)
