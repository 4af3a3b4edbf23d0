"""Watching the watcher: heartbeats, /healthz staleness with a real `surgewatch run`, the dead-man's
switch, and an ops server that idle or dripping clients cannot block."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from surgewatch.config import parse_settings
from surgewatch.demo.feedserver import FeedServer
from surgewatch.ops.health import HEARTBEAT_PING, ping_heartbeat_url
from surgewatch.ops.server import REQUEST_DEADLINE, make_server
from surgewatch.store.sqlite import SqliteStore
from tests.support import SurgewatchProcess, write_config


def get(port: int, path: str = "/healthz", timeout: float = 30) -> tuple[int, dict | str, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            code, text = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        code, text = exc.code, exc.read().decode()
    elapsed = time.monotonic() - started
    return code, (json.loads(text) if path == "/healthz" else text), elapsed


@pytest.fixture
def ops(tmp_path):
    settings = parse_settings({"brands": [{"name": "Acme", "query": "acme"}],
                               "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"},
                               "broker": {"url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"}}, env={})
    srv = make_server(settings, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


# -- an ops server that cannot be blocked -------------------------------------------------------------
def test_five_idle_connections_and_a_dripping_client_do_not_delay_healthz(ops):
    idle = [socket.create_connection(("127.0.0.1", ops.port)) for _ in range(5)]
    dripper = socket.create_connection(("127.0.0.1", ops.port))
    stop = threading.Event()

    def drip() -> None:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        for byte in request:  # one byte every 2 s: never a complete request line within the deadline
            if stop.wait(2.0):
                return
            try:
                dripper.send(bytes([byte]))
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    try:
        time.sleep(0.3)  # every connection accepted and waiting
        latencies = []
        for _ in range(5):
            code, body, elapsed = get(ops.port)
            assert code == 503 and body["pipeline"]["stale"][0].startswith("nothing has run yet")
            latencies.append(elapsed)
        # it used to take 9.8 s with one idle connection and 49.8 s with five
        assert max(latencies) < 2.0, latencies
        assert get(ops.port, "/livez")[0] == 200
    finally:
        stop.set()
        for s in idle + [dripper]:
            s.close()


def test_a_client_that_holds_its_connection_is_cut_off_at_the_deadline(ops):
    sock = socket.create_connection(("127.0.0.1", ops.port))
    sock.settimeout(REQUEST_DEADLINE + 10)
    started = time.monotonic()
    try:
        sock.send(b"GET /healthz HTTP/1.1\r\n")  # and never the rest: per-read timeouts alone would wait
        data = sock.recv(1024)
    except ConnectionResetError:
        data = b""
    finally:
        sock.close()
    assert data == b""  # closed by the server, no answer
    assert time.monotonic() - started < REQUEST_DEADLINE + 3


# -- the dead-man's switch ---------------------------------------------------------------------------
class _Pings(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args) -> None:
        pass


def test_the_heartbeat_url_is_pinged_only_when_the_pipeline_is_healthy(tmp_path):
    import surgewatch.ops.health as health

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Pings.hits = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ping/0f8e-uuid"
        settings = parse_settings({"brands": [{"name": "Acme", "query": "acme"}], "ops": {"heartbeat_url": url}},
                                  env={})
        store = SqliteStore(str(tmp_path / "sw.db"))
        now = 1_800_000_000.0
        health._last_ping.clear()
        assert ping_heartbeat_url(settings, store, now) is None  # nothing has run: silence is the alarm
        assert _Pings.hits == []
        for name in ("beat", "worker:collect", "worker:detect", "worker:notify", "evaluate:evaluate-acme"):
            store.heartbeat(name, now - 5)
        assert ping_heartbeat_url(settings, store, now) is True
        assert _Pings.hits == ["/ping/0f8e-uuid"]
        assert store.heartbeats(HEARTBEAT_PING) == {HEARTBEAT_PING: now}
        assert ping_heartbeat_url(settings, store, now + 1) is None  # at most one ping per PING_EVERY
        health._last_ping.clear()
        assert ping_heartbeat_url(settings, store, now + 10_000) is None  # every heartbeat is stale now
        assert len(_Pings.hits) == 1
    finally:
        server.shutdown()
        server.server_close()


# -- done when: /healthz follows a real `surgewatch run` ---------------------------------------------
@pytest.mark.slow
def test_healthz_is_503_fresh_200_while_run_works_and_503_soon_after_run_is_killed(tmp_path):
    with FeedServer() as feed:
        feed.route("/f.rss")
        path, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "sources": {"rss": {"feeds": [feed.url("/f.rss")], "interval": 10}},
            "channels": {"console": {}},
            "detector": {"bucket_seconds": 10},
            "ops": {"stale_after_seconds": 30},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"},
            "broker": {"url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"},
            "digest": {"enabled": False}})
        srv = make_server(settings, "127.0.0.1", 0)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        run = None
        try:
            code, body, _ = get(srv.port)
            assert code == 503 and body["pipeline"]["stale"][0].startswith("nothing has run yet")

            run = SurgewatchProcess(["run", "--config", str(path), "--data-dir", str(tmp_path), "--concurrency", "1"],
                                    {"SURGEWATCH_CONFIG": str(path)}, tmp_path / "run.log")
            deadline = time.monotonic() + 120
            while True:
                code, body, _ = get(srv.port)
                if code == 200 and body["sources"]["statuses"] == {"ok": 1}:
                    break
                assert run.alive(), run.log()[-4000:]
                assert time.monotonic() < deadline, f"{body}\n--- run log ---\n{run.log()[-4000:]}"
                time.sleep(1)
            assert body["pipeline"]["ok"] is True
            print(f"/healthz answered 200 {time.monotonic() - deadline + 120:.0f} s after `run` started")
            time.sleep(15)  # still 200 while it keeps running
            code, body, _ = get(srv.port)
            assert code == 200, body

            run.kill()  # SIGKILL the whole process group, as a crash or an OOM kill would
            killed = time.monotonic()
            while True:
                code, body, _ = get(srv.port)
                if code == 503:
                    break
                assert time.monotonic() - killed < 120, body
                time.sleep(1)
            took = time.monotonic() - killed
            print(f"/healthz turned 503 {took:.0f} s after `run` was killed (stale_after 30 s)")
            stale = body["pipeline"]["stale"]
            assert stale and all(": last seen " in line for line in stale), body  # names each stale component
            assert body["sources"]["failing"] == []  # the sources' last status still says ok
        finally:
            if run is not None:
                run.stop()
            srv.shutdown()
            srv.server_close()
            thread.join(timeout=5)


# -- a store outage is one line per task, not a traceback ------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_while_the_store_is_down_each_task_logs_one_line_without_a_traceback_or_the_password(tmp_path):
    from tests.support import Worker, sender_for, wait_until

    path, settings = write_config(tmp_path, {
        "brands": [{"name": "Acme", "query": "acme"}],
        "sources": {"hackernews": {"api_url": "http://127.0.0.1:9/api"}},
        "store": {"url": f"redis://:pw-store-secret@127.0.0.1:{_closed_port()}/0"},
        "broker": {"url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"},
        "digest": {"enabled": False}})
    from surgewatch.worker.settings import prepare_embedded_broker

    prepare_embedded_broker(settings.broker.url)
    worker = Worker(path, {"SURGEWATCH_CONFIG": str(path)}, tmp_path / "worker.log", concurrency=1)
    sender = sender_for(settings)
    try:
        wait_until(lambda: "ready" in worker.log(), 60, "the worker to start", worker)
        sender.send_task("surgewatch.collect", args=("hackernews", "Acme"), queue="collect")
        sender.send_task("surgewatch.evaluate", args=(["Acme"],), queue="detect")
        sender.send_task("surgewatch.ops.heartbeat", args=("notify",), queue="notify")
        wait_until(lambda: worker.log().count("the store is unavailable") >= 3, 90, "three skipped tasks", worker)
        log = worker.log()
        assert "Traceback" not in log, log[-4000:]
        assert "pw-store-secret" not in log
        lines = [line for line in log.splitlines() if "the store is unavailable" in line]
        assert {line.split("WARNING surgewatch.worker.tasks: ")[1].split(":")[0] for line in lines} == {
            "collect hackernews for Acme", "evaluate", "heartbeat of the notify queue"}
    finally:
        sender.close()
        worker.stop()
