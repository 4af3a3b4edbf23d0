"""``surgewatch digest`` and ``surgewatch review``: the two report commands.

Plain typer command functions; ``surgewatch/cli.py`` registers them with
``app.command("digest")(digest)`` and ``app.command("review")(review)``.  Errors are one clear line
each (a bad config lists every problem), never a traceback.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from surgewatch import clock
from surgewatch.config import ConfigError, Settings, load_settings, secret_from

ConfigOption = typer.Option(Path("surgewatch.yaml"), "--config", "-c", envvar="SURGEWATCH_CONFIG",
                            help="The YAML configuration file.")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _settings(path: Path) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        typer.echo(f"error: invalid configuration {exc.source}:", err=True)
        for line in exc.errors:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1) from None


def _store(settings: Settings):
    from surgewatch.store import StoreError, open_store

    try:
        return open_store(settings.store.url, bucket_seconds=settings.detector.bucket_seconds,
                          dedup_ttl=settings.store.dedup_ttl_days * 86400, recent_cap=settings.store.recent_cap)
    except (StoreError, ValueError) as exc:
        raise _fail(f"cannot open the store: {exc}") from None


def read_traffic(path: Path) -> list[tuple[float, float]]:
    """``timestamp,requests_per_minute`` rows (see :func:`surgewatch.traffic.load_csv_history`)."""
    from surgewatch.traffic import TrafficHistoryError, load_csv_history

    try:
        return load_csv_history(path, -math.inf, math.inf)
    except TrafficHistoryError as exc:
        raise _fail(str(exc)) from None


def digest(
    config: Path = ConfigOption,
    brand: Optional[str] = typer.Option(None, "--brand", help="One brand (default: every brand in the config)."),
    week: Optional[str] = typer.Option(None, "--week", help="ISO week such as 2026-W47 (default: the last complete week)."),
    out: Path = typer.Option(Path("digests"), "--out", help="Folder for the Markdown, HTML and PNG files."),
    send: bool = typer.Option(False, "--send", help="Also post it to Slack (channels.slack, env SLACK_BOT_TOKEN)."),
    channel: Optional[str] = typer.Option(None, "--channel", help="Slack channel (default: the marketing channel)."),
    traffic: Optional[Path] = typer.Option(None, "--traffic", help="CSV of timestamp,requests_per_minute for lead times."),
) -> None:
    """Write the weekly trend digest (Markdown, self-contained HTML, chart PNG) for each brand."""
    from surgewatch.reports.digest import DigestError, build_digest, render_html, render_markdown, send_digest_to_slack

    settings = _settings(config)
    brands = [brand] if brand else [b.name for b in settings.brands]
    points = read_traffic(traffic) if traffic else None
    client = target = None
    if send:
        client, target = _slack_client(settings, channel)
    store = _store(settings)
    try:
        for name in brands:
            try:
                d = build_digest(store, settings, name, week, clock.now(), traffic=points)
            except DigestError as exc:
                raise _fail(str(exc)) from None
            folder = out / f"{_slug(d.brand)}-{d.week}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "digest.md").write_text(render_markdown(d), encoding="utf-8")
            (folder / "digest.html").write_text(render_html(d), encoding="utf-8")
            written = ["digest.md", "digest.html"]
            if d.chart_png:
                (folder / "digest-chart.png").write_bytes(d.chart_png)
                written.append("digest-chart.png")
            typer.echo(f"{d.brand} {d.week}: {d.total:,} mentions, {len(d.spikes)} spike(s) -> "
                       + ", ".join(str(folder / w) for w in written))
            if client is not None and target is not None:
                from slack_sdk.errors import SlackApiError

                try:
                    receipt = send_digest_to_slack(d, client, target)
                except SlackApiError as exc:
                    raise _fail(f"Slack refused the digest: {exc.response.get('error', 'unknown error')}") from None
                typer.echo(f"  sent to Slack {receipt['channel']} (ts {receipt['ts']})")
    finally:
        store.close()


def _slack_client(settings: Settings, channel: str | None):
    from slack_sdk import WebClient

    slack = settings.channels.slack
    if slack is None:
        raise _fail("--send needs channels.slack in the config")
    token = secret_from(slack.token, "SLACK_BOT_TOKEN")
    if not token:
        raise _fail("--send needs a Slack token: set SLACK_BOT_TOKEN (or channels.slack.token)")
    target = channel or settings.digest.channel or slack.marketing_channel or slack.ops_channel
    return WebClient(token=token, base_url=slack.api_url, timeout=int(slack.timeout)), target


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "brand"


def review(
    incident_id: str = typer.Argument(..., help="The incident id (see `surgewatch incidents`)."),
    config: Path = ConfigOption,
    out: Path = typer.Option(Path("reviews"), "--out", help="Folder for the Markdown, HTML and PNG files."),
    traffic: Optional[Path] = typer.Option(None, "--traffic", help="CSV of timestamp,requests_per_minute (site traffic)."),
) -> None:
    """Write the post-event review of one incident: timeline chart, lead time, forecast vs peak,
    deliveries, and a threshold suggestion from replaying the stored history."""
    from surgewatch.reports.review import ReviewError, build_review, render_html, render_markdown

    settings = _settings(config)
    points = read_traffic(traffic) if traffic else None
    store = _store(settings)
    try:
        try:
            r = build_review(store, settings, incident_id, points)
        except ReviewError as exc:
            raise _fail(str(exc)) from None
    finally:
        store.close()
    folder = out / _slug(r.incident_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "review.md").write_text(render_markdown(r), encoding="utf-8")
    (folder / "review.html").write_text(render_html(r), encoding="utf-8")
    (folder / "review-chart.png").write_bytes(r.chart_png)
    lead = f"lead {r.lead_seconds / 60:.0f} min before the traffic peak" if r.lead_seconds is not None else "lead unknown"
    typer.echo(f"review of {r.incident_id} ({lead}) -> {folder / 'review.md'}, {folder / 'review.html'}, "
               f"{folder / 'review-chart.png'}")
    for s in r.suggestions:
        typer.echo(f"  - {s}")
