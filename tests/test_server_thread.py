"""The one lifecycle of the in-process servers and the one "ready PORT" handshake."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from protolab.net.child import announce_ready, ready_port
from protolab.net.echo_server import EchoServer
from protolab.net.fault_proxy import UdpFaultProxy
from protolab.net.lb import LoadBalancer, Policy
from protolab.net.server_thread import ServerThread
from protolab.net.udpnet import UdpServerThread
from protolab.protocols.counter import CounterServer
from protolab.protocols.faults import FaultPlan

MAKERS: dict[str, Callable[[], ServerThread]] = {
    "udp": lambda: UdpServerThread(CounterServer(pid=1)),
    "tcp": EchoServer,
    "lb": lambda: LoadBalancer([], Policy.ROUND_ROBIN),
    "fault proxy": lambda: UdpFaultProxy(("127.0.0.1", 9), FaultPlan(drop=0.5)),
}
DATAGRAMS = {"udp", "fault proxy"}  #: the kinds that listen on a UDP port


@pytest.mark.parametrize("kind", MAKERS)
def test_a_server_stops_once_started_or_not_and_frees_its_port(kind: str) -> None:
    for started in (True, False):
        server = MAKERS[kind]()
        if started:
            server.start()
        server.stop()
        server.stop()  # a second stop does nothing
        sock_type = socket.SOCK_DGRAM if kind in DATAGRAMS else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, sock_type) as s:
            s.bind(server.address)  # the port is free again


def test_with_runs_the_server_and_stops_it() -> None:
    with EchoServer() as server, socket.create_connection(server.address, timeout=2) as c:
        c.sendall(b"hi")
        assert c.recv(16) == b"HI"
    assert server.listener.fileno() == -1


def test_the_handshake_is_read_as_it_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    announce_ready(4242)
    line = capsys.readouterr().out
    assert line == "ready 4242\n"
    assert ready_port(line) == 4242
    for said in ("", "ready", "ready x", "started 1", "ready 1 2", "Traceback (most recent"):
        assert ready_port(said) is None
