"""QUIC, driven sans-IO: a server that finds connections by connection ID, and header decoding.

Where state lives: in each endpoint's connection table, keyed by connection ID (RFC 9000 section
5.1: "each connection possesses a set of connection identifiers ... that can identify the
connection"), not by the 4-tuple. Every QUIC packet carries the destination connection ID (DCID),
which is the key of the *receiver's* table; that is why a connection survives a change of address
(RFC 9000 section 9) and why a server that restarts, its table gone, cannot: QUIC is as stateful as
TCP, it only moved the key. A Retry (RFC 9000 section 8.1.2) shows the opposite trick: the server
keeps nothing and puts what it needs in a token the client must echo, as a JWT does.

This is the only module that touches aioquic (its internals included, marked); everything else in
protolab sees plain data. `QuicServerCore` is aioquic's `asyncio/server.py` routing without asyncio:
`receive(data, addr, now)`, `datagrams_to_send(now)`, `next_timer()`, so `protolab.net.udpnet` runs
it; `QuicClientCore` is the client's side with the same three calls.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import ssl
import struct
from dataclasses import dataclass, field
from typing import TextIO

Address = tuple[str, int]
ALPN = "protolab"
LONG_TYPES = {0: "Initial", 1: "0-RTT", 2: "Handshake", 3: "Retry"}


# -- header decoding (RFC 8999 invariants, RFC 9000 section 17): no aioquic, no keys --------------


@dataclass(slots=True, unsafe_hash=True)
class QuicHeader:
    """(Made per datagram, and nothing changes one once made: not frozen only because a frozen
    dataclass's init costs a call per field.)"""

    long: bool
    packet_type: str  #: Initial, 0-RTT, Handshake, Retry, Version Negotiation or 1-RTT
    version: int | None
    dcid: bytes
    scid: bytes | None  #: long headers only
    token: bytes = b""  #: Initial: a Retry's token echoed (RFC 9000 17.2.2); Retry: the token


def decode_header(payload: bytes, short_dcid_len: int = 8) -> QuicHeader | None:
    """The header of the first QUIC packet in a UDP payload, or None when it is not QUIC.

    A short header does not say how long its DCID is: the receiver knows, because it chose it
    (RFC 9000 section 17.3). An observer must guess; `short_dcid_len` is that guess.
    """
    if len(payload) < 1 + short_dcid_len or not payload[0] & 0x40 and payload[0] & 0x80 == 0:
        return None
    first = payload[0]
    if first & 0x80:
        return _long_header(payload, first)
    if not first & 0x40:
        return None
    dcid = payload[1:1 + short_dcid_len]
    header = _SHORT_HEADERS.get(dcid)
    if header is None:
        if len(_SHORT_HEADERS) >= _SHORT_HEADERS_KEPT:
            _SHORT_HEADERS.clear()
        header = _SHORT_HEADERS[dcid] = QuicHeader(False, "1-RTT", None, dcid, None)
    return header


#: the short headers already read, by their DCID (all a short header says, and every packet of
#: a connection's life after its handshake carries one of the same few): one object each
_SHORT_HEADERS: dict[bytes, QuicHeader] = {}
_SHORT_HEADERS_KEPT = 4096


#: a long header's version and DCID length, after its first byte (RFC 9000 section 17.2)
_VERSION_DCID_LEN = struct.Struct("!IB")


def _long_header(payload: bytes, first: int) -> QuicHeader | None:
    """A long header (RFC 9000 section 17.2; `first` is its first byte), or None."""
    if len(payload) < 7:
        return None
    version, dlen = _VERSION_DCID_LEN.unpack_from(payload, 1)
    if dlen > 20 or len(payload) < 6 + dlen + 1:
        return None
    dcid = payload[6:6 + dlen]
    slen = payload[6 + dlen]
    if slen > 20 or len(payload) < 7 + dlen + slen:
        return None
    scid = payload[7 + dlen:7 + dlen + slen]
    if version == 0:
        return QuicHeader(True, "Version Negotiation", version, dcid, scid)
    if version != 1 or not first & 0x40:
        return None
    kind = LONG_TYPES[(first >> 4) & 0x03]
    rest = 7 + dlen + slen  # where the type-specific part starts (read in place, not copied)
    token = b""
    if kind == "Initial":
        length, used = _varint(payload, rest)
        token = payload[rest + used:rest + used + length] if length is not None else b""
    elif kind == "Retry":
        token = payload[rest:-16]  # the Retry Integrity Tag is the last 16 bytes
    return QuicHeader(True, kind, version, dcid, scid, token)


def _varint(b: bytes, at: int = 0) -> tuple[int | None, int]:
    """RFC 9000 section 16 variable-length integer at `at`: (value, bytes used); (None, 0) if
    cut. The first byte's two high bits say its length (1, 2, 4 or 8 bytes), the rest is the
    value."""
    if at >= len(b):
        return None, 0
    size = 1 << (b[at] >> 6)
    if len(b) < at + size:
        return None, 0
    if size == 1:  # (every length under 64, as a token's usually is: no bytes to join)
        return b[at] & 0x3F, 1
    return int.from_bytes(b[at:at + size], "big") & ((1 << (8 * size - 2)) - 1), size


# -- certificates made at run time (never a committed key) ----------------------------------------


@dataclass(frozen=True)
class Credentials:
    certificate: object
    private_key: object
    pem: bytes  #: the certificate, for the client to trust


def make_credentials(now: datetime.datetime, name: str = "localhost") -> Credentials:
    """A fresh self-signed certificate for `name` and 127.0.0.1, valid for one day from `now`
    (the caller's clock: this core reads none)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    return Credentials(cert, key, cert.public_bytes(serialization.Encoding.PEM))


def server_configuration(creds: Credentials, idle_timeout: float = 10.0):
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], idle_timeout=idle_timeout)
    config.certificate = creds.certificate
    config.private_key = creds.private_key
    return config


def client_configuration(creds: Credentials, keylog: TextIO | None = None,
                         qlog: object | None = None, idle_timeout: float = 10.0):
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], idle_timeout=idle_timeout,
                               server_name="localhost", secrets_log_file=keylog)
    config.load_verify_locations(cadata=creds.pem)
    config.verify_mode = ssl.CERT_REQUIRED
    config.quic_logger = qlog
    return config


def new_qlog() -> object:
    """An in-memory qlog (draft-ietf-quic-qlog) collector; `qlog_json` serialises it."""
    from aioquic.quic.logger import QuicLogger

    return QuicLogger()


def qlog_json(qlog: object) -> str:
    import json

    return json.dumps(qlog.to_dict())


@dataclass(frozen=True)
class LossReport:
    """Loss recovery as one endpoint's qlog recorded it (RFC 9002): its own app memory."""

    lost: tuple[int, ...]  #: packet numbers this side declared lost (then re-sent their frames)
    gapped_acks: tuple[tuple[tuple[int, int], ...], ...]  #: ACK frames received with 2+ ranges
    acks: int  #: ACK frames received in all


def loss_report(qlog: object) -> LossReport:
    """Read aioquic's qlog events: `recovery:packet_lost`, and the ACK frames received."""
    lost, gapped, acks = [], [], 0
    for trace in qlog.to_dict()["traces"]:
        for event in trace["events"]:
            name, data = event.get("name"), event.get("data", {})
            if name == "recovery:packet_lost":
                lost.append(data["packet_number"])
            elif name == "transport:packet_received":
                for frame in data.get("frames", []):
                    if frame.get("frame_type") == "ack":
                        acks += 1
                        ranges = tuple((a, b) for a, b in frame["acked_ranges"])
                        if len(ranges) > 1:
                            gapped.append(ranges)
    return LossReport(tuple(lost), tuple(gapped), acks)


# -- the server: a connection table keyed by connection ID ----------------------------------------


#: Half-open connections (handshake not complete, address not validated) a server keeps before
#: it answers new Initials with a Retry instead (RFC 9000 section 8.1: address validation).
HALF_OPEN_CAP = 32
#: Connections of any kind a server keeps at most; above it new Initials are dropped.
MAX_CONNECTIONS = 1024


@dataclass(eq=False)
class ServerConnection:
    number: int
    conn: object  #: aioquic QuicConnection
    cids: set[bytes] = field(default_factory=set)
    received: bytes = b""  #: stream data the application was given, all streams
    established: bool = False  #: the handshake completed (HandshakeCompleted)
    validated: bool = False  #: its Initial echoed a Retry token: the address was proven
    terminated: bool = False  #: ConnectionTerminated came: the entry leaves memory

    @property
    def half_open(self) -> bool:
        """State kept for a peer not validated yet: what the half-open cap counts."""
        return not (self.established or self.validated or self.terminated)


@dataclass
class ServerCounters:
    datagrams: int = 0
    retries_sent: int = 0  #: Retry packets sent (no state kept for them)
    retries_at_cap: int = 0  #: of them, sent because the half-open connections reached the cap
    tokens_accepted: int = 0  #: Initials whose Retry token validated (the state came back)
    bad_tokens: int = 0  #: Initials whose token did not validate: dropped
    unknown_cid: int = 0  #: datagrams whose DCID is in no table entry: dropped
    undecryptable: int = 0  #: Initials of which no packet decrypted: dropped, no state kept
    refused: int = 0  #: Initials dropped because MAX_CONNECTIONS connections were in memory
    pruned: int = 0  #: terminated connections removed from memory
    half_open_peak: int = 0  #: the most half-open connections held at once
    version_negotiation: int = 0


class QuicServerCore:
    """Echo server (stream data comes back upper-cased) that routes datagrams by DCID.

    With `retry=True` a client's first Initial gets a Retry and nothing is stored; the token in its
    second Initial carries the state (RFC 9000 section 8.1.2). Without it, the server keeps state
    for at most `half_open_cap` peers it has not validated; past that, a new Initial gets a Retry
    too. An Initial that does not decrypt leaves nothing behind, and a terminated connection leaves
    memory (RFC 9000 section 10).
    """

    def __init__(self, creds: Credentials, retry: bool = False, idle_timeout: float = 10.0,
                 half_open_cap: int = HALF_OPEN_CAP,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self._config = server_configuration(creds, idle_timeout)
        self.retry_always = retry
        self.half_open_cap = half_open_cap
        self.max_connections = max_connections
        self._tokens: object | None = None  #: aioquic QuicRetryTokenHandler, made when needed
        #: the connection table: every connection ID this server issued -> its connection
        self.table: dict[bytes, ServerConnection] = {}
        self._connections: list[ServerConnection] = []
        self._made = 0
        self._out: list[tuple[bytes, Address]] = []
        self.counters = ServerCounters()

    def half_open(self) -> int:
        """Connections in memory for a peer not validated yet (handshake not complete)."""
        return sum(1 for e in list(self._connections) if e.half_open)

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        from aioquic.buffer import Buffer
        from aioquic.quic.packet import (
            QuicPacketType,
            encode_quic_version_negotiation,
            pull_quic_header,
        )

        self.counters.datagrams += 1
        try:
            header = pull_quic_header(Buffer(data=data),
                                      host_cid_length=self._config.connection_id_length)
        except ValueError:
            return
        if header.version is not None and header.version not in self._config.supported_versions \
                and header.packet_type != QuicPacketType.VERSION_NEGOTIATION:
            self.counters.version_negotiation += 1
            self._out.append((encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=self._config.supported_versions), addr))
            return
        entry = self.table.get(header.destination_cid)
        if entry is None:
            if header.packet_type != QuicPacketType.INITIAL or len(data) < 1200:
                self.counters.unknown_cid += 1  # RFC 9000 section 10.3 would allow a reset
                return
            entry = self._admit(header, data, addr, now)
            if entry is None:
                return
        else:
            entry.conn.receive_datagram(data, addr, now)
        self._process(entry)

    def _admit(self, header, data: bytes, addr: Address, now: float) -> ServerConnection | None:
        """A new Initial: a connection in memory, or a Retry (nothing kept), or nothing."""
        from aioquic.quic.connection import QuicConnection, QuicConnectionState

        odcid, retry_scid = header.destination_cid, None
        if header.token and self._tokens is not None:
            try:
                odcid = self._tokens.validate_token(
                    address=addr, destination_cid=header.destination_cid,
                    token=header.token, now=now)
            except ValueError:
                self.counters.bad_tokens += 1
                return None
            self.counters.tokens_accepted += 1
            retry_scid = header.destination_cid
        elif self.retry_always or self.half_open() >= self.half_open_cap:
            self._send_retry(header, addr, now)
            return None
        if len(self._connections) >= self.max_connections:
            self.counters.refused += 1
            return None
        conn = QuicConnection(configuration=self._config,
                              original_destination_connection_id=odcid,
                              retry_source_connection_id=retry_scid)
        conn.receive_datagram(data, addr, now)
        # aioquic internal: a server connection leaves FIRSTFLIGHT once a packet decrypted
        if conn._state is QuicConnectionState.FIRSTFLIGHT:
            self.counters.undecryptable += 1
            return None
        self._made += 1
        entry = ServerConnection(self._made, conn, validated=retry_scid is not None)
        self._connections.append(entry)
        for cid in (header.destination_cid, conn.host_cid):
            self.table[cid] = entry
            entry.cids.add(cid)
        self.counters.half_open_peak = max(self.counters.half_open_peak, self.half_open())
        return entry

    def _send_retry(self, header, addr: Address, now: float) -> None:
        """A Retry: the state goes into a token the client must echo (RFC 9000 section 8.1.2)."""
        from aioquic.quic.packet import encode_quic_retry
        from aioquic.quic.retry import QuicRetryTokenHandler

        if self._tokens is None:
            self._tokens = QuicRetryTokenHandler()
        scid = secrets.token_bytes(8)
        self.counters.retries_sent += 1
        self.counters.retries_at_cap += not self.retry_always
        self._out.append((encode_quic_retry(
            version=header.version, source_cid=scid, destination_cid=header.source_cid,
            original_destination_cid=header.destination_cid,
            retry_token=self._tokens.create_token(
                address=addr, original_destination_connection_id=header.destination_cid,
                retry_source_connection_id=scid, now=now)), addr))

    def _process(self, entry: ServerConnection) -> None:
        from aioquic.quic import events

        conn = entry.conn
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, events.ConnectionIdIssued):
                self.table[ev.connection_id] = entry
                entry.cids.add(ev.connection_id)
            elif isinstance(ev, events.ConnectionIdRetired):
                self.table.pop(ev.connection_id, None)
                entry.cids.discard(ev.connection_id)
            elif isinstance(ev, events.HandshakeCompleted):
                entry.established = True
            elif isinstance(ev, events.ConnectionTerminated):
                self._prune(entry)
            elif isinstance(ev, events.StreamDataReceived):
                entry.received += ev.data
                if ev.data or ev.end_stream:
                    conn.send_stream_data(ev.stream_id, ev.data.upper(), ev.end_stream)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Fire the timers that are due, then collect every connection's datagrams."""
        out, self._out = self._out, []
        for entry in list(self._connections):
            t = entry.conn.get_timer()
            if t is not None and t <= now:
                entry.conn.handle_timer(now)
                self._process(entry)
            if not entry.terminated:
                out.extend(entry.conn.datagrams_to_send(now))
        return out

    def _prune(self, entry: ServerConnection) -> None:
        """A terminated connection: its keys leave the table and the entry leaves memory (RFC
        9000 section 10: once closed, an endpoint discards the connection's state)."""
        for cid in entry.cids:
            self.table.pop(cid, None)
        entry.cids.clear()
        entry.terminated = True
        if entry in self._connections:
            self._connections.remove(entry)
            self.counters.pruned += 1

    def next_timer(self) -> float | None:
        timers = [t for e in self._connections if (t := e.conn.get_timer()) is not None]
        return min(timers) if timers else None

    def connections(self) -> list[ServerConnection]:
        """The connections in the table now (a closed one has no CID left: it is not found)."""
        return [e for e in self._connections if e.cids]

    def all_connections(self) -> list[ServerConnection]:
        """Every connection in this core's memory, including closing ones; a terminated one has
        been pruned (`counters.pruned`)."""
        return list(self._connections)

    def paths(self, entry: ServerConnection) -> list[tuple[Address, bool]]:
        """The network paths the server knows for a connection: (peer address, validated)."""
        # aioquic internal: QuicConnection._network_paths (RFC 9000 section 8.2 path validation)
        return [(p.addr, p.is_validated) for p in entry.conn._network_paths]

    def snapshot(self) -> list[dict[str, object]]:
        return [{"cid": cid.hex(), "connection": e.number,
                 "peer": ", ".join(f"{a[0]}:{a[1]}{'' if ok else ' (unvalidated)'}"
                                   for a, ok in self.paths(e))}
                for cid, e in self.table.items()]


def spare_peer_cids(conn: object) -> int:
    """How many unused connection IDs the peer has issued to this endpoint."""
    # aioquic internal: QuicConnection._peer_cid_available (RFC 9000 section 5.1.1)
    return len(conn._peer_cid_available)


def peer_cid(conn: object) -> bytes:
    """The DCID this endpoint currently puts in its packets."""
    # aioquic internal: QuicConnection._peer_cid
    return conn._peer_cid.cid


# -- fake Initials: what a flood from spoofed addresses looks like to a server ------------------


def fake_initials(creds: Credentials, count: int, now: float) -> list[bytes]:
    """`count` first Initials of clients that will never answer: real ClientHellos, each with its
    own random DCID, padded to 1200 bytes (RFC 9000 section 14.1), so each decrypts."""
    from aioquic.quic.connection import QuicConnection

    config = client_configuration(creds)
    out = []
    for _ in range(count):
        conn = QuicConnection(configuration=config)
        conn.connect(("127.0.0.1", 9), now=now)
        out.append(conn.datagrams_to_send(now)[0][0])
    return out


def garbage_initial() -> bytes:
    """A 1200-byte datagram with a well-formed Initial header (version 1, a new DCID) and random
    bytes where the protected packet should be: it parses, it never decrypts."""
    dcid, scid = secrets.token_bytes(8), secrets.token_bytes(8)
    head = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid + b"\x00"
    rest = 1200 - len(head) - 2
    return head + (0x4000 | rest).to_bytes(2, "big") + secrets.token_bytes(rest)


# -- the client -----------------------------------------------------------------------------------


@dataclass
class ClientLog:
    handshake_done: bool = False
    received: bytes = b""  #: stream data from the server
    issued_to_us: int = 0  #: NEW_CONNECTION_ID frames the client processed (as CIDs available)
    terminated: str | None = None  #: why the connection ended, once it has


class QuicClientCore:
    """One client connection (aioquic's QuicConnection) as plain calls and a log."""

    def __init__(self, creds: Credentials, server: Address, now: float,
                 keylog: TextIO | None = None, qlog: object | None = None,
                 idle_timeout: float = 10.0) -> None:
        from aioquic.quic.connection import QuicConnection

        self.server = server
        self.conn = QuicConnection(configuration=client_configuration(
            creds, keylog, qlog, idle_timeout))
        self.log = ClientLog()
        self.conn.connect(server, now=now)
        self.stream = self.conn.get_next_available_stream_id()

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        self.conn.receive_datagram(data, addr, now)
        self._process()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        t = self.conn.get_timer()
        if t is not None and t <= now:
            self.conn.handle_timer(now)
            self._process()
        return self.conn.datagrams_to_send(now)

    def next_timer(self) -> float | None:
        return self.conn.get_timer()

    def _process(self) -> None:
        from aioquic.quic import events

        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, events.HandshakeCompleted):
                self.log.handshake_done = True
            elif isinstance(ev, events.StreamDataReceived):
                self.log.received += ev.data
            elif isinstance(ev, events.ConnectionTerminated):
                self.log.terminated = ev.reason_phrase or f"error code {ev.error_code}"

    def send(self, data: bytes) -> None:
        self.conn.send_stream_data(self.stream, data)

    def rotate(self) -> tuple[bytes, bytes]:
        """change_connection_id(): move to a spare CID the server issued; (old, new) DCIDs."""
        old = peer_cid(self.conn)
        self.conn.change_connection_id()
        return old, peer_cid(self.conn)

    @property
    def dcid(self) -> bytes:
        return peer_cid(self.conn)

    @property
    def spare_cids(self) -> int:
        return spare_peer_cids(self.conn)

    @property
    def host_cid(self) -> bytes:
        return self.conn.host_cid

    @property
    def host_cids(self) -> frozenset[bytes]:
        """The keys of the client's own table: every CID it issued and has not retired."""
        # aioquic internal: QuicConnection._host_cids (RFC 9000 section 5.1.1)
        return frozenset(c.cid for c in self.conn._host_cids)

    def close(self) -> None:
        self.conn.close()
