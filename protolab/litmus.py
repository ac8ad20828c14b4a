"""The litmus test, measured: restart things mid-workflow and see whose workflow goes on.

Where state lives decides every verdict: a session in a backend's memory dies with that process (or
is simply elsewhere when the balancer sends you to another backend); a session in a shared store
survives any backend restart and dies with the store; a signed token survives everything that does
not hold it, and the cart beside it lives in the store. Each verdict here comes from a real
workflow against real processes, and each restart is checked by its new process ID.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from protolab.lb import LoadBalancer, Nginx, Policy, Upstream
from protolab.proc import ServerProcess
from protolab.sessions import Design, open_store

if TYPE_CHECKING:
    from protolab.capture import CaptureSummary

Out = Callable[[str], None]
DISRUPTIONS = ("switch backend", "restart serving backend", "restart all backends",
               "wipe the store")
CONTINUED, LOGGED_OUT, CART_LOST, NOT_APPLICABLE = ("workflow continued", "logged out",
                                                    "cart lost", "-")


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
                 denylist: bool = False, log: Out | None = None, lab_endpoints: bool = False):
        self.variant = variant
        self._dir = tempfile.mkdtemp(prefix="protolab-cluster-")
        self._secret = Path(self._dir) / "jwt.key"
        self._secret.write_bytes(secrets.token_bytes(32))
        self._flags = (["--denylist"] if denylist else []) + \
            (["--lab-endpoints"] if lab_endpoints else [])
        self.procs: dict[str, ServerProcess] = {}
        self.upstreams: list[Upstream] = []
        try:
            for i in range(1, n + 1):
                proc = self._spawn(f"b{i}", 0)
                self.procs[f"b{i}"] = proc
                self.upstreams.append(Upstream(f"b{i}", "127.0.0.1", proc.port))
            self.lb = Nginx(self.upstreams, policy) if lb == "nginx" else \
                LoadBalancer(self.upstreams, policy, log=log).start()
        except BaseException:
            self.stop()
            raise
        self.address = self.lb.address

    def _spawn(self, backend_id: str, port: int) -> ServerProcess:
        args = ["--design", self.variant.design.value, "--id", backend_id, "--port", str(port),
                "--secret-file", str(self._secret), *self._flags]
        if self.variant.store:
            args += ["--store", self.variant.store]
        return ServerProcess("protolab.backend", args=args)

    def restart(self, backend_id: str, graceful: bool = False) -> tuple[int, int]:
        """Kill a backend process and start a new one on the same port: (old pid, new pid)."""
        old = self.procs[backend_id]
        port = old.port
        (old.terminate if graceful else old.kill)()
        new = self._spawn(backend_id, port)
        self.procs[backend_id] = new
        return old.pid, new.pid

    def stop(self) -> None:
        lb = getattr(self, "lb", None)
        if lb is not None:
            lb.stop()
        for proc in self.procs.values():
            proc.kill()
        for f in Path(self._dir).iterdir():
            f.unlink()
        os.rmdir(self._dir)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a client that remembers what a browser would -------------------------------------------------


@dataclass
class Reply:
    status: int
    body: dict
    backend: str
    pid: int


class Client:
    """Keeps cookies (or the bearer token) between requests, like a browser or an app."""

    def __init__(self, address: tuple[str, int], source_ip: str = "127.0.0.1") -> None:
        self.address = address
        self.source_ip = source_ip
        self.cookies: dict[str, str] = {}
        self.token: str | None = None

    def request(self, method: str, path: str, fields: dict | None = None) -> Reply:
        conn = http.client.HTTPConnection(*self.address, timeout=10,
                                          source_address=(self.source_ip, 0))
        headers = {"Content-Type": "application/json"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
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
    steps = (("POST", "/login", {"user": "alice", "password": "wonderland"}),
             ("POST", "/cart/items", {"item": "book"}), ("GET", "/cart", None),
             ("GET", "/profile", None))
    return [(method, path, c.request(method, path, body)) for method, path, body in steps]


# -- the litmus table -----------------------------------------------------------------------------


@dataclass
class Outcome:
    variant: str
    policy: str
    disruption: str
    verdict: str
    served: list[str] = field(default_factory=list)  #: backend per request, in order
    restarts: list[tuple[str, int, int]] = field(default_factory=list)  #: (id, old, new pid)
    pids_after: dict[str, int] = field(default_factory=dict)  #: pid seen per backend after


def _verdict(reply: Reply, item: str) -> str:
    if reply.status == 401:
        return LOGGED_OUT
    if reply.status == 200 and item in reply.body.get("items", []):
        return CONTINUED
    return CART_LOST if reply.status == 200 else f"HTTP {reply.status}"


def run_workflow(cluster: Cluster, disruption: str, source_ip: str = "127.0.0.2") -> Outcome:
    """login → add item → DISRUPTION → view cart, through the balancer."""
    out = Outcome(cluster.variant.name, "", disruption, "")
    c = Client(cluster.address, source_ip)
    item = f"book-{secrets.token_hex(3)}"
    login = c.request("POST", "/login", {"user": "alice", "password": "wonderland"})
    added = c.request("POST", "/cart/items", {"item": item})
    out.served += [login.backend, added.backend]
    if login.status != 200 or added.status != 200:
        out.verdict = LOGGED_OUT if added.status == 401 else f"HTTP {added.status}"
        return out
    if disruption == "switch backend":
        replies = [c.request("GET", "/cart") for _ in range(len(cluster.procs))]
        out.served += [r.backend for r in replies]
        out.verdict = next((v for v in (_verdict(r, item) for r in replies) if v != CONTINUED),
                           CONTINUED)
        return out
    if disruption == "restart serving backend":
        out.restarts.append((added.backend, *cluster.restart(added.backend)))
    elif disruption == "restart all backends":
        for backend_id in list(cluster.procs):
            out.restarts.append((backend_id, *cluster.restart(backend_id)))
    elif disruption == "wipe the store":
        if cluster.variant.store is None:
            out.verdict = NOT_APPLICABLE
            return out
        open_store(cluster.variant.store).wipe()
    view = c.request("GET", "/cart")
    out.served.append(view.backend)
    out.pids_after[view.backend] = view.pid
    out.verdict = _verdict(view, item)
    return out


def litmus_table(variants: list[Variant], policies: list[Policy], lb: str = "protolab",
                 out: Out = print) -> list[Outcome]:
    """Every variant × policy × disruption; one cluster per variant and policy, a fresh login
    for each workflow."""
    outcomes = []
    for variant in variants:
        for policy in policies:
            with Cluster(variant, policy, lb=lb) as cluster:
                for disruption in DISRUPTIONS:
                    if disruption == "wipe the store" and variant.store is None:
                        o = Outcome(variant.name, policy.value, disruption, NOT_APPLICABLE)
                    else:
                        o = run_workflow(cluster, disruption)
                    o.policy = policy.value
                    outcomes.append(o)
    _print_litmus(outcomes, out)
    return outcomes


def _print_litmus(outcomes: list[Outcome], out: Out) -> None:
    from tabulate import tabulate

    rows: dict[tuple[str, str], dict[str, str]] = {}
    for o in outcomes:
        rows.setdefault((o.variant, o.policy), {})[o.disruption] = o.verdict
    out(tabulate([(v, p, *(cells.get(d, "") for d in DISRUPTIONS))
                  for (v, p), cells in rows.items()],
                 headers=("design", "balancer policy", *DISRUPTIONS)))


# -- the trade-offs, measured ---------------------------------------------------------------------


@dataclass
class Tradeoff:
    variant: str
    p50_ms: float
    p99_ms: float
    rps: float
    bytes_per_session_process: float  #: growth of the backend process's RSS per session
    bytes_per_session_store: float  #: growth of the store per session (Redis memory, file size)
    rss_growth: list[tuple[int, int]] = field(default_factory=list)  #: (sessions, RSS bytes)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _store_size(url: str | None) -> int:
    if url is None:
        return 0
    if url.startswith("sqlite:"):
        path = Path(url[7:])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    import redis

    return int(redis.Redis.from_url(url).info("memory")["used_memory"])


def measure(variant: Variant, requests: int = 2000, threads: int = 4,
            sessions: tuple[int, ...] = (2000, 10000)) -> Tradeoff:
    """Latency and throughput of GET /cart straight to one backend (no balancer), under a fixed
    number of requests from a fixed number of threads; then memory per session."""
    with Cluster(variant, Policy.ROUND_ROBIN, n=1, lab_endpoints=True) as cluster:
        if variant.store:
            open_store(variant.store).wipe()
        backend = ("127.0.0.1", cluster.procs["b1"].port)
        c = Client(backend)
        c.request("POST", "/login", {"user": "alice", "password": "wonderland"})
        c.request("POST", "/cart/items", {"item": "tea"})
        latencies: list[float] = []
        lock = threading.Lock()
        per_thread = requests // threads

        def load() -> None:
            mine = []
            client = Client(backend)
            client.cookies, client.token = dict(c.cookies), c.token
            for _ in range(per_thread):
                t = time.perf_counter()
                r = client.request("GET", "/cart")
                mine.append(time.perf_counter() - t)
                if r.status != 200:
                    raise RuntimeError(f"measurement request failed: HTTP {r.status}")
            with lock:
                latencies.extend(mine)

        start = time.perf_counter()
        workers = [threading.Thread(target=load) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        latencies.sort()
        speed = (variant.name, statistics.median(latencies) * 1000,
                 latencies[int(len(latencies) * 0.99) - 1] * 1000, len(latencies) / elapsed)
        if variant.design is Design.JWT:  # no sessions anywhere: identity is in the tokens
            return Tradeoff(*speed, 0.0, 0.0, [])
        pid = cluster.procs["b1"].pid
        base_rss, base_store = rss(pid), _store_size(variant.store)
        growth = []
        made = 0
        for n in sessions:
            c.request("POST", "/lab/sessions", {"n": n - made})
            made = n
            growth.append((n, rss(pid)))
        total = sessions[-1]
        return Tradeoff(
            *speed, max(0.0, (growth[-1][1] - base_rss) / total),
            max(0.0, (_store_size(variant.store) - base_store) / total) if variant.store
            else 0.0, growth)


def print_tradeoffs(rows: list[Tradeoff], out: Out) -> None:
    from tabulate import tabulate

    def mb(t: Tradeoff, per: float) -> str:
        return "none: in the tokens" if not t.rss_growth else f"{per * 10_000 / 1e6:.2f} MB"

    out(tabulate([(t.variant, f"{t.p50_ms:.2f}", f"{t.p99_ms:.2f}", f"{t.rps:.0f}",
                   mb(t, t.bytes_per_session_process), mb(t, t.bytes_per_session_store))
                  for t in rows],
                 headers=("design", "p50 ms", "p99 ms", "requests/s",
                          "per 10k sessions: backend process", "per 10k sessions: store")))
    memory = next((t for t in rows if t.variant == "memory"), None)
    others = [t for t in rows if t is not memory]
    if memory and others:
        fastest = min(others, key=lambda t: t.p50_ms)
        verdict = "holds" if memory.p50_ms < fastest.p50_ms else "does NOT hold"
        out(f'"stateful is faster, no external call": {verdict} here — memory p50 '
            f"{memory.p50_ms:.2f} ms vs {fastest.variant} {fastest.p50_ms:.2f} ms "
            f"({fastest.p50_ms / memory.p50_ms:.1f}x); the price is in the litmus table above.")


# -- rolling restart under load -------------------------------------------------------------------


@dataclass
class LoadResult:
    variant: str
    requests: int = 0
    failed: int = 0  #: connection errors and 5xx
    lost_sessions: int = 0  #: 401 after a successful login
    restarts: list[tuple[str, int, int]] = field(default_factory=list)
    sent: int = 0  #: HTTP requests the users wrote to the balancer (their own count)
    answered: int = 0  #: HTTP responses the users read back
    capture: CaptureSummary | None = None
    captured_requests: int = 0  #: request heads in the capture, client → balancer
    captured_responses: int = 0  #: response heads in the capture, balancer → client

    @property
    def complete(self) -> bool | None:
        """The capture holds every request and response the users counted; None: no capture."""
        if self.capture is None or self.capture.off_reason:
            return None
        return (self.capture.kernel_drops == 0 and self.captured_requests == self.sent
                and self.captured_responses == self.answered)


def rolling_restart(variant: Variant, total: int = 10_000, clients: int = 8,
                    backends: int = 3, pcap: str | os.PathLike[str] | None = None,
                    capture: bool = False) -> LoadResult:
    """`clients` users loop (add item, view cart) through a round-robin balancer until `total`
    requests are done, while each backend in turn is drained, restarted, and put back. With
    `capture`, the users' side of the balancer is captured and checked against their counts."""
    from protolab.capture import Capture

    result = LoadResult(variant.name)
    lock = threading.Lock()
    done = threading.Event()
    with Cluster(variant, Policy.ROUND_ROBIN, n=backends) as cluster:
        if variant.store:
            open_store(variant.store).wipe()

        def ask(c: Client, method: str, path: str, fields: dict) -> int:
            with lock:
                result.sent += 1  # counted before it is written: a failed write is a miss
            try:
                status = c.request(method, path, fields).status
            except OSError:
                return 0
            with lock:
                result.answered += 1
            return status

        def user(i: int) -> None:
            c = Client(cluster.address)
            if ask(c, "POST", "/login", {"user": "bob", "password": "builder"}) != 200:
                with lock:
                    result.failed += 1
                return
            n = 0
            while not done.is_set():
                status = ask(c, "POST", "/cart/items", {"item": f"i{i}-{n}"}) if n % 2 \
                    else ask(c, "GET", "/cart", {})
                n += 1
                with lock:
                    result.requests += 1
                    if status == 401:
                        result.lost_sessions += 1
                    elif status != 200:
                        result.failed += 1
                    if result.requests >= total:
                        done.set()
                if status == 401:
                    ask(c, "POST", "/login", {"user": "bob", "password": "builder"})

        with Capture([cluster.address[1]], pcap, enabled=capture) as cap:
            threads = [threading.Thread(target=user, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            for up in cluster.upstreams:
                if done.is_set():
                    break
                lb = cluster.lb
                lb.drain(up.id)
                result.restarts.append((up.id, *cluster.restart(up.id, graceful=True)))
                lb.undrain(up.id, cluster.procs[up.id].port)
            for t in threads:
                t.join()
    if capture:
        result.capture = cap.summary
        result.captured_requests, result.captured_responses = _http_heads(
            cap.decoded(), cluster.address[1])
    return result


def _http_heads(packets: Iterable, port: int) -> tuple[int, int]:
    """(request heads to `port`, response heads from it): TCP segments that begin one."""
    requests = responses = 0
    for d in packets:
        if d.tcp is None or not d.payload:
            continue
        if d.dport == port and d.payload.startswith((b"GET ", b"POST ")):
            requests += 1
        elif d.sport == port and d.payload.startswith(b"HTTP/1."):
            responses += 1
    return requests, responses


def print_load(rows: list[LoadResult], out: Out) -> None:
    from tabulate import tabulate

    out(tabulate([(r.variant, r.requests, len(r.restarts), r.failed, r.lost_sessions)
                  for r in rows],
                 headers=("design (round-robin)", "requests", "backends restarted",
                          "failed requests", "lost sessions (401)")))
    for r in rows:
        if r.complete is None:
            continue
        c = r.capture
        verdict = "complete" if r.complete else "INCOMPLETE — the capture misses packets"
        out(f"capture of {r.variant} ({c.packets} packets → {c.path}): {verdict}: "
            f"{r.captured_requests}/{r.sent} requests and {r.captured_responses}/{r.answered} "
            f"responses the users counted; the kernel dropped {c.kernel_drops} frames")
