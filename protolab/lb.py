"""A small HTTP load balancer, and nginx configured for the same policies.

Where state lives: a round-robin balancer keeps a counter and nothing per client, so each request
may land on another backend; `sticky-cookie` puts the choice in a cookie the *client* carries
(`lbroute=b2`, as HAProxy's "cookie insert" does); `ip-hash` derives it from the client's address
each time (nginx's `ip_hash` hashes the first three octets of an IPv4 address; this one hashes all
four, so clients on 127.0.0.2 and 127.0.0.3 can land apart). A backend can be drained: no new
requests, wait for those in flight, which is how a rolling restart avoids failed requests.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

ROUTE_COOKIE = "lbroute"


class Policy(Enum):
    ROUND_ROBIN = "round-robin"  #: the next backend in turn; no memory of clients
    STICKY_COOKIE = "sticky-cookie"  #: the client carries its backend's name in a cookie
    IP_HASH = "ip-hash"  #: the backend is a function of the client's IP address


@dataclass
class Upstream:
    id: str
    host: str
    port: int
    draining: bool = False
    inflight: int = 0


class LoadBalancer:
    """Threaded HTTP/1.1 proxy; one request per client connection (`Connection: close`)."""

    def __init__(self, upstreams: list[Upstream], policy: Policy,
                 log: Callable[[str], None] | None = None, port: int = 0) -> None:
        self.upstreams = upstreams
        self.policy = policy
        self.log = log
        self._rr = itertools.count()
        self._lock = threading.Condition()
        lb = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                lb._handle(self.request, self.client_address)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.address: tuple[str, int] = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LoadBalancer:
        self._thread.start()
        return self

    def __enter__(self) -> LoadBalancer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- choosing ---------------------------------------------------------------------------

    def candidates(self, head: bytes, client_ip: str) -> list[Upstream]:
        """Backends to try, in order: the policy's choice first, then the rest."""
        live = [u for u in self.upstreams if not u.draining]
        if not live:
            return []
        if self.policy is Policy.ROUND_ROBIN:
            start = next(self._rr) % len(live)
        elif self.policy is Policy.STICKY_COOKIE:
            wanted = _cookie(head, ROUTE_COOKIE)
            ids = [u.id for u in live]
            start = ids.index(wanted) if wanted in ids else next(self._rr) % len(live)
        else:
            digest = hashlib.sha256(client_ip.encode()).digest()
            start = int.from_bytes(digest[:4], "big") % len(self.upstreams)
            chosen = self.upstreams[start]
            start = live.index(chosen) if chosen in live else start % len(live)
        return live[start:] + live[:start]

    def drain(self, upstream_id: str, timeout: float = 10.0) -> bool:
        """Stop sending new requests to a backend and wait until none are in flight."""
        up = next(u for u in self.upstreams if u.id == upstream_id)
        with self._lock:
            up.draining = True
            return self._lock.wait_for(lambda: up.inflight == 0, timeout)

    def undrain(self, upstream_id: str, port: int | None = None) -> None:
        up = next(u for u in self.upstreams if u.id == upstream_id)
        with self._lock:
            if port is not None:
                up.port = port
            up.draining = False

    # -- proxying ---------------------------------------------------------------------------

    def _handle(self, client: socket.socket, peer: tuple[str, int]) -> None:
        client.settimeout(10)
        try:
            head, body = _read_request(client)
        except (OSError, ValueError):
            return
        if not head:
            return
        for up in self.candidates(head, peer[0]):
            with self._lock:
                if up.draining:
                    continue
                up.inflight += 1
            try:
                response = _forward(up, head, body)
            except ConnectionRefusedError:
                continue  # nothing was sent: safe to try the next backend
            except OSError:
                response = None
            finally:
                with self._lock:
                    up.inflight -= 1
                    self._lock.notify_all()
            if response is None:
                break
            extra = f"X-Served-By: {up.id}\r\n"
            if self.policy is Policy.STICKY_COOKIE and _cookie(head, ROUTE_COOKIE) != up.id:
                extra += f"Set-Cookie: {ROUTE_COOKIE}={up.id}; HttpOnly; SameSite=Lax; Path=/\r\n"
            status_end = response.index(b"\r\n") + 2
            client.sendall(response[:status_end] + extra.encode() + response[status_end:])
            if self.log:
                self.log(f"{head.split(b' ', 2)[0].decode()} "
                         f"{head.split(b' ', 2)[1].decode()} → {up.id}")
            return
        client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                       b"Connection: close\r\n\r\n")


def _read_request(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
        if len(data) > 65536:
            raise ValueError("request head too large")
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = min(int(value.strip()), 1 << 20)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body[:length]


def _forward(up: Upstream, head: bytes, body: bytes) -> bytes:
    lines = [ln for ln in head.split(b"\r\n")
             if not ln.lower().startswith((b"connection:", b"keep-alive:"))]
    with socket.create_connection((up.host, up.port), timeout=10) as s:
        s.sendall(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _cookie(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


# -- nginx, for the same policies -----------------------------------------------------------------


NGINX_POLICY = {
    Policy.ROUND_ROBIN: "",
    Policy.IP_HASH: "ip_hash;",
    Policy.STICKY_COOKIE: "hash $cookie_sessionId consistent;",
}


def nginx_config(upstreams: list[Upstream], policy: Policy, port: int, prefix: Path) -> str:
    """An nginx.conf that balances `upstreams` with `policy` on 127.0.0.1:port."""
    servers = "\n".join(f"        server {u.host}:{u.port};  # {u.id}" for u in upstreams)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp_body;
    proxy_temp_path {prefix}/tmp_proxy;
    fastcgi_temp_path {prefix}/tmp_fcgi;
    uwsgi_temp_path {prefix}/tmp_uwsgi;
    scgi_temp_path {prefix}/tmp_scgi;
    upstream protolab {{
        {NGINX_POLICY[policy]}
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://protolab;
            proxy_next_upstream error timeout;
            add_header X-Served-By $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """A real nginx (Debian package) in the foreground, with a config made by `nginx_config`."""

    def __init__(self, upstreams: list[Upstream], policy: Policy) -> None:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(exe):
            raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx-light)")
        self.prefix = Path(tempfile.mkdtemp(prefix="protolab-nginx-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.address = ("127.0.0.1", self.port)
        conf = self.prefix / "nginx.conf"
        conf.write_text(nginx_config(upstreams, policy, self.port, self.prefix))
        self.config = conf.read_text()
        self.proc = subprocess.Popen([exe, "-p", str(self.prefix), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:  # readiness: nginx accepts connections on its port
            try:
                socket.create_connection(self.address, timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace").strip()
                    self.stop()
                    last = (err.splitlines() or ["(no message)"])[-1]
                    raise RuntimeError(f"nginx did not start: {last}") from None
                time.sleep(0.02)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.prefix, ignore_errors=True)
