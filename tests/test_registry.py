"""The registration table is the one list of sources: each source the config accepts has one row,
with the same config model, and every row builds a collector from its config."""
from __future__ import annotations

import pytest

from surgewatch.collectors.base import Collector
from surgewatch.config import Sources, parse_settings
from surgewatch.registry import SOURCES, MissingCredential, build_collector


def test_every_configurable_source_has_one_row_with_its_config_model() -> None:
    fields = {name: info.annotation for name, info in Sources.model_fields.items()}
    assert set(SOURCES) == set(fields)
    for name, row in SOURCES.items():
        assert row.config is fields[name].__args__[0], name  # the field is `Model | None`


def _settings():
    return parse_settings({
        "brands": [{"name": "Acme", "query": "acme"}],
        "sources": {"rss": {"feeds": ["http://127.0.0.1:9/feed"]}, "google_news": {}, "x": {}, "reddit": {},
                    "hackernews": {}, "bluesky": {}, "mastodon": {}},
    }, env={})


def test_every_registered_source_builds_a_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"X_BEARER_TOKEN": "t", "REDDIT_CLIENT_ID": "i", "REDDIT_CLIENT_SECRET": "s"}.items():
        monkeypatch.setenv(name, value)
    settings = _settings()
    for name in SOURCES:
        assert isinstance(build_collector(settings, name), Collector), name


def test_a_source_without_its_secret_says_which_variable_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    with pytest.raises(MissingCredential, match="X_BEARER_TOKEN"):
        build_collector(_settings(), "x")


def test_an_unconfigured_source_is_a_key_error() -> None:
    settings = parse_settings({"brands": [{"name": "Acme", "query": "acme"}],
                               "sources": {"rss": {"feeds": ["http://127.0.0.1:9/feed"]}}}, env={})
    with pytest.raises(KeyError, match="reddit"):
        build_collector(settings, "reddit")
