"""The annotation from packets alone, on frames crafted with scapy (any capture, not only ours)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.l2 import Ether

from protolab.analysis.annotate import Action, Holder, annotate
from protolab.wire.packets import decode
from protolab.wire.pcap import LINKTYPE_ETHERNET

C, S = "10.0.0.7", "10.0.0.53"


def frames(*pkts, start: float = 100.0):
    return [decode(bytes(Ether() / p), LINKTYPE_ETHERNET, start + i * 0.01)
            for i, p in enumerate(pkts)]


def query(qid: int, name: str = "x.lab.", sport: int = 4000, dport: int = 53):
    return IP(src=C, dst=S) / UDP(sport=sport, dport=dport) / DNS(id=qid, qd=DNSQR(qname=name))


def answer(qid: int, name: str = "x.lab.", sport: int = 53, dport: int = 4000, src: str = S):
    return IP(src=src, dst=C) / UDP(sport=sport, dport=dport) / DNS(
        id=qid, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="1.2.3.4"))


def test_query_then_answer() -> None:
    q, a = annotate(frames(query(7), answer(7)))
    assert q.action is Action.CREATES and Holder.CLIENT_APP in q.holders
    assert a.action is Action.ENDS and "query #1" in a.state and "RTT 10 ms" in a.state


def test_dns_on_any_port_is_recognised_by_its_shape() -> None:
    q, a = annotate(frames(query(9, dport=40000), answer(9, sport=40000)))
    assert (q.proto, a.proto) == ("DNS", "DNS") and a.action is Action.ENDS


def test_each_kind_of_unmatched_answer() -> None:
    rows = list(annotate(frames(query(1), answer(2), answer(1, sport=999), answer(1, name="y.lab."),
                                answer(1), answer(1))))
    assert [r.action for r in rows] == [Action.CREATES, Action.MISSING, Action.MISSING,
                                        Action.MISSING, Action.ENDS, Action.MISSING]
    assert "no pending query has id 0x0002" in rows[1].state
    assert "spoofed source" in rows[2].state
    assert "question" in rows[3].state
    assert "already answered by #5" in rows[5].state


def test_icmp_error_amends_the_row_of_the_datagram_it_refers_to() -> None:
    late = answer(5)
    icmp = IP(src=C, dst=S) / ICMP(type=3, code=3) / IPerror(src=S, dst=C) / UDPerror(
        sport=53, dport=4000)
    rows = list(annotate(frames(query(5), late, icmp)))
    assert rows[1].action is Action.MISSING and "closed its socket" in rows[1].state
    assert rows[2].summary == f"ICMP port unreachable for {S}:53 → {C}:4000"
    assert "(#2)" in rows[2].state


def test_plain_udp_and_tcp_get_a_sentence() -> None:
    from scapy.layers.inet import TCP

    rows = list(annotate(frames(IP(src=C, dst=S) / UDP(sport=1, dport=2) / b"hi",
                                IP(src=C, dst=S) / TCP(sport=1, dport=80, flags="S", seq=100))))
    assert "stands alone" in rows[0].state
    assert rows[1].summary == "[SYN] seq=0 len=0" and "CLOSED→SYN_SENT" in rows[1].state


_HEADS = [bytes(Ether() / IP(proto=p))[:34] for p in (1, 6, 17, 58)] + [
    bytes(Ether() / IP() / UDP(sport=53, dport=53))[:42],
    bytes(Ether() / IP() / ICMP(type=3))[:42]]
_blobs = st.one_of(st.binary(max_size=120),
                   st.tuples(st.sampled_from(_HEADS), st.binary(max_size=120)).map(b"".join))


def test_a_datagram_shows_its_payload_only_when_it_is_printable_ascii() -> None:
    def udp(payload: bytes) -> tuple[str, str | None]:
        (row,) = annotate(frames(IP(src=C, dst=S) / UDP(sport=4000, dport=9) / payload))
        return row.summary, row.fields.get("udp_text")

    assert udp(b"hello ~") == ("UDP 7 bytes 'hello ~'", "hello ~")
    assert udp(b"x" * 41) == (f"UDP 41 bytes {'x' * 40 + '…'!r}", "x" * 40 + "…")
    assert udp(b"x" * 40 + b"\x00") == (f"UDP 41 bytes {'x' * 40 + '…'!r}", "x" * 40 + "…")
    for unprintable in (b"tab\there", b"del\x7f", b"\x1f", b"caf\xc3\xa9", b""):
        assert udp(unprintable) == (f"UDP {len(unprintable)} bytes", None)


@settings(max_examples=400, deadline=None)
@given(st.lists(_blobs, max_size=5), st.sampled_from([0, 1, 101, 113, 276, 9]))
def test_any_bytes_annotate_without_raising(blobs, linktype) -> None:
    decoded = [decode(b, linktype, float(i)) for i, b in enumerate(blobs)]
    rows = list(annotate(decoded))
    assert len(rows) == len(blobs)
    assert all(isinstance(r.where(), str) for r in rows)
