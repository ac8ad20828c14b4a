"""A UDP counter service, sans-IO: the client carries the state, the server may forget.

Where state lives: UDP keeps nothing (RFC 768: no connection, no handshake, no teardown); the kernel
holds only the server's port binding, never an entry per peer. Whatever state a workflow needs, the
client carries it in each datagram: here a sequence number and the running total. The server adds
to the total it is given, so a restarted server answers exactly as the old one would. The one
thing the server keeps in its own memory, how many datagrams this process has seen, is lost on
restart, and the demo prints it to show the difference.

Wire format (ASCII): request `seq=N total=T add=K`; reply `seq=N total=T+K seen=S pid=P`.

The server as its own process is `protolab.net.counter_server`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Address = tuple[str, int]

_REQUEST = re.compile(rb"seq=(\d{1,9}) total=(-?\d{1,12}) add=(-?\d{1,9})")
_REPLY = re.compile(rb"seq=(\d{1,9}) total=(-?\d{1,13}) seen=(\d{1,12}) pid=(\d{1,9})")


class CounterServer:
    """Adds `add` to the `total` the client sends. Keeps only a count of datagrams seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid  #: the process it runs in: each reply names it
        self.seen = 0  #: server app memory: lost when the process restarts
        self.bad = 0
        self._out: list[tuple[bytes, Address]] = []

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        m = _REQUEST.fullmatch(data.strip())
        if m is None:
            self.bad += 1
            return
        self.seen += 1
        seq, total, add = (int(g) for g in m.groups())
        self._out.append((f"seq={seq} total={total + add} seen={self.seen} "
                          f"pid={self.pid}".encode(), addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        return None

    def snapshot(self) -> dict[str, int]:
        return {"pid": self.pid, "seen": self.seen, "bad": self.bad}


@dataclass(frozen=True)
class Reply:
    seq: int
    total: int
    seen: int
    pid: int


def parse_reply(data: bytes) -> Reply | None:
    """A server reply, or None for anything else."""
    m = _REPLY.fullmatch(data.strip())
    return Reply(*(int(g) for g in m.groups())) if m else None


@dataclass
class CounterClient:
    """The client's state, all of it: the next sequence number and the running total."""

    seq: int = 0
    total: int = 0

    def request(self, add: int) -> bytes:
        self.seq += 1
        return f"seq={self.seq} total={self.total} add={add}".encode()

    def receive(self, data: bytes) -> Reply | None:
        """Take a reply; None (and no change) unless it answers the latest request."""
        reply = parse_reply(data)
        if reply is None or reply.seq != self.seq:
            return None
        self.total = reply.total
        return reply
