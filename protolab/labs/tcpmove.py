"""Moving a live TCP connection to another address: the TCP lab's point, and the QUIC lab's
comparison (QUIC migrates, TCP answers RST).

A connection's next segment, with the right sequence numbers, sent from another source address
over a raw socket: the server's kernel looks it up by its 4-tuple, finds nothing, and answers RST.
Needs root (raw sockets) and a capture (the sequence numbers come from it).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from protolab.net.echo_server import EchoServer
from protolab.protocols.tcp import RST, TcpObserver
from protolab.protocols.tcp import Flow as TcpFlow
from protolab.wire.capture import Capture, capture_denied_reason


def connection_state(cap: Capture, local: tuple[str, int],
                      server: tuple[str, int]) -> TcpFlow:
    """Both kernels' state for one live connection, rebuilt from everything captured so far
    (its sequence numbers are what a forged segment must use, or avoid)."""
    cap.drain(rounds=1)
    observer = TcpObserver()
    for n, d in enumerate(cap.decoded(), 1):
        observer.feed(d, n)
    return observer.flows[frozenset((f"{local[0]}:{local[1]}", f"{server[0]}:{server[1]}"))]


def raw_send(packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(packet, ("127.0.0.1", 0))




@dataclass
class TcpMove:
    """What happened when a TCP connection's next segment came from another address."""

    attempted: bool  #: False without root (raw sockets) or capture
    rst_seen: bool = False  #: the server's kernel answered the moved segment with RST
    app_received: bytes = b""  #: what the server application got, all told
    new_source: str = ""


def move_tcp_connection(cap: Capture, new_host: str = "127.0.0.2") -> TcpMove:
    """Send a live connection's next segment, with the right sequence numbers, from `new_host`.

    The server's kernel looks the segment up by its 4-tuple, finds nothing, and answers RST: the
    state was keyed by the old address. (QUIC's migration, for comparison, is in the QUIC lab.)
    """
    if not cap.active or capture_denied_reason():
        return TcpMove(attempted=False)
    from scapy.layers.inet import IP, TCP

    with EchoServer() as echo:
        cap.add_port(echo.address[1])
        with socket.create_connection(echo.address) as c:
            local = c.getsockname()
            c.sendall(b"hello")
            c.recv(100)
            echo.wait_received(local, 5)
            flow = connection_state(cap, local, echo.address)
            with socket.socket() as probe:  # a free port on the new address
                probe.bind((new_host, 0))
                moved_port = probe.getsockname()[1]
            raw_send(bytes(IP(src=new_host, dst=echo.address[0]) / TCP(
                sport=moved_port, dport=echo.address[1], flags="PA",
                seq=flow.client.snd_nxt, ack=flow.client.rcv_nxt, window=65535) / b"moved"))
            rst = cap.wait_for(lambda d: d.tcp is not None and d.dst == new_host
                               and d.dport == moved_port and bool(d.tcp.flags & RST))
        return TcpMove(True, rst, b"".join(echo.received.values()), f"{new_host}:{moved_port}")


