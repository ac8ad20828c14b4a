"""The TCP lab's stateless HTTP/1.1 server, and a client for one request on a new connection.

Where state lives: each connection is an entry in both kernels while it lasts; the server keeps
nothing at all: every request carries its own state (the cart is in the URL), and the server closes
the connection after each response (RFC 9112 section 9.6), whatever the client asked.
"""

from __future__ import annotations

import socket
from urllib.parse import parse_qs, urlsplit

from protolab.net.server_thread import TcpServerThread


class StatelessHttpServer(TcpServerThread):
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
