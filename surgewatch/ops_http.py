"""The operations endpoint: ``GET /metrics`` (Prometheus text), ``GET /healthz`` (JSON), ``GET /livez``.

Standard library HTTP server, one request at a time: a scrape takes milliseconds, and serving in
one thread keeps the store connection in the thread that opened it (an embedded SQLite connection
must not cross threads).  A client that stalls is cut off by the socket timeout, so it cannot hold
the server for longer than ``REQUEST_TIMEOUT``.

``/healthz`` is for monitors and readiness probes: 503 when the store or the broker does not answer
or a source is failing or disabled (the body names them).  It is *not* a liveness probe: restarting
this process cannot fix an outside service, so Kubernetes liveness should use ``/livez``.
"""
from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Callable

import typer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from surgewatch.config import ConfigError, Settings, load_settings
from surgewatch.health import SourceHealth
from surgewatch.metrics import DOWN_STATUSES, STORE_ERRORS, BrokerProbe, SurgeWatchCollector, build_registry
from surgewatch.store.base import Store

log = logging.getLogger("surgewatch.ops_http")

REQUEST_TIMEOUT = 10.0
MAX_ERROR_CHARS = 300  # error texts can quote an outside service's answer: keep them short


def health_report(settings: Settings, store: Callable[[], Store], broker: BrokerProbe) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for ``/healthz``."""
    body: dict[str, Any] = {"status": "ok"}
    problems: list[str] = []
    try:
        health = SourceHealth.load_all(store())
        body["store"] = {"ok": True}
    except STORE_ERRORS as exc:
        health = []
        body["store"] = {"ok": False, "error": _short(f"{type(exc).__name__}: {exc}")}
        problems.append("store unreachable")
    reading = broker.read()
    body["broker"] = {"ok": reading.up, **({"error": _short(reading.error)} if reading.error else {})}
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
            "last_error": _short(h.last_error) if h.last_error else None,
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


class OpsServer(HTTPServer):
    """An HTTPServer that owns the runtime it reports on."""

    def __init__(self, settings: Settings, address: tuple[str, int], store: Store | None = None):
        from surgewatch.pipeline import Runtime

        self.settings = settings
        # Runtime opens the store on first use, i.e. in the serving thread (see the module docstring).
        self.runtime = Runtime(settings, store=store)
        self.broker = BrokerProbe(settings.broker.url)
        self.collector = SurgeWatchCollector(settings, lambda: self.runtime.store, self.broker)
        self.registry = build_registry(self.collector)
        super().__init__(address, _Handler)  # binds last: a failed bind calls server_close()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def server_close(self) -> None:
        super().server_close()
        self.broker.close()
        if self.runtime._store is not None:
            try:
                self.runtime.store.close()
            except STORE_ERRORS as exc:  # closing a store that is already gone is not worth a traceback
                log.debug("closing the store: %s", exc)


class _Handler(BaseHTTPRequestHandler):
    server: OpsServer
    timeout = REQUEST_TIMEOUT
    server_version = "surgewatch-ops"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/healthz":
            srv = self.server
            code, body = health_report(srv.settings, lambda: srv.runtime.store, srv.broker)
            self._send(code, "application/json", json.dumps(body, indent=2).encode() + b"\n")
        elif path == "/livez":
            self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/":
            self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"surgewatch: /metrics /healthz /livez\n")
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

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


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 9464) -> None:
    """Serve until interrupted."""
    server = make_server(settings, host, port)
    log.info("serving /metrics and /healthz on http://%s:%d", host, server.port)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def metrics_command(
    config: Path = typer.Option(
        "surgewatch.yaml", "--config", "-c", envvar="SURGEWATCH_CONFIG", help="Configuration file (YAML).",
        show_default=True,
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(9464, "--port", min=0, max=65535, help="Port to listen on."),
) -> None:
    """Serve Prometheus /metrics and a /healthz check, read from the store (no Celery needed)."""
    from surgewatch import logs

    logs.setup("INFO")
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        for line in exc.errors:
            typer.echo(f"{exc.source}: {line}", err=True)
        raise typer.Exit(1) from None
    try:
        server = make_server(settings, host, port)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"serving http://{host}:{server.port}/metrics and /healthz", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
