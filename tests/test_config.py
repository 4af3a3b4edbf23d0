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


def test_check_config_accepts_the_example():
    proc = subprocess.run(
        [sys.executable, "-m", "surgewatch.cli.main", "check-config", str(ROOT / "config" / "example.yaml")],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "brands:   Acme" in proc.stdout
    assert "SLACK_BOT_TOKEN" in proc.stderr  # warns that Slack will not send without its token


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
