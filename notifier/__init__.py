"""Notification channels: one module per channel behind the :class:`notifier.base.Channel` protocol.

Adding a channel is one new module and one line in ``CHANNEL_TYPES``; the core builds instances
from config (secrets from the environment) and never imports a channel module directly.
"""
from surgewatch.notifier.base import Channel, ChannelError, Notification
from surgewatch.notifier.console import ConsoleChannel
from surgewatch.notifier.pagerduty import PagerDutyChannel
from surgewatch.notifier.slack import SlackChannel, SlackChannelError
from surgewatch.notifier.webhook import WebhookAction

CHANNEL_TYPES: dict[str, type] = {
    "console": ConsoleChannel,
    "slack": SlackChannel,
    "pagerduty": PagerDutyChannel,
    "webhook": WebhookAction,
}

__all__ = [
    "CHANNEL_TYPES",
    "Channel",
    "ChannelError",
    "ConsoleChannel",
    "Notification",
    "PagerDutyChannel",
    "SlackChannel",
    "SlackChannelError",
    "WebhookAction",
]
