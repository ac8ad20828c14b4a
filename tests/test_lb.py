"""The balancers, for real: protolab's, nginx and HAProxy (Debian packages) in front of real backend
processes, and protolab's own balancer against broken backends and broken clients (real sockets).

Who served a request is read from the backend's own `X-Backend` header, never from the balancer.
"""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import pytest

from protolab.cli import main
from protolab.labs.cluster import LOGIN, Client, Cluster, Reply, Variant
from protolab.labs.litmus import DISRUPTIONS, LOGGED_OUT, Disruption, litmus_table
from protolab.net.lb import BACKLOG, LoadBalancer, Policy, Upstream
from protolab.protocols.webapp import Design

from conftest import require_tool, run_cli

BALANCERS = ["protolab", "nginx", "haproxy"]
LATER = (("POST", "/cart/items", {"item": "book"}), ("GET", "/cart", None),
         ("GET", "/profile", None), ("GET", "/cart", None))


def _need(lb: str) -> None:
    if lb != "protolab":
        require_tool(lb)


def _session(cluster: Cluster) -> tuple[Reply, list[Reply]]:
    """A fresh browser: login, then 4 more requests (add item, view cart, profile, view cart)."""
    c = Client(cluster.address)
    login = c.request("POST", "/login", LOGIN)
    return login, [c.request(method, path, body) for method, path, body in LATER]


# -- sticky sessions: every later request goes to the backend that made the session ---------------


@pytest.mark.parametrize("lb", BALANCERS)
def test_sticky_cookie_keeps_each_session_on_the_backend_that_made_it(lb) -> None:
    _need(lb)
    with Cluster(Variant(Design.MEMORY), Policy.STICKY_COOKIE, lb=lb) as cluster:
        sessions = [_session(cluster) for _ in range(3)]
    for login, later in sessions:
        assert login.status == 200, login.body
        assert [r.backend for r in later] == [login.backend] * 4
        # the session lives in that backend's memory, so the workflow goes on: the cart is there
        assert [r.status for r in later] == [200] * 4, [r.body for r in later]
        assert later[1].body["items"] == ["book"] == later[3].body["items"]
    # the first request of each new browser is balanced: three logins, three backends
    assert sorted(login.backend for login, _ in sessions) == ["b1", "b2", "b3"]


@pytest.mark.parametrize("lb", BALANCERS)
def test_litmus_gives_every_balancer_the_same_sticky_verdicts(lb) -> None:
    """`litmus --lb LB` for memory + sticky-cookie: the workflow reaches each disruption (no
    'broke at add item'), the switch finds view cart kept on add item's backend, and each
    disruption logs the user out: the same row for protolab, nginx and HAProxy."""
    _need(lb)
    cells = litmus_table([Variant(Design.MEMORY)], [Policy.STICKY_COOKIE], lb=lb,
                         out=lambda _: None)
    by = {c.disruption: c for c in cells}
    assert [by[d].verdict for d in DISRUPTIONS] == [LOGGED_OUT] * 3 + [""]
    for d in DISRUPTIONS[:3]:
        login, added = by[d].steps[:2]
        assert not by[d].broke_at and (login.status, added.status) == (200, 200)
        assert login.backend == added.backend
    switch = by[Disruption.SWITCH.value]
    assert switch.steps[2].via == "balancer" and switch.steps[2].backend == switch.steps[1].backend
    assert f"the balancer kept {switch.steps[1].backend}" in switch.done.done


@pytest.mark.parametrize("lb", BALANCERS)
def test_lb_command_with_sticky_cookie_runs_the_memory_workflow_to_the_end(lb) -> None:
    """The issue's own reproduction: `lb --design memory --policy sticky-cookie --lb LB`."""
    _need(lb)
    r = run_cli("lb", "--design", "memory", "--policy", "sticky-cookie", "--lb", lb,
                "--no-capture", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    served = re.findall(r"^   (GET|POST) (\S+) → (b\d) \(pid \d+\): HTTP (\d+)", r.stdout, re.M)
    assert len(served) == 4, r.stdout
    assert len({b for _, _, b, _ in served}) == 1 and {s for *_, s in served} == {"200"}
    if lb != "protolab":
        assert f"{lb} configuration:" in r.stdout
    if lb == "haproxy":
        assert "cookie SERVERID insert indirect nocache" in r.stdout


@pytest.mark.parametrize("lb", BALANCERS)
def test_round_robin_spreads_one_clients_requests_over_every_backend(lb, tmp_path) -> None:
    _need(lb)
    variant = Variant(Design.STORE, f"sqlite:{tmp_path}/s.db")
    with Cluster(variant, Policy.ROUND_ROBIN, lb=lb) as cluster:
        login, later = _session(cluster)
    served = [login.backend] + [r.backend for r in later]
    assert set(served) == {"b1", "b2", "b3"}
    assert all(a != b for a, b in pairwise(served)), served  # the next one in turn
    assert [r.status for r in later] == [200] * 4  # a shared store: moving is harmless


@pytest.mark.parametrize("lb", BALANCERS)
def test_ip_hash_keeps_one_address_on_one_backend(lb, tmp_path) -> None:
    _need(lb)
    variant = Variant(Design.MEMORY)
    with Cluster(variant, Policy.IP_HASH, lb=lb) as cluster:
        login, later = _session(cluster)
    assert [r.backend for r in later] == [login.backend] * 4
    assert [r.status for r in later] == [200] * 4


@pytest.mark.parametrize("lb", BALANCERS)
def test_hashing_the_session_cookie_does_not_stick_to_the_backend_that_made_it(lb) -> None:
    """The lesson `cookie-hash`: the login carries no session cookie yet, so the balancer picks
    its backend without one; every later request is sent where the *new* cookie hashes to. That
    is one backend for the whole session (consistent) but, for 2 sessions in 3, not the one
    holding it in memory: 401 from the start. Bounded: at most 12 fresh sessions."""
    _need(lb)
    outcomes = []
    with Cluster(Variant(Design.MEMORY), Policy.COOKIE_HASH, lb=lb) as cluster:
        for _ in range(12):
            login, later = _session(cluster)
            assert login.status == 200, login.body
            assert len({r.backend for r in later}) == 1  # the same cookie, the same backend
            moved = later[0].backend != login.backend
            assert [r.status for r in later] == [401 if moved else 200] * 4
            if moved:
                assert f"backend {later[0].backend} has no such session" in \
                    later[0].body["error"]
            outcomes.append(moved)
            if any(outcomes):
                break
    assert any(outcomes), "12 sessions all hashed to the backend that made them"


@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_the_configuration_is_printed_and_names_the_mechanism(lb) -> None:
    _need(lb)
    wanted = {"nginx": {Policy.STICKY_COOKIE: "map $cookie_route $route_upstream",
                        Policy.COOKIE_HASH: "hash $cookie_sessionId consistent;",
                        Policy.IP_HASH: "ip_hash;", Policy.ROUND_ROBIN: "upstream protolab {"},
              "haproxy": {Policy.STICKY_COOKIE: "cookie SERVERID insert indirect nocache",
                          Policy.COOKIE_HASH: "balance hash req.cook(sessionId)",
                          Policy.IP_HASH: "balance source",
                          Policy.ROUND_ROBIN: "balance roundrobin"}}[lb]
    for policy, needle in wanted.items():
        with Cluster(Variant(Design.MEMORY), policy, n=2, lb=lb) as cluster:
            assert needle in cluster.lb.config
            prefix = cluster.lb.prefix
            assert prefix.exists()
        assert not prefix.exists()  # its temporary config is gone after stop


def test_a_balancer_that_cannot_start_says_why(monkeypatch, capsys) -> None:
    require_tool("haproxy")
    from protolab.net import lb as lbmod

    monkeypatch.setattr(lbmod, "haproxy_config", lambda *a: "this is not a config\n")
    made = set(Path(tempfile.gettempdir()).glob("protolab-haproxy-*"))
    with pytest.raises(lbmod.BalancerError, match="haproxy did not start: .*unknown keyword"):
        lbmod.HAProxy([Upstream("b1", "127.0.0.1", 9)], Policy.ROUND_ROBIN)
    assert set(Path(tempfile.gettempdir()).glob("protolab-haproxy-*")) <= made  # cleaned up
    # and the command says so in one line, exit 2, no traceback
    assert main(["lb", "--lb", "haproxy", "--no-capture", "--backends", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("protolab: error: haproxy did not start:") and err.count("\n") == 1


@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_a_port_taken_by_another_process_is_not_mistaken_for_the_balancer(lb, monkeypatch) -> None:
    """Readiness is the kernel's record of who listens, not a connect that anyone could answer:
    the first free port is taken before the balancer binds it; it starts on another one."""
    _need(lb)
    from protolab.net import lb as lbmod

    held = socket.create_server(("127.0.0.1", 0))
    offered = [held.getsockname()[1]]
    real = lbmod._free_port
    monkeypatch.setattr(lbmod, "_free_port", lambda: offered.pop() if offered else real())
    with held, lbmod.start_balancer(lb, [Upstream("b1", "127.0.0.1", 9)],
                                    Policy.ROUND_ROBIN) as child:
        assert not offered and child.port != held.getsockname()[1]
        assert lbmod._listeners(child.port) & lbmod._sockets_of(child.proc.pid)


# -- protolab's balancer against broken backends and clients (item 12), and its backlog (13) ------


@contextmanager
def _one_shot_backend(reply: bytes) -> Iterator[tuple[str, int]]:
    """A real TCP backend that reads one request head and answers `reply` raw, then closes."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                data += chunk
            conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()
    t.join(10)
    srv.close()


def _ask_raw(address: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("reply", [b"HTTP/1.1 200 OK", b"", b"garbage\r\n\r\n"],
                         ids=["no-crlf", "empty", "not-http"])
def test_a_broken_backend_reply_gets_502_not_an_empty_reply(reply) -> None:
    with _one_shot_backend(reply) as (host, port), \
            LoadBalancer([Upstream("b1", host, port)], Policy.ROUND_ROBIN) as lb:
        answer = _ask_raw(lb.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), answer


def test_a_non_utf8_request_line_is_served_and_logged() -> None:
    logged: list[str] = []  # the balancer logs before it closes the client's connection
    with _one_shot_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") as (host, port), \
            LoadBalancer([Upstream("b1", host, port)], Policy.ROUND_ROBIN,
                         log=logged.append) as lb:
        answer = _ask_raw(lb.address, b"GET /caf\xe9\xff HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"ok")
    assert len(logged) == 1 and logged[0].startswith("GET /caf") and logged[0].endswith("→ b1")


def test_a_bad_content_length_gets_400() -> None:
    with LoadBalancer([Upstream("b1", "127.0.0.1", 9)], Policy.ROUND_ROBIN) as lb:
        answer = _ask_raw(lb.address, b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer


def test_the_balancer_listens_with_a_realistic_backlog() -> None:
    """The kernel's own record (`ss -ltn`: Send-Q of a listening socket is its backlog)."""
    ss = require_tool("ss")
    with LoadBalancer([Upstream("b1", "127.0.0.1", 9)], Policy.ROUND_ROBIN) as lb:
        port = lb.address[1]
        out = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.split()
    with open("/proc/sys/net/core/somaxconn") as f:  # the kernel's cap on any backlog
        cap = int(f.read())
    assert BACKLOG >= 128
    assert int(out[2]) == min(BACKLOG, cap), out
