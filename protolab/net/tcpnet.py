"""Small stdlib TCP servers for the TCP lab: an echo server and a stateless HTTP/1.1 server.

Where state lives: each accepted connection is an entry in this host's kernel
(protolab.protocols.tcp); the echo server's application keeps only what it received (so a test can
ask whether a forged segment ever reached it). The HTTP server keeps nothing at all: every request
carries its own state, and the server closes the connection after each response.

`python -m protolab.net.tcpnet [PORT]` runs the echo server as its own process and prints
`ready PORT` once it listens, so a demo can kill the process and watch the connection die.
"""

from __future__ import annotations

import socket
import sys
import threading
from urllib.parse import parse_qs, urlsplit

from protolab.net import child
from protolab.net.server_thread import ServerThread


class _ThreadServer(ServerThread):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(16)
        self.address: tuple[str, int] = self.listener.getsockname()
        self._threads: list[threading.Thread] = []
        super().__init__(self._accept_loop)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve_guarded, args=(conn, peer), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve_guarded(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with conn:
            try:
                self.serve(conn, peer)
            except OSError:
                pass  # the peer reset or went away: nothing to keep

    def serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # accept() returns with an error
        except OSError:
            pass

    def _close(self) -> None:
        self.listener.close()
        for t in self._threads:
            t.join(2)


class EchoServer(_ThreadServer):
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


class StatelessHttpServer(_ThreadServer):
    """`GET /cart?items=a,b&add=c` answers with the new cart and a link carrying it; then closes.

    The cart is in the URL, not in the server: any server process, on any connection, gives the
    same answer to the same request.
    """

    def serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 16384:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or parts[0] != "GET":
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            return
        query = parse_qs(urlsplit(parts[1]).query)
        items = [i for i in query.get("items", [""])[0].split(",") if i] + query.get("add", [])
        body = (f"cart: {', '.join(items) or '(empty)'}\n"
                f"next: /cart?items={','.join(items)}\n").encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: " + str(len(body)).encode() +
                     b"\r\nConnection: close\r\n\r\n" + body)
        conn.shutdown(socket.SHUT_WR)  # RFC 9112 section 9.6: close after "Connection: close"


def http_get(address: tuple[str, int], path: str,
             timeout: float = 2.0) -> tuple[str, dict[str, str], str, tuple[str, int]]:
    """One HTTP/1.1 request on a new connection that asks to be kept alive.

    Returns (status line, headers, body, the client's own address: the 4-tuple's half).
    """
    with socket.create_connection(address, timeout=timeout) as s:
        local = s.getsockname()
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
                  f"Connection: keep-alive\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return lines[0], headers, body.decode(), local


def main(argv: list[str]) -> int:
    """The echo server as its own process, until killed or SIGTERM/SIGINT (`child.serve`)."""
    return child.serve(lambda port: EchoServer(port=port).start(), argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
