"""The one redactor (surgewatch.redact) and the logging set-up every process uses."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from surgewatch import logs
from surgewatch.config import parse_settings
from surgewatch.redact import redact, redact_url


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cretpass@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://user:s3cretpass@host:6379/0", "redis://user:***@host:6379/0"),
    ("redis://host:6379/0?password=s3cretpass&db=1", "redis://host:6379/0?password=***&db=1"),
    ("https://feeds.example/x.rss?api_key=s3cretpass&page=2", "https://feeds.example/x.rss?api_key=***&page=2"),
    ("sqlite:////var/lib/surgewatch/store.db", "sqlite:////var/lib/surgewatch/store.db"),
    ("sqla+sqlite:///broker.db", "sqla+sqlite:///broker.db"),
])
def test_a_url_keeps_what_locates_it_and_hides_its_password(url, shown):
    assert redact_url(url) == shown


def test_hide_query_masks_every_query_value():
    assert redact_url("https://h.example/hook?id=1&sig=abc", hide_query=True) == "https://h.example/hook?id=***&sig=***"


def test_free_text_loses_urls_passwords_bearer_tokens_and_known_secrets(monkeypatch):
    monkeypatch.setenv("X_BEARER_TOKEN", "AAAAtoken-from-env-1234")
    text = ("x: 401 Unauthorized: Bearer AAAAtoken-from-env-1234 is invalid; redis://:pw-in-url@h:1/0 "
            "password=hunter22 and Authorization: Bearer abcdef123456")
    shown = redact(text)
    for secret in ("AAAAtoken-from-env-1234", "pw-in-url", "hunter22", "abcdef123456"):
        assert secret not in shown
    assert shown.startswith("x: 401 Unauthorized: Bearer *** is invalid")


def test_a_secret_the_config_reads_from_any_variable_is_redacted_everywhere():
    parse_settings({"brands": [{"name": "Acme", "query": "a"}],
                    "channels": {"slack": {"token": "${MY_OWN_SLACK_VAR}", "ops_channel": "#o"}}},
                   env={"MY_OWN_SLACK_VAR": "xoxb-config-only-secret"})
    assert redact("slack said: invalid_auth for xoxb-config-only-secret") == "slack said: invalid_auth for ***"


def test_the_log_filter_redacts_messages_arguments_and_tracebacks(monkeypatch):
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-very-secret")
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "connecting with %s to %s", (
        "xapp-1-very-secret", "redis://:pw-in-url@h:1/0"), None)
    try:
        raise RuntimeError("failed: token xapp-1-very-secret")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    logs.RedactSecrets().filter(record)
    assert record.getMessage() == "connecting with *** to redis://:***@h:1/0"
    assert "xapp-1-very-secret" not in record.exc_text and "failed: token ***" in record.exc_text


def test_every_copy_of_the_redactor_is_the_one_redactor():
    import surgewatch.collectors.http
    import surgewatch.notifier.webhook
    import surgewatch.cli.main
    import surgewatch.store.errors
    from surgewatch import redact as one

    assert surgewatch.collectors.http.redact_url is one.redact_url
    assert surgewatch.store.errors.redact_url is one.redact_url
    assert surgewatch.cli.main.redact_url is one.redact_url
    assert surgewatch.notifier.webhook.redact_url is one.redact_url


def test_a_cli_command_logs_through_the_redacting_handler(tmp_path):
    # Every command, not only Celery's processes, gets the redacting handler (slack-listener held
    # two Slack tokens without it).
    code = ("import logging, sys; sys.argv=['surgewatch', '--help']\n"
            "from surgewatch.cli import main as cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "logging.getLogger('x').warning('token is %s', 'xoxb-logged-secret-1')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-logged-secret-1",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert "token is ***" in proc.stderr, proc.stderr
    assert "xoxb-logged-secret-1" not in proc.stderr


def test_a_source_error_that_echoes_a_token_is_scrubbed_before_it_is_stored(tmp_path, monkeypatch):
    from surgewatch.ops.health import SourceHealth
    from surgewatch.store.sqlite import SqliteStore

    monkeypatch.setenv("X_BEARER_TOKEN", "AAAA-x-token-echoed-back")
    store = SqliteStore(str(tmp_path / "sw.db"))
    h = SourceHealth("x", "Acme")
    h.record_failure(1_800_000_000.0, 'x: HTTP 401: {"detail": "Bearer AAAA-x-token-echoed-back is not valid"}',
                     permanent=True)
    h.save(store)
    stored = SourceHealth.load(store, "x", "Acme").last_error
    assert "AAAA-x-token-echoed-back" not in stored and "Bearer ***" in stored


def test_prose_is_left_alone():
    text = "Basic configuration. Bearer tokens expire; the token bucket refilled; see https://docs.example/guide?page=2"
    assert redact(text) == text


def test_fail_masks_secrets_and_keeps_square_brackets(capsys, monkeypatch):
    from surgewatch.cli import main as cli

    monkeypatch.setenv("X_BEARER_TOKEN", "AAAA-echoed-token-99")
    cli.fail("x: HTTP 401 [Unauthorized]: Bearer AAAA-echoed-token-99")
    printed = capsys.readouterr().err
    assert "AAAA-echoed-token-99" not in printed and "[Unauthorized]" in printed


def test_slack_listener_logs_info_lines_through_the_redacting_handler():
    # the listener holds SLACK_BOT_TOKEN and SLACK_APP_TOKEN; it used to log through a plain basicConfig
    code = ("import logging, sys; sys.argv=['surgewatch', 'slack-listener', '--help']\n"
            "from surgewatch import logs\nfrom surgewatch.cli import main as cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "root = logging.getLogger()\n"
            "assert any(isinstance(f, logs.RedactSecrets) for h in root.handlers for f in h.filters)\n"
            "logging.getLogger('surgewatch.actions.slack_listener').info('socket mode with %s', 'xapp-1-A0-listener-secret')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SLACK_APP_TOKEN": "xapp-1-A0-listener-secret",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert "INFO surgewatch.actions.slack_listener: socket mode with ***" in proc.stderr, proc.stderr
