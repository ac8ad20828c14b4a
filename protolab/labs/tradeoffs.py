"""The trade-offs of the web app's three designs, measured here: latency, throughput, memory.

"Stateful is faster, no external call" is a claim this module tests rather than repeats: GET /cart
straight to one backend of each design (no balancer), a fixed number of requests from a fixed
number of threads, p50/p99 and requests/s; then memory per session, where state lives: the
backend process's RSS (a session in its memory), the store's own size (a SQLite file, Redis's
`used_memory`), or nowhere (jwt: identity is in the tokens). A step that cannot finish gives a
row that says which step and why.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from protolab.analysis.observe import Evidence, Observation, observe
from protolab.labs.cluster import LOGIN, Client, Cluster, Reply, Variant, slug
from protolab.labs.output import Out
from protolab.net.lb import Policy
from protolab.net.stores import open_store
from protolab.protocols.webapp import Design

SESSION_BATCH = 2000  #: sessions created per POST /lab/sessions (each batch one transaction)


@dataclass
class Tradeoff:
    """One design's row, as measured in this run."""

    variant: str  #: the design's name ("memory", "store (sqlite)", "jwt")
    p50_ms: float  #: median latency of GET /cart
    p99_ms: float  #: 99th percentile latency of GET /cart
    rps: float  #: GET /cart requests answered per second
    bytes_per_session_process: float  #: growth of the backend process's RSS per session
    bytes_per_session_store: float  #: growth of the store per session (Redis memory, file size)
    rss_growth: list[tuple[int, int]] = field(default_factory=list)  #: (sessions, RSS bytes)
    unfinished: str = ""  #: why the measurement could not finish; "" when it did

    def observation(self) -> Observation:
        return observe(f"litmus.tradeoffs.{slug(self.variant)}",
                       f"the trade-offs of {self.variant}", not self.unfinished,
                       seen=f"p50 {self.p50_ms:.2f} ms, {self.rps:.0f} requests/s",
                       evidence=[Evidence("p50 ms", after=round(self.p50_ms, 2))],
                       why_not=f"could not finish: {self.unfinished}")


class Unfinished(Exception):
    """A measurement step that could not finish: which step, and what stopped it."""


def rss(pid: int) -> int:
    """The resident memory of process `pid` in bytes, as its kernel reports it (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _store_size(url: str | None) -> int:
    """The store's size by its own measure: the SQLite files on disk, Redis's used_memory."""
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


def run_tradeoffs(chosen: list[Variant], out: Out) -> bool:
    """`protolab litmus`'s second part: each design measured, printed; True when one could not
    finish."""
    out("\nThe trade-offs, measured here (GET /cart, 2000 requests, 4 threads, one "
        "backend; memory per 10k sessions):")
    rows = [measure(v) for v in chosen]
    print_tradeoffs(rows, out)
    return any(t.unfinished for t in rows)
