"""`surgewatch fetch` and `surgewatch status`, as a user runs them (real subprocesses)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from surgewatch import pipeline
from surgewatch.demo.feedserver import FeedServer
from surgewatch.pipeline import Runtime
from tests.support import write_config


def cli(*args, config):
    return subprocess.run([sys.executable, "-m", "surgewatch.cli.main", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_fetch_prints_every_match_with_json_and_marks_what_would_be_skipped(tmp_path):
    now = datetime.now(timezone.utc)
    items = [
        {"id": "new", "title": "Acme Live tickets 🎟️", "link": "https://n.example/1", "published": now - timedelta(minutes=5)},
        {"id": "old", "title": "Acme Live last year", "link": "https://n.example/2", "published": now - timedelta(days=5)},
        {"id": "no", "title": "Acme jobs fair", "link": "https://n.example/3", "published": now},
    ]
    with FeedServer() as feed:
        feed.route("/f.rss", items=items)
        path, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": '"Acme Live" -jobs'}],
            "sources": {"rss": {"feeds": [feed.url("/f.rss")]}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        proc = cli("fetch", "rss", "--brand", "acme", "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    # Everything the feed returned, newest first, each skipped item with its reason.
    assert [r["text"].split()[0:2] for r in rows] == [["Acme", "jobs"], ["Acme", "Live"], ["Acme", "Live"]]
    assert all({"id", "source", "text", "url", "created_at"} <= set(r) for r in rows)
    assert "does not match" in rows[0]["skipped"]
    assert "skipped" not in rows[1] and "too old" in rows[2]["skipped"]
    assert Runtime(settings).store.get_cursor("rss", "Acme") is None  # fetch never moves a cursor


def test_fetch_names_an_unconfigured_source_and_an_unknown_brand(tmp_path):
    path, _ = write_config(tmp_path, {"brands": [{"name": "Acme", "query": "acme"}],
                                      "sources": {"rss": {"feeds": ["http://127.0.0.1:9/f.rss"]}}})
    proc = cli("fetch", "x", "--brand", "Acme", config=path)
    assert proc.returncode == 1 and "source 'x' is not configured" in proc.stderr
    proc = cli("fetch", "rss", "--brand", "Nope", config=path)
    assert proc.returncode == 1 and "no brand named 'Nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_status_shows_source_health_and_the_latest_verdict(tmp_path):
    with FeedServer() as feed:
        feed.route("/f.rss", status=500)
        path, settings = write_config(tmp_path, {
            "brands": [{"name": "Acme", "query": "acme"}],
            "sources": {"rss": {"feeds": [feed.url("/f.rss")]}},
            "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
        pipeline.collect(Runtime(settings), "rss", "Acme", now=time.time())
    proc = cli("status", "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    [src] = data["sources"]
    assert src["source"] == "rss" and src["status"] == "degraded" and "500" in src["last_error"]
    table = cli("status", config=path)
    assert "degraded" in table.stdout and "Acme" in table.stdout


def test_status_shows_what_is_stale_and_the_active_silences(tmp_path):
    from surgewatch.actions import operator

    path, settings = write_config(tmp_path, {
        "brands": [{"name": "Acme", "query": "acme"}, {"name": "Bolt", "query": "bolt"}],
        "sources": {"hackernews": {"interval": 60}},
        "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"}})
    rt = Runtime(settings)
    now = time.time()
    data = json.loads(cli("status", "--json", config=path).stdout)
    assert data["pipeline"]["ok"] is False and data["pipeline"]["stale"][0].startswith("nothing has run yet")

    for name in ("worker:collect", "worker:detect", "worker:notify", "evaluate:evaluate-acme-2"):
        rt.store.heartbeat(name, now - 10)
    rt.store.heartbeat("beat", now - 400)  # stale after 3 x 60 s
    operator.silence(rt, "Bolt", 3600, "ana", "planned launch", now)
    operator.silence(rt, "Acme", 60, "ana", "long over", now - 120)
    proc = cli("status", "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["pipeline"]["ok"] is False
    [line] = data["pipeline"]["stale"]
    assert line.startswith("beat: last seen 4") and line.endswith("(stale after 180 s)")
    assert [(s["brand"], s["by"], s["reason"]) for s in data["silences"]] == [("Bolt", "ana", "planned launch")]

    table = cli("status", config=path).stdout
    assert "pipeline: STALE" in table and "beat: last seen" in table
    assert "Silences" in table and "planned launch" in table and "long over" not in table


def test_every_command_answers_h_and_flags_show_no_type() -> None:
    from typer.testing import CliRunner

    from surgewatch.cli.main import app

    runner = CliRunner()
    top = runner.invoke(app, ["-h"])
    assert top.exit_code == 0 and "check-config" in top.output
    version = runner.invoke(app, ["--version"])
    from surgewatch import __version__

    assert version.exit_code == 0 and version.output.strip() == f"surgewatch {__version__}"
    names = re.findall(r"^  ([a-z][a-z-]+)\s", top.output.split("Commands:")[1], re.M)
    assert {"run", "status", "digest", "deliveries", "metrics", "check-config"} <= set(names)
    for name in names:
        result = runner.invoke(app, [name, "-h"])
        assert result.exit_code == 0, name
        assert "<bool>" not in result.output, name  # a flag is a flag, not a value to type
