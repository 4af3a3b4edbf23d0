"""Safe incident updates: an acknowledgement (or any other writer's change) that lands while an
evaluate tick is computing the same incident is kept, and the escalation policy sees it."""
from __future__ import annotations

import pytest

from surgewatch import pipeline
from surgewatch.actions.operator import acknowledge, mark_false_alarm
from surgewatch.config import parse_settings
from surgewatch.ops.health import SourceHealth
from surgewatch.pipeline import Runtime

BUCKET = 60
T0 = 1_795_770_000.0  # a multiple of 60
WARNING_AT = T0 + 3600


def settings(tmp_path):
    return parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}],
        "sources": {"rss": {"interval": 60, "feeds": ["http://127.0.0.1:9/f.rss"]}},
        "channels": {"console": {}, "pagerduty": {"routing_key": "R0UT1NGKEY0123456789012345678901",
                                                  "events_url": "http://127.0.0.1:9/v2/enqueue",
                                                  "min_severity": "critical",
                                                  "page_unacked_warning_after_minutes": 10}},
        "store": {"url": f"sqlite:///{tmp_path / 'unused.db'}"},
        "detector": {"bucket_seconds": BUCKET, "warm_up_minutes": 5, "evaluation_lag_seconds": 0,
                     "resolve_after_quiet_buckets": 1000},
    }, "test")


def open_warning(store):
    """A warning nobody has acknowledged, opened an hour into the counts (the tick goes on from there)."""
    verdict = {"at": WARNING_AT, "observed": 40.0, "expected": 2.0, "score": 0.9, "severity": "warning",
               "warming_up": False, "forecast": None, "sources_spiking": 1}
    store.save_incident({
        "id": "acme-1", "brand": "Acme", "status": "open", "severity": "warning", "opened_at": WARNING_AT,
        "resolved_at": None, "last_at": WARNING_AT, "peak_observed": 40.0, "peak_score": 0.9, "quiet_buckets": 0,
        "acked_by": None, "acked_at": None,
        "transitions": [{"no": 0, "at": WARNING_AT, "event": "opened", "from": "quiet", "to": "warning",
                         "verdict": verdict, "dispatched": True}]})


def counted(store, until):
    store.set_volume("Acme", "rss", [(t, 3) for t in range(int(T0), int(until), BUCKET)])
    SourceHealth("rss", "Acme", status="ok", last_success=until).save(store)


@pytest.mark.parametrize("writer", ["ack", "false alarm"])
def test_an_ack_landing_in_the_middle_of_an_evaluate_tick_is_kept_and_no_page_follows(make_store, tmp_path, writer):
    store = make_store()
    rt = Runtime(settings(tmp_path), store)
    now = WARNING_AT + BUCKET + 11 * 60  # past the 10 minutes the warning may go unacknowledged
    counted(store, now)
    open_warning(store)
    read_counts = store.counts_many

    def counts_then_someone_clicks(windows):
        # The tick has read the open incident and is about to score: the click lands now.
        if writer == "ack":
            acknowledge(rt, "acme-1", "sam", now=now - 30)
        else:
            mark_false_alarm(rt, "acme-1", "sam", now=now - 30, note="a bot")
        return read_counts(windows)

    store.counts_many = counts_then_someone_clicks
    outcome = pipeline.evaluate(rt, "Acme", now=now)
    store.counts_many = read_counts
    assert outcome.verdicts, "the tick scored nothing: the test would prove nothing"
    stored = store.get_incident("acme-1")
    assert stored["last_at"] > WARNING_AT  # the tick's own work is saved ...
    if writer == "ack":
        assert (stored["acked_by"], stored["acked_at"]) == ("sam", now - 30)  # ... and so is the ack
        assert [t["event"] for t in stored["transitions"]] == ["opened"]  # no page
        assert not [d for d in outcome.dispatch if d[2] == "pagerduty"]
        # nor on any later tick
        counted(store, now + 600)
        later = pipeline.evaluate(rt, "Acme", now=now + 600)
        assert not [d for d in later.dispatch if d[2] == "pagerduty"]
        assert [t["event"] for t in store.get_incident("acme-1")["transitions"]] == ["opened"]
    else:
        assert (stored["feedback"], stored["feedback_by"]) == ("false_alarm", "sam")


def test_a_dispatch_mark_and_a_tick_both_survive(make_store, tmp_path):
    store = make_store()
    rt = Runtime(settings(tmp_path), store)
    now = WARNING_AT + 5 * BUCKET
    counted(store, now)
    open_warning(store)
    inc = store.get_incident("acme-1")
    inc["transitions"][0]["dispatched"] = False
    store.save_incident(inc)
    read_counts = store.counts_many

    def counts_then_a_mark(windows):
        pipeline.mark_dispatched(rt, [("acme-1", 0, "console")])
        return read_counts(windows)

    store.counts_many = counts_then_a_mark
    pipeline.evaluate(rt, "Acme", now=now)
    store.counts_many = read_counts
    stored = store.get_incident("acme-1")
    assert stored["transitions"][0]["dispatched"] is True and stored["last_at"] > WARNING_AT


def test_without_an_ack_the_unacknowledged_warning_pages(make_store, tmp_path):
    """The control: the same tick with nobody clicking pages, so the test above can tell."""
    store = make_store()
    rt = Runtime(settings(tmp_path), store)
    now = WARNING_AT + BUCKET + 11 * 60
    counted(store, now)
    open_warning(store)
    outcome = pipeline.evaluate(rt, "Acme", now=now)
    assert [t["event"] for t in store.get_incident("acme-1")["transitions"]] == ["opened", "paged"]
    assert ("acme-1", 1, "pagerduty") in outcome.dispatch
