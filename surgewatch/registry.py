"""The registration table: every source and channel by name, with its config model and the factory
that builds it from the config.  Adding a source is its module under ``collectors/``, its config
model in :mod:`surgewatch.config` (a field of ``Sources``) and one row in ``SOURCES``; a channel
likewise (``notifier/``, a field of ``Channels``, a row in ``CHANNELS``).  Credentials are read from
the environment here, never from the file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from surgewatch import clock
from surgewatch import config as cfgmod
from surgewatch.collectors.base import Collector
from surgewatch.config import Settings, channel_config, configured_channels, secret_from
from surgewatch.notifier.base import Channel

__all__ = ["CHANNELS", "SOURCES", "MissingCredential", "Registered", "build_channel", "build_collector",
           "configured_channels", "incident_chart_for", "slack_web_client"]


class MissingCredential(Exception):
    """A configured source or channel needs a secret that is not in the environment."""


@dataclass(frozen=True)
class Registered:
    """One row of the table: the config model of the section, and ``build(settings, cfg, store)``."""

    config: type
    build: Callable[[Settings, Any, Any], Any]


def _require(value: str | None, env_name: str, what: str) -> str:
    if not value:
        raise MissingCredential(f"{what} needs {env_name} in the environment (or ${{{env_name}}} in the config)")
    return value


# -- sources --------------------------------------------------------------------------------------
def _rss(settings: Settings, cfg: Any, store: Any) -> Collector:
    from surgewatch.collectors.rss import RssCollector

    return RssCollector(list(cfg.feeds), timeout=cfg.timeout, max_bytes=cfg.max_bytes, now=clock.now)


def _google_news(settings: Settings, cfg: Any, store: Any) -> Collector:
    from surgewatch.collectors.google_news import GoogleNewsCollector

    return GoogleNewsCollector(api_url=cfg.api_url, hl=cfg.hl, gl=cfg.gl, ceid=cfg.ceid, timeout=cfg.timeout, now=clock.now)


def _x(settings: Settings, cfg: Any, store: Any) -> Collector:
    from surgewatch.collectors.x import XCollector

    token = _require(secret_from(cfg.bearer_token, "X_BEARER_TOKEN"), "X_BEARER_TOKEN", "sources.x")
    return XCollector(
        token,
        api_url=cfg.api_url,
        # The budget is per source; each brand's collector counts its own requests.
        max_requests_per_day=max(1, cfg.max_requests_per_day // len(settings.brands)),
        max_results=cfg.max_results,
        max_pages=cfg.max_pages,
        timeout=cfg.timeout,
        now=clock.now,
    )


def _reddit(settings: Settings, cfg: Any, store: Any) -> Collector:
    from surgewatch.collectors.reddit import RedditCollector

    return RedditCollector(
        _require(os.environ.get("REDDIT_CLIENT_ID"), "REDDIT_CLIENT_ID", "sources.reddit"),
        _require(os.environ.get("REDDIT_CLIENT_SECRET"), "REDDIT_CLIENT_SECRET", "sources.reddit"),
        os.environ.get("REDDIT_USER_AGENT") or "surgewatch/0.1 (brand monitoring)",
        api_url=cfg.api_url,
        auth_url=cfg.auth_url,
        subreddits=list(cfg.subreddits),
        comment_subreddits=list(cfg.comment_subreddits),
        limit=cfg.limit,
        timeout=cfg.timeout,
        now=clock.now,
    )


def _hackernews(settings: Settings, cfg: Any, store: Any) -> Collector:
    from surgewatch.collectors.hackernews import HackerNewsCollector

    return HackerNewsCollector(api_url=cfg.api_url, hits_per_page=cfg.hits_per_page, timeout=cfg.timeout,
                               now=clock.now)


def _bluesky(settings: Settings, cfg: Any, store: Any) -> Collector:
    from surgewatch.collectors.bluesky import BlueskyCollector

    return BlueskyCollector(
        api_url=cfg.api_url,
        auth_url=cfg.auth_url,
        handle=os.environ.get("BLUESKY_HANDLE") or None,
        app_password=os.environ.get("BLUESKY_APP_PASSWORD") or None,
        timeout=cfg.timeout,
        now=clock.now,
    )


def _mastodon(settings: Settings, cfg: Any, store: Any) -> Collector:
    from surgewatch.collectors.mastodon import MastodonCollector

    return MastodonCollector(
        api_url=cfg.api_url, hashtags=list(cfg.hashtags), access_token=os.environ.get("MASTODON_ACCESS_TOKEN"),
        timeout=cfg.timeout, now=clock.now,
    )


SOURCES: dict[str, Registered] = {
    "rss": Registered(cfgmod.RssSource, _rss),
    "google_news": Registered(cfgmod.GoogleNewsSource, _google_news),
    "x": Registered(cfgmod.XSource, _x),
    "reddit": Registered(cfgmod.RedditSource, _reddit),
    "hackernews": Registered(cfgmod.HackerNewsSource, _hackernews),
    "bluesky": Registered(cfgmod.BlueskySource, _bluesky),
    "mastodon": Registered(cfgmod.MastodonSource, _mastodon),
}


def build_collector(settings: Settings, name: str) -> Collector:
    cfg: Any = getattr(settings.sources, name, None)
    if cfg is None or name not in SOURCES:
        raise KeyError(f"source {name!r} is not configured")
    return SOURCES[name].build(settings, cfg, None)


# -- channels -------------------------------------------------------------------------------------
def incident_chart_for(settings: Settings, store: Any) -> Callable[[Any], bytes | None]:
    """The volume chart attached to a Slack alert: the last three hours of the brand's mentions."""

    def chart(n: Any) -> bytes | None:
        from surgewatch.reports.charts import incident_chart

        end = n.at.timestamp()
        counts = store.counts(n.brand, end - 3 * 3600, end)
        if not counts:
            return None
        return incident_chart(counts, bucket_seconds=n.bucket_seconds, end=end, tz=settings.timezone,
                              title=f"{n.brand}: mentions per bucket")

    return chart


def slack_web_client(settings: Settings, token: str | None = None) -> Any:
    """The one way SurgeWatch builds a Slack ``WebClient`` (channel, ops messages, digest, buttons):
    the configured ``api_url`` and ``timeout``, the bot token from the environment."""
    from slack_sdk import WebClient

    slack = settings.channels.slack
    if slack is None:
        raise KeyError("channels.slack is not configured")
    token = token or _require(secret_from(slack.token, "SLACK_BOT_TOKEN"), "SLACK_BOT_TOKEN", "channels.slack")
    return WebClient(token=token, base_url=slack.api_url, timeout=int(slack.timeout))


def _console(settings: Settings, cfg: Any, store: Any) -> Channel:
    from surgewatch.notifier.console import ConsoleChannel

    return ConsoleChannel()


def _slack(settings: Settings, cfg: Any, store: Any) -> Channel:
    from surgewatch.notifier.slack import SlackChannel

    token = _require(secret_from(cfg.token, "SLACK_BOT_TOKEN"), "SLACK_BOT_TOKEN", "channels.slack")
    return SlackChannel(
        token,
        api_url=cfg.api_url,
        marketing_channel=cfg.marketing_channel,
        ops_channel=cfg.ops_channel,
        timeout=cfg.timeout,
        chart=incident_chart_for(settings, store) if store is not None else None,
    )


def _pagerduty(settings: Settings, cfg: Any, store: Any) -> Channel:
    from surgewatch.notifier.pagerduty import PagerDutyChannel

    key = _require(secret_from(cfg.routing_key, "PAGERDUTY_ROUTING_KEY"), "PAGERDUTY_ROUTING_KEY", "channels.pagerduty")
    return PagerDutyChannel(key, events_url=cfg.events_url, timeout=cfg.timeout)


def _apprise(settings: Settings, cfg: Any, store: Any) -> Channel:
    from surgewatch.notifier.apprise import AppriseChannel

    return AppriseChannel([u.get_secret_value() for u in cfg.urls], timeout=cfg.timeout)


def _email(settings: Settings, cfg: Any, store: Any) -> Channel:
    from surgewatch.notifier.email import EmailChannel

    password = secret_from(cfg.password, "SMTP_PASSWORD")
    if cfg.username and not password:
        raise MissingCredential("channels.email needs SMTP_PASSWORD in the environment (or ${SMTP_PASSWORD} in the config)")
    return EmailChannel(smtp_host=cfg.smtp_host, smtp_port=cfg.smtp_port, starttls=cfg.starttls, username=cfg.username,
                        password=password, sender=cfg.sender, to=list(cfg.to), timeout=cfg.timeout)


def _webhook(settings: Settings, t: Any, store: Any) -> Channel:
    from surgewatch.notifier.webhook import WebhookAction

    secret = os.environ.get(t.secret_env) or None
    if secret is None and not t.dry_run:
        raise MissingCredential(f"traffic control {t.name} needs {t.secret_env} in the environment to sign its calls")
    return WebhookAction(
        t.name, t.url, secret=secret, body_template=t.body, undo_template=t.undo,
        min_severity=t.min_severity, dry_run=t.dry_run, timeout=t.timeout,
    )


# ``webhook`` is the one kind configured as a list (``traffic_controls[]``): its channels are named
# ``webhook:<name>``.
CHANNELS: dict[str, Registered] = {
    "console": Registered(cfgmod.ConsoleChannelConfig, _console),
    "slack": Registered(cfgmod.SlackChannelConfig, _slack),
    "pagerduty": Registered(cfgmod.PagerDutyChannelConfig, _pagerduty),
    "apprise": Registered(cfgmod.AppriseChannelConfig, _apprise),
    "email": Registered(cfgmod.EmailChannelConfig, _email),
    "webhook": Registered(cfgmod.TrafficControl, _webhook),
}


def build_channel(settings: Settings, name: str, store: Any = None) -> Channel:
    """One configured channel.  A missing credential raises MissingCredential, which the caller
    reports once; the run continues with the other channels."""
    kind = name.partition(":")[0]
    cfg = channel_config(settings, name)
    if cfg is None or kind not in CHANNELS:
        raise KeyError(f"channel {name!r} is not configured")
    return CHANNELS[kind].build(settings, cfg, store)


def credential_problems(settings: Settings) -> list[str]:
    """What every configured channel and source lacks to work (a secret not in this process's
    environment, a webhook that cannot be built), one line each, naming the environment variable.
    ``check-config`` exits 1 on them; a config reload records them as warnings."""
    from surgewatch.redact import redact

    problems: list[str] = []
    for name in configured_channels(settings):
        try:
            build_channel(settings, name)
        except (MissingCredential, ValueError) as exc:
            problems.append(f"channels: {redact(str(exc))}; that channel would not send")
    for name in settings.sources.enabled():
        try:
            build_collector(settings, name)
        except (MissingCredential, ValueError) as exc:
            problems.append(f"sources: {redact(str(exc))}; that source would not poll")
    return problems
