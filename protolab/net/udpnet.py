"""A thin adapter that runs a sans-IO datagram core on a real UDP socket, in a thread.

Where state lives: the socket (a port binding in this host's kernel) belongs to the adapter; every
bit of protocol state belongs to the core. The loop does what aioquic's `datagram_received` does:
feed the datagram in, then transmit what the core wants sent, and sleep until the core's next timer.
Stopping closes the socket, so a restarted server is a new binding with an empty core.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from protolab.net import child
from protolab.net.server_thread import ServerThread

Address = tuple[str, int]


class DatagramCore(Protocol):
    def receive(self, data: bytes, addr: Address, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def next_timer(self) -> float | None: ...


class UdpServerThread(ServerThread):
    """Serve `core` on host:port (port 0 picks a free one) until `stop()`."""

    def __init__(self, core: DatagramCore, host: str = "127.0.0.1", port: int = 0,
                 reuseport: bool = False) -> None:
        self.core = core
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if reuseport:
            # SO_REUSEPORT lets a lab forger share this port; it must not let a second server
            # share it too. A plain bind fails if anyone holds the port, so check with one first.
            if port:
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    probe.bind((host, port))
                finally:
                    probe.close()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind((host, port))
        self.address: Address = self.sock.getsockname()
        self.received = 0
        self.sent = 0
        self._cond = threading.Condition()
        self._wake_r, self._wake_w = socket.socketpair()
        self._running = True
        super().__init__(self._run, name=f"udp-server-{self.address[1]}")

    def _run(self) -> None:
        while self._running:
            now = time.monotonic()
            due = self.core.next_timer()
            timeout = None if due is None else max(0.0, due - now)
            readable, _, _ = select.select([self.sock, self._wake_r], [], [], timeout)
            now = time.monotonic()
            if self.sock in readable:
                try:
                    data, addr = self.sock.recvfrom(65535)
                except OSError:  # e.g. ECONNREFUSED left over from an ICMP error
                    data = None
                if data is not None:
                    self.core.receive(data, addr, now)
                    with self._cond:
                        self.received += 1
                        self._cond.notify_all()
            for data, addr in self.core.datagrams_to_send(now):
                self.sock.sendto(data, addr)
                with self._cond:
                    self.sent += 1
                    self._cond.notify_all()

    def wait_until(self, predicate: Callable[[UdpServerThread], bool],
                   timeout: float = 2.0) -> bool:
        """Block until `predicate(self)` holds (checked after every datagram in or out)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _interrupt(self) -> None:
        self._running = False
        self._wake_w.send(b"x")

    def _close(self) -> None:
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()


def serve_child(core: object, argv: list[str]) -> int:
    """`python -m MODULE [PORT [HOST]]`: serve `core` on HOST:PORT (127.0.0.1; port 0: a free
    one; a host of a topology serves on its own address) until stopped; says `ready PORT` first,
    stops quietly on SIGTERM/SIGINT, dies with its parent (`protolab.net.child.serve`)."""
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    return child.serve(lambda port: UdpServerThread(core, host=host, port=port).start(),
                       argv[:1])
