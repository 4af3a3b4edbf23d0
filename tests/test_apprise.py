"""The Apprise channel, against a local JSON receiver (Apprise's ``json://`` service posts
``{"title", "message", "type", ...}`` to it), through the real apprise library."""
from __future__ import annotations

import json

import pytest
import yaml
from pytest_httpserver import HTTPServer

from surgewatch.config import ConfigError, parse_settings
from surgewatch.notifier.apprise import AppriseChannel
from surgewatch.notifier.base import ChannelError
from tests.test_notifier_contract import make_mention, make_notification


def json_url(server: HTTPServer, path: str = "/hook") -> str:
    return f"json://{server.host}:{server.port}{path}"


def posted(server: HTTPServer, path: str = "/hook") -> list[dict]:
    return [json.loads(req.get_data()) for req, _ in server.log if req.path == path]


def test_an_alert_reaches_the_service_with_the_brand_severity_and_rate(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    receipt = AppriseChannel([json_url(httpserver)]).send(make_notification(key="inc-1:1:apprise"))
    (body,) = posted(httpserver)
    assert body["title"] == "[WARNING] Acme opened"
    assert "Acme opened: 48 mentions/min vs 3.1 expected" in body["message"]
    assert body["type"] == "warning"
    assert receipt == {"services": 1, "sent_to": [0], "key": "inc-1:1:apprise"}


def test_a_resolve_is_a_success_message(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    AppriseChannel([json_url(httpserver)]).send(make_notification(event="resolved", key="inc-1:3:apprise"))
    (body,) = posted(httpserver)
    assert body["type"] == "success" and body["title"].startswith("[RESOLVED] Acme resolved")


def test_outside_text_cannot_ping_everyone_or_hide_text(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    evil = make_mention(1, text="@everyone free tickets \u202eniaga\n<!channel> @here")
    AppriseChannel([json_url(httpserver)]).send(make_notification(top_mentions=(evil,)))
    message = posted(httpserver)[0]["message"]
    assert "@everyone" not in message and "@here" not in message
    assert "\u202e" not in message and "free tickets" in message


def test_a_service_error_is_a_transient_failure_naming_the_service_without_its_url(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("down", status=503)
    url = json_url(httpserver).replace("json://", "json://user:s3cr3tpass@")
    with pytest.raises(ChannelError) as caught:
        AppriseChannel([url], timeout=5).send(make_notification())
    assert not caught.value.permanent
    assert "1 of 1 services failed" in str(caught.value) and "urls[0] (json)" in str(caught.value)
    assert "s3cr3tpass" not in str(caught.value) and "s3cr3tpass" not in repr(AppriseChannel([url]))


def test_a_retry_after_a_partial_failure_sends_only_to_the_services_that_missed_it(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/good", method="POST").respond_with_data("ok")
    from werkzeug import Response

    answers = [Response("busy", status=500), Response("ok")]
    httpserver.expect_request("/flaky", method="POST").respond_with_handler(lambda request: answers.pop(0))
    channel = AppriseChannel([json_url(httpserver, "/good"), json_url(httpserver, "/flaky")], timeout=5)
    n = make_notification(key="inc-1:1:apprise")
    with pytest.raises(ChannelError) as caught:
        channel.send(n)
    partial = caught.value.partial_receipt  # type: ignore[attr-defined]
    assert partial == {"key": "inc-1:1:apprise", "sent_to": [0]}
    from dataclasses import replace

    receipt = channel.send(replace(n, previous_receipt=partial))  # as the pipeline hands it back
    assert receipt["sent_to"] == [0, 1]
    assert len(posted(httpserver, "/good")) == 1 and len(posted(httpserver, "/flaky")) == 2


def test_the_config_refuses_a_url_apprise_does_not_know_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"brands": [{"name": "Acme", "query": "acme"}],
                        "channels": {"apprise": {"urls": ["nosuchservice://tok3n-value@host"]}}}, env={})
    text = "\n".join(caught.value.errors)
    assert "channels.apprise.urls" in text and "nosuchservice://..." in text and "tok3n-value" not in text


def test_an_apprise_url_takes_its_token_from_the_environment(httpserver: HTTPServer) -> None:
    settings = parse_settings({"brands": [{"name": "Acme", "query": "acme"}],
                               "channels": {"apprise": {"urls": ["${HOOK_URL}"]}}},
                              env={"HOOK_URL": json_url(httpserver)})
    assert settings.channels.apprise.urls[0].get_secret_value() == json_url(httpserver)
    assert json_url(httpserver) not in repr(settings.channels.apprise)


@pytest.mark.slow
def test_the_demo_alerts_reach_an_apprise_url_naming_the_brand(httpserver: HTTPServer, tmp_path) -> None:
    from tests.test_demo import run_demo

    httpserver.expect_request("/alerts", method="POST").respond_with_data("ok")
    cfg = tmp_path / "apprise.yaml"
    cfg.write_text(yaml.safe_dump({"brands": [{"name": "placeholder", "query": "x"}],
                                   "channels": {"apprise": {"urls": [json_url(httpserver, "/alerts")]}}}))
    result, _ = run_demo("--config", str(cfg), "--temporary", "--seconds", "30")
    bodies = posted(httpserver, "/alerts")
    assert bodies, "no alert reached the Apprise URL"
    assert all("Acme" in b["title"] and "Acme" in b["message"] for b in bodies)
    assert bodies[0]["title"].startswith(("[WATCH]", "[WARNING]", "[CRITICAL]")), bodies[0]["title"]  # an alert comes first
    assert any(b["type"] == "success" for b in bodies), "the resolve was not announced"
    assert result["alerts"]
