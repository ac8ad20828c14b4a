"""Annotation facts as data: the sentences are rendered from facts, and nothing reads them back.

Item by item of what a capture cannot know: a TCP connection whose handshake is not captured has
unknown states and guessed roles; bytes in flight count exactly; an RST from a port that never
spoke says no connection existed; a QUIC packet that a restarted server dropped is not "found";
the two legs of a relay are not a migration.
"""

from __future__ import annotations

import re

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from protolab.analysis import facts as annotate_module
from protolab.analysis.annotate import TEMPLATES, Action, Kind, annotate, annotate_file
from protolab.analysis.flows import FlowTable
from protolab.analysis.story_checks import check
from protolab.course.replay import DEMOS, TABLES
from protolab.wire.packets import decode
from protolab.wire.paths import reference_file
from protolab.wire.pcap import LINKTYPE_ETHERNET

C, S = "10.0.0.7", "10.0.0.80"


def frames(*pkts):
    return [decode(bytes(Ether() / p), LINKTYPE_ETHERNET, 100.0 + i * 0.01)
            for i, p in enumerate(pkts)]


def seg(src, dst, sport, dport, flags, seq, ack=0, load=b""):
    return IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq,
                                      ack=ack) / load


def _reworded(template: str) -> str:
    """The same placeholders, every word outside them changed."""
    parts = re.split(r"(\{[^}]*\})", template)
    return "".join(p if p.startswith("{") else re.sub(r"[A-Za-z]+", "zz", p) for p in parts)


def _everything_read_from(rows) -> list:
    """What the story checks, the replay tables and the flow summaries make of a capture."""
    out: list = []
    for demo in DEMOS:
        out.append([(f.step.key, f.packets) for f in check(demo, rows)])
        printed: list[str] = []
        TABLES[demo](rows, printed.append)
        text = "\n".join(printed)
        for r in rows:  # a table may show a row's sentence: that is rendering, not reading
            text = text.replace(r.state, "<sentence>")
        out.append(text)
    table = FlowTable()
    for r in rows:
        table.number_of(r)
        table.add(r)
    out.append([(f.migrations, f.relayed, f.late, f.unmatched, len(f.latencies_ms))
                for f in table.flows.values()])
    return out


@pytest.mark.parametrize("demo", DEMOS)
def test_rewording_every_sentence_changes_no_story_check_table_or_flow(demo, monkeypatch):
    rows = list(annotate_file(reference_file(demo)))
    before = _everything_read_from(rows)
    sentences = [r.state for r in rows]
    monkeypatch.setattr(annotate_module, "TEMPLATES",
                        {k: _reworded(v) for k, v in TEMPLATES.items()})
    reworded = list(annotate_file(reference_file(demo)))
    assert [r.state for r in reworded] != sentences  # the rewording took effect
    assert _everything_read_from(reworded) == before


def test_every_kind_has_a_template_and_renders():
    assert set(TEMPLATES) == set(Kind)


def test_bytes_in_flight_count_syn_and_fin_as_one_and_data_as_its_length():
    rows = list(annotate(frames(
        seg(C, S, 4000, 80, "S", 100), seg(S, C, 80, 4000, "SA", 900, 101),
        seg(C, S, 4000, 80, "A", 101, 901),
        seg(C, S, 4000, 80, "PA", 101, 901, b"x" * 605))))
    assert rows[0].state.startswith("client kernel creates")
    assert "605 B in flight client→server" in rows[3].state
    assert rows[3].fields["tcp_len"] == 605


def test_a_connection_joined_mid_stream_has_unknown_states_and_guessed_roles():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + b"y" * 567
    [row] = annotate(frames(seg(S, C, 80, 51000, "PA", 5000, 7000, reply)))
    assert row.fact.moves == ()
    assert f"{len(reply)} B in flight server→client" in row.state  # not client→server, not +1
    assert "states unknown" in row.state


def test_an_ack_to_a_port_with_no_socket_and_its_rst_say_no_connection_existed():
    ack, rst = annotate(frames(seg(C, S, 40404, 47323, "A", 1, 1),
                               seg(S, C, 47323, 40404, "R", 1)))
    assert "in flight" not in ack.state  # a bare ACK carries no byte
    assert rst.fact.kind is Kind.TCP_RST_NO_CONNECTION and rst.fact.refs == (ack.number,)
    assert "ESTABLISHED" not in rst.state


def test_an_rst_inside_a_seen_connection_is_a_reset_with_its_transitions():
    rows = list(annotate(frames(
        seg(C, S, 4000, 80, "S", 100), seg(S, C, 80, 4000, "SA", 900, 101),
        seg(C, S, 4000, 80, "A", 101, 901), seg(S, C, 80, 4000, "R", 901))))
    assert rows[3].fact.kind is Kind.TCP_RST
    assert {(t.old.value, t.new.value) for t in rows[3].fact.moves} == {
        ("ESTABLISHED", "CLOSED")}


def test_quic_packets_a_restarted_server_dropped_are_not_annotated_as_found():
    rows = list(annotate_file(reference_file("quic-demo")))
    new = check("quic-demo", rows)[4].packets[1]  # the handshake after the restart
    forgotten = [r for r in rows if r.shows(Kind.QUIC_UNANSWERED)]
    assert forgotten, "the packets to the restarted server are not annotated as found"
    assert all(r.fact.refs == (new,) and r.action is Action.NONE for r in forgotten)
    assert not any(r.shows(Kind.QUIC_LOOKUP) for r in forgotten)
    assert all(r.number < new for r in forgotten)
    # and no reply from the server came between the first of them and the new handshake
    server = forgotten[0].dst
    between = [r for r in rows if forgotten[0].number < r.number < new and r.src == server
               and r.proto == "QUIC"]
    assert between == []


def test_a_relayed_quic_connection_is_two_legs_not_a_migration(tmp_path):
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap, wrpcap

    rows = list(annotate_file(reference_file("quic-demo")))
    moved = check("quic-demo", rows)[2].packets[0]  # the real migration: excluded here
    relayed = []
    for p in rdpcap(str(reference_file("quic-demo")))[:moved - 1]:
        relayed.append(p)
        if p.haslayer(UDP):  # the middlebox forwards the same bytes on its other leg
            leg = p.copy()
            leg[UDP].sport, leg[UDP].dport = leg[UDP].sport + 7, leg[UDP].dport + 7
            del leg[UDP].chksum
            relayed.append(leg)
    path = tmp_path / "relay.pcap"
    wrpcap(str(path), relayed)
    rows = list(annotate_file(path))
    assert not any(r.shows(Kind.QUIC_MIGRATION) for r in rows)
    copies = [r for r in rows if r.shows(Kind.QUIC_RELAYED)]
    assert copies and all(r.fact.refs == (r.number - 1,) for r in copies)
    table = FlowTable()
    for r in rows:
        table.number_of(r)
        table.add(r)
    quic = [f for f in table.flows.values() if f.kind == "quic"]
    described = [table.describe(f, _annotator_for(path)) for f in quic]
    assert any("relayed" in d for d in described)
    assert not any("migrated" in d for d in described)


def _annotator_for(path):
    from protolab.analysis.annotate import Annotator
    from protolab.wire.pcap import read_pcap

    a = Annotator()
    for rec in read_pcap(path):
        a.feed(decode(rec.data, rec.linktype, rec.time, rec.orig_len))
    a.finish()
    return a


def test_a_syn_refused_with_rst_gives_the_closed_port_no_state():
    syn, rst = annotate(frames(seg(C, S, 4000, 81, "S", 100),
                               seg(S, C, 81, 4000, "RA", 0, 101)))
    assert {(t.role.value, t.old.value, t.new.value) for t in syn.fact.moves} == {
        ("client", "CLOSED", "SYN_SENT")}  # no LISTEN→SYN_RECV: nothing listened
    assert rst.fact.kind is Kind.TCP_RST_NO_CONNECTION and rst.fact.refs == (syn.number,)
    assert {(t.role.value, t.old.value, t.new.value) for t in rst.fact.moves} == {
        ("client", "SYN_SENT", "CLOSED")}


def test_a_dns_relay_leg_is_not_a_second_client():
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import UDP

    c, f, p, s = ("10.0.0.7", 4000), ("10.0.0.9", 53), ("10.0.0.9", 6000), ("10.0.0.53", 53)

    def dns(a, b, **kw):
        return IP(src=a[0], dst=b[0]) / UDP(sport=a[1], dport=b[1]) / DNS(
            qd=DNSQR(qname="x.lab."), **kw)

    answer = {"qr": 1, "an": DNSRR(rrname="x.lab.", rdata="1.2.3.4")}
    rows = list(annotate(frames(
        dns(c, f, id=9), dns(p, s, id=9),  # the query, and the middlebox's copy upstream
        dns(s, p, id=9, **answer),  # answered upstream; the middlebox drops it
        dns(c, f, id=9), dns(p, s, id=9),  # the client retransmits; relayed again
        dns(s, p, id=9, **answer), dns(f, c, id=9, **answer))))  # answered, forwarded
    kinds = [r.fact.kind for r in rows]
    assert kinds == [Kind.DNS_QUERY, Kind.DNS_RELAYED, Kind.DNS_RELAY_ANSWER,
                     Kind.DNS_RETRANSMIT, Kind.DNS_RELAYED, Kind.DNS_RELAY_ANSWER,
                     Kind.DNS_MATCHED]
    assert rows[1].fact.refs == (1,) and rows[4].fact.refs == (4,)
    assert rows[2].fact.refs == (2,) and rows[5].fact.refs == (5,)
    assert rows[6].fact.refs == (1,) and rows[6].fact.values["copies"] == 2


def test_a_long_silence_after_a_restart_is_amended_in_the_window_and_held_no_longer() -> None:
    """A server that forgot its connection answers none of the client's packets; when the client
    starts a new handshake, the unanswered packets still in the annotator's window become
    QUIC_UNANSWERED (those gone from it were printed as looked up), and the annotator keeps no
    more of their numbers than the window holds, however long the silence."""
    from scapy.layers.inet import UDP

    from protolab.analysis.annotate import Annotator
    from protolab.analysis.facts import WINDOW

    from capture_builders import _quic

    c, s = "10.0.0.1", "10.0.0.2"

    def udp(src, dst, sport, dport, payload):
        return IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload

    silent = 3 * WINDOW
    pkts = [udp(c, s, 51000, 4433, _quic(0xC3, b"D" * 8, b"C" * 8)),  # client Initial
            udp(s, c, 4433, 51000, _quic(0xC3, b"C" * 8, b"S" * 8)),  # server Initial: key S
            *(udp(c, s, 51000, 4433, _quic(0x43, b"S" * 8, size=60)) for _ in range(silent)),
            udp(c, s, 51001, 4433, _quic(0xC3, b"E" * 8, b"F" * 8))]  # a new handshake
    annotator, rows = Annotator(), []
    for d in frames(*pkts):
        rows += annotator.feed(d)
        held = [len(numbers) for numbers in annotator._quic._unanswered.values()]
        assert max(held, default=0) <= WINDOW
    rows += annotator.finish()
    short = rows[2:2 + silent]
    amended = [r.number for r in short if r.shows(Kind.QUIC_UNANSWERED)]
    assert amended == [r.number for r in short[-WINDOW:]]  # the window before the handshake
    assert all(r.shows(Kind.QUIC_LOOKUP) for r in short[:-WINDOW])
