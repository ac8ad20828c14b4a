"""WebSocket on the wire, read as an observer would: the HTTP upgrade and the frames after it.

Where state lives: the opening handshake (RFC 6455 section 4) is one HTTP/1.1 exchange. The client
sends `Upgrade: websocket` with a random `Sec-WebSocket-Key`; the server proves it read this very
request by answering `101 Switching Protocols` with `Sec-WebSocket-Accept` = base64(SHA-1(key +
a fixed GUID)) (section 4.2.2). After the 101 the TCP connection carries frames (section 5.2), and
whatever the application keeps for the connection (who is subscribed, what was sent last) lives in
the one server process that holds the socket. Every client-to-server frame is masked with a fresh
4-byte key (section 5.3): the bytes on the wire are XORed, and an observer unmasks them with the
key in the frame header, as Wireshark does. Close frames carry a 2-byte code (section 7.4).

Only bytes are parsed here: no sockets, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  #: RFC 6455 section 1.3
MAX_FRAME = 1 << 20  #: frames longer than this are not buffered by an observer


class Opcode(IntEnum):
    """RFC 6455 section 5.2."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


#: close codes this lab meets (RFC 6455 section 7.4.1)
CLOSE_NAMES = {1000: "normal closure", 1001: "going away", 1002: "protocol error",
               1006: "abnormal closure: no close frame (never sent on the wire)",
               1011: "internal error", 1012: "service restart"}


def accept_for(key: str) -> str:
    """The `Sec-WebSocket-Accept` a server must answer to `key` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


@dataclass(frozen=True)
class Frame:
    """One whole frame as it was on the wire, its payload unmasked."""

    fin: bool
    opcode: int
    masked: bool
    mask: bytes  #: the 4-byte masking key (b"" when not masked)
    payload: bytes  #: unmasked
    size: int  #: bytes on the wire, header included

    @property
    def name(self) -> str:
        try:
            return Opcode(self.opcode).name.lower()
        except ValueError:
            return f"opcode {self.opcode:#x}"

    @property
    def close_code(self) -> int | None:
        """A close frame's status code (section 5.5.1), None when it has none."""
        if self.opcode != Opcode.CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8", "replace") if self.opcode == Opcode.CLOSE else ""

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


def unmask(data: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte key, repeated (RFC 6455 section 5.3)."""
    if not mask:
        return data
    whole = (mask * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(whole, "big")).to_bytes(len(data), "big")


def parse_frame(data: bytes) -> Frame | None:
    """The frame at the start of `data`, or None when `data` does not hold a whole one."""
    if len(data) < 2:
        return None
    fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
    masked, length, at = bool(data[1] & 0x80), data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        (length,), at = struct.unpack_from("!H", data, 2), 4
    elif length == 127:
        if len(data) < 10:
            return None
        (length,), at = struct.unpack_from("!Q", data, 2), 10
    mask = b""
    if masked:
        mask, at = bytes(data[at:at + 4]), at + 4
    if len(data) < at + length or len(mask) != 4 * masked:
        return None
    return Frame(fin, opcode, masked, mask, unmask(bytes(data[at:at + length]), mask),
                 at + length)


def frame_needs(data: bytes) -> int:
    """How many bytes the frame starting `data` takes in all (header and payload); 0 when its
    header is not complete yet."""
    if len(data) < 2:
        return 0
    length, at = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return 0
        (length,), at = struct.unpack_from("!H", data, 2), 4
    elif length == 127:
        if len(data) < 10:
            return 0
        (length,), at = struct.unpack_from("!Q", data, 2), 10
    return at + (4 if data[1] & 0x80 else 0) + length


def split_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """The whole frames at the start of `data`, and the bytes of an unfinished one after them."""
    frames, at = [], 0
    while (frame := parse_frame(data[at:])) is not None:
        frames.append(frame)
        at += frame.size
    return frames, bytes(data[at:])


@dataclass(frozen=True)
class Upgrade:
    """The parts of an HTTP message that open a WebSocket (RFC 6455 sections 4.1, 4.2.2)."""

    request: bool  #: the client's GET (True) or the server's response
    status: int  #: the response's status (101); 0 for a request
    target: str  #: the request target ("/chat?user=u1&since=7"); "" for a response
    key: str  #: Sec-WebSocket-Key (request) or Sec-WebSocket-Accept (response)
    headers: dict[str, str]  #: every header, names in lower case
    length: int  #: bytes of the head, blank line included


def parse_upgrade(payload: bytes) -> Upgrade | None:
    """The WebSocket upgrade request or 101 response that starts `payload`, or None."""
    head, sep, _ = payload.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    first = lines[0].split(" ")
    if lines[0].startswith("HTTP/1.1 ") and len(first) >= 2 and first[1] == "101":
        if "sec-websocket-accept" not in headers:
            return None
        return Upgrade(False, 101, "", headers["sec-websocket-accept"], headers, len(head) + 4)
    if first[0] == "GET" and len(first) == 3 and headers.get("upgrade", "").lower() == "websocket":
        return Upgrade(True, 0, first[1], headers.get("sec-websocket-key", ""), headers,
                       len(head) + 4)
    return None
