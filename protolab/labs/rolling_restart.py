"""A rolling restart under load: each backend drained, restarted and put back while users work.

Where state lives decides what the users notice: with sessions in a backend's memory, a restart
logs its users out (401, then a login again); in a shared store or a signed token, nothing is
lost. The users keep their own counts (requests written, responses read, logins again after a
401); each restart is checked by the process IDs answering on the backend's port before and
after; with capture, the users' side of the balancer is captured and checked against their
counts, per TCP connection (`protolab.analysis.http_streams`), with no kernel drop.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from protolab.analysis.http_streams import StreamCount, http_streams
from protolab.analysis.observe import Evidence, Observation, observe
from protolab.labs.cluster import Client, Cluster, Variant, probe, slug
from protolab.labs.output import Out
from protolab.net.lb import Policy
from protolab.net.stores import open_store

if TYPE_CHECKING:
    from protolab.wire.capture import Capture, CaptureSummary


@dataclass
class LoadResult:
    """One design's rolling restart: the users' own counts, the restarts, what was captured."""

    variant: str  #: the design's name
    requests: int = 0  #: add item / view cart requests the users' loop made (it stops at total)
    failed: int = 0  #: connection errors and 5xx
    lost_sessions: int = 0  #: 401 after a successful login
    restarts: list[tuple[str, int, int]] = field(default_factory=list)  #: (id, pid before, after)
    sent: int = 0  #: HTTP requests the users wrote to the balancer (their own count)
    answered: int = 0  #: HTTP responses the users read back
    capture: CaptureSummary | None = None  #: the capture's summary; None: no capture
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
        return observe(
            f"litmus.under-load.{slug(self.variant)}.restarts", "restart each backend in turn",
            bool(self.restarts) and not same,
            done="drained, restarted and put back " + ", ".join(b for b, _, _ in self.restarts),
            seen="a new process answers on each backend's port",
            evidence=[Evidence(f"{b} pid", old, new) for b, old, new in self.restarts],
            why_not=("; ".join(same) + ": the same process (or none) answered"
                     if same else "no backend was restarted"))

    def counted(self) -> Observation:
        """What the users wrote, and why it is more than the requests asked for."""
        late = self.requests - self.total
        parts = self.requests + self.logins + self.relogins
        return observe(
            f"litmus.under-load.{slug(self.variant)}.counts", "the users' own counts",
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
            f"litmus.under-load.{slug(self.variant)}.pcap", "the capture file",
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
            f"litmus.under-load.{slug(self.variant)}.capture",
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


def load_pcap(pcap: str | None, design: str, designs: int) -> Path:
    """Where the --under-load capture of one design goes: one file per design."""
    from protolab.wire.paths import default_capture_path

    name = slug(design)
    if not pcap:
        return default_capture_path(f"litmus-{name}")
    path = Path(pcap)
    return path if designs == 1 else path.with_name(f"{path.stem}-{name}{path.suffix}")


def run_under_load(chosen: list[Variant], requests: int, capture: bool, pcap: str | None,
                   out: Out) -> bool:
    """`protolab litmus --under-load`: a rolling restart per design, printed; True when a
    capture was incomplete or a restart was not seen."""
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
