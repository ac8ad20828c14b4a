"""What the picture tests (ladder, text, Mermaid) compare with: tshark's reading of a capture."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from protolab.analysis.annotate import annotate_file
from protolab.analysis.facts import Kind, Row

from conftest import require_tool

FIELDS = ("frame.number", "ip.src", "ip.dst", "udp.srcport", "udp.dstport", "tcp.srcport",
          "tcp.dstport", "icmp.type", "dns.response_to")


@dataclass(frozen=True)
class Frame:
    """One packet as tshark reads it."""

    number: int
    src: str  #: "address:port" (the address alone without a transport header)
    dst: str
    icmp: bool
    quoted_src: str = ""  #: for an ICMP error: the sender of the datagram it quotes
    quoted_dst: str = ""  #: and its target
    response_to: int | None = None  #: for a DNS answer: the frame of its query (tshark's match)


@functools.cache
def frames(path: Path) -> tuple[Frame, ...]:
    """tshark's packets; UDP on the first packet's destination port is decoded as DNS (the
    demos' servers listen on a free port). Read once per file and test process."""
    tshark = require_tool("tshark")
    first = _tshark(tshark, path, ("-c", "1"), ("udp.dstport",))
    dns = ("-d", f"udp.port=={first[0][0]},dns") if first and first[0][0] else ()
    return tuple(_frame(cells) for cells in _tshark(tshark, path, dns, FIELDS))


def _tshark(tshark: str, path: Path, extra: tuple, fields: tuple) -> list[list[str]]:
    cmd = [tshark, "-r", str(path), *extra, "-T", "fields", "-E", "separator=/t",
           *(a for f in fields for a in ("-e", f))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


def _frame(cells: list[str]) -> Frame:
    number, ips, ipd, us, ud, ts, td, icmp, response_to = cells
    ip_src, ip_dst = ips.split(","), ipd.split(",")  # an ICMP error: outer, then quoted
    sport, dport = (us or ts).split(","), (ud or td).split(",")

    def end(ip: str, port: str) -> str:
        return f"{ip}:{port}" if port else ip

    if icmp:
        return Frame(int(number), ip_src[0], ip_dst[0], True,
                     end(ip_src[-1], sport[-1]), end(ip_dst[-1], dport[-1]))
    return Frame(int(number), end(ip_src[0], sport[0]), end(ip_dst[0], dport[0]), False,
                 response_to=int(response_to) if response_to else None)


def rows(path: Path) -> list[Row]:
    return list(annotate_file(path))


def forgeries(rows: list[Row]) -> list[int]:
    """The answers the client drops for what they are: an id nobody is waiting for, or the
    right id from a source it did not ask (the annotated rows' facts)."""
    return [r.number for r in rows if r.fact.kind in (Kind.DNS_UNKNOWN_ID, Kind.DNS_WRONG_SOURCE)]


def overtaking(rows: list[Row]) -> list[int]:
    """Answers matched to their query while an earlier query's answer was still to come on the
    same client socket: by the definition, every pair compared."""
    matched = [(r.number, r.fact.refs[0], r.dst) for r in rows
               if r.fact.kind is Kind.DNS_MATCHED and r.fact.refs]
    return [n for n, query, client in matched
            if any(later > n and other < query and c == client
                   for later, other, c in matched)]
