"""open_store(url): the store URL in the configuration picks the implementation."""
from __future__ import annotations

import os

import pytest

from surgewatch.store import open_store
from surgewatch.store.redis import RedisStore
from surgewatch.store.sqlite import SqliteStore


def test_three_slashes_is_a_path_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/sw.db", bucket_seconds=300)
    assert isinstance(store, SqliteStore)
    assert store.path == os.path.join(str(tmp_path), "data", "sw.db")
    assert store.bucket_seconds == 300
    store.close()


def test_four_slashes_is_an_absolute_path(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/sw.db", recent_cap=7)
    assert store.path == f"{tmp_path}/sw.db"
    assert store.recent_cap == 7
    store.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/3", "rediss://:pw@cache.internal:6380/0"])
def test_redis_urls_make_a_redis_store_without_connecting_yet(url):
    store = open_store(url, prefix="x:")
    assert isinstance(store, RedisStore)
    assert store.prefix == "x:"
    assert "pw" not in repr(store)


@pytest.mark.parametrize("url, says", [
    ("postgres://user:secret@db/sw", "unsupported store URL"),
    ("surgewatch.db", "unsupported store URL"),
    ("", "unsupported store URL"),
    ("sqlite://", "names no database file"),
    ("sqlite:///:memory:", "names no database file"),
])
def test_anything_else_is_a_clear_value_error(url, says):
    with pytest.raises(ValueError, match=says) as caught:
        open_store(url)
    assert "secret" not in str(caught.value)
