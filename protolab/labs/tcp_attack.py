"""`protolab tcp-attack-demo` (lab 07): TCP's state under attack, in hosts with their own kernels.

Where state lives: before a server knows who a client is, its kernel keeps a half-open entry per
SYN in the listener's SYN queue (RFC 9293 3.10.7.2; RFC 4987 on SYN floods); with SYN cookies it
keeps nothing and puts the state in the packet: the SYN-ACK's ISN, a keyed hash only the server
can check, and with timestamps the TSval's low bits (RFC 4987 3.6). Once a connection exists, its
RCV.NXT and window in each kernel are what an attacker must guess to reset it (RFC 5961 3.2),
and a peer that vanishes leaves the other kernel's entry behind until a timer notices (RFC 1122
4.2.3.6, keepalive).

Four parts, each in namespaces (`protolab.net.topology.server_client_attacker`): a server, a
client and an attacker host; the spoofed sources are routed to a sink inside the server's host.
Every sysctl this lab sets (tcp_syncookies, tcp_timestamps, rp_filter) is per namespace and goes
with it. Every finding is an `Observation` built after the capture is written, from the
counters (/proc/net/netstat of the server's namespace), `ss` in the hosts, the sockets' own
errors and TCP_INFO, and the packet numbers of the written capture.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protolab.analysis.annotate import Row
from protolab.analysis.observe import Findings, Observation, StateRow
from protolab.labs.output import print_findings, print_state_table, print_summary, show_capture
from protolab.wire import netstat
from protolab.wire.multicapture import MultiSummary
from protolab.wire.paths import default_capture_path

LAB = "tcp-attack-demo"
WHERE_TITLE = "Where state lives when TCP is attacked:"
Out = Callable[[str], None]
FLOOD = 40  #: spoofed SYNs per flood: bounded
PACE = 0.001  #: seconds between two spoofed SYNs: paced (1,000 per second at most)
BACKLOG = 1  #: the listeners' backlog: Linux queues backlog + 1 half-open entries
KEEPALIVE = (1, 1, 2)  #: TCP_KEEPIDLE, TCP_KEEPINTVL (seconds), TCP_KEEPCNT
PORTS = {"queue": 7001, "cookies1": 7002, "cookies2": 7003, "rst": 7005, "keepalive": 7006}
NEEDS_ROOT = ("needs root: hosts with their own kernels (network namespaces), raw sockets and "
              "capture are the kernel's; run `sudo protolab tcp-attack-demo`")
TCP_INFO_OPTIONS = 5  #: offset of tcpi_options in struct tcp_info (<linux/tcp.h>)
TCPI_OPTS = {"ts": 1, "sack": 2, "wscale": 4}  #: tcpi_options bits


@dataclass
class Sample:
    """What one step saw outside the capture: counters before → after, `ss` lines, notes."""

    counters: dict[str, tuple[int, int]] = field(default_factory=dict)
    ss: list[str] = field(default_factory=list)
    after_ss: list[str] = field(default_factory=list)
    note: str = ""  #: what a socket said (an error, TCP_INFO), as printed
    ports: tuple[int, ...] = ()  #: the client ports this step used


@dataclass
class AttackResult:
    samples: dict[str, Sample] = field(default_factory=dict)
    server: str = ""  #: the listeners' address
    window: int = 0  #: the server's receive window the attacker read from the traffic
    port_range: int = 0  #: how many ephemeral ports the client's kernel chooses from
    capture: MultiSummary | None = None
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def finding(self, key: str) -> Observation | None:
        return self.findings.find(key)

    def problem(self) -> str:
        return self.findings.problem()


def run_tcp_attack_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                        capture_off_reason: str = "--no-capture") -> AttackResult:
    from protolab.labs import tcp_attack_findings as found
    from protolab.labs import tcp_attack_parts as parts
    from protolab.wire.capture import capture_denied_reason

    result = AttackResult()
    denied = capture_denied_reason()
    if os.geteuid() != 0 or denied:
        why = NEEDS_ROOT if os.geteuid() != 0 else f"raw sockets and capture {denied}: run " \
            f"`sudo protolab {LAB}`"
        out(f"{LAB}: {why}; replaying the reference capture instead.")
        result.capture = MultiSummary(None, off_reason=why)
        result.findings.where = found.where_rows_of_run(result)
        return result
    path = Path(pcap) if pcap else default_capture_path(LAB)
    parts.run_parts(result, path, capture, capture_off_reason, out)
    if result.capture is not None and not result.capture.off_reason:
        result.rows = show_capture(result.capture, out)
    for o in found.findings_of_run(result):
        result.findings.add(o)
    out("\nFindings, each from this run's counters, ss, sockets and capture:")
    print_findings(result.findings.observations, out)
    result.findings.where = found.where_rows_of_run(result)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)
    return result


def where_from_capture(rows: list[Row]) -> list[StateRow]:
    from protolab.labs.tcp_attack_findings import where_from_capture as rows_of

    return rows_of(rows)


# -- small helpers the parts share -----------------------------------------------------------------


def counters(within: Callable, names: tuple[str, ...], before: dict[str, int]) -> dict:
    return netstat.delta(before, netstat.counters(within), names)


def tcp_options_of(sock: socket.socket) -> tuple[str, ...]:
    """The options the kernel negotiated for a connection (TCP_INFO tcpi_options)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    bits = info[TCP_INFO_OPTIONS]
    wscale = info[TCP_INFO_OPTIONS + 1]
    names = tuple(n for n, b in TCPI_OPTS.items() if bits & b)
    if "wscale" in names:
        names = tuple(n if n != "wscale" else f"wscale {wscale & 0xF}/{wscale >> 4}"
                      for n in names)
    return names


def spoofed_syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A SYN as a Linux client sends it (MSS, SACK permitted, timestamps, window scale), built
    with scapy, from a source that is not the sender's."""
    from scapy.layers.inet import IP, TCP

    return bytes(IP(src=src, dst=dst) / TCP(
        sport=sport, dport=dport, flags="S", seq=random.getrandbits(32), window=64240,
        options=[("MSS", 1460), ("SAckOK", b""),
                 ("Timestamp", (random.getrandbits(32), 0)), ("NOP", None), ("WScale", 7)]))


def raw_sender(within: Callable) -> socket.socket:
    """A raw IPv4 socket of a host: the packets it sends carry whatever source they say."""
    return within(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW))


def paced(sock: socket.socket, packets: list[tuple[bytes, str]]) -> None:
    for data, dst in packets:
        sock.sendto(data, (dst, 0))
        time.sleep(PACE)


def tcp_state(sock: socket.socket) -> int:
    """tcpi_state of a socket (1 ESTABLISHED, 2 SYN_SENT, ...)."""
    return struct.unpack_from("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8))[0]


run = run_tcp_attack_demo  #: the registry's entry point (protolab.labs.DEMOS)
