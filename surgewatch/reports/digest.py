"""The weekly trend digest for marketing: one brand, one ISO week, a picture first.

``build_digest`` reads the store only (counts, recent posts, incidents, deliveries, source health)
and returns a plain :class:`Digest`; the renderers turn it into Markdown, a self-contained HTML page
and Slack blocks.  Nothing here decides anything new: every number is a count of what the store
already holds, so the digest can be rebuilt for any past week and always says the same thing.

Weeks are ISO weeks in the configured time zone (Monday 00:00 to Monday 00:00 local), and days are
local days, so a week containing a daylight-saving change has one 23- or 25-hour day rather than a
day that straddles midnight.

Posts (top posts, headlines, linked pages, terms) come from the store's capped list of recent
mentions (``store.recent_cap``): a brand with more posts in a week than the cap shows the newest
ones, and the digest says how many posts it looked at.  Where no post has reach or engagement
numbers (news feeds), the week's most repeated headlines stand in for the top posts.  Terms are
this week's against up to TERM_WEEKS earlier weeks (TF-IDF, stop words and the brand's own words
left out).  The scorecard counts the delivery log with the demo's function
(:func:`surgewatch.reports.deliveries.tally_deliveries`).
"""
from __future__ import annotations

import functools
import logging
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Sequence
from zoneinfo import ZoneInfo

from celery.schedules import crontab

from surgewatch import clock
from surgewatch.collectors.base import Mention
from surgewatch.collectors.query import parse_query
from surgewatch.collectors.rss import normalise_link
from surgewatch.notifier.escape import SLACK_TIME, log_text, slack_date, slack_link, slack_text
from surgewatch.reports.charts import volume_chart
from surgewatch.reports.html import md, md_link, md_table, render_page
from surgewatch.config import Settings
from surgewatch.ops.health import SourceHealth
from surgewatch.reports.deliveries import DeliveryTally, tally_deliveries
from surgewatch.reports.review import first_alert_at, incident_deliveries, traffic_peak
from surgewatch.store.base import Store

log = logging.getLogger("surgewatch.reports.digest")

TYPICAL_WEEKS = 4
TERM_WEEKS = 4  # the term list compares this week's posts with those of up to this many weeks before
TOP_POSTS = 5
TOP_HEADLINES = 8
TOP_PAGES = 8
TOP_TERMS = 10
MIN_TERM_POSTS = 3  # a term must appear in at least this many posts of the week: one post is not a trend
RISING_RATIO = 2.0  # share of posts containing the term, this week / the weeks before
MAX_TERM_WORDS = 3  # phrases of up to three adjacent words ("presale codes", "price tiers explained")
REQUESTS_STATE = "digest:requests:{brand}"  # cumulative API requests per source when each digest was built

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_TOKEN = re.compile(r"[#@]?[^\W\d_][\w'’-]*[\w]|[#@]?[^\W\d_]", re.UNICODE)
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
# A phrase never runs across punctuation that ends a clause ("sale. Queue" is not a phrase).
_CLAUSE = re.compile(r"[.!?;:,()\[\]{}\"“”|/…–—]+")
# Left out of the term list besides scikit-learn's English stop list (318 words: "the", "last",
# "first", ...): retweet and HTML debris, and filler that names no topic (times, vague praise).  The
# brand's own query words are left out per brand (see _brand_words).
SOCIAL_STOPWORDS = frozenset("""rt amp via got let http https www com lol omg
year years day days week weeks month months today tonight tomorrow yesterday time times
best better good great far just really like thing things way lot lots going want know think make need""".split())


@functools.cache
def stop_words() -> frozenset[str]:
    # scikit-learn is imported on first use: it takes over a second, and the worker and beat import
    # this module at start-up for the digest's schedule.
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | SOCIAL_STOPWORDS


class DigestError(ValueError):
    """A bad request (an unknown brand, a malformed week).  ``permanent``: retrying cannot help."""

    permanent = True


# -- weeks ----------------------------------------------------------------------------------------------
def parse_week(week: str) -> tuple[int, int]:
    m = _WEEK.match(week.strip())
    if not m:
        raise DigestError(f"week {week!r} is not an ISO week such as 2026-W47")
    year, number = int(m.group(1)), int(m.group(2))
    try:
        date.fromisocalendar(year, number, 1)
    except ValueError:
        raise DigestError(f"{year} has no week {number}") from None
    return year, number


def week_name(d: date) -> str:
    y, w, _ = d.isocalendar()
    return f"{y}-W{w:02d}"


def last_complete_week(now: float, tz: str) -> str:
    today = datetime.fromtimestamp(now, ZoneInfo(tz)).date()
    return week_name(today - timedelta(days=7))


def week_days(week: str, tz: str, offset_weeks: int = 0) -> list[tuple[date, float, float]]:
    """The 7 local days of ``week`` (shifted by ``offset_weeks``) as (day, start epoch, end epoch)."""
    year, number = parse_week(week)
    monday = date.fromisocalendar(year, number, 1) + timedelta(weeks=offset_weeks)
    zone = ZoneInfo(tz)
    out = []
    for i in range(7):
        d = monday + timedelta(days=i)
        start = datetime.combine(d, time(0), zone).timestamp()
        end = datetime.combine(d + timedelta(days=1), time(0), zone).timestamp()
        out.append((d, start, end))
    return out


# -- the digest ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Day:
    day: date
    by_source: dict[str, int]
    previous: int  # same weekday, the week before
    typical: float | None  # same weekday, average of the TYPICAL_WEEKS weeks before (None: no history)

    @property
    def total(self) -> int:
        return sum(self.by_source.values())


@dataclass(frozen=True)
class Spike:
    incident_id: str
    opened_at: float
    severity: str  # the highest it reached
    status: str
    first_alert_at: float | None
    channels: tuple[str, ...]  # where the first alert went
    peak_per_minute: float  # mentions in the busiest bucket, per minute
    lead_seconds: float | None  # traffic peak minus first alert, where traffic is known
    acked_by: str | None
    false_alarm: bool


@dataclass(frozen=True)
class Post:
    source: str
    author: str
    text: str
    url: str
    created_at: float
    reach: int
    engagement: int  # likes + reposts + replies + score


@dataclass(frozen=True)
class Headline:
    """One story of the week, for brands whose posts carry no reach or engagement (news feeds)."""

    text: str  # the headline (the post's first line), as the newest copy has it
    url: str  # the newest copy's link
    source: str
    copies: int  # distinct links that carried it this week (syndicated copies, reposts of the headline)
    outlets: tuple[str, ...]  # the hosts of those links, most copies first
    newest_at: float
    busiest_hour: int  # mentions of the brand in the busiest (local) hour a copy appeared in


@dataclass(frozen=True)
class Term:
    term: str  # a word or a phrase of adjacent words
    posts: int  # posts of this week containing it
    previous: int  # posts of the compared earlier weeks containing it
    ratio: float | None  # share of posts this week / share in the earlier weeks (None: new, or nothing to compare)
    weight_change: float = 0.0  # mean TF-IDF weight per post this week minus the earlier weeks'


@dataclass(frozen=True)
class Scorecard:
    incidents: int
    deliveries: DeliveryTally  # the delivery log of the week's incidents, counted as the demo counts it
    acknowledged: int
    false_alarms: int
    median_ack_seconds: float | None

    # The figures people quote, straight from the delivery log.
    @property
    def sent(self) -> int:
        return self.deliveries.sent

    @property
    def failed(self) -> int:
        return self.deliveries.failed

    @property
    def pages(self) -> int:
        return self.deliveries.pages_sent


@dataclass(frozen=True)
class SourceRow:
    source: str
    status: str
    last_success: float | None
    last_error: str | None
    requests_total: int
    requests_since_last_digest: int | None


@dataclass
class Digest:
    brand: str
    week: str
    timezone: str
    start: float
    end: float
    days: list[Day]
    sources: list[str]
    spikes: list[Spike]
    top_by_reach: list[Post]
    top_by_engagement: list[Post]
    pages: list[tuple[str, int]]
    new_terms: list[Term]
    rising_terms: list[Term]
    top_terms: list[Term]
    scorecard: Scorecard
    health: list[SourceRow]
    posts_seen: int  # posts of the week the digest looked at (recent list, capped)
    posts_previous: int  # posts of the earlier weeks the terms are compared with (recent list, capped)
    typical_weeks: int  # how many earlier weeks the typical level averages (0..TYPICAL_WEEKS)
    chart_png: bytes | None
    site: str | None = None
    notes: list[str] = field(default_factory=list)
    history_start: float | None = None  # first counted bucket of the brand within the compared weeks
    headlines: list[Headline] = field(default_factory=list)  # when no post has reach or engagement
    term_weeks: int = 0  # earlier weeks (with posts kept) the terms are compared with, 0..TERM_WEEKS
    posts_cap: int | None = None  # the store's cap on kept posts, when it cut into the compared weeks

    @property
    def previous_known(self) -> bool:
        """Whether the store holds history from before this week (else "previous week: 0" would lie)."""
        return self.history_start is not None and self.history_start < self.start

    @property
    def total(self) -> int:
        return sum(d.total for d in self.days)

    @property
    def previous_total(self) -> int:
        return sum(d.previous for d in self.days)

    @property
    def typical_total(self) -> float | None:
        if self.typical_weeks == 0:
            return None
        return sum(d.typical or 0.0 for d in self.days)

    @property
    def source_totals(self) -> dict[str, int]:
        out: dict[str, int] = {s: 0 for s in self.sources}
        for d in self.days:
            for s, n in d.by_source.items():
                out[s] = out.get(s, 0) + n
        return out

    @property
    def empty(self) -> bool:
        return self.total == 0


def _per_day(counts: dict[str, dict[float, int]], days: list[tuple[date, float, float]]) -> list[dict[str, int]]:
    out: list[dict[str, int]] = [{} for _ in days]
    for source, series in counts.items():
        for t, n in series.items():
            for i, (_, start, end) in enumerate(days):
                if start <= t < end:
                    out[i][source] = out[i].get(source, 0) + int(n)
                    break
    return out


def _brand_words(query: str) -> set[str]:
    """Words of the brand's own query: always present, so never a 'trend'."""
    words: set[str] = set()
    try:
        parse_query(query)
    except Exception:  # noqa: BLE001 -- the config validated it; be lenient in a report
        pass
    for w in re.findall(r"[^\W\d_][\w'-]*", query.lower()):
        if w not in ("or", "and", "not"):
            words.add(w)
            words.add("#" + w)
    return words


def _words_and_phrases(text: str, exclude: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """The terms of one post, in order, repeats kept: lower-cased words and #tags (no URLs, numbers,
    @handles, stop words or the brand's own words; possessive 's dropped) and phrases of up to
    MAX_TERM_WORDS adjacent ones.  A left-out word or a clause break ends a phrase, so "best of
    the week" gives "best" and "week", never the made-up pair "best week"."""
    out: list[str] = []
    stop = stop_words()
    for clause in _CLAUSE.split(_URL.sub(" | ", text.lower())):
        run: list[str] = []
        for raw in clause.split():
            word = re.sub(r"['’]s$", "", re.sub(r"^[^\w#@]+|[^\w]+$", "", raw))
            bare = word.lstrip("#")
            if (len(bare) < 3 or not _TOKEN.fullmatch(word) or word.startswith("@") or bare in stop
                    or word in exclude or bare in exclude):
                run = []
                continue
            run.append(word)
            run = run[-MAX_TERM_WORDS:]
            out.extend(" ".join(run[i:]) for i in range(len(run)))
    return out


def tokens(text: str, exclude: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
    """The distinct terms (words and phrases) of one post; see :func:`_words_and_phrases`."""
    return set(_words_and_phrases(text, exclude))


def compare_terms(this_week: Sequence[str], earlier: Sequence[str],
                  exclude: set[str]) -> tuple[list[Term], list[Term], list[Term]]:
    """(new, rising, most used) terms of this week's posts against the posts of earlier weeks.

    TF-IDF over both sets of posts (scikit-learn's ``TfidfVectorizer`` over our words and phrases,
    sublinear term frequency, one row per post): a term's weight is its mean over the posts of a
    period, and the inverse document frequency pushes down what every week says.  A term needs MIN_TERM_POSTS
    posts this week to be listed as new or rising; "new" terms appear in no earlier post, "rising"
    ones at least RISING_RATIO times their earlier share of posts; both are ranked by how much more
    they weigh this week.  "Most used" is this week's terms by the number of posts containing them.
    Phrases are listed where their words come together (see ``select``): "presale codes", not
    also "presale", nor "codes queue post" beside "presale codes queue"."""
    if not this_week:
        return [], [], []
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer  # on first use (see stop_words)

    analysed = [_words_and_phrases(doc, exclude) for doc in [*this_week, *earlier]]
    # Only this week's terms can be listed: a vocabulary of those keeps the matrix small (the earlier
    # weeks still count in every term's inverse document frequency).  No per-post normalisation, so
    # a term's weight does not depend on which other terms are in the vocabulary: it is its inverse
    # document frequency times its mean (sublinear) count per post.
    vocabulary = sorted({t for terms in analysed[: len(this_week)] for t in terms})
    if not vocabulary:
        return [], [], []
    vectorizer = TfidfVectorizer(analyzer=lambda terms: terms, sublinear_tf=True, norm=None, vocabulary=vocabulary)
    matrix = vectorizer.fit_transform(analysed)
    names = vectorizer.get_feature_names_out()
    now, before = matrix[: len(this_week)], matrix[len(this_week):]
    posts_now = np.asarray((now > 0).sum(axis=0)).ravel()
    weight_now = np.asarray(now.mean(axis=0)).ravel()
    if earlier:
        posts_before = np.asarray((before > 0).sum(axis=0)).ravel()
        weight_before = np.asarray(before.mean(axis=0)).ravel()
    else:
        posts_before = weight_before = np.zeros(len(names))
    index = {name: i for i, name in enumerate(names)}

    def parts(i: int) -> list[int]:
        """The shorter terms inside term ``i`` ("presale", "codes" in "presale codes")."""
        words = str(names[i]).split(" ")
        found = (index.get(" ".join(words[k:k + size])) for size in range(1, len(words))
                 for k in range(len(words) - size + 1))
        return [j for j in found if j is not None]

    def term(i: int, ratio: float | None = None) -> Term:
        return Term(str(names[i]), int(posts_now[i]), int(posts_before[i]), ratio,
                    float(weight_now[i] - weight_before[i]))

    def select(category: Any) -> list[int]:
        """The terms of ``category`` worth listing.  A phrase one of whose parts is in more posts of
        the category is left out ("tickets presale codes" is new only because "presale codes" is);
        a part seen only inside a listed phrase (in as many posts) is shown as that phrase."""
        members = np.flatnonzero(category)
        phrases = [i for i in members if " " in names[i]]
        dropped = {i for i in phrases if any(category[j] and posts_now[j] > posts_now[i] for j in parts(i))}
        shown_as_phrase = {j for i in phrases if i not in dropped for j in parts(i) if posts_now[j] == posts_now[i]}
        return [int(i) for i in members if i not in dropped and i not in shown_as_phrase]

    used = select(posts_now > 0)
    top = [term(i) for i in sorted(used, key=lambda i: (-posts_now[i], -weight_now[i], names[i]))[:TOP_TERMS]]
    if not earlier:
        return [], [], top  # nothing to compare with: no claim about "new" or "rising"
    ratio = np.where(posts_before > 0, (posts_now / len(this_week)) / np.maximum(posts_before, 1) * len(earlier), np.inf)
    frequent = posts_now >= MIN_TERM_POSTS
    new = [term(i) for i in select(frequent & (posts_before == 0))]
    rising = [term(i, float(ratio[i])) for i in select(frequent & (posts_before > 0) & (ratio >= RISING_RATIO))]
    new.sort(key=lambda t: (-t.weight_change, -t.posts, t.term))
    rising.sort(key=lambda t: (-t.weight_change, -t.posts, t.term))
    return new[:TOP_TERMS], rising[:TOP_TERMS], top


def _headline_key(text: str) -> str:
    first = (text.strip().splitlines() or [""])[0]
    return " ".join(re.findall(r"\w+", first.casefold()))


def top_headlines(posts: Sequence[Mention], hourly: dict[float, int], hour_of: Any) -> list[Headline]:
    """The week's most repeated stories: posts grouped by headline (the first line, compared without
    case or punctuation), each link counted once (a syndicated copy under the same link is one
    copy); ranked by copies, then by the mentions of the busiest hour a copy appeared in, newest
    first.  ``hourly`` maps an hour's start (``hour_of(ts)``) to the brand's mentions in it."""
    groups: dict[str, list[Mention]] = {}
    links: set[str] = set()
    for m in sorted(posts, key=lambda m: -m.timestamp):
        link = normalise_link(m.url) if m.url else m.key
        key = _headline_key(m.text)
        if not key or link in links:
            continue
        links.add(link)
        groups.setdefault(key, []).append(m)
    out = []
    for copies in groups.values():
        newest = copies[0]
        hosts = Counter(_host(m.url) or m.source for m in copies)
        out.append(Headline(newest.text.strip().splitlines()[0].strip(), newest.url, newest.source, len(copies),
                            tuple(h for h, _ in sorted(hosts.items(), key=lambda p: (-p[1], p[0]))),
                            newest.timestamp, max(hourly.get(hour_of(m.timestamp), 0) for m in copies)))
    out.sort(key=lambda h: (-h.copies, -h.busiest_hour, -h.newest_at, h.text))
    return out[:TOP_HEADLINES]


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return (urlsplit(url).hostname or "").removeprefix("www.")
    except ValueError:
        return ""


def _post(m: Mention) -> Post:
    return Post(m.source, m.author, m.text, m.url, m.timestamp, int(m.reach or 0),
                int(m.likes + m.reposts + m.replies + m.score))


def build_digest(
    store: Store, settings: Settings, brand: str, week: str | None = None, now: float | None = None, *,
    traffic: Sequence[tuple[float, float]] | None = None,
) -> Digest:
    """The digest of ``brand`` for ISO ``week`` (default: the last complete week before ``now``).

    ``traffic`` (site requests per minute, where the team has them) gives each spike its lead time."""
    try:
        brand_cfg = settings.brand(brand)
    except KeyError as exc:
        raise DigestError(str(exc.args[0])) from None
    brand = brand_cfg.name
    tz = settings.timezone
    if week is None:
        if now is None:
            raise DigestError("give a week or the current time")
        week = last_complete_week(now, tz)
    days = week_days(week, tz)
    start, end = days[0][1], days[-1][2]
    if traffic is None and brand_cfg.traffic is not None:
        # The brand's own site-traffic history (its `traffic:` setting) gives each spike its lead.
        from surgewatch.traffic import TrafficHistoryError, load_history

        try:
            traffic = load_history(brand_cfg.traffic, start, end)
        except TrafficHistoryError as exc:
            log.warning("digest of %s: site traffic history unavailable (%s); no lead times", brand, exc)
    earlier = [week_days(week, tz, -k) for k in range(1, TYPICAL_WEEKS + 1)]
    history_start = earlier[-1][0][1]
    counts = store.counts(brand, history_start, end)
    this = _per_day(counts, days)
    before = [_per_day(counts, w) for w in earlier]
    totals_before = [[sum(d.values()) for d in w] for w in before]
    # The typical level averages only weeks that have history (a brand watched for two weeks has a
    # two-week typical level, not a four-week one diluted by zeros from before it existed).
    first_bucket = min((float(t) for s in counts.values() for t in s), default=None)
    with_history = [i for i, w in enumerate(earlier) if first_bucket is not None and w[-1][2] > first_bucket]
    typical_weeks = len(with_history)
    sources = sorted({s for d in this for s in d} | {h.source for h in SourceHealth.load_all(store) if h.brand == brand})
    day_rows = []
    for i, (d, _, _) in enumerate(days):
        typical = (sum(totals_before[k][i] for k in with_history) / typical_weeks) if typical_weeks else None
        day_rows.append(Day(d, {s: n for s, n in sorted(this[i].items())}, totals_before[0][i], typical))

    # Spikes: incidents opened during the week.
    bucket = settings.detector.bucket_seconds
    incidents = [i for i in store.list_incidents(brand=brand, since=start) if start <= float(i["opened_at"]) < end]
    incidents.sort(key=lambda i: i["opened_at"])
    spikes: list[Spike] = []
    acked = false_alarms = 0
    ack_delays: list[float] = []
    log_records = []  # the delivery log of the week's incidents, as recorded
    for inc in incidents:
        deliveries = incident_deliveries(store, settings, inc)
        first = first_alert_at(inc, deliveries, bucket)
        first_channels = tuple(sorted({d.channel for d in deliveries if d.is_alert and d.ok and d.at == first}))
        tp = traffic_peak(traffic, float(inc["opened_at"]) - 3600, float(inc["opened_at"]) + 6 * 3600)
        lead = tp[0] - first if tp is not None and first is not None else None
        is_false = inc.get("feedback") == "false_alarm"
        spikes.append(Spike(inc["id"], float(inc["opened_at"]), str(inc.get("severity")), str(inc.get("status")), first,
                            first_channels, float(inc.get("peak_observed") or 0.0) * 60.0 / bucket, lead, inc.get("acked_by"), is_false))
        log_records += store.list_deliveries(inc["id"])
        false_alarms += is_false
        if inc.get("acked_at") is not None:
            acked += 1
            if first is not None:
                ack_delays.append(float(inc["acked_at"]) - first)
    # Counted as the demo counts it (one function), so the two always agree.
    scorecard = Scorecard(len(incidents), tally_deliveries(log_records), acked, false_alarms,
                          statistics.median(ack_delays) if ack_delays else None)

    # Posts: the week's and the earlier weeks', from the recent list.
    terms_start = earlier[TERM_WEEKS - 1][0][1]
    recent = store.recent(brand, max(getattr(store, "recent_cap", 0), settings.store.recent_cap))
    week_posts = [m for m in recent if start <= m.timestamp < end]
    prev_posts = [m for m in recent if terms_start <= m.timestamp < start]
    term_weeks = sum(1 for w in earlier[:TERM_WEEKS] if any(w[0][1] <= m.timestamp < w[-1][2] for m in prev_posts))
    posts = [_post(m) for m in week_posts]
    by_reach = sorted((p for p in posts if p.reach > 0), key=lambda p: (-p.reach, -p.engagement, p.created_at))[:TOP_POSTS]
    by_engagement = sorted((p for p in posts if p.engagement > 0), key=lambda p: (-p.engagement, -p.reach, p.created_at))[:TOP_POSTS]
    # A page counts once per post that links it (a post repeating a link is one recommendation).
    pages_linked = Counter(link for m in week_posts for link in set(m.site_links)).most_common()
    pages_linked.sort(key=lambda p: (-p[1], p[0]))
    headlines: list[Headline] = []
    if not by_reach and not by_engagement:
        # Feeds carry no reach or engagement: the week's most repeated stories stand in for top posts.
        zone = ZoneInfo(tz)

        def hour_of(ts: float) -> float:
            return datetime.fromtimestamp(ts, zone).replace(minute=0, second=0, microsecond=0).timestamp()

        hourly: Counter[float] = Counter()
        for series in counts.values():
            for t, n in series.items():
                if start <= float(t) < end:
                    hourly[hour_of(float(t))] += int(n)
        headlines = top_headlines(week_posts, hourly, hour_of)
    exclude = _brand_words(brand_cfg.query) | _brand_words(brand)
    new, rising, top = compare_terms([m.text for m in week_posts], [m.text for m in prev_posts], exclude)

    health = _health_rows(store, brand)
    notes = []
    capped = len(recent) >= settings.store.recent_cap and bool(recent) and recent[-1].timestamp > terms_start
    if capped:
        notes.append(f"Posts: the store keeps the newest {settings.store.recent_cap}; earlier posts of this "
                     f"week and the {TERM_WEEKS} before are not in the post, headline, page and term lists.")
    total = sum(sum(d.values()) for d in this)
    chart = None
    if total or any(totals_before[0]):
        labels = [d.strftime("%a %d %b") for d, _, _ in days]
        chart = volume_chart(
            labels, {s: [this[i].get(s, 0) for i in range(7)] for s in sorted({s for d in this for s in d})},
            totals_before[0] if first_bucket is not None and first_bucket < start else None,
            [r.typical or 0.0 for r in day_rows] if typical_weeks else None,
            title=f"{brand} · mentions per day · {week} ({tz})", notes=_spike_notes(spikes, days))
    return Digest(brand, week, tz, start, end, day_rows, sources, spikes, by_reach, by_engagement,
                  pages_linked[:TOP_PAGES], new, rising, top, scorecard, health, len(week_posts), len(prev_posts),
                  typical_weeks, chart, brand_cfg.site, notes, first_bucket, headlines=headlines,
                  term_weeks=term_weeks, posts_cap=settings.store.recent_cap if capped else None)


def _spike_notes(spikes: Sequence[Spike], days: list[tuple[date, float, float]]) -> list[tuple[int, str]]:
    out = []
    for i, (_, start, end) in enumerate(days):
        here = [s for s in spikes if start <= s.opened_at < end]
        if here:
            worst = max(here, key=lambda s: ("watch", "warning", "critical").index(s.severity)
                        if s.severity in ("watch", "warning", "critical") else -1)
            out.append((i, f"{len(here)} spike{'s' if len(here) > 1 else ''}: {worst.severity}"))
    return out


def _health_rows(store: Store, brand: str) -> list[SourceRow]:
    snapshots = (store.get_state(REQUESTS_STATE.format(brand=brand)) or {}).get("weeks", {})
    last = snapshots[max(snapshots)] if snapshots else None
    rows = []
    for h in sorted(SourceHealth.load_all(store), key=lambda h: h.source):
        if h.brand != brand:
            continue
        since = h.requests - int(last.get(h.source, 0)) if last is not None else None
        rows.append(SourceRow(h.source, h.status, h.last_success, h.last_error, h.requests, since))
    return rows


def record_requests(store: Store, digest: Digest, keep: int = 12) -> None:
    """Remember each source's cumulative request count as of this digest, so the next one can say
    how many requests (the API spend) the week took.  Called by the scheduled task only: rebuilding
    an old week by hand must not move the baseline."""
    name = REQUESTS_STATE.format(brand=digest.brand)
    weeks = dict((store.get_state(name) or {}).get("weeks", {}))
    weeks[digest.week] = {row.source: row.requests_total for row in digest.health}
    for old in sorted(weeks)[:-keep]:
        del weeks[old]
    store.set_state(name, {"weeks": weeks})


def weekly_digests(store: Store, settings: Settings, now: float) -> list[Digest]:
    """Every brand's digest of the last complete week (what the Monday beat task sends)."""
    out = []
    for b in settings.brands:
        d = build_digest(store, settings, b.name, None, now)
        record_requests(store, d)
        out.append(d)
    return out


def digest_schedule(settings: Settings, day_of_week: str = "mon", hour: int = 9, minute: int = 0, *,
                    timezone: str | None = None, nowfun: Any = None) -> "ZonedCrontab":
    """Celery beat's crontab for the digest: ``day_of_week`` at ``hour:minute`` in the configured
    time zone (default Monday 09:00), on both sides of a daylight-saving change.

    ``nowfun`` replaces the clock (tests); by default celery's app clock is used."""
    return ZonedCrontab(minute=minute, hour=hour, day_of_week=day_of_week,
                        zone=timezone or settings.timezone, nowfun=nowfun)


class ZonedCrontab(crontab):
    """A crontab evaluated in its own time zone, not the Celery app's.

    A plain ``crontab`` reads its zone from the app (``timezone`` setting, UTC by default), so
    "09:00" drifts to 10:00 or 08:00 local for half the year wherever the app's zone is not the
    brand's.  Celery does the DST arithmetic once the zone is right: ``remaining_delta`` works
    in the schedule's zone and returns a real elapsed time."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*", day_of_month: Any = "*",
                 month_of_year: Any = "*", *, zone: str = "UTC", **kwargs: Any) -> None:
        super().__init__(minute, hour, day_of_week, day_of_month, month_of_year, **kwargs)
        self.zone = zone
        self.tz = ZoneInfo(zone)  # shadows BaseSchedule.tz (a cached_property reading the app)

    # beat pickles its schedule into a shelve file: keep the zone across the round trip
    def __reduce__(self) -> Any:
        cls, args, state = super().__reduce__()
        return cls, args, {**state, "zone": self.zone}

    def __setstate__(self, state: Any) -> None:
        state = dict(state)
        zone = state.pop("zone", "UTC")
        super().__setstate__(state)
        self.zone = zone
        self.tz = ZoneInfo(zone)

    def __repr__(self) -> str:
        return f"<ZonedCrontab: {self._orig_minute} {self._orig_hour} * * {self._orig_day_of_week} ({self.zone})>"


# -- rendering -----------------------------------------------------------------------------------------
def _when(ts: float | None, tz: str, fmt: str = "%a %d %b %H:%M") -> str:
    """A time in the digest's zone (the period line names it)."""
    return "—" if ts is None else clock.local(ts, tz).strftime(fmt)


def _change(now: float, before: float | None) -> str:
    if before is None:
        return "no history"
    if before == 0:
        return "new" if now else "±0"
    pct = (now - before) / before * 100
    return f"{pct:+.0f}%"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if abs(seconds) < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _lead(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{_dur(abs(seconds))} {'before' if seconds >= 0 else 'after'}"


def headline(d: Digest) -> str:
    if d.empty:
        return (f"No mentions of {d.brand} were collected in {d.week}. Sources: "
                + (", ".join(f"{h.source} {h.status}" for h in d.health) or "none has polled yet") + ".")
    typical = d.typical_total
    parts = [f"{d.total:,} mentions of {d.brand} in {d.week}"]
    if d.previous_known:
        parts.append(f"{_change(d.total, d.previous_total)} on the previous week ({d.previous_total:,})")
    else:
        parts.append("no earlier history to compare with")
    if typical is not None:
        parts.append(f"{_change(d.total, typical)} on the {d.typical_weeks}-week typical level ({typical:,.0f})")
    busiest = max(d.days, key=lambda x: x.total)
    text = ", ".join(parts) + f". Busiest day: {busiest.day:%A} ({busiest.total:,} mentions)."
    if d.spikes:
        text += f" {len(d.spikes)} spike{'s' if len(d.spikes) != 1 else ''}."
    return text


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def sent_text(t: DeliveryTally) -> str:
    """``4 (3 alerts, 1 all-clear; console 4)``: the delivery log's sent records, as the demo counts them."""
    if not t.sent:
        return "0"
    return (f"{t.sent:,} ({_plural(t.alerts_sent, 'alert')}, {_plural(t.all_clears_sent, 'all-clear')}; "
            f"{t.channels_text()})")


def scorecard_rows(d: Digest) -> list[tuple[str, str]]:
    """The alert scorecard: incidents opened this week, and what the delivery log recorded for them."""
    s = d.scorecard
    t = s.deliveries
    failed = f"{t.failed:,}" + (f" ({t.channels_text('failed')})" if t.failed else "")
    rows = [("Incidents opened", str(s.incidents)), ("Notifications sent", sent_text(t)),
            ("Pages (PagerDuty)", str(s.pages)), ("Failed deliveries", failed)]
    held = {k: n for k, n in t.by_status.items() if k not in ("sent", "failed") and n}
    if held:
        rows.append(("Not sent (superseded, suppressed, in flight)",
                     ", ".join(f"{n:,} {k}" for k, n in sorted(held.items()))))
    rows += [("Acknowledged", str(s.acknowledged)), ("Marked false alarm", str(s.false_alarms)),
             ("Median time to acknowledge", _dur(s.median_ack_seconds))]
    return rows


def headlines_note(d: Digest) -> str:
    """What the headline list is and how it is ranked (said wherever it is shown)."""
    return (f"No post kept this week has reach or engagement numbers (news feeds carry none), so these are the "
            f"week's most repeated stories among the {d.posts_seen:,} posts kept: ranked by copies (distinct "
            f"links carrying the headline), then by the mentions in the busiest hour a copy appeared in, "
            f"newest first.")


def headline_detail(d: Digest, h: Headline) -> str:
    outlets = ", ".join(h.outlets[:3]) + (f" and {len(h.outlets) - 3} more" if len(h.outlets) > 3 else "")
    text = f"{h.copies:,} {'copy' if h.copies == 1 else 'copies'} from {outlets}"
    # the hour's figure only where it tells the stories apart (not eight times the same number)
    if len({x.busiest_hour for x in d.headlines}) > 1:
        text += f"; {h.busiest_hour:,} mentions in its busiest hour"
    return text


def terms_note(d: Digest) -> str:
    """Against what the new and rising terms are measured."""
    if d.term_weeks == 0:
        return ("No new or rising terms: no posts kept from the previous weeks to compare with"
                + (f" (the store keeps the newest {d.posts_cap:,} posts; a larger store.recent_cap keeps "
                   "earlier weeks)" if d.posts_cap else "") + ".")
    weeks = "the previous week" if d.term_weeks == 1 else f"the previous {d.term_weeks} weeks"
    return (f"Against {weeks} ({d.posts_previous:,} posts): TF-IDF of words and phrases, English stop "
            f"words and the brand's own query words left out; a term needs {MIN_TERM_POSTS} posts this week.")


def term_lines(d: Digest) -> list[tuple[str, str]]:
    """(label, plain text) lines of the term list: new, rising and most used."""
    out = []
    if d.new_terms:
        out.append(("New", ", ".join(f"{t.term} ({t.posts} posts)" for t in d.new_terms)))
    if d.rising_terms:
        out.append(("Rising", ", ".join(f"{t.term} ({t.posts} posts, {t.ratio:.1f}x its earlier share)"
                                        for t in d.rising_terms)))
    if d.term_weeks and not d.new_terms and not d.rising_terms:
        out.append(("New or rising", "none this week"))
    if d.top_terms:
        out.append(("Most used", ", ".join(f"{t.term} ({t.posts})" for t in d.top_terms)))
    return out


def _rate(per_minute: float) -> str:
    return f"{per_minute:.0f}" if per_minute >= 10 else f"{per_minute:.1f}"


def _day_table(d: Digest) -> tuple[list[str], list[list[str]]]:
    # Every figure of the table is mentions per day (the spikes' peaks are per minute, and say so).
    header = ["mentions per day"] + list(d.sources) + ["total", "previous week", "typical"]
    rows = []
    for day in d.days:
        rows.append([day.day.strftime("%a %d %b")] + [str(day.by_source.get(s, 0)) for s in d.sources]
                    + [str(day.total), str(day.previous) if d.previous_known else "—",
                       "—" if day.typical is None else f"{day.typical:.0f}"])
    typical = d.typical_total
    rows.append(["week"] + [str(d.source_totals.get(s, 0)) for s in d.sources]
                + [str(d.total), str(d.previous_total) if d.previous_known else "—",
                   "—" if typical is None else f"{typical:.0f}"])
    return header, rows


def render_markdown(d: Digest) -> str:
    lines = [f"# {md(d.brand)} weekly digest, {d.week}", "",
             f"{_when(d.start, d.timezone, '%a %d %b %Y')} to {_when(d.end - 1, d.timezone, '%a %d %b %Y')} ({d.timezone})", ""]
    lines.append(md(headline(d)))
    if d.empty:
        lines.append("")
        return "\n".join(lines)
    lines += ["", "![mentions per day](digest-chart.png)", ""]
    header, rows = _day_table(d)
    lines += md_table(header, rows)
    lines += ["", "## Spikes", ""]
    if d.spikes:
        lines += ["| opened | severity | first alert | channels | peak mentions/min | alert vs traffic peak | acked |",
                  "|---|---|---|---|---|---|---|"]
        for s in d.spikes:
            lines.append(f"| {_when(s.opened_at, d.timezone)} | {s.severity}{' (false alarm)' if s.false_alarm else ''} "
                         f"| {_when(s.first_alert_at, d.timezone)} | {', '.join(s.channels) or '—'} "
                         f"| {_rate(s.peak_per_minute)} | {_lead(s.lead_seconds)} "
                         f"| {md(s.acked_by) if s.acked_by else 'no'} |")
    else:
        lines.append("No spikes this week.")
    if d.headlines:
        lines += ["", "## Top headlines", "", headlines_note(d), ""]
        lines += [f"{i}. {md_link(h.url, md(h.text, 140))} — {md(headline_detail(d, h))}"
                  for i, h in enumerate(d.headlines, 1)]
    for title, posts, key in (("Top posts by reach", d.top_by_reach, "reach"),
                              ("Top posts by engagement", d.top_by_engagement, "engagement")):
        if d.headlines:
            break  # no post has either number: the headlines above stand in for both lists
        lines += ["", f"## {title}", ""]
        if not posts:
            lines.append(f"No post with a known {key} among the {d.posts_seen} posts kept.")
        for p in posts:
            lines.append(f"- {md_link(p.url, md(p.text, 140) or '(no text)')} — {md(p.source)} "
                         f"@{md(p.author or '?')}, reach {p.reach:,}, engagement {p.engagement:,}")
    lines += ["", "## Site pages linked most", ""]
    lines += [f"- {md_link(url, md(url))}: {n} post{'s' if n != 1 else ''}" for url, n in d.pages] or ["None."]
    lines += ["", "## Terms", "", md(terms_note(d)), ""]
    for label, text in term_lines(d):
        lines.append(f"- {label}: {md(text)}")
    lines += ["", "## Alert scorecard", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in scorecard_rows(d)]
    lines += ["", "## Sources", ""]
    lines += _health_lines(d, md) or ["No source has polled yet."]
    if d.notes:
        lines += [""] + [f"_{md(n)}_" for n in d.notes]
    lines.append("")
    return "\n".join(lines)


def _health_lines(d: Digest, esc) -> list[str]:
    out = []
    for h in d.health:
        spend = (f"{h.requests_since_last_digest:,} API requests since the last digest, {h.requests_total:,} in all"
                 if h.requests_since_last_digest is not None else f"{h.requests_total:,} API requests in all")
        line = f"- {esc(h.source)}: {h.status}, last success {_when(h.last_success, d.timezone)}; {spend}"
        if h.last_error and h.status != "ok":
            line += f"; last error: {esc(h.last_error)}"
        out.append(line)
    return out


def render_html(d: Digest, chart_src: str | None = None) -> str:
    """One self-contained page (templates/digest.html): inline CSS, the chart as a data: URI (or
    ``chart_src``, e.g. an e-mail's ``cid:``), no script, nothing fetched; every string that came
    from outside is HTML-escaped by the template."""
    day_header, day_rows = _day_table(d)
    return render_page(
        "digest.html", d=d, headline=headline(d), chart_src=chart_src,
        period=f"{_when(d.start, d.timezone, '%a %d %b %Y')} to {_when(d.end - 1, d.timezone, '%a %d %b %Y')}",
        day_header=day_header, day_rows=day_rows,
        spike_header=("opened", "severity", "first alert", "channels", "peak mentions/min", "alert vs traffic peak", "acked"),
        spike_rows=[(_when(s.opened_at, d.timezone), s.severity + (" (false alarm)" if s.false_alarm else ""),
                     _when(s.first_alert_at, d.timezone), ", ".join(s.channels) or "—", _rate(s.peak_per_minute),
                     _lead(s.lead_seconds), s.acked_by or "no") for s in d.spikes],
        post_sections=[] if d.headlines else [
            ("Top posts by reach", d.top_by_reach, f"No post with a known reach among the {d.posts_seen} posts kept."),
            ("Top posts by engagement", d.top_by_engagement,
             f"No post with a known engagement among the {d.posts_seen} posts kept.")],
        headlines=[(h, headline_detail(d, h)) for h in d.headlines], headlines_note=headlines_note(d),
        terms_note=terms_note(d), term_lines=term_lines(d),
        scorecard=scorecard_rows(d),
        health=[line[2:] for line in _health_lines(d, str)],
    )


def fallback_text(d: Digest) -> str:
    """The notification text Slack shows where blocks are not rendered (and in push previews)."""
    return slack_text(f"{d.brand} weekly digest {d.week}: {headline(d)}", 3000, mrkdwn=False)


def slack_blocks(d: Digest) -> list[dict[str, Any]]:
    """Block Kit for the digest: the headline, spikes, top posts, pages, terms, scorecard, sources.
    Outside text goes through notifier.escape (no @channel, no <links|labels> from strangers)."""
    def section(text: str) -> dict[str, Any]:
        return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": slack_text(f"{d.brand} weekly digest · {d.week}", 150, mrkdwn=False)}},
        section(slack_text(headline(d), 2900)),
    ]
    if d.empty:
        return blocks
    per_source = ", ".join(f"{slack_text(s, 100)} {n:,}" for s, n in d.source_totals.items())
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"By source: {per_source}"[:3000]}]})
    if d.spikes:
        # Times as <!date^…> tokens: each reader sees their own zone (added after escaping)
        lines = [f"• {slack_date(s.opened_at, d.timezone)}: *{s.severity}*, alert "
                 f"{slack_date(s.first_alert_at, d.timezone, SLACK_TIME) if s.first_alert_at is not None else '—'}"
                 + (f", {_lead(s.lead_seconds)} the traffic peak" if s.lead_seconds is not None else "")
                 + (" (false alarm)" if s.false_alarm else "") for s in d.spikes[:10]]
        blocks.append(section("*Spikes*\n" + "\n".join(lines)))
    posts = d.top_by_engagement or d.top_by_reach
    if posts:
        lines = [f"• {slack_link(p.url, p.text or '(no text)', 150)} — {slack_text(p.source, 40)} "
                 f"@{slack_text(p.author or '?', 60)}, engagement {p.engagement:,}, reach {p.reach:,}" for p in posts]
        blocks.append(section("*Top posts*\n" + "\n".join(lines)))
    elif d.headlines:
        lines = [f"• {slack_link(h.url, h.text, 150)} — {slack_text(headline_detail(d, h), 200)}" for h in d.headlines[:5]]
        blocks.append(section("*Top headlines*\n" + "\n".join(lines)))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": slack_text(headlines_note(d), 2900)}]})
    if d.pages:
        blocks.append(section("*Site pages linked most*\n" + "\n".join(
            f"• {slack_link(u, u, 200)} ({n})" for u, n in d.pages[:5])))
    terms = [f"{label}: {slack_text(text, 1200)}" for label, text in term_lines(d)]
    if terms:
        blocks.append(section("*Terms*\n" + "\n".join(terms)))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": slack_text(terms_note(d), 2900)}]})
    s = d.scorecard
    blocks.append(section(
        f"*Alert scorecard*\n{_plural(s.incidents, 'incident')}, notifications sent {sent_text(s.deliveries)}, "
        f"{s.failed} failed, {s.pages} pages, {s.acknowledged} acknowledged, {s.false_alarms} false alarms, "
        f"median time to ack {_dur(s.median_ack_seconds)}"))
    if d.health:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "; ".join(
            f"{slack_text(h.source, 40)} {h.status}, {h.requests_total:,} requests" for h in d.health)[:3000]}]})
    return blocks


def send_digest_to_slack(d: Digest, client: Any, channel: str) -> dict[str, Any]:
    """Post the blocks, then the chart as a file in the message's thread (``files_upload_v2``:
    getUploadURLExternal + upload + completeUploadExternal).  Returns {"channel", "ts", "file"}.
    Slack errors surface as slack_sdk's SlackApiError; the scheduled task decides about retries."""
    posted = client.chat_postMessage(channel=channel, text=fallback_text(d), blocks=slack_blocks(d))
    receipt: dict[str, Any] = {"channel": posted["channel"], "ts": posted["ts"], "file": None}
    if d.chart_png:
        # files_upload_v2 needs the channel ID, which the post's answer gives us.
        up = client.files_upload_v2(channel=posted["channel"], thread_ts=posted["ts"], file=d.chart_png,
                                    filename=f"digest-{d.week}.png", title=f"{d.brand} mentions per day, {d.week}",
                                    alt_txt="Mentions per day by source, against last week and the typical level")
        files = up.get("files") or ([up.get("file")] if up.get("file") else [])
        receipt["file"] = files[0].get("id") if files else None
    return receipt


def digest_email(d: Digest, channel: Any) -> Any:
    """The digest as one e-mail for ``channel`` (an EmailChannel): the Markdown as the plain-text part,
    the HTML page with its chart as an inline image (mail clients block ``data:`` images)."""
    cid = channel.new_cid()
    html = render_html(d, chart_src=f"cid:{cid}" if d.chart_png else None)
    return channel.digest_message(f"{d.brand} weekly digest {d.week}: {headline(d)}", render_markdown(d), html,
                                  d.chart_png, cid)


def deliver_weekly_digests(rt: Any) -> list[dict[str, Any]]:
    """Every brand's digest of the last complete week, each delivered on its own: one brand's
    failure (a Slack error, a broken history) is recorded in its entry and logged, and the other
    brands still get theirs.  (The beat task fans out one retried task per brand instead, see
    :func:`deliver_brand_digest`; this is for a single process, e.g. the CLI or tests.)"""
    from surgewatch import clock

    week = None
    out: list[dict[str, Any]] = []
    for b in rt.settings.brands:
        try:
            week = week or last_complete_week(clock.now(), rt.settings.timezone)
            out.append(deliver_brand_digest(rt, b.name, week))
        except Exception as exc:  # noqa: BLE001 -- one brand's failure must not cost the others their digest
            log.error("digest for %s not delivered: %s", log_text(b.name, 200), log_text(str(exc), 300))
            out.append({"brand": b.name, "week": week, "sent": False, "error": str(exc)})
    return out


def deliver_brand_digest(rt: Any, brand: str, week: str | None = None) -> dict[str, Any]:
    """Build one brand's digest (of ``week``, default the last complete one), write it to
    ``digest.out_dir`` if set, and post it to Slack once (claimed per brand and week, so a
    redelivered task or a second beat never posts it twice).  A Slack failure raises a typed
    ``ChannelError`` (``permanent`` or not) after giving the claim back, so the caller retries
    this brand alone."""
    import time as _time

    from surgewatch import clock
    from surgewatch.config import secret_from

    settings = rt.settings
    store = rt.store
    slack = settings.channels.slack
    token = secret_from(slack.token, "SLACK_BOT_TOKEN") if slack is not None else None
    target = settings.digest.channel or (slack.marketing_channel or slack.ops_channel if slack else None)
    d = build_digest(store, settings, brand, week, clock.now())
    entry: dict[str, Any] = {"brand": d.brand, "week": d.week, "sent": False}
    if settings.digest.out_dir:
        from pathlib import Path

        folder = Path(settings.digest.out_dir) / f"{''.join(c if c.isalnum() else '-' for c in d.brand.lower())}-{d.week}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "digest.md").write_text(render_markdown(d), encoding="utf-8")
        (folder / "digest.html").write_text(render_html(d), encoding="utf-8")
        entry["folder"] = str(folder)
    if slack is not None and token and target:
        key = f"digest:{d.brand}:{d.week}"
        if store.claim(key, 300.0, _time.time()):
            from slack_sdk.errors import SlackClientError

            from surgewatch.notifier.slack import classify_slack_error
            from surgewatch.registry import slack_web_client

            try:
                receipt = send_digest_to_slack(d, slack_web_client(settings, token), target)
            except (SlackClientError, OSError) as exc:
                store.release(key)
                raise classify_slack_error(exc, f"digest {d.brand} {d.week} to {target}") from None
            store.mark_sent(key, {"channel": receipt["channel"], "ts": receipt["ts"]})
            entry["sent"] = True
        else:
            entry["duplicate"] = True
    # only once the brand's digest is out: a retry must not count the week's requests twice
    record_requests(store, d)
    return entry
