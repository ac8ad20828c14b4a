"""The application as an HTTP backend process (stdlib `http.server`), one design per process.

Where state lives: in `protolab.protocols.webapp`; this adapter only moves bytes. Each response
names the backend and its process ID (`X-Backend`, `X-Backend-Pid`), so a litmus test can prove
that a restart really was a new process.

    python -m protolab.net.backend --design memory|store|jwt --id b1 [--port P] [--store URL]
                               [--secret-file F] [--denylist] [--lab-endpoints]

prints `ready PORT` once it listens; SIGTERM stops it after the requests in flight.

Bodies: a JSON object (`Content-Type: application/json`) or a form
(`application/x-www-form-urlencoded`, what `curl -d 'user=alice&password=wonderland'` sends);
anything else is 415 with the reason. A body is framed by Content-Length only (RFC 9112 section 6):
a length that is not a number is 400, a body over 64 KB is 413 and the connection is closed (its
rest is never read as another request), Transfer-Encoding is 501.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from protolab.net.stores import open_store
from protolab.protocols.webapp import App, Design, Request, Response

MAX_BODY = 65536  #: the largest request body read; a longer one is answered 413 and the
#: connection closed, so its rest is never parsed as another request
LINGER_BYTES = 1 << 20  #: after a refusal, read and drop at most this much of the unread body...
LINGER_SECONDS = 2.0  #: ...for at most this long, so the client reads the answer, not an RST
_DIGITS = re.compile(r"[0-9]{1,18}")


def framing_problem(headers: Message) -> tuple[int, str] | None:
    """Why the request's body cannot be framed or is too big: (status, reason), or None.
    RFC 9112 section 6: a body's length comes from Content-Length (one decimal number) or
    Transfer-Encoding; this server reads only Content-Length."""
    if headers.get("Transfer-Encoding"):
        return 501, "Transfer-Encoding is not supported here: send the body with Content-Length"
    values = {v.strip() for v in headers.get_all("Content-Length") or []}
    if not values:
        return None
    if len(values) > 1:
        return 400, "several different Content-Length values (RFC 9112 section 6.3)"
    [value] = values
    if not _DIGITS.fullmatch(value):
        return 400, f"Content-Length {value[:40]!r} is not a number of bytes (RFC 9110 8.6)"
    if int(value) > MAX_BODY:
        return 413, f"a body of {int(value)} bytes is over this server's {MAX_BODY}-byte limit"
    return None


class LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    #: listen(2) backlog: the stdlib's default is 5, so a burst of connections overflows the
    #: accept queue and each dropped SYN waits a retransmission (1 s); the kernel caps this at
    #: net.core.somaxconn.
    request_queue_size = socket.SOMAXCONN


class LabHandler(BaseHTTPRequestHandler):
    """One request of the lab app: framing checked, `app` answers, the backend named."""

    protocol_version = "HTTP/1.1"
    app: App  #: set by `make_server` on a subclass per server

    def handle_expect_100(self) -> bool:
        # RFC 9110 section 10.1.1: refuse before the client sends a body we would not read.
        problem = framing_problem(self.headers)
        if problem:
            self._refuse(*problem)
            return False
        return super().handle_expect_100()

    def _serve(self) -> None:
        problem = framing_problem(self.headers)
        if problem:
            self._refuse(*problem)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(self.command, self.path,
                      {k.lower(): v for k, v in self.headers.items()}, body)
        try:
            resp = self.app.handle(req, time.time())
        except Exception as exc:  # noqa: BLE001 - one line, and the client gets an answer
            print(f"backend {self.app.backend}: {self.command} {self.path[:80]!r}: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            resp = Response(500, {"error": f"internal error ({type(exc).__name__})"})
        self._send(resp)

    def _send(self, resp: Response, close: bool = False) -> None:
        payload = resp.encode_body()
        self.send_response(resp.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Backend", self.app.backend)
        self.send_header("X-Backend-Pid", str(os.getpid()))
        for name, value in resp.headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def _refuse(self, status: int, reason: str) -> None:
        """Answer and close: the unread body must never be parsed as another request."""
        self._send(Response(status, {"error": reason}), close=True)
        self.wfile.flush()
        try:  # lingering close: drop what the client still sends, then close
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            left = LINGER_BYTES
            while left > 0 and (chunk := self.connection.recv(min(65536, left))):
                left -= len(chunk)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the load balancer prints who served what


def make_server(app: App, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("Handler", (LabHandler,), {"app": app})
    return LabHTTPServer((host, port), handler)


def serve(design: Design, backend_id: str = "b1", port: int = 0, store: str | None = None,
          secret_file: str | None = None, denylist: bool = False,
          lab_endpoints: bool = False) -> int:
    """This process as one backend: say `ready PORT`, serve until SIGTERM/SIGINT/SIGHUP."""
    from protolab.net import lifecycle
    from protolab.net.child import announce_ready

    lifecycle.child_init()
    secret = open(secret_file, "rb").read() if secret_file else b""
    app = App(design, open_store(None if design is Design.MEMORY else store), backend_id,
              secret=secret, denylist=denylist, lab_endpoints=lab_endpoints)
    server = make_server(app, port=port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    announce_ready(server.server_address[1])
    lifecycle.wait_for_stop()  # SIGTERM, SIGINT, SIGHUP: quietly, after the requests in flight
    server.shutdown()
    server.server_close()
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m protolab.net.backend")
    p.add_argument("--design", choices=[d.value for d in Design], required=True)
    p.add_argument("--id", default="b1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--store", default=None)
    p.add_argument("--secret-file")
    p.add_argument("--denylist", action="store_true")
    p.add_argument("--lab-endpoints", action="store_true")
    args = p.parse_args(argv)
    return serve(Design(args.design), args.id, args.port, args.store, args.secret_file,
                 args.denylist, args.lab_endpoints)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
