"""The fault proxy's I/O edge: a thread and UDP sockets around a sans-IO `FaultCore`.

Where state lives: in the proxy's app memory (see `protolab.protocols.faults`): its decisions,
the datagrams it holds back, and each client's own upstream socket, as a NAT keeps.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

from protolab.net.server_thread import ServerThread
from protolab.protocols.faults import Address, Direction, FaultCore, FaultPlan


class UdpFaultProxy(ServerThread):
    """The thread and sockets around a `FaultCore`: clients send to `address`; each client gets
    its own upstream socket towards `upstream`, so the server sees one source per client.
    `start()`/`stop()` (or `with`) are `ServerThread`'s; at its end the loop sends what the core
    still holds back (a reordered datagram), then `stop()` closes the sockets."""

    def __init__(self, upstream: Address, plan: FaultPlan, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.core = FaultCore(plan)
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listen.bind((host, 0))
        self.address: Address = self._listen.getsockname()
        self._by_client: dict[Address, socket.socket] = {}
        self._by_upstream: dict[socket.socket, Address] = {}
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listen, selectors.EVENT_READ)
        self._stop = threading.Event()
        super().__init__(self._run, name="fault-proxy")

    def _interrupt(self) -> None:
        self._stop.set()  # the loop looks at least every 50 ms

    def _close(self) -> None:
        for s in [self._listen, *self._by_upstream]:
            s.close()
        self._sel.close()

    @property
    def upstream_ports(self) -> tuple[int, ...]:
        """The local port of each client's upstream socket: the sources the server sees. Read it
        before `stop()` (which closes them)."""
        return tuple(s.getsockname()[1] for s in list(self._by_client.values()))

    def _upstream_for(self, client: Address) -> socket.socket:
        sock = self._by_client.get(client)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.address[0], 0))
            self._by_client[client] = sock
            self._by_upstream[sock] = client
            self._sel.register(sock, selectors.EVENT_READ)
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            timer = self.core.next_timer()
            wait = 0.05 if timer is None else max(0.0, min(0.05, timer - time.monotonic()))
            for key, _ in self._sel.select(wait):
                sock = key.fileobj
                try:
                    data, addr = sock.recvfrom(65535)
                except OSError:  # an ICMP error for an earlier datagram: UDP reports, we go on
                    continue
                if sock is self._listen:
                    self._upstream_for(addr)
                    self.core.receive(data, Direction.TO_SERVER, time.monotonic(), addr)
                else:
                    self.core.receive(data, Direction.TO_CLIENT, time.monotonic(),
                                      self._by_upstream[sock])
            self._transmit(time.monotonic())
        self._transmit(float("inf"))

    def _transmit(self, now: float) -> None:
        for data, direction, client in self.core.datagrams_to_send(now):
            try:
                if direction is Direction.TO_SERVER:
                    self._by_client[client].sendto(data, self.upstream)
                else:
                    self._listen.sendto(data, client)
            except OSError:
                pass  # the far end is gone (ICMP): a fault of its own, not the proxy's
