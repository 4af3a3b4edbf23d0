"""Slack channel: one marketing and one ops message per incident, updated in place and threaded.

First notification of an incident: ``chat.postMessage`` to each configured channel; the receipt
(``{"marketing": {"channel", "ts"}, "ops": {...}}``) is what later notifications need.  Later
notifications (``previous_receipt`` set): ``chat.update`` the original message so the channel
always shows the current state, and a threaded reply that says what changed, so the people who
follow the thread get a notification (an edit alone notifies nobody).

Errors become :class:`ChannelError`, sorted the way Slack documents them
(https://api.slack.com/methods/chat.postMessage#errors, https://api.slack.com/docs/rate-limits):
bad token, missing scope, gone channel are permanent; 429, 5xx, timeouts are transient.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import urllib.error
from typing import Any, Callable, Mapping

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError

from surgewatch.notifier import slack_blocks
from surgewatch.notifier.base import ChannelError, Notification
from surgewatch.notifier.escape import log_text

log = logging.getLogger(__name__)

# Retrying cannot help: the token, the app's scopes, the channel or the message itself is wrong.
PERMANENT_ERRORS = frozenset(
    {
        "not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired", "no_permission",
        "missing_scope", "not_allowed_token_type", "org_login_required", "ekm_access_denied",
        "team_access_not_granted", "two_factor_setup_required", "access_denied", "enterprise_is_restricted",
        "channel_not_found", "is_archived", "not_in_channel", "restricted_action", "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel", "restricted_action_non_threadable_channel",
        "msg_too_long", "no_text", "too_many_attachments", "invalid_blocks", "invalid_blocks_format",
        "invalid_attachments", "invalid_arguments", "invalid_arg_name", "invalid_array_arg", "invalid_charset",
        "invalid_form_data", "invalid_post_type", "missing_post_type", "invalid_metadata_format",
        "invalid_metadata_schema", "metadata_too_large", "cant_update_message", "edit_window_closed",
        "message_not_found", "thread_not_found", "as_user_not_supported", "duplicate_channel_not_found",
        "unknown_method", "deprecated_endpoint", "method_deprecated", "not_allowed",
    }
)
# Slack's side is down or busy; the docs say to retry these.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
     "team_added_to_org", "message_limit_exceeded"}
)
# The original message is gone or frozen: post a fresh one rather than give up the incident.
_REPOST_ON_UPDATE_ERRORS = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})

AUDIENCES = ("marketing", "ops")


METADATA_EVENT = "surgewatch_notification"


class SlackChannelError(ChannelError):
    """A :class:`ChannelError` that also carries what was already posted before the failure
    (``partial_receipt``), so a retry can update those messages instead of posting them twice."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None,
                 error: str | None = None, partial_receipt: dict[str, Any] | None = None):
        super().__init__(message, permanent=permanent, retry_after=retry_after)
        self.error = error  # Slack's error code, e.g. "channel_not_found"
        self.partial_receipt = partial_receipt or {}


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    # The one Retry-After parser (collectors/waits.py): seconds or an HTTP date, capped at an hour.
    from surgewatch.collectors.waits import header, parse_retry_after

    value = header(headers, "retry-after")
    value = value[0] if isinstance(value, (list, tuple)) and value else value
    return parse_retry_after(value, time.time())


def classify_slack_error(exc: BaseException, what: str) -> SlackChannelError:
    """Turn a slack_sdk / network exception into a typed error.  ``what`` names the call
    (``chat.postMessage #ops``).  Never includes request headers (the token lives there)."""
    if isinstance(exc, SlackApiError):
        resp = exc.response
        status = getattr(resp, "status_code", 0) or 0
        data = resp.data if isinstance(getattr(resp, "data", None), dict) else {}
        error = str(data.get("error") or "")
        if status == 429 or error in ("ratelimited", "rate_limited"):
            ra = _retry_after(getattr(resp, "headers", None))
            return SlackChannelError(f"slack {what}: rate limited (retry after {ra if ra is not None else '?'} s)",
                                     retry_after=ra, error="ratelimited")
        if status >= 500:
            return SlackChannelError(f"slack {what}: HTTP {status} from Slack", retry_after=_retry_after(resp.headers), error=f"http_{status}")
        if error in PERMANENT_ERRORS:
            return SlackChannelError(f"slack {what}: {error}", permanent=True, error=error)
        if error in TRANSIENT_ERRORS:
            return SlackChannelError(f"slack {what}: {error}", error=error)
        if status in (400, 401, 403, 404, 410):
            # A wrong api_url or a proxy refusing us: no retry will fix configuration.
            return SlackChannelError(f"slack {what}: HTTP {status}" + (f" {log_text(error, 80)}" if error else ""),
                                     permanent=True, error=error or f"http_{status}")
        # An error code we do not know yet, or a proxy's non-JSON page: retry (bounded by the
        # caller) rather than silence a channel for good on a guess.
        return SlackChannelError(f"slack {what}: {log_text(error or f'HTTP {status}', 120)}", error=error or None)
    if isinstance(exc, SlackRequestError):
        # slack_sdk refused to send (bad arguments): our bug, retrying sends the same thing.
        return SlackChannelError(f"slack {what}: invalid request: {log_text(exc, 120)}", permanent=True)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return SlackChannelError(f"slack {what}: timed out", error="timeout")
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            return SlackChannelError(f"slack {what}: TLS certificate rejected: {log_text(reason, 120)}", permanent=True)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return SlackChannelError(f"slack {what}: timed out", error="timeout")
        return SlackChannelError(f"slack {what}: cannot connect: {log_text(reason, 120)}", error="connection")
    if isinstance(exc, (ConnectionError, OSError)):
        return SlackChannelError(f"slack {what}: connection failed: {log_text(exc, 120)}", error="connection")
    if isinstance(exc, SlackClientError):
        return SlackChannelError(f"slack {what}: {log_text(exc, 120)}")
    raise TypeError(f"not a Slack transport error: {type(exc).__name__}")


class PostPacer:
    """Slack allows about one message per second per channel, with short bursts
    (https://api.slack.com/methods/chat.postMessage#rate_limiting).  Posts to one channel from this
    process are spaced ``interval`` apart; a post that would wait longer than ``max_wait`` is not
    slept on (a worker must not block) but refused as transient with ``retry_after``.
    Shared by every SlackChannel in the process: a busy incident and a digest hit the same channel.
    """

    def __init__(self, interval: float = 1.0, max_wait: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval = interval
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait_turn(self, channel_key: str) -> None:
        if self.interval <= 0:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(channel_key, now))
            wait = slot - now
            if wait > self.max_wait:
                raise SlackChannelError(f"slack: {channel_key} is busy (local pacing)", retry_after=round(wait, 3),
                                        error="paced")
            self._next[channel_key] = slot + self.interval
        if wait > 0:
            self._sleep(wait)

    def alias(self, known_as: str, also: str) -> None:
        """``also`` is the same channel as ``known_as`` (a name and its id): share the budget."""
        with self._lock:
            if known_as in self._next:
                self._next[also] = max(self._next.get(also, 0.0), self._next[known_as])


DEFAULT_PACER = PostPacer()


class SlackChannel:
    """Posts the marketing and ops messages.  At least one of the two channels must be set.

    ``chart``: optional ``notification -> PNG bytes | None``; when it returns bytes the chart is
    uploaded (``files_upload_v2``) into the marketing message's thread.  ``actions``: suggested
    actions listed on the ops message.  ``client``: an existing WebClient (tests, proxies).
    """

    name = "slack"

    def __init__(
        self,
        token: str,
        *,
        api_url: str = "https://slack.com/api/",
        marketing_channel: str | None = None,
        ops_channel: str | None = None,
        timeout: float = 10,
        client: WebClient | None = None,
        chart: Callable[[Notification], bytes | None] | None = None,
        actions: tuple[str, ...] = (),
        buttons: bool = True,
        pacer: PostPacer | None = DEFAULT_PACER,
    ):
        if not marketing_channel and not ops_channel:
            raise ValueError("SlackChannel needs marketing_channel or ops_channel (or both)")
        if client is None and not token:
            raise ValueError("SlackChannel needs a bot token (SLACK_BOT_TOKEN)")
        self.api_url = api_url
        self.targets = {"marketing": marketing_channel, "ops": ops_channel}
        self.timeout = timeout
        self._chart = chart
        self._actions = tuple(actions)
        self._buttons = buttons
        self._pacer = pacer
        self._channel_ids: dict[str, str] = {}
        # retry_handlers=[]: slack_sdk's default handler retries connection errors in-process.  A
        # worker must not sleep inside a send; the notify task owns retries (with backoff and
        # Retry-After), so every failure surfaces here at once as a ChannelError.
        self._client = client or WebClient(token=token, base_url=api_url, timeout=timeout, retry_handlers=[])  # type: ignore[arg-type]

    def __repr__(self) -> str:  # no token, ever
        return (f"SlackChannel(api_url={self.api_url!r}, marketing_channel={self.targets['marketing']!r}, "
                f"ops_channel={self.targets['ops']!r})")

    # ---- rendering ------------------------------------------------------------------------------

    def render(self, n: Notification, audience: str) -> list[dict[str, Any]]:
        if audience == "marketing":
            return slack_blocks.marketing_blocks(n)
        # The brand's configured actions win; the constructor's are a channel-wide default.
        return slack_blocks.ops_blocks(n, buttons=self._buttons, actions=tuple(n.actions) or self._actions)

    # ---- sending --------------------------------------------------------------------------------

    def _call(self, method: str, where: str, **kwargs: Any) -> dict[str, Any]:
        fn = getattr(self._client, method.replace(".", "_"))
        target = kwargs.get("channel")
        if method == "chat.postMessage" and self._pacer is not None:
            # Pace by channel id once known, so "#ops" and its id "C…" share one budget.
            self._pacer.wait_turn(f"{self.api_url}{self._channel_ids.get(target, target)}")
        try:
            data = fn(**kwargs).data
            if method == "chat.postMessage" and isinstance(data, dict) and data.get("channel") and target not in self._channel_ids:
                self._channel_ids[target] = data["channel"]
                if self._pacer is not None:
                    self._pacer.alias(f"{self.api_url}{target}", f"{self.api_url}{data['channel']}")
            return data  # type: ignore[no-any-return]
        except (SlackClientError, OSError) as e:
            # ``from None``: the slack_sdk exception holds the request arguments (headers with the
            # token); our message keeps everything a human needs.
            raise classify_slack_error(e, f"{method} {where}") from None

    def send(self, notification: Notification) -> dict[str, Any] | None:
        n = notification
        previous = n.previous_receipt or {}
        receipt: dict[str, Any] = {}
        for audience in AUDIENCES:
            target = self.targets[audience]
            if not target:
                continue
            try:
                old = previous.get(audience)
                if old is None and n.takeover:
                    # An earlier attempt died after claiming this notification: if its post did
                    # reach Slack, adopt it instead of posting the same alert twice.
                    old = self._find_posted(n, audience, target)
                    if old is not None and n.event == "opened":
                        receipt[audience] = old
                        continue
                receipt[audience] = self._send_one(n, audience, target, old)
            except SlackChannelError as e:
                # Keep what was already delivered (earlier audiences, and the untouched receipts
                # of a retry) so the caller can store it and a retry updates instead of re-posting.
                e.partial_receipt = {**{k: v for k, v in previous.items() if k in AUDIENCES}, **receipt}
                raise
        return receipt

    def _send_one(self, n: Notification, audience: str, target: str, old: dict[str, Any] | None) -> dict[str, Any]:
        blocks = self.render(n, audience)
        text = slack_blocks.fallback_text(n)
        if old and old.get("channel") and old.get("ts"):
            try:
                self._call("chat.update", f"{audience} {old['channel']}", channel=old["channel"], ts=old["ts"], text=text, blocks=blocks)
            except SlackChannelError as e:
                if e.error not in _REPOST_ON_UPDATE_ERRORS:
                    raise
                log.warning("slack: %s message %s is gone (%s); posting a new one", audience, old["ts"], e.error)
                return self._post_new(n, audience, target, text, blocks)
            entry = {"channel": old["channel"], "ts": old["ts"]}
            replied = list(old.get("replied") or [])
            if n.event in ("escalated", "resolved", "repeat") and n.key not in replied:
                r = self._call("chat.postMessage", f"{audience} thread {old['ts']}", channel=old["channel"], thread_ts=old["ts"],
                               text=slack_blocks.change_text(n), blocks=slack_blocks.change_blocks(n))
                entry["last_reply_ts"] = r.get("ts")
                replied.append(n.key)
            elif old.get("last_reply_ts"):
                entry["last_reply_ts"] = old["last_reply_ts"]
            if replied:
                entry["replied"] = replied
            return entry
        return self._post_new(n, audience, target, text, blocks)

    def _post_new(self, n: Notification, audience: str, target: str, text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        # The metadata names the notification, so a retry after a crash can find this post
        # (https://api.slack.com/metadata/using) instead of posting it again.
        r = self._call("chat.postMessage", f"{audience} {target}", channel=target, text=text, blocks=blocks,
                       metadata={"event_type": METADATA_EVENT, "event_payload": {"key": n.key, "audience": audience}})
        channel, ts = r.get("channel") if isinstance(r, dict) else None, r.get("ts") if isinstance(r, dict) else None
        if not isinstance(channel, str) or not channel or not isinstance(ts, str) or not ts:
            # "ok": true without the message's channel and ts: whether it was posted we cannot tell,
            # and without them no later update could find it.  Permanent: a retry could post it twice.
            raise SlackChannelError(f"slack chat.postMessage {audience} {target}: the answer lacks the message's "
                                    f"channel and ts ({log_text(str(r), 200)})", permanent=True, error="bad_answer")
        entry: dict[str, Any] = {"channel": channel, "ts": ts}
        if audience == "marketing" and self._chart is not None:
            self._upload_chart(n, entry)
        return entry

    def _channel_id(self, target: str) -> str | None:
        if not target.startswith("#"):
            return target
        if target not in self._channel_ids:
            name = target[1:]
            cursor = None
            for _ in range(20):  # pages of 200 channels
                page = self._call("conversations.list", f"lookup {target}", limit=200, cursor=cursor,
                                  types="public_channel,private_channel", exclude_archived=True)
                for ch in page.get("channels") or []:
                    if ch.get("name") == name:
                        self._channel_ids[target] = ch["id"]
                        return ch["id"]
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
            return None
        return self._channel_ids[target]

    def _find_posted(self, n: Notification, audience: str, target: str) -> dict[str, Any] | None:
        """The message an earlier, crashed attempt posted for this notification, found by its
        metadata among the channel's recent messages; None if there is none (or we cannot look)."""
        try:
            channel = self._channel_id(target)
            if channel is None:
                return None
            page = self._call("conversations.history", f"{audience} {target} history", channel=channel, limit=100,
                              include_all_metadata=True)
        except SlackChannelError as e:
            # Without channels:history / channels:read we cannot check: post (at least once).
            log.warning("slack: cannot check %s for an earlier post of %s (%s); posting", target, n.key, e.error or e)
            return None
        for m in page.get("messages") or []:
            payload = (m.get("metadata") or {}).get("event_payload") or {}
            if (m.get("metadata") or {}).get("event_type") == METADATA_EVENT and payload.get("key") == n.key \
                    and payload.get("audience") == audience:
                return {"channel": channel, "ts": m["ts"], "recovered": True}
        return None

    def _upload_chart(self, n: Notification, entry: dict[str, Any]) -> None:
        png = self._chart(n) if self._chart else None
        if not png:
            return
        try:
            self._call("files.upload_v2", f"chart {entry['channel']}", channel=entry["channel"], thread_ts=entry["ts"],
                       content=png, filename=f"surge-{n.incident_id}.png", title=f"{n.brand}: mentions per minute")
            entry["chart"] = True
        except SlackChannelError as e:
            # The alert itself is out; a missing chart (often a missing files:write scope) must not
            # turn into a retry that would post the alert twice.
            log.warning("slack: chart upload failed: %s", e)
            entry["chart"] = False
