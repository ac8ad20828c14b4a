"""A chat on WebSocket, sans-IO: what each end keeps for a long-lived connection, and what a
restart takes away.

Where state lives:
- the WebSocket connection itself (wsproto's `WSConnection`: handshake done, open, closing) and
  the chat's per-connection state (`ServerSide`: who is subscribed, the last message id sent to
  this client) are in the one server process that holds the socket. Kill it and both are gone: the
  client sees the TCP connection end with no close frame (code 1006, RFC 6455 section 7.1.5), or a
  close frame 1001 (going away) when the server stops gracefully.
- the history and the message ids: `Design.MEMORY` keeps them in the process too (`MemoryLog`), so
  a restarted backend starts at id 1 and knows no client's place; `Design.PUBSUB` and
  `Design.RESUME` number messages in a shared store (Redis INCR) and fan them out to every backend
  (Redis pub/sub); only `Design.RESUME` also keeps the history there, so a client that comes back
  with its last-seen id (`Inbox.resume_point`, in the upgrade request's target) gets what it
  missed, replayed from the store.
- the client keeps its last-seen id, the epoch it belongs to (`Inbox`), and its messages.

The wire format is one JSON object per text frame: `post` (client → server), `welcome` and `msg`
(server → client). No sockets, threads or clock here (the adapters are `protolab.net.ws_backend`
and `protolab.net.ws_client`).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import parse_qs, urlencode, urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

PATH = "/chat"
MAX_HISTORY = 100_000  #: messages a `MemoryLog` keeps (the oldest go first)
MAX_QUEUED = 10_000  #: live messages held for a connection while its replay is being read
GOING_AWAY = 1001  #: RFC 6455 section 7.4.1: the server is going down
NORMAL = 1000


class Design(Enum):
    MEMORY = "memory"  #: ids, history and fan-out in each backend process
    PUBSUB = "pubsub"  #: ids and fan-out shared (Redis INCR, pub/sub); no history kept
    RESUME = "resume"  #: as pubsub, and the history in the store: a client resumes from its id

    @property
    def shared(self) -> bool:
        """Messages reach every backend's clients (through the shared store)."""
        return self is not Design.MEMORY

    @property
    def replays(self) -> bool:
        """A client's missed messages can be replayed on reconnect, from the shared store."""
        return self is Design.RESUME


@dataclass(frozen=True)
class ChatMessage:
    """One chat message as the server numbered it."""

    id: int  #: its number in its epoch (the store's, or one backend process's)
    user: str  #: who posted it
    text: str
    seq: str  #: the poster's own name for it ("u1-7"): how a client counts what it got
    via: str  #: the backend that took the post

    def encode(self) -> str:
        return json.dumps({"type": "msg", "id": self.id, "user": self.user, "text": self.text,
                           "seq": self.seq, "via": self.via})

    @staticmethod
    def decode(obj: dict) -> ChatMessage | None:
        try:
            return ChatMessage(int(obj["id"]), str(obj["user"]), str(obj["text"]),
                               str(obj["seq"]), str(obj.get("via", "")))
        except (KeyError, TypeError, ValueError):
            return None


def chat_target(user: str, since: int | None = None, epoch: str = "") -> str:
    """The upgrade request's target: the user and, on a reconnect, the resume point."""
    query = {"user": user}
    if since is not None:
        query.update(since=str(since), epoch=epoch)
    return f"{PATH}?{urlencode(query)}"


def parse_target(target: str) -> tuple[str, int | None, str]:
    """(user, since, epoch) from an upgrade target; since is None on a first connection."""
    q = parse_qs(urlsplit(target).query)
    since = q.get("since", [""])[0]
    return (q.get("user", ["?"])[0], int(since) if since.isdigit() else None,
            q.get("epoch", [""])[0])


class MemoryLog:
    """The memory design's ids and history: a counter and a list in one backend process."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch  #: "b1-1234": ids mean something only in this process
        self.last_id = 0
        self._history: deque[ChatMessage] = deque(maxlen=MAX_HISTORY)

    def post(self, user: str, text: str, seq: str, via: str) -> ChatMessage:
        self.last_id += 1
        msg = ChatMessage(self.last_id, user, text, seq, via)
        self._history.append(msg)
        return msg

    def since(self, last: int) -> list[ChatMessage]:
        return [m for m in self._history if m.id > last]


def decode(text: str) -> dict:
    """One frame's JSON object ({} when it is not one)."""
    try:
        obj = json.loads(text)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


# -- the server's end of one connection -----------------------------------------------------------


@dataclass
class ServerStep:
    """What one chunk of received bytes made the server's end do."""

    out: bytes = b""  #: to send now (the 101, a pong, the close reply)
    opened: bool = False  #: the upgrade was accepted in this step
    posts: list[tuple[str, str]] = field(default_factory=list)  #: (text, seq) to number, fan out
    closed: bool = False  #: the connection is over (close frame, or the TCP connection ended)


class ServerSide:
    """One client's WebSocket at the server, and the chat state kept for it: the user, its
    resume point, the last message id sent (`last_sent`). Until `start` the connection replays:
    live messages are queued so that none overtakes the history."""

    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.user = ""
        self.since: int | None = None
        self.epoch = ""
        self.last_sent = 0
        self.replaying = True
        self.close_code: int | None = None
        self._queued: deque[ChatMessage] = deque(maxlen=MAX_QUEUED)

    @property
    def open(self) -> bool:
        return self.ws.state is ConnectionState.OPEN

    def receive(self, data: bytes | None) -> ServerStep:
        """Feed bytes (None: the TCP connection ended) and act on the events."""
        step = ServerStep()
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Request):
                step.out += self.ws.send(AcceptConnection())
                self.user, self.since, self.epoch = parse_target(event.target)
                step.opened = True
            elif isinstance(event, TextMessage):
                obj = decode(event.data)
                if obj.get("type") == "post":
                    step.posts.append((str(obj.get("text", "")), str(obj.get("seq", ""))))
            elif isinstance(event, Ping):
                step.out += self.ws.send(event.response())
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    step.out += self.ws.send(event.response())
                step.closed = True
        return step

    def start(self, welcome: dict, history: list[ChatMessage], known: bool) -> bytes:
        """The welcome, then the history after the client's place (when this epoch `known`s
        it), then what arrived live meanwhile; from now on `deliver` sends at once."""
        self.last_sent = self.since if known and self.since is not None else 0
        out = self._text(json.dumps({"type": "welcome", "user": self.user, "known": known,
                                     "replay": sum(1 for m in history if m.id > self.last_sent),
                                     **welcome}))
        self.replaying = False
        for msg in [*history, *self._queued]:
            out += self.deliver(msg)
        self._queued.clear()
        return out

    def deliver(self, msg: ChatMessage) -> bytes:
        """The frame for `msg`, once: b"" for one already sent (replayed and live), or while
        the replay is being read (it is queued), or on a connection no longer open."""
        if self.replaying:
            self._queued.append(msg)
            return b""
        if msg.id <= self.last_sent or not self.open:
            return b""
        self.last_sent = msg.id
        return self._text(msg.encode())

    def _text(self, text: str) -> bytes:
        return self.ws.send(TextMessage(data=text)) if self.open else b""

    def close(self, code: int = GOING_AWAY, reason: str = "") -> bytes:
        """A close frame (RFC 6455 section 5.5.1), when the connection is still open."""
        return self.ws.send(CloseConnection(code, reason)) if self.open else b""


# -- the client's end ------------------------------------------------------------------------------


@dataclass
class ClientStep:
    out: bytes = b""  #: to send now (a pong, the close reply)
    welcome: dict | None = None  #: the server's welcome, when it came in this step
    messages: list[ChatMessage] = field(default_factory=list)
    pongs: int = 0
    rejected: int = 0  #: the HTTP status of a refused upgrade (a 502 from the balancer)
    closed: int | None = None  #: the close code: the server's frame, or 1006 when none came


class ClientSide:
    """One WebSocket connection at the client (wsproto)."""

    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)

    @property
    def open(self) -> bool:
        return self.ws.state is ConnectionState.OPEN

    def start(self, host: str, target: str) -> bytes:
        """The upgrade request: GET target with a fresh Sec-WebSocket-Key (wsproto's)."""
        return self.ws.send(Request(host=host, target=target))

    def receive(self, data: bytes | None) -> ClientStep:
        step = ClientStep()
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                obj = decode(event.data)
                if obj.get("type") == "welcome":
                    step.welcome = obj
                elif (msg := ChatMessage.decode(obj)) is not None:
                    step.messages.append(msg)
            elif isinstance(event, Ping):
                step.out += self.ws.send(event.response())
            elif isinstance(event, Pong):
                step.pongs += 1
            elif isinstance(event, RejectConnection):
                step.rejected = event.status_code
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    step.out += self.ws.send(event.response())
                step.closed = event.code
            elif isinstance(event, AcceptConnection):
                pass  # the 101: the welcome frame follows
        return step

    def post(self, text: str, seq: str) -> bytes:
        return self.ws.send(TextMessage(data=json.dumps({"type": "post", "text": text,
                                                          "seq": seq}))) if self.open else b""

    def ping(self, payload: bytes) -> bytes:
        return self.ws.send(Ping(payload)) if self.open else b""

    def close(self, code: int = NORMAL) -> bytes:
        return self.ws.send(CloseConnection(code)) if self.open else b""


@dataclass
class Inbox:
    """What one user keeps across connections: the messages it got (by the poster's seq), its
    place (last id seen, and the epoch that id belongs to)."""

    user: str
    seqs: set[str] = field(default_factory=set)  #: every message received, by its seq
    last_id: int | None = None  #: the last id seen; None before the first welcome
    epoch: str = ""  #: whose ids: the store's, or one backend process's
    duplicates: int = 0  #: messages received twice (same seq)

    def target(self) -> str:
        """The upgrade target: first connection, or resume from the last id seen."""
        return chat_target(self.user, self.last_id, self.epoch)

    def welcomed(self, welcome: dict) -> None:
        epoch = str(welcome.get("epoch", ""))
        if epoch != self.epoch:  # another epoch: its ids start again
            self.epoch, self.last_id = epoch, 0
        elif self.last_id is None:
            self.last_id = 0

    def got(self, msg: ChatMessage) -> None:
        if msg.seq in self.seqs:
            self.duplicates += 1
        self.seqs.add(msg.seq)
        self.last_id = max(self.last_id or 0, msg.id)
