"""The TCP lab's echo server: it echoes each read back upper-cased, and keeps what it was given.

Where state lives: each accepted connection is an entry in this host's kernel
(protolab.protocols.tcp); the echo server's application keeps only what it received (so a test can
ask whether a forged segment ever reached it).

`python -m protolab.net.echo_server [PORT [HOST]]` runs it as its own process (on 127.0.0.1
unless HOST is given: a host's address when it runs inside a namespace) and prints `ready PORT`
once it listens, so a demo can kill the process and watch the connection die.
"""

from __future__ import annotations

import socket
import sys
import threading

from protolab.net import child
from protolab.net.server_thread import TcpServerThread


class EchoServer(TcpServerThread):
    """Echoes each read back upper-cased; `received[peer]` is every byte the app was given."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.received: dict[tuple[str, int], bytes] = {}
        self.data_event = threading.Condition()

    def serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        while data := conn.recv(65536):
            with self.data_event:
                self.received[peer] = self.received.get(peer, b"") + data
                self.data_event.notify_all()
            conn.sendall(data.upper())
        with self.data_event:
            self.received.setdefault(peer, b"")
            self.data_event.notify_all()

    def wait_received(self, peer: tuple[str, int], size: int, timeout: float = 2.0) -> bool:
        with self.data_event:
            return self.data_event.wait_for(lambda: len(self.received.get(peer, b"")) >= size,
                                            timeout)


def main(argv: list[str]) -> int:
    """The echo server as its own process, until killed or SIGTERM/SIGINT (`child.serve`)."""
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    return child.serve(lambda port: EchoServer(host, port).start(), argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
