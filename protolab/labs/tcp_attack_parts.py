"""The four parts of `protolab tcp-attack-demo`: what each does in the hosts, and the findings
and "where state lives" rows made from what they saw (see `protolab.labs.tcp_attack`).

Where state lives: in the server's kernel (its SYN queue, its connection entries, its keepalive
timer, its counters), in the packets (a SYN cookie), and in the client's kernel (an entry that
outlives what its peer knows). The parts gather raw data (`Sample`); the findings are built once
the capture is written, so every packet number is the written file's.
"""

from __future__ import annotations

import errno
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

from protolab.labs.output import capture_off_line
from protolab.labs.tcp_attack import (
    BACKLOG,
    FLOOD,
    KEEPALIVE,
    LAB,
    PORTS,
    AttackResult,
    Sample,
    counters,
    paced,
    raw_sender,
    spoofed_syn,
    tcp_options_of,
    tcp_state,
)
from protolab.net.topology import AttackNet, Topology, server_client_attacker
from protolab.wire import netstat
from protolab.wire.multicapture import CapturePoint, MultiCapture

Out = Callable[[str], None]
QUEUE = ("ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies", "SyncookiesSent")
COOKIES = ("SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed")
TCP_SYN_SENT = 2
SILENCE = ("table inet protolab {\n"
           "  chain input { type filter hook input priority 0; policy drop; }\n"
           "  chain output { type filter hook output priority 0; policy drop; }\n"
           "}\n")  #: the client host goes silent: nothing in, nothing out


def run_parts(result: AttackResult, path: Path, capture: bool, off_reason: str, out: Out) -> None:
    """Build the hosts, capture at the server's three interfaces, run the four parts."""
    with Topology() as topo:
        net = server_client_attacker(topo)
        result.server = net.server_if.address
        low, high = net.client.within(
            lambda: Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        result.port_range = int(high) - int(low) + 1
        points = [CapturePoint(net.server.point(i), i, net.server.within)
                  for i in ("eth0", "att", net.sink)]
        out(f"Run {topo.run}. Hosts: client {net.client_if.address}, server "
            f"{net.server_if.address}, attacker {net.attacker_if.address}; spoofed sources "
            f"{net.spoofed} are routed to "
            f"{net.server.point(net.sink)}, a sink inside the server (no answer leaves).")
        with MultiCapture(points, path, enabled=capture, off_reason=off_reason) as cap:
            if not cap.active:
                out(capture_off_line(cap.summary, LAB, off_reason))
            syn_queue(topo, net, result, out)
            cookies(topo, net, result, out)
            rst_injection(net, result, cap, out)
            half_open(topo, net, result, out)
        result.capture = cap.summary


def _listener(net: AttackNet, port: int, backlog: int = BACKLOG) -> socket.socket:
    sock = net.server.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((net.server_if.address, port))
    sock.listen(backlog)
    return sock


def _syn_recv(net: AttackNet, port: int) -> list[str]:
    done = net.server.run("ss", "-Htn", "state", "syn-recv", "sport", "=", f":{port}")
    return [" ".join(line.split()) for line in done.stdout.splitlines() if line.strip()]


def _flood(net: AttackNet, port: int) -> None:
    """FLOOD spoofed SYNs, paced, from the attacker host, sources in the spoofed prefix."""
    base = net.spoofed.split("/")[0].rsplit(".", 1)[0]
    packets = [(spoofed_syn(f"{base}.{10 + i}", net.server_if.address,
                            random.randrange(20000, 60000), port), net.server_if.address)
               for i in range(FLOOD)]
    with raw_sender(net.attacker.within) as raw:
        paced(raw, packets)


def _connect(net: AttackNet, port: int, timeout: float) -> tuple[socket.socket, str]:
    """A legitimate client's connect(); ("" or the error it met)."""
    sock = net.client.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((net.server_if.address, port))
        return sock, ""
    except OSError as exc:
        return sock, exc.strerror or type(exc).__name__


# -- 1. the SYN queue --------------------------------------------------------------------------


def syn_queue(topo: Topology, net: AttackNet, result: AttackResult, out: Out) -> None:
    out(f"\n1. The SYN queue: a listener with backlog {BACKLOG}, tcp_syncookies=0 in the "
        f"server's namespace, {FLOOD} spoofed SYNs from the attacker.")
    topo.sysctl(net.server, "net/ipv4/tcp_syncookies", 0)
    port = PORTS["queue"]
    with _listener(net, port):
        before = netstat.counters(net.server.within)
        _flood(net, port)
        sample = Sample(counters=counters(net.server.within, QUEUE, before),
                        ss=_syn_recv(net, port))
        # A real client now: its SYN meets a full queue; its kernel resends it after 1 s.
        start = time.monotonic()
        legit, error = _connect(net, port, timeout=1.3)
        waited = time.monotonic() - start
        with legit:
            state = tcp_state(legit)
            sample.ports = (legit.getsockname()[1],)
        sample.note = f"connect() after {waited:.1f} s: {error or 'connected'}; TCP_INFO " \
                      f"state {'SYN_SENT' if state == TCP_SYN_SENT else state}"
        sample.after_ss = _syn_recv(net, port)
        legit_counts = counters(net.server.within, ("TCPReqQFullDrop",), before)
    sample.counters["TCPReqQFullDrop after the client"] = legit_counts["TCPReqQFullDrop"]
    result.samples["queue"] = sample
    out(f"   ss -n state syn-recv in the server: {len(sample.ss)} entries; legitimate client: "
        f"{sample.note}")


# -- 2. SYN cookies ----------------------------------------------------------------------------


def cookies(topo: Topology, net: AttackNet, result: AttackResult, out: Out) -> None:
    out("\n2. SYN cookies: the same flood with tcp_syncookies=1, then =2; the server's "
        "timestamps without per-connection offsets (tcp_timestamps=2) so the cookie's TSval "
        "bits can be read; a legitimate client, a forged ACK, and a client without timestamps.")
    topo.sysctl(net.server, "net/ipv4/tcp_timestamps", 2)
    for mode, key in ((1, "cookies1"), (2, "cookies2")):
        topo.sysctl(net.server, "net/ipv4/tcp_syncookies", mode)
        port = PORTS[key]
        with _listener(net, port) as listener:
            before = netstat.counters(net.server.within)
            _flood(net, port)
            result.samples[key] = Sample(counters=counters(net.server.within, QUEUE, before),
                                         ss=_syn_recv(net, port))
            if mode == 2:
                _cookie_clients(topo, net, result, listener)
        out(f"   tcp_syncookies={mode}: {len(result.samples[key].ss)} SYN-RECV entries, "
            f"SyncookiesSent {_moved(result.samples[key], 'SyncookiesSent')}")
    for key in ("cookie-ack", "cookie-no-ts"):
        out(f"   {key}: {result.samples[key].note}")
    topo.sysctl(net.server, "net/ipv4/tcp_syncookies", 1)


def _moved(sample: Sample, name: str) -> str:
    a, b = sample.counters.get(name, (0, 0))
    return f"{a} → {b}"


def _cookie_clients(topo: Topology, net: AttackNet, result: AttackResult,
                    listener: socket.socket) -> None:
    """With only cookies: a client with timestamps, a forged ACK, a client without."""
    port = listener.getsockname()[1]
    listener.settimeout(2)
    for key, timestamps in (("cookie-ack", 1), ("cookie-no-ts", 0)):
        topo.sysctl(net.client, "net/ipv4/tcp_timestamps", timestamps)
        before = netstat.counters(net.server.within)
        client, error = _connect(net, port, timeout=2)
        with client:
            sample = Sample(ss=_syn_recv(net, port), ports=(client.getsockname()[1],))
            sample.note = f"connect() failed: {error}" if error else _accept_note(listener)
        sample.counters = counters(net.server.within, COOKIES, before)
        result.samples[key] = sample
        if key == "cookie-ack":
            result.samples["forged-ack"] = _forged_ack(net, port)
    topo.sysctl(net.client, "net/ipv4/tcp_timestamps", 1)


def _accept_note(listener: socket.socket) -> str:
    """accept() the connection, and what its kernel negotiated (TCP_INFO)."""
    try:
        conn, _ = listener.accept()
    except OSError as exc:
        return f"accept() failed: {exc.strerror or exc}"
    with conn:
        return "server's socket negotiated: " + (", ".join(tcp_options_of(conn)) or "none")


def _forged_ack(net: AttackNet, port: int) -> Sample:
    """An ACK from the attacker's own address whose acknowledgment number is no cookie."""
    from scapy.layers.inet import IP, TCP

    before = netstat.counters(net.server.within)
    packet = bytes(IP(src=net.attacker_if.address, dst=net.server_if.address) / TCP(
        sport=random.randrange(20000, 60000), dport=port, flags="A",
        seq=random.getrandbits(32), ack=random.getrandbits(32)))
    with raw_sender(net.attacker.within) as raw:
        raw.sendto(packet, (net.server_if.address, 0))
    return _until(lambda: Sample(counters=counters(net.server.within, COOKIES, before)),
                  lambda s: s.counters["SyncookiesFailed"][1] > s.counters["SyncookiesFailed"][0])


def _until(read: Callable[[], Sample], done: Callable[[Sample], bool],
           timeout: float = 1.0) -> Sample:
    """Read again until `done` or `timeout`: the kernel counts a packet when it handles it."""
    deadline = time.monotonic() + timeout
    while True:
        sample = read()
        if done(sample) or time.monotonic() > deadline:
            return sample
        time.sleep(0.005)


def _connection(net: AttackNet, port: int) -> tuple[socket.socket, socket.socket] | str:
    """A connection client → server on `port`: (client, server) sockets, or why not."""
    with _listener(net, port, backlog=8) as listener:
        client, error = _connect(net, port, timeout=2)
        if error:
            client.close()
            return f"connect() failed: {error}"
        return client, listener.accept()[0]


# -- 3. RST injection --------------------------------------------------------------------------


def rst_injection(net: AttackNet, result: AttackResult, cap: MultiCapture, out: Out) -> None:
    out("\n3. RST injection: a connection client → server; the attacker, who sees its traffic "
        "(the capture), sends RSTs with the client's address: in the window but not exact, "
        "outside the window, then exactly at RCV.NXT.")
    if not cap.active:
        result.samples["rst"] = Sample(note="not tried: the attacker reads the numbers from the "
                                            "capture, which is off")
        return
    port = PORTS["rst"]
    pair = _connection(net, port)
    if isinstance(pair, str):
        result.samples["rst"] = Sample(note=pair)
        return
    client, conn = pair
    with client, conn:
        client.sendall(b"hello")
        conn.recv(16)
        conn.sendall(b"HI")
        client.recv(16)
        cport = client.getsockname()[1]
        nxt, window = _observed(cap, net, cport, port)
        result.window = window
        samples = [_rst(net, conn, cport, port, seq)
                   for seq in (nxt + window // 2, nxt + (1 << 31), nxt)]
        conn.settimeout(1)
        try:
            conn.recv(16)
            samples[-1].note = "server recv(): no error"
        except OSError as exc:
            samples[-1].note = f"server recv(): {errno.errorcode.get(exc.errno, exc)}"
    for key, sample in zip(("rst-in", "rst-out", "rst-exact"), samples, strict=True):
        sample.ports = (cport,)
        result.samples[key] = sample
        note = f"; {sample.note}" if sample.note else ""
        out(f"   {key}: server's entry {'kept' if sample.after_ss else 'gone'}; "
            f"TCPChallengeACK {_moved(sample, 'TCPChallengeACK')}{note}")


def _observed(cap: MultiCapture, net: AttackNet, cport: int, port: int) -> tuple[int, int]:
    """What an on-path attacker reads from the traffic: the client's next sequence number and
    the server's receive window (scaled by the shift its SYN-ACK announced, RFC 7323 2.3)."""
    cap.drain(rounds=1)
    seen = [d for d in cap.decoded() if d.tcp is not None and port in (d.sport, d.dport)
            and cport in (d.sport, d.dport)]
    last = [d for d in seen if d.sport == cport][-1]
    synack = next(d for d in seen if d.sport == port and d.tcp.flags & 0x12 == 0x12)
    shift = synack.tcp.parsed_options().wscale or 0
    window = [d for d in seen if d.sport == port][-1].tcp.window << shift
    return (last.tcp.seq + len(last.payload)) & 0xFFFFFFFF, window


def _rst(net: AttackNet, conn: socket.socket, cport: int, port: int, seq: int) -> Sample:
    from scapy.layers.inet import IP, TCP

    names = ("TCPChallengeACK",)
    before = netstat.counters(net.server.within)
    entry = lambda: _established(net, port, cport)  # noqa: E731 - read before and after
    sample = Sample(ss=entry())
    packet = bytes(IP(src=net.client_if.address, dst=net.server_if.address) / TCP(
        sport=cport, dport=port, flags="R", seq=seq & 0xFFFFFFFF))
    with raw_sender(net.attacker.within) as raw:
        raw.sendto(packet, (net.server_if.address, 0))
    done = _until(lambda: Sample(counters=counters(net.server.within, names, before),
                                 after_ss=entry()),
                  lambda s: s.counters["TCPChallengeACK"][1] > s.counters["TCPChallengeACK"][0]
                  or not s.after_ss, timeout=0.3)
    sample.counters, sample.after_ss = done.counters, done.after_ss
    return sample


def _established(net: AttackNet, port: int, cport: int) -> list[str]:
    done = net.server.run("ss", "-Htno", "state", "established", "sport", "=", f":{port}",
                          "dport", "=", f":{cport}")
    return [" ".join(line.split()) for line in done.stdout.splitlines() if line.strip()]


# -- 4. half-open ------------------------------------------------------------------------------


def half_open(topo: Topology, net: AttackNet, result: AttackResult, out: Out) -> None:
    idle, interval, count = KEEPALIVE
    out(f"\n4. Half-open: a connection, keepalive on the server's socket (idle {idle} s, "
        f"interval {interval} s, {count} probes); then the client host goes silent (nftables "
        f"drops everything in and out of it).")
    port = PORTS["keepalive"]
    pair = _connection(net, port)
    if isinstance(pair, str):
        result.samples["keepalive"] = Sample(note=pair)
        return
    client, conn = pair
    with client, conn:
        cport = client.getsockname()[1]
        for opt, value in ((socket.TCP_KEEPIDLE, idle), (socket.TCP_KEEPINTVL, interval),
                           (socket.TCP_KEEPCNT, count)):
            conn.setsockopt(socket.IPPROTO_TCP, opt, value)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        topo.nft(net.client, SILENCE)
        sample = Sample(ss=_established(net, port, cport), ports=(cport,))
        start = time.monotonic()
        conn.settimeout(idle + interval * count + 3)
        try:
            conn.recv(16)
            sample.note = "server recv(): returned"
        except OSError as exc:
            sample.note = f"server recv() after {time.monotonic() - start:.1f} s: " \
                          f"{errno.errorcode.get(exc.errno, exc)}"
        sample.after_ss = _established(net, port, cport)
        client_side = net.client.run("ss", "-Htn", "state", "established", "dport", "=",
                                     f":{port}").stdout.split()
        sample.counters = {"client kernel entries": (0, 1 if client_side else 0)}
    result.samples["keepalive"] = sample
    out(f"   server entry while silent: {sample.ss[0] if sample.ss else 'none'}; "
        f"{sample.note}")
