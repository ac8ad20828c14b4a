"""TLS 1.3 handshake messages read from the wire: what the client carries (a session ticket) and
whether the server took it.

Where state lives: with stateless session tickets (RFC 8446 section 4.6.1) the server keeps no
session per client. It seals the session's state (the resumption secret, the cipher suite, the
ticket's age) under its own ticket key and hands the sealed blob, the ticket, to the client, which
stores it and presents it as a PSK identity in the `pre_shared_key` extension (41, RFC 8446
section 4.2.11) of its next ClientHello. A server that can open it answers with `pre_shared_key`
in its ServerHello (the index of the identity it took): a resumed session. One that cannot (its
key is new, or another server's) answers without it: a full handshake. ClientHello and ServerHello
travel in the clear, so both facts are in any capture; the NewSessionTicket that carried the ticket
is encrypted (read it with the key log).

Only the handshake headers are parsed here (RFC 8446 section 4, 4.1.2, 4.1.3, 4.2); no keys.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HANDSHAKE = 22  #: TLS record content type handshake (RFC 8446 section 5.1)
APPLICATION_DATA = 23  #: encrypted records in TLS 1.3 carry this outer type
CLIENT_HELLO, SERVER_HELLO = 1, 2  #: handshake message types
PRE_SHARED_KEY = 41  #: the extension that carries the ticket (RFC 8446 section 4.2.11)
EARLY_DATA = 42  #: 0-RTT offered (RFC 8446 section 4.2.10)
SUPPORTED_VERSIONS = 43
TLS13 = 0x0304


@dataclass(frozen=True)
class Hello:
    """A ClientHello or ServerHello, as far as session state goes."""

    client: bool  #: ClientHello (True) or ServerHello
    random: bytes  #: 32 bytes: a relay forwards the same ClientHello with the same random
    extensions: tuple[int, ...]  #: extension types, in order
    identities: tuple[bytes, ...] = ()  #: ClientHello ext 41: the tickets the client presents
    selected: int | None = None  #: ServerHello ext 41: the identity the server accepted
    tls13: bool = False  #: supported_versions names TLS 1.3 (ServerHello: chose it)

    @property
    def offers_ticket(self) -> bool:
        return self.client and PRE_SHARED_KEY in self.extensions

    @property
    def resumed(self) -> bool:
        """ServerHello: the server took a ticket (RFC 8446 section 4.2.11)."""
        return not self.client and self.selected is not None


def is_tls_record(payload: bytes) -> bool:
    """A TLS record header: a known content type and a 0x03xx legacy version."""
    return len(payload) >= 5 and payload[0] in (20, 21, 22, 23) and payload[1] == 3


def records(payload: bytes) -> list[tuple[int, bytes]]:
    """(content type, fragment) of each whole record at the start of `payload`."""
    out, at = [], 0
    while at + 5 <= len(payload) and is_tls_record(payload[at:]):
        (length,) = struct.unpack_from("!H", payload, at + 3)
        if at + 5 + length > len(payload):
            break
        out.append((payload[at], payload[at + 5:at + 5 + length]))
        at += 5 + length
    return out


def parse_hello(payload: bytes) -> Hello | None:
    """The Hello that starts `payload` (one TCP segment), or None when it does not start one."""
    recs = records(payload)
    if not recs or recs[0][0] != HANDSHAKE or len(recs[0][1]) < 4:
        return None
    body = recs[0][1]
    kind = body[0]
    if kind not in (CLIENT_HELLO, SERVER_HELLO):
        return None
    try:
        return _hello(body[4:4 + int.from_bytes(body[1:4], "big")], kind == CLIENT_HELLO)
    except (struct.error, IndexError, ValueError):
        return None


def _hello(msg: bytes, client: bool) -> Hello:
    random = msg[2:34]
    at = 34
    at += 1 + msg[at]  # legacy_session_id
    if client:
        (n,) = struct.unpack_from("!H", msg, at)
        at += 2 + n  # cipher_suites
        at += 1 + msg[at]  # legacy_compression_methods
    else:
        at += 3  # cipher_suite, legacy_compression_method
    (total,) = struct.unpack_from("!H", msg, at)
    at += 2
    end = at + total
    kinds, identities, selected, tls13 = [], (), None, False
    while at + 4 <= end:
        ext, length = struct.unpack_from("!HH", msg, at)
        data = msg[at + 4:at + 4 + length]
        kinds.append(ext)
        if ext == PRE_SHARED_KEY and client:
            identities = _identities(data)
        elif ext == PRE_SHARED_KEY:
            (selected,) = struct.unpack_from("!H", data)
        elif ext == SUPPORTED_VERSIONS:
            tls13 = _names_tls13(data, client)
        at += 4 + length
    return Hello(client, random, tuple(kinds), identities, selected, tls13)


def _identities(data: bytes) -> tuple[bytes, ...]:
    """OfferedPsks.identities: each an opaque identity (the ticket) and its obfuscated age."""
    (total,) = struct.unpack_from("!H", data)
    out, at = [], 2
    while at < 2 + total:
        (n,) = struct.unpack_from("!H", data, at)
        out.append(bytes(data[at + 2:at + 2 + n]))
        at += 2 + n + 4
    return tuple(out)


def _names_tls13(data: bytes, client: bool) -> bool:
    if not client:
        return data[:2] == TLS13.to_bytes(2, "big")
    versions = data[1:1 + data[0]]
    return any(versions[i:i + 2] == TLS13.to_bytes(2, "big") for i in range(0, len(versions), 2))
