"""The whole pipeline on real components: a real Redis (broker and store), a real Celery worker
process, the real RSS collector against a local feed server, and the real slack-sdk against a
local fake Slack Web API.  The test moves a file clock step by step and asserts what Slack got."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest
import redis

from tests.fakes.slack_server import FakeSlack
from surgewatch.demo.feedserver import FeedServer
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime
from tests.support import FileClock, Worker, redis_db_url, sender_for, wait_until, write_config

pytestmark = [pytest.mark.redis, pytest.mark.celery, pytest.mark.slow]

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc).timestamp()
STEP = 300  # the test polls and evaluates every five simulated minutes
SURGE_AT = T0 + 45 * 60
QUIET_AGAIN_AT = T0 + 75 * 60
TOKEN = "xoxb-integration-test-token-42"
HOSTILE = "Acme Live <!channel> free tickets for <@U012345> & friends <https://evil.example|click>"


def script() -> list[dict]:
    """Every item the feed will publish: a quiet 2/min, a 40/min surge, quiet again, plus noise
    that must not count ("Acme jobs" is excluded, "Acmeville" is not a word match)."""
    items = []
    n = 0
    for minute in range(-30, 120):
        start = T0 + minute * 60
        surge = SURGE_AT <= start < QUIET_AGAIN_AT
        for k in range(40 if surge else 2):
            n += 1
            title = f"{HOSTILE} {n}" if surge else f"Acme Live update {n}"
            items.append({"id": f"i{n}", "title": title, "summary": f"post {n} https://www.acme.example/tickets",
                          "link": f"https://news.example/p/{n}",
                          "published": datetime.fromtimestamp(start + (k * 60) / (40 if surge else 2) + 1, timezone.utc),
                          "match": True})
        n += 1
        items.append({"id": f"i{n}", "title": "Acme jobs fair; Acmeville council", "summary": "",
                      "link": f"https://news.example/p/{n}",
                      "published": datetime.fromtimestamp(start + 30, timezone.utc), "match": False})
    return items


@pytest.fixture
def world(tmp_path, redis_url):
    store_url, broker_url = redis_db_url(redis_url, 13), redis_db_url(redis_url, 12)
    for url in (store_url, broker_url):
        redis.Redis.from_url(url).flushdb()
    clock = FileClock(tmp_path / "clock", T0)
    items = script()

    def items_at(path):
        if path != "/news.rss":
            return None
        now = clock.now()
        return [i for i in reversed(items) if now - 20 * 60 < i["published"].timestamp() <= now]

    with FeedServer(items_at=items_at) as feed, FakeSlack(token=TOKEN) as slack:
        config_path, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": '"Acme Live" OR acmelive -jobs', "site": "https://www.acme.example",
                        "runbook_url": "https://wiki.acme.example/runbook"}],
            "sources": {"rss": {"interval": STEP, "feeds": [feed.url("/news.rss")]}},
            "channels": {"console": {}, "slack": {"api_url": slack.base_url, "marketing_channel": "#marketing",
                                                  "ops_channel": "#ops"}},
            "store": {"url": store_url},
            "broker": {"url": broker_url},
            "detector": {"bucket_seconds": 60, "warm_up_minutes": 30, "resolve_after_quiet_buckets": 5,
                         "evaluation_lag_seconds": 0},
        })
        worker = Worker(config_path, {"SURGEWATCH_CLOCK": clock.env, "SLACK_BOT_TOKEN": TOKEN},
                        tmp_path / "worker.log")
        try:
            yield {"clock": clock, "settings": settings, "slack": slack, "worker": worker, "items": items,
                   "sender": sender_for(settings), "rt": Runtime(settings)}
        finally:
            worker.stop()


def step(world, k: int) -> None:
    """Move the clock to step k, then run one collect and one evaluate through the worker."""
    clock, rt, sender, worker = world["clock"], world["rt"], world["sender"], world["worker"]
    now = T0 + k * STEP
    clock.set(now)
    sender.send_task("surgewatch.collect", args=("rss", "Acme"), queue="collect")
    wait_until(lambda: SourceHealth.load(rt.store, "rss", "Acme").polls >= k + 1, 60 if k == 0 else 20,
               f"collect at step {k}", worker)
    sender.send_task("surgewatch.evaluate", args=("Acme",), queue="detect")
    done_at = math.floor(now / 60) * 60
    wait_until(lambda: (rt.store.get_state("detector:Acme") or {}).get("next_at") == done_at, 20,
               f"evaluate at step {k}", worker)


def test_a_surge_goes_from_the_feed_through_celery_and_redis_to_slack(world):
    slack, rt, worker = world["slack"], world["rt"], world["worker"]
    k = 0
    while T0 + k * STEP <= SURGE_AT + 15 * 60:
        step(world, k)
        if T0 + k * STEP <= SURGE_AT:
            assert rt.store.list_incidents("Acme") == [], "an incident opened before the surge"
        k += 1
    # The surge opened one incident, and each audience got one top-level message about it.
    incidents = rt.store.list_incidents("Acme")
    assert len(incidents) == 1 and incidents[0]["status"] == "open"
    assert SURGE_AT <= incidents[0]["opened_at"] <= SURGE_AT + 10 * 60
    wait_until(lambda: slack.messages("#ops", include_replies=False) and slack.messages("#marketing", include_replies=False),
               20, "the Slack messages", worker)
    ops = slack.messages("#ops", include_replies=False)
    marketing = slack.messages("#marketing", include_replies=False)
    assert len(ops) == 1 and len(marketing) == 1
    assert "Acme" in ops[0]["text"] and "Acme" in marketing[0]["text"]
    # Outside text is inert: no workspace-wide ping, no user mention, no disguised link.
    everything = str(slack.calls_to("chat.postMessage")) + str(slack.calls_to("chat.update"))
    assert "<!channel>" not in everything and "<@U012345>" not in everything and "<https://evil" not in everything
    assert "&lt;!channel&gt;" in str(marketing[0])  # the post is shown, escaped

    # Quiet again: the incident resolves, the first message is updated in place and a reply threads under it.
    while T0 + k * STEP <= QUIET_AGAIN_AT + 30 * 60 and rt.store.open_incident("Acme"):
        step(world, k)
        k += 1
    assert rt.store.open_incident("Acme") is None, "the incident never resolved"
    wait_until(lambda: slack.replies("#ops", ops[0]["ts"]), 20, "the resolve reply in the ops thread", worker)
    assert any(c.payload.get("ts") == ops[0]["ts"] for c in slack.calls_to("chat.update"))
    assert len(slack.messages("#ops", include_replies=False)) == 1, "the resolve must not start a new message"

    # Nothing lost, nothing counted twice: the store holds exactly the matching posts published
    # between the first poll's window and the last step (computed here independently of the collector).
    last = T0 + (k - 1) * STEP
    expected = sum(1 for i in world["items"] if i["match"] and T0 - 20 * 60 < i["published"].timestamp() <= last)
    counted = sum(sum(s.values()) for s in rt.store.counts("Acme", T0 - 3600, last + 3600).values())
    assert counted == expected
    assert "Traceback" not in worker.log()
