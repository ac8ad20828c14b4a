"""`protolab tls-demo` (worksheet 08): a TLS 1.3 session ticket is the server's state, encrypted
under its ticket key, in the client's hands.

Where state lives: after a full handshake the server (Python's `ssl`, OpenSSL 3, stateless tickets)
seals the session into a ticket and sends it, encrypted, in a NewSessionTicket; the client stores
it (`SSLSession`) and presents it in its next ClientHello (`pre_shared_key`, extension 41). The
server keeps only its ticket key, in its `SSLContext`: its session cache stays empty. So the
litmus test moves to the key: a restarted server (a new context, a new key) cannot open the ticket
and makes a full handshake; two backends forked from one context share the key and resume each
other's tickets behind a TCP relay; two with their own contexts do not (sticky again).

Every finding is an observation of this run: what the client's `ssl` said (`session_reused`, the
session's ticket and lifetime), what each backend answered (its name, PID, `resumed=`, and how many
sessions it held), and the ClientHello/ServerHello of each connection in this run's capture
(extension 41 in each). The client's key log is written beside the capture (`PCAP.keys`);
`--pcapng` embeds it, so the capture decrypts from the file alone.
"""

from __future__ import annotations

import datetime
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protolab.analysis.facts import Row
from protolab.analysis.observe import Findings
from protolab.labs.output import (
    capture_off_line,
    indent,
    print_findings,
    print_state_table,
    print_summary,
    show_capture,
    table,
)
from protolab.labs.tls_findings import build_findings, where_from_capture
from protolab.net.processes import ServerProcess, restartable_port
from protolab.net.tcp_relay import TcpRelay
from protolab.net.tls_backend import parse_answer
from protolab.protocols.quic import make_credentials
from protolab.wire.capture import Capture, CaptureSummary
from protolab.wire.files import write_text_atomic
from protolab.wire.paths import default_capture_path

LAB = "tls-demo"
WHERE_TITLE = "Where TLS session state lives:"
MODULE = "protolab.net.tls_backend"
Out = Callable[[str], None]

__all__ = ["LAB", "WHERE_TITLE", "Attempt", "TlsDemoResult", "run", "where_from_capture"]


@dataclass
class Attempt:
    """One TLS connection of the run: what the client offered and what both ends said."""

    part: str  #: "direct", "restarted", "shared", "separate"
    label: str  #: what this connection is, in the lab's words
    via: str  #: where the client connected ("server 127.0.0.1:P", "relay 127.0.0.1:P")
    offered: bool  #: the client presented a session (ticket)
    reused: bool = False  #: the client's `session_reused`
    answer: dict = field(default_factory=dict)  #: the backend's line, parsed
    client_port: int = 0
    error: str = ""  #: why the connection failed ("" when it did not)
    has_ticket: bool = False  #: the client's session after it: a ticket?
    lifetime: int = 0  #: its ticket_lifetime_hint (s)
    hello: Row | None = None  #: the client's ClientHello in the capture (client leg)
    server_hello: Row | None = None  #: the ServerHello on the client leg

    @property
    def backend(self) -> str:
        return self.answer.get("backend", "?")

    def server_said(self) -> str:
        if self.error:
            return f"no answer ({self.error})"
        a = self.answer
        return (f"{a.get('backend')} pid {a.get('pid')}: resumed={a.get('resumed')}, "
                f"sessions held={a.get('sessions_held')}")


@dataclass
class TlsDemoResult:
    attempts: list[Attempt] = field(default_factory=list)
    restart: tuple[int, int] = (0, 0)  #: server pid before → after the restart
    keylog: Path | None = None  #: the client's SSLKEYLOGFILE, beside the capture
    capture: CaptureSummary | None = None
    capture_off: str = ""
    rows: list[Row] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def problem(self) -> str:
        return self.findings.problem()

    def get(self, part: str) -> list[Attempt]:
        return [a for a in self.attempts if a.part == part]


class _Client:
    """A TLS 1.3 client that keeps the session (the ticket) its first connection was given;
    each connection is recorded in `log`."""

    def __init__(self, cafile: Path, keylog: Path, log: list[Attempt]) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_verify_locations(cafile)
        self.ctx.keylog_filename = str(keylog)
        self.session: ssl.SSLSession | None = None
        self.log = log

    def connect(self, attempt: Attempt, address: tuple[str, int], out: Out) -> Attempt:
        """Connect, present the kept ticket when `attempt.offered` (else start afresh and keep
        the new one), send a line, read the backend's."""
        session = self.session if attempt.offered else None
        attempt.offered = session is not None
        try:
            with socket.create_connection(address, timeout=10) as raw:
                attempt.client_port = raw.getsockname()[1]
                with self.ctx.wrap_socket(raw, server_hostname="127.0.0.1",
                                          session=session) as tls:
                    tls.sendall(b"hello\n")
                    attempt.answer = parse_answer(tls.recv(1024))
                    attempt.reused = tls.session_reused
                    got = tls.session  # TLS 1.3: the ticket came after the handshake
            attempt.has_ticket = bool(got is not None and got.has_ticket)
            attempt.lifetime = got.ticket_lifetime_hint if got is not None else 0
            if session is None:
                self.session = got
        except (OSError, ssl.SSLError) as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
        self.log.append(attempt)
        out(f"   {attempt.label} (from :{attempt.client_port} to {attempt.via}): ticket "
            f"offered: {'yes' if attempt.offered else 'no'}; client's session_reused: "
            f"{attempt.reused}; the backend said: {attempt.server_said()}")
        return attempt


def run_tls_demo(capture: bool = True, pcap: str | Path | None = None, out: Out = print,
                 capture_off_reason: str = "--no-capture", faults: object = None
                 ) -> TlsDemoResult:
    """Parts 1-5 captured; the key log written beside the capture; findings and the table."""
    path = Path(pcap) if pcap else default_capture_path(LAB)
    result = TlsDemoResult(keylog=path.with_suffix(".keys"))
    tmp = Path(tempfile.mkdtemp(prefix="protolab-tls-"))
    try:
        cert, key = pem_files(make_credentials(datetime.datetime.now(datetime.UTC)), tmp)
        client = _Client(cert, tmp / "client.keys", result.attempts)
        port = restartable_port()
        with Capture([port], path, enabled=capture, off_reason=capture_off_reason) as cap:
            if not cap.active:
                result.capture_off = cap.summary.off_reason or capture_off_reason
                out(capture_off_line(cap.summary, LAB, capture_off_reason))
            pem = (str(cert), str(key))
            _parts_1_to_3(result, client, pem, port, out)
            _behind_relay(client, pem, cap, True, out)
            _behind_relay(client, pem, cap, False, out)
        result.capture = cap.summary
        if (tmp / "client.keys").exists():
            write_text_atomic(result.keylog, (tmp / "client.keys").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _report(result, cap.active, path, out)
    return result


def pem_files(creds: object, directory: Path) -> tuple[Path, Path]:
    """The run's certificate (`protolab.protocols.quic.make_credentials`) as cert.pem and
    key.pem in `directory`, for the backends' `SSLContext.load_cert_chain`."""
    from cryptography.hazmat.primitives import serialization

    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(creds.pem)
    key.write_bytes(creds.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert, key


def _args(pem: tuple[str, str], *serve: str) -> list[str]:
    return ["--cert", pem[0], "--key", pem[1], *serve]


def _parts_1_to_3(result: TlsDemoResult, client: _Client, pem: tuple[str, str], port: int,
                  out: Out) -> None:
    addr, via = ("127.0.0.1", port), f"server :{port}"
    server = ServerProcess(MODULE, args=_args(pem, f"server:{port}"))
    try:
        out(f"1. A TLS 1.3 server (Python ssl, {ssl.OPENSSL_VERSION}) on 127.0.0.1:{port}, pid "
            f"{server.pid}. The client has no ticket yet:")
        first = client.connect(Attempt("direct", "full handshake", via, False), addr, out)
        out(f"   the client now holds a session with a ticket: {first.has_ticket}, lifetime "
            f"{first.lifetime} s (ticket and resumption secret: client app memory)")
        out("\n2. Again, presenting the ticket:")
        client.connect(Attempt("direct", "resumption", via, True), addr, out)
        old = server.pid
        server.kill()
        server = ServerProcess(MODULE, args=_args(pem, f"server:{port}"))
        result.restart = (old, server.pid)
        out(f"\n3. The server restarted (pid {old} → {server.pid}): a new SSLContext, a new "
            f"ticket key. The client presents the same ticket:")
        client.connect(Attempt("restarted", "old ticket, new key", via, True), addr, out)
    finally:
        server.kill()


def _behind_relay(client: _Client, pem: tuple[str, str], cap: Capture, shared: bool,
                  out: Out) -> None:
    """Two backends behind a round-robin TCP relay: forked from one context (shared ticket key)
    or each its own process and context; b1 issues a ticket, which goes to b2, then to b1."""
    procs, ports = _backends(pem, shared)
    for port in ports:
        cap.add_port(port)
    part = "shared" if shared else "separate"
    try:
        with TcpRelay([("127.0.0.1", p) for p in ports]) as relay:
            cap.add_port(relay.address[1])
            how = ("forked from one SSLContext: one ticket key" if shared else
                   "two processes, each its own SSLContext: two ticket keys")
            out(f"\n{4 if shared else 5}. Two backends, {how}, behind a round-robin TCP relay "
                f"on 127.0.0.1:{relay.address[1]} (protolab's balancer reads HTTP; this one "
                f"passes the TLS bytes through): b1 :{ports[0]}, b2 :{ports[1]}")
            via = f"relay :{relay.address[1]}"
            client.connect(Attempt(part, "new session", via, False), relay.address, out)
            client.connect(Attempt(part, "its ticket, next backend", via, True),
                           relay.address, out)
            client.connect(Attempt(part, "its ticket, back to the first", via, True),
                           relay.address, out)
    finally:
        for p in procs:
            p.kill()



#: tries at starting the two backends, each on two ports found free just before
BACKEND_TRIES = 3


def _backends(pem: tuple[str, str], shared: bool) -> tuple[list[ServerProcess], list[int]]:
    """The two backends of a part and their ports: two ports found free, and, when a backend
    cannot bind its port after all (another program took it between the look and the bind, or
    the look found the same port twice), two others, a few times."""
    tries = BACKEND_TRIES
    while True:
        tries -= 1
        ports = [restartable_port(), restartable_port()]  # (the same twice: one fails, too)
        serve = [f"b{i}:{p}" for i, p in enumerate(ports, 1)]
        try:
            return ([ServerProcess(MODULE, args=_args(pem, *serve))] if shared else
                    ServerProcess.many(MODULE, [_args(pem, s) for s in serve])), ports
        except RuntimeError:  # its port taken: it said nothing and ended
            if not tries:
                raise


def _report(result: TlsDemoResult, captured: bool, path: Path, out: Out) -> None:
    shown: list[str] = []
    if captured and result.capture is not None:
        result.rows = show_capture(result.capture, shown.append)
        _match_hellos(result)
    result.findings = build_findings(result, captured)
    out("\nEach connection, from both ends and from the capture (ext 41 = pre_shared_key):")
    out(indent(table([_line(a) for a in result.attempts],
                     ("part", "connection", "offered", "session_reused", "backend said",
                      "ClientHello", "ServerHello"))))
    print_findings(result.findings.observations, out)
    for line in shown:
        out(line)
    if captured:
        out(f"Decrypt it (the NewSessionTickets, the backends' answers): tshark -r {path} -o "
            f"tls.keylog_file:{result.keylog} -Y tls.handshake.type==4")
    print_state_table(WHERE_TITLE, result.findings.where, out)
    _compare(out)
    print_summary(LAB, result.findings, out)


def _hello_text(row: Row | None) -> str:
    if row is None:
        return "-"
    return f"#{row.number} " + ("ext 41" if row.fields.get("tls_psk") else "no ext 41")


def _line(a: Attempt) -> tuple:
    return (a.part, a.label, "yes" if a.offered else "no", a.reused,
            a.server_said(), _hello_text(a.hello), _hello_text(a.server_hello))


def _match_hellos(result: TlsDemoResult) -> None:
    """Each attempt's ClientHello and ServerHello on the client's own connection."""
    for a in result.attempts:
        mine = f":{a.client_port}"
        a.hello = next((r for r in result.rows if r.src.endswith(mine)
                        and r.fields.get("tls_hello") == "ClientHello"), None)
        a.server_hello = next((r for r in result.rows if r.dst.endswith(mine)
                               and r.fields.get("tls_hello") == "ServerHello"), None)


def _compare(out: Out) -> None:
    """Side by side with lab 05 (explanations: lab 05's run shows its half)."""
    out("\nSide by side with lab 05 (explanation, not a finding: lab 05 runs the web half):")
    out(indent(table([
        ("JWT (lab 05)", "signing key, shared by every backend", "any backend: the token "
         "carries the state"),
        ("in-memory session (lab 05)", "each backend's own memory", "only the backend that "
         "made it: sticky"),
        ("ticket, shared key (part 4)", "ticket key, copied by fork", "either backend"),
        ("ticket, own keys (part 5)", "each backend's own ticket key", "only the issuer: "
         "sticky again"),
    ], ("state the client carries", "what the server keeps", "who can use it"))))


run = run_tls_demo  #: the registry's entry point (protolab.labs.DEMOS)
