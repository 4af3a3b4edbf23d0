"""The ``surgewatch`` command.  Every subcommand has ``--help``; errors are one clear line, never a
traceback (the full traceback only with ``--debug``)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from surgewatch.cli.common import DEFAULT_CONFIG, err, fail, load_or_exit, out
from surgewatch.config import Settings
from surgewatch.redact import redact, redact_url
from surgewatch.store.keys import silence_key, verdict_key

app = typer.Typer(
    name="surgewatch",
    help="Warns you before your website is flooded: brand mentions -> spike detection -> alerts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # plain help: flags without the "<bool>" type column the rich layout adds
)
ConfigOption = typer.Option(
    DEFAULT_CONFIG, "--config", "-c", envvar="SURGEWATCH_CONFIG", help="Configuration file (YAML).", show_default=True
)


def _version(value: bool) -> None:
    if value:
        from surgewatch import __version__

        out.print(f"surgewatch {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an unexpected error.")] = False,
    log_level: Annotated[Optional[str], typer.Option(
        "--log-level", help="Log level of SurgeWatch's own log lines, secrets redacted (default: WARNING, INFO for "
                            "metrics and slack-listener; or SURGEWATCH_LOG_LEVEL).")] = None,
) -> None:
    """Warns you before your website is flooded: brand mentions -> spike detection -> alerts."""
    # main() sets the redacting log handler up for every command; --log-level changes its level.
    if log_level:
        from surgewatch import logs

        logs.setup(log_level)


def _use_config(path: Path) -> Settings:
    """Load the config and point every process we start (worker, beat) at it."""
    settings = load_or_exit(path)
    os.environ["SURGEWATCH_CONFIG"] = str(path.resolve())
    return settings


def _credential_problems(settings: Settings) -> list[str]:
    from surgewatch.registry import credential_problems

    return credential_problems(settings)


def _warn_missing_credentials(settings: Settings) -> None:
    for problem in _credential_problems(settings):
        err.print(f"warning: {problem}", markup=False, highlight=False)


@app.command("check-config")
def check_config(
    file: Optional[Path] = typer.Argument(None, help="The YAML file to check (or give it with -c)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="The YAML file to check, as other commands take it."),
) -> None:
    """Validate a configuration file, and that every configured channel and source has its secret in
    the environment: every error with its key path; exit 1 if any."""
    if file is not None and config is not None and file != config:
        raise fail(f"two files given ({file} and -c {config}): check one at a time")
    file = file or config
    if file is None:
        raise fail("which file? surgewatch check-config FILE (or -c FILE)")
    settings = load_or_exit(file)
    from surgewatch.worker.settings import beat_schedule

    problems = _credential_problems(settings)
    for problem in problems:
        err.print(f"{file}: {problem}", markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print(f"[green]ok[/]: {file}", highlight=False)
    out.print(f"  brands:   {', '.join(b.name for b in settings.brands)}", highlight=False, markup=False)
    out.print(f"  sources:  {', '.join(settings.sources.enabled()) or '(none)'}", highlight=False, markup=False)
    from surgewatch.registry import configured_channels

    out.print(f"  channels: {', '.join(configured_channels(settings)) or '(none)'}", highlight=False, markup=False)
    out.print(f"  store:    {redact_url(settings.store.url)}", highlight=False, markup=False)
    out.print(f"  broker:   {redact_url(settings.broker.url)}", highlight=False, markup=False)
    out.print(f"  schedule: {len(beat_schedule(settings))} beat entries", highlight=False, markup=False)
    out.print(f"  stale:    /healthz turns red after {settings.stale_after_seconds():.0f} s without a heartbeat",
              highlight=False, markup=False)


@app.command()
def reload(config: Path = ConfigOption) -> None:
    """Check a changed configuration file (as check-config does) and say when the running worker and
    beat pick it up: they look at the file themselves; this command signals no process."""
    from surgewatch.ops.heartbeat import HEARTBEAT_EVERY
    from surgewatch.worker.reload import CHECK_SECONDS, RESTART_ONLY

    check_config(config, None)  # every problem printed, exit 1 if any: then the running processes refuse it too
    out.print(
        f"Running processes that read {config.resolve()} take it up by themselves: each looks at the file "
        f"every {CHECK_SECONDS:.0f} s, and beat installs the new schedule at its next loop (at most "
        f"{HEARTBEAT_EVERY:.0f} s later); a worker, at its next task.  Brands, sources, channels and routing "
        f"change live; {', '.join(RESTART_ONLY)} only at a restart.", highlight=False, markup=False, soft_wrap=True)
    out.print("Nothing was signalled: processes on other machines read their own copy of the file.  "
              "`surgewatch status` shows when each process reloaded, or why it refused the change.",
              highlight=False, markup=False, soft_wrap=True)


def _celery_app():
    from surgewatch.worker.app import app as celery_app

    return celery_app


@app.command()
def run(
    config: Path = ConfigOption,
    concurrency: int = typer.Option(2, help="Worker processes."),
    loglevel: str = typer.Option("INFO", help="Log level."),
    data_dir: Path = typer.Option(Path("."), help="Where beat keeps its schedule file."),
) -> None:
    """Run everything in one process: a Celery worker with embedded beat (the embedded default:
    SQLite broker and store, no server needed)."""
    settings = _use_config(config)
    _warn_missing_credentials(settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    from surgewatch.worker.settings import prepare_embedded_broker

    prepare_embedded_broker(settings.broker.url)
    _celery_app().worker_main(
        [
            "worker",
            "-B",
            "-Q",
            "collect,detect,notify",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            "--schedule",
            str(data_dir / "surgewatch-beat-schedule"),
            "--without-mingle",
            "--without-gossip",
        ]
    )


@app.command()
def worker(
    config: Path = ConfigOption,
    queues: str = typer.Option("collect,detect,notify", "--queues", "-Q", help="Queues to consume."),
    concurrency: int = typer.Option(2, help="Worker processes."),
    loglevel: str = typer.Option("INFO", help="Log level."),
    hostname: Optional[str] = typer.Option(None, "--hostname", "-n", help="Worker name, e.g. notify1@%h (unique per host)."),
) -> None:
    """Run a cluster worker (add more on other machines to scale out)."""
    settings = _use_config(config)
    _warn_missing_credentials(settings)
    argv = ["worker", "-Q", queues, "--concurrency", str(concurrency), "--loglevel", loglevel]
    if hostname:
        argv += ["--hostname", hostname]
    _celery_app().worker_main(argv)


@app.command()
def beat(
    config: Path = ConfigOption,
    loglevel: str = typer.Option("INFO", help="Log level."),
    schedule_file: Path = typer.Option(Path("surgewatch-beat-schedule"), help="Beat's schedule state."),
) -> None:
    """Run the scheduler (exactly one per cluster)."""
    _use_config(config)
    _celery_app().start(["beat", "--loglevel", loglevel, "--schedule", str(schedule_file)])


@app.command()
def status(config: Path = ConfigOption, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The pipeline's heartbeats (what /healthz checks), active silences, source health per brand x
    source, open incidents and the latest verdict per brand."""
    settings = load_or_exit(config)
    from surgewatch import clock
    from surgewatch.ops.health import SourceHealth, pipeline_health
    from surgewatch.pipeline import Runtime

    rt = Runtime(settings)
    now = clock.now()
    pipeline = pipeline_health(settings, rt.store, now)
    health = SourceHealth.load_all(rt.store)
    names = [b.name for b in settings.brands]
    verdicts = dict(zip(names, rt.store.get_states([verdict_key(n) for n in names])))
    silences = [s for s in rt.store.get_states([silence_key(n) for n in names]) if s and s.get("until", 0) > now]
    open_incidents = rt.store.open_incidents(names)
    incidents = [open_incidents[n] for n in names if n in open_incidents]
    # Deliveries that did not go out: failed ones (a failed page above all), and the outbox.
    unsent = [d for d in rt.store.list_deliveries() if d.status in ("failed", "pending", "claimed")]
    reloads = _config_reloads(rt.store, config)
    if as_json:
        for h in health:
            h.last_error = redact(h.last_error) if h.last_error else h.last_error
        print(json.dumps({"pipeline": pipeline.to_dict(), "silences": silences, "sources": [h.to_dict() for h in health],
                          "verdicts": verdicts, "open_incidents": incidents,
                          "deliveries_not_sent": [_delivery_json(d) for d in unsent], "config_reloads": reloads}))
        return
    tz = settings.timezone
    out.print(f"now {clock.stamp(now, tz)} ({tz})", markup=False, highlight=False)
    if pipeline.ok:
        out.print(f"[green]pipeline: ok[/] (every heartbeat younger than {pipeline.stale_after:.0f} s)", highlight=False)
    else:
        out.print(f"[bold red]pipeline: STALE[/] (heartbeats older than {pipeline.stale_after:.0f} s count as stale)",
                  highlight=False)
        for line in pipeline.stale:
            out.print(f"  {line}", highlight=False, markup=False)
    for line in _config_reload_lines(reloads):
        out.print(line, highlight=False, soft_wrap=True)
    pt = Table(title=_in_zone("Heartbeats", tz))
    for col in ("component", "last seen"):
        pt.add_column(col)
    _time_column(pt, "at")
    for name, at in pipeline.last_seen.items():
        pt.add_row(name, _ago(at), clock.brief(at, tz) if at is not None else "")
    out.print(pt)
    st = Table(title=_in_zone("Silences", tz))
    for col in ("brand", "until", "by", "reason"):
        st.add_column(col)
    for entry in silences:
        st.add_row(str(entry.get("brand", "")), f"{clock.brief(entry['until'], tz)} ({_ago_until(entry['until'], now)})",
                   str(entry.get("by", "")),
                   str(entry.get("reason", "")))
    if not silences:
        st.add_row("(none)", "", "", "")
    out.print(st)
    table = Table(title="Sources")
    for col in ("brand", "source", "status", "last success", "last error", "polls", "requests"):
        table.add_column(col)
    for h in sorted(health, key=lambda h: (h.brand, h.source)):
        style = {"ok": "green", "degraded": "yellow", "failing": "red", "disabled": "bold red"}.get(h.status, "")
        table.add_row(
            h.brand, h.source, f"[{style}]{h.status}[/]" if style else h.status, _ago(h.last_success),
            redact(h.last_error or "")[:80], str(h.polls), str(h.requests),
        )
    out.print(table)
    vt = Table(title="Brands")
    for col in ("brand", "observed", "expected", "score", "severity", "open incident"):
        vt.add_column(col)
    for b in settings.brands:
        v = verdicts.get(b.name) or {}
        inc = open_incidents.get(b.name)
        vt.add_row(
            b.name, f"{v.get('observed', 0):.0f}", f"{v.get('expected', 0):.1f}", f"{v.get('score', 0):.2f}",
            v.get("severity", "-"), inc["id"] if inc else "",
        )
    out.print(vt)
    failed = [d for d in unsent if d.status == "failed"]
    if failed:
        ft = Table(title="[bold red]Failed deliveries[/]")
        for col in ("incident", "transition", "channel", "attempts", "error"):
            ft.add_column(col)
        for d in failed:
            ft.add_row(_plain(d.incident), f"{d.transition} {d.event or ''}", _plain(d.channel), str(d.attempts),
                       _plain((d.error or "")[:200]))
        out.print(ft)
    waiting = len(unsent) - len(failed)
    if waiting:
        out.print(f"{waiting} deliveries pending or being sent (see `surgewatch deliveries`)", highlight=False)


def _config_reloads(store, config: Path) -> list[dict]:
    """Each process's last look at a changed config file, newest first, with ``current``: whether it
    is the file as it is now."""
    import hashlib

    from surgewatch.store.keys import CONFIG_RELOAD_PREFIX

    try:
        digest = hashlib.sha256(config.read_bytes()).hexdigest()
    except OSError:
        digest = None
    reloads = [dict(state) for state in store.list_state(CONFIG_RELOAD_PREFIX).values()]
    for state in reloads:
        # None: another file (status was given a different -c than the processes run on)
        same_file = str(state.get("path")) == str(config.resolve())
        state["current"] = (digest is not None and state.get("digest") == digest) if same_file else None
        if state.get("error"):
            state["error"] = redact(state["error"])
    return sorted(reloads, key=lambda r: -float(r.get("at") or 0))


def _config_reload_lines(reloads: list[dict]) -> list[str]:
    from rich.markup import escape

    lines = []
    for r in reloads:
        who = escape(str(r.get("process", "?")))
        if r.get("ok"):
            what = "back to the running version after a refused change" if r.get("reverted") else (
                f"config reloaded ({r.get('brands')} brands; sources {', '.join(r.get('sources') or []) or 'none'})")
            line = f"[green]config[/]: {what} {_ago(r.get('at'))} by {who}"
            if r.get("restart_needed"):
                line += f"; [yellow]{escape(', '.join(r['restart_needed']))} changed: takes effect only after a restart[/]"
            for warning in r.get("warnings") or []:
                line += f"; [yellow]{escape(redact(warning))}[/]"
        else:
            line = (f"[bold red]config change refused[/] {_ago(r.get('at'))} by {who}: {escape(str(r.get('error')))}; "
                    "the previous config still runs")
        if r.get("current") is False:
            from surgewatch.worker.reload import CHECK_SECONDS

            line += f" [yellow](the file has changed since: the processes look at it every {CHECK_SECONDS:.0f} s)[/]"
        elif r.get("current") is None:
            line += f" (file {escape(str(r.get('path')))})"
        lines.append(line)
    return lines


def _time_column(table: Table, title: str) -> None:
    """A column of :func:`surgewatch.clock.brief` times (the table's title names the zone), never
    cut short: a narrow terminal squeezes the other columns instead."""
    table.add_column(title, min_width=16, no_wrap=True)


def _in_zone(title: str, tz: str) -> str:
    return f"{title} (times in {tz})"


def _plain(text: str) -> str:
    """Outside text (a service's error, a channel name) shown literally, never as Rich markup."""
    from rich.markup import escape

    return escape(text)


def _delivery_json(d) -> dict:
    """One delivery-log record for ``--json`` output: the log's fields plus its key."""
    return {"key": d.key, **d.to_dict()}


@app.command()
def deliveries(
    config: Path = ConfigOption,
    incident: Optional[str] = typer.Option(None, "--incident", "-i", help="Only this incident's deliveries."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """The delivery log: what became of every incident transition on every channel (pending, sent,
    failed, superseded, suppressed), with attempts, receipts and the service's own error."""
    settings = load_or_exit(config)
    from surgewatch.cli.common import open_store_or_exit
    from surgewatch.clock import brief
    from surgewatch.store import StoreError

    store = open_store_or_exit(settings)
    try:
        items = store.list_deliveries(incident)
    except StoreError as exc:
        raise fail(str(exc)) from None
    if as_json:
        for d in items:
            print(json.dumps(_delivery_json(d)))
        return
    if not items:
        out.print("No deliveries recorded" + (f" for incident {incident}" if incident else "") + ".", markup=False)
        return
    table = Table(title=_in_zone("Deliveries", settings.timezone))
    for col in ("incident", "transition", "channel", "status", "attempts"):
        table.add_column(col)
    _time_column(table, "at")
    for col in ("receipt", "error / reason"):
        table.add_column(col)
    style = {"sent": "green", "failed": "bold red", "pending": "yellow", "claimed": "yellow"}
    for d in items:
        when = d.sent_at if d.sent_at is not None else d.updated_at
        note = d.error if d.status in ("failed", "pending", "claimed") else (d.reason or "")
        if d.status == "pending" and d.next_attempt_at is not None:
            note = f"{note or ''} (next attempt {brief(d.next_attempt_at, settings.timezone)})".strip()
        st = style.get(d.status)
        table.add_row(_plain(d.incident), f"{d.transition} {d.event or ''}", _plain(d.channel),
                      f"[{st}]{d.status}[/]" if st else d.status, str(d.attempts),
                      brief(when, settings.timezone) if when else "",
                      _plain(_receipt_text(d.receipt)), _plain((note or "")[:200]))
    out.print(table)
    counts: dict[str, int] = {}
    for d in items:
        counts[d.status] = counts.get(d.status, 0) + 1
    out.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())), highlight=False)


def _receipt_text(receipt: dict | None) -> str:
    if not receipt:
        return ""
    parts = []
    for audience in ("marketing", "ops"):
        entry = receipt.get(audience)
        if isinstance(entry, dict) and entry.get("channel"):
            parts.append(f"{audience} {entry['channel']} ts {entry.get('ts')}")
    if receipt.get("dedup_key"):
        parts.append(f"dedup_key {receipt['dedup_key']}")
    if receipt.get("status") is not None:
        parts.append(f"HTTP {receipt['status']}")
    if receipt.get("dry_run"):
        parts.append("dry run")
    if receipt.get("skipped"):
        parts.append(f"skipped: {receipt['skipped']}")
    return "; ".join(str(p) for p in parts)


def _ago_until(until: float, now: float) -> str:
    seconds = max(0.0, until - now)
    if seconds < 7200:
        return f"{seconds / 60:.0f} min more"
    return f"{seconds / 3600:.1f} h more"


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    from surgewatch import clock

    seconds = max(0, clock.now() - ts)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


@app.command()
def fetch(
    source: str = typer.Argument(..., help="Source name as in the config (rss, x, reddit, ...)."),
    brand: str = typer.Option(..., "--brand", "-b", help="Brand name as in the config."),
    config: Path = ConfigOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per mention."),
) -> None:
    """Poll one source once for one brand and print everything it returned: what counts, and what
    was skipped with the reason (older than the look-back, already taken, no match).  Stored
    cursors are not touched."""
    settings = load_or_exit(config)
    from surgewatch.collectors.base import SourceError, fetch_checked, scrub, source_message
    from surgewatch import clock
    from surgewatch.pipeline import Runtime, admit
    from surgewatch.registry import MissingCredential

    if getattr(settings.sources, source, None) is None:
        raise fail(f"source {source!r} is not configured (configured: {', '.join(settings.sources.enabled()) or 'none'})")
    rt = Runtime(settings)
    try:
        spec = rt.brand_spec(brand)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    try:
        collector = rt.collector(source)
    except (SourceError, MissingCredential) as exc:
        raise fail(source_message(source, str(exc))) from None
    try:
        # No cursor: a fresh poll shows everything the source has now, and nothing stored moves.
        batch = fetch_checked(collector, spec, None)
    except SourceError as exc:  # every failure of the poll (fetch_checked): one line naming the source
        raise fail(source_message(source, scrub(str(exc)))) from None
    tz = settings.timezone
    from datetime import datetime, timezone

    from surgewatch.notifier.escape import log_text

    kept, skipped = admit(batch.mentions, clock.now(), tz)
    epoch = datetime.fromtimestamp(0, timezone.utc)
    rows = [(m.created_at, m.to_dict(), None) for m in kept]
    rows += [(m.created_at, m.to_dict(), reason) for m, reason in skipped]
    # What the collector itself did not take (older than the look-back, already taken, no match).
    rows += [(s.created_at or epoch, {"source": s.source, "id": s.id, "brand": spec.name, "text": s.text,
                                      "url": s.url, "created_at": s.created_at.isoformat() if s.created_at else None},
              s.reason) for s in batch.skipped]
    rows.sort(key=lambda r: r[0], reverse=True)
    if rows and not as_json:
        out.print(f"times in {tz}", markup=False, highlight=False)
    for when, d, reason in rows:
        if as_json:
            if reason:
                d["skipped"] = reason
            print(json.dumps(d, ensure_ascii=False))
        else:
            tag = f" [skipped: {reason}]" if reason else ""
            stamp = clock.brief(when, tz) if when is not epoch else "(no time)       "
            out.print(f"{stamp} {d['source']}:{log_text(d['id'])} {log_text(d['text'])[:120]} "
                      f"{log_text(d['url'] or '')}{tag}", markup=False, highlight=False, soft_wrap=True)
    for note in batch.notes:
        err.print(f"note: {log_text(note, 500)}", markup=False, highlight=False)
    if not as_json:
        out.print(f"{len(kept)} matching, {len(skipped) + len(batch.skipped)} skipped", highlight=False)


@app.command()
def incidents(
    config: Path = ConfigOption,
    brand: Optional[str] = typer.Option(None, "--brand", "-b", help="Only this brand."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List incidents, newest first."""
    settings = load_or_exit(config)
    from surgewatch.pipeline import Runtime

    items = Runtime(settings).store.list_incidents(brand=brand)
    if as_json:
        print(json.dumps(items))
        return
    from surgewatch.clock import brief

    tz = settings.timezone
    table = Table(title=_in_zone("Incidents", tz))
    # the id whole too: it is what `surgewatch ack` and `review` take
    table.add_column("id", min_width=min(40, max((len(i["id"]) for i in items), default=2)), no_wrap=True)
    for col in ("brand", "status", "severity"):
        table.add_column(col)
    _time_column(table, "opened")
    _time_column(table, "resolved")
    table.add_column("transitions")
    for i in items:
        table.add_row(i["id"], i["brand"], i["status"], i["severity"], brief(i["opened_at"], tz),
                      brief(i["resolved_at"], tz) if i.get("resolved_at") else "", str(len(i["transitions"])))
    out.print(table)


def _operator_name(who: Optional[str]) -> str:
    import getpass

    return who or os.environ.get("USER") or getpass.getuser()


@app.command()
def ack(
    incident_id: str = typer.Argument(..., help="Incident id (see `surgewatch incidents`)."),
    config: Path = ConfigOption,
    by: Optional[str] = typer.Option(None, "--by", help="Who acknowledges (default: $USER)."),
) -> None:
    """Acknowledge an incident: stops escalation and acknowledges the PagerDuty alert if it paged."""
    settings = load_or_exit(config)
    from surgewatch import clock
    from surgewatch.actions import operator
    from surgewatch.pipeline import Runtime

    try:
        result = operator.acknowledge(Runtime(settings), incident_id, _operator_name(by), clock.now())
    except operator.OperatorError as exc:
        raise fail(str(exc)) from None
    if result.already:
        out.print(f"{incident_id} was already acknowledged by {result.incident['acked_by']}", markup=False)
    else:
        out.print(f"{incident_id} acknowledged by {result.incident['acked_by']}; pager: {result.pager}", markup=False)


@app.command("false-alarm")
def false_alarm(
    incident_id: str = typer.Argument(..., help="Incident id."),
    config: Path = ConfigOption,
    by: Optional[str] = typer.Option(None, "--by", help="Who says so (default: $USER)."),
    note: str = typer.Option("", "--note", help="Why it was not a real surge."),
) -> None:
    """Mark an incident as a false alarm (feedback for the detector review and the weekly digest)."""
    settings = load_or_exit(config)
    from surgewatch import clock
    from surgewatch.actions import operator
    from surgewatch.pipeline import Runtime

    try:
        operator.mark_false_alarm(Runtime(settings), incident_id, _operator_name(by), clock.now(), note)
    except operator.OperatorError as exc:
        raise fail(str(exc)) from None
    out.print(f"{incident_id} marked as a false alarm", markup=False)


@app.command()
def silence(
    brand: str = typer.Argument(..., help="Brand name."),
    config: Path = ConfigOption,
    duration: str = typer.Option("1h", "--for", help="How long: 30m, 2h, 1d, 1h30m."),
    reason: str = typer.Option("", "--reason", help="Why (shown in status and the digest)."),
    by: Optional[str] = typer.Option(None, "--by", help="Who silences (default: $USER)."),
    off: bool = typer.Option(False, "--off", help="Remove the brand's silence."),
) -> None:
    """Mute a brand's notifications for a while (incidents are still recorded)."""
    settings = load_or_exit(config)
    from surgewatch import clock
    from surgewatch.actions import operator
    from surgewatch.pipeline import Runtime

    rt = Runtime(settings)
    try:
        if off:
            operator.unsilence(rt, brand)
            out.print(f"{brand}: silence removed", markup=False)
            return
        entry = operator.silence(rt, brand, operator.parse_duration(duration), _operator_name(by), reason, clock.now())
    except (operator.OperatorError, KeyError) as exc:
        raise fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)) from None
    out.print(f"{entry['brand']} silenced until {clock.stamp(entry['until'], settings.timezone)} by {entry['by']}", markup=False)


@app.command("traffic-model")
def traffic_model(
    brand: str = typer.Argument(..., help="The brand whose site traffic model to show."),
    config: Path = ConfigOption,
    refit: bool = typer.Option(False, "--refit", help="Fit from the history now instead of using the cached model."),
    as_json: bool = typer.Option(False, "--json", help="Print the model as JSON."),
) -> None:
    """How the brand's mentions have moved its site's traffic: the calibration behind "about 6x normal
    traffic in ~25 min", fitted on the brand's traffic history and stored mention counts."""
    settings = load_or_exit(config)
    from surgewatch.detector.traffic import predict_traffic
    from surgewatch.notifier.base import human_multiple, human_rpm, human_when
    from surgewatch import clock
    from surgewatch.pipeline import Runtime
    from surgewatch.traffic import TrafficHistoryError, brand_model, fit_brand

    rt = Runtime(settings)
    try:
        cfg = rt.brand(brand)
    except KeyError as exc:
        raise fail(str(exc.args[0]))
    if cfg.traffic is None:
        raise fail(f"brand {cfg.name!r} has no traffic: setting (a CSV or a Prometheus query of its site's requests/min)")
    now = clock.now()
    try:
        model = fit_brand(rt, cfg, now) if refit else brand_model(rt, cfg, now)
    except TrafficHistoryError as exc:
        raise fail(f"site traffic history of {cfg.name}: {exc}")
    if model is None:
        state = rt.store.get_state(f"traffic-model:{cfg.name}") or {}
        raise fail(f"no traffic model for {cfg.name}: {state.get('error') or 'the history could not be read'}")
    if as_json:
        print(json.dumps(model.to_dict()))
        return
    normal = model.normal_at(now)
    out.print(f"[bold]{cfg.name}[/]: {model.basis()}")
    out.print(f"  normal site traffic now: ~{human_rpm(normal)} req/min ({model.traffic_days:.0f} days of traffic history)")
    if not model.calibrated:
        return
    out.print(f"  elasticity {model.elasticity:.2f}: traffic multiple = mention multiple ^ {model.elasticity:.2f}")
    out.print(f"  traffic peaks ~{model.lag_seconds / 60:.0f} min after mentions (past surges: "
              + ", ".join(f"{lag / 60:.0f}" for lag in model.surge_lags) + " min)")
    # examples at the brand's own normal mention rate (the latest verdict's), which matters at low counts
    expected = (rt.store.get_state(verdict_key(cfg.name)) or {}).get("expected")
    per_min = expected * 60 / settings.detector.bucket_seconds if expected else 1.0
    for ratio in (5, 25):
        p = predict_traffic(model, mention_peak_per_min=ratio * per_min, mention_normal_per_min=per_min,
                            seconds_to_mention_peak=0.0, at=now)
        out.print(f"  mentions at {ratio}x normal peaking now -> about {human_multiple(p.multiple or 1.0)} normal traffic"
                  f" (~{human_rpm(p.peak_rpm)} req/min) {human_when(p.seconds_to_peak)}"
                  + (" (bigger than any past surge)" if p.beyond_history else ""))


@app.command()
def backtest(
    data_dir: Path = typer.Argument(..., help="NAB-format data folder (category folders of timestamp,value CSVs)."),
    labels: Path = typer.Option(..., "--labels", help="NAB windows JSON (combined_windows.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
    nab_results: Optional[Path] = typer.Option(None, "--nab-results", help="Write NAB's results layout here."),
    thin: Optional[float] = typer.Option(
        None, "--thin", min=0.0, max=1.0,
        help="Replay count series as a smaller brand: keep each mention with this probability (e.g. 0.25)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of --thin."),
    nested: bool = typer.Option(
        True, "--nested/--in-sample-only",
        help="Also score out of sample: nested leave-2-series-out and a time split, each choosing the design and the "
             "threshold without the data it scores (realTweets; runs every design, about 10x slower)."),
) -> None:
    """Run the detector over NAB series and score it with NAB's published scoring, out of sample and in-sample."""
    from surgewatch.backtest.replay import DESIGNS, render_report, run_backtest

    if not data_dir.is_dir():
        raise fail(f"{data_dir} is not a folder")
    if not labels.is_file():
        raise fail(f"{labels}: labels file not found")
    if thin is not None and thin <= 0:
        raise fail("--thin must be above 0 (the share of mentions kept)")
    result = run_backtest(data_dir, labels, nab_results=nab_results, progress=sys.stderr.isatty(), thin=thin, seed=seed,
                          designs=DESIGNS if nested else None)
    print(render_report(result))
    if as_json:
        print(json.dumps(result))


@app.command()
def demo(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Use the channels of this config (e.g. local fakes)."),
    seconds: float = typer.Option(38.0, help="Real seconds the simulated day should take."),
    keep: Path = typer.Option(Path("surgewatch-demo"), "--keep", help="Folder for the demo's store, config and logs."),
    temporary: bool = typer.Option(False, "--temporary", help="Use a temporary folder and delete it afterwards."),
) -> None:
    """Run the whole pipeline against a simulated world: a local feed server serves a scripted day
    (quiet, then a ticket-launch surge), the real collector and Celery tasks run on the embedded
    default with an accelerated clock, and the alert timeline is printed."""
    from surgewatch.demo.run import run_demo

    extra = load_or_exit(config) if config else None
    code = run_demo(as_json=as_json, channels_from=extra, real_seconds=seconds, keep=None if temporary else keep)
    raise typer.Exit(code)


@app.command()
def metrics(
    config: Path = ConfigOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(9464, "--port", "-p", min=0, max=65535, help="Port to listen on."),
) -> None:
    """Serve the dashboard (/), Prometheus /metrics and the /healthz check, read from the store (no Celery needed)."""
    settings = load_or_exit(config)
    from surgewatch.ops.server import make_server

    try:
        server = make_server(settings, host, port)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except ValueError as exc:  # the dashboard's auth asked for a password the environment lacks
        raise fail(str(exc)) from None
    from surgewatch.worker.reload import ConfigWatcher

    server.config_watcher = ConfigWatcher(config, settings, who="metrics")  # brands added later are watched too
    err.print(f"serving the dashboard at http://{host}:{server.port}/, /metrics and /healthz", markup=False,
              highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command("slack-listener")
def slack_listener(config: Path = ConfigOption) -> None:
    """Listen for the Acknowledge / Silence 1 h / False alarm / Run buttons over Slack Socket Mode."""
    settings = load_or_exit(config)
    from surgewatch import logs
    from surgewatch.actions.slack_listener import ListenerError, run_listener

    logs.setup("INFO")  # it runs for days: say what it does (tokens redacted)
    try:
        run_listener(settings)
    except ListenerError as exc:
        raise fail(str(exc)) from None


from surgewatch.cli.reports import digest as digest_command  # noqa: E402
from surgewatch.cli.reports import review as review_command  # noqa: E402

app.command("digest")(digest_command)
app.command("review")(review_command)


def main() -> None:
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    from surgewatch import logs

    # Every command logs through the redacting handler (worker and beat replace the level through
    # Celery's setup_logging); the long-running metrics and slack-listener servers log at INFO.
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    default = "INFO" if command in ("metrics", "slack-listener") else "WARNING"
    logs.setup(os.environ.get("SURGEWATCH_LOG_LEVEL") or default)
    try:
        app()
    except (KeyboardInterrupt, BrokenPipeError):
        raise SystemExit(130)
    except SystemExit:
        raise
    except Exception as exc:  # the last resort: one line, not a traceback (unless --debug)
        if debug:
            raise
        err.print(redact(f"error: {exc.__class__.__name__}: {exc}"), markup=False, highlight=False)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
