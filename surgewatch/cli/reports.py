"""``surgewatch digest`` and ``surgewatch review``: the two report commands.

Plain typer command functions; :mod:`surgewatch.cli.main` registers them with
``app.command("digest")(digest)`` and ``app.command("review")(review)``.  Errors are one clear line
each (a bad config lists every problem), never a traceback.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from surgewatch import clock
from surgewatch.config import Settings, secret_from

from surgewatch.cli.common import DEFAULT_CONFIG, ConfigPath, err, fail, load_or_exit, open_store_or_exit


def read_traffic(path: Path) -> list[tuple[float, float]]:
    """``timestamp,requests_per_minute`` rows (see :func:`surgewatch.traffic.load_csv_history`)."""
    from surgewatch.traffic import TrafficHistoryError, load_csv_history

    try:
        return load_csv_history(path, -math.inf, math.inf)
    except TrafficHistoryError as exc:
        raise fail(str(exc)) from None


def digest(
    config: ConfigPath = DEFAULT_CONFIG,
    brand: Optional[str] = typer.Option(None, "--brand", "-b", help="One brand (default: every brand in the config)."),
    week: Optional[str] = typer.Option(None, "--week", "-w", help="ISO week such as 2026-W47 (default: the last complete week)."),
    out: Path = typer.Option(Path("digests"), "--out", "-o", help="Folder for the Markdown, HTML and PNG files."),
    send: bool = typer.Option(False, "--send", help="Also deliver it to every digest channel of the config: Slack "
                              "(channels.slack, env SLACK_BOT_TOKEN) and e-mail (channels.email, env SMTP_PASSWORD)."),
    channel: Optional[str] = typer.Option(None, "--channel", help="Slack channel (default: the marketing channel)."),
    traffic: Optional[Path] = typer.Option(None, "--traffic", help="CSV of timestamp,requests_per_minute for lead times."),
) -> None:
    """Write the weekly trend digest (Markdown, self-contained HTML, chart PNG) for each brand."""
    from surgewatch.reports.digest import DigestError, build_digest, render_html, render_markdown

    settings = load_or_exit(config)
    brands = [brand] if brand else [b.name for b in settings.brands]
    points = read_traffic(traffic) if traffic else None
    senders = _digest_senders(settings, channel) if send else []
    failed = 0
    store = open_store_or_exit(settings)
    try:
        for name in brands:
            try:
                d = build_digest(store, settings, name, week, clock.now(), traffic=points)
            except DigestError as exc:
                raise fail(str(exc)) from None
            folder = out / f"{_slug(d.brand)}-{d.week}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "digest.md").write_text(render_markdown(d), encoding="utf-8")
            (folder / "digest.html").write_text(render_html(d), encoding="utf-8")
            written = ["digest.md", "digest.html"]
            if d.chart_png:
                (folder / "digest-chart.png").write_bytes(d.chart_png)
                written.append("digest-chart.png")
            typer.echo(f"{d.brand} {d.week}: {d.total:,} mentions, {len(d.spikes)} spike{'' if len(d.spikes) == 1 else 's'} -> "
                       + ", ".join(str(folder / w) for w in written))
            # Each channel on its own: one that fails is said, and the others still get the digest.
            for deliver in senders:
                try:
                    typer.echo(f"  sent {deliver(d)}")
                except DigestSendError as exc:
                    failed += 1
                    err.print(f"  error: {exc}", markup=False, highlight=False)
    finally:
        store.close()
    if failed:
        raise typer.Exit(1)


class DigestSendError(Exception):
    """A digest channel refused or could not be reached (one line, in the service's words)."""


def _digest_senders(settings: Settings, channel: str | None) -> list[Callable[[Any], str]]:
    """One ``deliver(digest) -> what was done`` per configured digest channel."""
    senders: list[Callable[[Any], str]] = []
    if settings.channels.slack is not None:
        client, target = _slack_client(settings, channel)

        def to_slack(d: Any) -> str:
            from slack_sdk.errors import SlackApiError

            from surgewatch.reports.digest import send_digest_to_slack

            try:
                receipt = send_digest_to_slack(d, client, target)
            except SlackApiError as exc:
                raise DigestSendError(f"Slack refused the digest: {exc.response.get('error', 'unknown error')}") from None
            return f"to Slack {receipt['channel']} (ts {receipt['ts']})"

        senders.append(to_slack)
    if settings.channels.email is not None:
        from surgewatch.notifier.base import ChannelError
        from surgewatch.registry import MissingCredential, build_channel

        try:
            email = build_channel(settings, "email")
        except MissingCredential as exc:
            raise fail(str(exc)) from None

        def by_email(d: Any) -> str:
            from surgewatch.reports.digest import digest_email

            try:
                email.deliver(digest_email(d, email))
            except ChannelError as exc:
                raise DigestSendError(str(exc)) from None
            return f"by e-mail to {', '.join(email.to)}"

        senders.append(by_email)
    if not senders:
        raise fail("--send needs a digest channel in the config: channels.slack or channels.email")
    return senders


def _slack_client(settings: Settings, channel: str | None):
    from surgewatch.registry import slack_web_client

    slack = settings.channels.slack
    if slack is None:
        raise fail("--send needs channels.slack in the config")
    token = secret_from(slack.token, "SLACK_BOT_TOKEN")
    if not token:
        raise fail("--send needs a Slack token: set SLACK_BOT_TOKEN (or channels.slack.token)")
    target = channel or settings.digest.channel or slack.marketing_channel or slack.ops_channel
    return slack_web_client(settings, token), target


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "brand"


def review(
    incident_id: str = typer.Argument(..., help="The incident id (see `surgewatch incidents`)."),
    config: ConfigPath = DEFAULT_CONFIG,
    out: Path = typer.Option(Path("reviews"), "--out", help="Folder for the Markdown, HTML and PNG files."),
    traffic: Optional[Path] = typer.Option(None, "--traffic", help="CSV of timestamp,requests_per_minute (site traffic)."),
) -> None:
    """Write the post-event review of one incident: timeline chart, lead time, forecast vs peak,
    deliveries, and a threshold suggestion from replaying the stored history."""
    from surgewatch.reports.review import ReviewError, build_review, render_html, render_markdown

    settings = load_or_exit(config)
    points = read_traffic(traffic) if traffic else None
    store = open_store_or_exit(settings)
    try:
        try:
            r = build_review(store, settings, incident_id, points)
        except ReviewError as exc:
            raise fail(str(exc)) from None
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
