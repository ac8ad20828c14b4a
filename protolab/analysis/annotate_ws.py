"""The annotator's WebSocket part: the HTTP upgrade, then the frames on the same TCP connection.

Where state lives: the upgrade request's `Sec-WebSocket-Key` is the client's; the 101 response's
`Sec-WebSocket-Accept` proves the server answered this request (checked here, RFC 6455 section
4.2.2). From then on the connection is a WebSocket whose application state (the subscription, the
last message id sent) lives in the one server process holding the socket, and whose client keeps
its last-seen id. Frames from the client are masked (section 5.3); the annotation shows them
unmasked, as Wireshark does. A connection that ends (FIN or RST) with no close frame before it is
what the client reports as 1006 (section 7.1.5): the server's state for it is gone. The lab's chat
(`protolab.protocols.chat`) speaks JSON in text frames: the ids and the resume point are named.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from protolab.analysis.facts import MAX_PENDING, Action, Fact, Holder, Kind
from protolab.protocols.chat import decode, parse_target
from protolab.protocols.websocket import (
    CLOSE_NAMES,
    MAX_FRAME,
    Frame,
    Opcode,
    accept_for,
    frame_needs,
    parse_upgrade,
    split_frames,
)

KERNELS = (Holder.CLIENT_KERNEL, Holder.SERVER_KERNEL)
Described = tuple[Action, tuple[Holder, ...], Fact]


@dataclass
class _Flow:
    """One upgraded TCP connection as the observer follows it."""

    client: str  #: the endpoint that sent the upgrade request
    request: int  #: its packet number
    key: str  #: its Sec-WebSocket-Key
    open: bool = False  #: a 101 came back
    closed: bool = False  #: a close frame was seen
    ended: bool = False  #: its first FIN or RST was seen
    pending: dict[str, bytes] = field(default_factory=dict)  #: sender → an unfinished frame


class WsAnnotator:
    """Facts for TCP payloads that upgrade a connection to WebSocket or travel on one."""

    def __init__(self) -> None:
        self._flows: OrderedDict[int, _Flow] = OrderedDict()

    def describe(self, payload: bytes, number: int, flow: int, base: dict) -> Described | None:
        """The fact of a segment with payload on a WebSocket (or opening one); fields and
        summary added to `base`; None when it is neither."""
        known = self._flows.get(flow)
        if known is not None and known.open:
            return self._frames(known, payload, base)
        upgrade = parse_upgrade(payload) if payload[:4] in (b"GET ", b"HTTP") else None
        if upgrade is None:
            return None
        if upgrade.request:
            self._flows[flow] = _Flow(base["src"], number, upgrade.key)
            while len(self._flows) > MAX_PENDING:
                self._flows.popitem(last=False)
            return _request(upgrade.target, upgrade.key, base)
        if known is None:
            return None
        known.open = True
        rest = payload[upgrade.length:]
        fact = _accepted(known, upgrade.key, base)
        if rest:  # frames in the same segment as the 101 (a welcome): their fields too
            frames = self._split(known, base["src"], rest)
            if frames:
                _frame_fields(frames, base, known.client == base["src"])
                _data(frames, False, base)
        return fact

    def ended(self, flow: int) -> bool:
        """True once, at the first FIN or RST of an open WebSocket that saw no close frame."""
        f = self._flows.get(flow)
        if f is None or not f.open or f.ended:
            return False
        f.ended = True
        return not f.closed

    def _split(self, f: _Flow, sender: str, payload: bytes) -> list[Frame]:
        data = f.pending.pop(sender, b"") + payload
        frames, rest = split_frames(data)
        if rest and frame_needs(rest) <= MAX_FRAME:
            f.pending[sender] = rest
        return frames

    def _frames(self, f: _Flow, payload: bytes, base: dict) -> Described | None:
        from_client = base["src"] == f.client
        frames = self._split(f, base["src"], payload)
        if not frames:
            base["summary"] += " WS (part of a frame)"
            return Action.USES, KERNELS, Fact(Kind.WS_FRAME, values={
                "what": "the rest of a frame: the receiver reassembles it"})
        _frame_fields(frames, base, from_client)
        sender = "client" if from_client else "server"
        close = next((fr for fr in frames if fr.opcode == Opcode.CLOSE), None)
        if close is not None:
            f.closed = True
            code = close.close_code
            return Action.ENDS, (Holder.SERVER_APP, *KERNELS), Fact(
                Kind.WS_CLOSE, (f.request,), values={
                    "code": code, "name": CLOSE_NAMES.get(code or 0, "no code"),
                    "sender": sender})
        first = frames[0]
        if first.opcode in (Opcode.PING, Opcode.PONG):
            kind = Kind.WS_PING if first.opcode == Opcode.PING else Kind.WS_PONG
            return Action.USES, KERNELS, Fact(kind, values={"sender": sender,
                                                             "data": first.text[:40]})
        return _data(frames, from_client, base)


def _request(target: str, key: str, base: dict) -> Described:
    user, since, epoch = parse_target(target)
    base["fields"].update(ws_upgrade="request", ws_key=key, ws_target=target)
    base["summary"] += f" WS upgrade key={key}"
    if since is None:
        return Action.CREATES, (Holder.CLIENT_APP, *KERNELS), Fact(
            Kind.WS_UPGRADE, key=key, values={"user": user})
    base["fields"].update(ws_since=since, ws_epoch=epoch)
    base["summary"] += f" since={since}"
    return Action.USES, (Holder.CLIENT_APP, Holder.PACKET, *KERNELS), Fact(
        Kind.WS_RESUME, key=key, values={"user": user, "since": since, "epoch": epoch})


def _accepted(f: _Flow, accept: str, base: dict) -> Described:
    ok = accept == accept_for(f.key)
    base["fields"].update(ws_upgrade="101", ws_accept=accept, ws_accept_ok=ok)
    base["summary"] += " WS 101 accept " + ("ok" if ok else "WRONG")
    check = "matches" if ok else "does NOT match"
    return Action.CREATES, (Holder.SERVER_APP, *KERNELS), Fact(
        Kind.WS_ACCEPTED, (f.request,), key=accept, values={"check": check})


def _frame_fields(frames: list[Frame], base: dict, from_client: bool) -> None:
    base["fields"].update(
        ws_opcodes=[fr.opcode for fr in frames],
        ws_frames=[{"opcode": fr.opcode, "fin": fr.fin, "masked": fr.masked,
                    "mask": fr.mask.hex(), "text": fr.text[:300] if fr.opcode < 8 else "",
                    "close_code": fr.close_code} for fr in frames],
        ws_from_client=from_client)
    first = frames[0]
    if first.masked:
        base["fields"]["ws_mask"] = first.mask.hex()
    code = next((fr.close_code for fr in frames if fr.close_code is not None), None)
    if code is not None:
        base["fields"]["ws_close_code"] = code
    shown = ", ".join(_frame_text(fr) for fr in frames[:3])
    more = f" +{len(frames) - 3} more" if len(frames) > 3 else ""
    base["summary"] += f" WS {shown}{more}"


def _frame_text(fr: Frame) -> str:
    mask = f" mask={fr.mask.hex()}" if fr.masked else ""
    if fr.opcode == Opcode.CLOSE:
        return f"close {fr.close_code}{mask}"
    body = fr.text if fr.opcode < 8 else fr.payload.hex()
    return f"{fr.name}{mask} {body[:48]!r}"


def _data(frames: list[Frame], from_client: bool, base: dict) -> Described:
    objs = [decode(fr.text) for fr in frames if fr.opcode == Opcode.TEXT]
    ids = [o["id"] for o in objs if o.get("type") == "msg" and isinstance(o.get("id"), int)]
    welcome = next((o for o in objs if o.get("type") == "welcome"), None)
    size = sum(fr.size for fr in frames)
    values = {"n": len(frames), "size": size, "masked": " masked" if from_client else ""}
    if ids:
        base["fields"]["ws_msg_ids"] = ids
    if welcome is not None:
        base["fields"]["ws_welcome"] = welcome
        return Action.CREATES, (Holder.SERVER_APP, Holder.SHARED_STORE, *KERNELS), Fact(
            Kind.WS_WELCOME, values={**values, "backend": welcome.get("backend", "?"),
                                     "pid": welcome.get("pid", "?"),
                                     "replay": welcome.get("replay", 0),
                                     "place": "known: replays what came after it"
                                     if welcome.get("known") else "not known here"})
    if from_client:
        what = ("a post: the server holding this connection numbers it and fans it out"
                if any(o.get("type") == "post" for o in objs) else "client data")
        return Action.USES, (Holder.SERVER_APP, *KERNELS), Fact(
            Kind.WS_FRAME, values={**values, "what": what})
    what = (f"message ids {ids[0]}..{ids[-1]}: the server process's last id sent to this "
            f"connection moves to {ids[-1]} (server app memory); the client keeps it as its "
            f"last-seen id (client app memory)" if ids else "server data")
    return Action.USES, (Holder.SERVER_APP, Holder.CLIENT_APP, *KERNELS), Fact(
        Kind.WS_FRAME, values={**values, "what": what})
