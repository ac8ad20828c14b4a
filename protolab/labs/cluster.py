"""The lab's web app as a cluster, and a client that remembers what a browser would.

N backend processes of one design (`Variant`: memory, a store, jwt) behind a balancer (protolab's,
nginx or HAProxy); the lb lab, the litmus table (`protolab.labs.litmus`), the measured trade-offs
(`protolab.labs.tradeoffs`) and the rolling restart (`protolab.labs.rolling_restart`) all run
their workflows against it. Where state lives is the point of all four: a session in a backend's
memory dies with that process; one in a shared store lives as long as the store; a signed token
lives in the client (`Client` keeps cookies and the bearer token between requests). Each response
names the backend and the process that answered (`X-Backend`, `X-Backend-Pid`), so every claim
about who answered is read from the response itself (`Step`, `probe`).
"""

from __future__ import annotations

import http.client
import json
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from protolab.analysis.observe import Evidence
from protolab.labs.output import Out
from protolab.net import lifecycle
from protolab.net.lb import Policy, TlsFront, Upstream, start_balancer
from protolab.net.processes import ServerProcess, restartable_port
from protolab.net.stores import REDIS_PREFIX, open_store, redis_refusal
from protolab.protocols.webapp import Design

#: the keys the lab app writes to a store (`protolab.protocols.webapp`): what a wipe is counted by.
#: In a Redis each is under `REDIS_PREFIX` ("protolab:session:..."): the store counts and wipes only
#: those, never the database's other keys.
KEY_PREFIXES = ("session:", "cart:", "deny:")
LOGIN = {"user": "alice", "password": "wonderland"}


@dataclass(frozen=True)
class Variant:
    """A design with its store: memory, store (sqlite or redis), jwt."""

    design: Design
    store: str | None = None  #: store URL; None for memory

    @property
    def name(self) -> str:
        if self.design is Design.STORE:
            return f"store ({self.store.split(':', 1)[0]})"
        return self.design.value


class Cluster:
    """N backend processes of one design behind a load balancer (protolab's or nginx)."""

    def __init__(self, variant: Variant, policy: Policy, n: int = 3, lb: str = "protolab",
                 denylist: bool = False, log: Out | None = None, lab_endpoints: bool = False,
                 tls: TlsFront | None = None):
        self.variant = variant
        self._flags = (["--denylist"] if denylist else []) + \
            (["--lab-endpoints"] if lab_endpoints else [])
        self.procs: dict[str, ServerProcess] = {}
        self.upstreams: list[Upstream] = []
        self._dir = tempfile.mkdtemp(prefix="protolab-cluster-")
        try:
            self._secret = Path(self._dir) / "jwt.key"
            self._secret.write_bytes(secrets.token_bytes(32))
            for i in range(1, n + 1):
                proc = self._spawn(f"b{i}", restartable_port())
                self.procs[f"b{i}"] = proc
                self.upstreams.append(Upstream(f"b{i}", "127.0.0.1", proc.port))
            self.lb = start_balancer(lb, self.upstreams, policy, log=log, tls=tls)
        except BaseException:
            self.stop()
            raise
        self.address = self.lb.address

    def _spawn(self, backend_id: str, port: int) -> ServerProcess:
        args = ["--design", self.variant.design.value, "--id", backend_id, "--port", str(port),
                "--secret-file", str(self._secret), *self._flags]
        if self.variant.store:
            args += ["--store", self.variant.store]
        return ServerProcess("protolab.net.backend", args=args)

    def restart(self, backend_id: str, graceful: bool = False) -> tuple[int, int]:
        """Kill a backend process and start a new one on the same port: (old pid, new pid)."""
        old = self.procs[backend_id]
        port = old.port
        (old.terminate if graceful else old.kill)()
        new = self._spawn(backend_id, port)
        self.procs[backend_id] = new
        return old.pid, new.pid

    def stop(self) -> None:
        """Stop the balancer, kill and reap every backend, remove the key's directory: all of
        it, even when one step fails, and not cut short by a stop signal (`lifecycle`)."""
        with lifecycle.shielded():
            try:
                lb = getattr(self, "lb", None)
                if lb is not None:
                    lb.stop()
            finally:
                try:
                    for proc in self.procs.values():
                        proc.kill()
                finally:
                    shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a client that remembers what a browser would -------------------------------------------------


@dataclass
class Reply:
    """One response, as the client read it."""

    status: int  #: the HTTP status
    body: dict  #: the JSON body ({} when it was not a JSON object)
    backend: str  #: the X-Backend header: the backend that answered
    pid: int  #: the X-Backend-Pid header: the process that answered


class Client:
    """Keeps cookies (or the bearer token) between requests, like a browser or an app."""

    def __init__(self, address: tuple[str, int], source_ip: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.address = address
        self.source_ip = source_ip
        self.tls = tls  #: HTTPS with this context (a TLS-terminating balancer), else HTTP
        self.cookies: dict[str, str] = {}
        self.token: str | None = None
        self.last_port = 0  #: the source port of the last request's connection

    def request(self, method: str, path: str, fields: dict | None = None) -> Reply:
        conn = http.client.HTTPSConnection(*self.address, timeout=10, context=self.tls,
                                           source_address=(self.source_ip, 0)) \
            if self.tls is not None else http.client.HTTPConnection(
                *self.address, timeout=10, source_address=(self.source_ip, 0))
        headers = {"Content-Type": "application/json"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.connect()
            self.last_port = conn.sock.getsockname()[1]
            conn.request(method, path, body=json.dumps(fields or {}), headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            for value in resp.headers.get_all("Set-Cookie") or []:
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            if isinstance(body, dict) and "token" in body:
                self.token = body["token"]
            return Reply(resp.status, body if isinstance(body, dict) else {},
                         resp.headers.get("X-Backend", "?"),
                         int(resp.headers.get("X-Backend-Pid", "0") or 0))
        finally:
            conn.close()


def demo_workflow(cluster: Cluster) -> list[tuple[str, str, Reply]]:
    """login → add item → view cart → profile, through the balancer."""
    c = Client(cluster.address)
    steps = (("POST", "/login", LOGIN), ("POST", "/cart/items", {"item": "book"}),
             ("GET", "/cart", None), ("GET", "/profile", None))
    return [(method, path, c.request(method, path, body)) for method, path, body in steps]


# -- one request and what its response said -------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One request of a workflow and what its response said."""

    name: str  #: "login", "add item", "view cart"
    status: int  #: the HTTP status; 0: no response
    backend: str = "?"  #: the response's X-Backend: the backend that answered
    pid: int = 0  #: the response's X-Backend-Pid: the process that answered
    error: str = ""  #: the response's own `error` field, or why there was no response
    items: tuple[str, ...] = ()  #: the cart in the response
    via: str = "balancer"  #: "balancer", or the backend it was sent straight to

    def result(self) -> str:
        """What the response said: status, who answered (id and PID), its error."""
        if not self.status:
            return f"no response ({self.error})"
        via = "" if self.via == "balancer" else " (direct)"
        said = f": {self.error}" if self.error else ""
        return f"HTTP {self.status} from {self.backend} pid {self.pid}{via}{said}"

    def text(self) -> str:
        return f"{self.name}: {self.result()}"

    def evidence(self) -> Evidence:
        return Evidence(self.name, after=self.result())


def ask(client: Client, name: str, method: str, path: str, fields: dict | None = None,
        via: str = "balancer") -> Step:
    """One request as a `Step`: what its response said, or why there was none."""
    try:
        r = client.request(method, path, fields)
    except OSError as exc:
        return Step(name, 0, error=f"{type(exc).__name__}: {exc}", via=via)
    items = r.body.get("items", [])
    return Step(name, r.status, r.backend, r.pid, str(r.body.get("error", "")),
                tuple(map(str, items)) if isinstance(items, list) else (), via)


def direct(cluster: Cluster, backend_id: str, like: Client | None = None) -> Client:
    """A client for one backend's own port (bypassing the balancer), with `like`'s cookies."""
    c = Client(("127.0.0.1", cluster.procs[backend_id].port))
    if like is not None:
        c.cookies, c.token = dict(like.cookies), like.token
    return c


def probe(cluster: Cluster, backend_id: str) -> Step:
    """Ask a backend's port who answers there: its id and process ID, from the response."""
    return ask(direct(cluster, backend_id), f"{backend_id} pid", "GET", "/profile",
               via=backend_id)


# -- the designs chosen on the command line, and their stores -------------------------------------


def store_keys(url: str) -> int:
    """How many of the lab app's keys the store holds, counted by the store itself."""
    store = open_store(url)
    return sum(store.count(prefix) for prefix in KEY_PREFIXES)


def redis_urls(variants: Iterable[Variant]) -> list[str]:
    """The Redis stores among `variants`, each once."""
    return sorted({v.store for v in variants if v.store and v.store.startswith("redis://")})


def variants(names: list[str], redis_url: str, tmp: str) -> list[Variant]:
    """The designs named on the command line as Variants, their SQLite files in `tmp`."""
    made = []
    for name in names:
        if name == "memory":
            made.append(Variant(Design.MEMORY))
        elif name == "store-sqlite":
            made.append(Variant(Design.STORE, f"sqlite:{tmp}/sessions.db"))
        elif name == "store-redis":
            made.append(Variant(Design.STORE, redis_url))
        else:
            made.append(Variant(Design.JWT, f"sqlite:{tmp}/jwt-carts.db"))
    return made


def redis_problem(names: list[str], url: str, shared: bool = False) -> str:
    """Why store-redis, when among `names`, cannot use the Redis at `url`; "" when it can."""
    if "store-redis" not in names:
        return ""
    try:
        return redis_refusal(url, shared)
    except Exception as exc:  # noqa: BLE001 - any client error means: no usable Redis there
        return (f"no Redis at {url} ({type(exc).__name__}); start one "
                f"(redis-server --port 6379) or leave out store-redis")


@contextmanager
def own_keys_removed(variants: list[Variant]) -> Iterator[list[Variant]]:
    """Yields `variants`; on the way out (normal end, exception, Ctrl-C) deletes the keys this
    run wrote to each Redis: only protolab's (`REDIS_PREFIX`), never the database's others."""
    urls = redis_urls(variants)
    try:
        yield variants
    finally:
        for url in urls:
            try:
                open_store(url).wipe()
            except Exception as exc:  # noqa: BLE001 - the Redis may be gone: say so, go on
                print(f"protolab: could not remove its {REDIS_PREFIX}* keys from {url}: "
                      f"{type(exc).__name__}", flush=True)


def slug(text: str) -> str:
    """`text` as one word of an observation's key: "store (sqlite)" → "store-sqlite"."""
    return "-".join("".join(c if c.isalnum() else " " for c in text).split())
