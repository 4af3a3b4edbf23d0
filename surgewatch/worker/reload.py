"""Config reload without a restart: workers and beat look at the config file every
``CHECK_SECONDS`` and, when it changed and is valid, use the new one -- a brand, a feed or a channel
added or removed takes effect within a minute.  A file that no longer validates is refused, said once
in the log (every error with its key path) and recorded for ``status``; the running config stays."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from surgewatch.config import ConfigError, Settings, load_settings

log = logging.getLogger("surgewatch.worker.reload")

CHECK_SECONDS = 10.0  # real seconds between looks at the file (a stat; the file is read only when it changed)
STATE_KEY = "config:reload"  # in the store: the last reload, or why the last change was refused


class ConfigWatcher:
    """``changed()`` returns the new Settings when the file at ``path`` changed and validates, else None."""

    def __init__(self, path: str | os.PathLike[str], settings: Settings, *, check_seconds: float = CHECK_SECONDS):
        self.path = Path(path)
        self.settings = settings
        self.check_seconds = check_seconds
        self._checked_at = time.monotonic()
        self._stamp = self._stat()
        self._digest = self._hash()
        self.refused: str | None = None  # the digest of a refused version, so it is said once
        self.last_error: str | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _hash(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def changed(self, *, force: bool = False) -> Settings | None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_seconds:
            return None
        self._checked_at = now
        stamp = self._stat()
        if stamp == self._stamp and not force:
            return None
        self._stamp = stamp
        digest = self._hash()
        if digest is None or digest == self._digest or digest == self.refused:
            return None  # touched but not changed, unreadable (said by the next good read), or refused already
        try:
            settings = load_settings(self.path)
        except ConfigError as exc:
            self.refused = digest
            self.last_error = f"{exc.source}: " + "; ".join(exc.errors)
            log.error("config %s changed but is not valid; still running the previous one: %s", self.path,
                      self.last_error)
            return None
        self._digest, self.refused, self.last_error = digest, None, None
        self.settings = settings
        log.warning("config %s reloaded: %d brand(s), sources %s", self.path, len(settings.brands),
                    ", ".join(settings.sources.enabled()) or "none")
        return settings
