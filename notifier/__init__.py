"""Notification channels: one module per channel behind the :class:`~surgewatch.notifier.base.Channel`
protocol.  The core builds them from the config through the registration table in
:mod:`surgewatch.registry` (secrets from the environment).
"""
from surgewatch.notifier.base import Channel, ChannelError, Notification
from surgewatch.notifier.console import ConsoleChannel
from surgewatch.notifier.pagerduty import PagerDutyChannel
from surgewatch.notifier.slack import SlackChannel, SlackChannelError
from surgewatch.notifier.webhook import WebhookAction

__all__ = [
    "Channel",
    "ChannelError",
    "ConsoleChannel",
    "Notification",
    "PagerDutyChannel",
    "SlackChannel",
    "SlackChannelError",
    "WebhookAction",
]
