"""dnsmasq (Debian `dnsmasq-base`: the binary, no system service) as a child process: a real
caching resolver beside protolab's own, with a config of its own on a free loopback port.

Where state lives: dnsmasq's cache and its table of forwarded queries are its process's memory;
`restart` makes a new process (a new PID) on the same port, with both empty. It reads no
/etc/dnsmasq.conf (`--conf-file=/dev/null`), no /etc/resolv.conf (`--no-resolv`) and no /etc/hosts
(`--no-hosts`): its only upstreams are the ones given (`--server`). It runs with `--no-daemon`
(dnsmasq's debug mode): in the foreground, and as root it keeps its credentials — dropping them
would clear the parent-death signal (prctl(2)), and a SIGKILLed protolab would leave it
running. Its log (`--log-queries`, to stderr: `--log-facility=-`) says for each query whether
it was `cached` or `forwarded`, and SIGUSR1 makes it write its statistics and its whole cache
there (`cache_dump`).

Readiness is the kernel's record: a UDP socket bound to our port held by the child's PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.rdataclass

from protolab.net import lifecycle
from protolab.net.dns_resolver import ask
from protolab.net.lb import _sockets_of
from protolab.net.processes import restartable_port

Address = tuple[str, int]
PACKAGE = "dnsmasq-base"  #: the Debian package with the binary alone
MARKER = "version.bind."  #: a CHAOS TXT question dnsmasq answers itself: a line in its log


class DnsmasqError(OSError):
    """dnsmasq is missing or did not start: one line for the user."""


def dnsmasq_path() -> str | None:
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    return exe if os.path.exists(exe) else None


@dataclass(frozen=True)
class CacheLine:
    """One entry of dnsmasq's cache dump (SIGUSR1 with --log-queries)."""

    host: str
    address: str
    flags: str
    expires: str


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port forwarding to `upstream` (and names under each `routes` suffix
    to its own upstream); `query_port` fixes its upstream source port (default: random)."""

    def __init__(self, upstream: Address, routes: dict[str, Address] | None = None,
                 cache_size: int = 150, port: int = 0) -> None:
        exe = dnsmasq_path()
        if exe is None:
            raise DnsmasqError(f"dnsmasq is not installed (Debian: apt-get install {PACKAGE})")
        self.exe = exe
        self.port = port or restartable_port(udp=True)
        self.address: Address = ("127.0.0.1", self.port)
        servers = [f"--server=127.0.0.1#{upstream[1]}"] + [
            f"--server=/{s.strip('.')}/127.0.0.1#{a[1]}" for s, a in (routes or {}).items()]
        self.argv = [exe, "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                     "--no-daemon", "--bind-interfaces", "--listen-address=127.0.0.1",
                     f"--port={self.port}", f"--cache-size={cache_size}", "--log-queries",
                     "--log-facility=-", *servers]
        self.dir = Path(tempfile.mkdtemp(prefix="protolab-dnsmasq-"))
        self.pids: list[int] = []
        self.logs: list[str] = []  #: each process's whole log, once it has stopped
        self._start()

    def _start(self) -> None:
        self._log = self.dir / f"log-{len(self.pids)}"
        err = open(self._log, "wb")  # noqa: SIM115 - the child holds it; closed below
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, process_group=0,
                                         preexec_fn=lifecycle.set_parent_death_signal)
        except OSError as exc:
            raise DnsmasqError(f"dnsmasq did not start: {exc.strerror or exc}") from None
        finally:
            err.close()
        lifecycle.track(self.proc)
        self.pids.append(self.proc.pid)
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, timeout: float = 5.0) -> None:
        """Until the kernel lists a UDP socket on our port held by this PID (or it exited)."""
        deadline = time.monotonic() + timeout
        while True:
            if _udp_bound(self.port) & _sockets_of(self.proc.pid):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                lines = self.log().strip().splitlines()
                self.stop()
                raise DnsmasqError(f"dnsmasq did not start: {lines[-1] if lines else '?'}")
            time.sleep(0.01)  # polling the kernel's table: readiness is checked, not assumed

    def log(self) -> str:
        """What the running process has written to its log so far."""
        return self._log.read_text(errors="replace")

    def cache_dump(self) -> list[CacheLine]:
        """SIGUSR1: dnsmasq writes its cache to the log. A CHAOS question it answers itself is
        logged after the dump once the dump is complete; asked until it is (the readiness check
        of the log: no waiting on a clock)."""
        before = len(self.log())
        self.proc.send_signal(signal.SIGUSR1)
        marker = dns.message.make_query(MARKER, "TXT", rdclass=dns.rdataclass.CH)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(50):
                ask(sock, marker, self.address)
                text = self.log()[before:]
                head = re.search(r"\]: Host\s+Address", text)
                if head and MARKER.rstrip(".") in text[head.end():]:
                    return parse_dump(text[:text.index(MARKER.rstrip("."), head.end())])
        return []

    def restart(self) -> tuple[int, int]:
        """Stop this process, start a new one on the same port: (old pid, new pid)."""
        old = self.pid
        self._stop_process()
        self._start()
        return old, self.pid

    def _stop_process(self) -> None:
        with lifecycle.shielded():
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            lifecycle.untrack(self.proc)
        self.logs.append(self.log())

    def stop(self) -> None:
        if self.proc is not None:
            self._stop_process()
            self.proc = None  # type: ignore[assignment]
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Dnsmasq:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_dump(text: str) -> list[CacheLine]:
    """The cache entries of a SIGUSR1 dump: the lines under its `Host Address Flags Expires`
    header (fixed columns, as the header sets them) that have an expiry time."""
    lines = [ln.split(": ", 1)[1] for ln in text.splitlines() if ": " in ln]
    start = next((i for i, ln in enumerate(lines) if re.match(r"Host\s+Address", ln)), None)
    if start is None:
        return []
    head = lines[start]
    cols = [head.index(w) for w in ("Address", "Flags", "Expires", "Source")]
    out = []
    for line in lines[start + 2:]:
        cells = [line[a:b].strip() for a, b in zip([0, *cols], [*cols, None], strict=True)]
        if cells[0] and re.match(r"\w{3} \w{3} ", cells[3]):
            out.append(CacheLine(*cells[:4]))
    return out


def _udp_bound(port: int) -> set[str]:
    """Inodes of the UDP sockets bound to 127.0.0.1:port (the kernel's /proc/net/udp)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return {r[9] for r in rows if r[1] == local}


def log_lines(text: str, name: str) -> list[str]:
    """dnsmasq's log lines about `name` (without the `dnsmasq[PID]: ` prefix)."""
    bare = name.rstrip(".")
    return [ln.split(": ", 1)[1] for ln in text.splitlines()
            if ": " in ln and re.search(rf"\b{re.escape(bare)}\b", ln.split(": ", 1)[1])]
