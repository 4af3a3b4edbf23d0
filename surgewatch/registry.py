"""Build collectors and channels from the config.  Adding a source or a channel is one new module
and one entry here.  Credentials are read from the environment at this point, never from the file."""
from __future__ import annotations

import os
from typing import Any, Callable

from surgewatch.collectors.base import Collector
from surgewatch.notifier.base import Channel
from surgewatch import clock
from surgewatch.config import Settings, secret_from


class MissingCredential(Exception):
    """A configured source or channel needs a secret that is not in the environment."""


def _require(value: str | None, env_name: str, what: str) -> str:
    if not value:
        raise MissingCredential(f"{what} needs {env_name} in the environment (or ${{{env_name}}} in the config)")
    return value


def build_collector(settings: Settings, name: str) -> Collector:
    cfg: Any = getattr(settings.sources, name)
    if cfg is None:
        raise KeyError(f"source {name!r} is not configured")
    now: Callable[[], float] = clock.now
    if name == "rss":
        from surgewatch.collectors.rss import RssCollector

        return RssCollector(list(cfg.feeds), timeout=cfg.timeout, max_bytes=cfg.max_bytes, now=now)
    if name == "google_news":
        from surgewatch.collectors.google_news import GoogleNewsCollector

        return GoogleNewsCollector(api_url=cfg.api_url, hl=cfg.hl, gl=cfg.gl, ceid=cfg.ceid, timeout=cfg.timeout, now=now)
    if name == "x":
        from surgewatch.collectors.x import XCollector

        token = _require(secret_from(cfg.bearer_token, "X_BEARER_TOKEN"), "X_BEARER_TOKEN", "sources.x")
        return XCollector(
            token,
            api_url=cfg.api_url,
            # The budget is per source; each brand's collector counts its own requests.
            max_requests_per_day=max(1, cfg.max_requests_per_day // len(settings.brands)),
            max_results=cfg.max_results,
            max_pages=cfg.max_pages,
            now=now,
        )
    if name == "reddit":
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
            now=now,
        )
    if name == "hackernews":
        from surgewatch.collectors.hackernews import HackerNewsCollector

        return HackerNewsCollector(api_url=cfg.api_url, hits_per_page=cfg.hits_per_page, now=now)
    if name == "bluesky":
        from surgewatch.collectors.bluesky import BlueskyCollector

        return BlueskyCollector(
            api_url=cfg.api_url,
            auth_url=cfg.auth_url,
            handle=os.environ.get("BLUESKY_HANDLE") or None,
            app_password=os.environ.get("BLUESKY_APP_PASSWORD") or None,
            now=now,
        )
    if name == "mastodon":
        from surgewatch.collectors.mastodon import MastodonCollector

        return MastodonCollector(
            api_url=cfg.api_url, hashtags=list(cfg.hashtags), access_token=os.environ.get("MASTODON_ACCESS_TOKEN"), now=now
        )
    raise KeyError(f"unknown source {name!r}")


def configured_channels(settings: Settings) -> list[str]:
    c = settings.channels
    names = [name for name in type(c).model_fields if getattr(c, name) is not None]
    return names + [f"webhook:{t.name}" for t in settings.traffic_controls]


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


def build_channel(settings: Settings, name: str, store: Any = None) -> Channel:
    """One configured channel.  A missing credential raises MissingCredential, which the caller
    reports once; the run continues with the other channels."""
    c = settings.channels
    if name == "console" and c.console is not None:
        from surgewatch.notifier.console import ConsoleChannel

        return ConsoleChannel()
    if name == "slack" and c.slack is not None:
        from surgewatch.notifier.slack import SlackChannel

        token = _require(secret_from(c.slack.token, "SLACK_BOT_TOKEN"), "SLACK_BOT_TOKEN", "channels.slack")
        return SlackChannel(
            token,
            api_url=c.slack.api_url,
            marketing_channel=c.slack.marketing_channel,
            ops_channel=c.slack.ops_channel,
            timeout=c.slack.timeout,
            chart=incident_chart_for(settings, store) if store is not None else None,
        )
    if name == "pagerduty" and c.pagerduty is not None:
        from surgewatch.notifier.pagerduty import PagerDutyChannel

        key = _require(
            secret_from(c.pagerduty.routing_key, "PAGERDUTY_ROUTING_KEY"), "PAGERDUTY_ROUTING_KEY", "channels.pagerduty"
        )
        return PagerDutyChannel(key, events_url=c.pagerduty.events_url, timeout=c.pagerduty.timeout)
    if name.startswith("webhook:"):
        from surgewatch.notifier.webhook import WebhookAction

        for t in settings.traffic_controls:
            if f"webhook:{t.name}" == name:
                secret = os.environ.get(t.secret_env) or None
                if secret is None and not t.dry_run:
                    raise MissingCredential(f"traffic control {t.name} needs {t.secret_env} in the environment to sign its calls")
                return WebhookAction(
                    t.name, t.url, secret=secret, body_template=t.body, undo_template=t.undo,
                    min_severity=t.min_severity, dry_run=t.dry_run, timeout=t.timeout,
                )
    raise KeyError(f"channel {name!r} is not configured")
