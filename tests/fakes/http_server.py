"""What the local fake services (Slack, PagerDuty, webhook receivers) share."""
from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any


class QuietServer(ThreadingHTTPServer):
    """A client that gave up (a timeout test) leaves a broken pipe; that is the point, not an error."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections when many workers post at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
