"""The application as an HTTP backend process (stdlib `http.server`), one design per process.

Where state lives: in `protolab.sessions`; this adapter only moves bytes. Each response names the
backend and its process ID (`X-Backend`, `X-Backend-Pid`), so a litmus test can prove that a restart
really was a new process.

    python -m protolab.backend --design memory|store|jwt --id b1 [--port P] [--store URL]
                               [--secret-file F] [--denylist] [--lab-endpoints]

prints `ready PORT` once it listens; SIGTERM stops it after the requests in flight.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from protolab.sessions import App, Design, Request, open_store


def make_server(app: App, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 65536)) if length > 0 else b""
            req = Request(self.command, self.path,
                          {k.lower(): v for k, v in self.headers.items()}, body)
            resp = app.handle(req)
            payload = resp.encode_body()
            self.send_response(resp.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Backend", app.backend)
            self.send_header("X-Backend-Pid", str(os.getpid()))
            for name, value in resp.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # the load balancer prints who served what

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str]) -> int:
    from protolab import lifecycle

    lifecycle.child_init()
    p = argparse.ArgumentParser(prog="python -m protolab.backend")
    p.add_argument("--design", choices=[d.value for d in Design], required=True)
    p.add_argument("--id", default="b1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--store", default=None)
    p.add_argument("--secret-file")
    p.add_argument("--denylist", action="store_true")
    p.add_argument("--lab-endpoints", action="store_true")
    args = p.parse_args(argv)
    design = Design(args.design)
    store = open_store(None if design is Design.MEMORY else args.store)
    secret = open(args.secret_file, "rb").read() if args.secret_file else b""
    app = App(design, store, args.id, secret=secret, denylist=args.denylist,
              lab_endpoints=args.lab_endpoints)
    server = make_server(app, port=args.port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready {server.server_address[1]}", flush=True)
    lifecycle.wait_for_stop()  # SIGTERM, SIGINT, SIGHUP: quietly, after the requests in flight
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
