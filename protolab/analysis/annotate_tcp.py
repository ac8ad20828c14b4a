"""The annotator's TCP part: the connection entries both kernels hold (RFC 9293), rebuilt by the
TCP observer from the segments, and what an HTTP/1.x message on the connection says about where
the application's state is (in the message, a token, or looked up by a session cookie).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import replace
from typing import NamedTuple

from protolab.analysis.annotate_dns import parse_dns
from protolab.analysis.annotate_tls import KERNELS, TlsAnnotator
from protolab.analysis.annotate_ws import WsAnnotator
from protolab.analysis.facts import MAX_PENDING, Action, Fact, Holder, Kind, Row, row_of
from protolab.protocols.tcp import ACK, FIN, RST, SYN, Fit, Role, SegmentView, TcpObserver, TcpState
from protolab.wire.packets import Decoded, TcpHeader

#: "SYN/ACK" for each value of the flags byte, "none" for 0 (made once, not per segment)
_FLAG_TEXT = tuple("/".join(TcpHeader(0, 0, f, 0).flag_names()) or "none" for f in range(256))
_ENDED = frozenset({TcpState.CLOSED, TcpState.TIME_WAIT})  #: a move into these ends an entry


class _Parties(NamedTuple):
    """A segment's sender and receiver, and the texts and holder its rows name them by."""

    sender: str  #: "client" or "server"
    receiver: str
    kernel: Holder  #: the sender's kernel
    flight: str  #: after the bytes in flight: " B in flight client→server; "
    expects: str  #: before the receiver's RCV.NXT: "server kernel expects seq "


def _parties(sender: str, receiver: str, kernel: Holder) -> _Parties:
    return _Parties(sender, receiver, kernel, f" B in flight {sender}→{receiver}; ",
                    f"{receiver} kernel expects seq ")


#: the parties by the sender's role (made once, not per segment)
_PARTIES = {Role.CLIENT: _parties("client", "server", Holder.CLIENT_KERNEL),
            Role.SERVER: _parties("server", "client", Holder.SERVER_KERNEL)}
#: the enum members the common rows name, looked up once: naming a member (`Action.USES`) goes
#: through Python 3.11's EnumType.__getattr__ hook, about 0.15 us, several times a row
_IN_WINDOW, _NOBODY = Fit.IN_WINDOW, (Holder.NOBODY,)
_USES, _CREATES, _MISSING = Action.USES, Action.CREATES, Action.MISSING
_SEGMENT, _OPEN, _OUT_OF_WINDOW = Kind.TCP_SEGMENT, Kind.TCP_OPEN, Kind.TCP_OUT_OF_WINDOW
_HTTP_STARTS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"PATCH ", b"OPTIONS ",
                b"HTTP/1.")
#: their first bytes: a payload starting with none of them (TLS, most data) is no HTTP start
_HTTP_FIRST = frozenset(start[0] for start in _HTTP_STARTS)


class TcpAnnotator:
    """Rows for TCP segments; voids moves of rows still in the annotator's `window` when a RST
    shows nothing was listening."""

    def __init__(self, window: deque[tuple[Row, Decoded]], max_flows: int = 0) -> None:
        self._window = window
        self.observer = TcpObserver(max_flows)
        self._last: OrderedDict[int, int] = OrderedDict()  # flow -> its last packet
        self._tls = TlsAnnotator()
        self._ws = WsAnnotator()
        self._synack: OrderedDict[int, int] = OrderedDict()  # flow -> its first SYN-ACK

    def row(self, d: Decoded, base: dict, named_as_seen: bool = False) -> Row:
        """The row of segment `d`; `named_as_seen`: its endpoints are `base`'s (no NAT's alias
        renamed them), so the observer need not name them again."""
        number = base["number"]
        view = self.observer.feed(d, number, base["src"], base["dst"]) if named_as_seen \
            else self.observer.feed(d, number)
        flags = d.tcp.flags
        http = _describe(d, view, base)
        parties = _PARTIES[view.sender_role]
        sender, receiver = parties.sender, parties.receiver
        if not view.in_window:
            return _row(base, _MISSING, _NOBODY, Fact(_OUT_OF_WINDOW, (), "", (), (), {
                "sender": sender, "receiver": receiver, "states_known": view.states_known,
                "seq": view.rel_seq, "expects": view.expects}))
        if flags & RST:
            return self._rst(view, base, parties)
        self._last[view.flow] = number
        if len(self._last) > MAX_PENDING:  # one entry more at most: the oldest goes
            self._last.popitem(last=False)
        moves = view.transitions if view.states_known else ()
        if flags & SYN:
            if flags & ACK:
                self._synack.setdefault(view.flow, number)
                if len(self._synack) > MAX_PENDING:
                    self._synack.popitem(last=False)
                if view.synack_again or view.cookie_ts:
                    return self._resent_or_cookie(view, base, moves, parties)
            return _row(base, _CREATES, KERNELS, Fact(_OPEN, (), "", moves, (), {
                "sender": sender, "receiver": receiver, "states_known": view.states_known,
                "seq": view.rel_seq, "expects": view.expects,
                "who": "server kernel holds" if flags & ACK else "client kernel creates"}))
        if view.keepalive or view.challenges is not None:
            return self._keepalive_or_challenge(view, base, parties)
        values = {"sender": sender, "receiver": receiver, "states_known": view.states_known,
                  "seq": view.rel_seq,
                  # unknown states: no kernel is known to hold this connection, so nothing it
                  # "expects"
                  "expects": f"{parties.expects}{view.expects} next" if view.states_known
                  else "no kernel state known for it",
                  "flight": f"{view.in_flight}{parties.flight}" if view.in_flight else ""}
        if d.payload and (found := self._payload_row(d, view, base, moves, values, http)) \
                is not None:
            return found
        if flags & FIN or (moves and any(t.new in _ENDED for t in moves)):
            also = (Kind.WS_DROPPED,) if flags & FIN and self._ws.ended(view.flow) else ()
            return row_of(base, action=Action.ENDS, holders=KERNELS,
                          fact=Fact(Kind.TCP_CLOSE, moves=moves, values=values, also=also))
        return _row(base, _USES, KERNELS, Fact(_SEGMENT, (), "", moves, (), values))

    def _payload_row(self, d: Decoded, view: SegmentView, base: dict, moves: tuple,
                     values: dict, http: str | None) -> Row | None:
        """The row of a segment whose data is a WebSocket frame or upgrade, a TLS record or an
        HTTP message; None for other data."""
        ws = self._ws.describe(d.payload, base["number"], view.flow, base)
        if ws is not None:
            action, ws_holders, fact = ws
            return row_of(base, action=action, holders=ws_holders, fact=replace(
                fact, moves=moves, values={**values, **fact.values}))
        tls = self._tls.describe(d.payload, base["number"], view.flow, base) if not http \
            else None
        if tls is not None:
            action, tls_holders, fact = tls
            return row_of(base, action=action, holders=tls_holders, fact=replace(
                fact, moves=moves, values={**values, **fact.values}))
        if http:
            kind, action, http_holders = _http_state(d.payload)
            return row_of(base, action=action, holders=(*http_holders, *KERNELS),
                          fact=Fact(kind, moves=moves, values=values))
        return None

    def _resent_or_cookie(self, view: SegmentView, base: dict, moves: tuple,
                          parties: _Parties) -> Row:
        """A SYN-ACK sent again by its entry's timer, or one whose TSval encodes the SYN (a SYN
        cookie)."""
        if view.synack_again:
            first = self._synack.get(view.flow, 0)
            return row_of(base, action=Action.USES, holders=(Holder.SERVER_KERNEL,),
                          fact=Fact(Kind.TCP_SYN_QUEUED, (first,) if first else (), moves=moves,
                                    values=_values(view, parties)))
        low = self._tsval(base) % 64
        return row_of(base, action=Action.NONE, holders=(Holder.PACKET,),
                      fact=Fact(Kind.TCP_SYN_COOKIE, moves=moves,
                                values={**_values(view, parties), "low": low}))

    def _keepalive_or_challenge(self, view: SegmentView, base: dict, parties: _Parties) -> Row:
        """An empty ACK that answers an in-window RST (a challenge ACK), or a keepalive probe."""
        if view.challenges is not None:
            return row_of(base, action=Action.USES, holders=(parties.kernel,),
                          fact=Fact(Kind.TCP_CHALLENGE_ACK, (view.challenges,), values={
                              **_values(view, parties), "rcv_nxt": view.rel_ack}))
        return row_of(base, action=Action.USES, holders=(parties.kernel,),
                      fact=Fact(Kind.TCP_KEEPALIVE, values=_values(view, parties)))

    def _tsval(self, base: dict) -> int:
        return base["fields"].get("tcp_tsval", 0)

    def _rst(self, view: SegmentView, base: dict, parties: _Parties) -> Row:
        """A RST: in the receiver's window but not exact (challenged, no reset), answering a
        segment to a port with no socket, or resetting the connection."""
        values = _values(view, parties)
        if view.rst_fit is _IN_WINDOW:
            return row_of(base, action=Action.USES, holders=(Holder.SERVER_KERNEL
                          if parties.receiver == "server" else Holder.CLIENT_KERNEL,),
                          fact=Fact(Kind.TCP_RST_CHALLENGED, values=values))
        moves = view.transitions if view.states_known else ()
        if view.first_from_sender:  # RFC 9293 section 3.10.7.1: no socket, so RST
            answered = self._last.get(view.flow, 0)
            moves = tuple(t for t in moves if t.endpoint != base["src"])
            self._forget_moves_of(base["src"], answered)
            return row_of(base, action=Action.MISSING, holders=(Holder.NOBODY,),
                          fact=Fact(Kind.TCP_RST_NO_CONNECTION,
                                    (answered,) if answered else (), moves=moves, values={
                                        **values, "sender": base["src"]}))
        also = (Kind.WS_DROPPED,) if self._ws.ended(view.flow) else ()
        return row_of(base, action=Action.MISSING, holders=(Holder.NOBODY,),
                      fact=Fact(Kind.TCP_RST, moves=moves, values=values, also=also))

    def _forget_moves_of(self, endpoint: str, number: int) -> None:
        """A port that answers with RST never had a connection: the moves the model gave it at
        packet `number` (e.g. LISTEN→SYN_RECV for a SYN to a port with no listener) are void."""
        for i, (row, d) in enumerate(self._window):
            if row.number == number and row.fact.moves:
                kept = tuple(t for t in row.fact.moves if t.endpoint != endpoint)
                self._window[i] = (replace(row, fact=replace(row.fact, moves=kept)), d)


def _describe(d: Decoded, view: SegmentView, base: dict) -> str | None:
    """Put the segment's summary and flow in `base`, its fields in base["fields"] (after the
    values every row has, which the annotator put there); an HTTP line, or a DNS message over
    TCP, in the summary too. Return the HTTP line, if the payload starts one."""
    base["flow"] = view.label
    flags = _FLAG_TEXT[d.tcp.flags]
    summary = f"[{flags}] seq={view.rel_seq} len={view.length}" if view.rel_ack is None else \
        f"[{flags}] seq={view.rel_seq} ack={view.rel_ack} len={view.length}"
    fields = base["fields"]
    http = None
    if payload := d.payload:  # an HTTP start line, or a DNS message, in it?
        http = _http_line(payload) if payload[0] in _HTTP_FIRST else None
        if http:
            summary += f" {http}"
            fields["http"] = http
        dns_tcp = parse_dns(payload[2:]) if len(payload) > 14 and 53 in (d.sport, d.dport) \
            else None
        if dns_tcp is not None:  # RFC 1035 section 4.2.2: a two-byte length, then the message
            qid, is_response, question, rcode, _ = dns_tcp
            summary += f" DNS {'answer' if is_response else 'query'} {qid:#06x} {question}"
            if http:  # the DNS message's fields stand for the payload, not the HTTP line's
                del fields["http"]
            fields.update(dns_id=qid, dns_response=is_response, dns_question=question)
    fields["tcp_len"] = view.length
    if (opts := view.options) is not None:  # a SYN's
        if opts.mss is not None:
            fields["tcp_mss"] = opts.mss
        if opts.wscale is not None:
            fields["tcp_wscale"] = opts.wscale
        if opts.tsval is not None:
            fields["tcp_tsval"] = opts.tsval
        fields["tcp_sack_ok"] = opts.sack_ok
    if view.window is not None:
        fields["tcp_receiver_window"] = view.window
    if view.rst_fit is not None:
        fields["tcp_rst_fit"] = view.rst_fit.value
    base["summary"] = summary
    return http


def _row(base: dict, action: Action, holders: tuple[Holder, ...], fact: Fact) -> Row:
    """`row_of` for a base `_describe` finished (its summary, flow and fields are there), on
    the rows nearly every segment gets: no defaults looked at, the fact made with its fields in
    order (keywords cost a third of the fact)."""
    return Row(base["number"], base["time"], base["src"], base["dst"], base["proto"],
               base["summary"], action, holders, fact, base["flow"], base["fields"])


def _values(view: SegmentView, parties: _Parties) -> dict:
    """What the sentences of a segment's rarer rows name (the common rows list their own)."""
    return {"sender": parties.sender, "receiver": parties.receiver,
            "states_known": view.states_known, "seq": view.rel_seq, "expects": view.expects}


def _http_state(payload: bytes) -> tuple[Kind, Action, tuple[Holder, ...]]:
    """Where an HTTP message's application state is: in it, or looked up by a key it carries."""
    head = payload.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    lines = head.split("\r\n")
    headers = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("authorization", "").startswith("bearer "):
        return Kind.HTTP_TOKEN, Action.USES, (Holder.TOKEN,)
    if "set-cookie" in head and "sessionid=" in head:
        return Kind.HTTP_SESSION_CREATED, Action.CREATES, (Holder.SERVER_APP,
                                                           Holder.SHARED_STORE)
    if "sessionid=" in headers.get("cookie", ""):
        return Kind.HTTP_SESSION_LOOKUP, Action.USES, (Holder.SERVER_APP, Holder.SHARED_STORE)
    return Kind.HTTP_SELF_CONTAINED, Action.USES, (Holder.PACKET,)


def _http_line(payload: bytes) -> str | None:
    """The request or status line of an HTTP/1.x message, if the payload starts one."""
    if not payload.startswith(_HTTP_STARTS):
        return None
    line = payload.split(b"\r\n", 1)[0][:120]
    return line.decode("latin-1")
