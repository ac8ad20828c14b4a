"""`python -m protolab.net.ws_backend --design memory|pubsub|resume --id b1 [--port P]
[--redis URL --room NAME]`: one chat backend process speaking WebSocket (wsproto, sans-IO, in
`protolab.protocols.chat`) over plain sockets.

Where state lives: each accepted connection is a socket in this process's kernel table and a
`ServerSide` in its memory (the WebSocket state, the user, the last message id sent); both die with
the process. With `memory` the ids and the history are this process's too (`MemoryLog`, epoch
"b1-PID"); with `pubsub`/`resume` they are in the Redis (`protolab.net.chat_store`) and this
process only fans out what its subscription brings. It prints `ready PORT` once it listens (and,
shared designs, is subscribed); SIGTERM sends each client a close frame 1001 (going away), waits
a little for the replies, and exits. SIGKILL leaves the kernel to end the connections (FIN, or RST
when unread bytes were left).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading

from protolab.net import child, lifecycle
from protolab.net.server_thread import TcpServerThread
from protolab.protocols.chat import GOING_AWAY, ChatMessage, Design, MemoryLog, ServerSide

SEND_TIMEOUT = 5.0  #: a client that reads nothing for this long is dropped, not waited for
STOP_WAIT = 1.0  #: how long a graceful stop waits for the clients' close replies


class Conn:
    """One client: its socket and its `ServerSide`, used under one lock (wsproto is not
    thread-safe, and frames must leave in the order wsproto made them)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.side = sock, ServerSide()
        self.lock = threading.Lock()

    def send(self, data: bytes) -> None:
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the client went away: its reader ends the connection

    def deliver(self, msg: ChatMessage) -> None:
        with self.lock:
            self.send(self.side.deliver(msg))


class ChatHub(TcpServerThread):
    """This process's chat: its connections, and how a post reaches them."""

    def __init__(self, design: Design, backend: str, port: int, redis: str, room: str) -> None:
        super().__init__(port=port)
        self.listener.listen(socket.SOMAXCONN)
        self.design, self.backend = design, backend
        self.conns: set[Conn] = set()
        self.lock = threading.Lock()
        self.log = MemoryLog(f"{backend}-{os.getpid()}")
        self.epoch = self.log.epoch
        self.bus = None
        if design.shared:
            from protolab.net.chat_store import RedisChat

            self.bus = RedisChat(redis, room)
            self.epoch = f"room-{room}"
            self.bus.subscribe(self.fan_out)

    def fan_out(self, msg: ChatMessage) -> None:
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            conn.deliver(msg)

    def post(self, user: str, text: str, seq: str) -> None:
        if self.bus is not None:
            self.bus.post(user, text, seq, self.backend, keep=self.design.replays)
            return  # the subscription brings it back, to this process's clients too
        with self.lock:  # memory: numbered and fanned out in one step, so in id order
            msg = self.log.post(user, text, seq, self.backend)
            for conn in self.conns:
                conn.deliver(msg)

    def join(self, conn: Conn) -> None:
        """Subscribe the connection, then replay what it missed (when this epoch knows its
        place), then live messages."""
        side = conn.side
        known = side.since is not None and side.epoch == self.epoch
        welcome = {"backend": self.backend, "pid": os.getpid(), "design": self.design.value,
                   "epoch": self.epoch}
        if self.bus is None:
            with self.lock:
                known = known and side.since <= self.log.last_id
                history = self.log.since(side.since or 0) if known else []
                self.conns.add(conn)
                with conn.lock:
                    conn.send(side.start(welcome, history, known))
            return
        with self.lock:
            self.conns.add(conn)  # live messages queue up while the history is read
        history = self.bus.since(side.since) if known and self.design.replays else []
        with conn.lock:
            conn.send(side.start(welcome, history, known))

    def serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        sock.settimeout(SEND_TIMEOUT)
        conn = Conn(sock)
        try:
            self._talk(conn)
        finally:
            with self.lock:
                self.conns.discard(conn)

    def _talk(self, conn: Conn) -> None:
        while True:
            try:
                data = conn.sock.recv(65536)
            except TimeoutError:
                continue  # an idle chat connection is normal
            with conn.lock:
                step = conn.side.receive(data or None)
                conn.send(step.out)
            if step.opened:
                self.join(conn)
            for text, seq in step.posts:
                self.post(conn.side.user, text, seq)
            if step.closed or not data:
                return

    def going_away(self) -> None:
        """Graceful stop: a close frame 1001 to every client, then wait for their replies."""
        self._interrupt()  # no new connections
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            with conn.lock:
                conn.send(conn.side.close(GOING_AWAY, "server restart"))
        for t in list(self._threads):
            t.join(STOP_WAIT / max(1, len(self._threads)) + 0.01)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m protolab.net.ws_backend")
    p.add_argument("--design", choices=[d.value for d in Design], required=True)
    p.add_argument("--id", default="b1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--redis", default="")
    p.add_argument("--room", default="lab")
    args = p.parse_args(argv)
    lifecycle.child_init()
    hub = ChatHub(Design(args.design), args.id, args.port, args.redis, args.room).start()
    child.announce_ready(hub.address[1])
    lifecycle.wait_for_stop()
    hub.going_away()
    os._exit(0)  # the daemon threads (readers, the subscriber) go with the process


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
