"""`python -m protolab.net.tls_backend --cert C --key K ID:PORT [ID:PORT ...]`: TLS 1.3 backends
whose session tickets are sealed under one key.

Where state lives: OpenSSL makes a random ticket key when the server's `SSLContext` is created, and
keeps it in that context, in this process's memory; with stateless tickets (OpenSSL 3's default
for TLS 1.3) that key is all the server keeps: its session cache stays empty. The first ID:PORT is
served by this process; every further one by a process forked from it *after* the context was made,
so all of them hold the same ticket key and open each other's tickets. Backends started as separate
commands each make their own context, and key. A restart is a new process: a new key.

Each connection: the handshake, one line from the client, one line back naming who answered and
what the server holds: `backend=b1 port=P pid=123 resumed=yes sessions_held=0`. It prints
`ready PORT` (the first port) once every port is bound.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys

from protolab.net import child, lifecycle
from protolab.net.server_thread import TcpServerThread


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS 1.3-only server context; creating it creates its ticket key (OpenSSL)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def answer(backend: str, port: int, resumed: bool, held: int) -> bytes:
    return (f"backend={backend} port={port} pid={os.getpid()} resumed="
            f"{'yes' if resumed else 'no'} sessions_held={held}\n").encode()


def parse_answer(line: bytes) -> dict[str, str]:
    """`answer`'s line as a dict; {} when it is not one."""
    fields = dict(w.split("=", 1) for w in line.decode("ascii", "replace").split() if "=" in w)
    return fields if {"backend", "pid", "resumed"} <= fields.keys() else {}


class TlsBackend(TcpServerThread):
    """One backend: accepts on `listener`, speaks TLS with `ctx`."""

    def __init__(self, backend: str, ctx: ssl.SSLContext, listener: socket.socket) -> None:
        self.backend, self.ctx = backend, ctx
        super().__init__()
        self.listener.close()
        self.listener, self.address = listener, listener.getsockname()

    def serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        conn.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except ssl.SSLError:
            return
        with tls:
            tls.recv(1024)
            held = self.ctx.session_stats()["number"]
            tls.sendall(answer(self.backend, self.address[1], tls.session_reused, held))


def _listen(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="protolab.net.tls_backend")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("serve", nargs="+", metavar="ID:PORT")
    args = p.parse_args(argv)
    lifecycle.child_init()
    ctx = server_context(args.cert, args.key)
    pairs = [(s.split(":")[0], _listen(int(s.split(":")[1]))) for s in args.serve]
    for backend, listener in pairs[1:]:
        if os.fork() == 0:  # the child: same context, same ticket key; dies with this process
            lifecycle.set_parent_death_signal()
            for _, other in pairs:
                if other is not listener:
                    other.close()
            TlsBackend(backend, ctx, listener).start()
            lifecycle.child_init()
            lifecycle.wait_for_stop()
            os._exit(0)
        listener.close()
    backend, listener = pairs[0]
    TlsBackend(backend, ctx, listener).start()
    child.announce_ready(listener.getsockname()[1])
    lifecycle.wait_for_stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
