"""The bad-input corpus: hostile feeds, malformed API JSON, broken configs, injection attempts and
secrets.  Each case asserts the clear error it must produce AND that nothing else broke (the healthy
feed next to it is still collected; the API collector answers a typed SourceError or a sane batch,
never another exception; the CLI prints one line per problem, never a traceback)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
import yaml
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from typer.testing import CliRunner

from surgewatch.collectors.base import Batch, BrandSpec, Mention, SourceError
from surgewatch.collectors.hackernews import HackerNewsCollector
from surgewatch.collectors.reddit import RedditCollector
from surgewatch.collectors.x import XCollector
from surgewatch import pipeline
from surgewatch.cli.main import app as cli_app
from surgewatch.config import parse_settings
from tests.fakes.hn_server import FakeHackerNews
from tests.fakes.reddit_server import FakeReddit
from tests.fakes.slack_server import FakeSlack
from tests.fakes.x_server import COUNTS_PATH, SEARCH_PATH, FakeX
from surgewatch.demo.feedserver import FeedServer, render_rss
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime, delivery_key
from tests.support import redis_db_url
from tests.support_faults import RawServer, seed_incident

pytestmark = [pytest.mark.redis]

CORPUS = Path(__file__).parent / "corpus"
NOW = time.time()


def good_items(n: int = 5) -> list[dict]:
    return [{"id": f"g{k}", "title": f"Acme Live good {k}", "link": f"https://news.example/g/{k}",
             "published": datetime.fromtimestamp(NOW - 60 * k - 30, timezone.utc)} for k in range(n)]


def runtime(redis_url: str, settings_extra: dict | None = None, **rss: object) -> Runtime:
    url = redis_db_url(redis_url, 11)
    redis.Redis.from_url(url).flushdb()
    data = {"brands": [{"name": "Acme", "query": '"Acme Live"', "site": "https://www.acme.example"}],
            "sources": {"rss": {"interval": 60, "timeout": 2, **rss}}, "store": {"url": url}}
    data.update(settings_extra or {})
    return Runtime(parse_settings(data))


# -- hostile feeds ------------------------------------------------------------------------------------
# (corpus file, content type, what the health note must say)
FEED_CASES = [
    ("not_xml.html", "text/html", "not an RSS/Atom feed"),
    ("not_xml.json", "application/json", "not an RSS/Atom feed"),
    ("empty.xml", "application/rss+xml", "not an RSS/Atom feed"),
    ("binary.bin", "application/octet-stream", "not an RSS/Atom feed"),
    ("billion_laughs.xml", "application/rss+xml", "billion laughs"),
    ("billion_laughs_oneline.xml", "application/rss+xml", "billion laughs"),
    ("quadratic_blowup.xml", "application/rss+xml", "billion laughs"),
    ("xxe_file.xml", "application/rss+xml", "billion laughs"),
    ("xxe_parameter.xml", "application/rss+xml", "billion laughs"),
    ("utf16_billion_laughs.xml", "application/rss+xml", "XML entities"),
]


@pytest.mark.parametrize("name,ctype,says", FEED_CASES, ids=[c[0] for c in FEED_CASES])
def test_a_hostile_feed_is_refused_with_a_clear_note_and_the_good_feed_is_still_collected(redis_url, name, ctype, says):
    with FeedServer() as feed:
        feed.route("/bad.rss", body=(CORPUS / name).read_bytes(), content_type=ctype)
        feed.route("/good.rss", items=good_items())
        rt = runtime(redis_url, feeds=[feed.url("/bad.rss"), feed.url("/good.rss")])
        started = time.monotonic()
        outcome = pipeline.collect(rt, "rss", "Acme", now=NOW)
        assert time.monotonic() - started < 5
        assert outcome.status == "ok" and outcome.new == 5, outcome
        health = SourceHealth.load(rt.store, "rss", "Acme")
        assert health.status == "degraded"
        [note] = health.notes
        assert "/bad.rss" in note and says in note, note
        assert "\n" not in note and len(note) < 400
        assert "root:" not in json.dumps(rt.store.get_cursor("rss", "Acme"))  # no /etc/passwd anywhere
        assert all("lol" not in m.text and "root:" not in m.text for m in rt.store.recent("Acme", 50))


def test_a_feed_that_declares_utf8_but_is_latin1_is_read_without_crashing(redis_url):
    with FeedServer() as feed:
        feed.route("/bad.rss", body=(CORPUS / "wrong_encoding.xml").read_bytes(), content_type="application/rss+xml")
        feed.route("/good.rss", items=good_items())
        rt = runtime(redis_url, feeds=[feed.url("/bad.rss"), feed.url("/good.rss")])
        outcome = pipeline.collect(rt, "rss", "Acme", now=NOW)
        assert outcome.status == "ok" and outcome.new in (5, 6)  # the Latin-1 post may be recovered
        for m in rt.store.recent("Acme", 50):
            m.text.encode("utf-8")  # whatever was kept is valid text


def big_feed(size: int) -> bytes:
    item = render_rss(good_items(1)).split(b"<item>", 1)[1].split(b"</item>", 1)[0]
    head = render_rss([]).rsplit(b"</channel>", 1)[0]
    n = size // (len(item) + 13) + 1
    return head + b"".join(b"<item>" + item + b"</item>" for _ in range(n)) + b"</channel></rss>"


@pytest.fixture(scope="module")
def fifty_megabytes() -> bytes:
    body = big_feed(50 * 1024 * 1024)
    assert len(body) >= 50 * 1024 * 1024
    return body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50_mb_feed_is_cut_at_the_size_cap_and_the_good_feed_is_still_collected(redis_url, fifty_megabytes, chunked):
    with FeedServer() as feed:
        feed.route("/big.rss", body=fifty_megabytes, content_type="application/rss+xml", chunked=chunked)
        feed.route("/good.rss", items=good_items())
        rt = runtime(redis_url, feeds=[feed.url("/big.rss"), feed.url("/good.rss")])
        started = time.monotonic()
        outcome = pipeline.collect(rt, "rss", "Acme", now=NOW)
        assert time.monotonic() - started < 6
        assert outcome.status == "ok" and outcome.new == 5
        [note] = SourceHealth.load(rt.store, "rss", "Acme").notes
        assert "exceeds the 5000000-byte limit" in note


def _endless(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"<item><title>Acme Live forever</title></item>" * 1000
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    conn.sendall(b'5\r\n<rss>\r\n')
    while not stop.is_set():
        conn.sendall(frame)


def test_an_endless_chunked_response_is_cut_off_and_the_good_feed_is_still_collected(redis_url):
    with RawServer(_endless) as raw, FeedServer() as feed:
        feed.route("/good.rss", items=good_items())
        rt = runtime(redis_url, feeds=[raw.url(), feed.url("/good.rss")])
        started = time.monotonic()
        outcome = pipeline.collect(rt, "rss", "Acme", now=NOW)
        assert time.monotonic() - started < 7  # the size cap or the 3 x timeout deadline, whichever first
        assert outcome.status == "ok" and outcome.new == 5
        [note] = SourceHealth.load(rt.store, "rss", "Acme").notes
        assert "exceeds" in note or "longer than" in note


# -- API JSON: X, Reddit, HN ---------------------------------------------------------------------------
ODD = "Acme Live \u202edaolnwod\u202c \u200b\u200d\u2066x\u2069 A\u0301\u0302\u0303cme \U0001F4A5 \ufeff"
HUGE = "Acme Live " + "x" * 2_000_000

X_PAYLOADS = {
    "missing data and meta": {},
    "data is a string": {"data": "oops", "meta": {"result_count": 1}},
    "tweet without text or date": {"data": [{"id": "1"}], "meta": {"result_count": 1}},
    "wrong types": {"data": [{"id": 5, "text": 7, "created_at": "yesterday", "author_id": []}],
                    "meta": {"result_count": "many", "newest_id": {}}},
    "null everywhere": {"data": [None], "includes": None, "meta": None},
    "huge text": {"data": [{"id": "2", "text": HUGE, "created_at": "2026-11-27T08:00:00.000Z"}],
                  "meta": {"result_count": 1, "newest_id": "2"}},
    "odd unicode": {"data": [{"id": "3", "text": ODD, "created_at": "2026-11-27T08:00:00.000Z", "author_id": "9"}],
                    "includes": {"users": [{"id": "9", "username": "\u202eevil", "name": ODD}]},
                    "meta": {"result_count": 1, "newest_id": "3"}},
}

REDDIT_PAYLOADS = {
    "not a listing": {"kind": "t3"},
    "children is a dict": {"kind": "Listing", "data": {"children": {"a": 1}, "after": None}},
    "thing without fields": {"kind": "Listing", "data": {"children": [{"kind": "t3", "data": {}}], "after": None}},
    "wrong types": {"kind": "Listing", "data": {"children": [{"kind": "t3", "data": {
        "id": 1, "name": 2, "title": ["x"], "created_utc": "soon", "score": "high", "permalink": None}}], "after": 5}},
    "huge text": {"kind": "Listing", "data": {"after": None, "children": [{"kind": "t3", "data": {
        "id": "h1", "name": "t3_h1", "title": "Acme Live", "selftext": HUGE, "created_utc": NOW - 60,
        "subreddit": "test", "author": "a", "permalink": "/r/test/comments/h1/x/", "score": 1}}]}},
    "odd unicode": {"kind": "Listing", "data": {"after": None, "children": [{"kind": "t3", "data": {
        "id": "u1", "name": "t3_u1", "title": ODD, "selftext": ODD, "created_utc": NOW - 60,
        "subreddit": "test", "author": "\u202eevil", "permalink": "/r/test/comments/u1/x/", "score": 1}}]}},
}

HN_PAYLOADS = {
    "missing hits": {"nbPages": 1},
    "hits is null": {"hits": None},
    "hit without fields": {"hits": [{}], "nbPages": 1},
    "wrong types": {"hits": [{"objectID": 5, "created_at_i": "now", "title": 3, "points": "many"}], "nbPages": "x"},
    "huge text": {"hits": [{"objectID": "9", "created_at_i": int(NOW) - 60, "title": "Acme Live", "story_text": HUGE,
                            "_tags": ["story"], "author": "a"}], "nbPages": 1},
    "odd unicode": {"hits": [{"objectID": "8", "created_at_i": int(NOW) - 60, "title": ODD, "author": "\u202eevil",
                              "_tags": ["story"]}], "nbPages": 1},
}

BRAND = BrandSpec(name="Acme", query='"Acme Live"', site="https://www.acme.example")


def _check_batch_or_clear_error(fetch) -> Batch | SourceError:
    try:
        batch = fetch()
    except SourceError as exc:  # the one exception a collector may raise
        text = str(exc)
        assert "\n" not in text and len(text) < 600, text
        assert "Traceback" not in text and "x" * 200 not in text
        return exc
    assert isinstance(batch, Batch)
    for m in batch.mentions:
        assert isinstance(m, Mention) and isinstance(m.text, str) and m.created_at.tzinfo is not None
        assert len(m.text) <= 100_000, "a huge post must be cut, not stored whole"
    return batch


@pytest.mark.parametrize("case", list(X_PAYLOADS), ids=list(X_PAYLOADS))
def test_x_json_that_is_malformed_or_hostile_gives_a_typed_error_or_a_sane_batch(case):
    with FakeX(bearer_token="x-token-123456") as x:
        x.fail(200, X_PAYLOADS[case], path=SEARCH_PATH, times=3)
        x.fail(200, {"data": "nope"}, path=COUNTS_PATH, times=3)
        _check_batch_or_clear_error(lambda: XCollector("x-token-123456", api_url=x.url).fetch(BRAND, None))


REDDIT_CASES = [pytest.param(c, id=c) for c in REDDIT_PAYLOADS]


@pytest.mark.parametrize("case", REDDIT_CASES)
def test_reddit_json_that_is_malformed_or_hostile_gives_a_typed_error_or_a_sane_batch(case):
    with FakeReddit(client_secret="reddit-secret-123") as r:
        r.fail(200, REDDIT_PAYLOADS[case], path="/r/", times=3)
        c = RedditCollector("test-client", "reddit-secret-123", "surgewatch-test/0.1", api_url=r.url, auth_url=r.url)
        _check_batch_or_clear_error(lambda: c.fetch(BRAND, None))


@pytest.mark.parametrize("case", list(HN_PAYLOADS), ids=list(HN_PAYLOADS))
def test_hn_json_that_is_malformed_or_hostile_gives_a_typed_error_or_a_sane_batch(case):
    with FakeHackerNews() as hn:
        hn.fail(200, HN_PAYLOADS[case], path="/api/v1/", times=3)
        _check_batch_or_clear_error(lambda: HackerNewsCollector(api_url=hn.url + "/api/v1").fetch(BRAND, None))


# -- configuration files ----------------------------------------------------------------------------------
KEYS = ["brands", "sources", "channels", "store", "broker", "detector", "timezone", "traffic_controls",
        "intervall", "name", "query", "rss", "feeds", "interval", "bucket_seconds", "url", "slack", "token", "\u202e"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["${NOPE}", "redis://", "memory://", "-1", "1e309"]))
yaml_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
near_valid = st.fixed_dictionaries({
    "brands": st.one_of(st.just([{"name": "Acme", "query": "Acme"}]), yaml_values),
}, optional={k: yaml_values for k in ("sources", "channels", "store", "detector", "timezone", "intervall")})


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(yaml_values, near_valid))
def test_check_config_never_shows_a_traceback_for_any_yaml(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    result = CliRunner().invoke(cli_app, ["check-config", str(path)])
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert str(path) in result.output  # every error line names the file


@pytest.mark.parametrize("text,says", [
    ("brands: [{name: Acme, query: Acme}]\nsources: {rss: {feeds: [https://a.example/x], intervall: 5}}\n",
     "sources.rss.intervall: unknown key"),
    ("brands: [{name: Acme, query: Acme}]\ndetector: {bucket_seconds: often}\n", "detector.bucket_seconds"),
    ("brands: [{name: Acme, query: Acme}]\nbroker: {url: 'memory://'}\n", "broker.url"),
    ("brands: {name: Acme}\n", "brands"),
    ("brands: [{name: Acme, query: Acme\n", "YAML syntax error"),
    ("\xff\xfe garbage", "cannot read: UnicodeDecodeError"),
], ids=["unknown key", "wrong type", "memory broker", "mapping for a list", "broken yaml", "not text"])
def test_the_real_check_config_command_prints_one_clear_line_per_problem(tmp_path, text, says):
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode("latin-1"))
    proc = subprocess.run([sys.executable, "-m", "surgewatch.cli.main", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# -- injection: posts rendered inert --------------------------------------------------------------------
HOSTILE = ("Acme Live <!channel> <!here> <!everyone> <@U012345> <#C0123|general> <https://evil.example|click here> "
           "*bold* _it_ ~s~ `code` <script>alert(1)</script> &amp; @here \u202eexe.txt \x1b[31mred\x1b[0m")


@pytest.fixture
def hostile_notified(redis_url, capsys):
    """One incident whose top post is hostile, sent through the real Slack channel (to FakeSlack) and
    the real console channel; returns (everything Slack was sent, the console line)."""
    with FakeSlack(token="xoxb-inject-test-1") as slack:
        rt = runtime(redis_url, {"channels": {"console": {}, "slack": {
            "api_url": slack.base_url, "token": "xoxb-inject-test-1", "marketing_channel": "#m", "ops_channel": "#o"}}},
            feeds=["https://unused.example/feed"])
        at = NOW - 300
        inc = seed_incident(rt.store, "Acme", at)
        rt.store.ingest([Mention(source="rss", id="h1", brand="Acme", text=HOSTILE, url="https://evil.example/<!channel>",
                                 author="<@U999> \u202eevil", created_at=datetime.fromtimestamp(at, timezone.utc), likes=10**6)])
        for channel in ("slack", "console"):
            assert pipeline.notify(rt, inc["id"], 0, channel).status == "sent"
        sent = json.dumps([c.payload for c in slack.calls_to("chat.postMessage")], ensure_ascii=False)
    return sent, capsys.readouterr().out


def test_posts_that_try_to_inject_mentions_links_or_html_are_inert_in_slack_and_the_console(hostile_notified):
    sent, line = hostile_notified
    assert "Acme" in sent and "Acme Live" in line
    # (The post's own URL is linked on purpose: <https://evil.example/%3C!channel%3E|...>, escaped.)
    for raw in ("<!channel>", "<!here>", "<!everyone>", "<@U012345>", "<@U999>", "<#C0123", "<https://evil.example|",
                "<script>"):
        assert raw not in sent, f"{raw!r} reached Slack unescaped"
    assert "&lt;!channel&gt;" in sent  # shown, as text
    assert "\u202e" not in line and "\x1b[" not in line, "the console line must not carry control characters"
    assert len(line.strip().splitlines()) == 1


def test_posts_cannot_put_bidi_overrides_or_control_characters_into_slack(hostile_notified):
    sent, _ = hostile_notified
    assert "\u202e" not in sent and "\x1b" not in sent


# -- secrets never in logs --------------------------------------------------------------------------------
SECRETS = {"SLACK_BOT_TOKEN": "xoxb-SECRET-slack-4f1c9e", "PAGERDUTY_ROUTING_KEY": "R0UTING-SECRET-pd-8b2d77aa",
           "X_BEARER_TOKEN": "AAAA-SECRET-x-bearer-d41d8c"}


@pytest.mark.slow
@pytest.mark.celery
def test_a_full_pipeline_pass_with_failing_channels_never_logs_a_secret(tmp_path, redis_url):
    from tests.fakes.pagerduty_server import FakePagerDuty
    from tests.support import FileClock, Worker, sender_for, wait_until, write_config

    store_url, broker_url = redis_db_url(redis_url, 11), redis_db_url(redis_url, 10)
    for url in (store_url, broker_url):
        redis.Redis.from_url(url).flushdb()
    clock = FileClock(tmp_path / "clock", NOW)
    with FakeX(bearer_token=SECRETS["X_BEARER_TOKEN"]) as x, FakeSlack(token=SECRETS["SLACK_BOT_TOKEN"]) as slack, \
            FakePagerDuty(routing_keys=[SECRETS["PAGERDUTY_ROUTING_KEY"]]) as pd, FeedServer() as feed:
        x.add_tweet("Acme Live is great", author="fan")
        x.fail(401, {"title": "Unauthorized", "detail": "Unauthorized", "type": "about:blank", "status": 401},
               path=SEARCH_PATH)
        feed.route("/news.rss", items=good_items())
        config, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": '"Acme Live"'}],
            "sources": {"rss": {"interval": 60, "feeds": [feed.url("/news.rss")]}, "x": {"api_url": x.url}},
            "channels": {"console": {}, "slack": {"api_url": slack.base_url, "marketing_channel": "#m", "ops_channel": "#o"},
                         "pagerduty": {"events_url": pd.events_url, "min_severity": "warning"}},
            "store": {"url": store_url}, "broker": {"url": broker_url},
            "detector": {"bucket_seconds": 60, "evaluation_lag_seconds": 0},
        })
        rt = Runtime(settings)
        worker = Worker(config, {"SURGEWATCH_CLOCK": clock.env, **SECRETS}, tmp_path / "worker.log",
                        concurrency=1)
        try:
            sender = sender_for(settings)
            for source in ("rss", "x"):
                sender.send_task("surgewatch.collect", args=(source, "Acme"), queue="collect")
            wait_until(lambda: all(SourceHealth.load(rt.store, s, "Acme").polls for s in ("rss", "x")), 60,
                       "both collects", worker)
            inc = seed_incident(rt.store, "Acme", NOW - 120, severity="critical")
            slack.fail_next("chat.postMessage", "invalid_auth")  # the permanent-failure path logs an error
            pd.fail_next(500, times=2)  # the transient path retries with a logged warning
            sender.send_task("surgewatch.evaluate", args=("Acme",), queue="detect")
            # Slack refused for good (invalid_auth): failed, in its words; PagerDuty went through on a retry.
            wait_until(lambda: getattr(rt.store.get_delivery(delivery_key(inc["id"], 0, "slack")), "status", None) == "failed"
                       and getattr(rt.store.get_delivery(delivery_key(inc["id"], 0, "pagerduty")), "status", None) == "sent",
                       60, "the notifications (or their permanent failure)", worker)
        finally:
            worker.stop()
        log = worker.log()
    assert "failed permanently" in log or "invalid_auth" in log, "the error path did not run"
    assert len(log.splitlines()) > 10
    for name, value in SECRETS.items():
        assert value not in log, f"{name} appears in the worker log"
        assert value[:16] not in log, f"a prefix of {name} appears in the worker log"
