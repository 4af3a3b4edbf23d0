"""The weekly digest, built from seeded history in a real store (SQLite and Redis).

Every number the digest shows is recomputed here straight from the seeded data (not through the
digest's code), so a wrong day boundary, a double count or a lost source fails a test.
"""
from __future__ import annotations

import base64
import re
import statistics
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from surgewatch.collectors.base import Mention
from surgewatch.reports.charts import png_size
from surgewatch.config import parse_settings
from surgewatch.reports.digest import (
    DigestError,
    build_digest,
    last_complete_week,
    record_requests,
    render_html,
    render_markdown,
    slack_blocks,
    week_days,
    weekly_digests,
)
from surgewatch.ops.health import SourceHealth
from surgewatch.store.base import Delivery

TZ = "America/New_York"  # five hours behind UTC in November: local days are not UTC days
ZONE = ZoneInfo(TZ)
WEEK = "2026-W47"  # Mon 16 - Sun 22 November 2026
MONDAY = date(2026, 11, 16)
SITE = "https://www.acme.example"


def settings_for(tmp_path, tz: str = TZ, **extra):
    return parse_settings({
        "brands": [{"name": "Acme", "query": '"Acme Live" OR acmelive', "site": SITE},
                   {"name": "Quiet", "query": "quietbrand"}],
        "sources": {"rss": {"feeds": ["http://127.0.0.1:1/f.rss"]}},
        "channels": {"console": {}, "pagerduty": {"routing_key": "k"}},
        "store": {"url": f"sqlite:///{tmp_path / 'unused.db'}", "recent_cap": 2000},
        "detector": {"bucket_seconds": 60},
        "timezone": tz,
        **extra,
    }, "test")


def local(d: date, hour: int, minute: int = 0) -> float:
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=ZONE).timestamp()


def mention(source: str, n: int, ts: float, text: str, **kw) -> Mention:
    return Mention(source=source, id=f"{source}-{n}", brand="Acme", text=text,
                   created_at=datetime.fromtimestamp(ts, ZONE).astimezone(ZoneInfo("UTC")), **kw)


class History:
    """Five weeks of seeded mentions for Acme, kept as plain lists for the independent checks."""

    def __init__(self) -> None:
        rng = np.random.default_rng(47)
        self.posts: list[Mention] = []
        self.volume: list[tuple[float, int]] = []  # source "x": counts without posts, per minute bucket
        n = 0
        for week in range(-4, 1):
            for day in range(7):
                d = MONDAY + timedelta(weeks=week, days=day)
                # rss posts: a few a day; more on the Wednesday of the digest week (the spike)
                per_day = 6 + day + (25 if (week == 0 and day == 2) else 0)
                for k in range(per_day):
                    n += 1
                    hour = int(rng.integers(0, 24))
                    ts = local(d, hour, int(rng.integers(0, 60)))
                    words = "presale codes queue" if week == 0 else "lineup rumours"
                    text = f"Acme Live {words} post {k}" if k % 2 == 0 else f"acmelive tickets {words}"
                    if week == 0 and k % 3 == 0:
                        text += " waiting room"
                    link = (f"{SITE}/tickets",) if k % 2 == 0 else ((f"{SITE}/queue", f"{SITE}/queue") if k % 5 == 1 else ())
                    self.posts.append(mention("rss", n, ts, text, url=f"https://news.example/{n}", author=f"a{n}",
                                              likes=int(rng.integers(0, 50)), reposts=int(rng.integers(0, 5)),
                                              reach=int(rng.integers(0, 100000)) if k % 4 else None,
                                              site_links=link))
                # the edge of a local day: 23:59 local is already the next day in UTC
                n += 1
                self.posts.append(mention("reddit", n, local(d, 23, 59), "late night acmelive thread", score=7))
                for hour in (9, 13, 20):
                    self.volume.append((float(int(local(d, hour)) // 60 * 60), 3 + day))
        self.posts.sort(key=lambda m: m.timestamp)

    def seed(self, store) -> None:
        for i in range(0, len(self.posts), 200):
            store.ingest(self.posts[i:i + 200])
        store.set_volume("Acme", "x", self.volume)

    # -- the independent answers ---------------------------------------------------------------
    def per_day(self, week_offset: int) -> list[dict[str, int]]:
        out = []
        for day in range(7):
            d = MONDAY + timedelta(weeks=week_offset, days=day)
            start = datetime(d.year, d.month, d.day, tzinfo=ZONE).timestamp()
            nd = d + timedelta(days=1)
            end = datetime(nd.year, nd.month, nd.day, tzinfo=ZONE).timestamp()
            counts: dict[str, int] = {}
            for m in self.posts:
                if start <= m.timestamp < end:
                    counts[m.source] = counts.get(m.source, 0) + 1
            for ts, c in self.volume:
                if start <= ts < end:
                    counts["x"] = counts.get("x", 0) + c
            out.append(counts)
        return out

    def week_posts(self, week_offset: int) -> list[Mention]:
        start = datetime(MONDAY.year, MONDAY.month, MONDAY.day, tzinfo=ZONE).timestamp() + week_offset * 7 * 86400
        return [m for m in self.posts if start <= m.timestamp < start + 7 * 86400]


def seed_incidents(store, when: float) -> list[dict]:
    """Three incidents in the week (one acked after 12 min and paged, one false alarm, one whose
    Slack delivery failed) and one in the week before (must not be counted)."""
    def verdict(at, observed, severity, forecast=None):
        return {"at": at, "observed": observed, "expected": 2.0, "score": 0.8, "severity": severity,
                "warming_up": False, "forecast": forecast, "sources_spiking": 1}

    incidents = []
    specs = [
        ("acme-a", when, "critical", 12 * 60, None, {"console": ("sent", {}), "pagerduty": ("sent", {"dedup_key": "sw-acme-a", "action": "trigger"})}),
        ("acme-b", when + 86400, "watch", None, "false_alarm", {"console": ("sent", {})}),
        ("acme-c", when + 2 * 86400, "warning", 30 * 60, None, {"console": ("sent", {}), "slack": ("sent", {"error": "channel_not_found", "permanent": True})}),
        ("acme-old", when - 7 * 86400, "watch", None, None, {"console": ("sent", {})}),
    ]
    for iid, opened, severity, ack_after, feedback, channels in specs:
        transitions = [{"no": 0, "at": opened, "event": "opened", "from": "quiet", "to": "watch",
                        "verdict": verdict(opened, 9.0, "watch", {"peak_rate": 30.0, "seconds_to_peak": 900.0, "peak_ratio": 15.0}),
                        "dispatched": True}]
        if severity != "watch":
            transitions.append({"no": 1, "at": opened + 300, "event": "escalated", "from": "watch", "to": severity,
                                "verdict": verdict(opened + 300, 40.0, severity), "dispatched": True})
        transitions.append({"no": len(transitions), "at": opened + 3600, "event": "resolved", "from": severity,
                            "to": "resolved", "verdict": verdict(opened + 3600, 1.0, "quiet"), "dispatched": True})
        inc = {"id": iid, "brand": "Acme", "status": "resolved", "severity": severity, "opened_at": opened,
               "resolved_at": opened + 3600, "last_at": opened + 3600, "peak_observed": 40.0 if severity != "watch" else 9.0,
               "peak_score": 0.9, "quiet_buckets": 0, "acked_by": "sam" if ack_after else None,
               "acked_at": opened + 60 + ack_after if ack_after else None, "transitions": transitions}
        if feedback:
            inc["feedback"] = feedback
        store.save_incident(inc)
        for tr in transitions:
            if tr["event"] == "resolved" and "pagerduty" in channels:
                continue
            for channel, (status, receipt) in channels.items():
                # what the notifier records in the delivery log; sent 30 s after the bucket closed
                # (a plausible send time), or failed with the service's error
                at = tr["at"] + 60 + 30
                error = receipt.get("error")
                store.record_delivery(Delivery(iid, tr["no"], channel, status="failed" if error else status,
                                               event=tr["event"], brand="Acme", attempts=1,
                                               receipt=None if error else receipt, error=error, created_at=tr["at"] + 60,
                                               updated_at=at, sent_at=None if error else at))
        incidents.append(inc)
    return incidents


@pytest.fixture
def seeded(make_store, tmp_path):
    store = make_store(recent_cap=2000)
    history = History()
    history.seed(store)
    wednesday = local(MONDAY + timedelta(days=2), 10)
    incidents = seed_incidents(store, wednesday)
    h = SourceHealth("rss", "Acme", status="ok", last_success=local(MONDAY + timedelta(days=6), 23), polls=900, requests=1234)
    h.save(store)
    SourceHealth("x", "Acme", status="disabled", last_error="403 from the free tier", requests=17).save(store)
    SourceHealth("rss", "Quiet", status="ok", requests=5).save(store)
    return store, settings_for(tmp_path), history, incidents


NOW = local(MONDAY + timedelta(days=7), 9)  # Monday 23 November, 09:00 local: W47 is the last complete week


def test_the_default_week_is_the_last_complete_one_in_the_configured_zone():
    assert last_complete_week(NOW, TZ) == WEEK
    # Sunday 22 November 23:30 in New York is already Monday in UTC; the week is still W46 there.
    sunday_late = local(MONDAY + timedelta(days=6), 23, 30)
    assert last_complete_week(sunday_late, TZ) == "2026-W46"
    assert last_complete_week(sunday_late, "UTC") == "2026-W47"


def test_week_days_follow_local_midnights_across_a_dst_change():
    days = week_days("2026-W44", "Europe/London")  # Mon 26 Oct; the clocks went back on Sun 25 Oct
    assert [d.isoformat() for d, _, _ in days][0] == "2026-10-26"
    assert all(end - start == 86400 for _, start, end in days)
    before = week_days("2026-W43", "Europe/London")  # contains Sunday 25 October: 25 hours long
    assert before[-1][2] - before[-1][1] == 25 * 3600
    assert before[-1][2] == days[0][1]


def test_a_malformed_week_or_unknown_brand_is_a_clear_error(seeded):
    store, settings, _, _ = seeded
    with pytest.raises(DigestError, match="ISO week"):
        build_digest(store, settings, "Acme", "2026-47", NOW)
    with pytest.raises(DigestError, match="no week 54"):
        build_digest(store, settings, "Acme", "2026-W54", NOW)
    with pytest.raises(DigestError, match="no brand named 'Nope'"):
        build_digest(store, settings, "Nope", WEEK, NOW)


def test_mentions_per_day_and_source_match_the_seeded_data(seeded):
    store, settings, history, _ = seeded
    d = build_digest(store, settings, "acme", None, NOW)  # brand names are case-insensitive
    assert d.week == WEEK and d.brand == "Acme"
    expected = history.per_day(0)
    assert [day.by_source for day in d.days] == expected
    assert [day.day for day in d.days] == [MONDAY + timedelta(days=i) for i in range(7)]
    assert d.total == sum(sum(c.values()) for c in expected)
    previous = history.per_day(-1)
    assert [day.previous for day in d.days] == [sum(c.values()) for c in previous]
    typical = [statistics.mean(sum(history.per_day(-k)[i].values()) for k in range(1, 5)) for i in range(7)]
    assert [day.typical for day in d.days] == pytest.approx(typical)
    assert d.typical_weeks == 4
    # the 23:59 local reddit post of each day is counted on that (local) day, not the next
    assert all(day.by_source["reddit"] == 1 for day in d.days)
    assert d.sources == ["reddit", "rss", "x"]


def test_the_week_spikes_and_scorecard_count_what_the_store_holds(seeded):
    store, settings, _, incidents = seeded
    d = build_digest(store, settings, "Acme", WEEK)
    assert [s.incident_id for s in d.spikes] == ["acme-a", "acme-b", "acme-c"]  # acme-old is last week's
    a = d.spikes[0]
    assert a.first_alert_at == incidents[0]["opened_at"] + 60 + 30  # claimed 30 s after the bucket closed
    assert a.channels == ("console", "pagerduty")
    assert a.severity == "critical" and a.peak_per_minute == 40.0 and a.lead_seconds is None
    s = d.scorecard
    # sent records of the delivery log: a 2 firing transitions x (console, pagerduty) = 4 (its resolve
    # went nowhere), b opened + resolved on console = 2, c 3 transitions on console = 3 (Slack failed)
    t = s.deliveries
    assert (s.incidents, s.sent, t.alerts_sent, t.all_clears_sent) == (3, 9, 7, 2)
    assert t.by_channel == {"console": {"sent": 7}, "pagerduty": {"sent": 2}, "slack": {"failed": 3}}
    assert s.failed == 3  # acme-c's Slack: both firing transitions and the resolve
    assert s.acknowledged == 2 and s.false_alarms == 1 and s.pages == 2
    assert s.median_ack_seconds == statistics.median([12 * 60 - 30, 30 * 60 - 30])


def test_slack_shows_spike_times_as_date_tokens_with_new_york_fallbacks(seeded):
    store, settings, _, incidents = seeded
    d = build_digest(store, settings, "Acme", WEEK)
    [spikes] = [b["text"]["text"] for b in slack_blocks(d) if b["type"] == "section"
                and b["text"]["text"].startswith("*Spikes*")]
    first = spikes.splitlines()[1]
    opened, alert = incidents[0]["opened_at"], d.spikes[0].first_alert_at
    opened_ny = datetime.fromtimestamp(opened, ZONE)
    assert opened_ny.utcoffset().total_seconds() == -5 * 3600  # November: EST
    assert first.startswith(f"• <!date^{int(opened)}^{{date_short_pretty}} {{time}}|{opened_ny.isoformat()}>: "
                            f"*critical*, alert <!date^{int(alert)}^{{time}}|"
                            f"{datetime.fromtimestamp(alert, ZONE).isoformat()}>")


def test_lead_before_the_traffic_peak_is_given_where_traffic_is_known(seeded):
    store, settings, _, incidents = seeded
    opened = incidents[0]["opened_at"]
    traffic = [(opened + k * 60, 1000 + (500 if k == 40 else 0)) for k in range(-30, 120)]
    d = build_digest(store, settings, "Acme", WEEK, traffic=traffic)
    assert d.spikes[0].lead_seconds == (opened + 40 * 60) - (opened + 90)


def test_top_posts_pages_and_terms_come_from_the_weeks_posts(seeded):
    store, settings, history, _ = seeded
    d = build_digest(store, settings, "Acme", WEEK)
    week = history.week_posts(0)
    assert d.posts_seen == len(week) and d.term_weeks == 4
    assert d.posts_previous == sum(len(history.week_posts(-k)) for k in range(1, 5))  # terms compare 4 weeks
    by_reach = sorted((m for m in week if m.reach), key=lambda m: -m.reach)[:5]
    assert [p.reach for p in d.top_by_reach] == [m.reach for m in by_reach]
    assert d.top_by_reach[0].url == by_reach[0].url
    eng = sorted(m.likes + m.reposts + m.replies + m.score for m in week)[-5:][::-1]
    assert [p.engagement for p in d.top_by_engagement] == eng
    tickets = sum(1 for m in week if f"{SITE}/tickets" in m.site_links)
    queue = sum(1 for m in week if f"{SITE}/queue" in m.site_links)  # a post linking twice counts once
    assert dict(d.pages) == {f"{SITE}/tickets": tickets, f"{SITE}/queue": queue}
    new = {t.term: t.posts for t in d.new_terms}
    # "presale codes queue" and "waiting room" only appear this week, always together: the phrase is
    # listed, not also its words
    assert new["presale codes queue"] == len(week) - sum(1 for m in week if m.source == "reddit")
    assert new["waiting room"] == sum(1 for m in week if "waiting room" in m.text)
    assert "presale" not in new and "waiting" not in new
    assert "lineup" not in new and "acme" not in new and "live" not in new  # old, or the brand's own words
    assert all("tickets" not in t.term.split() for t in d.new_terms)  # present every week
    # ... but among the most used: its phrases with this week's words do not hide it
    assert {t.term: t.posts for t in d.top_terms}["tickets"] == sum(1 for m in week if "tickets" in m.text)


def test_source_health_and_api_spend_since_the_last_digest(seeded):
    store, settings, _, _ = seeded
    first = build_digest(store, settings, "Acme", WEEK)
    assert [(h.source, h.status, h.requests_total, h.requests_since_last_digest) for h in first.health] == [
        ("rss", "ok", 1234, None), ("x", "disabled", 17, None)]
    record_requests(store, first)
    h = SourceHealth.load(store, "rss", "Acme")
    h.requests += 100
    h.save(store)
    again = build_digest(store, settings, "Acme", "2026-W48")
    assert again.health[0].requests_since_last_digest == 100


def test_the_chart_is_a_png_of_the_fixed_size(seeded):
    store, settings, _, _ = seeded
    d = build_digest(store, settings, "Acme", WEEK)
    assert d.chart_png is not None and png_size(d.chart_png) == (1200, 600)
    import matplotlib.image

    import io

    pixels = matplotlib.image.imread(io.BytesIO(d.chart_png), format="png")
    assert pixels.shape[:2] == (600, 1200)
    assert pixels.std() > 0.05  # not a blank canvas


def test_the_markdown_and_html_show_the_numbers(seeded):
    store, settings, history, _ = seeded
    d = build_digest(store, settings, "Acme", WEEK)
    total = sum(sum(c.values()) for c in history.per_day(0))
    prev = sum(sum(c.values()) for c in history.per_day(-1))
    md = render_markdown(d)
    assert f"{total:,} mentions of Acme in {WEEK}" in md
    assert f"| week | {d.source_totals['reddit']} | {d.source_totals['rss']} | {d.source_totals['x']} | {total} | {prev} |" in md
    assert "| Notifications sent | 9 (7 alerts, 2 all-clears; console 7, pagerduty 2) |" in md
    assert "| Failed deliveries | 3 (slack 3) |" in md and "| Median time to acknowledge |" in md
    page = render_html(d)
    assert f"{total:,} mentions of Acme" in page and "<h2>Alert scorecard</h2>" in page


def test_the_html_is_self_contained_and_escapes_outside_text(make_store, tmp_path):
    store = make_store(recent_cap=2000)
    evil = '<script>alert(1)</script><img src="https://evil.example/x.png"> @channel'
    t = local(MONDAY, 12)
    store.ingest([mention("rss", 1, t, evil, url="https://news.example/1", likes=5, reach=10,
                          author='"><link href="https://evil.example/s.css">', site_links=(f"{SITE}/tickets",)),
                  mention("rss", 2, t + 60, "fine", url="javascript:alert(1)", likes=3)])
    d = build_digest(store, settings_for(tmp_path), "Acme", WEEK)
    page = render_html(d)
    assert "<script" not in page.lower()
    # nothing the browser would fetch: no src/href to http(s) except plain <a> links to posts
    fetches = re.findall(r"<(img|script|link|iframe|source|video|audio)\b[^>]*\b(?:src|href)\s*=\s*\"(https?:[^\"]*)", page, re.I)
    assert fetches == []
    imgs = re.findall(r"<img\b[^>]*src=\"([^\"]*)\"", page)
    assert imgs and all(src.startswith("data:image/png;base64,") for src in imgs)
    base64.b64decode(imgs[0].split(",", 1)[1], validate=True)
    assert "&lt;script&gt;" in page and 'href="https://news.example/1"' in page
    assert "javascript:" not in page  # a link with another scheme is shown as text, not linked
    md = render_markdown(d)
    assert "<script" not in md and "<img" not in md and "<link" not in md


def test_an_empty_week_gives_a_short_honest_digest(make_store, tmp_path):
    store = make_store()
    SourceHealth("rss", "Acme", status="failing", last_error="timeout").save(store)
    d = build_digest(store, settings_for(tmp_path), "Acme", WEEK)
    assert d.empty and d.total == 0 and d.spikes == [] and d.chart_png is None
    md = render_markdown(d)
    assert "No mentions of Acme were collected in 2026-W47. Sources: rss failing." in md
    assert len(md.splitlines()) < 8
    assert "No mentions of Acme" in render_html(d)
    blocks = slack_blocks(d)
    assert len(blocks) == 2 and "rss failing" in blocks[1]["text"]["text"]


def test_weekly_digests_cover_every_brand_and_remember_the_request_counts(seeded):
    store, settings, _, _ = seeded
    out = weekly_digests(store, settings, NOW)
    assert [(d.brand, d.week) for d in out] == [("Acme", WEEK), ("Quiet", WEEK)]
    assert out[1].empty
    assert store.get_state("digest:requests:Acme") == {"weeks": {WEEK: {"rss": 1234, "x": 17}}}
