"""The TCP state model: the table, and the observer on crafted conversations."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from protolab.protocols.state import IllegalTransition, advance
from protolab.protocols.tcp import TCP_TRANSITIONS, Role, Seg, TcpObserver, TcpState
from protolab.wire.packets import decode
from protolab.wire.pcap import LINKTYPE_ETHERNET

C, S = ("10.0.0.1", 40000), ("10.0.0.2", 80)
CI, SI = 1000, 5000  # initial sequence numbers


def seg(frm, flags, seq, ack=0, data=b""):
    to = S if frm == C else C
    pkt = IP(src=frm[0], dst=to[0]) / TCP(sport=frm[1], dport=to[1], flags=flags, seq=seq,
                                           ack=ack) / data
    return decode(bytes(Ether() / pkt), LINKTYPE_ETHERNET)


def conversation(first_closer):
    """Handshake, 5 bytes each way, then `first_closer` closes first."""
    other = S if first_closer == C else C
    nxt = {C: CI + 1, S: SI + 1}
    segs = [seg(C, "S", CI), seg(S, "SA", SI, CI + 1), seg(C, "A", CI + 1, SI + 1),
            seg(C, "PA", CI + 1, SI + 1, b"hello"), seg(S, "PA", SI + 1, CI + 6, b"HELLO"),
            seg(C, "A", CI + 6, SI + 6)]
    nxt = {C: CI + 6, S: SI + 6}
    segs += [seg(first_closer, "FA", nxt[first_closer], nxt[other]),
             seg(other, "FA", nxt[other], nxt[first_closer] + 1),
             seg(first_closer, "A", nxt[first_closer] + 1, nxt[other] + 1)]
    return segs


def run(segs):
    obs = TcpObserver()
    views = [obs.feed(d, n) for n, d in enumerate(segs, 1)]
    [flow] = obs.flows.values()
    return obs, flow, views


@pytest.mark.parametrize("closer", [C, S], ids=["client closes first", "server closes first"])
def test_open_and_close_in_order(closer) -> None:
    _, flow, _ = run(conversation(closer))
    first = "client" if closer == C else "server"
    second = "server" if closer == C else "client"
    by = {r: [(t.old.name, t.new.name) for t in flow.transitions if t.role.value == r]
          for r in ("client", "server")}
    opening = {"client": [("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")],
               "server": [("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED")]}
    assert by[first] == opening[first] + [("ESTABLISHED", "FIN_WAIT_1"),
                                          ("FIN_WAIT_1", "FIN_WAIT_2"),
                                          ("FIN_WAIT_2", "TIME_WAIT")]
    assert by[second] == opening[second] + [("ESTABLISHED", "CLOSE_WAIT"),
                                            ("CLOSE_WAIT", "LAST_ACK"), ("LAST_ACK", "CLOSED")]


def test_transitions_name_the_packet_that_caused_them() -> None:
    _, flow, views = run(conversation(C))
    assert [(t.packet, t.event) for t in flow.transitions[:4]] == [
        (1, Seg.SEND_SYN), (1, Seg.RECV_SYN), (2, Seg.RECV_SYN_ACK), (3, Seg.RECV_ACK)]
    assert views[1].transitions[0].new is TcpState.ESTABLISHED


def test_relative_numbers_in_flight_and_expected() -> None:
    _, _, views = run(conversation(C))
    syn, synack, ack, data, reply, _ack2 = views[:6]
    assert (syn.rel_seq, syn.rel_ack) == (0, None)
    assert (synack.rel_seq, synack.rel_ack) == (0, 1)
    assert (ack.rel_seq, ack.rel_ack) == (1, 1)
    assert (data.rel_seq, data.length, data.in_flight, data.expects) == (1, 5, 5, 6)
    assert (reply.rel_seq, reply.rel_ack, reply.expects) == (1, 6, 6)


def test_simultaneous_close_goes_through_closing() -> None:
    segs = conversation(C)[:6] + [seg(C, "FA", CI + 6, SI + 6), seg(S, "FA", SI + 6, CI + 6),
                                  seg(C, "A", CI + 7, SI + 7), seg(S, "A", SI + 7, CI + 7)]
    _, flow, _ = run(segs)
    states = [t.new.name for t in flow.transitions if t.role is Role.CLIENT]
    assert states[-3:] == ["FIN_WAIT_1", "CLOSING", "TIME_WAIT"]


def test_rst_closes_both_and_out_of_window_changes_nothing() -> None:
    segs = conversation(C)[:6]
    segs.append(seg(C, "PA", CI + 6 + (1 << 24), SI + 6, b"FORGED"))
    obs, flow, views = run(segs)
    assert views[-1].in_window is False and views[-1].transitions == ()
    assert flow.server.rcv_nxt == CI + 6  # the forged bytes did not move what it expects
    view = obs.feed(seg(S, "R", SI + 6), 8)
    assert {t.new for t in view.transitions} == {TcpState.CLOSED}


def states_after(segs) -> list[tuple[str, str]]:
    """(client state, server state) after each segment, as the observer holds them."""
    obs = TcpObserver()
    out = []
    for n, d in enumerate(segs, 1):
        obs.feed(d, n)
        [flow] = obs.flows.values()
        out.append((flow.client.state.name, flow.server.state.name))
    return out


def test_a_half_closed_connection_still_carries_data_the_other_way() -> None:
    """RFC 9293 section 3.6: a FIN closes one direction; the peer in CLOSE-WAIT may still send,
    and the closer in FIN-WAIT-2 still receives (section 3.10.7.4, "seventh, process the segment
    text": ESTABLISHED, FIN-WAIT-1 and FIN-WAIT-2 deliver it)."""
    segs = conversation(C)[:3] + [
        seg(C, "FA", CI + 1, SI + 1),               # 4 client closes its direction
        seg(S, "A", SI + 1, CI + 2),                # 5 server acknowledges the FIN only
        seg(S, "PA", SI + 1, CI + 2, b"late"),      # 6 server still sends
        seg(C, "A", CI + 2, SI + 5),                # 7 client acknowledges the data
        seg(S, "FA", SI + 5, CI + 2),               # 8 server closes too
        seg(C, "A", CI + 2, SI + 6)]                # 9 the last ACK
    # Expected states, each from RFC 9293 section 3.10.7 (segment arrives) / 3.10.4 (CLOSE):
    assert states_after(segs) == [
        ("SYN_SENT", "SYN_RECV"),        # 3.10.7.2 LISTEN, third: a SYN -> SYN-RECEIVED
        ("ESTABLISHED", "SYN_RECV"),     # 3.10.7.3 SYN-SENT, fourth: SYN, our SYN ACKed
        ("ESTABLISHED", "ESTABLISHED"),  # 3.10.7.4 fifth: SYN-RECEIVED, acceptable ACK
        ("FIN_WAIT_1", "CLOSE_WAIT"),    # 3.10.4 CLOSE sends FIN; eighth: FIN -> CLOSE-WAIT
        ("FIN_WAIT_2", "CLOSE_WAIT"),    # fifth: FIN-WAIT-1 and our FIN is ACKed
        ("FIN_WAIT_2", "CLOSE_WAIT"),    # data in the open direction moves no state
        ("FIN_WAIT_2", "CLOSE_WAIT"),
        ("TIME_WAIT", "LAST_ACK"),       # eighth: FIN-WAIT-2 + FIN -> TIME-WAIT; CLOSE -> LAST
        ("TIME_WAIT", "CLOSED")]         # fifth: LAST-ACK, our FIN ACKed -> CLOSED


def test_the_transitions_name_their_events_in_segment_processing_order() -> None:
    """A FIN that also acknowledges ours is two events: the ACK (fifth) before the FIN
    (eighth), RFC 9293 section 3.10.7.4."""
    _, flow, views = run(conversation(C))
    client_fin_ack = views[8 - 1]  # the server's FIN+ACK reaching the client in FIN_WAIT_1
    assert [(t.role, t.old, t.event, t.new) for t in client_fin_ack.transitions] == [
        (Role.SERVER, TcpState.CLOSE_WAIT, Seg.SEND_FIN, TcpState.LAST_ACK),
        (Role.CLIENT, TcpState.FIN_WAIT_1, Seg.RECV_ACK, TcpState.FIN_WAIT_2),
        (Role.CLIENT, TcpState.FIN_WAIT_2, Seg.RECV_FIN, TcpState.TIME_WAIT)]
    assert flow.transitions[-1].packet == 9


def test_a_refused_connection_leaves_no_connection_on_either_side() -> None:
    """A SYN to a port with no listener is answered RST+ACK (RFC 9293 section 3.10.7.1); the
    client in SYN-SENT takes it, "enter CLOSED state" (3.10.7.3, first); nothing is left open."""
    segs = [seg(C, "S", CI), seg(S, "RA", 0, CI + 1)]
    assert states_after(segs)[-1] == ("CLOSED", "CLOSED")


def test_a_retransmitted_syn_moves_nothing() -> None:
    """The same SYN again (the SYN-ACK was lost) finds the server in SYN-RECEIVED: no new
    transition, no second connection."""
    obs = TcpObserver()
    obs.feed(seg(C, "S", CI), 1)
    again = obs.feed(seg(C, "S", CI), 2)
    assert again.transitions == () and len(obs.flows) == 1
    [flow] = obs.flows.values()
    assert (flow.client.state, flow.server.state) == (TcpState.SYN_SENT, TcpState.SYN_RECV)


def test_illegal_moves_name_role_state_and_event() -> None:
    with pytest.raises(IllegalTransition, match="SERVER in state LISTEN cannot take event "
                                                "RECV_FIN"):
        advance(TCP_TRANSITIONS, Role.SERVER, TcpState.LISTEN, Seg.RECV_FIN)


def _syn_from(port: int) -> object:
    pkt = IP(src=C[0], dst=S[0]) / TCP(sport=port, dport=S[1], flags="S", seq=CI)
    return decode(bytes(Ether() / pkt), LINKTYPE_ETHERNET)


def test_a_bounded_observer_forgets_the_least_recently_seen_connection() -> None:
    """With `max_flows`, a segment makes its connection the most recently seen; the table's
    overflow forgets the least recently seen one, and a later segment of it starts a new flow."""
    obs = TcpObserver(max_flows=2)
    first, second, third = (_syn_from(port) for port in (40001, 40002, 40003))
    assert [obs.feed(d, n).flow for n, d in enumerate((first, second, first), 1)] == [1, 2, 1]
    obs.feed(third, 4)  # the table is full: connection 2, seen least recently, goes
    assert sorted(f.number for f in obs.flows.values()) == [1, 3]
    assert obs.feed(first, 5).flow == 1 and obs.feed(second, 6).flow == 4
    assert sorted(f.number for f in obs.flows.values()) == [1, 4]


def test_a_new_syn_on_a_closed_four_tuple_is_a_new_flow_both_ways() -> None:
    """After the connection ends, the same 4-tuple's next SYN is a new connection; its answer,
    from the other side, belongs to the new one too."""
    obs = TcpObserver()
    segs = conversation(C)
    for n, d in enumerate(segs, 1):
        obs.feed(d, n)
    obs.flows[frozenset(("10.0.0.1:40000", "10.0.0.2:80"))].client.state = TcpState.CLOSED
    again = obs.feed(seg(C, "S", CI + 100), 10)
    answer = obs.feed(seg(S, "SA", SI + 100, CI + 101), 11)
    assert (again.flow, answer.flow, len(obs.flows)) == (2, 2, 1)
    assert answer.transitions[0].new is TcpState.ESTABLISHED
