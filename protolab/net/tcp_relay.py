"""A TCP balancer that relays bytes: round-robin per connection, nothing read, nothing changed.

Where state lives: a counter (the next backend) and, per connection, the pair of sockets it
copies between. protolab's HTTP balancer (`protolab.net.lb`) reads each request to route it, so
it cannot carry TLS it does not terminate; this one passes the TLS bytes through untouched (the
backend's handshake is the client's), which is how a ticket issued by one backend reaches another.
"""

from __future__ import annotations

import itertools
import socket
import threading

from protolab.net.server_thread import TcpServerThread

Address = tuple[str, int]


class TcpRelay(TcpServerThread):
    """Each accepted connection goes to the next of `upstreams` in turn; `chosen` lists, per
    connection in accept order, the upstream it went to."""

    def __init__(self, upstreams: list[Address]) -> None:
        super().__init__()
        self._next = itertools.cycle(upstreams)
        self._lock = threading.Lock()
        self.chosen: list[Address] = []

    def serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with self._lock:
            target = next(self._next)
            self.chosen.append(target)
        with socket.create_connection(target, timeout=10) as up:
            splice(conn, up)


def splice(a: socket.socket, b: socket.socket, wait: float | None = 10) -> None:
    """Copy both ways between two connected sockets until both directions have ended (a thread
    for b → a, this one for a → b); `wait` bounds how long the second direction may take after
    the first ended (None: no bound, for a long-lived tunnel)."""
    back = threading.Thread(target=_copy, args=(b, a), daemon=True)
    back.start()
    _copy(a, b)
    back.join(wait)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    """Copy until `src` ends (or is reset), then end `dst`'s sending side (a half close, as TCP
    allows)."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
