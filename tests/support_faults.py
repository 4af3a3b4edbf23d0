"""Helpers for the fault suite (tests/test_faults*.py) and the bad-input corpus.

- :class:`RedisServer`: a throwaway ``redis-server`` on a free port that a test may stop and start
  again on the *same* port (a Redis restart, nothing persisted).
- :class:`Beat`: ``surgewatch beat`` in a subprocess, killable like :class:`tests.support.Worker`.
- :class:`HungServer`: a TCP socket that accepts connections and never answers (a hung peer).
- :class:`RawServer`: answers each connection with a script of raw bytes (truncations, drips, endless bodies).
- :func:`age_unacked`: make the broker's unacknowledged messages look ``seconds`` older, the way
  they would after the visibility timeout has passed (kombu's Redis transport redelivers a message
  whose worker died only after ``visibility_timeout``; tests cannot wait 600 s).
- :func:`expire_claims`: the same for notification claims (their lease is wall-clock time).
- :func:`seed_incident`: an open incident in the store, as the evaluate step would have saved it.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import redis

from surgewatch.detector.verdict import Severity, Verdict
from surgewatch.incidents.lifecycle import incident_id
from tests.support import SurgewatchProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` with no persistence on a fixed free port; :meth:`restart` keeps the port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            import pytest

            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.3) as c:
                    if c.ping():
                        return self
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a crash, not a clean shutdown
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Beat(SurgewatchProcess):
    """``surgewatch beat`` in a subprocess (its own process group), logging to a file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path, schedule_file: Path):
        super().__init__(["beat", "--config", str(config), "--loglevel", "INFO", "--schedule-file", str(schedule_file)],
                         env, log)


class HungServer:
    """Accepts TCP connections and never sends a byte (a peer whose process is stuck, a black-holed
    load balancer).  ``connections`` counts accepted sockets."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="hung-server")

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._held.append(conn)  # keep it open, say nothing

    def __enter__(self) -> "HungServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for c in self._held:
            c.close()
        self.sock.close()


class RawServer:
    """Answers every connection with ``script(conn)``: for responses no HTTP library would send."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()

    def url(self, path: str = "/feed.rss") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            self.script(conn, self._stop)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self) -> "RawServer":
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()


def age_unacked(broker_url: str, seconds: float) -> int:
    """Shift every unacknowledged message's delivery time ``seconds`` into the past (kombu keeps
    them in the ``unacked_index`` sorted set, scored by delivery time), as if that much time had
    passed since the worker holding them died.  Returns how many were aged."""
    with redis.Redis.from_url(broker_url) as r:
        entries = r.zrange("unacked_index", 0, -1, withscores=True)
        for tag, score in entries:
            r.zadd("unacked_index", {tag: score - seconds})
        return len(entries)


def unacked_count(broker_url: str) -> int:
    with redis.Redis.from_url(broker_url) as r:
        return int(r.hlen("unacked"))


def expire_claims(store: Any, seconds: float) -> int:
    """Move every notification claim's lease ``seconds`` into the past (RedisStore keeps each
    delivery in a hash ``dl:<key>`` with a wall-clock ``lease_until``)."""
    client = store._redis  # the store's own connection and key prefix: no second copy of the layout
    n = 0
    for key in client.scan_iter(match=f"{store.prefix}dl:*"):
        if client.hget(key, "status") == b"claimed":
            until = float(client.hget(key, "lease_until"))
            client.hset(key, "lease_until", repr(until - seconds))
            n += 1
    return n


def seed_incident(store: Any, brand: str, at: float, *, severity: str = "warning", observed: float = 120.0,
                  expected: float = 4.0) -> dict[str, Any]:
    """Save an open incident with one undispatched "opened" transition, exactly as
    :func:`surgewatch.incidents.lifecycle.advance` builds it, and return it."""
    verdict = Verdict(at=at, observed=observed, expected=expected, score=0.999, severity=Severity(severity))
    inc = {
        "id": incident_id(brand, at), "brand": brand, "status": "open", "severity": severity, "opened_at": at,
        "resolved_at": None, "last_at": at, "peak_observed": observed, "peak_score": 0.999, "quiet_buckets": 0,
        "acked_by": None, "acked_at": None,
        "transitions": [{"no": 0, "at": at, "event": "opened", "from": "quiet", "to": severity,
                         "verdict": verdict.to_dict(), "dispatched": False}],
    }
    store.save_incident(inc)
    return inc


def wait_for_text(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False
