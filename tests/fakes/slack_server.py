"""A local stand-in for the Slack Web API, for tests and for ``surgewatch demo``.

It speaks the real wire format, so the real ``slack_sdk.WebClient(base_url=fake.base_url)`` talks to
it unchanged: ``POST /api/<method>`` with a JSON, form-encoded or multipart body (or a GET query),
the token in ``Authorization: Bearer`` (or a ``token`` field), and answers shaped like Slack's
documented responses (https://api.slack.com/methods): ``{"ok": true, "channel": "C…", "ts": "…",
"message": {...}}`` or ``{"ok": false, "error": "channel_not_found"}`` with HTTP 200, and
HTTP 429 + ``Retry-After`` when rate limited (https://api.slack.com/docs/rate-limits).

    with FakeSlack(token="xoxb-test") as slack:
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        client.chat_postMessage(channel="#ops", text="hi")
        assert slack.messages("#ops")[0]["text"] == "hi"

Socket Mode (https://api.slack.com/apis/socket-mode) too: ``apps.connections.open`` with an app-level
token (``xapp-…``) answers a ``ws://127.0.0.1:<socket_port>/link/?ticket=…`` URL, where a WebSocket
server (the ``websockets`` library) checks the ticket, says ``{"type": "hello"}``, and lets a test
play a user who clicks a button (:meth:`FakeSlack.push_interaction`) and see the app's acks
(:attr:`socket_acks`).

Run ``python -m tests.fakes.slack_server`` to keep one open on a terminal.
"""
from __future__ import annotations

import email.parser
import email.policy
import hashlib
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from surgewatch.demo.background import BackgroundHTTPServer
from tests.fakes.http_server import QuietServer
from urllib.parse import parse_qsl, urlsplit

TEAM_ID = "T0FAKE0001"
BOT_USER_ID = "U0FAKEBOT1"
BOT_ID = "B0FAKEBOT1"
APP_ID = "A0FAKEAPP1"

# Block Kit limits the real API enforces with ``invalid_blocks``
# (https://api.slack.com/reference/block-kit/blocks).  Checking them here means a rendering bug
# fails a test instead of failing in a customer's workspace.
_BLOCK_TYPES = {"section", "header", "context", "divider", "actions", "image", "rich_text", "input", "file", "video"}
_MAX_BLOCKS = 50
_TEXT_LIMITS = {"section": 3000, "header": 150}
_FIELD_LIMIT = 2000
_MAX_FIELDS = 10
_MAX_CONTEXT_ELEMENTS = 10
_MAX_MESSAGE_TEXT = 40_000




@dataclass(frozen=True)
class SlackCall:
    """One request the fake received."""

    method: str
    payload: dict[str, Any]
    headers: dict[str, str]
    status: int
    response: dict[str, Any] | None


@dataclass
class _Failure:
    error: str | None
    status: int
    retry_after: float | None
    delay: float
    body: str | None
    remaining: int


@dataclass
class _Channel:
    id: str
    name: str
    is_archived: bool = False
    is_member: bool = True
    created: int = 1_700_000_000
    messages: list[dict[str, Any]] = field(default_factory=list)
    members: list[str] = field(default_factory=list)  # user ids (conversations.members)


def channel_id_for(name: str) -> str:
    """A stable Slack-looking id for a channel name: the same name maps to the same id in every run."""
    digest = hashlib.sha1(name.lstrip("#").lower().encode()).hexdigest().upper()
    return "C" + "".join(ch for ch in digest if ch.isalnum())[:10]


class FakeSlack(BackgroundHTTPServer):
    """A threaded HTTP server on ``127.0.0.1:<free port>`` that behaves like a small Slack workspace.

    ``token``: the only bot token accepted (others get ``invalid_auth``); ``None`` accepts any token.
    ``channels``: names that exist; ``None`` creates a channel on first use of its name (ids that
    were never created still get ``channel_not_found``, like the real API).
    """

    def __init__(self, token: str | None = None, *, channels: list[str] | None = None, host: str = "127.0.0.1",
                 app_token: str | None = None):
        super().__init__(host)
        self.token = token
        self._auto_create = channels is None
        self._lock = threading.RLock()
        self._channels: dict[str, _Channel] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._uploads: dict[str, bytes] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self.calls: list[SlackCall] = []
        self._init_socket_mode(app_token)
        for name in channels or ():
            self._create_channel(name)

    # ---- lifecycle -------------------------------------------------------------------------------

    def handler_class(self) -> type:
        return type("Handler", (_SlackHandler,), {"slack": self})

    def server_class(self) -> type:
        return QuietServer

    def start(self) -> "FakeSlack":
        super().start()
        self._start_socket_mode()
        return self

    def before_stop(self) -> None:
        self._stop_socket_mode()

    @property
    def base_url(self) -> str:
        """What ``WebClient(base_url=...)`` and ``channels.slack.api_url`` take."""
        return f"http://{self._host}:{self.port}/api/"

    # ---- scripting -------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        error: str | None = "ratelimited",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        body: str | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (``"*"`` for any) fail.

        ``error="ratelimited"`` answers HTTP 429 with ``Retry-After`` (default 1), as Slack does;
        other errors answer HTTP 200 ``{"ok": false, "error": error}``; ``status`` >= 500 answers that
        status with ``body`` (an HTML page by default); ``delay`` sleeps first (to provoke a client
        timeout).  ``error=None`` with a delay only slows the call down and then succeeds.
        """
        if status is None:
            status = 429 if error in ("ratelimited", "rate_limited") else 200
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._failures.setdefault(method, []).append(
                _Failure(error=error, status=status, retry_after=retry_after, delay=delay, body=body, remaining=times)
            )

    def join(self, channel: str, *users: str) -> None:
        """Make ``users`` members of ``channel`` (what conversations.members lists)."""
        with self._lock:
            ch = self._resolve(channel, create=True)
            ch.members.extend(u for u in users if u not in ch.members)  # type: ignore[union-attr]

    def add_usergroup(self, usergroup_id: str, *users: str) -> None:
        """A user group (S…) and its members (what usergroups.users.list lists)."""
        with self._lock:
            self.usergroups[usergroup_id] = list(users)

    def revoke_token(self) -> None:
        """From now on every call answers ``invalid_auth``, as after an app is uninstalled."""
        with self._lock:
            self.token = "\0revoked"

    def archive(self, channel: str) -> None:
        with self._lock:
            self._resolve(channel, create=True).is_archived = True  # type: ignore[union-attr]

    # ---- inspection ------------------------------------------------------------------------------

    def channel_id(self, name_or_id: str) -> str:
        with self._lock:
            ch = self._resolve(name_or_id, create=True)
            assert ch is not None
            return ch.id

    def messages(self, channel: str | None = None, *, include_replies: bool = True) -> list[dict[str, Any]]:
        """Messages as they are now (after updates), oldest first; each carries its ``channel`` id."""
        with self._lock:
            if channel is None:
                chans = list(self._channels.values())
            else:
                ch = self._resolve(channel, create=False)
                chans = [ch] if ch else []
            out = [
                dict(m, channel=c.id)
                for c in chans
                for m in c.messages
                if include_replies or "thread_ts" not in m or m["thread_ts"] == m["ts"]
            ]
        return sorted(out, key=lambda m: float(m["ts"]))

    def replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages(channel) if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]

    def calls_to(self, method: str) -> list[SlackCall]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def uploaded(self) -> dict[str, bytes]:
        """file id -> bytes received on the upload URL."""
        with self._lock:
            return dict(self._uploads)

    # ---- the workspace ---------------------------------------------------------------------------

    def _create_channel(self, name: str) -> _Channel:
        name = name.lstrip("#")
        ch = _Channel(id=channel_id_for(name), name=name)
        self._channels[ch.id] = ch
        return ch

    def _resolve(self, ref: str | None, *, create: bool) -> _Channel | None:
        """Channel by id (``C…``) or name (``#ops`` / ``ops``)."""
        if not ref:
            return None
        if ref in self._channels:
            return self._channels[ref]
        name = ref.lstrip("#")
        for ch in self._channels.values():
            if ch.name == name:
                return ch
        looks_like_id = not ref.startswith("#") and ref[:1] in ("C", "G", "D") and ref[1:].isalnum() and ref.isupper()
        if create and self._auto_create and not looks_like_id:
            return self._create_channel(name)
        return None

    def _next_ts(self) -> str:
        micro = 1_700_000_000_000_100 + (next(self._ts) - 1) * 100
        return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            for key in (method, "*"):
                queue = self._failures.get(key)
                if queue:
                    f = queue[0]
                    f.remaining -= 1
                    if f.remaining <= 0:
                        queue.pop(0)
                    return f
        return None

    def _record(self, call: SlackCall) -> None:
        with self._lock:
            self.calls.append(call)

    # ---- methods: each takes the parsed payload and returns the JSON answer ------------------------

    def handle(self, method: str, payload: dict[str, Any], token: str | None) -> dict[str, Any]:
        if not token:
            return {"ok": False, "error": "not_authed"}
        if method == "apps.connections.open":
            # The one method that takes the app-level token, not the bot token.
            with self._lock:
                return self._m_apps_connections_open(token)
        if self.token is not None and token != self.token:
            return {"ok": False, "error": "invalid_auth"}
        fn = getattr(self, "_m_" + method.replace(".", "_"), None)
        if fn is None:
            return {"ok": False, "error": "unknown_method", "req_method": method}
        with self._lock:
            return fn(payload)

    def _m_api_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "args": {k: v for k, v in p.items() if k != "token"}}

    def _m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True, "url": "https://fake-workspace.slack.com/", "team": "Fake Workspace", "user": "surgewatch",
            "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False,
        }

    def _writable(self, ref: str | None) -> tuple[_Channel | None, dict[str, Any] | None]:
        ch = self._resolve(ref, create=True)
        if ch is None:
            return None, {"ok": False, "error": "channel_not_found"}
        if ch.is_archived:
            return None, {"ok": False, "error": "is_archived"}
        return ch, None

    def _message(self, p: dict[str, Any], ts: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        text = p.get("text") or ""
        blocks = p.get("blocks")
        if isinstance(blocks, str):  # form-encoded clients send blocks as a JSON string
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return None, {"ok": False, "error": "invalid_blocks_format"}
        if not text and not blocks and not p.get("attachments"):
            return None, {"ok": False, "error": "no_text"}
        if len(text) > _MAX_MESSAGE_TEXT:
            return None, {"ok": False, "error": "msg_too_long"}
        if blocks is not None:
            problems = validate_blocks(blocks)
            if problems:
                return None, {"ok": False, "error": "invalid_blocks", "errors": problems,
                              "response_metadata": {"messages": [f"[ERROR] {x}" for x in problems]}}
        msg: dict[str, Any] = {
            "type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID, "team": TEAM_ID,
            "text": text, "ts": ts,
        }
        if blocks is not None:
            msg["blocks"] = blocks
        metadata = p.get("metadata")
        if isinstance(metadata, str):  # form-encoded clients send it as a JSON string
            try:
                metadata = json.loads(metadata)
            except ValueError:
                return None, {"ok": False, "error": "invalid_metadata_format"}
        if metadata is not None:
            # https://api.slack.com/metadata/using: {"event_type": ..., "event_payload": {...}}
            if not isinstance(metadata, dict) or "event_type" not in metadata or "event_payload" not in metadata:
                return None, {"ok": False, "error": "invalid_metadata_schema"}
            msg["metadata"] = metadata
        if p.get("attachments"):
            msg["attachments"] = p["attachments"]
        return msg, None

    def _m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        ch, err = self._writable(p.get("channel"))
        if err:
            return err
        assert ch is not None
        ts = self._next_ts()
        msg, err = self._message(p, ts)
        if err:
            return err
        assert msg is not None
        thread_ts = p.get("thread_ts")
        if thread_ts:
            parent = next((m for m in ch.messages if m["ts"] == thread_ts), None)
            if parent is None:
                # Slack posts to the channel anyway when thread_ts is unknown; we are stricter,
                # because in our code it always means a lost receipt.
                return {"ok": False, "error": "thread_not_found"}
            msg["thread_ts"] = thread_ts
            parent.setdefault("thread_ts", thread_ts)
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["latest_reply"] = ts
        ch.messages.append(msg)
        return {"ok": True, "channel": ch.id, "ts": ts, "message": dict(msg)}

    def _m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        # chat.update wants the channel id, not its name (https://api.slack.com/methods/chat.update).
        ch = self._channels.get(p.get("channel") or "")
        if ch is None:
            return {"ok": False, "error": "channel_not_found"}
        if ch.is_archived:
            return {"ok": False, "error": "is_archived"}
        old = next((m for m in ch.messages if m["ts"] == p.get("ts")), None)
        if old is None:
            return {"ok": False, "error": "message_not_found"}
        new, err = self._message(p, old["ts"])
        if err:
            return err
        assert new is not None
        for keep in ("thread_ts", "reply_count", "latest_reply"):
            if keep in old:
                new[keep] = old[keep]
        new["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        new["previous_versions"] = old.get("previous_versions", 0) + 1
        old.clear()
        old.update(new)
        return {"ok": True, "channel": ch.id, "ts": new["ts"], "text": new["text"], "message": dict(new)}

    def _channel_object(self, ch: _Channel) -> dict[str, Any]:
        return {
            "id": ch.id, "name": ch.name, "is_channel": True, "is_group": False, "is_im": False,
            "is_private": False, "is_archived": ch.is_archived, "is_member": ch.is_member,
            "created": ch.created, "creator": BOT_USER_ID, "name_normalized": ch.name,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
            "num_members": 3,
        }

    def _m_conversations_list(self, p: dict[str, Any]) -> dict[str, Any]:
        chans = [self._channel_object(c) for c in self._channels.values()]
        if str(p.get("exclude_archived", "")).lower() in ("1", "true"):
            chans = [c for c in chans if not c["is_archived"]]
        return {"ok": True, "channels": chans, "response_metadata": {"next_cursor": ""}}

    def _m_conversations_members(self, p: dict[str, Any]) -> dict[str, Any]:
        # https://api.slack.com/methods/conversations.members (one page: the fake's channels are small)
        ch = self._channels.get(p.get("channel") or "")
        if ch is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "members": list(ch.members), "response_metadata": {"next_cursor": ""}}

    def _m_usergroups_users_list(self, p: dict[str, Any]) -> dict[str, Any]:
        # https://api.slack.com/methods/usergroups.users.list
        users = self.usergroups.get(p.get("usergroup") or "")
        if users is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(users)}

    def _m_conversations_info(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channels.get(p.get("channel") or "")
        if ch is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": self._channel_object(ch)}

    def _m_conversations_history(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channels.get(p.get("channel") or "")
        if ch is None:
            return {"ok": False, "error": "channel_not_found"}
        # History holds top-level messages only, newest first; replies live in conversations.replies.
        top = [dict(m) for m in ch.messages if m.get("thread_ts") in (None, m["ts"])]
        if str(p.get("include_all_metadata", "")).lower() not in ("1", "true"):
            for m in top:
                m.pop("metadata", None)  # Slack returns metadata only when asked
        top.sort(key=lambda m: float(m["ts"]), reverse=True)
        limit = int(p.get("limit") or 100)
        return {"ok": True, "messages": top[:limit], "has_more": len(top) > limit, "pin_count": 0,
                "response_metadata": {"next_cursor": ""}}

    def _m_conversations_replies(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channels.get(p.get("channel") or "")
        if ch is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = p.get("ts")
        thread = [dict(m) for m in ch.messages if m["ts"] == ts or m.get("thread_ts") == ts]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        thread.sort(key=lambda m: float(m["ts"]))
        return {"ok": True, "messages": thread, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _m_files_getUploadURLExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        if not p.get("filename") or not str(p.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F0FAKE{next(self._ids):04d}"
        self._files[file_id] = {"id": file_id, "name": p["filename"], "title": p["filename"], "size": int(p["length"])}
        return {"ok": True, "upload_url": f"http://{self._host}:{self.port}/upload/v1/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        try:
            files = json.loads(p.get("files") or "[]") if isinstance(p.get("files"), str) else p.get("files") or []
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        out = []
        for f in files:
            info = self._files.get(f.get("id"))
            if info is None or info["id"] not in self._uploads:
                return {"ok": False, "error": "file_not_found"}
            info = dict(info, title=f.get("title") or info["title"], mimetype="image/png" if info["name"].endswith(".png") else "application/octet-stream")
            self._files[info["id"]] = info
            out.append(info)
        target = p.get("channel_id") or (p.get("channels") or "").split(",")[0]
        if target:
            ch, err = self._writable(target)
            if err:
                return err
            assert ch is not None
            msg = {"type": "message", "subtype": "file_share", "user": BOT_USER_ID, "bot_id": BOT_ID,
                   "text": p.get("initial_comment") or "", "files": out, "ts": self._next_ts()}
            if p.get("thread_ts"):
                msg["thread_ts"] = p["thread_ts"]
            ch.messages.append(msg)
        return {"ok": True, "files": out}

    # ---- Socket Mode (https://api.slack.com/apis/socket-mode) ---------------------------------------

    def _init_socket_mode(self, app_token: str | None) -> None:
        self.app_token = app_token  # None: any ``xapp-`` token is accepted
        self._tickets: set[str] = set()
        self._sessions: list[_SocketSession] = []
        self._pushed_at: dict[str, float] = {}
        self._acked_at: dict[str, float] = {}
        self._envelope_ids = itertools.count(1)
        self.socket_acks: list[dict[str, Any]] = []  # what the app sent back that names an envelope
        self.socket_received: list[Any] = []  # every text frame the app sent, parsed
        self.ephemerals: list[dict[str, Any]] = []  # chat.postEphemeral: seen by one user, kept out of history
        self._ws_server: Any = None

    @property
    def socket_port(self) -> int:
        """Where Socket Mode's WebSocket server listens (``apps.connections.open`` hands out its URL)."""
        if self._ws_server is None:
            raise RuntimeError("FakeSlack is not started")
        return int(self._ws_server.socket.getsockname()[1])

    def _start_socket_mode(self) -> None:
        from websockets.sync.server import serve

        self._ws_server = serve(self._socket_session, self._host, 0, process_request=self._check_ticket,
                                compression=None, ping_interval=None, server_header="FakeSlack/1.0")
        threading.Thread(target=self._ws_server.serve_forever, name="fake-slack-socket-mode", daemon=True).start()

    def _stop_socket_mode(self) -> None:
        self._close_sockets()
        if self._ws_server is not None:
            self._ws_server.shutdown()
            self._ws_server = None

    def _check_ticket(self, connection: Any, request: Any) -> Any:
        """Only a URL ``apps.connections.open`` handed out opens a session (401 otherwise)."""
        url = urlsplit(request.path)
        with self._lock:
            known = url.path == "/link/" and dict(parse_qsl(url.query)).get("ticket") in self._tickets
        return None if known else connection.respond(401, "invalid ticket or handshake\n")

    def _socket_session(self, connection: Any) -> None:
        """One app connection: say hello, then take the app's messages until it leaves."""
        from websockets.exceptions import ConnectionClosed

        session = _SocketSession(connection)
        with self._lock:
            self._sessions.append(session)
            count = sum(1 for s in self._sessions if s.open)
        try:
            session.send_text(json.dumps({
                "type": "hello", "num_connections": count,
                "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }))
            for message in connection:
                self._socket_text(message if isinstance(message, str) else message.decode("utf-8", "replace"))
        except ConnectionClosed:
            pass
        finally:
            session.open = False

    def _m_apps_connections_open(self, token: str) -> dict[str, Any]:
        # A bot token here is Slack's "not_allowed_token_type"
        # (https://api.slack.com/methods/apps.connections.open#errors).
        if not token.startswith("xapp-"):
            return {"ok": False, "error": "not_allowed_token_type"}
        if self.app_token is not None and token != self.app_token:
            return {"ok": False, "error": "invalid_auth"}
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        return {"ok": True, "url": f"ws://{self._host}:{self.socket_port}/link/?ticket={ticket}&app_id={APP_ID}"}

    def _m_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        ch, err = self._writable(p.get("channel"))
        if err:
            return err
        assert ch is not None
        if not p.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        msg, err = self._message(p, self._next_ts())
        if err:
            return err
        assert msg is not None
        entry = dict(msg, channel=ch.id, user=p["user"])
        if p.get("thread_ts"):
            entry["thread_ts"] = p["thread_ts"]
        self.ephemerals.append(entry)
        return {"ok": True, "message_ts": msg["ts"]}

    def socket_sessions(self) -> int:
        """Open app connections."""
        with self._lock:
            return sum(1 for s in self._sessions if s.open)

    def wait_for_socket(self, timeout: float = 5.0, count: int = 1) -> bool:
        return self.wait_for(lambda f: f.socket_sessions() >= count, timeout)

    def interaction_payload(
        self,
        action_id: str,
        value: str,
        *,
        channel: str,
        message_ts: str,
        user_id: str = "U0HUMAN001",
        user_name: str = "sam",
        block_id: str = "surgewatch_incident_actions",
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A ``block_actions`` payload as Slack documents it
        (https://api.slack.com/reference/interaction-payloads/block-actions), for a button on the
        message ``message_ts`` in ``channel``.  The message is the fake's current copy unless given."""
        with self._lock:
            ch = self._resolve(channel, create=False)
            channel_id = ch.id if ch else channel
            if message is None and ch is not None:
                found = next((m for m in ch.messages if m["ts"] == message_ts), None)
                message = json.loads(json.dumps(found)) if found else None
        message = message or {"type": "message", "ts": message_ts, "text": "", "blocks": []}
        label = action_id
        for block in message.get("blocks") or []:
            for el in block.get("elements") or [] if block.get("type") == "actions" else []:
                if el.get("action_id") == action_id:
                    label = (el.get("text") or {}).get("text", action_id)
        return {
            "type": "block_actions",
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": False},
            "trigger_id": f"{next(self._ids)}.{TEAM_ID}.fake",
            "team": {"id": TEAM_ID, "domain": "fake-workspace"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": ch.name if ch else channel.lstrip("#")},
            "message": message,
            "state": {"values": {}},
            "response_url": f"http://{self._host}:{self.port}/actions/{TEAM_ID}/fake",
            "actions": [{
                "action_id": action_id, "block_id": block_id, "value": value, "type": "button",
                "text": {"type": "plain_text", "text": label, "emoji": True}, "action_ts": f"{time.time():.6f}",
            }],
        }

    def push_interaction(self, action_id: str, value: str, *, timeout: float = 5.0, **kw: Any) -> str:
        """A user clicks a button: send an ``interactive`` envelope to a connected app.  Returns the
        envelope id, to look up the app's ack (``wait_for_ack``).  ``kw``: see :meth:`interaction_payload`."""
        return self.push_envelope({"type": "interactive", "accepts_response_payload": False,
                                   "payload": self.interaction_payload(action_id, value, **kw)}, timeout=timeout)

    def push_envelope(self, envelope: dict[str, Any], *, timeout: float = 5.0) -> str:
        """Send any envelope (an ``envelope_id`` is added when missing) to the newest open session."""
        if not self.wait_for_socket(timeout):
            raise TimeoutError("no app is connected over Socket Mode")
        envelope = dict(envelope)
        envelope.setdefault("envelope_id", f"{next(self._envelope_ids):08d}-fake-{secrets.token_hex(4)}")
        with self._lock:
            session = [s for s in self._sessions if s.open][-1]
            self._pushed_at[envelope["envelope_id"]] = time.monotonic()
        session.send_text(json.dumps(envelope))
        return str(envelope["envelope_id"])

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any] | None:
        self.wait_for(lambda f: f._ack(envelope_id) is not None, timeout)
        return self._ack(envelope_id)

    def _ack(self, envelope_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next((a for a in self.socket_acks if a.get("envelope_id") == envelope_id), None)

    def ack_latency(self, envelope_id: str) -> float | None:
        """Seconds from the push to the app's ack (Slack wants it within 3 s)."""
        with self._lock:
            if envelope_id not in self._acked_at:
                return None
            return self._acked_at[envelope_id] - self._pushed_at[envelope_id]

    def refresh_sockets(self) -> None:
        """Slack asks apps to reconnect now and then: ``{"type": "disconnect"}``, then it closes."""
        with self._lock:
            sessions = [s for s in self._sessions if s.open]
        for s in sessions:
            s.send_text(json.dumps({"type": "disconnect", "reason": "refresh_requested",
                                    "debug_info": {"host": "applink-fake"}}))
            s.close(1000)

    def _close_sockets(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.close(1001)

    def _socket_text(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            data = {"_unparsable": text}
        with self._lock:
            self.socket_received.append(data)
            if isinstance(data, dict) and "envelope_id" in data:
                self.socket_acks.append(data)
                self._acked_at.setdefault(str(data["envelope_id"]), time.monotonic())


def validate_blocks(blocks: Any) -> list[str]:
    """The subset of Block Kit validation the real API does that our messages could trip."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    problems: list[str] = []
    if len(blocks) > _MAX_BLOCKS:
        problems.append(f"must provide an array with no more than {_MAX_BLOCKS} items [json-pointer:/blocks]")
    for i, b in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}]"
        if not isinstance(b, dict) or b.get("type") not in _BLOCK_TYPES:
            problems.append(f"unsupported block type {where}")
            continue
        kind = b["type"]
        text = b.get("text")
        if kind == "header" and (not isinstance(text, dict) or text.get("type") != "plain_text"):
            problems.append(f"header text must be plain_text {where}")
        if isinstance(text, dict):
            limit = _TEXT_LIMITS.get(kind, 3000)
            if not text.get("text"):
                problems.append(f"must be more than 0 characters {where}/text")
            elif len(text["text"]) > limit:
                problems.append(f"must be less than {limit + 1} characters {where}/text")
        if kind == "section" and text is None and not b.get("fields"):
            problems.append(f"section needs text or fields {where}")
        fields = b.get("fields") or []
        if len(fields) > _MAX_FIELDS:
            problems.append(f"must provide an array with no more than {_MAX_FIELDS} items {where}/fields")
        for j, f in enumerate(fields):
            if not f.get("text") or len(f["text"]) > _FIELD_LIMIT:
                problems.append(f"must be 1-{_FIELD_LIMIT} characters {where}/fields/{j}")
        if kind == "context":
            elements = b.get("elements") or []
            if not elements or len(elements) > _MAX_CONTEXT_ELEMENTS:
                problems.append(f"context needs 1-{_MAX_CONTEXT_ELEMENTS} elements {where}/elements")
        if kind == "actions":
            for j, el in enumerate(b.get("elements") or []):
                if el.get("type") == "button" and len((el.get("text") or {}).get("text", "")) > 75:
                    problems.append(f"must be less than 76 characters {where}/elements/{j}/text")
                confirm = el.get("confirm")
                if confirm is not None:
                    # https://api.slack.com/reference/block-kit/composition-objects#confirm
                    for part, limit in (("title", 100), ("text", 300), ("confirm", 30), ("deny", 30)):
                        obj = confirm.get(part) if isinstance(confirm, dict) else None
                        if not isinstance(obj, dict) or obj.get("type") != "plain_text" or not obj.get("text") \
                                or len(obj["text"]) > limit:
                            problems.append(f"confirm {part} must be plain_text of 1-{limit} characters "
                                            f"{where}/elements/{j}/confirm/{part}")
                    if isinstance(confirm, dict) and confirm.get("style") not in (None, "primary", "danger"):
                        problems.append(f"invalid confirm style {where}/elements/{j}/confirm/style")
    return problems


class _SocketSession:
    """One app connection over Socket Mode (a ``websockets`` server connection); envelopes go out from
    the test's thread while the session's own thread reads."""

    def __init__(self, connection: Any):
        self.connection = connection
        self.open = True

    def send_text(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        if not self.open:
            raise ConnectionError("the Socket Mode session is closed")
        try:
            self.connection.send(text)
        except ConnectionClosed as exc:
            self.open = False
            raise ConnectionError("the Socket Mode session is closed") from exc

    def close(self, code: int = 1000) -> None:
        """The closing handshake (the library waits for the app's answer, so nothing sent is lost)."""
        if self.open:
            self.open = False
            threading.Thread(target=self.connection.close, args=(code,), daemon=True).start()


class _SlackHandler(BaseHTTPRequestHandler):
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for each.
    disable_nagle_algorithm = True
    slack: FakeSlack
    server_version = "FakeSlack/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _read_payload(self) -> dict[str, Any]:
        url = urlsplit(self.path)
        payload: dict[str, Any] = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").lower()
        if not raw:
            return payload
        if ctype.startswith("application/json"):
            body = json.loads(raw.decode("utf-8"))
            if isinstance(body, dict):
                payload.update(body)
        elif ctype.startswith("application/x-www-form-urlencoded"):
            payload.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        elif ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
            )
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                data = part.get_payload(decode=True) or b""
                payload[name] = data if part.get_filename() else data.decode("utf-8", "replace")
        else:
            payload["_raw"] = raw
        return payload

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        headers = dict(self.headers.items())
        if path.startswith("/upload/v1/"):
            # The upload URL takes the raw file bytes (slack_sdk posts them without a content
            # type, so urllib labels them form-encoded: never parse them).
            file_id = path.rsplit("/", 1)[-1]
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with self.slack._lock:
                known = file_id in self.slack._files
                if known:
                    self.slack._uploads[file_id] = raw
            self.slack._record(SlackCall("upload", {"file_id": file_id, "bytes": len(raw)}, headers, 200 if known else 404, None))
            self._send(200 if known else 404, f"OK - {len(raw)}".encode(), "text/plain")
            return
        try:
            payload = self._read_payload()
        except ValueError:
            self._send(200, b'{"ok":false,"error":"invalid_json"}', "application/json; charset=utf-8")
            return
        if not path.startswith("/api/"):
            self._send(404, b"not found", "text/plain")
            return

        method = path[len("/api/"):]
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else payload.get("token")

        failure = self.slack._take_failure(method)
        if failure is not None:
            if failure.delay:
                time.sleep(failure.delay)
            if failure.error is not None or failure.status != 200:
                self._fail(method, payload, headers, failure)
                return

        answer = self.slack.handle(method, payload, token)
        # Slack answers HTTP 200 for every API-level error, unknown methods included.
        self.slack._record(SlackCall(method, payload, headers, 200, answer))
        self._send(200, json.dumps(answer).encode(), "application/json; charset=utf-8")

    def _fail(self, method: str, payload: dict[str, Any], headers: dict[str, str], f: _Failure) -> None:
        extra: dict[str, str] = {}
        if f.retry_after is not None:
            extra["Retry-After"] = str(int(f.retry_after) if float(f.retry_after).is_integer() else f.retry_after)
        if f.status >= 500:
            body = (f.body if f.body is not None else "<html><body>Service Unavailable</body></html>").encode()
            self.slack._record(SlackCall(method, payload, headers, f.status, None))
            self._send(f.status, body, "text/html", extra)
            return
        answer = {"ok": False, "error": f.error or "ratelimited"}
        if f.body is not None:
            body = f.body.encode()
        else:
            body = json.dumps(answer).encode()
        self.slack._record(SlackCall(method, payload, headers, f.status, answer))
        self._send(f.status, body, "application/json; charset=utf-8", extra)


if __name__ == "__main__":  # pragma: no cover - manual use
    with FakeSlack() as fake:
        print(f"fake Slack Web API on {fake.base_url} (any token); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
