"""`protolab <demo> --replay`: the story and tables from a capture, with nothing running.

What a replay prints is checked against tshark's own reading of the same capture (frame count,
addresses and ports, times, TCP flags and relative numbers, DNS IDs and tshark's query/response
matching, QUIC DCIDs), not against protolab's own formatting of its own rows.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from protolab.analysis.story_checks import STORIES, packets_text
from protolab.course.replay import DEMOS, LIVE_ONLY, replay
from protolab.wire.paths import reference_file

from conftest import require_tool, run_cli, without_net_raw

FIELDS = ("frame.number", "frame.time_relative", "ip.src", "ip.dst", "tcp.srcport",
          "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.seq", "tcp.ack", "tcp.len",
          "tcp.flags", "dns.id", "dns.flags.response", "dns.response_in", "dns.response_to",
          "dns.time", "quic.dcid", "icmp.type", "tls.handshake.type")
TCP_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20}

Frame = dict[str, str]


def tshark(path: Path) -> list[Frame]:
    """tshark's fields for every frame (two passes, so it links DNS queries and responses).
    The server port (where the first packet goes) is decoded as DNS or QUIC, as tshark would not
    guess it on a random port."""
    exe = require_tool("tshark")

    def fields(extra: list[str]) -> list[Frame]:
        cmd = [exe, "-2", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E",
               "occurrence=f", "-o", "tcp.relative_sequence_numbers:TRUE", *extra]
        for f in FIELDS:
            cmd += ["-e", f]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return [dict(zip(FIELDS, line.split("|"), strict=True))
                for line in out.stdout.splitlines()]

    keys = path.with_suffix(".keys")  # QUIC: new DCIDs travel encrypted (NEW_CONNECTION_ID)
    extra = ["-o", f"tls.keylog_file:{keys}"] if keys.exists() else []
    port = fields(extra)[0]["udp.dstport"]
    if not port or not path.name.startswith(("dns", "quic")):
        return fields(extra)
    proto = "dns" if path.name.startswith("dns") else "quic"
    return fields([*extra, "-d", f"udp.port=={port},{proto}"])


ROW = re.compile(r"^(\d+)\s+(\d+\.\d{3})\s+(\S+) → (\S+)\s+(\S+)\s+(.*?)(?:\s{2,}|$)")


def printed_rows(text: str) -> tuple[int, list[tuple[int, float, str, str, str, str]]]:
    """The annotated capture as printed: the packet count it names, and each row's first line
    (number, time, source, destination, proto, summary)."""
    section = text.split("The capture, annotated from the packets alone (", 1)[1]
    count = int(section.split(" packets", 1)[0])
    rows = []
    for line in section.split("\n\n", 1)[0].splitlines()[1:]:
        m = ROW.match(line)
        if m:
            n, t, src, dst, proto, summary = m.groups()
            rows.append((int(n), float(t), src, dst, proto, summary))
    return count, rows


def endpoint(f: Frame, side: str) -> str:
    port = f[f"tcp.{side}port"] or f[f"udp.{side}port"]
    return f"{f['ip.' + side]}:{port}"


def assert_rows_agree_with_tshark(text: str, path: Path) -> None:
    frames = tshark(path)
    count, rows = printed_rows(text)
    assert count == len(frames)
    assert [r[0] for r in rows] == [int(f["frame.number"]) for f in frames]
    for (n, t, src, dst, proto, summary), f in zip(rows, frames, strict=True):
        summary = re.sub(r"^@\S+ ", "", summary)  # a capture point (pcapng at several points)
        assert abs(t - float(f["frame.time_relative"])) <= 0.0006, n
        if f["icmp.type"]:  # the ports tshark gives are the quoted datagram's
            assert (proto, src, dst) == ("ICMP", f["ip.src"], f["ip.dst"]), n
            continue
        assert (src, dst) == (endpoint(f, "src"), endpoint(f, "dst")), n
        if f["tcp.srcport"]:
            assert proto == "TCP", n
            flags = int(f["tcp.flags"], 16)
            shown = re.search(r"\[([A-Z/]+)\]", summary).group(1).split("/")  # after @point
            assert set(shown) == {k for k, bit in TCP_FLAGS.items() if flags & bit}, n
            numbers = dict(x.split("=") for x in re.findall(r"\b(?:seq|ack|len)=\d+", summary))
            assert numbers["seq"] == f["tcp.seq"] and numbers["len"] == f["tcp.len"], n
            assert numbers.get("ack", f["tcp.ack"]) == f["tcp.ack"], n
        if f["dns.id"]:
            assert proto == "DNS" and f"{int(f['dns.id'], 16):#06x}" in summary, n
            assert summary.startswith("answer" if f["dns.flags.response"] == "1" else "query")
        if f["quic.dcid"] and "DCID=" in summary:
            assert proto == "QUIC" and f"DCID={f['quic.dcid']}" in summary, n


def _is_response(f: Frame) -> bool:
    return f["dns.flags.response"] == "1"


def _flags(f: Frame) -> int:
    return int(f["tcp.flags"] or "0", 16)


#: For story steps, what tshark must see in the packets a finding names: (all|any, predicate).
STEP_FACTS: dict[str, dict[str, tuple[Callable, Callable[[Frame], bool]]]] = {
    "dns-demo": {
        "batch": (all, lambda f: f["dns.flags.response"] == "0"),
        "matched": (all, lambda f: _is_response(f) and bool(f["dns.response_to"])),
        "forged-id": (all, lambda f: _is_response(f) and not f["dns.response_to"]),
        "wrong-source": (all, lambda f: _is_response(f) and not f["dns.response_to"]),
        "real-answer": (all, lambda f: bool(f["dns.response_to"])),
        "closed-socket": (any, lambda f: f["icmp.type"] == "3"),
    },
    "tcp-demo": {
        "no-socket": (any, lambda f: bool(_flags(f) & TCP_FLAGS["RST"])),
        "killed": (any, lambda f: bool(_flags(f) & TCP_FLAGS["RST"])),
        "reconnect": (any, lambda f: _flags(f) == TCP_FLAGS["SYN"]),
    },
    "tcp-attack-demo": {
        "syn-queue": (all, lambda f: _flags(f) == TCP_FLAGS["SYN"] | TCP_FLAGS["ACK"]),
        "refused": (all, lambda f: _flags(f) == TCP_FLAGS["SYN"]),
        "challenge": (any, lambda f: bool(_flags(f) & TCP_FLAGS["RST"])),
        "outside": (all, lambda f: bool(_flags(f) & TCP_FLAGS["RST"])),
        "exact": (all, lambda f: bool(_flags(f) & TCP_FLAGS["RST"])),
        "keepalive": (any, lambda f: bool(_flags(f) & TCP_FLAGS["RST"])),
    },
    "udp-demo": {
        "clients": (all, lambda f: bool(f["udp.srcport"]) and not f["icmp.type"]),
        "icmp": (all, lambda f: f["icmp.type"] == "3"),
    },
    "quic-demo": {
        "headers": (all, lambda f: bool(f["quic.dcid"])),
        "rotation": (all, lambda f: bool(f["quic.dcid"])),
        "tcp-moved": (any, lambda f: bool(_flags(f) & TCP_FLAGS["RST"])),
    },
    "tls-demo": {  # ClientHello (1) and ServerHello (2), as tshark reads them
        step: (all, lambda f: f["tls.handshake.type"] in ("1", "2"))
        for step in ("full", "resumed", "refused", "relayed", "shared-key", "sticky")
    },
    "hijack-demo": {  # HTTP requests and responses carry data; the TLS step its handshake
        **{step: (all, lambda f: int(f["tcp.len"] or 0) > 0)
           for step in ("exposed", "cookie-replayed", "cookie-revoked", "token-replayed",
                        "token-survives", "token-denied", "fixation")},
        "tls": (any, lambda f: f["tls.handshake.type"] == "1"),
    },
}


@pytest.mark.parametrize("demo", DEMOS)
def test_replay_prints_the_reference_as_tshark_reads_it(demo) -> None:
    out = run_cli(demo, "--replay")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("REPLAY: nothing runs")
    assert f"captures/{reference_file(demo).name}" in out.stdout.splitlines()[0]
    assert_rows_agree_with_tshark(out.stdout, reference_file(demo))
    for item in LIVE_ONLY[demo]:
        assert item in out.stdout
    assert out.stderr == ""


@pytest.mark.parametrize("demo", DEMOS)
def test_each_story_step_names_packets_that_show_it(demo) -> None:
    frames = {int(f["frame.number"]): f for f in tshark(reference_file(demo))}
    lines: list[str] = []
    result = replay(demo, out=lines.append)
    text = "\n".join(lines)
    assert result.complete and [f.step.key for f in result.findings] == \
        [s.key for s in STORIES[demo]]
    for finding in result.findings:
        assert finding.packets and set(finding.packets) <= set(frames), finding.step.key
        assert f"{finding.step.text}  " in text and packets_text(finding.packets) in text
        if finding.step.key in STEP_FACTS.get(demo, {}):
            quantifier, fact = STEP_FACTS[demo][finding.step.key]
            assert quantifier(fact(frames[n]) for n in finding.packets), finding


def test_the_tcp_handshake_step_is_syn_then_syn_ack_then_ack() -> None:
    frames = {int(f["frame.number"]): f for f in tshark(reference_file("tcp-demo"))}
    [handshake] = [f for f in replay("tcp-demo", out=lambda line: None).findings
                   if f.step.key == "handshake"]
    syn, ack = TCP_FLAGS["SYN"], TCP_FLAGS["ACK"]
    assert [_flags(frames[n]) & (syn | ack) for n in handshake.packets] == [syn, syn | ack, ack]
    ports = [(frames[n]["tcp.srcport"], frames[n]["tcp.dstport"]) for n in handshake.packets]
    assert ports[1] == ports[0][::-1] and ports[2] == ports[0]  # one connection, both ways


@pytest.mark.parametrize("demo", DEMOS)
def test_replay_of_a_capture_of_another_demo_says_so_and_fails(demo) -> None:
    """The next demo's reference, or the one after: tls-demo's and hijack-demo's both hold a
    full TLS handshake, which either story may show (and the replay then names it)."""
    from protolab.analysis.annotate import annotate_file
    from protolab.analysis.story_checks import check

    i = DEMOS.index(demo)
    nexts = [reference_file(DEMOS[(i + k) % len(DEMOS)]) for k in range(1, len(DEMOS))]
    other = next(p for p in nexts if not any(f.shown for f in check(demo, annotate_file(p))))
    assert other in nexts[:2]
    out = run_cli(demo, "--replay", str(other))
    assert out.returncode == 1
    assert f"is it a capture of `protolab {demo}`?" in out.stdout
    assert out.stdout.count("NOT SHOWN") == len(STORIES[demo])


def test_replay_of_a_missing_or_broken_file_is_one_line(tmp_path) -> None:
    out = run_cli("udp-demo", "--replay", str(tmp_path / "nope.pcap"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "nope.pcap" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    out = run_cli("udp-demo", "--replay", str(bad))
    assert out.returncode == 2 and out.stderr.count("\n") == 1


def test_dns_replay_match_table_is_tsharks_query_response_matching() -> None:
    frames = tshark(reference_file("dns-demo"))
    lines: list[str] = []
    replay("dns-demo", out=lines.append)
    table = "\n".join(lines).split("matched by ID:")[1].split("\n\n")[0]
    printed = {}
    for line in table.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0].startswith("0x"):  # not the header or its rule
            printed[int(cells[0], 16)] = cells
    sock = frames[0]["udp.srcport"]  # the batch: every query from the first query's socket
    batch = [f for f in frames if f["dns.flags.response"] == "0" and f["udp.srcport"] == sock]
    assert sorted(printed) == sorted(int(f["dns.id"], 16) for f in batch)
    answered = sorted(int(f["dns.response_in"]) for f in batch if f["dns.response_in"])
    by_frame = {int(f["frame.number"]): f for f in frames}
    for order_sent, q in enumerate(batch, 1):
        qid, question, sent, order_answered, rtt, answer = printed[int(q["dns.id"], 16)]
        assert int(sent) == order_sent
        if not q["dns.response_in"]:
            assert answer == "no answer"
            continue
        response = int(q["dns.response_in"])
        assert answer == f"#{response}"
        assert int(order_answered) == answered.index(response) + 1
        assert abs(float(rtt.removesuffix(" ms")) - 1000 * float(
            by_frame[response]["dns.time"])) <= 1


def test_without_capture_rights_the_demo_runs_then_replays_the_reference(tmp_path) -> None:
    out = run_cli("udp-demo", "--pcap", str(tmp_path / "u.pcap"),
                  prefix=without_net_raw())
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: needs root or CAP_NET_RAW")
    live, _, replayed = out.stdout.partition("REPLAY (capture is impossible here: needs root "
                                             "or CAP_NET_RAW)")
    assert replayed, "no replay after the live run"
    assert "workflow continued" in live  # the live demo ran first
    assert_rows_agree_with_tshark(replayed, reference_file("udp-demo"))
    assert not (tmp_path / "u.pcap").exists()


def test_no_capture_asked_for_does_not_replay() -> None:
    out = run_cli("udp-demo", "--no-capture")
    assert out.returncode == 0 and "REPLAY" not in out.stdout
