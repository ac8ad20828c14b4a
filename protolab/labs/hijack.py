"""`protolab hijack-demo` (worksheet 09): steal the session from the capture.

Where state lives: a session cookie is only the key to state the server holds (a backend's memory,
or a shared store); a JWT is the state itself, signed, held by the client. Whoever captures
either can replay it from another address and is the victim, until the server forgets the key.
Logging out deletes the server's session (memory, store: the next replay gets 401); a JWT holds
nothing on the server to delete, so it stays good until `exp`, unless every request is checked
against a deny-list (state again, and a store lookup per request). Behind a TLS-terminating
balancer the capture holds only encrypted records; with the client's key log it decrypts, and the
theft works again: protection is about who holds the keys.

Every finding is an observation of this run: the responses the victim and the attacker got (status,
body, from which source port), what the capture held when the attacker read it (packet numbers),
what tshark decrypted with the key log, and the latencies measured with and without the deny-list.
"""

from __future__ import annotations

import datetime
import shutil
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from protolab.analysis.exposed import Exposed, Material, Scan, scan
from protolab.analysis.facts import Row
from protolab.analysis.observe import Findings
from protolab.labs.cluster import LOGIN, Client, Cluster, Variant
from protolab.labs.output import capture_off_line
from protolab.net.lb import Policy, TlsFront
from protolab.protocols.webapp import Design
from protolab.wire.capture import Capture, CaptureSummary
from protolab.wire.files import write_text_atomic
from protolab.wire.paths import default_capture_path

LAB = "hijack-demo"
WHERE_TITLE = "Where the stolen session's state lives:"
VICTIM, ATTACKER = "127.0.0.1", "127.0.0.2"  #: the attacker replays from another address
LATENCY_REQUESTS = 150  #: requests per case (with and without the deny-list), interleaved
Out = Callable[[str], None]

__all__ = ["LAB", "WHERE_TITLE", "Exchange", "HijackResult", "run", "where_from_capture"]


@dataclass(frozen=True)
class Setup:
    """One design of the matrix: its name, the variant, and whether it keeps a deny-list."""

    name: str  #: "memory", "store", "jwt", "jwt+denylist"
    design: Design
    denylist: bool = False

    @property
    def cookie(self) -> bool:
        return self.design is not Design.JWT


SETUPS = (Setup("memory", Design.MEMORY), Setup("store", Design.STORE),
          Setup("jwt", Design.JWT), Setup("jwt+denylist", Design.JWT, True))


@dataclass
class Exchange:
    """One request of the run and the response its client read."""

    who: str  #: "victim" or "attacker"
    design: str  #: a Setup's name, or "tls"
    step: str  #: "login", "profile", "replay", "logout", "replay after logout", ...
    status: int = 0  #: 0: no response
    body: dict = field(default_factory=dict)
    port: int = 0  #: the client's source port
    error: str = ""  #: why there was no response

    @property
    def source(self) -> str:
        return f"{ATTACKER if self.who == 'attacker' else VICTIM}:{self.port}"

    def said(self) -> str:
        if not self.status:
            return f"no response ({self.error})"
        b = self.body
        what = b.get("error") or (f"user {b['user']}" if "user" in b else "") or \
            (f"logged_out {b['logged_out']}" if "logged_out" in b else "")
        return f"HTTP {self.status}" + (f" {what}" if what else "")


@dataclass
class Theft:
    """What the attacker took, and from where."""

    value: str  #: the cookie's value or the bearer token
    found: Exposed | None = None  #: where the capture exposed it (None: capture off)


@dataclass
class Latency:
    """p50 of GET /profile with a valid token, straight to each jwt backend (keep-alive)."""

    without: list[float] = field(default_factory=list)  #: seconds, no deny-list
    with_list: list[float] = field(default_factory=list)  #: seconds, deny-list lookup each time

    @staticmethod
    def p50(samples: list[float]) -> float:
        return statistics.median(samples) * 1000 if samples else 0.0


@dataclass
class TlsPart:
    balancer: str = ""  #: nginx or haproxy
    port: int = 0  #: where it terminates TLS
    ca: Path | None = None  #: the run's certificate, which the clients trust
    session: str = ""  #: the victim's session id over TLS (its client's cookie jar)
    scan: Scan | None = None  #: what the capture exposes on the TLS port (no key log)
    id_in_bytes: bool = False  #: the victim's session id appears in the TLS port's raw bytes
    #: tshark's reading with the key log: (frame, Cookie, Set-Cookie)
    decrypted: list[tuple[int, str, str]] = field(default_factory=list)
    tshark: str = ""  #: why tshark did not decrypt ("" when it ran)
    replay: Exchange | None = None


@dataclass
class HijackResult:
    exchanges: list[Exchange] = field(default_factory=list)
    thefts: dict[str, Theft] = field(default_factory=dict)  #: design → what was replayed
    balancers: dict[str, int] = field(default_factory=dict)  #: design → balancer port
    planted: dict[str, str] = field(default_factory=dict)  #: design → attacker-chosen id
    fixed: dict[str, str] = field(default_factory=dict)  #: design → the id its login set instead
    latency: Latency = field(default_factory=Latency)
    tls: TlsPart = field(default_factory=TlsPart)
    keylog: Path | None = None
    capture: CaptureSummary | None = None
    capture_off: str = ""
    final: Scan | None = None  #: what the written capture exposes, all of it
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def problem(self) -> str:
        return self.findings.problem()

    def get(self, design: str, step: str, who: str = "attacker") -> Exchange | None:
        return next((e for e in self.exchanges if (e.design, e.step, e.who) ==
                     (design, step, who)), None)


def _send(result: HijackResult, client: Client, who: str, design: str, step: str,
          method: str, path: str, fields: dict | None = None) -> Exchange:
    ex = Exchange(who, design, step)
    try:
        r = client.request(method, path, fields)
        ex.status, ex.body = r.status, r.body
    except OSError as exc:
        ex.error = f"{type(exc).__name__}: {exc}"
    ex.port = client.last_port
    result.exchanges.append(ex)
    return ex


def _line(ex: Exchange, what: str) -> str:
    return f"   {ex.who:<8} {ex.source:<17} {what} → {ex.said()}"


def run_hijack_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                    capture_off_reason: str = "--no-capture", lb: str = "nginx"
                    ) -> HijackResult:
    """The four designs in plain HTTP and one behind TLS, captured; the thefts from the
    capture; the deny-list's cost; findings and the table."""
    from protolab.labs.hijack_report import report

    path = Path(pcap) if pcap else default_capture_path(LAB)
    result = HijackResult(keylog=path.with_suffix(".keys"))
    tmp = Path(tempfile.mkdtemp(prefix="protolab-hijack-"))
    clusters: dict[str, Cluster] = {}
    # The threads that start the clusters live as long as they do: a child's parent-death
    # signal (prctl PR_SET_PDEATHSIG) fires when the *thread* that forked it ends.
    pool = ThreadPoolExecutor(len(SETUPS) + 1)
    try:
        clusters, ctx = _start(pool, tmp, lb, result)
        ports = [*result.balancers.values(), result.tls.port]
        with Capture(ports, path, enabled=capture, off_reason=capture_off_reason) as cap:
            if not cap.active:
                result.capture_off = cap.summary.off_reason or capture_off_reason
                out(capture_off_line(cap.summary, LAB, capture_off_reason))
            for n, setup in enumerate(SETUPS, 1):
                _design(result, setup, clusters[setup.name], cap, n, out)
            _fixation(result, clusters, out)
            victim = _tls_victim(result, clusters["tls"], ctx, out)
        result.capture = cap.summary
        _measure_denylist(result, clusters, out)
        if (tmp / "client.keys").exists():
            write_text_atomic(result.keylog, (tmp / "client.keys").read_text())
        if cap.active:
            from protolab.labs.hijack_tls import tls_theft

            tls_theft(result, clusters["tls"], path, victim, out)
    finally:
        _stop_all(clusters.values())
        pool.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    report(result, cap.active, path, out)
    return result


def _start(pool: ThreadPoolExecutor, tmp: Path, lb: str, result: HijackResult
           ) -> tuple[dict[str, Cluster], ssl.SSLContext]:
    """A cluster (one backend behind protolab's balancer) per design, and "tls": one memory
    backend behind a TLS-terminating `lb` with a certificate made now; all started at once.
    And the victim's TLS context (its key log on)."""
    from protolab.labs.tls import pem_files
    from protolab.protocols.quic import make_credentials

    cert, key = pem_files(make_credentials(datetime.datetime.now(datetime.UTC)), tmp)
    makers: dict[str, Callable[[], Cluster]] = {
        s.name: partial(Cluster, Variant(s.design, None if s.design is Design.MEMORY
                                         else f"sqlite:{tmp}/{s.name}.db"),
                        Policy.ROUND_ROBIN, n=1, denylist=s.denylist) for s in SETUPS}
    makers["tls"] = partial(Cluster, Variant(Design.MEMORY), Policy.ROUND_ROBIN, n=1, lb=lb,
                            tls=TlsFront(str(cert), str(key)))
    clusters = _start_all(pool, makers)
    result.balancers = {s.name: clusters[s.name].address[1] for s in SETUPS}
    result.tls.balancer, result.tls.port = lb, clusters["tls"].address[1]
    result.tls.ca = cert
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.keylog_filename = str(tmp / "client.keys")
    return clusters, ctx


def _start_all(pool: ThreadPoolExecutor, makers: dict[str, Callable[[], Cluster]]
               ) -> dict[str, Cluster]:
    """Start every cluster at once in `pool` (each is processes that take a Python start-up);
    if one fails, stop the others and raise its error."""
    futures = {name: pool.submit(make) for name, make in makers.items()}
    made, error = {}, None
    for name, future in futures.items():
        try:
            made[name] = future.result()
        except BaseException as exc:  # noqa: BLE001 - raised below, after the others stop
            error = error or exc
    if error is not None:
        _stop_all(made.values())
        raise error
    return made


def _stop_all(clusters: Iterable[Cluster]) -> None:
    """Stop every cluster at once: a balancer's stop waits out its server loop's poll."""
    threads = [threading.Thread(target=c.stop) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def steal(cap: Capture, port: int, cookie: bool) -> Exposed | None:
    """What the capture holds so far: the last cookie (or bearer token) sent to `port`."""
    if not cap.active or not cap.drain():
        return None
    found = scan(enumerate(cap.decoded(), 1)).items
    want = Material.COOKIE if cookie else Material.BEARER
    hits = [e for e in found if e.material is want and e.dst.endswith(f":{port}")
            and (e.name == "sessionId" or not cookie)]
    return hits[-1] if hits else None


def _design(result: HijackResult, setup: Setup, cluster: Cluster, cap: Capture, n: int,
            out: Out) -> None:
    name, addr = setup.name, cluster.address
    b1 = cluster.procs["b1"]
    out(f"\n{n}. {name}: one backend (b1 pid {b1.pid}) behind protolab's balancer on "
        f"{addr[0]}:{addr[1]}, plain HTTP")
    victim, attacker = Client(addr, VICTIM), Client(addr, ATTACKER)
    ex = _send(result, victim, "victim", name, "login", "POST", "/login", LOGIN)
    out(_line(ex, "POST /login (user, password)"))
    out(_line(_send(result, victim, "victim", name, "profile", "GET", "/profile"),
              "GET /profile"))
    found = steal(cap, addr[1], setup.cookie)
    mine = victim.cookies.get("sessionId", "") if setup.cookie else f"Bearer {victim.token}"
    theft = Theft(found.value if found else mine, found)
    result.thefts[name] = theft
    out(f"   attacker reads the capture so far: {found.line().strip()}" if found else
        "   attacker: nothing read from a capture (capture off): the victim's value handed "
        "over")
    _arm(attacker, setup, theft.value)
    out(_line(_send(result, attacker, "attacker", name, "replay", "GET", "/profile"),
              "GET /profile with it"))
    out(_line(_send(result, victim, "victim", name, "logout", "POST", "/logout"),
              "POST /logout"))
    out(_line(_send(result, attacker, "attacker", name, "replay after logout", "GET",
                    "/profile"), "GET /profile with it again"))


def _arm(client: Client, setup: Setup, value: str) -> None:
    if setup.cookie:
        client.cookies = {"sessionId": value}
    else:
        client.token = value.removeprefix("Bearer ")


def _fixation(result: HijackResult, clusters: dict[str, Cluster], out: Out) -> None:
    """Session fixation: the victim logs in carrying a session id the attacker chose."""
    import secrets

    out("\n5. Session fixation: the victim's login carries a sessionId the attacker chose "
        "(planted earlier); the attacker then replays that id")
    for name in ("memory", "store"):
        addr = clusters[name].address
        planted = "attacker-" + secrets.token_urlsafe(12)
        result.planted[name] = planted
        victim = Client(addr, VICTIM)
        victim.cookies = {"sessionId": planted}
        ex = _send(result, victim, "victim", name, "fixation login", "POST", "/login", LOGIN)
        given = victim.cookies.get("sessionId", "")
        out(_line(ex, f"{name}: POST /login with sessionId={planted}") +
            f", Set-Cookie sessionId={given[:8]}…")
        attacker = Client(addr, ATTACKER)
        attacker.cookies = {"sessionId": planted}
        out(_line(_send(result, attacker, "attacker", name, "fixation replay", "GET",
                        "/profile"), f"{name}: GET /profile with sessionId={planted}"))
        result.fixed[name] = given


def _tls_victim(result: HijackResult, cluster: Cluster, ctx: ssl.SSLContext, out: Out
                ) -> Client:
    addr = cluster.address
    out(f"\n6. TLS in front: {result.tls.balancer} terminates TLS 1.3 on {addr[0]}:{addr[1]} "
        f"(certificate made now) in front of a memory backend (b1 pid "
        f"{cluster.procs['b1'].pid}); the victim's client writes its TLS key log")
    victim = Client(addr, VICTIM, tls=ctx)
    out(_line(_send(result, victim, "victim", "tls", "login", "POST", "/login", LOGIN),
              "POST /login over TLS"))
    out(_line(_send(result, victim, "victim", "tls", "profile", "GET", "/profile"),
              "GET /profile over TLS"))
    return victim


def _measure_denylist(result: HijackResult, clusters: dict[str, Cluster], out: Out) -> None:
    """The deny-list's cost: GET /profile with a valid token, interleaved, straight to each jwt
    backend (no balancer, nothing captured), each request on its own connection as the
    balancer sends them."""
    clients = {}
    for name in ("jwt", "jwt+denylist"):
        clients[name] = Client(("127.0.0.1", clusters[name].procs["b1"].port))
        clients[name].request("POST", "/login", {"user": "bob", "password": "builder"})
    for _ in range(LATENCY_REQUESTS):
        for name, samples in (("jwt", result.latency.without),
                              ("jwt+denylist", result.latency.with_list)):
            start = time.perf_counter()
            if clients[name].request("GET", "/profile").status == 200:
                samples.append(time.perf_counter() - start)
    lat = result.latency
    out(f"\n7. The deny-list's cost: {LATENCY_REQUESTS} GET /profile each, interleaved, "
        f"straight to the jwt backends: p50 {lat.p50(lat.without):.3f} ms without, "
        f"{lat.p50(lat.with_list):.3f} ms with the deny-list (a SQLite lookup per request)")


def where_from_capture(rows: list[Row]) -> list:
    from protolab.labs.hijack_findings import where_from_capture as rows_where

    return rows_where(rows)


run = run_hijack_demo  #: the registry's entry point (protolab.labs.DEMOS)
