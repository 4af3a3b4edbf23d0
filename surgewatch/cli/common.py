"""What every command shares: the ``--config`` option, one error format, loading the config and
opening the store.  An error is one line naming what is wrong (``--debug`` for a traceback)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from surgewatch.config import ConfigError, Settings, load_settings
from surgewatch.redact import redact

out = Console()
err = Console(stderr=True)

ConfigPath = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="SURGEWATCH_CONFIG", help="Configuration file (YAML).", show_default=True),
]
DEFAULT_CONFIG = Path("surgewatch.yaml")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr; ``raise fail(...)`` ends the command with ``code``.  Redacted:
    the message may quote an outside service that echoed our token."""
    err.print("[bold red]error:[/] " + escape(redact(message)), markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_or_exit(path: Path) -> Settings:
    """The validated config, or every problem printed as ``FILE: key.path: what is wrong`` and exit 1."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        for line in exc.errors:
            err.print(f"{exc.source}: {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def open_store_or_exit(settings: Settings) -> Any:
    from surgewatch.store import StoreError, open_store

    try:
        return open_store(settings.store.url, bucket_seconds=settings.detector.bucket_seconds,
                          dedup_ttl=settings.store.dedup_ttl_days * 86400, recent_cap=settings.store.recent_cap)
    except (StoreError, ValueError) as exc:
        raise fail(f"cannot open the store: {exc}") from None
