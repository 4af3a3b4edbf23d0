"""Configuration: typed, strict, secrets from the environment, errors that name the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.config import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"brands": [{"name": "Acme", "query": "acme"}]}


def errors_of(data, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, "test.yaml", env or {})
    return info.value.errors


def test_the_example_config_is_valid():
    settings = load_settings(ROOT / "config" / "example.yaml", env={})
    assert settings.brands[0].name == "Acme"
    assert settings.sources.rss is not None and settings.sources.rss.interval == 60
    assert settings.channels.slack is not None and settings.channels.slack.ops_channel == "#ops"


def test_a_minimal_config_gets_the_embedded_defaults():
    s = parse_settings(MINIMAL, env={})
    assert s.store.url.startswith("sqlite:///")
    assert s.broker.url.startswith("sqla+sqlite:///")
    assert s.channels.console is not None


def test_a_missing_field_is_named_with_its_path():
    assert errors_of({"brands": [{"name": "Acme"}]}) == ["brands[0].query: field required"]


def test_an_unknown_key_is_rejected_with_its_path():
    errs = errors_of({**MINIMAL, "sources": {"rss": {"feeds": ["https://x.example/rss"], "intervall": 5}}})
    assert len(errs) == 1 and errs[0].startswith("sources.rss.intervall: unknown key")


def test_every_error_is_reported_not_just_the_first():
    errs = errors_of({"brands": [{"name": "", "query": "acme"}], "store": {"url": "mysql://x"}, "detector": {"bucket_seconds": "soon"}})
    paths = sorted(e.split(":")[0] for e in errs)
    assert paths == ["brands[0].name", "detector.bucket_seconds", "store.url"]


def test_a_bad_query_is_a_config_error():
    errs = errors_of({"brands": [{"name": "Acme", "query": '"unbalanced'}]})
    assert errs[0].startswith("brands[0].query: ") and "invalid query" in errs[0]


def test_memory_broker_is_refused_with_the_reason():
    errs = errors_of({**MINIMAL, "broker": {"url": "memory://"}})
    assert "child process" in errs[0]


def test_secrets_come_from_the_environment_and_do_not_print():
    data = {**MINIMAL, "channels": {"slack": {"token": "${SLACK_BOT_TOKEN}", "ops_channel": "#ops"}}}
    s = parse_settings(data, env={"SLACK_BOT_TOKEN": "xoxb-very-secret-123"})
    assert s.channels.slack.token.get_secret_value() == "xoxb-very-secret-123"
    assert "xoxb-very-secret-123" not in repr(s) and "xoxb-very-secret-123" not in str(s.model_dump())


def test_a_missing_environment_variable_is_named():
    data = {**MINIMAL, "channels": {"slack": {"token": "${SLACK_BOT_TOKEN}", "ops_channel": "#ops"}}}
    assert errors_of(data, env={}) == ["channels.slack.token: environment variable SLACK_BOT_TOKEN is not set"]


def test_yaml_syntax_errors_name_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("brands:\n  - name: Acme\n    query: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_settings(p)
    assert "YAML syntax error at line" in info.value.errors[0]


def test_an_unknown_time_zone_is_named():
    assert errors_of({**MINIMAL, "timezone": "Mars/Olympus"})[0].startswith("timezone: unknown time zone")


def test_check_config_prints_key_paths_and_exits_non_zero_without_a_traceback(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text(yaml.safe_dump({"brands": [{"name": "Acme"}], "sources": {"rss": {"interval": "often", "feeds": []}}}))
    proc = subprocess.run([sys.executable, "-m", "surgewatch.cli.main", "check-config", str(p)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "brands[0].query: field required" in proc.stderr
    assert "sources.rss.interval:" in proc.stderr and "sources.rss.feeds:" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def _check_config(path, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "surgewatch.cli.main", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                               **env})


def test_check_config_accepts_the_example_when_its_secrets_are_set():
    proc = _check_config(ROOT / "config" / "example.yaml", SLACK_BOT_TOKEN="xoxb-example-token-1")
    assert proc.returncode == 0, proc.stderr
    assert "brands:   Acme" in proc.stdout
    assert "xoxb-example-token-1" not in proc.stdout + proc.stderr


def test_check_config_fails_naming_the_variable_when_a_channel_lacks_its_secret():
    # issue 12 item 7: this was a warning with exit 0, and the first alert was then never sent
    proc = _check_config(ROOT / "config" / "example.yaml")
    assert proc.returncode == 1
    assert "SLACK_BOT_TOKEN" in proc.stderr and "channels.slack" in proc.stderr
    assert "ok:" not in proc.stdout


def test_check_config_never_prints_a_store_or_broker_password(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "store": {"url": "redis://:s3cret-store-pw@127.0.0.1:6379/0"},
                                    "broker": {"url": "redis://127.0.0.1:6379/1?password=s3cret-broker-pw"}}))
    proc = _check_config(path)
    assert proc.returncode == 0, proc.stderr
    assert "redis://:***@127.0.0.1:6379/0" in proc.stdout and "password=***" in proc.stdout
    assert "s3cret" not in proc.stdout + proc.stderr


# -- a config that fails at check time, not at run time --------------------------------------------
BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")]) + "\nbrands: [{name: Acme, query: Acme}]\n"


def test_a_billion_laughs_document_is_refused_before_it_is_expanded(tmp_path):
    assert len(BOMB) < 500  # 9**9 = 387 million strings once expanded
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ConfigError, match="expands to more than") as info:
        load_settings(path, env={})
    assert info.value.errors[0].startswith("(top level):")


def test_the_real_check_config_refuses_the_alias_bomb_within_seconds(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    # The real command, in a process that reports its own peak memory as it exits: VmHWM, the high
    # water mark of its own address space (getrusage's ru_maxrss would carry over the size of the
    # pytest process it was forked from, and RUSAGE_CHILDREN is the largest child of the session).
    code = ("import atexit, re, sys\n"
            "atexit.register(lambda: sys.stderr.write('PEAK_KB ' + re.search(r'VmHWM:\\s+(\\d+)', "
            "open('/proc/self/status').read())[1] + '\\n'))\n"
            f"sys.argv = ['surgewatch', 'check-config', {str(path)!r}]\n"
            "from surgewatch.cli.main import main\n"
            "main()\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    elapsed = time.monotonic() - started
    assert proc.returncode == 1 and "expands to more than" in proc.stderr
    assert elapsed < 30  # was: past 720 MB and still growing
    peak_kb = int(proc.stderr.rsplit("PEAK_KB ", 1)[1].split()[0])
    assert peak_kb < 400_000


def test_a_self_referencing_alias_is_refused():
    with pytest.raises(ConfigError, match="expands to more than"):
        from surgewatch.config import load_yaml

        load_yaml("brands: &a [*a]\n", "t.yaml")


def test_aliases_of_ordinary_size_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("brands: [{name: Acme, query: Acme}]\n"
                    "sources:\n  rss: {feeds: ['https://a.example/f'], interval: &iv 45}\n  hackernews: {interval: *iv}\n")
    assert load_settings(path, env={}).sources.hackernews.interval == 45


def test_a_duplicate_key_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("brands: [{name: Acme, query: Acme}]\nsources:\n  rss:\n    feeds: ['https://a.example/f']\n"
                    "    interval: 60\n    interval: 5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.errors == ["YAML error at line 6, column 5: duplicate key 'interval' (first at line 5)"]


def test_a_merge_key_override_is_not_a_duplicate(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("brands:\n  - &b {name: Acme, query: Acme}\n  - {<<: *b, name: Bolt}\n")
    assert [b.name for b in load_settings(path, env={}).brands] == ["Acme", "Bolt"]


@pytest.mark.parametrize("first, second", [("Acme", "Acme!"), ("C++", "C#"), ("Bolt Co", "bolt-co")])
def test_two_brands_sharing_one_schedule_key_are_refused_naming_both(first, second):
    errors = errors_of({"brands": [{"name": first, "query": "a"}, {"name": second, "query": "a"}]})
    assert len(errors) == 1 and errors[0].startswith("brands: ")
    assert repr(first) in errors[0] and repr(second) in errors[0]


def test_every_brand_gets_its_own_beat_entries():
    from surgewatch.worker.settings import beat_schedule

    s = parse_settings({"brands": [{"name": n, "query": "a"} for n in ("Acme", "Acme 2", "C", "Cee")],
                        "sources": {"hackernews": {}}}, env={})
    polled = [e["args"][1] for e in beat_schedule(s).values() if e["task"] == "surgewatch.collect"]
    assert sorted(polled) == ["Acme", "Acme 2", "C", "Cee"]


def test_a_brand_name_without_a_letter_or_digit_is_refused():
    assert "no letter or digit" in errors_of({"brands": [{"name": "!!!", "query": "a"}]})[0]


@pytest.mark.parametrize("path, value, says", [
    (("store", "recent_cap"), 10**20, "less than or equal to 100000"),
    (("store", "dedup_ttl_days"), float("inf"), "finite number"),
    (("store", "dedup_ttl_days"), float("nan"), "finite number"),
    (("detector", "evaluation_lag_seconds"), 10**30, "less than or equal to 86400"),
    (("detector", "resolve_after_quiet_buckets"), 10**12, "less than or equal to"),
    (("detector", "warm_up_minutes"), 10**12, "less than or equal to"),
    (("routing", "repeat_interval_minutes"), 10**12, "less than or equal to"),
    (("calendar", "bigger_factor"), float("inf"), "finite number"),
    (("sources", "rss", "interval"), True, "expected a number, got true"),
    (("sources", "rss", "timeout"), False, "expected a number, got false"),
    (("sources", "rss", "alert_after_minutes"), 10**9, "less than or equal to"),
    (("sources", "rss", "max_bytes"), 10**15, "less than or equal to"),
    (("sources", "rss", "enabled"), 1, "expected true or false"),
    (("sources", "rss", "enabled"), "yes", "expected true or false"),
    (("ops", "stale_after_seconds"), True, "expected a number"),
])
def test_numbers_are_bounded_and_booleans_and_integers_are_strict(path, value, says):
    data = {**MINIMAL, "sources": {"rss": {"feeds": ["https://a.example/f"]}}}
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    errors = errors_of(data)
    assert any(e.startswith(".".join(path) + ":") and says in e for e in errors), errors


def test_booleans_and_numbers_from_the_environment_still_work():
    s = parse_settings({**MINIMAL, "sources": {"rss": {"feeds": ["https://a.example/f"], "interval": "${IV}",
                                                        "enabled": "${ON}"}}}, env={"IV": "30", "ON": "true"})
    assert s.sources.rss.interval == 30 and s.sources.rss.enabled is True


def test_an_unknown_webhook_placeholder_is_a_config_error():
    errors = errors_of({**MINIMAL, "traffic_controls": [
        {"name": "scale", "url": "https://h.example/x", "body": {"n": "{observed_per_minute}"}}]})
    assert len(errors) == 1 and errors[0].startswith("traffic_controls[0].body: unknown placeholder(s) "
                                                      "{observed_per_minute}")


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["brands", "sources", "channels", "store", "broker", "detector", "timezone", "extra"]),
                       yaml_values, max_size=5))
def test_any_malformed_config_gives_config_errors_never_a_crash(data):
    try:
        parse_settings(data, "fuzz.yaml", env={})
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and ": " in e for e in exc.errors)


def test_dedup_must_outlast_the_age_after_which_posts_are_not_counted():
    from surgewatch.pipeline import MAX_MENTION_AGE

    assert parse_settings({"brands": [{"name": "A", "query": "a"}]}).store.dedup_ttl_days * 86400 > MAX_MENTION_AGE
    with pytest.raises(ConfigError, match=r"store.dedup_ttl_days"):
        parse_settings({"brands": [{"name": "A", "query": "a"}], "store": {"dedup_ttl_days": 1}})


@pytest.mark.parametrize("preset", ["fewer", "balanced", "more"])
def test_a_brand_takes_a_sensitivity_preset_and_the_detector_its_target_alarm_rate(preset):
    from surgewatch.detector.spike import SENSITIVITY_ALARMS_PER_WEEK
    from surgewatch.pipeline import Runtime

    s = parse_settings({"brands": [{"name": "Acme", "query": "acme", "sensitivity": preset},
                                   {"name": "Other", "query": "other"}]}, env={})
    rt = Runtime(s)
    assert rt.detector_params("Acme").alarms_per_week == SENSITIVITY_ALARMS_PER_WEEK[preset]
    assert rt.detector_params("Other").alarms_per_week is None  # unset: the fixed thresholds


def test_an_unknown_sensitivity_is_named_with_its_path():
    errs = errors_of({"brands": [{"name": "Acme", "query": "acme", "sensitivity": "loud"}]})
    assert any("brands[0].sensitivity" in e and "fewer" in e for e in errs), errs


def test_the_opening_thresholds_are_settable_and_reach_the_detector():
    from surgewatch.pipeline import Runtime

    s = parse_settings({**MINIMAL, "detector": {"watch_decades": 4, "critical_decades": 12}}, env={})
    params = Runtime(s).detector_params()
    assert (params.watch_decades, params.warning_decades, params.critical_decades) == (4.0, 7.0, 12.0)
    assert errors_of({**MINIMAL, "detector": {"watch_decades": 0}})
    errs = errors_of({**MINIMAL, "detector": {"watch_decades": 8}})  # above the default warning (7)
    assert any(e.startswith("detector") and "watch_decades <= warning_decades" in e for e in errs), errs


def test_check_config_accepts_a_sensitivity(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"brands": [{"name": "Acme", "query": "acme", "sensitivity": "fewer"}]}))
    proc = subprocess.run([sys.executable, "-m", "surgewatch.cli.main", "check-config", str(p)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("text", ["{observed_per_min:.1f}", "{brand.name}", "{0}", "x {Brand} y"])
def test_a_malformed_webhook_placeholder_is_a_config_error_not_text_sent_as_written(text):
    errors = errors_of({**MINIMAL, "traffic_controls": [
        {"name": "scale", "url": "https://h.example/x", "undo": {"n": [text]}, "body": {"ok": "{brand}"}}]})
    assert len(errors) == 1 and errors[0].startswith("traffic_controls[0].undo: unknown placeholder(s)"), errors


def test_literal_braces_that_are_not_placeholders_are_allowed():
    s = parse_settings({**MINIMAL, "traffic_controls": [
        {"name": "scale", "url": "https://h.example/x", "body": {"note": "use {} or { spaced }", "b": "{brand}"}}]},
        env={})
    assert s.traffic_controls[0].body["b"] == "{brand}"


def test_check_config_takes_the_file_with_c_as_every_other_command_does(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"brands": [{"name": "Acme", "query": "acme"}]}))
    by_option = subprocess.run([sys.executable, "-m", "surgewatch", "check-config", "-c", str(p)],
                               capture_output=True, text=True, timeout=60)
    assert by_option.returncode == 0 and f"ok: {p}" in by_option.stdout, by_option.stderr
    neither = subprocess.run([sys.executable, "-m", "surgewatch", "check-config"], capture_output=True, text=True,
                             timeout=60)
    assert neither.returncode == 1 and "which file?" in neither.stderr
