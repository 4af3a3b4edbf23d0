"""Helpers for tests that run real Celery workers in subprocesses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from celery import Celery

from surgewatch.worker.settings import build
from surgewatch.config import Settings, parse_settings


class FileClock:
    """The clock a test moves by hand; workers read it through SURGEWATCH_CLOCK=file:<path>."""

    def __init__(self, path: Path, start: float):
        self.path = path
        self.set(start)

    def set(self, t: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(float(t)))
        tmp.replace(self.path)  # atomic: a reader never sees a half-written number

    def now(self) -> float:
        return float(self.path.read_text())

    @property
    def env(self) -> str:
        return f"file:{self.path}"


def redis_db_url(redis_url: str, db: int) -> str:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") >= 3 else redis_url.rstrip("/")
    return f"{base}/{db}"


def write_config(folder: Path, data: dict[str, Any]) -> tuple[Path, Settings]:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, parse_settings(data, str(path))


class SurgewatchProcess:
    """A `surgewatch ...` command in a subprocess of its own process group, logging to a file the
    test can show on failure."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "surgewatch.cli.main", *args], env={**os.environ, **env},
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (the main process and its pool children), as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class Worker(SurgewatchProcess):
    """`surgewatch worker` in a subprocess."""

    def __init__(self, config: Path, env: dict[str, str], log: Path, *, concurrency: int = 2, queues: str | None = None):
        args = ["worker", "--config", str(config), "--concurrency", str(concurrency), "--loglevel", "INFO"]
        if queues:
            args += ["-Q", queues]
        super().__init__(args, env, log)


def sender_for(settings: Settings) -> Celery:
    """A Celery app that only sends, configured exactly like the workers."""
    app = Celery("surgewatch-test-sender")
    app.conf.update(build(settings))
    return app


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, worker: Worker | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    detail = f"\n--- worker log ---\n{worker.log()[-6000:]}" if worker else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
