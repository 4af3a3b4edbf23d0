"""Config reload without a restart: workers and beat look at the config file every
``CHECK_SECONDS`` and, when it changed and is valid, use the new one -- a brand, a feed or a channel
added or removed takes effect within a minute.  A file that no longer validates is refused, said once
in the log (every error with its key path) and recorded for ``status``; the running config stays.

What cannot change in a running process (the broker and the store it is connected to, the bucket
width its counts are kept in: ``RESTART_ONLY``) keeps its running value; the reload is recorded with
those keys under ``restart_needed``, so ``status`` says they wait for a restart.

Each process records its attempts in the store under ``config_reload_key("<role>@<host>")`` (one
key per role and machine: every machine reads its own copy of the file, and nothing here can tell
another machine to look)."""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from surgewatch.config import ConfigError, Settings, load_yaml, parse_settings
from surgewatch.ops.heartbeat import HEARTBEAT_EVERY, HeartbeatScheduler

log = logging.getLogger("surgewatch.worker.reload")

CHECK_SECONDS = 10.0  # real seconds between looks at the file (a stat; the file is read only when it changed)

# Settings a running process cannot take over: the Celery app is connected to its broker, the
# store is open, and counts already stored are in buckets of the running width.
RESTART_ONLY = ("broker.url", "store.url", "store.dedup_ttl_days", "store.recent_cap", "detector.bucket_seconds")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_bytes(data: bytes, source: str) -> Settings:
    """``load_settings`` on bytes already read, so the digest and the settings come from one read."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"cannot read: UnicodeDecodeError: {exc}"]) from None
    return parse_settings(load_yaml(text, source), source)


def load_with_digest(path: str | os.PathLike[str]) -> tuple[Settings, str]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(p), ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.__class__.__name__}: {exc}"]) from None
    return parse_bytes(data, str(p)), _digest(data)


_startup: dict[str, tuple[Settings, str]] = {}


def startup(path: str) -> tuple[Settings, str]:
    """The settings this process (or the parent it was forked from) started with, and the digest of
    the bytes they were read from.  A pool child forked later starts from these and looks at the file
    at once: if the file has meanwhile become invalid, the child still runs (on the startup config)
    instead of failing every task."""
    if path not in _startup:
        _startup[path] = load_with_digest(path)
    return _startup[path]


def forget_startup() -> None:
    """Forget the startup settings (a test pointing the process at another file)."""
    _startup.clear()


def _get(settings: Settings, dotted: str) -> Any:
    node: Any = settings
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def apply_live(running: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """``new`` as a running process can take it: the ``RESTART_ONLY`` values stay as they run.
    Returns those settings and the keys that differ (they take effect at the next restart)."""
    waiting = [key for key in RESTART_ONLY if _get(running, key) != _get(new, key)]
    if not waiting:
        return new, []
    effective = new.model_copy(update={
        "broker": running.broker,
        "store": running.store,
        "detector": new.detector.model_copy(update={"bucket_seconds": running.detector.bucket_seconds}),
    })
    return effective, waiting


@dataclass
class ReloadAttempt:
    """One look at a changed file: accepted (``settings`` now in effect) or refused (``error``)."""

    at: float
    ok: bool
    digest: str
    settings: Settings | None = None
    error: str | None = None
    restart_needed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # accepted, but a channel or source lacks its secret
    reverted: bool = False  # back to the running content after a refused change: nothing to rebuild

    def state(self, process: str, path: str) -> dict[str, Any]:
        s = self.settings
        return {
            "at": self.at, "ok": self.ok, "error": self.error, "process": process, "path": path,
            "digest": self.digest, "restart_needed": self.restart_needed, "reverted": self.reverted,
            "warnings": self.warnings,
            "brands": len(s.brands) if s is not None else None,
            "sources": sorted(s.sources.enabled()) if s is not None else None,
        }


class ConfigWatcher:
    """``changed()`` returns the new Settings when the file at ``path`` changed and validates, else None.
    ``check()`` says more: every attempt, accepted or refused (to be recorded), or None."""

    def __init__(self, path: str | os.PathLike[str], settings: Settings, *, check_seconds: float | None = None,
                 digest: str | None = None, who: str = ""):
        self.who = who  # for the log: which process says it ("worker", "beat")
        self.path = Path(path)
        self.settings = settings
        self.check_seconds = CHECK_SECONDS if check_seconds is None else check_seconds
        self._checked_at = time.monotonic()
        self._stamp = self._stat()
        # ``digest``: of the bytes ``settings`` came from, when they were read earlier (the file may
        # have changed since, and must then count as changed).
        self._digest = digest if digest is not None else self._hash()
        self.refused: str | None = None  # the digest of a refused version, so it is said once
        self.last_error: str | None = None

    def _prefix(self) -> str:
        return f"{self.who}: " if self.who else ""

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        # inode too: an editor or `mv` that replaces the file gives it a new one
        return st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size

    def _hash(self) -> str | None:
        try:
            return _digest(self.path.read_bytes())
        except OSError:
            return None

    def changed(self, *, force: bool = False) -> Settings | None:
        attempt = self.check(force=force)
        return attempt.settings if attempt is not None and attempt.ok and not attempt.reverted else None

    def check(self, *, force: bool = False) -> ReloadAttempt | None:
        from surgewatch import clock

        now = time.monotonic()
        if not force and now - self._checked_at < self.check_seconds:
            return None
        self._checked_at = now
        stamp = self._stat()
        if stamp == self._stamp and not force:
            return None
        self._stamp = stamp
        try:
            data: bytes | None = self.path.read_bytes()
        except OSError as exc:
            data, problem = None, f"cannot read: {exc.strerror or type(exc).__name__}"
        if self._stat() != stamp:
            self._stamp = None  # written while we read it: read it whole at the next look
            return None
        digest = _digest(data) if data is not None else "unreadable"
        if digest == self._digest:
            if self.refused is None:
                return None  # touched, not changed
            # Back to the content that runs, after a refused change: the refusal no longer holds.
            self.refused = self.last_error = None
            log.warning("%sconfig %s is back to the running version", self._prefix(), self.path)
            return ReloadAttempt(clock.now(), True, digest, self.settings, reverted=True)
        if digest == self.refused:
            return None  # refused already: said once
        try:
            if data is None:
                raise ConfigError(str(self.path), [problem])
            parsed = parse_bytes(data, str(self.path))
        except ConfigError as exc:
            self.refused = digest
            self.last_error = f"{exc.source}: " + "; ".join(exc.errors)
            log.error("%sconfig %s changed but is not valid; still running the previous one: %s", self._prefix(),
                      self.path, self.last_error)
            return ReloadAttempt(clock.now(), False, digest, error=self.last_error)
        settings, waiting = apply_live(self.settings, parsed)
        self._digest, self.refused, self.last_error = digest, None, None
        self.settings = settings
        log.warning("%sconfig %s reloaded: %d brand(s), sources %s", self._prefix(), self.path, len(settings.brands),
                    ", ".join(settings.sources.enabled()) or "none")
        if waiting:
            log.warning("%sconfig %s: %s changed; that takes effect only after a restart", self._prefix(), self.path,
                        ", ".join(waiting))
        # Secrets come from this process's environment, which a reload cannot change.
        from surgewatch.registry import credential_problems

        warnings = credential_problems(settings)
        for problem in warnings:
            log.warning("%sconfig %s: %s", self._prefix(), self.path, problem)
        return ReloadAttempt(clock.now(), True, digest, settings, restart_needed=waiting, warnings=warnings)


def process_name(role: str) -> str:
    return f"{role}@{socket.gethostname()}"


def record(store: Any, role: str, path: str | os.PathLike[str], attempt: ReloadAttempt) -> None:
    """Leave the attempt where ``status`` reads it.  A store that cannot be written is logged (the
    reload itself stands: the log line above already said it)."""
    from surgewatch.ops.metrics import STORE_ERRORS
    from surgewatch.store.keys import config_reload_key

    process = process_name(role)
    try:
        store.set_state(config_reload_key(process), attempt.state(process, str(path)))
    except STORE_ERRORS as exc:
        log.warning("config reload of %s not recorded in the store (%s)", process, exc)


class FollowedConfig:
    """A process's view of the config file: the settings in effect and, built from them, whatever the
    process runs on (``build(settings, previous)``: a pipeline Runtime, a beat schedule).  ``current()``
    looks at the file (at most every ``check_seconds``) and rebuilds on an accepted change."""

    def __init__(self, role: str, path: str, build: Callable[[Settings, Any], Any],
                 store: Callable[[Any], Any], *, check_seconds: float | None = None):
        settings, digest = startup(path)
        self.role, self.path = role, path
        self.watcher = ConfigWatcher(path, settings, check_seconds=check_seconds, digest=digest, who=role)
        self._build, self._store = build, store
        self._lock = threading.Lock()
        self.value = build(settings, None)
        self._first = True  # look at once: the startup settings may be older than the file

    def current(self) -> Any:
        with self._lock:
            attempt = self.watcher.check(force=self._first)
            self._first = False
            if attempt is not None:
                if attempt.ok and not attempt.reverted:
                    self.value = self._build(attempt.settings, self.value)
                record(self._store(self.value), self.role, self.path, attempt)
            return self.value


def config_path() -> str | None:
    from surgewatch.worker.settings import CONFIG_ENV

    return os.environ.get(CONFIG_ENV)


class ScheduleFollower:
    """For a beat scheduler: the schedule follows the config file.  ``follow_config()`` runs from the
    scheduler's tick; on an accepted change the scheduler's ``install_schedule(schedule)`` replaces
    the old schedule with ``beat_schedule(settings, speed)``."""

    _followed: FollowedConfig | None = None
    # What the scheduler's own tick() handles (RedBeat: Redis gone, lock lost); anything else a
    # reload raises is logged and beat goes on with the schedule it has.
    passthrough: tuple[type[BaseException], ...] = ()

    def follow_config(self) -> None:
        try:
            self._follow_config()
        except self.passthrough:
            raise
        except Exception:  # noqa: BLE001 -- beat must keep scheduling; the traceback says what failed
            log.exception("beat: could not apply the changed config; the previous schedule stays")

    def _follow_config(self) -> None:
        if self._followed is None:
            path = config_path()
            if not path:
                return
            from surgewatch.pipeline import Runtime

            def build(settings: Settings, previous: Any) -> Any:
                if previous is not None:
                    self._install(settings)
                return Runtime(settings, store=previous.store if previous is not None else None)

            self._followed = FollowedConfig("beat", path, build, lambda rt: rt.store)
        self._followed.current()

    def _install(self, settings: Settings) -> None:
        from surgewatch import clock
        from surgewatch.worker.settings import beat_schedule

        schedule = beat_schedule(settings, clock.speed())
        before = set(self.app.conf.beat_schedule or {})  # type: ignore[attr-defined]
        self.app.conf.beat_schedule = schedule  # type: ignore[attr-defined]
        self.install_schedule(schedule)
        added, removed = sorted(set(schedule) - before), sorted(before - set(schedule))
        log.warning("beat: schedule follows the config: %d entries (%d added%s, %d removed%s)", len(schedule),
                    len(added), f": {', '.join(added[:10])}" if added else "", len(removed),
                    f": {', '.join(removed[:10])}" if removed else "")

    def install_schedule(self, schedule: dict[str, dict[str, Any]]) -> None:
        raise NotImplementedError


class ReloadingScheduler(ScheduleFollower, HeartbeatScheduler):
    """The embedded default's scheduler (Celery's PersistentScheduler, under ``worker -B``): leaves
    beat's heartbeat and follows the config file."""

    def tick(self, *args, **kwargs):  # type: ignore[override]
        self.follow_config()
        return min(super().tick(*args, **kwargs), HEARTBEAT_EVERY)

    def install_schedule(self, schedule: dict[str, dict[str, Any]]) -> None:
        # merge_inplace drops the entries no longer in the schedule and updates the others in place
        # (keeping when each last ran); the heap is rebuilt, or a changed interval would wait for
        # the old one once.
        self.merge_inplace(schedule)
        self.install_default_entries(self.schedule)
        self._heap = None
        self.sync()
