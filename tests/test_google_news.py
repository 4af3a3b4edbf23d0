"""Google News search RSS, against a local server answering in Google's own RSS shape."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qs

import pytest

from surgewatch.collectors.base import BrandSpec, Collector, SourceError
from surgewatch.collectors.google_news import GoogleNewsCollector
from surgewatch.collectors.query import parse_query
from tests.fakes.feed_server import FeedServer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ACME = BrandSpec("Acme", '"Acme Live" OR acmelive -jobs', site="https://www.acme.example")


def google_item(article: str, headline: str, publisher: str, publisher_url: str, pub_date: str) -> str:
    # The shape of a news.google.com/rss/search item (2024-2026): the headline carries " - Publisher",
    # the link and guid are Google's article token, the description repeats the headline as a link.
    link = f"https://news.google.com/rss/articles/{article}?oc=5"
    return (
        f"<item><title>{headline} - {publisher}</title><link>{link}</link>"
        f'<guid isPermaLink="false">{article}</guid><pubDate>{pub_date}</pubDate>'
        f'<description>&lt;a href="{link}" target="_blank"&gt;{headline}&lt;/a&gt;&amp;nbsp;&amp;nbsp;'
        f'&lt;font color="#6f6f6f"&gt;{publisher}&lt;/font&gt;</description>'
        f'<source url="{publisher_url}">{publisher}</source></item>'
    )


def google_feed(*items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel>'
        "<generator>NFE/5.0</generator><title>\"Acme Live\" OR acmelive -jobs - Google News</title>"
        "<link>https://news.google.com/search?q=acme&amp;hl=en-US&amp;gl=US&amp;ceid=US:en</link>"
        "<language>en-US</language><webMaster>news-webmaster@google.com</webMaster>"
        "<copyright>2026 Google LLC</copyright><lastBuildDate>Sun, 01 Mar 2026 12:00:00 GMT</lastBuildDate>"
        "<description>Google News</description>" + "".join(items) + "</channel></rss>"
    ).encode("utf-8")


FEED = google_feed(
    google_item("CBMiAAA1", "Acme Live announces a world tour", "The Example Times",
                "https://www.example-times.com", "Sun, 01 Mar 2026 11:30:00 GMT"),
    google_item("CBMiAAA2", "Acme Live is hiring: 200 jobs", "Jobs Daily",  # Google ignores our -jobs here
                "https://jobs.example", "Sun, 01 Mar 2026 11:00:00 GMT"),
    google_item("CBMiAAA3", "Why #acmelive is trending — ünïcödé 🎟️", "Blog",
                "https://blog.example", "Sun, 01 Mar 2026 10:00:00 GMT"),
)


@pytest.fixture
def server():
    with FeedServer() as srv:
        yield srv


def google(server: FeedServer, **kwargs) -> GoogleNewsCollector:
    return GoogleNewsCollector(api_url=server.url("/rss/search"), timeout=2, now=lambda: T0.timestamp(), **kwargs)


def test_it_is_a_collector_named_google_news(server):
    assert isinstance(google(server), Collector) and google(server).name == "google_news"


def test_it_searches_with_the_translated_query_and_edition_parameters(server):
    server.route("/rss/search", body=FEED, content_type="application/rss+xml; charset=utf-8")
    google(server, hl="de", gl="DE", ceid="DE:de").fetch(ACME, None)
    sent = server.requests_to("/rss/search")[0]
    params = parse_qs(sent.query)
    assert params == {
        "q": [parse_query(ACME.query).to_google_news()],
        "hl": ["de"], "gl": ["DE"], "ceid": ["DE:de"],
    }
    assert params["q"] == ['"Acme Live" OR acmelive -jobs']


def test_it_rechecks_every_result_locally_and_names_the_publisher(server):
    server.route("/rss/search", body=FEED, content_type="application/rss+xml; charset=utf-8")
    batch = google(server).fetch(ACME, None)
    assert [m.id for m in batch.mentions] == [
        "news.google.com/rss/articles/CBMiAAA3?oc=5",
        "news.google.com/rss/articles/CBMiAAA1?oc=5",
    ]
    tour = batch.mentions[1]
    assert tour.source == "google_news" and tour.author == "The Example Times"
    # the description only repeats the headline and publisher, so it is not added twice
    assert tour.text == "Acme Live announces a world tour - The Example Times"
    assert tour.url == "https://news.google.com/rss/articles/CBMiAAA1?oc=5"
    assert tour.created_at == datetime(2026, 3, 1, 11, 30, tzinfo=timezone.utc)
    assert tour.lang == "en-US"
    assert "🎟️" in batch.mentions[0].text


def test_a_second_poll_is_conditional(server):
    server.route("/rss/search", body=FEED)
    news = google(server)
    first = news.fetch(ACME, None)
    second = news.fetch(ACME, first.cursor)
    assert server.requests_to("/rss/search")[-1].status == 304
    assert second.mentions == [] and second.cursor == first.cursor


def test_editing_the_query_starts_a_fresh_cursor(server):
    server.route("/rss/search", body=FEED)
    news = google(server)
    first = news.fetch(ACME, None)
    edited = BrandSpec("Acme", '"Acme Live" OR acmelive -jobs -hiring')
    second = news.fetch(edited, first.cursor)
    assert "if-none-match" not in server.requests_to("/rss/search")[-1].headers
    assert list(second.cursor["feeds"]) != list(first.cursor["feeds"])
    assert len(second.cursor["feeds"]) == 1


def test_googles_unusual_traffic_page_is_a_transient_error(server):
    server.route("/rss/search", status=503, retry_after=60, body=b"<html>Our systems have detected unusual traffic</html>",
                 content_type="text/html")
    with pytest.raises(SourceError) as info:
        google(server).fetch(ACME, None)
    assert not info.value.permanent and info.value.retry_after == 60
    assert "google_news" in str(info.value) and "HTTP 503" in str(info.value)


def test_a_search_url_with_its_own_parameters_keeps_them(server):
    news = GoogleNewsCollector(api_url=server.url("/rss/search?x=1"))
    assert news.search_url(parse_query("acme")).startswith(server.url("/rss/search?x=1&q=acme&"))
