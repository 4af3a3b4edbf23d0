"""Slack's buttons, through Socket Mode: Acknowledge, Silence 1 h, False alarm, and Run <traffic control>.

Socket Mode (https://api.slack.com/apis/socket-mode) means no public URL: the app opens a WebSocket
to Slack with an app-level token (``xapp-…``, env ``SLACK_APP_TOKEN``) and Slack sends each click
down it as an ``interactive`` envelope.  Slack wants every envelope acknowledged within 3 seconds
(https://api.slack.com/apis/socket-mode#acknowledge), so the ack goes out before any work: a store
or a Slack call that is slow must not make the user's click fail with "app did not respond".

The buttons call the same plain functions as the CLI (:mod:`surgewatch.actions.operator`), so ``surgewatch
ack ID`` and the Acknowledge button behave the same.  The answers are posted in the incident
message's thread (everybody following the incident sees who acknowledged) or, for "you cannot do
that" answers, as an ephemeral message only the clicker sees.

What a user controls in a payload (their display name, a button value on a crafted message) is
outside text: it is escaped before it reaches Slack and cleaned before it reaches a log.  The only
mention we write is ``<@U…>`` built from a user id that matches Slack's id format.

    surgewatch slack-listener --config surgewatch.yaml      # blocks; SIGTERM or Ctrl-C stops it
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from surgewatch.notifier.base import ChannelError
from surgewatch.notifier.escape import SLACK_TIME, log_text, slack_date, slack_text
from surgewatch.notifier.slack import classify_slack_error
from surgewatch.notifier.slack_blocks import ACTION_ACK, ACTION_FALSE_ALARM, ACTION_SILENCE_1H
from surgewatch import clock
from surgewatch.actions import operator
from surgewatch.config import Settings, secret_from
from surgewatch.actions.operator import OperatorError
from surgewatch.pipeline import NOTIFY_LEASE, NotReady, Runtime, build_notification
from surgewatch.registry import MissingCredential, build_channel
from surgewatch.store.base import Delivery
from surgewatch.store.errors import StoreError
from surgewatch.store.keys import delivery_key

log = logging.getLogger("surgewatch.actions.slack_listener")

# A button that runs a configured traffic control once a human approves it; value
# "<incident_id>|<control_name>".  (The other action ids live in notifier.slack_blocks.)
ACTION_RUN_CONTROL = "surgewatch_run_action"
SILENCE_SECONDS = 3600.0
APP_TOKEN_ENV = "SLACK_APP_TOKEN"

# Slack user ids: U… (or W… on Enterprise Grid), upper-case letters and digits.
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,30}$")
_SEEN_ENVELOPES = 1000  # Slack may resend an envelope it thinks was lost; remember the recent ones


class ListenerError(Exception):
    """The listener cannot start (missing or rejected token, no Slack channel configured)."""


@dataclass(frozen=True)
class Actor:
    """Who clicked.  ``name`` is cleaned for logs and the store; ``mention`` is safe mrkdwn."""

    user_id: str | None
    name: str

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Actor":
        user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
        uid = user.get("id") if isinstance(user.get("id"), str) and _USER_ID.match(user["id"]) else None
        raw = user.get("username") or user.get("name") or uid or "someone"
        return cls(uid, log_text(raw, 80) or "someone")

    @property
    def who(self) -> str:
        """What the incident records (``acked_by``), shown by the CLI and the digest."""
        return f"@{self.name} ({self.user_id})" if self.user_id else f"@{self.name}"

    @property
    def mention(self) -> str:
        # <@U…> is a mention we write on purpose (it notifies that one person, which is the point);
        # a name is only ever shown as escaped text.
        return f"<@{self.user_id}>" if self.user_id else slack_text(f"@{self.name}", 100)


@dataclass(frozen=True)
class ActionOutcome:
    """What one click did.  ``status``: done | already | refused | failed | ignored."""

    action_id: str
    incident_id: str
    status: str
    reply: str  # the mrkdwn we posted back


@dataclass(frozen=True)
class ControlRun:
    """The result of :func:`run_traffic_control`.  ``status``: sent | dry_run | duplicate | skipped | failed."""

    status: str
    message: str
    receipt: dict[str, Any] | None = None


# -- the traffic control a human approves ----------------------------------------------------------
def approved_key(incident_id: str, control_name: str) -> str:
    return f"{incident_id}:approved:{control_name}"


def run_traffic_control(rt: Runtime, incident_id: str, control_name: str, who: str, now: float | None = None) -> ControlRun:
    """Run the configured traffic control ``control_name`` for an open incident, once.

    The claim key ``<incident>:approved:<name>`` makes a double click (or two people clicking) run
    it once; it is also the webhook's ``Idempotency-Key``, so the receiver can de-duplicate too.
    A permanent failure is remembered (no retry can help); a transient one releases the claim so a
    second click tries again.  Raises :class:`OperatorError` for an unknown incident or control.
    """
    now = clock.now() if now is None else now
    inc = rt.store.get_incident(incident_id)
    if inc is None:
        raise OperatorError(f"no incident {incident_id!r}")
    cfg = next((t for t in rt.settings.traffic_controls if t.name == control_name), None)
    if cfg is None:
        raise OperatorError(f"no traffic control named {control_name!r} in the config")
    if not cfg.approval:
        # It already runs by itself at its severity; a second, manual run would double it.
        raise OperatorError(f"traffic control {control_name!r} runs automatically (approval: false)")
    if inc["status"] != "open":
        raise OperatorError(f"incident {incident_id!r} is already resolved")
    transitions = [t for t in inc["transitions"] if t["event"] in ("opened", "escalated")]
    if not transitions:
        raise OperatorError(f"incident {incident_id!r} has no verdict to act on")
    key = approved_key(incident_id, control_name)
    if not rt.store.claim(key, NOTIFY_LEASE, time.time()):
        done = rt.store.delivery(key) or {}
        state = "is being run" if done.get("status") == "claimed" else "already ran"
        return ControlRun("duplicate", f"{control_name} {state} for this incident", (done.get("receipt") or None))
    try:
        channel = build_channel(rt.settings, f"webhook:{control_name}")
        n = build_notification(rt, inc, transitions[-1], f"webhook:{control_name}")
    except (MissingCredential, NotReady) as exc:
        rt.store.release(key)
        raise OperatorError(str(exc)) from None
    n = dataclasses.replace(n, key=key)  # the idempotency key of this approved run, not of a transition
    # The delivery log's record of the run: the control's channel on the transition it acted on.
    logged = rt.store.get_delivery(delivery_key(incident_id, transitions[-1]["no"], f"webhook:{control_name}")) or Delivery(
        incident_id, transitions[-1]["no"], f"webhook:{control_name}", event=transitions[-1]["event"], brand=inc["brand"],
        created_at=now)
    logged.reason, logged.updated_at = f"approved in Slack by {who}", now
    logged.attempts += 1
    try:
        receipt = channel.send(n) or {}
    except ChannelError as exc:
        logged.error = exc.message
        if exc.permanent:
            rt.store.mark_sent(key, {"error": exc.message, "permanent": True, "by": who, "at": now})
            logged.status = "failed"
            rt.store.record_delivery(logged)
            return ControlRun("failed", f"{control_name} failed and will not be retried: {exc.message}")
        rt.store.release(key)  # nothing was done: the next click may try again
        logged.status = "pending"  # waits for the next click
        rt.store.record_delivery(logged)
        return ControlRun("failed", f"{control_name} failed ({exc.message}); click again to retry")
    receipt = {**receipt, "by": who, "at": now}
    rt.store.mark_sent(key, receipt)
    logged.status, logged.receipt, logged.sent_at = "sent", receipt, now
    rt.store.record_delivery(logged)
    if not receipt.get("skipped"):
        # Recorded on the incident too, so the resolve can send this control's undo (routes()
        # sees the incident, not the store) and the review shows who approved what.
        from surgewatch.incidents.updates import update_incident

        def approve(latest: dict[str, Any]) -> dict[str, Any]:
            ran = [x for x in latest.get("approved_controls") or [] if x.get("name") != control_name]
            return {**latest, "approved_controls": ran + [{"name": control_name, "by": who, "at": now}]}

        update_incident(rt.store, incident_id, approve)  # compare-and-swap: no tick's save drops it
    if receipt.get("skipped"):
        return ControlRun("skipped", f"{control_name}: {receipt['skipped']}", receipt)
    if receipt.get("dry_run"):
        return ControlRun("dry_run", f"{control_name} (dry run: logged, not sent)", receipt)
    return ControlRun("sent", f"{control_name} ran (HTTP {receipt.get('status', '?')})", receipt)


# -- the listener ----------------------------------------------------------------------------------
class SlackActionListener:
    """Listens for button clicks over Socket Mode and carries them out.

    ``api_url``: the Slack Web API base (``channels.slack.api_url``; a local fake in tests).
    ``now``: the clock the operator functions record (``surgewatch.clock`` by default).
    """

    def __init__(self, runtime: Runtime, app_token: str, bot_token: str, api_url: str = "https://slack.com/api/", *,
                 now: Callable[[], float] = clock.now, timeout: float = 10.0, ping_interval: float = 5.0):
        if not app_token or not app_token.startswith("xapp-"):
            raise ListenerError(f"{APP_TOKEN_ENV} must be an app-level token (xapp-…) with the connections:write scope")
        if not bot_token:
            raise ListenerError("the listener needs the bot token (SLACK_BOT_TOKEN) to answer in Slack")
        self.rt = runtime
        self.api_url = api_url
        self._app_token = app_token
        self._now = now
        self._ping_interval = ping_interval
        # Replies run on the SDK's worker threads, not in a Celery task: a short in-process retry on
        # a 429 (honouring Retry-After) or a dropped connection is fine here.
        self.web = WebClient(token=bot_token, base_url=api_url, timeout=timeout,
                             retry_handlers=[ConnectionErrorRetryHandler(), RateLimitErrorRetryHandler(max_retry_count=2)])
        self._client: SocketModeClient | None = None
        self._seen: deque[str] = deque(maxlen=_SEEN_ENVELOPES)
        self._seen_lock = threading.Lock()
        # The SDK hands envelopes to a pool of threads.  The operator functions read an incident,
        # change it and write it back; two clicks on one message (Acknowledge, then False alarm)
        # handled at once would lose one of the two changes.  Clicks are rare: one at a time.
        self._work_lock = threading.Lock()
        self.outcomes: deque[ActionOutcome] = deque(maxlen=200)  # recent clicks, for status and tests
        self.bot_id: str | None = None  # ours (auth.test): only clicks on messages this bot posted count
        self._members: dict[str, tuple[float, frozenset[str]]] = {}  # channel or user group -> (read at, ids)
        self._ops_channel_id: str | None = None

    def __repr__(self) -> str:  # never the tokens
        return f"SlackActionListener(api_url={self.api_url!r}, connected={self.connected})"

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "SlackActionListener":
        """Open the WebSocket.  Raises :class:`ListenerError` when Slack rejects the app token."""
        sdk_log = logging.getLogger("surgewatch.actions.slack_listener.socket")
        try:
            self.bot_id = self.web.auth_test().get("bot_id")
        except (SlackClientError, OSError) as exc:
            raise ListenerError(str(classify_slack_error(exc, "auth.test"))) from None
        self._client = SocketModeClient(app_token=self._app_token, web_client=self.web, logger=sdk_log,
                                        ping_interval=self._ping_interval)
        self._client.socket_mode_request_listeners.append(self._on_request)  # type: ignore[arg-type]
        try:
            self._client.connect()
        except (SlackClientError, OSError) as exc:
            self.stop()
            raise ListenerError(str(classify_slack_error(exc, "apps.connections.open"))) from None
        return self

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.auto_reconnect_enabled = False
        # The SDK's receive loop blocks in recv() for up to 3 s; shutting the read side down wakes
        # it at once, so stopping takes about a second instead of three.
        sock = getattr(getattr(client, "current_session", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        client.close()

    def __enter__(self) -> "SlackActionListener":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- envelopes ------------------------------------------------------------------------------
    def _on_request(self, client: SocketModeClient, req: SocketModeRequest) -> None:
        # Ack first, whatever the envelope: Slack shows the user an error after 3 s without one.
        client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        with self._seen_lock:
            if req.envelope_id in self._seen:
                return
            self._seen.append(req.envelope_id)
        payload = req.payload
        if req.type != "interactive" or payload.get("type") != "block_actions":
            return
        for action in payload.get("actions") or []:
            if isinstance(action, dict):
                with self._work_lock:
                    self.outcomes.append(self.handle_action(payload, action))

    def handle_action(self, payload: dict[str, Any], action: dict[str, Any]) -> ActionOutcome:
        """Carry out one button click.  Never raises: every failure becomes an answer in Slack."""
        action_id = str(action.get("action_id") or "")
        value = str(action.get("value") or "")
        actor = Actor.from_payload(payload)
        handler = {
            ACTION_ACK: self._acknowledge,
            ACTION_SILENCE_1H: self._silence,
            ACTION_FALSE_ALARM: self._false_alarm,
            ACTION_RUN_CONTROL: self._run_control,
        }.get(action_id)
        if handler is None:
            return ActionOutcome(action_id, value, "ignored", "")  # another app's button, or an old one
        incident_id = value.split("|", 1)[0]
        log.info("slack: %s clicked %s on %s", actor.who, action_id, log_text(value, 120))
        try:
            refusal = self._refusal(payload, actor, action_id)
            if refusal is not None:
                log.warning("slack: refused %s on %s by %s: %s", action_id, log_text(value, 120), actor.who, refusal)
                reply = f":no_entry: {slack_text(refusal, 500)}"
                self._answer_privately(payload, actor, reply)
                return ActionOutcome(action_id, incident_id, "refused", reply)
            return handler(payload, actor, value)
        except OperatorError as exc:
            reply = f":grey_question: {slack_text(str(exc), 500)}"
            self._answer_privately(payload, actor, reply)
            return ActionOutcome(action_id, incident_id, "refused", reply)
        except StoreError as exc:
            log.error("slack: %s on %s not recorded: %s", action_id, log_text(incident_id, 100), exc)
            reply = ":warning: SurgeWatch could not record that (its store is unavailable); please try again"
            self._try(lambda: self._answer_privately(payload, actor, reply))
            return ActionOutcome(action_id, incident_id, "failed", reply)
        except (SlackClientError, OSError) as exc:
            # Our reply failed (Slack down, rate limited past the retries): the action itself was
            # done or refused above; say so in the log, do not kill the worker thread.
            log.error("slack: answering %s for %s failed: %s", action_id, log_text(incident_id, 100),
                      classify_slack_error(exc, "reply"))
            return ActionOutcome(action_id, incident_id, "failed", "")

    # ---- who may click what ---------------------------------------------------------------------
    PROTECTED = (ACTION_SILENCE_1H, ACTION_FALSE_ALARM, ACTION_RUN_CONTROL)  # they change what happens next
    MEMBERS_TTL = 60.0  # seconds a membership list is trusted (someone removed from #ops loses the buttons soon)

    def _refusal(self, payload: dict[str, Any], actor: Actor, action_id: str) -> str | None:
        """Why this click must not be carried out, or None.  Only clicks on SurgeWatch's own messages
        count (a copy of our buttons on someone else's message does nothing), and the buttons that
        change things -- run a traffic control, silence, false alarm -- are for the people
        ``channels.slack.allowed_users`` / ``allowed_usergroups`` name, or else the ops channel's members."""
        message = _dict(payload.get("message"))
        if self.bot_id is None or message.get("bot_id") != self.bot_id:
            return "SurgeWatch only acts on buttons of its own alert messages"
        if action_id not in self.PROTECTED:
            return None
        if actor.user_id is None:
            return "Slack did not say who clicked, so SurgeWatch cannot check you may do that"
        cfg = self.rt.settings.channels.slack
        if cfg is None:
            return "Slack is not configured"
        try:
            if cfg.allowed_users or cfg.allowed_usergroups:
                if actor.user_id in cfg.allowed_users or any(
                        actor.user_id in self._group_members(g) for g in cfg.allowed_usergroups):
                    return None
                return "you are not allowed to do that (channels.slack.allowed_users / allowed_usergroups)"
            if cfg.ops_channel:
                if actor.user_id in self._channel_members(cfg.ops_channel):
                    return None
                return f"only members of the ops channel {cfg.ops_channel} may do that"
        except (SlackClientError, OSError) as exc:
            # Fail closed: a membership we cannot read is not a membership.
            log.error("slack: cannot check who may click: %s", classify_slack_error(exc, "membership"))
            return "SurgeWatch could not check that you may do that (Slack did not answer); try again"
        return "no one may do that: set channels.slack.allowed_users or an ops_channel"

    def _cached(self, key: str, read: Callable[[], list[str]]) -> frozenset[str]:
        now = time.monotonic()
        hit = self._members.get(key)
        if hit is not None and now - hit[0] < self.MEMBERS_TTL:
            return hit[1]
        ids = frozenset(read())
        self._members[key] = (now, ids)
        return ids

    def _group_members(self, usergroup: str) -> frozenset[str]:
        return self._cached(f"group:{usergroup}", lambda: list(self.web.usergroups_users_list(usergroup=usergroup).get("users") or []))

    def _channel_members(self, channel: str) -> frozenset[str]:
        def read() -> list[str]:
            channel_id = self._channel_id(channel)
            if channel_id is None:
                return []
            members: list[str] = []
            cursor = None
            for _ in range(50):  # pages of 1000
                page = self.web.conversations_members(channel=channel_id, limit=1000, cursor=cursor)
                members += page.get("members") or []
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
            return members

        return self._cached(f"channel:{channel}", read)

    def _channel_id(self, channel: str) -> str | None:
        if not channel.startswith("#"):
            return channel
        if self._ops_channel_id is None:
            cursor = None
            for _ in range(20):  # pages of 200 channels
                page = self.web.conversations_list(limit=200, cursor=cursor, types="public_channel,private_channel",
                                                   exclude_archived=True)
                for ch in page.get("channels") or []:
                    if ch.get("name") == channel[1:]:
                        self._ops_channel_id = ch["id"]
                        return self._ops_channel_id
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        return self._ops_channel_id

    @staticmethod
    def _try(answer: Callable[[], None]) -> None:
        try:
            answer()
        except (SlackClientError, OSError) as exc:
            log.error("slack: answer failed: %s", classify_slack_error(exc, "reply"))

    # ---- the four buttons -----------------------------------------------------------------------
    def _acknowledge(self, payload: dict[str, Any], actor: Actor, incident_id: str) -> ActionOutcome:
        # Two clicks arrive on two worker threads at once; operator.acknowledge reads then writes,
        # so the store's claim decides which click acknowledges.
        key = f"{incident_id}:acknowledge:slack"
        if not self.rt.store.claim(key, NOTIFY_LEASE, time.time()):
            inc = self.rt.store.get_incident(incident_id) or {}
            return self._already(payload, actor, ACTION_ACK, incident_id, f"already acknowledged by {inc.get('acked_by') or 'someone'}")
        try:
            result = operator.acknowledge(self.rt, incident_id, actor.who, self._now())
        except BaseException:
            self.rt.store.release(key)
            raise
        self.rt.store.mark_sent(key, {"by": actor.who})
        if result.already:
            return self._already(payload, actor, ACTION_ACK, incident_id, f"already acknowledged by {result.incident.get('acked_by')}")
        pager = {"acknowledged": " · PagerDuty alert acknowledged", "not paged": ""}.get(
            result.pager, f" · PagerDuty acknowledge failed: {slack_text(result.pager, 200)}")
        reply = f":white_check_mark: Acknowledged by {actor.mention}{pager}"
        self._reply_in_thread(payload, reply)
        self._mark_message(payload, remove=(ACTION_ACK,), note=f":white_check_mark: Acknowledged by {actor.mention} at {self._time(self._now())}")
        return ActionOutcome(ACTION_ACK, incident_id, "done", reply)

    def _silence(self, payload: dict[str, Any], actor: Actor, incident_id: str) -> ActionOutcome:
        inc = self.rt.store.get_incident(incident_id)
        if inc is None:
            raise OperatorError(f"no incident {incident_id!r}")
        now = self._now()
        current = operator.active_silence(self.rt, inc["brand"], now)
        if current and current.get("until", 0) >= now + SILENCE_SECONDS - 60:
            # A double click, or a second person a moment later: one silence, one message.
            return self._already(payload, actor, ACTION_SILENCE_1H, incident_id,
                                 f"{slack_text(inc['brand'], 100)} is already silenced until {self._time(current['until'])} "
                                 f"by {slack_text(current.get('by') or 'someone', 100)}", escaped=True)
        entry = operator.silence(self.rt, inc["brand"], SILENCE_SECONDS, actor.who, f"Silence 1 h button on {incident_id}", now)
        reply = (f":mute: {slack_text(entry['brand'], 100)} silenced for 1 h by {actor.mention} "
                 f"(until {self._time(entry['until'])}); incidents are still recorded")
        self._reply_in_thread(payload, reply)
        return ActionOutcome(ACTION_SILENCE_1H, incident_id, "done", reply)

    def _false_alarm(self, payload: dict[str, Any], actor: Actor, incident_id: str) -> ActionOutcome:
        key = f"{incident_id}:false_alarm:slack"
        if not self.rt.store.claim(key, NOTIFY_LEASE, time.time()):
            return self._already(payload, actor, ACTION_FALSE_ALARM, incident_id, "already marked as a false alarm")
        try:
            inc = operator.mark_false_alarm(self.rt, incident_id, actor.who, self._now(), note="False alarm button in Slack")
        except BaseException:
            self.rt.store.release(key)
            raise
        self.rt.store.mark_sent(key, {"by": actor.who})
        reply = (f":no_entry_sign: Marked as a false alarm by {actor.mention}: kept for the detector's review "
                 f"and the weekly digest")
        self._reply_in_thread(payload, reply)
        self._mark_message(payload, remove=(ACTION_FALSE_ALARM,), note=f":no_entry_sign: False alarm ({actor.mention})")
        return ActionOutcome(ACTION_FALSE_ALARM, inc["id"], "done", reply)

    def _run_control(self, payload: dict[str, Any], actor: Actor, value: str) -> ActionOutcome:
        incident_id, sep, name = value.partition("|")
        if not sep or not name:
            raise OperatorError(f"this button does not name a traffic control ({value!r})")
        run = run_traffic_control(self.rt, incident_id, name, actor.who, self._now())
        if run.status == "duplicate":
            return self._already(payload, actor, ACTION_RUN_CONTROL, incident_id, run.message)
        emoji = {"sent": ":rocket:", "dry_run": ":test_tube:", "skipped": ":fast_forward:"}.get(run.status, ":x:")
        reply = f"{emoji} {slack_text(run.message, 500)} · approved by {actor.mention}"
        self._reply_in_thread(payload, reply)
        if run.status in ("sent", "dry_run"):
            self._mark_message(payload, remove=(), remove_values=(value,), note=f"{emoji} {slack_text(name, 50)} approved by {actor.mention}")
        return ActionOutcome(ACTION_RUN_CONTROL, incident_id, "done" if run.status != "failed" else "failed", reply)

    # ---- answering ------------------------------------------------------------------------------
    def _already(self, payload: dict[str, Any], actor: Actor, action_id: str, incident_id: str, what: str,
                 escaped: bool = False) -> ActionOutcome:
        reply = f":information_source: {what if escaped else slack_text(what, 500)}"
        self._answer_privately(payload, actor, reply)
        return ActionOutcome(action_id, incident_id, "already", reply)

    def _time(self, ts: float) -> str:
        """A clock time in Slack: each reader's own zone (``<!date^…^{time}|…>``), the configured
        zone as the fallback."""
        return slack_date(ts, self.rt.settings.timezone, SLACK_TIME)

    @staticmethod
    def _where(payload: dict[str, Any]) -> tuple[str | None, str | None]:
        container, channel_obj, message = (_dict(payload.get(k)) for k in ("container", "channel", "message"))
        channel = container.get("channel_id") or channel_obj.get("id")
        ts = container.get("message_ts") or message.get("ts")
        channel = channel if isinstance(channel, str) and _CHANNEL_ID.match(channel) else None
        ts = ts if isinstance(ts, str) and re.match(r"^\d+\.\d+$", ts) else None
        return channel, ts

    def _reply_in_thread(self, payload: dict[str, Any], text: str) -> None:
        channel, ts = self._where(payload)
        if channel is None:
            log.warning("slack: click without a channel; answer not posted: %s", log_text(text, 200))
            return
        self.web.chat_postMessage(channel=channel, thread_ts=ts, text=text,
                                  blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}])

    def _answer_privately(self, payload: dict[str, Any], actor: Actor, text: str) -> None:
        """Only the clicker sees it (chat.postEphemeral); in the thread when we cannot tell who clicked."""
        channel, ts = self._where(payload)
        if channel is None:
            log.warning("slack: click without a channel; answer not posted: %s", log_text(text, 200))
            return
        if actor.user_id is None:
            self._reply_in_thread(payload, text)
            return
        self.web.chat_postEphemeral(channel=channel, user=actor.user_id, thread_ts=ts, text=text)

    def _mark_message(self, payload: dict[str, Any], *, remove: tuple[str, ...], note: str,
                      remove_values: tuple[str, ...] = ()) -> None:
        """Update the clicked message: drop the buttons that no longer apply, add a line saying who
        did what.  The blocks are our own message as Slack sent it back."""
        channel, ts = self._where(payload)
        message = payload.get("message") if isinstance(payload.get("message"), dict) else None
        if channel is None or ts is None or message is None or not isinstance(message.get("blocks"), list):
            return
        blocks: list[dict[str, Any]] = []
        for block in message["blocks"]:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "actions":
                kept = [el for el in block.get("elements") or [] if isinstance(el, dict)
                        and el.get("action_id") not in remove and el.get("value") not in remove_values]
                if kept:
                    blocks.append({**block, "elements": kept})
                continue
            blocks.append(block)
        # Before the trailing "SurgeWatch · incident …" context line, when there is one.
        at = len(blocks) - 1 if blocks and blocks[-1].get("type") == "context" else len(blocks)
        blocks.insert(at, {"type": "context", "elements": [{"type": "mrkdwn", "text": note[:3000]}]})
        try:
            self.web.chat_update(channel=channel, ts=ts, text=str(message.get("text") or "SurgeWatch incident"), blocks=blocks[:50])
        except SlackApiError as exc:
            # The thread reply already says what happened; a message we cannot edit is cosmetic.
            log.warning("slack: could not update message %s: %s", ts, classify_slack_error(exc, "chat.update"))


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


# -- running it ------------------------------------------------------------------------------------
def listener_from_settings(settings: Settings, env: dict[str, str] | None = None, runtime: Runtime | None = None) -> SlackActionListener:
    env = dict(os.environ) if env is None else env
    slack = settings.channels.slack
    if slack is None:
        raise ListenerError("channels.slack is not configured: the listener answers in the Slack workspace it posts to")
    app_token = env.get(APP_TOKEN_ENV)
    if not app_token:
        raise ListenerError(f"{APP_TOKEN_ENV} is not set: create an app-level token (xapp-…) with connections:write "
                            "and enable Socket Mode and Interactivity in the Slack app settings")
    bot_token = secret_from(slack.token, "SLACK_BOT_TOKEN", env)
    if not bot_token:
        raise ListenerError("SLACK_BOT_TOKEN is not set (or channels.slack.token)")
    return SlackActionListener(runtime or Runtime(settings), app_token, bot_token, slack.api_url, timeout=slack.timeout)


def run_listener(settings: Settings, *, stop: threading.Event | None = None, env: dict[str, str] | None = None) -> None:
    """Listen until SIGTERM, Ctrl-C or ``stop`` is set.  Raises :class:`ListenerError` when it cannot start."""
    stop = stop or threading.Event()
    listener = listener_from_settings(settings, env)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        listener.start()
        log.info("slack listener connected (%s); waiting for button clicks", listener.api_url)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        log.info("slack listener stopped")
