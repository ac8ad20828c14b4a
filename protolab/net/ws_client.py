"""A chat user as a thread on a plain socket: one WebSocket connection at a time (wsproto, in
`protolab.protocols.chat`), and when it drops, a reconnect with backoff, resuming from its place.

Where state lives: the user's `Inbox` (the messages it got, its last-seen id and that id's epoch)
is in this process's memory and survives every reconnect; each connection's WebSocket state is a
fresh `ClientSide`. What the user saw is recorded as data: each connection (`Session`: who
answered, from which port, what the welcome said) and each drop (`Drop`: the close code, when it
dropped, when the next welcome came).

Reconnects back off exponentially with full jitter (a random wait up to base·2^attempt, capped),
so a restarted backend's users do not all come back in the same millisecond.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field

from protolab.protocols.chat import ClientSide, Inbox

BACKOFF_BASE = 0.02  #: seconds: the first reconnect waits up to this long (random)
BACKOFF_CAP = 1.0  #: no reconnect waits longer than this


@dataclass
class Session:
    """One WebSocket connection of a user, from its welcome."""

    port: int  #: the client's own TCP port
    backend: str  #: who welcomed it
    pid: int  #: that backend's process
    known: bool  #: the backend knew the client's place (its epoch and id)
    replayed: int  #: messages the welcome said it would replay
    since: int | None  #: the resume point the client sent (None: a first connection)
    at: float  #: monotonic time of the welcome


@dataclass
class Drop:
    """A connection that ended while the user wanted it."""

    port: int  #: the client's TCP port of the connection that ended
    backend: str
    code: int  #: the close code the client got: the server's frame, or 1006 (no frame)
    at: float  #: monotonic time it ended
    back_at: float | None = None  #: the next welcome
    attempts: int = 0  #: connects tried before that welcome
    away: float = 0.0  #: seconds the user chose to stay offline first (`ChatUser.hold`)

    @property
    def reconnect_s(self) -> float | None:
        """From the drop (or the end of the time away) to the next welcome."""
        return None if self.back_at is None else self.back_at - self.at - self.away


@dataclass
class ChatUser:
    """One user: `start()` runs its connection thread; `post`, `ping`, `close` act on the
    connection of the moment."""

    name: str
    address: tuple[str, int]
    changed: threading.Condition = field(default_factory=threading.Condition)
    seed: int = 0
    inbox: Inbox = field(init=False)
    sessions: list[Session] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    pongs: int = 0
    refused: int = 0  #: connects refused, or upgrades answered with an error status

    def __post_init__(self) -> None:
        self.inbox = Inbox(self.name)
        self._lock = threading.Lock()
        self._conn: tuple[socket.socket, ClientSide] | None = None
        self._stop = threading.Event()
        self._gate = threading.Event()  #: set: reconnect when dropped; clear: wait (offline)
        self._gate.set()
        self._rng = random.Random(self.seed)
        self._thread = threading.Thread(target=self._run, name=f"chat-{self.name}", daemon=True)

    def start(self) -> ChatUser:
        self._thread.start()
        return self

    @property
    def connected(self) -> bool:
        return bool(self.sessions) and (not self.drops or self.drops[-1].back_at is not None)

    def _send(self, make: str, *args: object) -> bool:
        with self._lock:
            if self._conn is None:
                return False
            sock, side = self._conn
            data = getattr(side, make)(*args)
            try:
                sock.sendall(data)
            except OSError:
                return False
            return bool(data)

    def post(self, text: str, seq: str) -> bool:
        """Send a post on the current connection; False when there is none open."""
        return self._send("post", text, seq)

    def ping(self, payload: bytes = b"alive?") -> bool:
        return self._send("ping", payload)

    def hold(self) -> None:
        """Stay offline after the next drop, until `release` (a user away for a while)."""
        self._gate.clear()

    def release(self) -> None:
        """Back online: a drop's reconnect time counts from now, not from the drop."""
        with self.changed:
            if self.drops and self.drops[-1].back_at is None:
                self.drops[-1].away = time.monotonic() - self.drops[-1].at
        self._gate.set()

    def close(self) -> None:
        """Stop reconnecting; close the connection with 1000 and wait for the thread."""
        self._stop.set()
        self._gate.set()
        self._send("close")
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn[0].shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        self._thread.join(5)

    # -- the connection thread --------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            welcomed = self._connection(attempt)
            attempt = 0 if welcomed else attempt + 1
            if self._stop.is_set():
                return
            self._gate.wait()
            cap = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt)
            self._stop.wait(self._rng.uniform(0, cap))  # the backoff itself, not a sync

    def _connection(self, attempt: int) -> bool:
        """One connection, until it ends; True when it was welcomed."""
        try:
            sock = socket.create_connection(self.address, timeout=5)
        except OSError:
            self._count_refusal()
            return False
        with sock:
            side = ClientSide()
            port = sock.getsockname()[1]
            sock.settimeout(None)
            with self._lock:
                self._conn = (sock, side)
                sock.sendall(side.start(f"{self.address[0]}:{self.address[1]}",
                                        self.inbox.target()))
            try:
                return self._read(sock, side, port, attempt)
            finally:
                with self._lock:
                    self._conn = None

    def _read(self, sock: socket.socket, side: ClientSide, port: int, attempt: int) -> bool:
        welcomed, backend = False, "?"
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            with self._lock:
                step = side.receive(data or None)
                if step.out:
                    try:
                        sock.sendall(step.out)
                    except OSError:
                        pass
            with self.changed:
                if step.welcome is not None:
                    welcomed, backend = True, str(step.welcome.get("backend", "?"))
                    self._welcomed(step.welcome, port, attempt)
                for msg in step.messages:
                    self.inbox.got(msg)
                self.pongs += step.pongs
                if step.rejected:
                    self.refused += 1
                if step.closed is not None or not data or step.rejected:
                    if welcomed and not self._stop.is_set():
                        self.drops.append(Drop(port, backend, int(step.closed or 1006),
                                               time.monotonic()))
                    self.changed.notify_all()
                    return welcomed
                self.changed.notify_all()

    def _welcomed(self, welcome: dict, port: int, attempt: int) -> None:
        since = self.inbox.last_id
        now = time.monotonic()
        self.inbox.welcomed(welcome)
        self.sessions.append(Session(port, str(welcome.get("backend", "?")),
                                     int(welcome.get("pid", 0)), bool(welcome.get("known")),
                                     int(welcome.get("replay", 0)), since, now))
        if self.drops and self.drops[-1].back_at is None:
            self.drops[-1].back_at, self.drops[-1].attempts = now, attempt + 1

    def _count_refusal(self) -> None:
        with self.changed:
            self.refused += 1
            self.changed.notify_all()
