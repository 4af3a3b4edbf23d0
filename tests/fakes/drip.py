"""A server that answers every request at once with a 200 and its headers, then drips the body one
byte every ``every`` seconds: a per-read socket timeout never trips, so only an overall deadline on
the whole request ends the wait (issue 13: ``fetch x`` was still running after 100 s)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.http_server import QuietServer


class DripServer:
    def __init__(self, *, every: float = 2.0, body: bytes = b'{"data": [], "meta": {}}',
                 content_type: str = "application/json", max_seconds: float = 60.0, headers_too: bool = False):
        self.every, self.body, self.content_type, self.max_seconds = every, body, content_type, max_seconds
        self.headers_too = headers_too  # drip the status line and headers as well (slowloris in reverse)
        self.requests = 0
        self.url = ""
        self._server: QuietServer | None = None
        self._stop = threading.Event()

    def __enter__(self) -> "DripServer":
        drip = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                drip.requests += 1
                started = time.monotonic()
                if drip.headers_too:
                    head = (f"HTTP/1.0 200 OK\r\nContent-Type: {drip.content_type}\r\n"
                            f"Content-Length: {len(drip.body)}\r\n\r\n").encode() + drip.body
                    try:
                        for byte in head:
                            if drip._stop.wait(drip.every) or time.monotonic() - started > drip.max_seconds:
                                return
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError, OSError):
                        pass
                    return
                self.send_response(200)
                self.send_header("Content-Type", drip.content_type)
                self.send_header("Content-Length", str(len(drip.body)))
                self.end_headers()
                self.wfile.flush()
                try:
                    for byte in drip.body:
                        if drip._stop.wait(drip.every) or time.monotonic() - started > drip.max_seconds:
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: that is what is tested

            do_GET = do_POST = _handle

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
