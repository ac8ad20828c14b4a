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


NETLINK_NETFILTER = 12  #: <linux/netlink.h>
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_CONNTRACK_DESTROY = 3  #: <linux/netfilter/nfnetlink.h>


@dataclass(frozen=True)
class Destroyed:
    """A DESTROY event: the entry the kernel removed, and when (the entry's own stop time, when
    the host's net.netfilter.nf_conntrack_timestamp is on; else when it was read)."""

    entry: Entry
    time: float  #: seconds since the epoch, as capture timestamps are
    stamped: bool  #: True when `time` is the kernel's own stop timestamp


class DestroyWatch:
    """The DESTROY events of a host's conntrack table, as they happen (ctnetlink's multicast
    group): subscribed when made, so no event after that is missed. The kernel removes an expired
    entry lazily — its garbage collector, or the next packet whose lookup finds it — and reports
    the removal then. A context manager; `read` takes what has arrived."""

    def __init__(self, within) -> None:  # Host.within: the socket must be the host's
        def subscribe() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_CONNTRACK_DESTROY)
            return sock

        self._sock = within(subscribe)
        self.events: list[Destroyed] = []

    def __enter__(self) -> DestroyWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def read(self, timeout: float = 0.0) -> list[Destroyed]:
        """Every event that arrived (waiting up to `timeout` s for the first); all kept in
        `events`."""
        import time

        self._sock.settimeout(timeout or None)
        if not timeout:
            self._sock.setblocking(False)
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, TimeoutError):
                return self.events
            self.events += [_destroyed(m, time.time()) for m in _messages(data)]
            self._sock.setblocking(False)


def _messages(data: bytes) -> list:
    from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

    out, offset = [], 0
    while offset + 4 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "little")
        if length < 16:
            break
        msg = nfct_msg(data[offset:offset + length])
        msg.decode()
        out.append(msg)
        offset += (length + 3) & ~3
    return out


def _destroyed(msg, read_at: float) -> Destroyed:
    """A DESTROY message as an Entry (built from its attributes: a destroyed TCP entry's
    protocol info may lack the flags pyroute2's ConntrackEntry insists on)."""
    from pyroute2.conntrack import NFCTAttrTuple
    from pyroute2.netlink.nfnetlink.nfctsocket import IPSBIT_TO_NAME

    orig = NFCTAttrTuple.from_netlink(socket.AF_INET, msg.get_attr("CTA_TUPLE_ORIG"))
    reply = NFCTAttrTuple.from_netlink(socket.AF_INET, msg.get_attr("CTA_TUPLE_REPLY"))
    status = msg.get_attr("CTA_STATUS") or 0
    info = msg.get_attr("CTA_PROTOINFO")
    tcp = info.get_attr("CTA_PROTOINFO_TCP") if info is not None else None
    state = tcp.get_attr("CTA_PROTOINFO_TCP_STATE") if tcp is not None else None
    entry = Entry(PROTOCOLS.get(orig.proto, str(orig.proto)), _direction(orig), _direction(reply),
                  int(msg.get_attr("CTA_TIMEOUT") or 0),
                  tuple(name for bit, name in IPSBIT_TO_NAME.items() if status & bit),
                  TCP_STATES.get(state, "") if state is not None else "",
                  int(msg.get_attr("CTA_ID") or 0))
    stamp = msg.get_attr("CTA_TIMESTAMP")
    stop = stamp.get_attr("CTA_TIMESTAMP_STOP") if stamp is not None else None
    return Destroyed(entry, stop / 1e9 if stop else read_at, bool(stop))


#: <linux/netfilter/nf_conntrack_tcp.h> enum tcp_conntrack
TCP_STATES = dict(enumerate(("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
                             "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")))
