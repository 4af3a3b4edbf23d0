"""SqliteStore beyond the shared contract: a file that outlives the process, lazy dedup expiry,
and clear errors when another process holds the lock."""
from __future__ import annotations

import sqlite3
import time

import pytest

from surgewatch.store.errors import StoreError
from surgewatch.store.sqlite import SqliteStore

from .test_store_contract import T0, mention


def test_everything_survives_reopening_the_file(tmp_path):
    path = str(tmp_path / "sub" / "dir" / "sw.db")  # missing directories are created
    first = SqliteStore(path)
    first.ingest([mention(1)])
    first.set_cursor("rss", "Acme", {"etag": "e1"})
    first.close()
    again = SqliteStore(path)
    assert again.counts("Acme", T0, T0 + 60) == {"rss": {T0: 1}}
    assert again.ingest([mention(1)]).duplicates == 1
    assert again.get_cursor("rss", "Acme") == {"etag": "e1"}
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_can_be_used_again_after_close(tmp_path):
    store = SqliteStore(str(tmp_path / "sw.db"))
    store.close()
    assert store.ingest([mention(1)]).new == 1


def test_expired_dedup_entries_are_deleted_not_just_ignored(tmp_path):
    path = str(tmp_path / "sw.db")
    store = SqliteStore(path, dedup_ttl=0.2)
    store.ingest([mention(i) for i in range(50)])
    time.sleep(0.3)
    store.ingest([mention("new")])
    assert sqlite3.connect(path).execute("SELECT count(*) FROM seen_mentions").fetchone()[0] == 1


def test_an_in_memory_database_is_refused():
    with pytest.raises(ValueError, match="file path"):
        SqliteStore(":memory:")


def test_a_writer_that_cannot_get_the_lock_gets_a_clear_transient_error(tmp_path):
    path = str(tmp_path / "sw.db")
    store = SqliteStore(path, busy_timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            store.ingest([mention(1)])
        assert time.monotonic() - started >= 0.15  # it waited for the lock before giving up
        assert path in str(caught.value) and "locked" in str(caught.value)
        assert caught.value.permanent is False
    finally:
        other.execute("ROLLBACK")
    assert store.ingest([mention(1)]).new == 1  # nothing half-written by the failed batch
    assert store.counts("Acme", T0, T0 + 60) == {"rss": {T0: 1}}


def test_a_file_that_is_not_a_database_is_a_permanent_error(tmp_path):
    path = tmp_path / "sw.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as caught:
        SqliteStore(str(path))
    assert caught.value.permanent is True
    assert str(path) in str(caught.value)
