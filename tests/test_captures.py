"""Every committed reference capture: tshark reads it, and agrees with protolab's annotation."""

from __future__ import annotations

import re
import subprocess

import pytest

from protolab.analysis.annotate import annotate_file

from conftest import ROOT, require_tool

CAPTURES = sorted((ROOT / "captures").glob("*.ref.pcap"))


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_tshark_agrees_on_ports_seq_ack_and_flags(path) -> None:
    assert_tshark_agrees(path)


def assert_tshark_agrees(path) -> None:
    """For each packet: ports, TCP relative seq/ack and flags equal tshark's."""
    tshark = require_tool("tshark")
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-E", "separator=|",
                          "-e", "frame.number", "-e", "tcp.srcport", "-e", "tcp.dstport",
                          "-e", "udp.srcport", "-e", "udp.dstport", "-e", "tcp.seq",
                          "-e", "tcp.ack", "-e", "tcp.flags.ack", "-e", "tcp.flags.syn",
                          "-e", "tcp.flags.fin", "-e", "tcp.flags.reset", "-e", "icmp.type"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = list(annotate_file(path))
    lines = out.stdout.splitlines()
    assert len(lines) == len(rows) > 0
    for line, row in zip(lines, rows, strict=True):
        (n, tsp, tdp, usp, udp_, seq, ack, fack, fsyn, ffin, frst, icmp) = line.split("|")
        assert int(n) == row.number
        if icmp:  # ICMP errors quote a UDP header: tshark lists its ports too
            assert row.proto.startswith("ICMP")
            continue
        sport, dport = (tsp, tdp) if tsp else (usp, udp_)
        assert row.src.endswith(f":{sport}") and row.dst.endswith(f":{dport}"), line
        if tsp:
            m = re.match(r"\[([A-Z/]+)\] seq=(\d+)(?: ack=(\d+))?", row.summary)
            flags = set(m.group(1).split("/"))
            assert m.group(2) == seq, line
            assert (m.group(3) or "") == (ack if fack in ("1", "True") else ""), line
            for name, value in (("SYN", fsyn), ("FIN", ffin), ("RST", frst), ("ACK", fack)):
                assert (name in flags) == (value in ("1", "True")), (name, line)
