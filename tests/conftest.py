"""Fixtures shared by the whole suite.

- ``redis_url``: a real Redis for the session (see the fixture).
- ``store`` / ``make_store``: every Store implementation, one test run per kind.

Add new shared fixtures here in their own section, with a line on what they give.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

# -- Redis ------------------------------------------------------------------------------------

REDIS_TEST_DB = 15  # tests use unique key prefixes in it; no developer data belongs here


def _redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis URL (database 15; tests keep to key prefixes of their own).

    Uses the server on 127.0.0.1:6379 if it answers PING, else starts a throwaway
    ``redis-server`` on a free port (no persistence) and stops it at the end.  With neither, the
    tests that need Redis are skipped -- except in CI (``CI=true``), where that is a failure."""
    url = f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"
    server = None
    if not _redis_answers(url):
        binary = shutil.which("redis-server")
        if binary is None:
            reason = "no Redis answers on 127.0.0.1:6379 and redis-server is not installed"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        port = _free_port()
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/{REDIS_TEST_DB}"
        deadline = time.monotonic() + 10
        while not _redis_answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"started {binary} on port {port} but it never answered PING")
            time.sleep(0.05)
    # No FLUSHDB here: every test works under a key prefix of its own (or a database it empties
    # itself), so two test sessions on one machine cannot wipe each other's data.
    try:
        yield url
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


# -- stores -----------------------------------------------------------------------------------

STORE_KINDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=STORE_KINDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_store(**kw)`` builds a store of this run's kind in a namespace of its own (a fresh
    SQLite file, or a unique Redis key prefix).  Every store made in one test shares that
    namespace, so a second call is a second handle on the same data."""
    kind = request.param
    made: list[Any] = []
    if kind == "sqlite":
        from surgewatch.store.sqlite import SqliteStore

        path = str(tmp_path / "store.db")

        def build(**kw: Any) -> Any:
            made.append(SqliteStore(path, **kw))
            return made[-1]
    else:
        from surgewatch.store.redis import RedisStore

        url = request.getfixturevalue("redis_url")  # only Redis runs skip when there is no Redis
        prefix = f"swtest:{uuid.uuid4().hex[:12]}:"

        def build(**kw: Any) -> Any:
            made.append(RedisStore(url, prefix=prefix, **kw))
            return made[-1]

    yield build
    for store in made:
        store.close()
    if kind == "redis":
        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)


@pytest.fixture
def store(make_store: Callable[..., Any]) -> Any:
    """A fresh store with default settings, once per Store implementation."""
    return make_store()


# -- logging ----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs a CLI command in-process sets logging up as the command does (root level,
    the redacting handler, quieter library loggers); put it back so the next test's caplog sees
    what it expects."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lg in logging.root.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))

