"""Captures built for the tests: every link type and file format `protolab.wire.pcap` reads, and
packets of every protocol the annotator follows, over IPv4 and IPv6.

The files are written here byte by byte (struct), not with protolab's own writer, so a test that
reads them checks the reader against the formats' specifications: pcap (the libpcap file format,
draft-ietf-opsawg-pcap), pcapng (draft-ietf-opsawg-pcapng sections 4.1-4.3) and the link-layer
headers of tcpdump.org's LINKTYPE list. The packets are made with scapy, or taken from the
reference captures (real lab runs) and re-addressed, so TLS, WebSocket, HTTP and QUIC are real.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ETHERTYPE = {4: 0x0800, 6: 0x86DD}
MACS = bytes.fromhex("020000000002" "020000000001")  # destination, source
ARPHRD_LOOPBACK = 772


@dataclass(frozen=True)
class Frame:
    """One packet of a capture: its link-layer bytes as captured, and its length on the wire."""

    time: float
    data: bytes
    orig_len: int


#: link type name -> (LINKTYPE for IP version 4 or 6, the link header put before an IP packet)
LINKS: dict[str, tuple[Callable[[int], int], Callable[[int], bytes]]] = {
    "ethernet": (lambda v: 1, lambda v: MACS + struct.pack("!H", ETHERTYPE[v])),
    "vlan": (lambda v: 1, lambda v: MACS + struct.pack("!HHH", 0x8100, 7, ETHERTYPE[v])),
    "qinq": (lambda v: 1, lambda v: MACS + struct.pack("!HHHHH", 0x88A8, 100, 0x8100, 7,
                                                       ETHERTYPE[v])),
    # Linux cooked v1: packet type, ARPHRD, address length, 8 address bytes, protocol
    "linux-sll": (lambda v: 113, lambda v: struct.pack("!HHH8sH", 4, ARPHRD_LOOPBACK, 0,
                                                       bytes(8), ETHERTYPE[v])),
    # Linux cooked v2: protocol, reserved, interface index, ARPHRD, packet type, address
    "linux-sll2": (lambda v: 276, lambda v: struct.pack("!HHIHBB8s", ETHERTYPE[v], 0, 1,
                                                        ARPHRD_LOOPBACK, 4, 0, bytes(8))),
    "raw-ip": (lambda v: 101, lambda v: b""),
    "raw-ipv4-ipv6": (lambda v: 228 if v == 4 else 229, lambda v: b""),
    # BSD loopback: the address family in the writer's byte order (IPv6 is 24, 28 or 30)
    "bsd-null": (lambda v: 0, lambda v: struct.pack("<I", 2 if v == 4 else 24)),
    "bsd-null-big-endian": (lambda v: 0, lambda v: struct.pack(">I", 2 if v == 4 else 30)),
}

FORMATS = ("pcap-usec", "pcap-nsec", "pcap-usec-big-endian", "pcap-nsec-big-endian", "pcapng",
           "pcapng-nsec-big-endian")


def capture_bytes(frames: Sequence[Frame], linktype: int, fmt: str) -> bytes:
    """The frames as a file of format `fmt` (one of FORMATS)."""
    order = ">" if fmt.endswith("big-endian") else "<"
    nano = "-nsec" in fmt
    if fmt.startswith("pcapng"):
        return _pcapng(frames, linktype, order, nano)
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for f in frames:
        sec, frac = _split(f.time, 10 ** 9 if nano else 10 ** 6)
        out.append(struct.pack(order + "IIII", sec, frac, len(f.data), f.orig_len) + f.data)
    return b"".join(out)


def _split(t: float, units: int) -> tuple[int, int]:
    ticks = round(t * units)
    return ticks // units, ticks % units


def _pcapng(frames: Sequence[Frame], linktype: int, order: str, nano: bool) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack(order + "II", btype, len(body) + 12) + body + \
            struct.pack(order + "I", len(body) + 12)

    shb = block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    tsresol = struct.pack(order + "HH", 9, 1) + bytes([9, 0, 0, 0]) + bytes(4) if nano else b""
    idb = block(1, struct.pack(order + "HHI", linktype, 0, 262144) + tsresol)
    units = 10 ** 9 if nano else 10 ** 6
    epbs = [block(6, struct.pack(order + "IIIII", 0, (ts := round(f.time * units)) >> 32,
                                 ts & 0xFFFFFFFF, len(f.data), f.orig_len) + f.data)
            for f in frames]
    return shb + idb + b"".join(epbs)


@dataclass(frozen=True)
class Packet:
    """An IP packet (from the IP header on) and how much of it the capture kept (None: all)."""

    version: int
    ip: bytes
    kept: int | None = None


def framed(packets: Sequence[Packet], link: str, t0: float = 1_700_000_000.0,
           step: float = 0.001) -> tuple[int, list[Frame]]:
    """The packets behind `link`'s header, `step` seconds apart: (LINKTYPE, frames). A capture
    holds one link type; IPv4 and IPv6 packets on raw-ipv4-ipv6 take the first packet's."""
    linktype_of, header = LINKS[link]
    linktype = linktype_of(packets[0].version if packets else 4)
    frames = []
    for i, p in enumerate(packets):
        whole = header(p.version) + p.ip
        kept = whole if p.kept is None else whole[:len(header(p.version)) + p.kept]
        frames.append(Frame(t0 + i * step, kept, len(whole)))
    return linktype, frames


# -- packets ------------------------------------------------------------------------------------

ADDRESSES = {4: ("192.0.2.1", "192.0.2.53", "198.51.100.9"),
             6: ("2001:db8::1", "2001:db8::53", "2001:db8:ffff::9")}


def _ip(version: int, src: str, dst: str):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    return IP(src=src, dst=dst) if version == 4 else IPv6(src=src, dst=dst)


def story(version: int) -> list[Packet]:
    """A client, a server and a stranger: a TCP connection with HTTP, a keep-alive, an in-window
    RST answered by a challenge ACK, FIN; a refused SYN; an ACK to no socket; DNS with a
    retransmit, an unknown id, a wrong source, a malformed message, another port; QUIC long and
    short headers with a rotation and a migration; a datagram to a closed port and its ICMP
    error; an unknown IP protocol; packets the snap length cut."""
    parts = (_tcp_story, _refused, _dns_story, _quic_story, _icmp_story, _odd_packets)
    return [Packet(version, bytes(p), kept) for part in parts
            for p, kept in part(version, *ADDRESSES[version])]


def _seg(v: int, src: str, dst: str, sport: int, dport: int, flags: str, seq: int, ack: int = 0,
         load: bytes = b""):
    from scapy.layers.inet import TCP

    return _ip(v, src, dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack,
                                  window=65535) / load


GET = b"GET /cart HTTP/1.1\r\nHost: shop.example\r\nCookie: sessionId=abc123\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nSet-Cookie: sessionId=abc123\r\nContent-Length: 2\r\n\r\nok"
BEARER = b"GET /me HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer eyJ0.x.y\r\n\r\n"


def _tcp_story(v: int, c: str, s: str, x: str) -> Iterator[tuple[object, int | None]]:
    cs = dict(src=c, dst=s, sport=40000, dport=80)
    sc = dict(src=s, dst=c, sport=80, dport=40000)
    steps = [(cs, "S", 1000, 0, b""), (sc, "SA", 5000, 1001, b""), (cs, "A", 1001, 5001, b""),
             (cs, "PA", 1001, 5001, GET), (sc, "A", 5001, 1001 + len(GET), b""),
             (sc, "PA", 5001, 1001 + len(GET), OK),
             (cs, "A", 1001 + len(GET), 5001 + len(OK), b""),
             (cs, "A", 1000 + len(GET), 5001 + len(OK), b""),  # keep-alive: SND.NXT - 1
             (sc, "A", 5001 + len(OK), 1001 + len(GET), b""),
             (cs, "R", 1001 + len(GET) + 100, 0, b""),  # in the window, not exact (RFC 5961)
             (sc, "A", 5001 + len(OK), 1001 + len(GET), b""),  # the challenge ACK
             (cs, "PA", 1001 + len(GET), 5001 + len(OK), BEARER)]
    end = 1001 + len(GET) + len(BEARER)
    steps += [(cs, "FA", end, 5001 + len(OK), b""), (sc, "FA", 5001 + len(OK), end + 1, b""),
              (cs, "A", end + 1, 5002 + len(OK), b"")]
    for ends, flags, seq, ack, load in steps:
        yield _seg(v, **ends, flags=flags, seq=seq, ack=ack, load=load), None


def _refused(v: int, c: str, s: str, x: str) -> Iterator[tuple[object, int | None]]:
    yield _seg(v, c, s, 40001, 81, "S", 7000), None
    yield _seg(v, s, c, 81, 40001, "RA", 0, 7001), None
    yield _seg(v, x, s, 40002, 80, "A", 123, 456), None  # an ACK to a connection never seen
    yield _seg(v, s, x, 80, 40002, "R", 456), None
    yield _seg(v, c, s, 40003, 80, "PA", 9000, 1, GET), 30  # cut inside the first header
    yield _seg(v, c, s, 40004, 80, "S", 3000), None
    yield _seg(v, s, c, 80, 40004, "SA", 8000, 3001), None
    yield _seg(v, s, c, 80, 40004, "SA", 8000, 3001), None  # again: the half-open entry's timer


def _dns(v: int, src: str, dst: str, sport: int, dport: int, qid: int, name: str = "x.example.",
         answer: bool = False):
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import UDP

    rdata = "192.0.2.7" if v == 4 else "2001:db8::7"
    rtype = "A" if v == 4 else "AAAA"
    dns = DNS(id=qid, qr=int(answer), qd=[DNSQR(qname=name, qtype=rtype)],
              an=[DNSRR(rrname=name, type=rtype, rdata=rdata)] if answer else [])
    return _ip(v, src, dst) / UDP(sport=sport, dport=dport) / dns


def _dns_story(v: int, c: str, s: str, x: str) -> Iterator[tuple[object, int | None]]:
    from scapy.layers.inet import UDP

    yield _dns(v, c, s, 3333, 53, 0x1111), None
    yield _dns(v, c, s, 3333, 53, 0x1111), None  # retransmit
    yield _dns(v, s, c, 53, 3333, 0x1111, answer=True), None
    yield _dns(v, s, c, 53, 3333, 0x1111, answer=True), None  # already answered
    yield _dns(v, c, s, 3334, 53, 0x2222), None
    yield _dns(v, x, c, 53, 3334, 0x2222, answer=True), None  # wrong source
    yield _dns(v, s, c, 53, 3334, 0x2222, "y.example.", answer=True), None  # other question
    yield _dns(v, s, c, 53, 3334, 0x9999, answer=True), None  # unknown id
    yield _dns(v, x, c, 53, 3340, 0x7777, answer=True), None  # its query is not in the capture
    yield _ip(v, c, s) / UDP(sport=3335, dport=53) / b"\x12\x34not dns", None  # malformed
    yield _dns(v, c, s, 3336, 5300, 0x3333), None  # DNS only with --dns-port 5300
    yield _dns(v, s, c, 5300, 3336, 0x3333, answer=True), None
    yield _dns(v, c, s, 3337, 53, 0x4444, "z.example."), 30  # cut inside the DNS message


def _quic(first: int, dcid: bytes, scid: bytes = b"", size: int = 1200) -> bytes:
    """A QUIC v1 long header (RFC 9000 section 17.2) or, `first` & 0x80 clear, a short one."""
    if first & 0x80:
        head = bytes([first]) + (1).to_bytes(4, "big") + bytes([len(dcid)]) + dcid + \
            bytes([len(scid)]) + scid
        return head + (b"\x00" if first & 0x30 == 0 else b"") + bytes(size)
    return bytes([first]) + dcid + bytes(size)


def _quic_story(v: int, c: str, s: str, x: str) -> Iterator[tuple[object, int | None]]:
    from scapy.layers.inet import UDP

    def udp(src, dst, sport, dport, payload):
        return _ip(v, src, dst) / UDP(sport=sport, dport=dport) / payload

    yield udp(c, s, 51000, 4433, _quic(0xC3, b"D" * 8, b"C" * 8)), None  # client Initial
    yield udp(s, c, 4433, 51000, _quic(0xC3, b"C" * 8, b"S" * 8)), None  # server Initial
    yield udp(s, c, 4433, 51000, _quic(0xE3, b"C" * 8, b"S" * 8, 300)), None  # Handshake
    yield udp(c, s, 51000, 4433, _quic(0x43, b"S" * 8, size=60)), None  # 1-RTT
    yield udp(s, c, 4433, 51000, _quic(0x43, b"C" * 8, size=60)), None
    yield udp(c, s, 51000, 4433, _quic(0x43, b"T" * 8, size=60)), None  # a new DCID
    yield udp(c, s, 51001, 4433, _quic(0x43, b"T" * 8, size=60)), None  # a new path
    yield udp(c, s, 51002, 4433, _quic(0xC3, b"E" * 8, b"F" * 8)), None  # never answered
    yield udp(c, s, 51002, 4433, _quic(0xC3, b"G" * 8, b"H" * 8)), None
    negotiation = bytes([0x80]) + bytes(4) + bytes([8]) + b"H" * 8 + bytes([8]) + b"G" * 8 + \
        (0xFF00001D).to_bytes(4, "big")  # version 0: the versions the server speaks
    yield udp(s, c, 4433, 51002, negotiation), None


def _icmp_story(v: int, c: str, s: str, x: str) -> Iterator[tuple[object, int | None]]:
    from scapy.layers.inet import ICMP, UDP, IPerror, UDPerror
    from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, IPerror6

    late = _dns(v, c, s, 3338, 53, 0x5555)
    yield late, None
    yield _dns(v, s, c, 53, 3338, 0x5555, answer=True), None
    quoted_dst = (IPerror(src=s, dst=c) if v == 4 else IPerror6(src=s, dst=c))
    error = (ICMP(type=3, code=3) if v == 4 else ICMPv6DestUnreach(code=4))
    yield _ip(v, c, s) / error / quoted_dst / UDPerror(sport=53, dport=3338), None
    yield _ip(v, c, s) / UDP(sport=3339, dport=9999) / b"hello?", None
    quoted = (IPerror(src=c, dst=s) if v == 4 else IPerror6(src=c, dst=s))
    yield _ip(v, s, c) / error / quoted / UDPerror(sport=3339, dport=9999), None
    yield _ip(v, c, s) / (ICMP(type=8, id=1, seq=1) if v == 4 else ICMPv6EchoRequest()), None


def _odd_packets(v: int, c: str, s: str, x: str) -> Iterator[tuple[object, int | None]]:
    from scapy.layers.inet import UDP

    other = _ip(v, c, s)
    other.setfieldval("proto" if v == 4 else "nh", 47)  # GRE: a protocol nobody follows
    yield other / b"\x00\x00\x08\x00", None
    yield _ip(v, c, s) / UDP(sport=7, dport=7) / (b"e" * 300), 30  # cut inside the UDP header
    yield _ip(v, c, s) / UDP(sport=7, dport=7) / (b"e" * 300), 100  # cut in the payload


def tcp_segment(version: int, src: str, dst: str, sport: int, dport: int, seq: int, ack: int,
                flags: int, window: int = 65535, payload: bytes = b"") -> Packet:
    """An IP packet holding one TCP segment (RFC 9293 section 3.1), made with struct for speed:
    no options, checksums left zero (the reader does not check them)."""
    import socket

    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq % 2 ** 32, ack % 2 ** 32, 5 << 4, flags,
                      window, 0, 0) + payload
    if version == 4:
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                           socket.inet_pton(socket.AF_INET, src),
                           socket.inet_pton(socket.AF_INET, dst))
    else:
        head = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64,
                           socket.inet_pton(socket.AF_INET6, src),
                           socket.inet_pton(socket.AF_INET6, dst))
    return Packet(version, head + tcp)


# -- the reference captures' packets, re-addressed ----------------------------------------------


def reference_packets(name: str, limit: int | None = None) -> list[Packet]:
    """The IP packets of captures/NAME (Ethernet), the first `limit` of them."""
    return ip_packets(ROOT / "captures" / name, limit)


def ip_packets(path: Path, limit: int | None = None) -> list[Packet]:
    """The IP packets of an Ethernet capture, the first `limit` of them."""
    from protolab.wire.pcap import read_pcap

    out = []
    for rec in read_pcap(path):
        if limit is not None and len(out) >= limit:
            break
        ethertype = int.from_bytes(rec.data[12:14], "big")
        version = {0x0800: 4, 0x86DD: 6}.get(ethertype)
        if version is not None:
            out.append(Packet(version, rec.data[14:]))
    return out


def as_ipv6(p: Packet) -> Packet | None:
    """The same TCP or UDP packet between IPv6 addresses (2001:db8::A.B.C.D mapped one to one),
    checksums made again; None for what has no IPv6 twin (ICMP, IPv6 already, fragments)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6

    if p.version != 4:
        return None
    ip = IP(p.ip)
    if ip.proto not in (6, 17) or ip.flags.MF or ip.frag:
        return None
    layer = ip.payload.copy()
    if isinstance(layer, TCP | UDP):
        layer.chksum = None
    if isinstance(layer, UDP):
        layer.len = None
    return Packet(6, bytes(IPv6(src=_v6(ip.src), dst=_v6(ip.dst), hlim=ip.ttl) / layer))


def _v6(address: str) -> str:
    a, b, c, d = (int(x) for x in address.split("."))
    return f"2001:db8::{a << 8 | b:x}:{c << 8 | d:x}"
