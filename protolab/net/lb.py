"""A small HTTP load balancer, and real ones (nginx, HAProxy) configured for the same policies.

Where state lives: a round-robin balancer keeps a counter and nothing per client, so each request
may land on another backend. `sticky-cookie` puts the choice in a cookie the *client* carries,
set by the balancer on the first response with the name of the backend that served it (and so made
the session): protolab's `lbroute=b2`; HAProxy's `cookie SERVERID insert indirect nocache`, the
canonical form; nginx (open source, which has no `sticky` directive) a `route=b2` cookie it adds
itself from `$upstream_addr` and routes by with `map $cookie_route`. `ip-hash` derives the backend
from the client's address each time (nginx's `ip_hash` hashes the first three octets of an IPv4
address, HAProxy's `balance source` and this one all four, so clients on 127.0.0.2 and 127.0.0.3
can land apart). `cookie-hash` is a lesson, not a sticky policy: hashing the *session* cookie sends
every request of a session to one backend, but the login that created the session carried no
cookie yet, so it was balanced elsewhere, and the session is not where its cookie hashes to.
A backend can be drained: no new requests, wait for those in flight, which is how a rolling restart
avoids failed requests.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
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

from protolab.net import lifecycle
from protolab.net.server_thread import ServerThread
from protolab.net.tcp_relay import splice

ROUTE_COOKIE = "lbroute"  #: protolab's sticky cookie: the backend's name
NGINX_ROUTE_COOKIE = "route"  #: nginx's sticky cookie, added by the balancer
HAPROXY_COOKIE = "SERVERID"  #: HAProxy's sticky cookie (`cookie SERVERID insert`)
SESSION_COOKIE = "sessionId"  #: the backends' session cookie (`protolab.sessions.COOKIE`)
BALANCERS = ("protolab", "nginx", "haproxy")
#: the listen backlog, nginx's default on Linux (the kernel caps it at net.core.somaxconn). With 5,
#: socketserver's default, about 1 in 7 quick sequential connections found the accept queue full
#: and waited 1 s for its SYN to be retransmitted (RFC 6298 section 2: initial RTO of 1 s)
BACKLOG = 511


class BalancerError(RuntimeError):
    """A real balancer is not installed, or did not start (its own last word)."""


class Policy(Enum):
    ROUND_ROBIN = "round-robin"  #: the next backend in turn; no memory of clients
    STICKY_COOKIE = "sticky-cookie"  #: the client carries its backend's name in a cookie
    IP_HASH = "ip-hash"  #: the backend is a function of the client's IP address
    COOKIE_HASH = "cookie-hash"  #: the lesson: a hash of the session cookie, not of who made it


@dataclass(frozen=True)
class TlsFront:
    """TLS terminated at the balancer: its certificate and key (PEM files). The backends behind
    it still speak plain HTTP; the balancer marks the session cookie `Secure` on its way out
    (RFC 6265 section 4.1.2.5: the browser then sends it over TLS only)."""

    cert: str
    key: str


@dataclass
class Upstream:
    id: str
    host: str
    port: int
    draining: bool = False
    inflight: int = 0


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = BACKLOG


class LoadBalancer(ServerThread):
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
                try:
                    lb._handle(self.request, self.client_address)
                except OSError:
                    pass  # the client went away (reset, timed out): nobody to answer

        self._server = _Server(("127.0.0.1", port), Handler)
        self.address: tuple[str, int] = self._server.server_address
        # A short poll: `stop()` waits one poll interval for the loop (the default is 0.5 s).
        super().__init__(lambda: self._server.serve_forever(poll_interval=0.05))

    def _interrupt(self) -> None:
        self._server.shutdown()  # returns once serve_forever has

    def _close(self) -> None:
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
        else:  # a hash of the client's address, or of the session cookie ("" before login)
            key = client_ip if self.policy is Policy.IP_HASH \
                else _cookie(head, SESSION_COOKIE) or ""
            digest = hashlib.sha256(key.encode()).digest()
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
        except ValueError:  # RFC 9112 section 6.3: an invalid Content-Length is unrecoverable
            client.sendall(_status(400, "Bad Request"))
            return
        except OSError:
            return
        if not head:
            return
        if _is_upgrade(head):
            self._tunnel(client, head, body, peer)
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
                response = b""
            finally:
                with self._lock:
                    up.inflight -= 1
                    self._lock.notify_all()
            if not _STATUS_LINE.match(response):
                break  # RFC 9110 section 15.6.3: an invalid response from upstream is a 502
            extra = f"X-Served-By: {up.id}\r\n"
            if self.policy is Policy.STICKY_COOKIE and _cookie(head, ROUTE_COOKIE) != up.id:
                extra += f"Set-Cookie: {ROUTE_COOKIE}={up.id}; HttpOnly; SameSite=Lax; Path=/\r\n"
            status_end = response.index(b"\r\n") + 2
            client.sendall(response[:status_end] + extra.encode() + response[status_end:])
            if self.log:
                self.log(f"{_request_line(head)} → {up.id}")
            return
        client.sendall(_status(502, "Bad Gateway"))


    def _tunnel(self, client: socket.socket, head: bytes, body: bytes,
                peer: tuple[str, int]) -> None:
        """An upgrade (RFC 9110 section 7.8; a WebSocket, RFC 6455 section 4.1): the request goes
        to a backend as it came (its Connection: Upgrade kept); a 101 makes the connection a
        byte tunnel between client and backend until either ends it. The balancer keeps only the
        pair of sockets: what the tunnel carries is the backend's state."""
        for up in self.candidates(head, peer[0]):
            try:
                upstream = socket.create_connection((up.host, up.port), timeout=10)
            except ConnectionRefusedError:
                continue  # nothing was sent: safe to try the next backend
            except OSError:
                break
            with upstream:
                upstream.sendall(head + b"\r\n\r\n" + body)
                try:
                    answer, rest = _read_head(upstream)
                except OSError:
                    break
                if not _STATUS_LINE.match(answer):
                    break
                status_end = answer.index(b"\r\n") + 2
                client.sendall(answer[:status_end] + f"X-Served-By: {up.id}\r\n".encode()
                               + answer[status_end:] + rest)
                if self.log:
                    self.log(f"{_request_line(head)} → {up.id} (upgrade)")
                if answer[9:12] == b"101":
                    client.settimeout(None)
                    upstream.settimeout(None)
                    splice(client, upstream, wait=None)
                return
        client.sendall(_status(502, "Bad Gateway"))


def _is_upgrade(head: bytes) -> bool:
    """The request asks to switch protocols: an Upgrade header and `upgrade` among its
    Connection options (RFC 9110 section 7.8)."""
    headers = {k.strip().lower(): v.strip().lower() for k, _, v in
               (ln.partition(b":") for ln in head.split(b"\r\n")[1:])}
    return bool(headers.get(b"upgrade")) and b"upgrade" in headers.get(b"connection", b"")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """A response head (through its blank line) and the bytes that came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > 65536:
            return data, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


#: a response that can be relayed: an HTTP/1.x status line ending in CRLF (RFC 9112 section 4)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [0-9]{3}[^\r\n]*\r\n")


def _status(code: int, reason: str) -> bytes:
    return f"HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


def _request_line(head: bytes) -> str:
    """Method and target for the log, whatever bytes the client sent (not all are UTF-8)."""
    method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
    target = rest.rpartition(b" ")[0] if b" " in rest else rest
    return f"{method.decode('latin-1')} {target.decode('utf-8', 'backslashreplace')}"


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
            if not value.strip().isdigit():  # RFC 9110 section 8.6: 1*DIGIT
                raise ValueError("invalid Content-Length")
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


# -- nginx and HAProxy, for the same policies -----------------------------------------------------


def _nginx_sticky(upstreams: list[Upstream]) -> str:
    """Sticky sessions with open-source nginx: one upstream group per backend (the others as
    `backup`, used only when it fails), chosen by the `route` cookie; the first response from a
    backend sets `route=<its id>` (derived from `$upstream_addr`, whose last entry is the server
    that answered); a request already carrying the right cookie gets no new one."""
    groups, routes, served = [], [], []
    for up in upstreams:
        backups = "".join(f" server {o.host}:{o.port} backup;" for o in upstreams if o is not up)
        groups.append(f"    upstream route_{up.id} {{ server {up.host}:{up.port};{backups} }}")
        routes.append(f"        {up.id} route_{up.id};")
        addr = re.escape(f"{up.host}:{up.port}")
        served.append(f'        "~(^|, ){addr}$" {up.id};')
    nl = "\n"
    return f"""{nl.join(groups)}
    # the cookie names the backend; no cookie (a new client): round-robin over all of them
    map $cookie_{NGINX_ROUTE_COOKIE} $route_upstream {{
{nl.join(routes)}
        default protolab;
    }}
    # who answered: the last address in $upstream_addr (earlier ones failed)
    map $upstream_addr $served_route {{
{nl.join(served)}
        default "";
    }}
    # set the cookie only when it does not already name the backend that answered
    map "$cookie_{NGINX_ROUTE_COOKIE}=$served_route" $route_set_cookie {{
        "~^([^=]+)=\1$" "";
        "~=$" "";
        default "{NGINX_ROUTE_COOKIE}=$served_route; HttpOnly; SameSite=Lax; Path=/";
    }}
"""


NGINX_POLICY = {
    Policy.ROUND_ROBIN: "",
    Policy.IP_HASH: "ip_hash;",
    Policy.STICKY_COOKIE: "",  # round-robin for new clients; the route cookie does the rest
    Policy.COOKIE_HASH: f"hash $cookie_{SESSION_COOKIE} consistent;",
}


def nginx_config(upstreams: list[Upstream], policy: Policy, port: int, prefix: Path,
                 tls: TlsFront | None = None, websocket: bool = False) -> str:
    """An nginx.conf that balances `upstreams` with `policy` on 127.0.0.1:port (over TLS 1.3
    with `tls`); `websocket`: it also passes upgrades on (nginx proxies HTTP/1.0 and drops
    hop-by-hop headers unless told: HTTP/1.1, Upgrade and Connection set again) and holds idle
    tunnels for an hour."""
    servers = "\n".join(f"        server {u.host}:{u.port};  # {u.id}" for u in upstreams)
    user = "user root;\n" if os.geteuid() == 0 else ""
    sticky = policy is Policy.STICKY_COOKIE
    extra = _nginx_sticky(upstreams) if sticky else ""
    target = "$route_upstream" if sticky else "protolab"
    cookie = "\n            add_header Set-Cookie $route_set_cookie always;" if sticky else ""
    ssl = ""
    if tls is not None:
        ssl = (f" ssl;\n        ssl_certificate {tls.cert};\n        ssl_certificate_key "
               f"{tls.key};\n        ssl_protocols TLSv1.3")
        cookie += f"\n            proxy_cookie_flags {SESSION_COOKIE} secure;"
    upgrade = ("\n            proxy_http_version 1.1;\n            proxy_set_header Upgrade "
               "$http_upgrade;\n            proxy_set_header Connection $connection_upgrade;"
               "\n            proxy_read_timeout 1h;" if websocket else "")
    upgrade_map = ("    map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n"
                   if websocket else "")
    workers = 4096 if websocket else 256  # a tunnel holds two connections as long as it lives
    # One process, no master/worker pair: when protolab dies, the kernel's parent-death
    # signal stops all of nginx (a worker outlives a killed master otherwise).
    return f"""{user}master_process off;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {workers}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp_body;
    proxy_temp_path {prefix}/tmp_proxy;
    fastcgi_temp_path {prefix}/tmp_fcgi;
    uwsgi_temp_path {prefix}/tmp_uwsgi;
    scgi_temp_path {prefix}/tmp_scgi;
{upgrade_map}    upstream protolab {{
        {NGINX_POLICY[policy]}
{servers}
    }}
{extra}    server {{
        listen 127.0.0.1:{port} backlog={BACKLOG}{ssl};
        location / {{
            proxy_pass http://{target};
            proxy_next_upstream error timeout;{cookie}{upgrade}
            add_header X-Served-By $upstream_addr always;
        }}
    }}
}}
"""


HAPROXY_POLICY = {
    Policy.ROUND_ROBIN: "balance roundrobin",
    Policy.IP_HASH: "balance source",
    # new clients round-robin; then the SERVERID cookie HAProxy inserted names the server
    Policy.STICKY_COOKIE: "balance roundrobin\n"
                          f"    cookie {HAPROXY_COOKIE} insert indirect nocache",
    Policy.COOKIE_HASH: f"balance hash req.cook({SESSION_COOKIE})\n    hash-type consistent",
}


def haproxy_config(upstreams: list[Upstream], policy: Policy, port: int, prefix: Path,
                   tls_pem: Path | None = None, websocket: bool = False) -> str:
    """A haproxy.cfg that balances `upstreams` with `policy` on 127.0.0.1:port (over TLS 1.3
    with `tls_pem`, certificate and key in one file, as HAProxy's `crt` takes them);
    `websocket`: room for long-lived tunnels (HAProxy's http mode passes a 101 on by itself,
    then applies `timeout tunnel`)."""
    sticky = policy is Policy.STICKY_COOKIE
    servers = "\n".join(f"    server {u.id} {u.host}:{u.port}" + (f" cookie {u.id}" if sticky
                                                                    else "")
                        for u in upstreams)
    ssl = f" ssl crt {tls_pem} ssl-min-ver TLSv1.3" if tls_pem is not None else ""
    secure = (f"\n    http-response replace-header Set-Cookie '^({SESSION_COOKIE}=.*)$' "
              "'\\1; Secure'" if tls_pem is not None else "")
    tunnel = "\n    timeout tunnel 1h" if websocket else ""
    return f"""global
    maxconn {4096 if websocket else 256}
    pidfile {prefix}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s{tunnel}
    retries 2
    option http-server-close  # one request per backend connection: none idle, none reset
    option redispatch  # a sticky backend that is down: another one, and a new cookie
frontend lab
    bind 127.0.0.1:{port}{ssl}
    backlog {BACKLOG}
    default_backend protolab
backend protolab
    {HAPROXY_POLICY[policy]}
    http-response set-header X-Served-By %s{secure}
{servers}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listeners(port: int) -> set[str]:
    """Inodes of the TCP sockets in LISTEN (state 0A) on 127.0.0.1:port (/proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return {r[9] for r in rows if r[1] == local and r[3] == "0A"}


def _sockets_of(pid: int) -> set[str]:
    """Inodes of the sockets process `pid` holds (/proc/PID/fd: `socket:[INODE]`)."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


class _Child:
    """A real balancer (Debian package) as a child process in the foreground on a free loopback
    port, with its config in a temporary directory that `stop` removes."""

    name = ""
    package = ""

    def __init__(self, upstreams: list[Upstream], policy: Policy,
                 tls: TlsFront | None = None, websocket: bool = False) -> None:
        self.tls = tls
        self.websocket = websocket
        exe = shutil.which(self.name) or f"/usr/sbin/{self.name}"
        if not os.path.exists(exe):
            raise BalancerError(f"{self.name} is not installed "
                                    f"(Debian: apt-get install {self.package})")
        for attempt in range(3):  # the free port may be taken before the balancer binds it
            try:
                self._start(exe, upstreams, policy)
                return
            except BalancerError as exc:
                if "in use" not in str(exc) or attempt == 2:
                    raise

    def _start(self, exe: str, upstreams: list[Upstream], policy: Policy) -> None:
        self.prefix = Path(tempfile.mkdtemp(prefix=f"protolab-{self.name}-"))
        self.port = _free_port()
        self.address = ("127.0.0.1", self.port)
        self.config = self.make_config(upstreams, policy, self.port, self.prefix)
        conf = self.prefix / f"{self.name}.conf"
        conf.write_text(self.config)
        self._stderr = open(self.prefix / "stderr", "wb")  # noqa: SIM115 - closed in stop()
        try:
            # Its own process group (a terminal's Ctrl-C reaches only protolab, which stops
            # it in order) and the kernel's SIGKILL when protolab dies, even by kill -9.
            self.proc = subprocess.Popen(self.argv(exe, conf), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self._stderr,
                                         process_group=0,
                                         preexec_fn=lifecycle.set_parent_death_signal)
            lifecycle.track(self.proc)
        except OSError as exc:
            self._stderr.close()
            shutil.rmtree(self.prefix, ignore_errors=True)
            raise BalancerError(f"{self.name} did not start: {exc.strerror or exc}") from None
        self._wait_ready()

    def make_config(self, upstreams: list[Upstream], policy: Policy, port: int,
                    prefix: Path) -> str:
        raise NotImplementedError

    def argv(self, exe: str, conf: Path) -> list[str]:
        raise NotImplementedError

    def _wait_ready(self, timeout: float = 10.0) -> None:
        """Readiness, from the kernel's own record: a socket listening on our port is held by
        the child (a connect alone could reach whoever else took the port); or it exited, or
        another process listens there: say why."""
        deadline = time.monotonic() + timeout
        while True:
            listening = _listeners(self.port)
            if listening & _sockets_of(self.proc.pid):
                return
            if listening:
                self.stop()
                raise BalancerError(f"{self.name} did not start: 127.0.0.1:{self.port} is in "
                                    f"use by another process")
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = (self.prefix / "stderr").read_text(errors="replace").strip()
                lines = err.splitlines()
                first = next((ln for ln in lines if "ALERT" in ln or "emerg" in ln),
                             lines[-1] if lines else "(no message)")  # the cause, not the sum
                self.stop()
                raise BalancerError(f"{self.name} did not start: {first}")
            time.sleep(0.02)  # polling the kernel's table: readiness is checked, not assumed

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        lifecycle.untrack(self.proc)
        self._stderr.close()
        shutil.rmtree(self.prefix, ignore_errors=True)


class Nginx(_Child):
    """A real nginx (Debian package) in the foreground, with a config made by `nginx_config`."""

    name, package = "nginx", "nginx-light"

    def make_config(self, upstreams: list[Upstream], policy: Policy, port: int,
                    prefix: Path) -> str:
        return nginx_config(upstreams, policy, port, prefix, self.tls, self.websocket)

    def argv(self, exe: str, conf: Path) -> list[str]:
        return [exe, "-p", str(self.prefix), "-c", str(conf)]


class HAProxy(_Child):
    """A real HAProxy (Debian package) in the foreground (`-db`), config from `haproxy_config`."""

    name, package = "haproxy", "haproxy"

    def make_config(self, upstreams: list[Upstream], policy: Policy, port: int,
                    prefix: Path) -> str:
        pem = None
        if self.tls is not None:  # HAProxy's `crt`: the certificate and its key in one file
            pem = prefix / "front.pem"
            pem.write_text(Path(self.tls.cert).read_text() + Path(self.tls.key).read_text())
        return haproxy_config(upstreams, policy, port, prefix, pem, self.websocket)

    def argv(self, exe: str, conf: Path) -> list[str]:
        return [exe, "-db", "-f", str(conf)]


Balancer = LoadBalancer | Nginx | HAProxy


def start_balancer(kind: str, upstreams: list[Upstream], policy: Policy,
                   log: Callable[[str], None] | None = None,
                   tls: TlsFront | None = None, websocket: bool = False) -> Balancer:
    """A running balancer of `kind` (one of `BALANCERS`) in front of `upstreams`; with `tls`,
    terminating TLS (nginx and HAProxy only); `websocket`: configured to pass upgrades on and
    hold long-lived tunnels (protolab's always does)."""
    if kind == "nginx":
        return Nginx(upstreams, policy, tls, websocket)
    if kind == "haproxy":
        return HAProxy(upstreams, policy, tls, websocket)
    if kind != "protolab":
        raise ValueError(f"unknown balancer {kind!r} (one of {', '.join(BALANCERS)})")
    if tls is not None:
        raise ValueError("protolab's balancer speaks plain HTTP: TLS in front is nginx or "
                         "haproxy")
    return LoadBalancer(upstreams, policy, log=log).start()
