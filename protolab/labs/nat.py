"""`protolab nat-demo` (lab 06): a NAT router between client and server keeps a conntrack entry per
flow, so "stateless" UDP breaks when that entry expires.

Where state lives: client 192.168.1.2 — router (masquerade: 192.168.1.1 inside, 203.0.113.1
outside) — server 203.0.113.2, three hosts with kernels of their own (network namespaces,
`protolab.net.topology`). The router's kernel keeps one conntrack entry per flow: the original
tuple and the reply tuple, which after source NAT goes to the router's outside address and port
(the mapping, RFC 3022 section 2.1; RFC 4787 section 4.3 on UDP mapping timers). The entry's timer
restarts with every packet; when it runs out the mapping is gone, and a datagram from outside
finds nothing to translate it back to (RFC 4787 REQ-5 asks for at least 2 minutes; the demo sets
the router's net.netfilter.nf_conntrack_udp_timeout to 2 s so that the run sees it). TCP through
the NAT is held three times: by each end's kernel and by the router's conntrack entry.

Every finding is an `Observation` from this run: the router's conntrack table read over netlink,
its DESTROY events, `ss -tn` inside each end host, the replies' `pid=` and `total=`, and packet
numbers in this run's capture, taken at four points (client:eth0, router:lan, router:wan,
server:eth0) into one pcapng.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protolab.analysis.annotate import Row, annotate_records
from protolab.analysis.observe import Findings, StateRow
from protolab.analysis.table import format_rows
from protolab.labs.output import indent, print_findings, print_state_table, print_summary, table
from protolab.net import conntrack
from protolab.net.conntrack import Destroyed, DestroyWatch, Entry
from protolab.net.topology import NatNet, Topology, client_router_server
from protolab.protocols.counter import CounterClient, Reply
from protolab.wire.multicapture import CapturePoint, MultiCapture, MultiSummary
from protolab.wire.paths import default_capture_path, reference_capture
from protolab.wire.pcap import read_pcap

LAB = "nat-demo"
Out = Callable[[str], None]
WHERE_TITLE = "Where state lives with a NAT in the path:"
UDP_TIMEOUT = 2  #: s: the router's nf_conntrack_udp_timeout for this run (the default is 30)
KEEPALIVE_EVERY = 0.5  #: s between the kept flow's keepalives: less than UDP_TIMEOUT
QUIET = UDP_TIMEOUT + 0.3  #: s the lost flow stays silent: more than UDP_TIMEOUT
REPLY_TIMEOUT = 1.0  #: s: a reply across three veth links takes well under 1 ms
ADDS = (5, 3)
STRAY = 0.3  #: s to wait for a datagram that should not come, once its sibling has arrived


@dataclass
class UdpFlow:
    """One client socket's flow to the push server in part 3."""

    name: str  #: "kept", "lost"
    inside: tuple[str, int] = ("", 0)  #: its address and port in the client's kernel
    outside: tuple[str, int] = ("", 0)  #: as the server saw it: the router's mapping
    timeouts: list[int] = field(default_factory=list)  #: its entry's timeout, each time read
    entry_ids: list[int] = field(default_factory=list)
    keepalives: int = 0
    keepalives_at_reads: list[int] = field(default_factory=list)  #: keepalives sent, per read
    pushed: bytes = b""  #: what the server sent it after the wait
    received: bytes | None = None  #: what the client socket got back (None: nothing)


@dataclass
class TcpRun:
    """Part 4: one TCP connection through the NAT, then the router's table flushed."""

    client: str = ""  #: the client's own endpoint (its kernel)
    seen_by_server: str = ""  #: the peer as the server's kernel holds it
    entry: Entry | None = None
    ss_client: list[str] = field(default_factory=list)
    ss_server: list[str] = field(default_factory=list)
    after_flush: int = -1  #: TCP entries in the router's table right after the flush
    flushed: list[Destroyed] = field(default_factory=list)  #: DESTROY events of the flush
    server_got: bytes | None = None  #: what the server read after the flush (None: nothing)
    echo: bytes | None = None  #: what came back to the client
    error: str = ""  #: the socket error either side met after the flush
    picked_up: Entry | None = None  #: the entry the router made for the next segments
    loose: str = ""  #: the router's net.netfilter.nf_conntrack_tcp_loose


@dataclass
class NatDemoResult:
    net: NatNet | None = None
    port: int = 0  #: the counter server's UDP port
    push_port: int = 0
    tcp_port: int = 0
    client_port: int = 0  #: the workflow's client port (inside)
    entries: list[Entry | None] = field(default_factory=list)  #: the workflow's entry, per read
    replies: list[Reply] = field(default_factory=list)
    restart: tuple[int, int] = (0, 0)  #: counter server pid before → after
    udp_timeout: str = ""  #: the router's nf_conntrack_udp_timeout, read back after setting it
    read_at: list[float] = field(default_factory=list)  #: monotonic s of each timeout read
    kept: UdpFlow = field(default_factory=lambda: UdpFlow("kept"))
    lost: UdpFlow = field(default_factory=lambda: UdpFlow("lost"))
    destroyed: Destroyed | None = None  #: the lost flow's DESTROY event
    tcp: TcpRun = field(default_factory=TcpRun)
    capture: MultiSummary | None = None
    capture_off: str = ""
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def problem(self) -> str:
        return self.findings.problem()


def denied_reason() -> str | None:
    """Why this machine cannot build the hosts here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth links and nftables rules are the kernel's)"
    return None


def points(net: NatNet) -> list[CapturePoint]:
    return [CapturePoint(i.point, i.name, i.host.within)
            for i in (net.client_if, net.inside, net.outside, net.server_if)]


def run_nat_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                 capture_off_reason: str = "--no-capture", faults: object = None
                 ) -> NatDemoResult:
    result = NatDemoResult()
    path = Path(pcap) if pcap else default_capture_path(LAB)
    if (denied := denied_reason()) is not None:
        result.capture = MultiSummary(None, off_reason=denied)
        result.capture_off = denied
        out(f"{LAB}: {denied}: run it as root (sudo .venv/bin/python -m protolab {LAB}); "
            f"reference capture: protolab inspect {reference_capture(LAB)}")
        return result
    with Topology() as topo:
        net = result.net = client_router_server(topo)
        for key, value in (("net/netfilter/nf_conntrack_udp_timeout", UDP_TIMEOUT),
                           ("net/netfilter/nf_conntrack_timestamp", 1)):
            topo.sysctl(net.router, key, value)
        result.tcp.loose = topo.read_sysctl(net.router, "net/netfilter/nf_conntrack_tcp_loose")
        result.udp_timeout = topo.read_sysctl(net.router,
                                              "net/netfilter/nf_conntrack_udp_timeout")
        with _Servers(topo, net) as servers, DestroyWatch(net.router.within) as watch, \
                MultiCapture(points(net), path, ports=servers.ports, enabled=capture,
                             off_reason=capture_off_reason) as cap:
            result.port, result.push_port, result.tcp_port = servers.ports
            if not cap.active:
                result.capture_off = cap.summary.off_reason or capture_off_reason
                out(f"capture off: {result.capture_off}; the demo runs anyway")
            _part1_2(result, topo, servers, out)
            _part3(result, servers, watch, out)
            _part4(result, servers, watch, out)
        result.capture = cap.summary
    _report(result, out)
    return result


class _Servers:
    """The server host's sockets and process: the UDP counter server (its own process, so it
    can be restarted), a UDP socket that pushes, a TCP listener."""

    def __init__(self, topo: Topology, net: NatNet) -> None:
        self.topo, self.net = topo, net
        self.address = net.server_if.address
        self.counter = topo.spawn(net.server, "protolab.net.counter_server",
                                  ["0", self.address])
        self.push = net.server.socket()
        self.push.bind((self.address, 0))
        self.listener = net.server.socket(kind=socket.SOCK_STREAM)
        self.listener.bind((self.address, 0))
        self.listener.listen(1)
        self.ports = (self.counter.port, self.push.getsockname()[1],
                      self.listener.getsockname()[1])

    def __enter__(self) -> _Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.push.close()
        self.listener.close()

    def restart_counter(self) -> tuple[int, int]:
        old = self.counter
        old.kill()
        self.counter = self.topo.spawn(self.net.server, "protolab.net.counter_server",
                                       [str(old.port), self.address])
        return old.pid, self.counter.pid


# -- the run -------------------------------------------------------------------------------------


def _ask(sock: socket.socket, client: CounterClient, add: int, to: tuple[str, int]
         ) -> Reply | None:
    sock.sendto(client.request(add), to)
    sock.settimeout(REPLY_TIMEOUT)
    while True:
        try:
            reply = client.receive(sock.recvfrom(2048)[0])
        except TimeoutError:
            return None
        if reply is not None:
            return reply


def _entry(router_netns: str, proto: str, dport: int, sport: int | None = None) -> Entry | None:
    """The router's entry for the flow to `dport` (from inside port `sport`), None if none."""
    return next((e for e in conntrack.read(router_netns) if e.proto == proto
                 and e.original.dport == dport and sport in (None, e.original.sport)), None)


def _part1_2(result: NatDemoResult, topo: Topology, servers: _Servers, out: Out) -> None:
    net = result.net
    to = (servers.address, result.port)
    out(f"1. A UDP exchange through the NAT: client {net.client_if.address} — router "
        f"({net.inside.address} inside, {net.outside.address} outside, masquerade) — server "
        f"{servers.address}:{result.port}. The router's conntrack table (its kernel, over "
        f"netlink) after one request and its reply:")
    out(f"   (hosts: network namespaces {net.client.netns}, {net.router.netns}, "
        f"{net.server.netns})")
    client = CounterClient()
    with net.client.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        result.client_port = sock.getsockname()[1]
        for i, add in enumerate(ADDS):
            if i == 1:
                result.restart = servers.restart_counter()
                out(f"\n2. The litmus test with a middlebox: the server process restarted (pid "
                    f"{result.restart[0]} → {result.restart[1]}, same port), then the next "
                    f"request:")
            reply = _ask(sock, client, add, to)
            if reply is not None:
                result.replies.append(reply)
            entry = _entry(net.router.netns, "udp", result.port, result.client_port)
            result.entries.append(entry)
            got = f"total={reply.total} pid={reply.pid}" if reply else "no reply"
            out(f"   request add={add} → {got}; router: "
                f"{entry.line() + f' id {entry.id}' if entry else 'no entry'}")


def _part3(result: NatDemoResult, servers: _Servers, watch: DestroyWatch, out: Out) -> None:
    net = result.net
    out(f"\n3. The router's UDP timeout is {result.udp_timeout} s (net.netfilter.nf_conntrack_"
        f"udp_timeout, read in its namespace). Two client sockets say hello to the server at "
        f"{servers.address}:{result.push_port}; one sends a keepalive every {KEEPALIVE_EVERY} s, "
        f"the other stays silent for {QUIET:.1f} s; then the server sends each a datagram:")
    flows = (result.kept, result.lost)
    socks = [net.client.socket() for _ in flows]
    try:
        for flow, sock in zip(flows, socks, strict=True):
            sock.bind(("0.0.0.0", 0))
            flow.inside = (net.client_if.address, sock.getsockname()[1])
            sock.sendto(f"hello from the {flow.name} flow".encode(),
                        (servers.address, result.push_port))
            servers.push.settimeout(REPLY_TIMEOUT)
            _, flow.outside = servers.push.recvfrom(2048)
            servers.push.sendto(b"welcome", flow.outside)
            sock.settimeout(REPLY_TIMEOUT)
            sock.recvfrom(2048)
        start = time.monotonic()
        _read_timeouts(result, flows)
        _keep_alive(result, socks[0], servers, start)
        for flow in flows:
            flow.pushed = f"push to the {flow.name} flow".encode()
            servers.push.sendto(flow.pushed, flow.outside)
        for i, (flow, sock) in enumerate(zip(flows, socks, strict=True)):
            sock.settimeout(REPLY_TIMEOUT if i == 0 else STRAY)
            try:
                flow.received = sock.recvfrom(2048)[0]
            except TimeoutError:
                flow.received = None
    finally:
        for sock in socks:
            sock.close()
    lost = result.lost
    result.destroyed = next((d for d in watch.read(timeout=REPLY_TIMEOUT) if d.entry.proto ==
                             "udp" and d.entry.original.sport == lost.inside[1]), None)
    _print_part3(result, out)


def _read_timeouts(result: NatDemoResult, flows: Sequence[UdpFlow]) -> None:
    result.read_at.append(time.monotonic())
    for flow in flows:
        entry = _entry(result.net.router.netns, "udp", result.push_port, flow.inside[1])
        if entry is not None:
            flow.timeouts.append(entry.timeout)
            flow.entry_ids.append(entry.id)
            flow.keepalives_at_reads.append(flow.keepalives)


def _keep_alive(result: NatDemoResult, sock: socket.socket, servers: _Servers,
                start: float) -> None:
    """The kept flow's keepalives until the lost flow has been quiet for QUIET s (the passing
    time is the experiment); the timeouts read again half-way."""
    kept, read_again = result.kept, False
    servers.push.setblocking(False)
    while (now := time.monotonic() - start) < QUIET:
        # the next keepalive's time; when a busy machine made us late, send it at once
        time.sleep(max(0.0, min(KEEPALIVE_EVERY * (kept.keepalives + 1), QUIET) - now))
        if time.monotonic() - start >= QUIET:
            break
        kept.keepalives += 1
        sock.sendto(f"keepalive {kept.keepalives}".encode(),
                    (servers.address, result.push_port))
        if not read_again and time.monotonic() - start > 1.0:
            _read_timeouts(result, (result.kept, result.lost))
            read_again = True
    try:
        while servers.push.recvfrom(2048):  # the keepalives, read so none is left queued
            pass
    except BlockingIOError:
        pass


def _print_part3(result: NatDemoResult, out: Out) -> None:
    rows = []
    for flow in (result.kept, result.lost):
        rows.append((flow.name, f"{flow.inside[0]}:{flow.inside[1]}",
                     f"{flow.outside[0]}:{flow.outside[1]}",
                     " → ".join(f"{t} s" for t in flow.timeouts) or "-",
                     flow.keepalives, "received" if flow.received else "nothing"))
    out(indent(table(rows, ("flow", "client (inside)", "as the server sees it (outside)",
                            "router's timeout, read twice", "keepalives", "the server's "
                            "datagram"))))
    d = result.destroyed
    out(f"   router's DESTROY event for the lost flow: "
        f"{d.entry.line() + f' id {d.entry.id}' if d else 'none'}")


def _part4(result: NatDemoResult, servers: _Servers, watch: DestroyWatch, out: Out) -> None:
    net, run = result.net, result.tcp
    out(f"\n4. TCP through the NAT: one connection to {servers.address}:{result.tcp_port}; its "
        f"state in the two end hosts (ss -tn in each) and in the router (conntrack):")
    client = net.client.socket(kind=socket.SOCK_STREAM)
    accepted = None
    try:
        client.settimeout(REPLY_TIMEOUT)
        client.connect((servers.address, result.tcp_port))
        servers.listener.settimeout(REPLY_TIMEOUT)
        accepted, peer = servers.listener.accept()
        accepted.settimeout(REPLY_TIMEOUT)
        run.client = "{}:{}".format(*client.getsockname())
        run.seen_by_server = f"{peer[0]}:{peer[1]}"
        client.sendall(b"hello through the NAT")
        accepted.sendall(accepted.recv(2048))
        client.recv(2048)
        run.entry = _entry(net.router.netns, "tcp", result.tcp_port)
        run.ss_client = _ss(net.client, result.tcp_port)
        run.ss_server = _ss(net.server, result.tcp_port)
        _print_copies(result, out)
        _flush(result, client, accepted, watch)
    finally:
        client.close()
        if accepted is not None:
            accepted.close()
    _print_flush(result, out)


def _ss(host, port: int) -> list[str]:
    """`ss -tn` inside `host`: its kernel's TCP sockets to or from `port`, one line each."""
    done = host.run("ss", "-tnH")
    return [" ".join(line.split()) for line in done.stdout.splitlines()
            if f":{port} " in line + " "]


def _print_copies(result: NatDemoResult, out: Out) -> None:
    run = result.tcp
    entry = run.entry
    rows = [("client kernel (ss -tn in client)", "; ".join(run.ss_client) or "none"),
            ("router kernel (conntrack)", entry.line() if entry else "none"),
            ("server kernel (ss -tn in server)", "; ".join(run.ss_server) or "none")]
    out(indent(table(rows, ("who holds it", "the connection, as that kernel holds it"),
                     [34, 80])))


def _flush(result: NatDemoResult, client: socket.socket, accepted: socket.socket,
           watch: DestroyWatch) -> None:
    """The router "restarts": its conntrack table flushed; then the client's next segment."""
    net, run = result.net, result.tcp
    conntrack.flush(net.router.netns)
    run.after_flush = sum(1 for e in conntrack.read(net.router.netns) if e.proto == "tcp")
    run.flushed = [d for d in watch.read() if d.entry.proto == "tcp"]
    try:
        client.sendall(b"after the flush")
        run.server_got = accepted.recv(2048) or None
        if run.server_got:
            accepted.sendall(run.server_got)
            run.echo = client.recv(2048) or None
    except OSError as exc:  # a reset or a timeout: what the next segments met
        run.error = type(exc).__name__
    run.picked_up = _entry(net.router.netns, "tcp", result.tcp_port)


def _print_flush(result: NatDemoResult, out: Out) -> None:
    run = result.tcp
    out(f"   the router's table flushed (as a router's restart would lose it): "
        f"{len(run.flushed)} DESTROY "
        f"event(s), {run.after_flush} TCP entries left. The client then sends 'after the "
        f"flush':")
    met = (f"the server read {run.server_got!r}, the echo came back: {run.echo!r}"
           if run.echo else f"server read {run.server_got!r}; error: {run.error or 'none'}")
    entry = run.picked_up
    out(f"   {met}; the router now: {entry.line() + f' id {entry.id}' if entry else 'no entry'}"
        f" (nf_conntrack_tcp_loose={run.loose})")


# -- the packets of this run ---------------------------------------------------------------------


def _rows(result: NatDemoResult) -> list[Row]:
    summary = result.capture
    if summary is None or summary.off_reason or summary.path is None:
        return []
    return list(annotate_records(read_pcap(summary.path)))


def seen_at(rows: Sequence[Row], text: str, proto: str = "UDP") -> dict[str, list[int]]:
    """capture point → the packets there whose payload starts with `text` (UDP) — one packet's
    sightings along its way."""
    found: dict[str, list[int]] = {}
    for r in rows:
        if r.proto == proto and str(r.fields.get("udp_text", "")).startswith(text):
            found.setdefault(r.fields.get("interface", ""), []).append(r.number)
    return found


def _report(result: NatDemoResult, out: Out) -> None:
    from protolab.labs.nat_findings import findings, where_from_run

    result.rows = _rows(result)
    if result.rows:
        path = result.capture.path
        out(f"\nThe capture, four points merged in time order, read back and annotated "
            f"({len(result.rows)} packets → {path}):")
        out(format_rows(result.rows))
        out(f"Open it in Wireshark (frame.interface_name is the capture point), or: "
            f"protolab inspect {path} --flows")
    out("\nWhat this run observed:")
    print_findings([result.findings.add(o) for o in findings(result)], out)
    result.findings.where = where_from_run(result)
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)
    missing = result.findings.not_observed()
    if missing:
        out(f"\n{len(missing)} claim(s) NOT OBSERVED in this run: "
            f"{', '.join(o.key for o in missing)} (exit status 1)")


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    from protolab.labs.nat_findings import where_from_packets

    return where_from_packets(rows)

run = run_nat_demo  #: the registry's entry point (protolab.labs.DEMOS)
