"""The litmus test, measured: restart things mid-workflow and see whose workflow goes on.

Where state lives decides every verdict: a session in a backend's memory dies with that process (or
is simply elsewhere when the balancer sends you to another backend); a session in a shared store
survives any backend restart and dies with the store; a signed token survives everything that does
not hold it, and the cart beside it lives in the store. Each verdict here comes from a real
workflow against real processes and is read from the last response; each disruption is an
observation with its evidence: a restart counts only when another process ID answers on the
backend's port, a wipe only when the store's own count of the lab's keys falls to 0, a switch only
when another backend (by its `X-Backend` header) served view cart. What was not performed is NOT
OBSERVED and gets no verdict; a workflow that broke before its disruption says where.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from protolab.analysis.observe import Evidence, Observation, Status, explain, observe
from protolab.net import lifecycle
from protolab.net.lb import Policy, Upstream, start_balancer
from protolab.net.processes import ServerProcess, restartable_port
from protolab.net.stores import REDIS_PREFIX, open_store
from protolab.protocols.webapp import Design

if TYPE_CHECKING:
    from protolab.wire.capture import Capture, CaptureSummary

Out = Callable[[str], None]
CONTINUED, LOGGED_OUT, CART_LOST = "workflow continued", "logged out", "cart lost"


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
            self.lb = start_balancer(lb, self.upstreams, policy, log=log)
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
#
# Each cell is one workflow, login → add item → DISRUPTION → view cart, kept as data: every request
# with what its response said (the backend's own X-Backend and X-Backend-Pid headers), the
# disruption as an `Observation` with its evidence (PIDs answering on each restarted backend's port
# before → after; the store's own key count before → after a wipe; the backend that served add
# item → the one that served view cart), and the verdict as an `Observation` read from the view
# cart response. A workflow that broke before the disruption is reported as such, never as a
# verdict for a disruption that did not happen.


class Disruption(Enum):
    SWITCH = "switch backend"  #: view cart served by another backend than add item
    RESTART_SERVING = "restart serving backend"  #: the backend that served add item, killed
    RESTART_ALL = "restart all backends"  #: every backend process killed and started again
    WIPE = "wipe the store"  #: the shared store emptied of the lab app's keys


DISRUPTIONS = tuple(d.value for d in Disruption)
#: the keys the lab app writes to a store (`protolab.protocols.webapp`): what a wipe is counted by.
#: In a Redis each is under `REDIS_PREFIX` ("protolab:session:..."): the store counts and wipes only
#: those, never the database's other keys.
KEY_PREFIXES = ("session:", "cart:", "deny:")
LOGIN = {"user": "alice", "password": "wonderland"}


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


def _ask(client: Client, name: str, method: str, path: str, fields: dict | None = None,
         via: str = "balancer") -> Step:
    try:
        r = client.request(method, path, fields)
    except OSError as exc:
        return Step(name, 0, error=f"{type(exc).__name__}: {exc}", via=via)
    items = r.body.get("items", [])
    return Step(name, r.status, r.backend, r.pid, str(r.body.get("error", "")),
                tuple(map(str, items)) if isinstance(items, list) else (), via)


def _direct(cluster: Cluster, backend_id: str, like: Client | None = None) -> Client:
    """A client for one backend's own port (bypassing the balancer), with `like`'s cookies."""
    c = Client(("127.0.0.1", cluster.procs[backend_id].port))
    if like is not None:
        c.cookies, c.token = dict(like.cookies), like.token
    return c


def probe(cluster: Cluster, backend_id: str) -> Step:
    """Ask a backend's port who answers there: its id and process ID, from the response."""
    return _ask(_direct(cluster, backend_id), f"{backend_id} pid", "GET", "/profile",
                via=backend_id)


@dataclass
class Cell:
    """One cell of the litmus table: a workflow, the disruption performed, what came of it."""

    variant: str
    policy: str
    disruption: str
    steps: list[Step] = field(default_factory=list)  #: every request, in order
    done: Observation | None = None  #: the disruption performed, with its evidence
    outcome: Observation | None = None  #: the verdict from the response, or where it broke
    verdict: str = ""  #: CONTINUED, LOGGED_OUT, CART_LOST; "": no verdict for the disruption
    broke_at: str = ""  #: the step the workflow broke at, before the disruption
    restarts: list[tuple[str, int, int]] = field(default_factory=list)  #: (id, pid before, after)

    @property
    def key(self) -> str:
        return "litmus." + ".".join("-".join("".join(c if c.isalnum() else " " for c in x)
                                             .split())
                                    for x in (self.variant, self.policy, self.disruption))

    @property
    def served(self) -> list[str]:
        """The backend that answered each request, in order (from the responses)."""
        return [s.backend for s in self.steps if s.status]

    def observations(self) -> list[Observation]:
        return [o for o in (self.done, self.outcome) if o is not None]

    def problem(self) -> str:
        return "; ".join(f"{o.key}: {o.why}" for o in self.observations() if o.failed)

    def text(self) -> str:
        """The cell as printed: the verdict (or where it broke, or NOT OBSERVED), what this run
        did with its evidence, and the response the verdict is read from."""
        done, outcome = self.done, self.outcome
        if self.broke_at and outcome is not None and outcome.observed:
            return (f"broke at {self.broke_at}; {self.disruption}: not tried\n"
                    f"saw: {outcome.evidence_text()}")
        if done is not None and done.status in (Status.NOT_TRIED, Status.LIVE_ONLY) \
                and not self.broke_at:
            return f"- ({done.status.value}: {done.why})"
        lines = []
        if done is not None and done.failed:
            lines.append(f"NOT OBSERVED: {done.claim} — {done.why}")
        elif outcome is not None and outcome.failed:
            lines.append(f"NOT OBSERVED: {outcome.claim} — {outcome.why}")
        elif outcome is not None:
            lines.append(outcome.seen)
        if done is not None and done.status in (Status.OBSERVED, Status.NOT_OBSERVED):
            ev = done.evidence_text()
            lines.append(f"did: {done.done}" + (f" [{ev}]" if ev else ""))
        if outcome is not None and outcome.evidence:
            lines.append(f"saw: {outcome.evidence_text()}")
        return "\n".join(lines)


def _other_backend(cluster: Cluster, backend_id: str) -> str:
    """The backend after `backend_id` in the cluster (itself when it is the only one)."""
    ids = list(cluster.procs)
    return ids[(ids.index(backend_id) + 1) % len(ids)] if backend_id in ids else ids[0]


def _switch(cluster: Cluster, c: Client, added: Step, key: str) -> tuple[Observation, list[Step]]:
    """View cart through the balancer; if it answers from the backend that served add item
    (a sticky policy), send it straight to another backend, as the balancer would once it took
    that backend out (drained, failed, scaled in)."""
    steps = [_ask(c, "view cart", "GET", "/cart")]
    done = "view cart through the balancer"
    if steps[-1].status and steps[-1].backend == added.backend:
        other = _other_backend(cluster, added.backend)
        steps.append(_ask(_direct(cluster, other, c), "view cart", "GET", "/cart", via=other))
        done = f"the balancer kept {added.backend}: view cart sent straight to {other}"
    last = steps[-1]
    switched = bool(last.status) and last.backend not in (added.backend, "?")
    why = (f"view cart got no response ({last.error})" if not last.status else
           f"view cart was served by {last.backend}, the backend that served add item")
    return observe(f"{key}.done", "switch backend", switched, done=done,
                   seen="another backend served view cart",
                   evidence=[Evidence("served by", f"{added.backend} (add item)",
                                      f"{last.backend} (view cart)")],
                   why_not=why), steps


def _restart(cluster: Cluster, ids: list[str], key: str
             ) -> tuple[Observation, list[tuple[str, int, int]]]:
    """Kill each backend and start a new one on its port; the PIDs are what the process
    answering on that port says, before and after (they must differ)."""
    before = {b: probe(cluster, b) for b in ids}
    for b in ids:
        cluster.restart(b)
    after = {b: probe(cluster, b) for b in ids}
    restarts = [(b, before[b].pid, after[b].pid) for b in ids]
    same = [f"{b} pid {old} → {new}" for b, old, new in restarts if not (old and new)
            or old == new]
    why = "; ".join(same) + ": the same process (or none) answered before and after"
    return observe(f"{key}.done", f"restart {', '.join(ids)}", not same,
                   done=f"killed and restarted {', '.join(ids)}",
                   seen="a new process answers on each restarted backend's port",
                   evidence=[Evidence(f"{b} pid", old, new) for b, old, new in restarts],
                   why_not=why), restarts


def store_keys(url: str) -> int:
    """How many of the lab app's keys the store holds, counted by the store itself."""
    store = open_store(url)
    return sum(store.count(prefix) for prefix in KEY_PREFIXES)


def redis_urls(variants: Iterable[Variant]) -> list[str]:
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
    from protolab.net.stores import redis_refusal

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


def _wipe(url: str, key: str) -> Observation:
    before = store_keys(url)
    open_store(url).wipe()
    after = store_keys(url)
    why = (f"the store held no keys to wipe ({before})" if not before else
           f"{after} of {before} keys are still there")
    return observe(f"{key}.done", "wipe the store", before > 0 and after == 0,
                   done=f"wiped the store ({url.split(':', 1)[0]})",
                   seen="the store's keys are gone",
                   evidence=[Evidence("store keys", before, after)], why_not=why)


def _verdict(view: Step, item: str, key: str, done: Observation) -> tuple[str, Observation]:
    """The verdict, from the view cart response, for a disruption that was performed."""
    claim = f"what {done.claim} did to the workflow"
    if not done.observed:
        return "", observe(f"{key}.outcome", claim, False, evidence=[view.evidence()],
                           why_not=f"no verdict: {done.claim} was not performed")
    if not view.status:
        return "", observe(f"{key}.outcome", claim, False, why_not=view.text())
    if view.status == 401:
        verdict = LOGGED_OUT
    elif view.status == 200:
        verdict = CONTINUED if item in view.items else CART_LOST
    else:
        verdict = f"HTTP {view.status}"
    cart = (f"cart holds {item}" if item in view.items else
            f"cart has no {item}" if view.status == 200 else "")
    evidence = [view.evidence()] + ([Evidence(cart)] if cart else [])
    return verdict, observe(f"{key}.outcome", claim, True, seen=verdict, evidence=evidence)


def _broke(cell: Cell, step: Step) -> Cell:
    """The workflow broke before the disruption: say where, from the response; no verdict."""
    cell.broke_at = step.name
    said = step.error or (f"HTTP {step.status}" if step.status else "no response")
    cell.outcome = observe(
        f"{cell.key}.outcome", "the workflow up to the disruption", step.name != "login",
        seen=f"broke at {step.name}: {said}",
        evidence=[s.evidence() for s in cell.steps],
        why_not=f"the workflow could not start: {step.text()}")
    cell.done = explain(f"{cell.key}.done", cell.disruption,
                        f"the workflow broke at {step.name}, before it")
    return cell


def run_workflow(cluster: Cluster, disruption: str, source_ip: str = "127.0.0.2",
                 policy: str = "") -> Cell:
    """login → add item → DISRUPTION → view cart, through the balancer."""
    cell = Cell(cluster.variant.name, policy, disruption)
    c = Client(cluster.address, source_ip)
    item = f"book-{secrets.token_hex(3)}"
    cell.steps.append(_ask(c, "login", "POST", "/login", LOGIN))
    if cell.steps[-1].status == 200:
        cell.steps.append(_ask(c, "add item", "POST", "/cart/items", {"item": item}))
    if cell.steps[-1].status != 200:
        return _broke(cell, cell.steps[-1])
    added = cell.steps[-1]
    if disruption == Disruption.SWITCH.value:
        cell.done, views = _switch(cluster, c, added, cell.key)
        cell.steps += views
    else:
        if disruption == Disruption.WIPE.value:
            if cluster.variant.store is None:
                return _not_applicable(cell)
            cell.done = _wipe(cluster.variant.store, cell.key)
        else:
            ids = [added.backend] if disruption == Disruption.RESTART_SERVING.value \
                else list(cluster.procs)
            cell.done, cell.restarts = _restart(cluster, ids, cell.key)
        cell.steps.append(_ask(c, "view cart", "GET", "/cart"))
    cell.verdict, cell.outcome = _verdict(cell.steps[-1], item, cell.key, cell.done)
    return cell


def _not_applicable(cell: Cell) -> Cell:
    cell.done = explain(f"{cell.key}.done", cell.disruption,
                        f"the {cell.variant} design has no store")
    return cell


def litmus_table(variants: list[Variant], policies: list[Policy], lb: str = "protolab",
                 out: Out = print) -> list[Cell]:
    """Every variant × policy × disruption; one cluster per variant and policy, a fresh login
    for each workflow."""
    cells = []
    for variant in variants:
        for policy in policies:
            with Cluster(variant, policy, lb=lb) as cluster:
                for disruption in DISRUPTIONS:
                    if disruption == Disruption.WIPE.value and variant.store is None:
                        cell = _not_applicable(Cell(variant.name, policy.value, disruption))
                    else:
                        cell = run_workflow(cluster, disruption, policy=policy.value)
                    cells.append(cell)
    print_litmus(cells, out)
    return cells


def print_litmus(cells: list[Cell], out: Out) -> None:
    """One table per design: a row per policy, a column per disruption; each cell its verdict,
    what this run did (did:) with its evidence, and the response it is read from (saw:)."""
    from tabulate import tabulate

    by_variant: dict[str, dict[str, dict[str, Cell]]] = {}
    for cell in cells:
        by_variant.setdefault(cell.variant, {}).setdefault(cell.policy, {})[cell.disruption] = cell
    for variant, rows in by_variant.items():
        out(f"design: {variant}")
        out(tabulate([(policy, *(row[d].text() if d in row else "" for d in DISRUPTIONS))
                      for policy, row in rows.items()],
                     headers=("policy", *DISRUPTIONS), tablefmt="grid",
                     maxcolwidths=[13, 22, 22, 22, 22], maxheadercolwidths=[13, 22, 22, 22, 22]))
    failed = [o for cell in cells for o in cell.observations() if o.failed]
    for o in failed:
        out(o.line())


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
    unfinished: str = ""  #: why the measurement could not finish; "" when it did

    def observation(self) -> Observation:
        return observe(f"litmus.tradeoffs.{_slug(self.variant)}",
                       f"the trade-offs of {self.variant}", not self.unfinished,
                       seen=f"p50 {self.p50_ms:.2f} ms, {self.rps:.0f} requests/s",
                       evidence=[Evidence("p50 ms", after=round(self.p50_ms, 2))],
                       why_not=f"could not finish: {self.unfinished}")


class Unfinished(Exception):
    """A measurement step that could not finish: which step, and what stopped it."""


SESSION_BATCH = 2000  #: sessions created per POST /lab/sessions (each batch one transaction)


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


def _must(client: Client, step: str, method: str, path: str, fields: dict | None = None) -> Reply:
    """One request of a measurement: its reply, or `Unfinished` naming the step."""
    try:
        r = client.request(method, path, fields)
    except OSError as exc:  # TimeoutError, ConnectionError: the backend did not answer
        raise Unfinished(f"{step}: {type(exc).__name__}: {exc}") from None
    if r.status != 200:
        raise Unfinished(f"{step}: HTTP {r.status} {r.body.get('error', '')}".rstrip())
    return r


def measure(variant: Variant, requests: int = 2000, threads: int = 4,
            sessions: tuple[int, ...] = (2000, 10000)) -> Tradeoff:
    """Latency and throughput of GET /cart straight to one backend (no balancer), under a fixed
    number of requests from a fixed number of threads; then memory per session. A step that
    cannot finish (a timeout, an error) gives a row that says which and why, not an exception."""
    try:
        return _measure(variant, requests, threads, sessions)
    except Unfinished as exc:
        return Tradeoff(variant.name, 0.0, 0.0, 0.0, 0.0, 0.0, unfinished=str(exc))
    except (OSError, RuntimeError) as exc:  # the backend did not start, the store is not there
        return Tradeoff(variant.name, 0.0, 0.0, 0.0, 0.0, 0.0,
                        unfinished=f"{type(exc).__name__}: {exc}")


def _measure(variant: Variant, requests: int, threads: int,
             sessions: tuple[int, ...]) -> Tradeoff:
    with Cluster(variant, Policy.ROUND_ROBIN, n=1, lab_endpoints=True) as cluster:
        if variant.store:
            open_store(variant.store).wipe()
        backend = ("127.0.0.1", cluster.procs["b1"].port)
        c = Client(backend)
        _must(c, "POST /login", "POST", "/login", LOGIN)
        _must(c, "POST /cart/items", "POST", "/cart/items", {"item": "tea"})
        speed = _speed(variant, backend, c, requests, threads)
        if variant.design is Design.JWT:  # no sessions anywhere: identity is in the tokens
            return Tradeoff(*speed, 0.0, 0.0, [])
        pid = cluster.procs["b1"].pid
        base_rss, base_store = rss(pid), _store_size(variant.store)
        growth = []
        made = 0
        for n in sessions:
            while made < n:
                batch = min(SESSION_BATCH, n - made)
                _must(c, f"POST /lab/sessions (sessions {made + 1}-{made + batch})", "POST",
                      "/lab/sessions", {"n": batch})
                made += batch
            growth.append((n, rss(pid)))
        total = sessions[-1]
        return Tradeoff(
            *speed, max(0.0, (growth[-1][1] - base_rss) / total),
            max(0.0, (_store_size(variant.store) - base_store) / total) if variant.store
            else 0.0, growth)


def _speed(variant: Variant, backend: tuple[str, int], c: Client, requests: int,
           threads: int) -> tuple[str, float, float, float]:
    """(name, p50 ms, p99 ms, requests/s) of GET /cart from `threads` threads."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_thread = requests // threads

    def load() -> None:
        mine = []
        client = Client(backend)
        client.cookies, client.token = dict(c.cookies), c.token
        try:
            for _ in range(per_thread):
                t = time.perf_counter()
                _must(client, "GET /cart", "GET", "/cart")
                mine.append(time.perf_counter() - t)
        except Unfinished as exc:
            with lock:
                errors.append(str(exc))
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    workers = [threading.Thread(target=load) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise Unfinished(f"{errors[0]} (after {len(latencies)} of {requests} requests)")
    latencies.sort()
    return (variant.name, statistics.median(latencies) * 1000,
            latencies[int(len(latencies) * 0.99) - 1] * 1000, len(latencies) / elapsed)


def print_tradeoffs(rows: list[Tradeoff], out: Out) -> None:
    """The measured rows as a table; a row that could not finish is one NOT OBSERVED line."""
    from tabulate import tabulate

    def mb(t: Tradeoff, per: float) -> str:
        return "none: in the tokens" if not t.rss_growth else f"{per * 10_000 / 1e6:.2f} MB"

    done = [t for t in rows if not t.unfinished]
    out(tabulate([(t.variant, f"{t.p50_ms:.2f}", f"{t.p99_ms:.2f}", f"{t.rps:.0f}",
                   mb(t, t.bytes_per_session_process), mb(t, t.bytes_per_session_store))
                  for t in done],
                 headers=("design", "p50 ms", "p99 ms", "requests/s",
                          "per 10k sessions: backend process", "per 10k sessions: store")))
    for t in rows:
        if t.unfinished:
            out(t.observation().line())
    memory = next((t for t in done if t.variant == "memory"), None)
    others = [t for t in done if t is not memory]
    if memory and others:
        fastest = min(others, key=lambda t: t.p50_ms)
        verdict = "holds" if memory.p50_ms < fastest.p50_ms else "does NOT hold"
        out(f'"stateful is faster, no external call": {verdict} here — memory p50 '
            f"{memory.p50_ms:.2f} ms vs {fastest.variant} {fastest.p50_ms:.2f} ms "
            f"({fastest.p50_ms / memory.p50_ms:.1f}x); the price is in the litmus table above.")


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text).split())


# -- rolling restart under load -------------------------------------------------------------------


@dataclass
class StreamCount:
    """HTTP messages in a capture, read from each TCP connection's reassembled byte stream (as
    the receiving TCP sees them, RFC 9293 section 3.10.7.4), not from segments: a retransmitted
    segment carries bytes already counted, and a head split over two segments is one head."""

    requests: int = 0  #: request heads in the client → port streams
    responses: int = 0  #: response heads in the port → client streams
    connections: int = 0  #: TCP connections to the port (a 4-tuple and its initial sequence number)
    repeated: int = 0  #: segments whose bytes were already in the stream (retransmissions)
    gaps: int = 0  #: streams with bytes the capture does not hold


@dataclass
class _Half:
    """One direction of one TCP connection: its segments by offset from the first byte."""

    base: int | None = None  #: sequence number of the first data byte (ISN + 1), when the SYN
    segments: list[tuple[int, bytes]] = field(default_factory=list)


METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ")


def http_streams(packets: Iterable, port: int) -> StreamCount:
    """Count the HTTP requests to `port` and the responses from it, by TCP stream."""
    conns: list[tuple[_Half, _Half]] = []  #: (client → port, port → client), in order
    current: dict[tuple, tuple[_Half, _Half]] = {}  #: the client 4-tuple's connection now
    for d in packets:
        if d.tcp is None or port not in (d.sport, d.dport):
            continue
        to_port = d.dport == port
        four = (d.src, d.sport, d.dst, d.dport) if to_port else (d.dst, d.dport, d.src, d.sport)
        conn = current.get(four)
        syn, ack = d.tcp.flags & 0x02, d.tcp.flags & 0x10
        base = (d.tcp.seq + 1) & 0xFFFFFFFF  # the first data byte follows the SYN
        if syn and not ack and (conn is None or conn[0].base != base):
            conn = current[four] = (_Half(base), _Half())  # a new connection (ports get reused)
            conns.append(conn)
        if conn is None:  # the capture began after the SYN
            conn = current[four] = (_Half(), _Half())
            conns.append(conn)
        half = conn[0] if to_port else conn[1]
        if syn and ack:
            half.base = base
        if d.payload:
            if half.base is None:
                half.base = d.tcp.seq
            half.segments.append(((d.tcp.seq - half.base) & 0xFFFFFFFF, d.payload))
    count = StreamCount(connections=len(conns))
    for conn in conns:
        for half, starts in zip(conn, (METHODS, (b"HTTP/1.",)), strict=True):
            stream, repeated, gap = _reassemble(half.segments)
            count.repeated += repeated
            count.gaps += gap
            n = _messages(stream, starts, request=starts is METHODS)
            if starts is METHODS:
                count.requests += n
            else:
                count.responses += n
    return count


def _reassemble(segments: list[tuple[int, bytes]]) -> tuple[bytes, int, bool]:
    """(the contiguous stream from offset 0, segments already covered, a gap after it?)"""
    out, pos, repeated = bytearray(), 0, 0
    for offset, data in sorted(segments, key=lambda s: (s[0], -len(s[1]))):
        if offset + len(data) <= pos:
            repeated += 1
        elif offset > pos:
            return bytes(out), repeated, True
        else:
            out += data[pos - offset:]
            pos = offset + len(data)
    return bytes(out), repeated, False


def _messages(stream: bytes, starts: tuple[bytes, ...], request: bool) -> int:
    """HTTP/1.1 messages at the start of `stream`, one after another (RFC 9112 section 6: the
    body's length from Content-Length; a response without one runs to the end)."""
    n = pos = 0
    while stream.startswith(starts, pos):
        end = stream.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        n += 1
        length = _content_length(stream[pos:end])
        pos = end + 4 + (length if length is not None else 0 if request else len(stream))
    return n


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


@dataclass
class LoadResult:
    variant: str
    requests: int = 0  #: add item / view cart requests the users' loop made (it stops at total)
    failed: int = 0  #: connection errors and 5xx
    lost_sessions: int = 0  #: 401 after a successful login
    restarts: list[tuple[str, int, int]] = field(default_factory=list)
    sent: int = 0  #: HTTP requests the users wrote to the balancer (their own count)
    answered: int = 0  #: HTTP responses the users read back
    capture: CaptureSummary | None = None
    captured_requests: int = 0  #: request heads in the capture, client → balancer
    captured_responses: int = 0  #: response heads in the capture, balancer → client
    total: int = 0  #: the requests asked for (--requests)
    logins: int = 0  #: one first login per user
    relogins: int = 0  #: logins again after a 401 (a lost session)
    stream: StreamCount | None = None  #: what the capture holds, by TCP stream
    pcap_bytes: int = 0  #: the capture file's size on disk

    def restarted(self) -> Observation:
        """Each backend restarted: the process answering on its port before → after differs."""
        same = [f"{b} pid {old} → {new}" for b, old, new in self.restarts
                if not (old and new) or old == new]
        return observe(f"litmus.under-load.{self.variant}.restarts", "restart each backend in turn",
                       bool(self.restarts) and not same,
                       done="drained, restarted and put back " +
                            ", ".join(b for b, _, _ in self.restarts),
                       seen="a new process answers on each backend's port",
                       evidence=[Evidence(f"{b} pid", old, new) for b, old, new in self.restarts],
                       why_not=("; ".join(same) + ": the same process (or none) answered"
                                if same else "no backend was restarted"))

    def counted(self) -> Observation:
        """What the users wrote, and why it is more than the requests asked for."""
        late = self.requests - self.total
        parts = self.requests + self.logins + self.relogins
        return observe(
            f"litmus.under-load.{_slug(self.variant)}.counts", "the users' own counts",
            parts == self.sent,
            seen=(f"{self.sent} requests written = {self.requests} add item/view cart "
                  f"({self.total} asked" + (f"; {late} more were already in flight when the "
                                             f"count was reached)" if late > 0 else ")")
                  + f" + {self.logins} logins + {self.relogins} logins again after a 401; "
                  f"{self.answered} responses read"),
            evidence=[Evidence("add item/view cart", after=self.requests),
                      Evidence("logins", after=self.logins),
                      Evidence("logins again after a 401", after=self.relogins),
                      Evidence("requests written", after=self.sent),
                      Evidence("responses read", after=self.answered)],
            why_not=f"{self.sent} requests written but {parts} counted by kind")

    def written(self) -> Observation:
        """The capture file: where, how big, how many packets."""
        c = self.capture
        path = c.path if c is not None else None
        return observe(
            f"litmus.under-load.{_slug(self.variant)}.pcap", "the capture file",
            path is not None and self.pcap_bytes > 0,
            seen=(f"wrote {path}: {self.pcap_bytes / 1e6:.1f} MB, {c.packets if c else 0} "
                  f"packets (both directions of every connection to the balancer; "
                  f"--no-capture to skip)"),
            evidence=[Evidence("bytes on disk", after=self.pcap_bytes),
                      Evidence("packets", after=c.packets if c else 0)],
            why_not=f"no capture file at {path}")

    def held(self) -> Observation:
        """The capture holds every request and response the users counted, by TCP stream."""
        st = self.stream or StreamCount()
        drops = self.capture.kernel_drops if self.capture else 0
        return observe(
            f"litmus.under-load.{_slug(self.variant)}.capture",
            "the capture holds every request and response the users counted",
            bool(self.complete),
            seen=(f"complete: {self.captured_requests}/{self.sent} requests and "
                  f"{self.captured_responses}/{self.answered} responses the users counted; "
                  f"the kernel dropped {drops} frames"),
            evidence=[Evidence("requests: users' count → capture", self.sent,
                               self.captured_requests),
                      Evidence("responses: users' count → capture", self.answered,
                               self.captured_responses),
                      Evidence("TCP connections to the balancer", after=st.connections),
                      Evidence("retransmitted segments (bytes counted once)", after=st.repeated),
                      Evidence("streams with a gap", after=st.gaps),
                      Evidence("kernel drops", after=drops)],
            why_not=(f"INCOMPLETE — the capture holds {self.captured_requests}/{self.sent} "
                     f"requests and {self.captured_responses}/{self.answered} responses the "
                     f"users counted ({st.gaps} streams with a gap); the kernel dropped "
                     f"{drops} frames"))

    @property
    def complete(self) -> bool | None:
        """The capture holds every request and response the users counted; None: no capture."""
        if self.capture is None or self.capture.off_reason:
            return None
        return (self.capture.kernel_drops == 0 and self.captured_requests == self.sent
                and self.captured_responses == self.answered)


class _LoadUsers:
    """The users of a rolling restart: each logs in, then loops (add item, view cart) until
    `total` requests are done between them, logging in again after a 401 (a lost session)."""

    def __init__(self, result: LoadResult, address: tuple[str, int], total: int) -> None:
        self.result = result
        self.address = address
        self.total = total
        self.lock = threading.Lock()
        self.done = threading.Event()

    def ask(self, c: Client, method: str, path: str, fields: dict) -> int:
        with self.lock:
            self.result.sent += 1  # counted before it is written: a failed write is a miss
        try:
            status = c.request(method, path, fields).status
        except OSError:
            return 0
        with self.lock:
            self.result.answered += 1
        return status

    def login(self, c: Client) -> int:
        return self.ask(c, "POST", "/login", {"user": "bob", "password": "builder"})

    def user(self, i: int) -> None:
        c = Client(self.address)
        with self.lock:
            self.result.logins += 1
        if self.login(c) != 200:
            with self.lock:
                self.result.failed += 1
            return
        n = 0
        while not self.done.is_set():
            status = self.ask(c, "POST", "/cart/items", {"item": f"i{i}-{n}"}) if n % 2 \
                else self.ask(c, "GET", "/cart", {})
            n += 1
            self._count(status)
            if status == 401:
                self.login(c)

    def _count(self, status: int) -> None:
        result = self.result
        with self.lock:
            result.requests += 1
            if status == 401:
                result.lost_sessions += 1
                result.relogins += 1
            elif status != 200:
                result.failed += 1
            if result.requests >= self.total:
                self.done.set()


def _restart_each(cluster: Cluster, result: LoadResult, done: threading.Event) -> None:
    """Each backend in turn: drained, restarted gracefully, put back (until the load is done);
    the PIDs that answered before and after each restart go in `result.restarts`."""
    for up in cluster.upstreams:
        if done.is_set():
            break
        lb = cluster.lb
        lb.drain(up.id)
        before = probe(cluster, up.id)  # the PIDs as the processes answer
        cluster.restart(up.id, graceful=True)
        lb.undrain(up.id, cluster.procs[up.id].port)
        result.restarts.append((up.id, before.pid, probe(cluster, up.id).pid))


def _count_capture(result: LoadResult, cap: Capture, port: int) -> None:
    """What the capture of the users' side of the balancer holds, counted per TCP stream."""
    result.capture = cap.summary
    result.stream = http_streams(cap.decoded(), port)
    result.captured_requests = result.stream.requests
    result.captured_responses = result.stream.responses
    path = cap.summary.path
    result.pcap_bytes = path.stat().st_size if path is not None and path.exists() else 0


def rolling_restart(variant: Variant, total: int = 10_000, clients: int = 8,
                    backends: int = 3, pcap: str | os.PathLike[str] | None = None,
                    capture: bool = False) -> LoadResult:
    """`clients` users loop (add item, view cart) through a round-robin balancer until `total`
    requests are done, while each backend in turn is drained, restarted, and put back. With
    `capture`, the users' side of the balancer is captured and checked against their counts."""
    from protolab.wire.capture import Capture

    result = LoadResult(variant.name, total=total)
    with Cluster(variant, Policy.ROUND_ROBIN, n=backends) as cluster:
        if variant.store:
            open_store(variant.store).wipe()
        users = _LoadUsers(result, cluster.address, total)
        with Capture([cluster.address[1]], pcap, enabled=capture) as cap:
            threads = [threading.Thread(target=users.user, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            _restart_each(cluster, result, users.done)
            for t in threads:
                t.join()
    if capture:
        _count_capture(result, cap, cluster.address[1])
    return result


def print_load(rows: list[LoadResult], out: Out) -> None:
    from tabulate import tabulate

    out(tabulate([(r.variant, r.requests, len(r.restarts), r.failed, r.lost_sessions)
                  for r in rows],
                 headers=("design (round-robin)", "add item/view cart", "backends restarted",
                          "failed requests", "lost sessions (401)")))
    for r in rows:
        out(f"{r.variant}: {r.restarted().line()}")
        out(f"{r.variant}: {r.counted().line()}")
        if r.complete is None:
            continue
        out(f"{r.variant}: {r.written().line()}")
        out(f"{r.variant}: {r.held().line()}")
    sizes = [r.pcap_bytes for r in rows if r.complete is not None]
    if len(sizes) > 1:
        out(f"captures written: {len(sizes)} files, {sum(sizes) / 1e6:.1f} MB in all")


# -- the litmus command: the table, the trade-offs, the rolling restart ----------------------------


def load_pcap(pcap: str | None, design: str, designs: int) -> Path:
    """Where the --under-load capture of one design goes: one file per design."""
    from protolab.wire.paths import default_capture_path

    slug = _slug(design)
    if not pcap:
        return default_capture_path(f"litmus-{slug}")
    path = Path(pcap)
    return path if designs == 1 else path.with_name(f"{path.stem}-{slug}{path.suffix}")


def run_litmus(names: list[str], policies: list[str], lb: str, redis: str, measured: bool = True,
               under_load: bool = False, requests: int = 10_000, capture: bool = True,
               pcap: str | None = None, out: Out = print) -> bool:
    """`protolab litmus`: the table for every design × policy, the measured trade-offs, and a
    rolling restart under load. True when something failed."""
    with tempfile.TemporaryDirectory(prefix="protolab-litmus-") as tmp, \
            own_keys_removed(variants(names, redis, tmp)) as chosen:
        out(f"The litmus test: login → add item → DISRUPTION → view cart, through the "
            f"{lb} balancer,\nreal processes (3 backends per design). Each cell: the "
            f"verdict; what this run did (did:) with its\nevidence; the responses it is read "
            f"from (saw:), each naming the backend and PID that answered.\nA restart counts "
            f"only if another PID answers on that port. Switch backend: if the balancer keeps\n"
            f"view cart on the same backend, it is sent straight to another one.\n")
        cells = litmus_table(chosen, [Policy(p) for p in policies], lb=lb, out=out)
        failed = any(cell.problem() for cell in cells)
        if measured:
            failed = _tradeoffs(chosen, out) or failed
        if under_load:
            failed = _under_load(chosen, requests, capture, pcap, out) or failed
    return failed


def _tradeoffs(chosen: list[Variant], out: Out) -> bool:
    out("\nThe trade-offs, measured here (GET /cart, 2000 requests, 4 threads, one "
        "backend; memory per 10k sessions):")
    rows = [measure(v) for v in chosen]
    print_tradeoffs(rows, out)
    return any(t.unfinished for t in rows)


def _under_load(chosen: list[Variant], requests: int, capture: bool, pcap: str | None,
                out: Out) -> bool:
    out(f"\nRolling restart under load: {requests} requests from 8 users through "
        f"round-robin while each backend is drained, restarted and put back:")
    if capture:
        out("Each run captures every packet between the users and the balancer, to "
            + ", ".join(str(load_pcap(pcap, v.name, len(chosen))) for v in chosen)
            + " (each file's size is printed after its run; --no-capture to skip).")
    results = [rolling_restart(v, total=requests, capture=capture,
                               pcap=load_pcap(pcap, v.name, len(chosen)))
               for v in chosen]
    print_load(results, out)
    off = next((r.capture.off_reason for r in results if r.capture and r.capture.off_reason),
               None)
    if off and capture:
        from protolab.wire.capture import fix_hint

        out(f"capture off: {off}; {fix_hint()}. The run went on without its "
            f"completeness check.")
    return any(r.complete is False or r.restarted().failed for r in results)
