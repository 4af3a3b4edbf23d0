"""`surgewatch fetch` and `surgewatch status`, as a user runs them (real subprocesses)."""
from __future__ import annotations

import json
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
