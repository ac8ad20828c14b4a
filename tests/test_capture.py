"""The shared capture layer: each loopback frame once, the first included, written atomically."""

from __future__ import annotations

import socket
import subprocess

import pytest

from protolab.wire.capture import Capture, wanted
from protolab.wire.packets import decode
from protolab.wire.pcap import read_pcap

from conftest import ROOT, require_tool

N = 300


def _udp_pair():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    return server, client


@pytest.mark.parametrize("direction", ["client→server", "server→client"])
def test_each_packet_once_and_the_first_included(capture_rights, tmp_path, direction) -> None:
    server, client = _udp_pair()
    sender, receiver = (client, server) if direction == "client→server" else (server, client)
    path = tmp_path / "c.pcap"
    with server, client, Capture([server.getsockname()[1]], path) as cap:
        for i in range(N):
            sender.sendto(b"n%d" % i, receiver.getsockname())
            receiver.recv(64)
    payloads = [decode(r.data, r.linktype).payload for r in read_pcap(path)]
    assert payloads == [b"n%d" % i for i in range(N)]
    assert cap.summary.packets == N and cap.summary.kernel_drops == 0


def test_other_ports_are_not_captured(capture_rights, tmp_path) -> None:
    server, client = _udp_pair()
    other, _ = _udp_pair()
    with server, client, other, Capture([server.getsockname()[1]], tmp_path / "c.pcap") as cap:
        client.sendto(b"mine", server.getsockname())
        client.sendto(b"not mine", other.getsockname())
        server.recv(64)
        other.recv(64)
    assert [decode(r.data, r.linktype).payload for r in cap.summary.records] == [b"mine"]


def test_the_kernel_filter_keeps_other_conversations_out_of_the_buffer(capture_rights,
                                                                      tmp_path) -> None:
    """Frames of other ports are dropped by the kernel (BPF), not queued for Python."""
    server, client = _udp_pair()
    other, _ = _udp_pair()
    with server, client, other, Capture([server.getsockname()[1]], tmp_path / "c.pcap") as cap:
        for _ in range(500):
            client.sendto(b"not mine", other.getsockname())
            other.recv(64)
        late, _ = _udp_pair()
        with late:
            cap.add_port(late.getsockname()[1])  # the filter follows ports added later
            client.sendto(b"mine", server.getsockname())
            client.sendto(b"late", late.getsockname())
            server.recv(64)
            late.recv(64)
    assert [decode(r.data, r.linktype).payload for r in cap.summary.records] == [b"mine",
                                                                              b"late"]
    # the two frames and the drain markers: none of the 500 other frames reached the socket
    assert cap.summary.kernel_packets < 20, cap.summary.kernel_packets


def test_tshark_reads_the_capture(capture_rights, tmp_path) -> None:
    tshark = require_tool("tshark")
    server, client = _udp_pair()
    path = tmp_path / "c.pcap"
    port = server.getsockname()[1]
    with server, client, Capture([port], path):
        client.sendto(b"hello", server.getsockname())
        server.recv(64)
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "udp.dstport",
                          "-e", "data.data"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(port), b"hello".hex()]


def test_an_interrupted_capture_leaves_the_old_file_intact(capture_rights, tmp_path) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(b"the previous capture")
    server, client = _udp_pair()
    with pytest.raises(RuntimeError), server, client, Capture([server.getsockname()[1]], path):
        client.sendto(b"x", server.getsockname())
        raise RuntimeError("demo failed half way")
    assert path.read_bytes() == b"the previous capture"
    assert [p.name for p in tmp_path.iterdir()] == ["c.pcap"]


def test_capture_off_runs_the_block_and_says_why(tmp_path) -> None:
    with Capture([9], tmp_path / "c.pcap", enabled=False, off_reason="test") as cap:
        ran = True
    assert ran and not cap.active and cap.summary.off_reason == "test"
    assert not (tmp_path / "c.pcap").exists()
    assert cap.wait_for(lambda d: True, timeout=0.1) is False


def test_the_port_filter_reads_raw_frames() -> None:
    from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
    from scapy.layers.l2 import Ether

    udp = bytes(Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=1111, dport=2222))
    icmp = bytes(Ether() / IP() / ICMP(type=3, code=3) / IPerror(src="127.0.0.1")
                 / UDPerror(sport=2222, dport=3333))
    assert wanted(udp, {2222}) and wanted(udp, {1111}) and not wanted(udp, {3333})
    assert wanted(icmp, {3333}) and not wanted(icmp, {4444})
    assert not wanted(b"\x00" * 20, {1})


def test_a_burst_under_load_is_captured_completely_exactly_once(capture_rights, tmp_path) -> None:
    """At least 5,000 datagrams at 3,000 or more per second: every one captured, once."""
    import time

    server, client = _udp_pair()
    port = server.getsockname()[1]
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    n = 6_000
    with server, client, Capture([port], tmp_path / "burst.pcap") as cap:
        start = time.perf_counter()
        sent = 0
        for i in range(n):
            client.sendto(i.to_bytes(4, "big"), ("127.0.0.1", port))
            sent += 1
            if i % 500 == 499:  # drain the receiver so the *socket* drops nothing either
                server.setblocking(False)
                try:
                    while True:
                        server.recv(64)
                except BlockingIOError:
                    pass
        rate = sent / (time.perf_counter() - start)
    assert rate >= 3_000, f"the burst only reached {rate:.0f} datagrams/s"
    seen = [int.from_bytes(decode(r.data, r.linktype).payload, "big")
            for r in read_pcap(tmp_path / "burst.pcap")]
    assert sorted(seen) == list(range(n)), f"{len(seen)} of {n} captured"
    assert len(seen) == len(set(seen)) and cap.summary.kernel_drops == 0


def test_the_capture_fix_never_grants_raw_sockets_to_a_shared_interpreter(tmp_path) -> None:
    """setcap on a venv's python would reach the system interpreter it links to: the hint
    offers a venv with its own copy instead, and names a copied interpreter directly."""
    import os
    import sys

    from protolab.wire.capture import fix_hint

    hint = fix_hint()
    real = os.path.realpath(sys.executable)
    if real != os.path.abspath(sys.executable):  # this venv links to a shared interpreter
        assert "--copies" in hint and f"not {real}" in hint
        assert f"setcap cap_net_raw+ep {real}" not in hint
    copied = tmp_path / "v"
    subprocess.run([real, "-m", "venv", "--copies", "--without-pip", str(copied)], check=True,
                   timeout=120)
    python = copied / "bin" / "python3"
    out = subprocess.run([str(python), "-c", "from protolab.wire.capture import fix_hint; "
                          "print(fix_hint())"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().endswith(f"sudo setcap cap_net_raw+ep {python}"), out.stderr


def test_frames_dropped_before_the_filter_are_not_counted_as_the_captures(
        capture_rights, tmp_path, monkeypatch) -> None:
    """Other traffic on lo can overflow the socket in the moment before its port filter is
    attached; those drops are not the demo's frames and must not fail its completeness check."""
    import contextlib

    from protolab.wire import capture as cmod

    monkeypatch.setattr(cmod, "BUFFER_BYTES", 64 * 1024)  # small: the noise overflows it
    real_attach = cmod.attach_filter
    noise = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    flooded: list[bool] = []

    def attach_after_noise(sock, program) -> None:
        if not flooded:  # other traffic, before our filter exists: it overflows the buffer
            flooded.append(True)
            for _ in range(400):
                noise.sendto(b"x" * 1000, sink.getsockname())
            sock.setblocking(False)  # then read it all, so only the drops remain
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recv(65535)
            sock.setblocking(True)
        real_attach(sock, program)

    monkeypatch.setattr(cmod, "attach_filter", attach_after_noise)
    server, client = _udp_pair()
    with noise, sink, server, client, Capture([server.getsockname()[1]],
                                               tmp_path / "c.pcap") as cap:
        for i in range(20):
            client.sendto(b"n%d" % i, server.getsockname())
            server.recv(64)
    assert flooded and cap.summary.packets == 20
    assert cap.summary.kernel_drops == 0
