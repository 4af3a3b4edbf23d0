"""The operations endpoint: ``GET /metrics`` (Prometheus text), ``GET /healthz`` (JSON), ``GET /livez``.

Standard library HTTP server, one thread per connection, each connection with an overall deadline
(``REQUEST_DEADLINE``, from accept to the last byte of the answer): an idle client or one dripping a
byte every few seconds holds only its own thread, and only until its deadline, so it can never delay
``/healthz`` (one idle connection used to delay it 9.8 s, five 49.8 s).  At most ``MAX_CONNECTIONS``
are served at once; beyond that a connection is closed at once.  The answers themselves are computed
one at a time under a lock (the scrape caches are not thread-safe, and a scrape takes milliseconds);
the store opens per thread (an embedded SQLite connection must not cross threads: SqliteStore keeps
one per thread).

``/healthz`` is for monitors and readiness probes: 503 when the store or the broker does not answer,
a source is failing or disabled, or the pipeline's heartbeats (beat, a worker of each queue, every
evaluate tick) are older than ``ops.stale_after_seconds`` -- or there are none yet (the body names
them).  It is *not* a liveness probe: restarting this process cannot fix an outside service, so
Kubernetes liveness should use ``/livez``.
"""
from __future__ import annotations

import base64
import hmac
import json
import os
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from surgewatch.config import Settings, secret_from
from surgewatch import clock
from surgewatch.ops.health import SourceHealth, pipeline_health
from surgewatch.redact import redact
from surgewatch.ops.dashboard import Dashboard
from surgewatch.ops.metrics import DOWN_STATUSES, STORE_ERRORS, BrokerProbe, SurgeWatchCollector, build_registry
from surgewatch.store.base import Store

log = logging.getLogger("surgewatch.ops.server")

REQUEST_TIMEOUT = 5.0  # one read or write
REQUEST_DEADLINE = 10.0  # the whole connection, however the client drips its bytes
MAX_CONNECTIONS = 64
MAX_ERROR_CHARS = 300  # error texts can quote an outside service's answer: keep them short


def health_report(settings: Settings, store: Callable[[], Store], broker: BrokerProbe) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for ``/healthz``."""
    body: dict[str, Any] = {"status": "ok"}
    problems: list[str] = []
    try:
        health = SourceHealth.load_all(store())
        body["store"] = {"ok": True}
        pipeline = pipeline_health(settings, store(), clock.now())
        body["pipeline"] = pipeline.to_dict()
        if not pipeline.ok:
            problems.append("stale: " + "; ".join(pipeline.stale))
    except STORE_ERRORS as exc:
        health = []
        body["store"] = {"ok": False, "error": _short(redact(f"{type(exc).__name__}: {exc}"))}
        problems.append("store unreachable")
    reading = broker.read()
    body["broker"] = {"ok": reading.up, **({"error": _short(redact(reading.error))} if reading.error else {})}
    if reading.up is False:
        problems.append("broker unreachable")
    brands = {b.name for b in settings.brands}
    enabled = set(settings.sources.enabled())
    failing = [
        {
            "brand": h.brand,
            "source": h.source,
            "status": h.status,
            "failing_since": h.failing_since,
            "last_error": _short(redact(h.last_error)) if h.last_error else None,
        }
        for h in sorted(health, key=lambda h: (h.brand, h.source))
        if h.status in DOWN_STATUSES and h.brand in brands and h.source in enabled
    ]
    statuses: dict[str, int] = {}
    for h in health:
        if h.brand in brands and h.source in enabled:
            statuses[h.status] = statuses.get(h.status, 0) + 1
    body["sources"] = {"statuses": statuses, "failing": failing}
    if failing:
        problems.append("sources failing: " + ", ".join(f"{f['source']} for {f['brand']}" for f in failing))
    if problems:
        body["status"] = "failing"
        body["problems"] = problems
        return HTTPStatus.SERVICE_UNAVAILABLE, body
    return HTTPStatus.OK, body


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - 1] + "\u2026"


class OpsServer(ThreadingHTTPServer):
    """A threading HTTPServer that owns the runtime it reports on."""

    daemon_threads = True  # a connection still open at shutdown does not keep the process alive

    def __init__(self, settings: Settings, address: tuple[str, int], store: Store | None = None):
        from surgewatch.pipeline import Runtime

        self.settings = settings
        self.runtime = Runtime(settings, store=store)
        self.broker = BrokerProbe(settings.broker.url)
        self.collector = SurgeWatchCollector(settings, lambda: self.store, self.broker)
        self.registry = build_registry(self.collector)
        self.answer_lock = threading.Lock()  # one answer computed at a time (see the module docstring)
        self.dashboard = Dashboard(settings)
        self.dashboard_auth = dashboard_auth(settings)
        self._store_lock = threading.Lock()
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)  # binds last: a failed bind calls server_close()

    # Set by `surgewatch metrics`: follow the config file as workers and beat do, or /healthz would
    # wait for the heartbeats of the evaluate entries the config had when this server started.
    config_watcher: Any = None  # surgewatch.worker.reload.ConfigWatcher

    def follow_config(self) -> None:
        """Take up a changed config file (called under ``answer_lock``)."""
        new = self.config_watcher.changed() if self.config_watcher is not None else None
        if new is None:
            return
        from surgewatch.pipeline import Runtime

        with self._store_lock:  # the open store is kept (the store settings cannot change live)
            self.runtime = Runtime(new, store=self.runtime._store)
        self.settings = self.collector.settings = new
        self.collector._counts_end = None  # its cached counts are of the old brands: read them again
        self.dashboard = Dashboard(new)  # the new brands, and no page cached from the old ones
        try:
            self.dashboard_auth = dashboard_auth(new)
        except ValueError as exc:  # a password the environment lacks: keep the auth that worked
            log.error("dashboard auth of the new config not taken (%s); the previous one stays", exc)

    @property
    def store(self) -> Store:
        with self._store_lock:  # opened once, on first use
            return self.runtime.store

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            log.warning("ops server: %d connections open; closing a new one", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The deadline: shut the socket down however far the client has got; the handler's next
        # read or write then fails at once and the thread ends.
        timer = threading.Timer(REQUEST_DEADLINE, _cut_off, (request,))
        timer.daemon = True
        timer.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            timer.cancel()
            self._connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client cut off at its deadline or gone mid-answer is not worth a traceback.
        log.debug("ops server: connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self.broker.close()
        if self.runtime._store is not None:
            try:
                self.runtime.store.close()
            except STORE_ERRORS as exc:  # closing a store that is already gone is not worth a traceback
                log.debug("closing the store: %s", exc)


def dashboard_auth(settings: Settings) -> tuple[str | None, tuple[str, str] | None]:
    """(bearer token, (user, password)) the dashboard asks for; (None, None): open.  From the config
    or the environment (SURGEWATCH_DASHBOARD_TOKEN, SURGEWATCH_DASHBOARD_PASSWORD)."""
    ops = settings.ops
    token = secret_from(ops.dashboard_token, "SURGEWATCH_DASHBOARD_TOKEN")
    basic = None
    if ops.dashboard_user:
        password = os.environ.get("SURGEWATCH_DASHBOARD_PASSWORD")
        if not password:
            raise ValueError("ops.dashboard_user needs SURGEWATCH_DASHBOARD_PASSWORD in the environment")
        basic = (ops.dashboard_user, password)
    return token, basic


def _cut_off(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Handler(BaseHTTPRequestHandler):
    server: OpsServer
    timeout = REQUEST_TIMEOUT
    server_version = "surgewatch-ops"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        srv = self.server
        if path == "/metrics":
            with srv.answer_lock:
                srv.follow_config()
                text = generate_latest(srv.registry)
            self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, text)
        elif path == "/healthz":
            with srv.answer_lock:
                srv.follow_config()
                code, body = health_report(srv.settings, lambda: srv.store, srv.broker)
            self._send(code, "application/json", json.dumps(body, indent=2).encode() + b"\n")
        elif path == "/livez":
            self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/":
            if not self._authorised():
                self.send_response(HTTPStatus.UNAUTHORIZED)
                realm = 'Basic realm="surgewatch"' if srv.dashboard_auth[1] else 'Bearer realm="surgewatch"'
                self.send_header("WWW-Authenticate", realm)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with srv.answer_lock:
                srv.follow_config()
                try:
                    page = srv.dashboard.page(srv.store, clock.now())
                except STORE_ERRORS as exc:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8",
                               _short(redact(f"the store is unavailable: {type(exc).__name__}: {exc}")).encode() + b"\n")
                    return
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode("utf-8"))
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _authorised(self) -> bool:
        """The dashboard's optional auth: a bearer token, or a basic-auth user and password."""
        token, basic = self.server.dashboard_auth
        if token is None and basic is None:
            return True
        given = self.headers.get("Authorization", "")
        if token is not None and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        if basic is not None:
            expected = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode("ascii")
            return hmac.compare_digest(given.encode(), expected.encode())
        return False

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        # Every scrape would otherwise print a line on stderr.
        log.debug("%s %s", self.address_string(), format % args)


def make_server(settings: Settings, host: str = "127.0.0.1", port: int = 9464, store: Store | None = None) -> OpsServer:
    """Bind (port 0 picks a free port: see ``.port``) without serving yet."""
    return OpsServer(settings, (host, port), store=store)
