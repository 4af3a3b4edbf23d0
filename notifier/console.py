"""The console channel: one readable line per notification, for ``surgewatch run`` and the demo."""
from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from surgewatch.notifier import render
from surgewatch.notifier.base import ChannelError, Notification
from surgewatch.notifier.escape import log_text


class ConsoleChannel:
    name = "console"

    def __init__(self, stream: TextIO | None = None):
        # None means "whatever sys.stdout is at send time", so pytest's capsys and the CLI's
        # redirections both see the line.
        self._stream = stream
        self._lock = threading.Lock()

    def format(self, n: Notification) -> str:
        """``2026-11-28T10:05:00Z WARNING Acme opened: 48 mentions/min vs 3.1 expected (x15.5);
        peak ~120/min in ~20 min; site traffic about 6x normal (~5,400 req/min vs ~900) in ~25 min``
        (the traffic part only for a brand whose traffic model is calibrated).  The time is in the
        configured zone, offset shown: ``2026-07-01T10:05:00+01:00`` in Europe/London."""
        line = f"{render.when(n)} {n.severity.upper()} {render.summary(n)}"
        outlook = n.traffic_outlook
        if outlook is not None and outlook.calibrated and n.event != "resolved":
            line += f"; site traffic {outlook.phrase()}"
        if n.top_mentions and n.event != "resolved":
            top = n.top_mentions[0]
            line += f' | top: {top.source} @{top.author or "?"} "{top.text}"'
        return log_text(line, limit=500)

    def send(self, notification: Notification) -> dict[str, Any] | None:
        stream = self._stream or sys.stdout
        try:
            with self._lock:  # one line at a time when several worker threads print
                stream.write(self.format(notification) + "\n")
                stream.flush()
        except (OSError, ValueError) as e:  # closed pipe / closed file
            raise ChannelError(f"console: cannot write: {e}", permanent=True) from e
        outlook = notification.traffic_outlook
        if outlook is not None and notification.event != "resolved":
            return {"traffic_outlook": outlook.phrase()}  # what was said, for the record
        return None

    def __repr__(self) -> str:
        return "ConsoleChannel()"
