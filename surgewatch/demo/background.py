"""A local HTTP server run from a daemon thread: the demo's feed server, and the local stand-ins the
tests put in place of outside services, start and stop the same way."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class BackgroundHTTPServer:
    """``start()`` binds 127.0.0.1 on a free port and serves from a daemon thread; ``stop()`` shuts it
    down; use it as a context manager.  A subclass says how to answer in :meth:`handler_class`."""

    thread_name = "http-server"

    def __init__(self, host: str = "127.0.0.1"):
        self._host = host
        self._server: ThreadingHTTPServer | None = None

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def server_class(self) -> type[ThreadingHTTPServer]:
        return ThreadingHTTPServer

    def before_stop(self) -> None:
        """Close what the server holds open (long-lived sockets) before it shuts down."""

    def start(self) -> Any:
        server = self.server_class()((self._host, 0), self.handler_class())
        # Slow handlers must not hold up stop(): their threads are daemons and not joined.
        server.daemon_threads = True
        server.block_on_close = False
        # A short poll interval: shutdown() waits for the loop to notice, 0.5 s by default.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=self.thread_name,
                         daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        self.before_stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate(self)`` until it is true or ``timeout`` passes (for tests that drive a worker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

