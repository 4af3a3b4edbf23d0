"""Config reload without a restart: the watcher (changed, touched, refused once, fixed, reverted),
the store record `status` shows, both beat schedulers replacing their schedule (Celery's
PersistentScheduler on a real shelve file, RedBeat on a real Redis), and a real `surgewatch run`
taking up a second brand and dropping it again."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
import yaml
from celery import Celery

from surgewatch.store.keys import config_reload_key
from surgewatch.store.sqlite import SqliteStore
from surgewatch.worker import reload
from surgewatch.worker.reload import ConfigWatcher, apply_live, load_with_digest, process_name, record
from surgewatch.worker.settings import build


def _config(tmp_path: Path, brands: list[str], **extra) -> dict:
    data = {
        "brands": [{"name": b, "query": b.lower()} for b in brands],
        "store": {"url": f"sqlite:///{tmp_path / 'sw.db'}"},
        "broker": {"url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"},
        "digest": {"enabled": False},
    }
    data.update(extra)
    return data


def _write(path: Path, data: dict | str) -> None:
    """Replace the file as an editor or a deploy would: write aside, then rename over it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


@pytest.fixture
def watched(tmp_path):
    path = tmp_path / "config.yaml"
    _write(path, _config(tmp_path, ["Acme"]))
    settings, digest = load_with_digest(path)
    return path, ConfigWatcher(path, settings, check_seconds=0, digest=digest)


# -- the watcher ----------------------------------------------------------------------------------
def test_a_changed_file_gives_the_new_settings(watched, tmp_path):
    path, watcher = watched
    assert watcher.changed() is None  # nothing changed yet
    _write(path, _config(tmp_path, ["Acme", "Beta"]))
    new = watcher.changed()
    assert new is not None and [b.name for b in new.brands] == ["Acme", "Beta"]
    assert watcher.settings is new
    assert watcher.changed() is None  # said once


def test_a_touched_file_with_the_same_content_is_not_a_change(watched):
    path, watcher = watched
    text = path.read_text()
    _write(path, text)  # a new inode and mtime, the same bytes
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert watcher.check() is None
    assert watcher.last_error is None


def test_an_invalid_file_is_refused_once_recorded_and_a_later_fix_is_taken(watched, tmp_path, caplog):
    path, watcher = watched
    store = SqliteStore(str(tmp_path / "sw.db"))
    running = watcher.settings
    bad = _config(tmp_path, ["Acme"])
    bad["brands"].append({"name": "Beta"})  # no query
    bad["sources"] = {"rss": {"feeds": ["ftp://not-http"], "interval": "often"}}
    _write(path, bad)
    with caplog.at_level(logging.ERROR, logger="surgewatch.worker.reload"):
        attempt = watcher.check()
        assert attempt is not None and attempt.ok is False
        record(store, "worker", path, attempt)
        os.utime(path, (time.time() + 5, time.time() + 5))  # touched again: not said again
        assert watcher.check() is None
    refusals = [r for r in caplog.records if "not valid" in r.getMessage()]
    assert len(refusals) == 1
    # every error with its key path, in the log, the watcher and the store
    for expected in ("brands[1].query: field required", "sources.rss.feeds", "sources.rss.interval"):
        assert expected in refusals[0].getMessage() and expected in watcher.last_error
    assert watcher.settings is running
    state = store.get_state(config_reload_key(process_name("worker")))
    assert state["ok"] is False and "brands[1].query: field required" in state["error"]
    assert state["path"] == str(path)

    fixed = _config(tmp_path, ["Acme", "Beta"])
    _write(path, fixed)
    attempt = watcher.check()
    assert attempt is not None and attempt.ok and [b.name for b in attempt.settings.brands] == ["Acme", "Beta"]
    assert watcher.last_error is None
    record(store, "worker", path, attempt)
    state = store.get_state(config_reload_key(process_name("worker")))
    assert state["ok"] is True and state["error"] is None and state["brands"] == 2


def test_going_back_to_the_running_file_after_a_refusal_clears_the_refusal(watched):
    path, watcher = watched
    good = path.read_text()
    _write(path, "brands: [{name: Acme}]\n")
    assert watcher.check().ok is False
    _write(path, good)
    attempt = watcher.check()
    assert attempt is not None and attempt.ok and attempt.reverted
    assert watcher.changed() is None and watcher.last_error is None and watcher.refused is None


def test_a_removed_file_is_refused_and_the_running_config_stays(watched):
    path, watcher = watched
    running = watcher.settings
    path.unlink()
    attempt = watcher.check()
    assert attempt is not None and not attempt.ok and "cannot read" in attempt.error
    assert watcher.settings is running


def test_the_file_is_looked_at_at_most_every_check_seconds(watched, tmp_path):
    path, watcher = watched
    watcher.check_seconds = 3600
    watcher._checked_at = time.monotonic()
    _write(path, _config(tmp_path, ["Acme", "Beta"]))
    assert watcher.check() is None  # not yet
    assert watcher.check(force=True).ok


def test_a_new_store_url_waits_for_a_restart_and_the_rest_is_taken(watched, tmp_path):
    path, watcher = watched
    running = watcher.settings
    _write(path, _config(tmp_path, ["Acme", "Beta"], store={"url": f"sqlite:///{tmp_path / 'other.db'}"},
                         detector={"bucket_seconds": 30}))
    attempt = watcher.check()
    assert attempt.ok and attempt.restart_needed == ["store.url", "detector.bucket_seconds"]
    assert attempt.settings.store == running.store
    assert attempt.settings.detector.bucket_seconds == running.detector.bucket_seconds
    assert [b.name for b in attempt.settings.brands] == ["Acme", "Beta"]
    assert apply_live(running, running) == (running, [])


# -- the schedulers -------------------------------------------------------------------------------
def _rss(feeds: list[str]) -> dict:
    return {"rss": {"feeds": feeds, "interval": 30}}


@pytest.fixture
def config_env(tmp_path, monkeypatch):
    """A config file the process follows (SURGEWATCH_CONFIG), read fresh by this test."""
    path = tmp_path / "config.yaml"
    _write(path, _config(tmp_path, ["Acme"], sources=_rss(["http://127.0.0.1:9/a.rss"])))
    monkeypatch.setenv("SURGEWATCH_CONFIG", str(path))
    monkeypatch.setattr(reload, "_startup", {})
    monkeypatch.setattr(reload, "CHECK_SECONDS", 0.0)
    return path


def _collect_entries(names) -> set[str]:
    return {n for n in names if n.startswith("collect-")}


def test_the_embedded_beat_schedule_follows_the_config(config_env, tmp_path):
    from surgewatch.worker.reload import ReloadingScheduler

    settings, _ = reload.startup(str(config_env))
    app = Celery("reload-test")
    app.conf.update(build(settings))
    assert app.conf.beat_scheduler == "surgewatch.worker.reload:ReloadingScheduler"
    scheduler = ReloadingScheduler(app=app, schedule_filename=str(tmp_path / "beat-schedule"))
    try:
        scheduler.tick()
        assert _collect_entries(scheduler.schedule) == {"collect-rss-acme"}
        before = scheduler.schedule["collect-rss-acme"].last_run_at

        _write(config_env, _config(tmp_path, ["Acme", "Beta"], sources=_rss(["http://127.0.0.1:9/a.rss"])))
        scheduler.tick()
        assert _collect_entries(scheduler.schedule) == {"collect-rss-acme", "collect-rss-beta"}
        assert "evaluate-acme-2" in scheduler.schedule
        assert scheduler.schedule["collect-rss-acme"].last_run_at == before  # kept, not reset
        assert [e[2].name for e in scheduler._heap if e[2].name == "collect-rss-beta"]  # in the heap: it runs

        _write(config_env, _config(tmp_path, ["Beta"], sources=_rss(["http://127.0.0.1:9/a.rss"])))
        scheduler.tick()
        assert _collect_entries(scheduler.schedule) == {"collect-rss-beta"}
        assert "collect-rss-acme" not in {e[2].name for e in scheduler._heap}
        state = SqliteStore(str(tmp_path / "sw.db")).get_state(config_reload_key(process_name("beat")))
        assert state["ok"] is True and state["brands"] == 1
    finally:
        scheduler.close()
    # the shelve file holds the new schedule: a restarted beat does not bring Acme back
    reopened = ReloadingScheduler(app=app, schedule_filename=str(tmp_path / "beat-schedule"))
    try:
        app.conf.beat_schedule = build(reload.load_with_digest(config_env)[0])["beat_schedule"]
        reopened.setup_schedule()
        assert _collect_entries(reopened.schedule) == {"collect-rss-beta"}
    finally:
        reopened.close()


@pytest.mark.redis
def test_the_redbeat_schedule_follows_the_config(config_env, tmp_path, redis_url):
    from redbeat.decoder import RedBeatJSONEncoder

    from surgewatch.worker.beat import ResilientRedBeatScheduler

    data = _config(tmp_path, ["Acme"], sources=_rss(["http://127.0.0.1:9/a.rss"]), broker={"url": redis_url})
    _write(config_env, data)
    settings, _ = reload.startup(str(config_env))
    app = Celery("redbeat-reload-test")
    app.conf.update(build(settings))
    prefix = f"swtest:{uuid.uuid4().hex[:12]}:redbeat:"
    app.conf.redbeat_key_prefix = prefix
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        scheduler = ResilientRedBeatScheduler(app=app)  # installs the startup schedule in Redis
        assert client.exists(prefix + "collect-rss-acme")
        ran = json.dumps({"last_run_at": datetime(2026, 12, 1, tzinfo=timezone.utc)}, cls=RedBeatJSONEncoder)
        client.hset(prefix + "collect-rss-acme", "meta", ran)

        data["brands"].append({"name": "Beta", "query": "beta"})
        _write(config_env, data)
        scheduler.follow_config()
        assert client.exists(prefix + "collect-rss-beta")
        assert client.zscore(prefix + ":schedule", prefix + "collect-rss-beta") is not None
        assert client.hget(prefix + "collect-rss-acme", "meta") == ran  # when it last ran: kept
        assert "collect-rss-beta" in client.smembers(prefix + ":statics")

        data["brands"] = [{"name": "Beta", "query": "beta"}]
        _write(config_env, data)
        scheduler.follow_config()
        assert not client.exists(prefix + "collect-rss-acme")
        assert client.zscore(prefix + ":schedule", prefix + "collect-rss-acme") is None
        assert "collect-rss-acme" not in client.smembers(prefix + ":statics")
        assert client.exists(prefix + "collect-rss-beta")
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


# -- the command ----------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "surgewatch.cli.main", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SURGEWATCH_CONFIG": ""})


def test_reload_checks_the_file_like_check_config_and_signals_nothing(tmp_path):
    path = tmp_path / "config.yaml"
    _write(path, "brands: [{name: Acme}]\n")
    bad, check = _cli("reload", "-c", str(path)), _cli("check-config", str(path))
    assert bad.returncode == check.returncode == 1
    assert bad.stderr == check.stderr and "brands[0].query: field required" in bad.stderr
    assert "pick" not in bad.stdout
    _write(path, _config(tmp_path, ["Acme"]))
    good = _cli("reload", "-c", str(path))
    assert good.returncode == 0, good.stderr
    assert "every 10 s" in good.stdout and "Nothing was signalled" in good.stdout


def test_status_says_when_a_change_was_refused_and_when_the_file_changed_since(tmp_path):
    path = tmp_path / "config.yaml"
    _write(path, _config(tmp_path, ["Acme"]))
    settings, digest = load_with_digest(path)
    watcher = ConfigWatcher(path, settings, check_seconds=0, digest=digest)
    store = SqliteStore(str(tmp_path / "sw.db"))
    _write(path, "brands: [{name: Acme}]\n")
    record(store, "beat", path.resolve(), watcher.check())
    store.close()
    _write(path, _config(tmp_path, ["Acme", "Beta"]))  # status needs a valid file; the record is of the bad one
    shown = _cli("status", "-c", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "config change refused" in shown.stdout and "brands[0].query: field required" in shown.stdout
    assert "the file has changed since" in shown.stdout
    as_json = json.loads(_cli("status", "-c", str(path), "--json").stdout)
    (entry,) = as_json["config_reloads"]
    assert entry["ok"] is False and entry["current"] is False and entry["process"] == process_name("beat")


# -- done when: a real `surgewatch run` takes up a brand and drops it, without a restart -------------
def _reloads(path: Path) -> dict[str, dict]:
    """What `status --json` says of each process's last reload.  ``path``: a valid config naming the
    store (status itself refuses to start on a broken file, which is what part of this test writes)."""
    shown = _cli("status", "-c", str(path), "--json")
    assert shown.returncode == 0, shown.stderr
    return {r["process"].split("@")[0]: r for r in json.loads(shown.stdout)["config_reloads"]}


def _wait(predicate, timeout: float, what: str, run) -> float:
    """Seconds until ``predicate()`` held; fails naming ``what``, with the run's log."""
    started = time.monotonic()
    while not predicate():
        assert run.alive(), run.log()[-4000:]
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}\n{run.log()[-6000:]}"
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.mark.slow
def test_a_running_surgewatch_takes_up_a_new_brand_and_drops_it_without_a_restart(tmp_path):
    from datetime import datetime, timezone

    from surgewatch.demo.feedserver import FeedServer
    from surgewatch.ops.health import SourceHealth
    from tests.support import SurgewatchProcess

    def items(word: str) -> list[dict]:
        now = datetime.now(timezone.utc)
        return [{"id": f"{word}-{i}", "title": f"{word} news {i}", "link": f"https://news.example/{word}/{i}",
                 "published": now} for i in range(3)]

    with FeedServer() as feed:
        feed.route("/acme.rss", items("acme"))
        feed.route("/beta.rss", items("beta"))

        def config(brands: list[str], feeds: list[str]) -> dict:
            return _config(tmp_path, brands, sources={"rss": {"feeds": [feed.url(f) for f in feeds], "interval": 2}},
                           channels={"console": {}}, detector={"bucket_seconds": 10}, ops={"stale_after_seconds": 30})

        path, for_status = tmp_path / "config.yaml", tmp_path / "status.yaml"
        _write(path, config(["Acme"], ["/acme.rss"]))
        _write(for_status, config(["Acme"], ["/acme.rss"]))
        store = SqliteStore(str(tmp_path / "sw.db"))

        def health(brand: str) -> SourceHealth:
            return SourceHealth.load(store, "rss", brand)

        run = SurgewatchProcess(["run", "--config", str(path), "--data-dir", str(tmp_path), "--concurrency", "1"],
                                {"SURGEWATCH_CONFIG": str(path)}, tmp_path / "run.log")
        try:
            _wait(lambda: health("Acme").polls >= 2, 120, "Acme polled", run)
            assert health("Beta").polls == 0 and not feed.requests_to("/beta.rss")

            # 1. a second brand with its own feed
            _write(path, config(["Acme", "Beta"], ["/acme.rss", "/beta.rss"]))
            took = _wait(lambda: health("Beta").status == "ok", 60, "Beta polled after the config gained it", run)
            now = time.time()
            counted = _wait(lambda: sum(sum(c.values()) for c in store.counts("Beta", now - 600, now + 600).values()) > 0,
                            60 - took, "Beta's mentions counted", run) + took
            print(f"a brand added to the file: first poll {took:.1f} s later, its mentions counted {counted:.1f} s later")
            reloads = _reloads(for_status)
            assert reloads["beat"]["ok"] and reloads["beat"]["brands"] == 2, reloads
            assert reloads["beat"]["digest"] == load_with_digest(path)[1] and reloads["beat"]["current"] is None

            # 2. a broken file is refused, said in status, and the running config goes on
            _write(path, config(["Acme", "Beta"], ["/acme.rss", "/beta.rss"]) | {"detector": {"bucket_seconds": "x"}})
            refused = _wait(lambda: _reloads(for_status).get("beat", {}).get("ok") is False, 60, "the refusal recorded", run)
            assert "detector.bucket_seconds" in _reloads(for_status)["beat"]["error"]
            polls = health("Beta").polls
            _wait(lambda: health("Beta").polls > polls, 20, "Beta still polled on the running config", run)
            print(f"a broken file: refused and recorded {refused:.1f} s later; the running config kept polling")

            # 3. the brand and its feed removed: its polls stop
            _write(path, config(["Acme"], ["/acme.rss"]))
            digest = load_with_digest(path)[1]
            def switched() -> bool:
                reloads = _reloads(for_status)
                return {"beat", "worker"} <= set(reloads) and all(r["digest"] == digest for r in reloads.values())

            gone = _wait(switched, 60, "worker and beat on the new file", run)
            time.sleep(3)  # a poll already queued or running when they switched
            beta_polls, beta_requests = health("Beta").polls, len(feed.requests_to("/beta.rss"))
            acme_polls = health("Acme").polls
            time.sleep(12)  # six poll intervals
            assert health("Beta").polls == beta_polls
            assert len(feed.requests_to("/beta.rss")) == beta_requests
            assert health("Acme").polls > acme_polls  # Acme is still polled
            print(f"a brand removed from the file: worker and beat on the new file {gone:.1f} s later, "
                  f"then no poll of it for 12 s")
            assert "Traceback" not in run.log(), run.log()[-6000:]
        finally:
            run.stop()
            store.close()


def test_the_ops_server_follows_the_config_so_healthz_expects_the_new_evaluate_ticks(tmp_path):
    import threading
    import urllib.error
    import urllib.request

    from surgewatch.ops.server import make_server
    from surgewatch.worker.settings import prepare_embedded_broker

    path = tmp_path / "config.yaml"
    _write(path, _config(tmp_path, ["Acme"]))
    settings, digest = load_with_digest(path)
    prepare_embedded_broker(settings.broker.url)  # a broker that answers: only the pipeline can be stale
    store = SqliteStore(str(tmp_path / "sw.db"))
    srv = make_server(settings, "127.0.0.1", 0)
    srv.config_watcher = ConfigWatcher(path, settings, check_seconds=0, digest=digest)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()

    def healthz() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        now = time.time()
        # the pipeline after the reload: one evaluate entry for the two brands
        for name in ("beat", "worker:collect", "worker:detect", "worker:notify", "evaluate:evaluate-acme-2"):
            store.heartbeat(name, now)
        code, body = healthz()
        assert code == 503 and any("evaluate-acme" in line for line in body["pipeline"]["stale"]), body
        _write(path, _config(tmp_path, ["Acme", "Beta"]))
        code, body = healthz()
        assert code == 200 and body["pipeline"]["ok"] is True, body
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
        store.close()


def test_a_channel_added_without_its_secret_in_the_environment_is_taken_with_a_warning(watched, tmp_path, monkeypatch):
    path, watcher = watched
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY", raising=False)
    _write(path, _config(tmp_path, ["Acme"], channels={"console": {}, "pagerduty": {}}))
    attempt = watcher.check()
    assert attempt.ok and attempt.settings.channels.pagerduty is not None
    assert len(attempt.warnings) == 1 and "PAGERDUTY_ROUTING_KEY" in attempt.warnings[0], attempt.warnings
    assert "PAGERDUTY_ROUTING_KEY" in attempt.state("worker@x", str(path))["warnings"][0]
