"""The Store contract: every behaviour here runs against every implementation (SqliteStore and
RedisStore, via the ``store`` / ``make_store`` fixtures in conftest.py).  A new store passes
this module before anything else uses it."""
from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from surgewatch.collectors.base import Mention
from surgewatch.store.base import Delivery, IngestResult, Store

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a multiple of every bucket size used here
UTC = timezone.utc


def mention(i: int | str, *, at: float = T0, source: str = "rss", brand: str = "Acme", **kw) -> Mention:
    return Mention(source=source, id=str(i), brand=brand, text=kw.pop("text", f"post {i}"),
                   created_at=datetime.fromtimestamp(at, UTC), **kw)


def total(counts: dict[str, dict[float, int]]) -> int:
    return sum(n for series in counts.values() for n in series.values())


def test_every_store_satisfies_the_protocol(store):
    assert isinstance(store, Store)
    assert store.bucket_seconds == 60


# -- ingest and counts -----------------------------------------------------------------------

# (seconds after T0, bucket start the mention must land in, relative to T0)
BUCKETS = [
    (0.0, 0),  # exactly on a bucket start belongs to that bucket
    (0.000001, 0),
    (59.999999, 0),  # a microsecond before the next start is still the old bucket
    (60.0, 60),
    (3599.5, 3540),
    (-0.5, -60),  # just before T0 falls in the previous bucket (floor, not truncation)
    (86400 * 400 + 30, 86400 * 400),  # a year ahead: a future timestamp is still bucketed
]


@pytest.mark.parametrize("offset, bucket", BUCKETS)
def test_ingest_counts_a_mention_into_the_bucket_its_time_falls_in(store, offset, bucket):
    assert store.ingest([mention(1, at=T0 + offset)]) == IngestResult(new=1, duplicates=0)
    assert store.counts("Acme", T0 - 86400, T0 + 86400 * 401) == {"rss": {T0 + bucket: 1}}


def test_bucket_size_is_configurable(make_store):
    store = make_store(bucket_seconds=300)
    store.ingest([mention(i, at=T0 + s) for i, s in enumerate([0, 299, 300, 899])])
    assert store.counts("Acme", T0, T0 + 3600) == {"rss": {T0: 2, T0 + 300: 1, T0 + 600: 1}}


def test_a_batch_adds_up_per_bucket(store):
    store.ingest([mention(i, at=T0 + i) for i in range(150)])  # 60 + 60 + 30
    assert store.counts("Acme", T0, T0 + 3600) == {"rss": {T0: 60, T0 + 60: 60, T0 + 120: 30}}


def test_an_empty_batch_is_a_no_op(store):
    assert store.ingest([]) == IngestResult(0, 0)
    assert store.counts("Acme", 0, 2e9) == {}


def test_a_duplicate_in_the_same_batch_is_counted_once(store):
    result = store.ingest([mention(1), mention(2), mention(1), mention(1)])
    assert result == IngestResult(new=2, duplicates=2)
    assert store.counts("Acme", T0, T0 + 60) == {"rss": {T0: 2}}
    assert len(store.recent("Acme")) == 2


def test_a_duplicate_in_a_later_batch_is_counted_once(store):
    store.ingest([mention(1), mention(2)])
    # a redelivered task, or a feed that repeats an item with a new timestamp
    assert store.ingest([mention(2, at=T0 + 120), mention(3)]) == IngestResult(new=1, duplicates=1)
    assert store.counts("Acme", T0, T0 + 3600) == {"rss": {T0: 3}}


def test_the_same_id_from_two_sources_is_two_mentions(store):
    assert store.ingest([mention(7, source="rss"), mention(7, source="reddit")]).new == 2
    assert store.counts("Acme", T0, T0 + 60) == {"reddit": {T0: 1}, "rss": {T0: 1}}


def test_a_sample_is_deduped_and_kept_but_not_counted(store):
    # X: the posts read are a sample, its counts endpoint is the census (set_volume)
    store.set_volume("Acme", "x", [(T0, 40)])
    assert store.ingest([mention(i, source="x", at=T0 + i) for i in range(3)], count=False) == IngestResult(3, 0)
    assert store.counts("Acme", T0, T0 + 60) == {"x": {T0: 40}}
    assert [m.id for m in store.recent("Acme")] == ["2", "1", "0"]
    # the same posts later, counted or not, are duplicates
    assert store.ingest([mention(1, source="x", at=T0 + 1)]) == IngestResult(0, 1)
    assert store.counts("Acme", T0, T0 + 60) == {"x": {T0: 40}}


def test_one_post_that_names_two_brands_counts_for_each(store):
    assert store.ingest([mention(7, brand="Acme"), mention(7, brand="Globex")]).new == 2
    assert store.ingest([mention(7, brand="Globex")]).duplicates == 1  # the Globex poll, again
    assert store.counts("Acme", T0, T0 + 60) == {"rss": {T0: 1}}
    assert store.counts("Globex", T0, T0 + 60) == {"rss": {T0: 1}}


def test_ids_with_any_characters_dedup_exactly(store):
    ids = ["tag:ex.com,2026:€/1", "日本語-1", "🎟️🔥", "a\r\nb", "with space", "", "x" * 2000, "\ud800lone"]
    assert store.ingest([mention(i) for i in ids]).new == len(ids)
    assert store.ingest([mention(i) for i in ids]) == IngestResult(new=0, duplicates=len(ids))
    assert store.counts("Acme", T0, T0 + 60) == {"rss": {T0: len(ids)}}


def test_a_duplicate_is_counted_again_once_the_dedup_ttl_has_passed(make_store):
    store = make_store(dedup_ttl=0.3)
    assert store.ingest([mention(1)]).new == 1
    assert store.ingest([mention(1)]).duplicates == 1
    time.sleep(0.6)  # the contract allows remembering an id for up to 1.5 x the TTL
    assert store.ingest([mention(1)]).new == 1
    assert store.counts("Acme", T0, T0 + 60) == {"rss": {T0: 2}}


def test_counts_include_the_window_start_and_exclude_its_end(store):
    store.ingest([mention(i, at=T0 + 60 * i) for i in range(5)])  # buckets T0 .. T0+240
    assert store.counts("Acme", T0 + 60, T0 + 180) == {"rss": {T0 + 60: 1, T0 + 120: 1}}
    assert store.counts("Acme", T0 + 59, T0 + 61) == {"rss": {T0 + 60: 1}}
    assert store.counts("Acme", T0 + 240, T0 + 240) == {}


def test_counts_span_several_days(store):
    store.ingest([mention(d, at=T0 + d * 86400 + 5) for d in range(4)])
    counts = store.counts("Acme", T0 + 86400, T0 + 3 * 86400 + 60)
    assert counts == {"rss": {T0 + 86400: 1, T0 + 2 * 86400: 1, T0 + 3 * 86400: 1}}


def test_counts_keep_brands_and_sources_apart(store):
    store.ingest([mention(1, source="rss"), mention(2, source="reddit"), mention(3, source="reddit"),
                  mention(4, brand="Other"), mention(5, brand="Acme Live: Tickets")])
    assert store.counts("Acme", T0, T0 + 60) == {"reddit": {T0: 2}, "rss": {T0: 1}}
    assert store.counts("Other", T0, T0 + 60) == {"rss": {T0: 1}}
    assert store.counts("Acme Live: Tickets", T0, T0 + 60) == {"rss": {T0: 1}}
    assert store.counts("Nobody", T0, T0 + 60) == {}


def test_set_volume_sets_counts_and_a_repoll_is_idempotent(store):
    points = [(T0, 5), (T0 + 60, 7)]
    store.set_volume("Acme", "x", points)
    store.set_volume("Acme", "x", points)
    assert store.counts("Acme", T0, T0 + 3600) == {"x": {T0: 5, T0 + 60: 7}}
    store.set_volume("Acme", "x", [(T0 + 60, 9), (T0 + 120, 0)])  # a later poll corrects a bucket
    assert store.counts("Acme", T0, T0 + 3600) == {"x": {T0: 5, T0 + 60: 9}}


def test_set_volume_folds_finer_points_onto_buckets(store):
    store.set_volume("Acme", "x", [(T0 + 1, 2), (T0 + 31, 3)])
    assert store.counts("Acme", T0, T0 + 60) == {"x": {T0: 5}}


# -- recent mentions -------------------------------------------------------------------------


def test_recent_is_newest_first_and_capped(make_store):
    store = make_store(recent_cap=5)
    store.ingest([mention(i, at=T0 + i) for i in (3, 1, 7)])
    store.ingest([mention(i, at=T0 + i) for i in (0, 9, 5, 2, 8)])  # arrive out of order
    assert [m.id for m in store.recent("Acme")] == ["9", "8", "7", "5", "3"]
    assert [m.id for m in store.recent("Acme", limit=2)] == ["9", "8"]
    assert store.ingest([mention(4, at=T0 - 100)]).new == 1  # too old for the list, still counted
    assert [m.id for m in store.recent("Acme")] == ["9", "8", "7", "5", "3"]
    assert total(store.counts("Acme", T0 - 3600, T0 + 3600)) == 9


def test_recent_is_per_brand(store):
    store.ingest([mention(1), mention(2, brand="Other")])
    assert [m.id for m in store.recent("Acme")] == ["1"]
    assert store.recent("Nobody") == []


def test_recent_returns_every_field_of_a_mention_unchanged(store):
    rich = Mention(
        source="x", id="1790000000000000001", brand="Acme",
        text='Acme Live 🎟️ "sold out" <b>&amp;</b> \\ \n tab\t 日本語 \u2028 \ud83d lone',
        created_at=datetime(2026, 3, 29, 1, 30, 15, 123457, tzinfo=timezone(timedelta(hours=2))),
        url="https://x.example/i/1790000000000000001?q=é", author="Zoë 🐱",
        likes=12, reposts=3, replies=4, score=-2, reach=1_500_000, lang="ja",
        site_links=("https://acme.example/tickets", "https://acme.example/ü"),
    )
    plain = mention(2, at=T0 + 0.5)  # defaults: reach None, no links, empty strings
    store.ingest([rich, plain])
    got = {m.id: m for m in store.recent("Acme")}
    assert got[rich.id] == rich
    assert got["2"] == plain
    assert isinstance(got[rich.id].site_links, tuple)
    assert got[rich.id].created_at.utcoffset() is not None


# -- cursors and state -----------------------------------------------------------------------


def test_cursors_round_trip_per_source_and_brand(store):
    assert store.get_cursor("rss", "Acme") is None
    store.set_cursor("rss", "Acme", {"etag": 'W/"abc"', "modified": None})
    store.set_cursor("rss", "Other", {"etag": "2"})
    store.set_cursor("x", "Acme", {"since_id": "1790000000000000001"})
    store.set_cursor("rss", "Acme", {"etag": 'W/"def"'})  # replaces, not merges
    assert store.get_cursor("rss", "Acme") == {"etag": 'W/"def"'}
    assert store.get_cursor("rss", "Other") == {"etag": "2"}
    assert store.get_cursor("x", "Acme") == {"since_id": "1790000000000000001"}


def test_state_round_trips_and_lists_by_literal_prefix(store):
    assert store.get_state("detector:Acme") is None
    store.set_state("detector:Acme", {"level": 1.5, "history": [1, 2, 3]})
    store.set_state("detector:Acme Live", {"level": 2})
    store.set_state("health:rss", {"ok": True})
    store.set_state("detector_x", {"wild": "card"})  # "_" and "%" are wildcards to LIKE
    store.set_state("det*", {"glob": True})  # "*" is a wildcard to Redis MATCH
    store.set_state("detector:Acme", {"level": 3.25, "note": "ü"})
    assert store.get_state("detector:Acme") == {"level": 3.25, "note": "ü"}
    assert store.list_state("detector:") == {"detector:Acme": {"level": 3.25, "note": "ü"},
                                             "detector:Acme Live": {"level": 2}}
    assert store.list_state("det*") == {"det*": {"glob": True}}
    assert store.list_state("nothing") == {}
    assert len(store.list_state("")) == 5


def test_states_read_and_write_in_batches_like_one_by_one(store):
    store.set_states({"detector:A": {"n": 1}, "detector:B": {"n": 2, "note": "ü"}})
    store.set_state("silence:A", {"until": T0})
    # in order, a missing name is None, a name asked twice is answered twice
    assert store.get_states(["detector:B", "nope", "detector:A", "silence:A", "detector:B"]) == [
        {"n": 2, "note": "ü"}, None, {"n": 1}, {"until": T0}, {"n": 2, "note": "ü"}]
    store.set_states({"detector:A": {"n": 3}})  # overwrites, leaves the others alone
    assert store.get_state("detector:A") == {"n": 3}
    assert store.get_state("detector:B") == {"n": 2, "note": "ü"}
    assert store.get_states([]) == []
    store.set_states({})  # harmless
    names = [f"detector:brand {i}" for i in range(1200)]  # more than one query's worth of names
    store.set_states({n: {"i": i} for i, n in enumerate(names)})
    assert [v["i"] for v in store.get_states(names)] == list(range(1200))


# -- heartbeats --------------------------------------------------------------------------------
def test_heartbeats_are_recorded_listed_by_literal_prefix_and_never_move_back(store):
    assert store.heartbeats() == {}
    store.heartbeat("beat", T0)
    store.heartbeat("worker:collect:w1@h", T0 + 1.25)
    store.heartbeat("worker:notify:w2@h", T0 + 2)
    store.heartbeat("worker*", T0)  # "*" is a wildcard to Redis MATCH
    store.heartbeat("beat", T0 + 10.5)
    store.heartbeat("beat", T0 + 5)  # a late writer with an older time does not move it back
    assert store.heartbeats() == {"beat": T0 + 10.5, "worker:collect:w1@h": T0 + 1.25,
                                  "worker:notify:w2@h": T0 + 2, "worker*": T0}
    assert store.heartbeats("worker:") == {"worker:collect:w1@h": T0 + 1.25, "worker:notify:w2@h": T0 + 2}
    assert store.heartbeats("worker*") == {"worker*": T0}
    assert store.heartbeats("nothing") == {}


def test_heartbeats_from_many_threads_keep_the_latest(store):
    times = [T0 + i for i in range(40)]

    def beat(ts: float) -> None:
        store.heartbeat("evaluate:acme", ts)

    threads = [threading.Thread(target=beat, args=(t,)) for t in reversed(times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.heartbeats("evaluate:") == {"evaluate:acme": max(times)}


def test_counts_for_many_brands_equal_counts_brand_by_brand(store):
    store.ingest([mention(i, at=T0 + 60 * (i % 5), brand=f"B{i % 3}", source=("rss", "x")[i % 2])
                  for i in range(60)])
    store.set_volume("B1", "reddit", [(T0 + 86400 - 60, 7), (T0 + 86400, 9)])  # the next UTC day
    windows = {"B0": (T0, T0 + 180), "B1": (T0 + 60, T0 + 86460), "B2": (T0 - 3600, T0 + 3600),
               "Nobody": (T0, T0 + 600), "B0 empty": (T0 + 600, T0 + 600)}
    many = store.counts_many(windows)
    assert set(many) == {"B0", "B1", "B2"}  # brands without counts are left out
    for brand in ("B0", "B1", "B2"):
        assert many[brand] == store.counts(brand, *windows[brand])
    assert many["B1"]["reddit"] == {T0 + 86400 - 60: 7, T0 + 86400: 9}
    # a long window (whole day hashes) and a short one (single fields) agree
    long_ = store.counts_many({"B2": (T0 - 7 * 86400, T0 + 86400)})["B2"]
    assert long_ == many["B2"] and total(long_) == 20
    assert store.counts_many({}) == {}


# -- incidents -------------------------------------------------------------------------------


def incident(id_: str, brand: str = "Acme", status: str = "open", opened_at: float = T0, **kw):
    return {"id": id_, "brand": brand, "status": status, "opened_at": opened_at, "severity": "warning", **kw}


def test_an_incident_round_trips_and_updates_in_place(store):
    store.save_incident(incident("i1", notes=["ü", 1]))
    assert store.get_incident("i1") == incident("i1", notes=["ü", 1])
    store.save_incident(incident("i1", severity="critical"))
    assert store.get_incident("i1")["severity"] == "critical"
    assert [i["id"] for i in store.list_incidents()] == ["i1"]
    assert store.get_incident("nope") is None


def test_open_incident_is_only_ever_an_open_one(store):
    assert store.open_incident("Acme") is None
    store.save_incident(incident("i1"))
    store.save_incident(incident("o1", brand="Other"))
    assert store.open_incident("Acme")["id"] == "i1"
    store.save_incident(incident("i1", status="resolved", resolved_at=T0 + 600))
    assert store.open_incident("Acme") is None
    assert store.open_incident("Other")["id"] == "o1"
    store.save_incident(incident("i2", opened_at=T0 + 3600))
    store.save_incident(incident("i1", status="resolved", note="late update of the old one"))
    assert store.open_incident("Acme")["id"] == "i2"


def test_open_incidents_of_many_brands_in_one_call(store):
    store.save_incident(incident("a1", brand="A"))
    store.save_incident(incident("b1", brand="B", status="resolved"))
    store.save_incident(incident("c1", brand="C"))
    found = store.open_incidents(["A", "B", "C", "Nobody", "A"])
    assert {b: i["id"] for b, i in found.items()} == {"A": "a1", "C": "c1"}
    assert found["A"] == store.open_incident("A")
    assert store.open_incidents([]) == {}


def test_incidents_list_newest_first_and_filter_by_brand_and_since(store):
    for n, (brand, at) in enumerate([("Acme", T0 + 100), ("Other", T0 + 200), ("Acme", T0 + 300),
                                     ("Acme", T0)]):
        store.save_incident(incident(f"i{n}", brand=brand, opened_at=at, status="resolved"))
    assert [i["id"] for i in store.list_incidents()] == ["i2", "i1", "i0", "i3"]
    assert [i["id"] for i in store.list_incidents("Acme")] == ["i2", "i0", "i3"]
    assert [i["id"] for i in store.list_incidents("Acme", since=T0 + 100)] == ["i2", "i0"]
    assert [i["id"] for i in store.list_incidents(since=T0 + 150)] == ["i2", "i1"]
    assert store.list_incidents("Nobody") == []


def test_an_incident_without_its_index_fields_is_refused(store):
    with pytest.raises(ValueError, match="opened_at"):
        store.save_incident({"id": "x", "brand": "Acme", "status": "open"})


def test_an_incident_is_replaced_only_at_the_version_the_writer_read(store):
    inc = {"id": "acme-1", "brand": "Acme", "status": "open", "opened_at": T0, "transitions": []}
    assert store.replace_incident(inc, 1) is False  # not stored yet: its version is 0
    assert store.get_incident("acme-1") is None
    assert store.replace_incident(inc, 0) is True
    assert store.get_incident("acme-1")["version"] == 1
    acked = {**store.get_incident("acme-1"), "acked_by": "sam"}
    stale = {**inc, "severity": "critical"}  # a writer that read version 0
    assert store.replace_incident(acked, 1) is True
    assert store.replace_incident(stale, 0) is False  # the ack is not overwritten
    assert store.get_incident("acme-1")["acked_by"] == "sam" and store.get_incident("acme-1")["version"] == 2
    assert store.open_incident("Acme")["version"] == 2
    resolved = {**store.get_incident("acme-1"), "status": "resolved"}
    assert store.replace_incident(resolved, 2) is True
    assert store.open_incident("Acme") is None  # the open pointer follows a swapped-in incident too


def test_two_processes_swapping_the_same_incident_lose_no_update(store):
    store.save_incident({"id": "acme-1", "brand": "Acme", "status": "open", "opened_at": T0, "marks": []})
    done_a, done_b = _run_in_two_processes(_mark_in_child, store, [f"a{i}" for i in range(25)],
                                           [f"b{i}" for i in range(25)])
    assert done_a == done_b == 25
    marks = store.get_incident("acme-1")["marks"]
    assert sorted(marks) == sorted([f"a{i}" for i in range(25)] + [f"b{i}" for i in range(25)])


def _mark_in_child(store, marks, barrier, results):
    from surgewatch.incidents.updates import update_incident

    barrier.wait(timeout=20)
    for m in marks:
        update_incident(store, "acme-1", lambda inc, m=m: {**inc, "marks": inc["marks"] + [m]})
    results.put(len(marks))


# -- claims ----------------------------------------------------------------------------------


def test_the_first_claim_wins_and_a_second_loses_while_the_lease_lives(store):
    assert store.claim("alert:1", lease_seconds=60, now=T0) is True
    assert store.claim("alert:1", lease_seconds=60, now=T0 + 59) is False
    assert store.claim("alert:2", lease_seconds=60, now=T0) is True  # keys are independent
    assert store.delivery("alert:1") == {"status": "claimed", "receipt": None, "claimed_at": T0,
                                         "lease_until": T0 + 60}


def test_an_expired_lease_is_taken_over(store):
    assert store.claim("alert:1", lease_seconds=60, now=T0)
    assert store.claim("alert:1", lease_seconds=60, now=T0 + 60) is True  # the holder died
    assert store.delivery("alert:1")["claimed_at"] == T0 + 60
    assert store.claim("alert:1", lease_seconds=60, now=T0 + 61) is False


def test_a_sent_notification_is_never_claimable_again(store):
    assert store.claim("alert:1", lease_seconds=1, now=T0)
    store.mark_sent("alert:1", {"ts": "1714564805.000100", "channel": "C1"})
    assert store.claim("alert:1", lease_seconds=1, now=T0 + 86400) is False
    store.release("alert:1")  # a late release must not reopen a sent notification
    assert store.claim("alert:1", lease_seconds=1, now=T0 + 86400) is False
    assert store.delivery("alert:1") == {"status": "sent", "claimed_at": T0, "lease_until": T0 + 1,
                                         "receipt": {"ts": "1714564805.000100", "channel": "C1"}}


def test_a_released_claim_can_be_claimed_again(store):
    assert store.claim("alert:1", lease_seconds=600, now=T0)
    store.release("alert:1")
    assert store.delivery("alert:1") is None
    assert store.claim("alert:1", lease_seconds=600, now=T0 + 1) is True


def test_an_unknown_delivery_is_none(store):
    assert store.delivery("never") is None
    store.release("never")  # harmless


def test_claims_in_a_batch_follow_the_rules_of_single_claims(store):
    assert store.claim("lock:held", lease_seconds=60, now=T0)
    assert store.claim("lock:old", lease_seconds=10, now=T0 - 60)  # its lease ran out
    assert store.claim("lock:sent", lease_seconds=10, now=T0)
    store.mark_sent("lock:sent", None)
    assert store.claim_many(["lock:new", "lock:held", "lock:old", "lock:sent"], 60, T0) == [
        True, False, True, False]
    assert store.claim_many(["lock:new"], 60, T0 + 1) == [False]
    store.release_many(["lock:new", "lock:old", "lock:sent", "never"])
    assert store.delivery("lock:new") is None and store.delivery("lock:old") is None
    assert store.delivery("lock:sent")["status"] == "sent"  # a release never reopens a sent one
    assert store.delivery("lock:held")["status"] == "claimed"
    assert store.claim_many([], 60, T0) == []
    store.release_many([])


# -- the delivery log ------------------------------------------------------------------------


def test_a_pending_delivery_is_listed_and_claimable_and_a_final_one_never_again(store):
    d = Delivery("acme-20260101T000000", 0, "slack", event="opened", brand="Acme", created_at=T0, updated_at=T0)
    store.add_pending([d])
    assert [x.key for x in store.list_deliveries()] == ["acme-20260101T000000:0:slack"]
    assert store.get_delivery(d.key).status == "pending"
    assert store.claim(d.key, lease_seconds=60, now=T0) is True  # pending: the outbox
    assert store.get_delivery(d.key).status == "claimed"
    assert store.get_delivery(d.key).lease_until == T0 + 60
    for final in ("failed", "sent", "superseded", "suppressed"):
        d.status, d.claimed_at, d.lease_until = final, None, None
        store.record_delivery(d)
        assert store.claim(d.key, lease_seconds=60, now=T0 + 86400) is False, final
        store.release(d.key)  # a late release never reopens a final record
        assert store.get_delivery(d.key).status == final


def test_re_listing_a_pending_delivery_never_resets_one_that_moved_on(store):
    d = Delivery("acme-20260101T000000", 1, "webhook:scale-web", created_at=T0)
    store.add_pending([d])
    store.record_delivery(Delivery("acme-20260101T000000", 1, "webhook:scale-web", status="failed", attempts=9,
                                   error="webhook scale-web: HTTP 400 nope", created_at=T0, updated_at=T0 + 5))
    store.add_pending([d])  # the outbox lists it again (a crashed dispatch)
    got = store.get_delivery(d.key)
    assert (got.status, got.attempts, got.error, got.channel) == ("failed", 9, "webhook scale-web: HTTP 400 nope",
                                                                  "webhook:scale-web")


def test_the_delivery_log_keeps_every_field_and_lists_by_incident_oldest_first(store):
    full = Delivery("acme-1", 2, "pagerduty", status="sent", event="escalated", brand="Acme", attempts=3,
                    next_attempt_at=None, receipt={"dedup_key": "acme-1"}, error="HTTP 429 throttle",
                    created_at=T0 + 10, updated_at=T0 + 30, sent_at=T0 + 30)
    store.record_delivery(full)
    store.record_delivery(Delivery("acme-1", 0, "slack", status="suppressed", reason="silence: deploy",
                                   created_at=T0, updated_at=T0))
    store.record_delivery(Delivery("other-1", 0, "console", status="sent", created_at=T0 + 5, updated_at=T0 + 5))
    store.claim("lock:evaluate:Acme", 60, T0)  # plain claims (locks, reminders) are not deliveries
    store.mark_sent("reminder:x", {"at": T0})
    assert [d.key for d in store.list_deliveries()] == ["acme-1:0:slack", "other-1:0:console", "acme-1:2:pagerduty"]
    assert [d.key for d in store.list_deliveries("acme-1")] == ["acme-1:0:slack", "acme-1:2:pagerduty"]
    assert store.get_delivery("acme-1:2:pagerduty") == full
    assert store.list_deliveries("nobody") == []
    assert store.get_delivery("lock:evaluate:Acme") is None and store.get_delivery("never") is None


# -- concurrency -----------------------------------------------------------------------------


def _ingest_in_child(store, batches, barrier, results):
    barrier.wait(timeout=20)
    results.put(sum(store.ingest(batch).new for batch in batches))


def _claim_in_child(store, keys, barrier, results):
    barrier.wait(timeout=20)
    results.put([k for k in keys if store.claim(k, lease_seconds=60, now=T0)])


def _run_in_two_processes(target, store, work_a, work_b) -> list:
    # fork, not spawn: the children inherit the store object built here, the way Celery's
    # prefork children inherit what the parent built before forking
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=target, args=(store, work, barrier, results)) for work in (work_a, work_b)]
    for child in children:
        child.start()
    out = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    return out


def test_two_processes_ingesting_overlapping_batches_count_each_mention_once(store):
    everything = [mention(i, at=T0 + i % 600, source=("rss", "reddit")[i % 2]) for i in range(1200)]
    store.ingest(everything[:10])  # the parent used its connection before forking
    a = [everything[i:i + 40] for i in range(0, 800, 40)]
    b = [everything[i:i + 40] for i in range(400, 1200, 40)][::-1]
    news = _run_in_two_processes(_ingest_in_child, store, a, b)
    assert sum(news) == 1200 - 10
    assert total(store.counts("Acme", T0, T0 + 3600)) == 1200


def test_two_processes_claiming_the_same_keys_each_key_goes_to_exactly_one(store):
    keys = [f"alert:{i}" for i in range(150)]
    won_a, won_b = _run_in_two_processes(_claim_in_child, store, keys, keys)
    assert set(won_a).isdisjoint(won_b)
    assert sorted(won_a + won_b) == sorted(keys)


def test_threads_sharing_one_store_count_each_mention_once(store):
    everything = [mention(i, at=T0 + i % 300) for i in range(600)]
    news: list[int] = []

    def work(offset: int) -> None:
        for i in range(offset, offset + 400, 50):
            news.append(store.ingest(everything[i % 600:i % 600 + 50]).new)

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(news) == 600
    assert total(store.counts("Acme", T0, T0 + 3600)) == 600


def _ingest_forever(store, batches, barrier, results):
    barrier.wait(timeout=20)
    while True:
        for batch in batches:
            store.ingest(batch)


def test_a_process_killed_mid_ingest_leaves_no_half_applied_batch(store):
    everything = [mention(i, at=T0 + i % 900) for i in range(20_000)]
    batches = [everything[i:i + 200] for i in range(0, len(everything), 200)]
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    child = ctx.Process(target=_ingest_forever, args=(store, batches, barrier, None))
    child.start()
    barrier.wait(timeout=20)
    deadline = time.monotonic() + 20
    while total(store.counts("Acme", T0, T0 + 3600)) < 2_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()  # SIGKILL, most likely in the middle of a batch
    child.join(timeout=10)
    before = total(store.counts("Acme", T0, T0 + 3600))
    assert before > 0
    # every mention the dead process marked as seen was also counted, and nothing else was
    redone = sum(store.ingest(batch).new for batch in batches)
    assert before + redone == 20_000
    assert total(store.counts("Acme", T0, T0 + 3600)) == 20_000


def test_ping_answers_when_the_store_is_usable(store):
    store.ping()  # raises StoreError otherwise (see test_store_redis / test_store_sqlite)
    assert store.ingest([mention(1)]).new == 1
