"""The kernel's conntrack table of a host, read as data over netlink (ctnetlink, via pyroute2).

Where state lives: in the kernel of the host that tracks connections (a NAT router, a stateful
firewall), one entry per flow: the original tuple, as the first packet went, and the reply tuple
the kernel expects back — after a source NAT, the reply goes to the router's outside address and
port, which is the translation itself. Each entry has a timeout that counts down and restarts with
every packet (for UDP 30 s, 120 s once a reply was seen and the flow is ASSURED: the namespace's
net.netfilter.nf_conntrack_udp_timeout and _udp_timeout_stream); when it reaches zero the entry
is destroyed and the mapping with it. Nothing is parsed from text: `Entry` is built from the
netlink attributes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp"}


@dataclass(frozen=True)
class Direction:
    """One direction of a flow: who sends to whom (ports None for protocols without them)."""

    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None

    def __str__(self) -> str:
        if self.sport is None:
            return f"{self.src} → {self.dst}"
        return f"{self.src}:{self.sport} → {self.dst}:{self.dport}"


@dataclass(frozen=True)
class Entry:
    """One conntrack entry, as the kernel reported it."""

    proto: str  #: "udp", "tcp", "icmp" (or the protocol number)
    original: Direction  #: as the flow's first packet went (the inside host's own addresses)
    reply: Direction  #: what the kernel expects back (after NAT: to the router's outside address)
    timeout: int  #: seconds left before the kernel destroys the entry
    flags: tuple[str, ...]  #: status bits: SEEN_REPLY, ASSURED, CONFIRMED, SRC_NAT...
    state: str = ""  #: TCP's state as conntrack tracks it ("ESTABLISHED"), "" otherwise
    id: int = 0  #: the kernel's id of the entry

    @property
    def translated(self) -> bool:
        """Source NAT: replies go to another address or port than the one that sent."""
        return (self.reply.dst, self.reply.dport) != (self.original.src, self.original.sport)

    @property
    def outside(self) -> tuple[str, int | None]:
        """The address and port the flow has outside the NAT (the reply's destination)."""
        return self.reply.dst, self.reply.dport

    def line(self) -> str:
        flags = f" [{','.join(self.flags)}]" if self.flags else ""
        state = f" {self.state}" if self.state else ""
        return f"{self.proto}{state} {self.original} | reply {self.reply} " \
               f"timeout {self.timeout}s{flags}"


def _direction(t) -> Direction:  # pyroute2 NFCTAttrTuple
    return Direction(str(t.saddr), str(t.daddr), t.sport, t.dport)


def _entry(e) -> Entry:  # pyroute2 ConntrackEntry
    from pyroute2.netlink.nfnetlink.nfctsocket import IPSBIT_TO_NAME

    flags = tuple(name for bit, name in IPSBIT_TO_NAME.items() if e.status & bit)
    state = e.protoinfo.state_name() if e.protoinfo is not None else ""
    proto = e.tuple_orig.proto
    return Entry(PROTOCOLS.get(proto, str(proto)), _direction(e.tuple_orig),
                 _direction(e.tuple_reply), int(e.timeout or 0), flags, state, int(e.id or 0))


def read(netns: str | None = None) -> list[Entry]:
    """Every IPv4 entry of the conntrack table of namespace `netns` (None: this one)."""
    from pyroute2 import Conntrack

    with Conntrack(**_where(netns)) as ct:
        return [_entry(e) for e in ct.dump_entries()]


def flush(netns: str | None = None) -> None:
    """Empty the table, as a router that restarts loses it."""
    from pyroute2 import Conntrack

    with Conntrack(**_where(netns)) as ct:
        ct.flush()


def _where(netns: str | None) -> dict:
    # flags=0: never create the namespace (pyroute2 would, by default, for a name it lacks)
    return {} if netns is None else {"netns": netns, "flags": 0}
