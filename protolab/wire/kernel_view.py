"""The kernel's own view of socket state: its transition record, socket tables and TCP_INFO.

Where state lives: in the kernel, which is the point of these labs, so here we ask it directly.
- Every TCP state change goes through one tracepoint, `sock:inet_sock_set_state`. We record it in a
  private tracefs instance (root only), filtered to the demo's port, with the monotonic clock.
- A connection that enters TIME_WAIT hands over to a small "timewait socket": the tracepoint
  records the full socket's own change, FIN_WAIT_2 -> CLOSE (Linux 6.18, as tcp-demo's run shows),
  and nothing for the timewait socket. `/proc/net/tcp` lists the timewait socket (state 06, inode 0:
  no file holds it, timer 3: the TIME_WAIT timer), so TIME_WAIT is read there, as its own record.
- `TCP_INFO` (getsockopt) gives one live socket's state; `/proc/net/udp` lists UDP bindings.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACEFS = Path("/sys/kernel/tracing")
#: runs a function inside a host (a thread in its network namespace) and returns its result
Within = Callable[[Callable[[], Any]], Any]
EVENT = "events/sock/inet_sock_set_state"

#: Kernel state numbers (include/net/tcp_states.h) to RFC names as protolab.protocols.tcp uses them.
KERNEL_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT_1",
                 5: "FIN_WAIT_2", 6: "TIME_WAIT", 7: "CLOSED", 8: "CLOSE_WAIT", 9: "LAST_ACK",
                 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
#: The tracepoint's symbolic names (TCP_FIN_WAIT1, TCP_CLOSE, ...) to the same RFC names.
_NAME = {"TCP_" + v.replace("WAIT_", "WAIT"): v for v in KERNEL_STATES.values()}
_NAME["TCP_CLOSE"] = "CLOSED"

_LINE = re.compile(r"\s(\d+\.\d+): inet_sock_set_state: .*?protocol=IPPROTO_TCP sport=(\d+) "
                   r"dport=(\d+) saddr=([\d.]+) daddr=([\d.]+) .*?oldstate=(\w+) "
                   r"newstate=(\w+)")


@dataclass(frozen=True)
class KernelTransition:
    time: float  #: CLOCK_MONOTONIC seconds
    local: str  #: "ip:port" of the socket that changed (port 0 before connect() picks one)
    remote: str
    old: str
    new: str
    line: str = ""  #: the tracepoint's line as the kernel wrote it (the evidence)


def tracing_denied_reason() -> str | None:
    """Why the kernel's transition record cannot be read here, or None."""
    if os.geteuid() != 0:
        return "reading the kernel's TCP state changes needs root (tracefs)"
    if not (TRACEFS / EVENT).exists():
        if not (TRACEFS / "instances").exists():
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                           capture_output=True, check=False)
        if not (TRACEFS / EVENT).exists():
            return "the kernel has no sock:inet_sock_set_state tracepoint (tracefs)"
    return None


class TcpStateTrace:
    """Record every TCP state change on `port` while the block runs (root only).

    `enabled` is False (and `reason` says why) where tracing is not possible; the block still runs.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reason = tracing_denied_reason()
        self.transitions: list[KernelTransition] = []
        self._dir = TRACEFS / "instances" / f"protolab-{os.getpid()}-{port}"

    @property
    def enabled(self) -> bool:
        return self.reason is None

    def __enter__(self) -> TcpStateTrace:
        if not self.enabled:
            return self
        try:
            self._dir.mkdir(exist_ok=True)
            (self._dir / "trace_clock").write_text("mono")
            (self._dir / EVENT / "filter").write_text(
                f"sport == {self.port} || dport == {self.port}")
            (self._dir / EVENT / "enable").write_text("1")
        except OSError as exc:
            self.reason = f"cannot set up kernel tracing: {exc.strerror or exc}"
            self._remove()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        try:
            (self._dir / EVENT / "enable").write_text("0")
            self.transitions = parse_trace((self._dir / "trace").read_text())
        finally:
            self._remove()

    def _remove(self) -> None:
        try:
            self._dir.rmdir()
        except OSError:
            pass


def parse_trace(text: str) -> list[KernelTransition]:
    out = []
    for line in text.splitlines():
        m = _LINE.search(line)
        if m is None:
            continue
        t, sport, dport, saddr, daddr, old, new = m.groups()
        out.append(KernelTransition(float(t), f"{saddr}:{sport}", f"{daddr}:{dport}",
                                    _NAME.get(old, old), _NAME.get(new, new), line.strip()))
    return out


def tcp_info_state(sock: socket.socket) -> str:
    """The kernel's state for one TCP socket (TCP_INFO, first byte: tcpi_state)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return KERNEL_STATES.get(info[0], str(info[0]))


#: /proc/net/tcp's "tr" column: which timer runs on the entry (net/ipv4/tcp_ipv4.c).
TIMERS = {0: "none", 1: "retransmit", 2: "keepalive", 3: "TIME_WAIT", 4: "zero window probe"}


@dataclass(frozen=True)
class SocketEntry:
    local: str
    remote: str
    state: str
    st: int = 0  #: the kernel's state number as the table shows it (06: TIME_WAIT)
    inode: int = 0  #: the socket's inode; 0 when no file (no application socket) holds it
    timer: int = 0  #: which timer runs (`TIMERS`)
    timer_left: float = 0.0  #: seconds until it fires
    line: str = ""  #: the table's line as the kernel wrote it

    def describe(self) -> str:
        """The entry as evidence: 4-tuple, state number and name, inode, timer."""
        timer = f", timer {self.timer} ({TIMERS.get(self.timer, '?')}) " \
                f"{self.timer_left:.1f} s left" if self.timer else ""
        return (f"{self.local} → {self.remote} st {self.st:02X} ({self.state}), "
                f"inode {self.inode}{timer}")


def socket_table(proto: str = "tcp", within: Within | None = None,
                 address: str | None = None) -> list[SocketEntry]:
    """The IPv4 socket table the kernel keeps (/proc/net/tcp or /proc/net/udp); with `within`,
    the table of the host (network namespace) `within` runs its work in: /proc/net is the
    *process's* namespace, so a thread inside a host reads /proc/thread-self/net. With
    `address`, only the rows with that IPv4 address at either end (a busy machine's table has
    tens of thousands)."""
    if within is None:
        return parse_socket_table(Path(f"/proc/net/{proto}").read_text(), proto, address)
    text = within(lambda: Path(f"/proc/thread-self/net/{proto}").read_text())
    return parse_socket_table(text, proto, address)


def parse_socket_table(text: str, proto: str = "tcp",
                       address: str | None = None) -> list[SocketEntry]:
    """The rows of a /proc/net/tcp or /proc/net/udp text (with `address` at either end)."""
    rows = []
    tick = os.sysconf("SC_CLK_TCK")
    # the table writes an address as the hex of its 32 bits in host order, then ":PORT"
    key = f"{int.from_bytes(socket.inet_aton(address), 'little'):08X}:" if address else ""
    for line in text.splitlines()[1:]:
        if line.strip() and key in line:
            parts = line.split()
            state = int(parts[3], 16)
            timer, _, left = parts[5].partition(":")
            rows.append(SocketEntry(_addr(parts[1]), _addr(parts[2]),
                                    KERNEL_STATES.get(state, str(state)) if proto == "tcp"
                                    else ("UNCONN" if state == 7 else "ESTAB"),
                                    st=state, inode=int(parts[9]), timer=int(timer, 16),
                                    timer_left=int(left, 16) / tick, line=line.strip()))
    return rows


def entries(local: str, remote: str | None = None, proto: str = "tcp") -> list[SocketEntry]:
    """The kernel table's entries for one local address (and remote, when given)."""
    return [e for e in socket_table(proto)
            if e.local == local and (remote is None or e.remote == remote)]


def _addr(hex_addr: str) -> str:
    ip_hex, port_hex = hex_addr.split(":")
    ip = socket.inet_ntoa(int(ip_hex, 16).to_bytes(4, "little"))
    return f"{ip}:{int(port_hex, 16)}"


def monotonic_offset() -> float:
    """Add to a CLOCK_MONOTONIC time to get wall-clock (epoch) time, as packet timestamps use."""
    return time.time() - time.monotonic()
