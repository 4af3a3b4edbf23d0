"""What the weekly digest says about a week's posts and alerts: headlines for brands whose posts carry
no reach or engagement (news feeds), terms against the brand's earlier weeks, a scorecard that counts
the delivery log the way the demo does, and one unit per figure.

Expected values are worked out here from the seeded data (plain counting), not through the digest."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from surgewatch.reports.deliveries import tally_deliveries
from surgewatch.reports.digest import (
    MIN_TERM_POSTS,
    build_digest,
    compare_terms,
    render_html,
    render_markdown,
    slack_blocks,
    tokens,
)
from surgewatch.store.base import Delivery
from tests.fakes.slack_server import validate_blocks
from tests.test_digest import MONDAY, WEEK, local, mention, settings_for

EXCLUDE = {"acme", "live", "acmelive", "#acmelive"}


# -- terms ------------------------------------------------------------------------------------------
def _earlier_weeks() -> list[str]:
    posts = []
    for k in range(40):
        text = "Review: last year's Acme Live was the best weekend at the venue"
        if k < 2:
            text += ", the queue was long"
        posts.append(text)
    return posts


def _this_week() -> list[str]:
    posts = []
    for k in range(46):
        text = "Review: last year's Acme Live was the best weekend at the venue"
        if k < 12:
            text += ", the queue was long"
        if k < 6:
            text += ". Presale codes are out"
        posts.append(text)
    posts.append("A zeppelin flew over Acme Live")  # one post: not a trend
    return posts


def test_a_frequent_noise_word_is_not_a_term_and_a_real_new_term_is():
    new, rising, top = compare_terms(_this_week(), _earlier_weeks(), EXCLUDE)
    listed = [t.term for t in new + rising + top]
    for noise in ("last", "year", "year's", "best", "the", "was", "at", "are", "out"):
        assert not any(noise in t.split() for t in listed), (noise, listed)
    assert not any(w in t.split() for t in listed for w in EXCLUDE)  # the brand's own words
    # "presale codes" is in 6 posts this week and none before: new, as the phrase (not also its words)
    assert [(t.term, t.posts, t.previous) for t in new] == [("presale codes", 6, 0)]
    assert "zeppelin" not in listed[: len(new) + len(rising)] and 1 < MIN_TERM_POSTS
    # "queue": 12 of 47 posts now, 2 of 40 before -> rising by its share of posts
    queue = {t.term: t for t in rising}["queue"]
    assert (queue.posts, queue.previous) == (12, 2)
    assert queue.ratio == pytest.approx((12 / 47) / (2 / 40))
    assert queue.weight_change > 0
    # what every week says is neither new nor rising, though it is the most used
    assert not {"review", "weekend", "venue"} & {t.term for t in new + rising}
    assert top[0].posts == 46 and top[0].term in ("review", "weekend venue", "weekend", "venue")


def test_a_term_rising_less_than_twofold_or_in_too_few_posts_is_not_listed():
    before = ["queue at the gate"] * 10 + ["nothing here today"] * 30
    now = ["queue at the gate"] * 15 + ["nothing here today"] * 25 + ["new merch stall"] * 2
    new, rising, _ = compare_terms(now, before, EXCLUDE)
    assert "queue" not in {t.term for t in rising}  # 15/42 against 10/40: x1.4
    assert not [t for t in new if "merch" in t.term]  # 2 posts < MIN_TERM_POSTS


def test_without_earlier_posts_nothing_is_called_new_or_rising():
    new, rising, top = compare_terms(_this_week(), [], EXCLUDE)
    assert new == [] and rising == [] and top
    assert compare_terms([], ["x"], EXCLUDE) == ([], [], [])
    assert compare_terms(["the and of", "a b"], [], EXCLUDE) == ([], [], [])  # no term at all


def test_phrases_do_not_run_across_left_out_words_or_punctuation():
    assert tokens("Best of the week. Presale codes out!", EXCLUDE) == {"presale", "codes", "presale codes"}
    assert tokens("acme live tickets: queue https://x.example/a 2027 #acmelive @someone", EXCLUDE) == {"tickets", "queue"}
    assert "line-up" in tokens("Who is going to Acme Live? The line-up so far", EXCLUDE)


def test_the_digest_compares_with_as_many_earlier_weeks_as_the_store_holds(make_store, tmp_path):
    store = make_store(recent_cap=2000)
    n = 0
    posts = []
    for weeks_back, text, count in ((0, "acmelive presale codes queue", 8), (1, "acmelive lineup rumours", 5),
                                    (2, "acmelive lineup rumours", 4), (6, "acmelive presale codes queue", 9)):
        for k in range(count):
            n += 1
            posts.append(mention("rss", n, local(MONDAY - timedelta(weeks=weeks_back), 12, k), text,
                                 url=f"https://news.example/{n}"))
    store.ingest(posts)
    d = build_digest(store, settings_for(tmp_path), "Acme", WEEK)
    # weeks -1 and -2 hold posts; week -6 is beyond the four compared and must not hide "presale"
    assert d.term_weeks == 2 and d.posts_previous == 9
    assert [t.term for t in d.new_terms] == ["presale codes queue"]
    md = render_markdown(d)
    assert "Against the previous 2 weeks (9 posts): TF-IDF" in md
    assert "- New: presale codes queue (8 posts)" in md
    assert "New: presale codes queue (8 posts)" in render_html(d)
    assert any("New: presale codes queue" in str(b) for b in slack_blocks(d))


# -- headlines ------------------------------------------------------------------------------------------
def test_an_rss_only_brand_gets_the_weeks_most_repeated_headlines(make_store, tmp_path):
    store = make_store(recent_cap=2000)
    day = MONDAY + timedelta(days=2)
    n = 0

    def post(source, text, ts, url):
        nonlocal n
        n += 1
        return mention(source, n, ts, text, url=url, author=f"a{n}")

    posts = [
        # A: three copies under three links, plus the same story under links already counted
        post("rss", "Acme Live tickets on sale Friday", local(day, 9, 5), "https://news.example/a"),
        post("rss", "ACME LIVE: tickets on sale, Friday!", local(day, 9, 6), "https://wire.example/a1"),
        post("rss", "Acme Live tickets on sale Friday", local(day, 9, 7), "https://blog.example/a"),
        post("google_news", "Acme Live tickets on sale Friday", local(day, 9, 8), "https://www.news.example/a/?utm_source=g"),
        # B: two copies, newer than A
        post("rss", "Acme Live adds a second stage", local(day, 18, 0), "https://news.example/b"),
        post("rss", "Acme Live adds a second stage", local(day, 18, 1), "https://wire.example/b"),
        # one copy each: C in a busy hour; E and F share an hour (E newer); D alone in its hour
        post("rss", "Acme Live car park opens early", local(day, 10, 30), "https://news.example/c"),
        post("rss", "Acme Live food vendors named", local(day, 15, 0), "https://news.example/d"),
        post("rss", "<script>alert(1)</script> Acme Live weather warning", local(day, 20, 40), "https://news.example/e"),
        post("rss", "Acme Live shuttle times", local(day, 20, 10), "https://news.example/f"),
    ]
    store.ingest(posts)
    store.set_volume("Acme", "x", [(float(int(local(day, 10, 31)) // 60 * 60), 40)])  # the busy hour of C
    d = build_digest(store, settings_for(tmp_path), "Acme", WEEK)
    assert d.top_by_reach == [] and d.top_by_engagement == []
    got = [(h.text, h.copies, h.busiest_hour) for h in d.headlines]
    assert got == [
        ("Acme Live tickets on sale Friday", 3, 4),  # 4 posts in the 09:00 hour (one repeats a link)
        ("Acme Live adds a second stage", 2, 2),
        ("Acme Live car park opens early", 1, 41),
        ("<script>alert(1)</script> Acme Live weather warning", 1, 2),  # newer than F, same hour
        ("Acme Live shuttle times", 1, 2),
        ("Acme Live food vendors named", 1, 1),
    ]
    # the newest copy is linked, and no link appears twice
    assert d.headlines[0].url == "https://www.news.example/a/?utm_source=g"
    assert set(d.headlines[0].outlets) == {"news.example", "wire.example", "blog.example"}
    urls = [h.url for h in d.headlines]
    assert len(urls) == len(set(urls))

    md = render_markdown(d)
    assert "## Top headlines" in md and "Top posts by reach" not in md
    assert "ranked by copies (distinct links carrying the headline)" in md
    assert re.search(r"1\. \[Acme Live tickets on sale Friday\]\(https://www\.news\.example/a/\?utm_source=g\) — 3 copies from ", md)
    assert "— 1 copy from news.example; 41 mentions in its busiest hour" in md  # C, in the busy hour
    assert "<script" not in md
    page = render_html(d)
    assert "<h2>Top headlines</h2>" in page and "<script" not in page and "&lt;script&gt;" in page
    assert "ranked by copies" in page
    blocks = slack_blocks(d)
    assert validate_blocks(blocks) == []
    text = str(blocks)
    assert "*Top headlines*" in text and "3 copies" in text and "ranked by copies" in text and "<script" not in text


def test_a_brand_whose_posts_have_engagement_keeps_its_top_posts(make_store, tmp_path):
    store = make_store()
    store.ingest([mention("rss", 1, local(MONDAY, 9), "Acme Live tickets", url="https://news.example/1"),
                  mention("reddit", 2, local(MONDAY, 10), "Acme Live thread", url="https://reddit.example/2", score=12)])
    d = build_digest(store, settings_for(tmp_path), "Acme", WEEK)
    assert d.headlines == [] and [p.engagement for p in d.top_by_engagement] == [12]
    assert "## Top headlines" not in render_markdown(d) and "## Top posts by engagement" in render_markdown(d)


# -- the scorecard and the delivery log ---------------------------------------------------------------
# (incident, transition, event, channel, status): every status the log knows, on three channels
LOG = [
    ("i1", 0, "opened", "console", "sent"), ("i1", 0, "opened", "slack", "sent"), ("i1", 0, "opened", "pagerduty", "sent"),
    ("i1", 1, "escalated", "console", "sent"), ("i1", 1, "escalated", "slack", "failed"),
    ("i1", 1, "escalated", "pagerduty", "superseded"),
    ("i1", 2, "resolved", "console", "sent"), ("i1", 2, "resolved", "slack", "suppressed"),
    ("i1", 2, "resolved", "pagerduty", "sent"),
    ("i2", 0, "opened", "console", "sent"), ("i2", 0, "opened", "slack", "pending"),
    ("old", 0, "opened", "console", "sent"),  # an incident of the week before: not in this digest
]


def _seed_log(store) -> dict[str, float]:
    opened = {"i1": local(MONDAY + timedelta(days=1), 10), "i2": local(MONDAY + timedelta(days=3), 10),
              "old": local(MONDAY - timedelta(days=3), 10)}
    for iid, at in opened.items():
        events = sorted({(no, ev) for i, no, ev, _, _ in LOG if i == iid})
        store.save_incident({"id": iid, "brand": "Acme", "status": "resolved", "severity": "warning", "opened_at": at,
                             "peak_observed": 9.0, "transitions": [
                                 {"no": no, "at": at + 300 * no, "event": ev, "from": "watch", "to": "resolved" if ev == "resolved" else "warning",
                                  "verdict": {"observed": 9.0, "expected": 2.0}, "dispatched": True} for no, ev in events]})
    for iid, no, event, channel, status in LOG:
        at = opened[iid] + 300 * no + 90
        store.record_delivery(Delivery(iid, no, channel, status=status, event=event, brand="Acme", attempts=1,
                                       error="channel_not_found" if status == "failed" else None,
                                       reason="superseded by transition 2" if status == "superseded" else None,
                                       created_at=at - 30, updated_at=at, sent_at=at if status == "sent" else None))
    return opened


def test_the_tally_counts_the_delivery_log_as_recorded(make_store):
    store = make_store()
    _seed_log(store)
    t = tally_deliveries(store.list_deliveries())
    assert t.sent == sum(1 for row in LOG if row[4] == "sent") == 8
    assert t.alerts_sent == sum(1 for row in LOG if row[4] == "sent" and row[2] != "resolved") == 6
    assert t.all_clears_sent == 2 and t.pages_sent == 1  # PagerDuty's resolve is not a page
    assert t.by_status == {"sent": 8, "failed": 1, "superseded": 1, "suppressed": 1, "pending": 1}
    assert t.by_channel == {"console": {"sent": 5}, "slack": {"sent": 1, "failed": 1, "suppressed": 1, "pending": 1},
                            "pagerduty": {"sent": 2, "superseded": 1}}
    assert t.in_flight == 1 and t.channels_text() == "console 5, pagerduty 2, slack 1"
    assert t.not_sent_text() == "1 failed, 1 superseded, 1 suppressed, 1 pending"


def test_the_scorecard_counts_the_weeks_deliveries_as_the_demo_does(make_store, tmp_path):
    store = make_store()
    _seed_log(store)
    store.ingest([mention("rss", 1, local(MONDAY, 9), "Acme Live tickets", url="https://news.example/1")])
    d = build_digest(store, settings_for(tmp_path), "Acme", WEEK)
    week = [row for row in LOG if row[0] != "old"]
    s = d.scorecard
    assert s.incidents == 2
    assert s.sent == sum(1 for row in week if row[4] == "sent") == 7
    assert s.deliveries == tally_deliveries([x for x in store.list_deliveries() if x.incident != "old"])
    md = render_markdown(d)
    assert "| Notifications sent | 7 (5 alerts, 2 all-clears; console 4, pagerduty 2, slack 1) |" in md
    assert "| Failed deliveries | 1 (slack 1) |" in md
    assert "| Not sent (superseded, suppressed, in flight) | 1 pending, 1 superseded, 1 suppressed |" in md
    assert "Notifications sent" in render_html(d)
    assert "notifications sent 7 (5 alerts" in str(slack_blocks(d))


# -- units -------------------------------------------------------------------------------------------------
def test_peaks_are_per_minute_and_days_per_day_whatever_the_bucket(make_store, tmp_path):
    store = make_store()
    _seed_log(store)  # peak_observed 9 mentions in one 5-minute bucket
    store.ingest([mention("rss", 1, local(MONDAY, 9), "Acme Live tickets", url="https://news.example/1")])
    settings = settings_for(tmp_path, detector={"bucket_seconds": 300})
    d = build_digest(store, settings, "Acme", WEEK)
    assert d.spikes[0].peak_per_minute == pytest.approx(9 / 5)
    md = render_markdown(d)
    assert "peak mentions/min" in md and "| 1.8 |" in md and "| mentions per day |" in md
    page = render_html(d)
    for text in (md, page, str(slack_blocks(d))):
        assert "bucket" not in text.lower()


def test_when_the_post_cap_hides_the_earlier_weeks_the_digest_says_so_and_how_to_fix_it(make_store, tmp_path):
    store = make_store(recent_cap=10)
    store.ingest([mention("rss", k, local(MONDAY - timedelta(weeks=1), 9, k), "acmelive lineup rumours",
                          url=f"https://news.example/{k}") for k in range(3)]
                 + [mention("rss", 100 + k, local(MONDAY, 9, k), "acmelive presale codes",
                            url=f"https://news.example/{100 + k}") for k in range(12)])
    settings = settings_for(tmp_path, store={"url": f"sqlite:///{tmp_path / 'unused.db'}", "recent_cap": 10})
    d = build_digest(store, settings, "Acme", WEEK)
    assert d.posts_seen == 10 and d.term_weeks == 0 and d.new_terms == [] and d.posts_cap == 10
    md = render_markdown(d)
    assert "no posts kept from the previous weeks to compare with (the store keeps the newest 10 posts" in md
    assert "- Most used: presale codes (10)" in md


def test_the_busiest_hour_is_shown_only_where_it_tells_headlines_apart(make_store, tmp_path):
    store = make_store()
    store.ingest([mention("rss", k, local(MONDAY, 9, k), f"Acme Live story {'ab'[k % 2]}", url=f"https://n.example/{k}")
                  for k in range(4)])
    d = build_digest(store, settings_for(tmp_path), "Acme", WEEK)
    assert [(h.copies, h.busiest_hour) for h in d.headlines] == [(2, 4), (2, 4)]
    assert "busiest hour" not in render_markdown(d).split("## Top headlines")[1].split("## Site")[0].replace(
        "the busiest hour a copy appeared in", "")
