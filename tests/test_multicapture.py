"""Capture at several points at once (issue 16 item 2): one pcapng, one interface per point,
each packet pointing at the point where it was seen, in time order.

The traffic is real (a datagram from the client's kernel through the NAT router to the counter
server process and back); what the file says is read back by tshark (a real peer) and by
protolab's own reader and `inspect`.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from protolab.net.topology import Topology, client_router_server
from protolab.wire.multicapture import CapturePoint, MultiCapture, marker_frame, marker_of
from protolab.wire.pcap import LINKTYPE_ETHERNET, Record, read_pcap, write_pcapng

from conftest import require, require_tool, run_cli

pytestmark = pytest.mark.timeout(60)
REQUEST = b"seq=1 total=0 add=5"


def tshark_fields(path, *fields: str) -> list[list[str]]:
    tshark = require_tool("tshark")
    args = [x for f in fields for x in ("-e", f)]
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", *args], capture_output=True,
                         text=True, timeout=60, check=True)
    return [line.split("\t") for line in out.stdout.splitlines()]


def test_points_written_and_read_back_keep_their_names(tmp_path) -> None:
    """No root needed: the pcapng side alone."""
    frame = bytes(12) + b"\x08\x00" + bytes(46)
    records = [Record(1.0, LINKTYPE_ETHERNET, frame, len(frame), "client:eth0"),
               Record(1.5, LINKTYPE_ETHERNET, frame, len(frame), "router:wan"),
               Record(2.0, LINKTYPE_ETHERNET, frame, len(frame), "client:eth0")]
    path = tmp_path / "points.pcapng"
    write_pcapng(path, [(r, "") for r in records], "three packets, two points")
    assert [r.interface for r in read_pcap(path)] == [r.interface for r in records]
    rows = tshark_fields(path, "frame.interface_id", "frame.interface_name")
    assert rows == [["0", "client:eth0"], ["1", "router:wan"], ["0", "client:eth0"]]


def test_a_marker_frame_names_its_point_and_round() -> None:
    frame = marker_frame(b"\x02" * 6, 3, 7)
    assert len(frame) >= 60 and marker_of(frame) == (3, 7)
    assert marker_of(bytes(12) + b"\x08\x00" + bytes(46)) is None


@pytest.fixture
def nat(capture_rights):
    require(os.geteuid() == 0, "network namespaces need root")
    require(shutil.which("nft") is not None, "nft is not installed")
    with Topology() as topo:
        net = client_router_server(topo)
        server = topo.spawn(net.server, "protolab.net.counter_server",
                            ["0", net.server_if.address])
        yield topo, net, server.port


def points(net) -> list[CapturePoint]:
    return [CapturePoint(net.client_if.point, net.client_if.name, net.client.within),
            CapturePoint(net.inside.point, net.inside.name, net.router.within),
            CapturePoint(net.outside.point, net.outside.name, net.router.within),
            CapturePoint(net.server_if.point, net.server_if.name, net.server.within)]


def send_through(net, port: int) -> int:
    with net.client.socket() as sock:
        sock.settimeout(5)
        sock.sendto(REQUEST, (net.server_if.address, port))
        assert sock.recvfrom(512)[0].startswith(b"seq=1 total=5 ")
        return sock.getsockname()[1]


def test_one_datagram_seen_at_four_points_once_each_before_and_after_translation(
        nat, tmp_path) -> None:
    topo, net, port = nat
    path = tmp_path / "nat.pcapng"
    with MultiCapture(points(net), path, ports={port}) as cap:
        client_port = send_through(net, port)
    assert cap.summary.kernel_drops == 0
    requests = [(r.interface, r) for r in read_pcap(path) if r.data.endswith(REQUEST)]
    # a veth shows each frame once per end: sent on one, received on the other
    assert [i for i, _ in requests] == [p.label for p in points(net)]
    rows = tshark_fields(path, "frame.interface_name", "ip.src", "udp.srcport", "ip.dst",
                         "udp.dstport")
    assert {r[0] for r in rows} == {p.label for p in points(net)}
    sent = [r for r in rows if r[4] == str(port)]
    by_point = {r[0]: r for r in sent}
    assert by_point[net.client_if.point][1:3] == [net.client_if.address, str(client_port)]
    assert by_point[net.inside.point][1] == net.client_if.address  # not yet translated
    assert by_point[net.outside.point][1] == net.outside.address  # translated by the router
    assert by_point[net.server_if.point][1] == net.outside.address
    replies = [r for r in rows if r[2] == str(port)]
    assert [r[0] for r in replies] == [p.label for p in reversed(points(net))]
    assert replies[-1][3:5] == [net.client_if.address, str(client_port)]  # translated back
    # the markers that found the end of each point's frames are in no capture
    assert {t[0] for t in tshark_fields(path, "eth.type")} == {"0x0800"}


def test_inspect_shows_the_capture_point_of_each_row(nat, tmp_path) -> None:
    topo, net, port = nat
    path = tmp_path / "nat.pcapng"
    with MultiCapture(points(net)[::2], path, ports={port}):
        send_through(net, port)
    shown = run_cli("inspect", str(path), "--wide")
    assert shown.returncode == 0, shown.stderr
    lines = [x for x in shown.stdout.splitlines() if "UDP" in x]
    assert len(lines) == 4
    expected = [net.client_if.point, net.outside.point, net.outside.point, net.client_if.point]
    for line, point in zip(lines, expected, strict=True):
        assert f"@{point} " in line
    as_json = run_cli("inspect", str(path), "--json")
    assert as_json.returncode == 0
    assert as_json.stdout.count('"interface": "router:wan"') == 2
