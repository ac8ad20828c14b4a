"""TCP connection state, sans-IO: the RFC 9293 state machine as a table, and an observer.

Where state lives: in two kernels. Each endpoint's kernel keeps a connection entry keyed by the
4-tuple (RFC 9293 section 3.3.1: the "Transmission Control Block"): its state, the next sequence
number it will send (SND.NXT), the oldest unacknowledged one (SND.UNA) and the next one it expects
to receive (RCV.NXT). Lose either entry and the connection is gone: the survivor's next segment is
answered with RST (RFC 9293 section 3.10.7.1).

`TcpObserver` rebuilds both endpoints' entries from the packets of a capture, so the annotation can
say which kernel holds what; the demo checks it against the kernel's own record of transitions.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # decoded headers come in as data; this core reads no bytes itself
    from protolab.wire.packets import Decoded, TcpHeader, TcpOptions

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


class Role(Enum):
    __hash__ = object.__hash__  #: identity: Enum's own __hash__ is a Python call per lookup

    CLIENT = "client"  #: the active opener: sends the first SYN
    SERVER = "server"  #: the passive opener: a listening socket answers the SYN


class TcpState(Enum):
    __hash__ = object.__hash__  #: identity: Enum's own __hash__ is a Python call per lookup

    CLOSED = "CLOSED"  #: no connection entry
    LISTEN = "LISTEN"  #: a listening socket waits for SYNs
    SYN_SENT = "SYN_SENT"  #: client sent SYN, waits for SYN-ACK
    SYN_RECV = "SYN_RECV"  #: server got SYN, sent SYN-ACK, waits for the ACK
    ESTABLISHED = "ESTABLISHED"  #: both directions open
    FIN_WAIT_1 = "FIN_WAIT_1"  #: we sent FIN, not yet acknowledged
    FIN_WAIT_2 = "FIN_WAIT_2"  #: our FIN is acknowledged; the peer may still send
    CLOSING = "CLOSING"  #: both sent FIN at once; waiting for the ACK of ours
    TIME_WAIT = "TIME_WAIT"  #: we closed first; wait 2*MSL so stray segments die
    CLOSE_WAIT = "CLOSE_WAIT"  #: the peer closed; our application has not yet
    LAST_ACK = "LAST_ACK"  #: we closed second; waiting for the ACK of our FIN


class Seg(Enum):
    __hash__ = object.__hash__  #: identity: Enum's own __hash__ is a Python call per lookup

    SEND_SYN = "send SYN"  #: connect()
    RECV_SYN = "recv SYN"  #: a SYN reached a listening socket
    RECV_SYN_ACK = "recv SYN-ACK"  #: the answer to our SYN
    RECV_ACK = "recv ACK of our SYN/FIN"  #: acknowledges the SYN or FIN we sent
    SEND_FIN = "send FIN"  #: close() or shutdown(SHUT_WR)
    RECV_FIN = "recv FIN"  #: the peer closed its direction
    SEND_RST = "send RST"  #: abort
    RECV_RST = "recv RST"  #: the peer has no (or no longer a) connection
    TIMEOUT = "2MSL timer"  #: TIME_WAIT ends


_BOTH_ESTABLISHED = {
    TcpState.ESTABLISHED: {Seg.SEND_FIN: TcpState.FIN_WAIT_1, Seg.RECV_FIN: TcpState.CLOSE_WAIT,
                           Seg.RECV_RST: TcpState.CLOSED, Seg.SEND_RST: TcpState.CLOSED},
    TcpState.FIN_WAIT_1: {Seg.RECV_ACK: TcpState.FIN_WAIT_2, Seg.RECV_FIN: TcpState.CLOSING,
                          Seg.RECV_RST: TcpState.CLOSED, Seg.SEND_RST: TcpState.CLOSED},
    TcpState.FIN_WAIT_2: {Seg.RECV_FIN: TcpState.TIME_WAIT, Seg.RECV_RST: TcpState.CLOSED,
                          Seg.SEND_RST: TcpState.CLOSED},
    TcpState.CLOSING: {Seg.RECV_ACK: TcpState.TIME_WAIT, Seg.RECV_RST: TcpState.CLOSED},
    TcpState.CLOSE_WAIT: {Seg.SEND_FIN: TcpState.LAST_ACK, Seg.RECV_RST: TcpState.CLOSED,
                          Seg.SEND_RST: TcpState.CLOSED},
    TcpState.LAST_ACK: {Seg.RECV_ACK: TcpState.CLOSED, Seg.RECV_RST: TcpState.CLOSED},
    TcpState.TIME_WAIT: {Seg.TIMEOUT: TcpState.CLOSED},
}

#: RFC 9293 section 3.3.2 (figure 5), keyed by (role, state) -> segment event -> next state.
#: A FIN that also acknowledges our FIN is two events, ACK then FIN, in the order of segment
#: processing (RFC 9293 section 3.10.7.4: "fifth, check the ACK field", "eighth, check the FIN
#: bit"); Linux records FIN_WAIT_1 -> FIN_WAIT_2 -> TIME_WAIT for it, not figure 5's shortcut.
TCP_TRANSITIONS = {
    (Role.CLIENT, TcpState.CLOSED): {Seg.SEND_SYN: TcpState.SYN_SENT},
    (Role.CLIENT, TcpState.SYN_SENT): {Seg.RECV_SYN_ACK: TcpState.ESTABLISHED,
                                       Seg.RECV_RST: TcpState.CLOSED},
    (Role.SERVER, TcpState.LISTEN): {Seg.RECV_SYN: TcpState.SYN_RECV},
    (Role.SERVER, TcpState.SYN_RECV): {Seg.RECV_ACK: TcpState.ESTABLISHED,
                                       Seg.RECV_RST: TcpState.CLOSED,
                                       Seg.RECV_FIN: TcpState.CLOSE_WAIT,
                                       # RFC 9293 section 3.10.4 (ABORT) and 3.10.7.1 (a SYN
                                       # to a port with no listener is answered RST): CLOSED.
                                       Seg.SEND_RST: TcpState.CLOSED},
    **{(role, state): moves for role in Role for state, moves in _BOTH_ESTABLISHED.items()},
}


@dataclass(slots=True, unsafe_hash=True)
class Transition:
    """One endpoint's state change, and the packet that caused it (nothing changes one once
    made; not frozen only because a frozen init costs a call per field)."""

    endpoint: str  #: "ip:port" of the endpoint whose kernel changed state
    role: Role
    old: TcpState
    new: TcpState
    event: Seg
    packet: int  #: capture packet number


@dataclass(slots=True)
class Endpoint:
    """What one kernel holds for one connection (its TCB), as seen from the wire."""

    addr: str
    role: Role
    state: TcpState
    isn: int | None = None  #: initial send sequence number
    snd_nxt: int | None = None  #: SND.NXT: next sequence number it will send (absolute)
    snd_una: int | None = None  #: SND.UNA: oldest of its bytes the peer has not acknowledged
    rcv_nxt: int | None = None  #: RCV.NXT: next sequence number it expects from the peer
    sent: int = 0  #: segments seen from it
    wscale: int | None = None  #: the window scale shift its SYN asked for (RFC 7323 2.2)
    window: int | None = None  #: the receive window it last advertised, in bytes (scaled)


@dataclass(slots=True)
class Flow:
    client: Endpoint
    server: Endpoint
    number: int  #: flow number, in order of first packet
    transitions: list[Transition] = field(default_factory=list)
    handshake_seen: bool = True  #: False: joined mid-stream: states unknown, roles guessed
    syn_options: int | None = None  #: what a SYN cookie's TSval would encode for the SYN
    synack_seqs: set[int] = field(default_factory=set)  #: the SYN-ACK sequence numbers seen
    challenged: tuple[str, int] | None = None  #: (receiver, packet) of an in-window RST
    key: frozenset[str] = frozenset()  #: its key in `TcpObserver.flows`: its two endpoints
    label: str = ""  #: its name in the rows ("tcp 3"), made once, not per segment

    def side(self, addr: str) -> tuple[Endpoint, Endpoint]:
        return (self.client, self.server) if addr == self.client.addr else \
            (self.server, self.client)


@dataclass(slots=True)
class SegmentView:
    """What the annotation says about one TCP segment (made per segment: slots, not frozen, as
    a frozen dataclass's init costs a call per field; `TcpObserver.feed` makes it in one call,
    from the values it worked out)."""

    flow: int
    sender_role: Role
    rel_seq: int  #: sequence number relative to the sender's ISN
    rel_ack: int | None  #: ack number relative to the receiver's ISN
    length: int  #: payload bytes
    in_flight: int  #: sender's bytes not yet acknowledged by the receiver, after this segment
    expects: int  #: relative sequence number the receiver's kernel expects next (its RCV.NXT)
    in_window: bool  #: False: far outside RCV.NXT, the receiving kernel will not accept it
    transitions: tuple[Transition, ...]
    states_known: bool = True  #: False: no handshake in the capture: states unknown, roles guessed
    first_from_sender: bool = False  #: the first segment this endpoint sent in this flow
    window: int | None = None  #: the receiver's last advertised receive window, in bytes
    label: str = ""  #: the flow's name in the rows ("tcp 3")
    # the marks (`TcpObserver._marks`), in this order: what a segment is beyond its moves
    rst_fit: Fit | None = None  #: a RST's sequence number against the receiver's RCV.NXT
    synack_again: bool = False  #: a SYN-ACK sent before on this flow: a timer resent it
    cookie_ts: bool = False  #: a SYN-ACK whose TSval's low 6 bits encode the SYN's options
    keepalive: bool = False  #: an empty ACK one below SND.NXT: a keepalive probe
    challenges: int | None = None  #: the in-window RST this empty ACK answers (challenge ACK)
    options: TcpOptions | None = None  #: a SYN's options (read once, for whoever describes it)


class Fit(Enum):
    """Where a RST's sequence number falls for its receiver (RFC 5961 section 3.2)."""

    __hash__ = object.__hash__  #: identity: Enum's own __hash__ is a Python call per lookup

    EXACT = "exact"  #: SEG.SEQ = RCV.NXT: the receiver resets the connection
    IN_WINDOW = "in window"  #: in the window but not exact: a challenge ACK, no reset
    OUTSIDE = "outside"  #: outside the window: silently dropped


#: Linux's SYN cookie with timestamps: TSval's low 6 bits carry the SYN's window scale (0xf:
#: none), SACK permitted (bit 4) and ECN (bit 5) (net/ipv4/syncookies.c, cookie_init_timestamp)
COOKIE_TS_BITS = 6

#: Fit.IN_WINDOW and Fit.OUTSIDE, looked up once: each segment asks (and naming an enum member
#: goes through Python 3.11's EnumType.__getattr__ hook, about 0.15 us)
_IN_WINDOW, _OUTSIDE = Fit.IN_WINDOW, Fit.OUTSIDE
#: `SegmentView`'s marks, as `TcpObserver._marks` gives them: rst_fit, synack_again, cookie_ts,
#: keepalive, challenges, options
Marks = tuple[Fit | None, bool, bool, bool, int | None, "TcpOptions | None"]
#: the marks of a segment that is nothing beyond its state moves (nearly every one)
_NO_MARKS: Marks = (None, False, False, False, None, None)
#: the sequence numbers a segment's SYN and FIN take, by flags & (SYN | FIN) (RFC 9293 3.4)
_CONTROL_LEN = (0, 1, 1, 2)


class TcpObserver:
    """Rebuild both endpoints' connection state from the packets of a capture."""

    WINDOW = 1 << 20  #: further than this from RCV.NXT counts as out of window here

    def __init__(self, max_flows: int = 0) -> None:
        """`max_flows` > 0 bounds memory: the least recently seen connection is forgotten (as
        Linux's conntrack table does when full); a later packet of it starts a new flow."""
        # ordered by when each was last seen: the least recent first, forgotten first (an
        # OrderedDict: a plain dict's first key after many deletions at its front is found by
        # a scan over their dead slots, 2% of a 1,000,000-packet run at 50,000 connections)
        self.flows: OrderedDict[frozenset[str], Flow] = OrderedDict()
        self.max_flows = max_flows
        self._count = 0
        #: (src, dst) and (dst, src) -> the flow in `flows`: a look-up by a pair of strings
        #: costs less than making the frozenset key per segment
        self._pairs: dict[tuple[str, str], Flow] = {}
        self._newest: Flow | None = None  #: the flow last in `flows` (moving it again: no-op)

    def _flow(self, flow: Flow | None, src: str, dst: str, flags: int, payload: bytes) -> Flow:
        """The flow of a segment from `src` to `dst` (`flow`: the one the pair names, if any):
        a new one when none is known, or on a new SYN on a 4-tuple whose old connection is over
        (a new connection). Keeps the most recently seen flow last in `flows`."""
        if flow is not None and self.max_flows and flow is not self._newest:
            self.flows.move_to_end(flow.key)  # most recently seen last
            self._newest = flow
        if flow is None or (flags & (SYN | ACK) == SYN and flow.client.state in _REOPENS):
            return self._new_flow(src, dst, flags, payload)
        return flow

    def _new_flow(self, src: str, dst: str, flags: int, payload: bytes) -> Flow:
        self._count += 1
        seen_open = bool(flags & SYN)
        if seen_open:
            client, server = (dst, src) if flags & ACK else (src, dst)
        else:
            client, server = _guess_roles(src, dst, payload)
        (client_role, client_state), (server_role, server_state) = \
            _OPENING if seen_open else _MID_STREAM
        key = frozenset((src, dst))
        flow = Flow(Endpoint(client, client_role, client_state),  # all fields, in order
                    Endpoint(server, server_role, server_state), self._count, [], seen_open,
                    None, set(), None, key, f"tcp {self._count}")
        self.flows[key] = self._pairs[src, dst] = self._pairs[dst, src] = self._newest = flow
        if self.max_flows and len(self.flows) > self.max_flows:
            old = self.flows.popitem(last=False)[1]
            del self._pairs[old.client.addr, old.server.addr]
            self._pairs.pop((old.server.addr, old.client.addr), None)  # gone if src == dst
        return flow

    def feed(self, d: Decoded, number: int, src: str | None = None,
             dst: str | None = None) -> SegmentView | None:
        """Take one packet (capture number `number`; `src` and `dst`: its endpoints, when the
        caller has them already); None when it is not TCP."""
        tcp = d.tcp
        if tcp is None:
            return None
        flags, seq, ack, payload = tcp.flags, tcp.seq, tcp.ack, d.payload
        src = d.endpoint("src") if src is None else src
        dst = d.endpoint("dst") if dst is None else dst
        flow = self._pairs.get((src, dst))
        if flow is None or flow is not self._newest or flags & SYN:  # else: the flow, as is
            flow = self._flow(flow, src, dst, flags, payload)
        if src == flow.client.addr:
            sender, receiver = flow.client, flow.server
        else:
            sender, receiver = flow.server, flow.client
        first = sender.sent == 0
        sender.sent += 1
        # Joined mid-stream: take the bases from the first numbers seen, as Wireshark does;
        # nothing before this segment is known to be unacknowledged.
        if sender.isn is None:
            sender.isn = seq if flags & SYN else (seq - 1) & 0xFFFFFFFF
            if not flags & SYN:
                sender.snd_una = seq
        if receiver.isn is None and flags & ACK:
            receiver.isn = (ack - 1) & 0xFFFFFFFF
        end = (seq + len(payload) + _CONTROL_LEN[flags & (SYN | FIN)]) & 0xFFFFFFFF
        # a SYN, a RST or an empty ACK may be more than its state moves (`_marks`); an empty ACK
        # only if an in-window RST waits for its answer or it is not at SND.NXT (a keepalive?)
        if flags & (SYN | RST) or (not payload and flags & (FIN | ACK) == ACK and (
                flow.challenged or seq != sender.snd_nxt)):
            fit, again, cookie, keepalive, challenges, opts = \
                self._marks(flow, sender, receiver, tcp, first, number)
        else:
            fit, again, cookie, keepalive, challenges, opts = _NO_MARKS
        # the window it advertises: scaled once both SYNs asked for scaling (RFC 7323 2.2)
        shift = sender.wscale if receiver.wscale is not None and not flags & SYN else None
        sender.window = tcp.window if shift is None else tcp.window << shift
        near = self.WINDOW
        rcv_nxt = receiver.rcv_nxt
        # in window: no RCV.NXT yet, a RST not outside it, or near RCV.NXT either way round
        in_window = rcv_nxt is None or (flags & RST and fit is not _OUTSIDE) or \
            (seq - rcv_nxt) & 0xFFFFFFFF < near or (rcv_nxt - seq) & 0xFFFFFFFF < near
        if fit is _IN_WINDOW:
            flags &= ~RST  # RFC 5961 3.2: no reset; the receiver answers with a challenge ACK
        moves: tuple[Transition, ...] = ()
        if in_window:
            # a data segment or a plain ACK causes no event (spared the call, often)
            if flags & (SYN | FIN | RST) or receiver.state in _AWAITING_ACK:
                moves = self._advance(flow, sender, receiver, flags, ack, number)
            # RCV.NXT, SND.NXT and SND.UNA only move forward, in sequence space (RFC 9293 3.4:
            # a >= b when (a - b) mod 2**32 < 2**31)
            if fit is None:
                if rcv_nxt is None or (end - rcv_nxt) & 0xFFFFFFFF < 0x80000000:
                    receiver.rcv_nxt = end
                snd_nxt = sender.snd_nxt
                if snd_nxt is None or (end - snd_nxt) & 0xFFFFFFFF < 0x80000000:
                    sender.snd_nxt = end
            una = receiver.snd_una
            if flags & ACK and (una is None or (ack - una) & 0xFFFFFFFF < 0x80000000):
                receiver.snd_una = ack
        isn, snd_nxt, rcv_nxt = sender.isn, sender.snd_nxt, receiver.rcv_nxt
        una = sender.snd_una if sender.snd_una is not None else isn
        in_flight = (snd_nxt - una) & 0xFFFFFFFF if snd_nxt is not None else 0
        return SegmentView(
            flow.number, sender.role, (seq - isn) & 0xFFFFFFFF,
            (ack - receiver.isn) & 0xFFFFFFFF if flags & ACK and receiver.isn is not None
            else None, len(payload), in_flight if in_flight < near else 0,
            ((rcv_nxt if rcv_nxt is not None else end) - isn) & 0xFFFFFFFF, in_window, moves,
            flow.handshake_seen, first, receiver.window, flow.label, fit, again, cookie,
            keepalive, challenges, opts)

    def _marks(self, flow: Flow, sender: Endpoint, receiver: Endpoint, tcp: TcpHeader,
               first: bool, number: int) -> Marks:
        """What a SYN, a RST or an empty ACK is beyond its state moves (`feed` asks only for
        them): a RST's fit, a resent or cookie SYN-ACK, a keepalive probe, a challenge ACK;
        a SYN's options (the window scale it asks for kept on its sender)."""
        flags = tcp.flags
        opts, again, cookie, fit = None, False, False, None
        if flags & SYN:
            opts = tcp.parsed_options()
            sender.wscale = opts.wscale
            if not flags & ACK:
                ecn = flags & 0xC0 == 0xC0  # ECE and CWR: an ECN-setup SYN (RFC 3168 6.1.1)
                flow.syn_options = (0xF if opts.wscale is None else opts.wscale) | \
                    (0x10 if opts.sack_ok else 0) | (0x20 if ecn else 0)
            else:
                again = tcp.seq in flow.synack_seqs
                flow.synack_seqs.add(tcp.seq)
                cookie = opts.tsval is not None and flow.syn_options is not None \
                    and opts.tsval % (1 << COOKIE_TS_BITS) == flow.syn_options
        if flags & RST and receiver.rcv_nxt is not None and flow.handshake_seen and not first:
            gap = (tcp.seq - receiver.rcv_nxt) & 0xFFFFFFFF
            window = receiver.window if receiver.window is not None else self.WINDOW
            fit = Fit.EXACT if gap == 0 else Fit.IN_WINDOW if gap < window else Fit.OUTSIDE
            if fit is Fit.IN_WINDOW:
                flow.challenged = (receiver.addr, number)
        if flags & (SYN | RST):
            return fit, again, cookie, False, None, opts
        # an empty ACK: the answer to an in-window RST, or a keepalive probe?
        if flow.challenged and flow.challenged[0] == sender.addr:
            challenged, flow.challenged = flow.challenged[1], None
            return None, False, False, False, challenged, None
        if sender.snd_nxt is not None and flow.handshake_seen \
                and tcp.seq == (sender.snd_nxt - 1) & 0xFFFFFFFF:
            return None, False, False, True, None, None  # RFC 1122 4.2.3.6: SEG.SEQ = SND.NXT-1
        return _NO_MARKS

    def _advance(self, flow: Flow, sender: Endpoint, receiver: Endpoint, flags: int, ack: int,
                 number: int) -> tuple[Transition, ...]:
        """Apply the segment's state events (`_events`) to both endpoints; the moves made."""
        done = []
        for ep, seg in _events(sender, receiver, flags, ack):
            # `advance(TCP_TRANSITIONS, ...)`, without its IllegalTransition raised and caught
            new = _NEXT_STATE.get((ep.role, ep.state, seg))
            if new is None:
                continue  # e.g. a retransmitted SYN: no move in the table
            done.append(Transition(ep.addr, ep.role, ep.state, new, seg, number))
            ep.state = new
        flow.transitions += done
        return tuple(done)


def _events(sender: Endpoint, receiver: Endpoint, flags: int,
            ack: int) -> tuple[tuple[Endpoint, Seg], ...]:
    """The state events one segment causes, in the order the kernels apply them."""
    if flags & RST:
        return (sender, _SEND_RST), (receiver, _RECV_RST)
    if not flags & SYN:
        opening: tuple[tuple[Endpoint, Seg], ...] = ()
    elif flags & ACK:
        opening = ((receiver, _RECV_SYN_ACK),)
    else:
        opening = (sender, _SEND_SYN), (receiver, _RECV_SYN)
    acks_ours = flags & ACK and receiver.state in _AWAITING_ACK \
        and receiver.snd_nxt is not None and _seq_ge(ack, receiver.snd_nxt)
    acked = ((receiver, _RECV_ACK),) if acks_ours else ()
    if flags & FIN:  # its FIN sent, then the ACK of the receiver's FIN, then its FIN received
        return (*opening, (sender, _SEND_FIN), *acked, (receiver, _RECV_FIN))
    return opening + acked


#: the events `_events` names, looked up once: naming an enum member (`Seg.SEND_SYN`) goes
#: through Python 3.11's EnumType.__getattr__ hook, about 0.15 us, several times a segment
_SEND_SYN, _RECV_SYN, _RECV_SYN_ACK, _RECV_ACK = (Seg.SEND_SYN, Seg.RECV_SYN, Seg.RECV_SYN_ACK,
                                                  Seg.RECV_ACK)
_SEND_FIN, _RECV_FIN, _SEND_RST, _RECV_RST = (Seg.SEND_FIN, Seg.RECV_FIN, Seg.SEND_RST,
                                              Seg.RECV_RST)
#: TCP_TRANSITIONS flat: (role, state, event) -> next state, one look-up per event
_NEXT_STATE = {(role, state, event): new for (role, state), moves in TCP_TRANSITIONS.items()
               for event, new in moves.items()}
#: (role, state) of a new flow's client and server entries: a handshake seen, or joined
#: mid-stream (the states are unknown; ESTABLISHED is only the model's start)
_OPENING = ((Role.CLIENT, TcpState.CLOSED), (Role.SERVER, TcpState.LISTEN))
_MID_STREAM = ((Role.CLIENT, TcpState.ESTABLISHED), (Role.SERVER, TcpState.ESTABLISHED))
#: a new SYN on a 4-tuple whose client entry is in one of these starts a new connection
_REOPENS = frozenset({TcpState.CLOSED, TcpState.TIME_WAIT})
#: the states in which an endpoint waits for the ACK of its SYN or FIN
_AWAITING_ACK = frozenset({TcpState.SYN_RECV, TcpState.FIN_WAIT_1, TcpState.CLOSING,
                           TcpState.LAST_ACK})


def _guess_roles(src: str, dst: str, payload: bytes) -> tuple[str, str]:
    """(client, server) of a connection whose SYN is not in the capture: an HTTP status line
    comes from the server; otherwise the lower port is taken as the server's (as Wireshark
    does). A guess: the annotation marks it as inferred."""
    if payload.startswith(b"HTTP/1."):
        return dst, src
    try:
        sport, dport = (int(a.rsplit(":", 1)[1]) for a in (src, dst))
    except (IndexError, ValueError):
        return src, dst
    return (dst, src) if sport < dport else (src, dst)


def _distance(a: int, b: int) -> int:
    """How far apart two sequence numbers are, either way round."""
    forward = (a - b) & 0xFFFFFFFF
    return forward if forward <= 0x80000000 else 0x100000000 - forward


def _seq_ge(a: int, b: int) -> bool:
    """a >= b in 32-bit sequence space (RFC 9293 section 3.4)."""
    return ((a - b) & 0xFFFFFFFF) < 0x80000000
