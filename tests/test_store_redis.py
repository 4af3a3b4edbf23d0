"""RedisStore beyond the shared contract: one round trip per batch, expiry of every key it
writes, clear errors without secrets, and surviving a Redis restart."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest
import redis

from surgewatch.store.errors import StoreError
from surgewatch.store.redis import RedisStore

from .conftest import _free_port, _redis_answers
from .test_store_contract import T0, mention, total

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> str:
    return f"swtest:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_store(redis_url, prefix):
    store = RedisStore(redis_url, prefix=prefix)
    yield store
    store.close()
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


def test_a_batch_is_one_round_trip(redis_store, monkeypatch):
    redis_store.ingest([mention("warm-up")])  # script loaded, connection open
    sent = []
    real = redis.connection.AbstractConnection.send_packed_command

    def spy(self, command, check_health=True):
        sent.append(command)
        return real(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", spy)
    result = redis_store.ingest([mention(i, at=T0 + i, source=("rss", "x")[i % 2], brand=("A", "B")[i % 3 == 0])
                                 for i in range(400)])
    assert result.new == 400
    assert len(sent) == 1


def test_a_batch_larger_than_lua_can_unpack_at_once_is_ingested(redis_store):
    batch = [mention(i, at=T0 + i % 60) for i in range(5000)]
    assert redis_store.ingest(batch).new == 5000
    assert redis_store.ingest(batch).duplicates == 5000
    assert redis_store.counts("Acme", T0, T0 + 60) == {"rss": {T0: 5000}}


def test_every_key_it_writes_for_mentions_expires(redis_url, prefix):
    store = RedisStore(redis_url, prefix=prefix, dedup_ttl=3600, retention_seconds=86400)
    store.ingest([mention(1), mention(2, source="x")])
    store.set_volume("Acme", "x_counts", [(T0, 3)])
    store.claim("k", lease_seconds=10, now=T0)
    store.mark_sent("k", None)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    assert len(keys) >= 6
    for key in keys:
        ttl = client.pttl(key)
        limit = 1.5 * 3600_000 if key.startswith(f"{prefix}d:".encode()) else 86400_000
        assert 0 < ttl <= limit, key
    store.close()


def test_a_flushed_script_cache_is_reloaded_transparently(redis_store, redis_url):
    redis_store.ingest([mention(1)])
    redis.Redis.from_url(redis_url).script_flush()  # what a restarted server looks like
    assert redis_store.ingest([mention(2)]).new == 1
    assert redis_store.claim("k", lease_seconds=1, now=T0) is True


def test_an_unreachable_server_gives_a_clear_error_without_the_password():
    store = RedisStore(f"redis://:hunter2-secret@127.0.0.1:{_free_port()}/0")
    with pytest.raises(StoreError) as caught:
        store.ingest([mention(1)])
    message = str(caught.value)
    assert "127.0.0.1" in message and "unreachable" in message
    assert "hunter2" not in message and "hunter2" not in repr(store)
    assert caught.value.permanent is False


def test_wrong_credentials_are_a_permanent_error_without_the_password(redis_url):
    url = redis_url.replace("redis://", "redis://nobody:hunter2-secret@")
    store = RedisStore(url)
    with pytest.raises(StoreError) as caught:
        store.get_state("x")
    assert caught.value.permanent is True
    assert "hunter2" not in str(caught.value)
    assert "nobody:***@" in str(caught.value)


@pytest.mark.skipif(shutil.which("redis-server") is None and os.environ.get("CI") != "true",
                    reason="needs the redis-server binary")
def test_it_carries_on_after_redis_restarts(tmp_path):
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start() -> subprocess.Popen:
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp_path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _redis_answers(url):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return server

    server = start()
    try:
        store = RedisStore(url)
        assert store.ingest([mention(1)]).new == 1
        server.terminate()
        server.wait(timeout=10)
        with pytest.raises(StoreError, match="unreachable"):
            store.ingest([mention(2)])
        server = start()  # empty: no persistence in this test, a real deployment keeps AOF
        assert store.ingest([mention(2), mention(3)]).new == 2  # reconnects, reloads its scripts
        assert total(store.counts("Acme", T0, T0 + 60)) == 2
        store.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
