"""Hosts with their own kernels (issue 16): namespaces, veth links, a NAT router, its conntrack
table, and teardown whatever way a run ends.

Every fact is asked of the kernel or of a real tool: `ip netns list`, `ip link`, `nft`,
`conntrack -L` inside the router, the counter server's own reply. A child process that builds a
topology is stopped by SIGTERM, SIGINT and SIGKILL at a point it announced (no sleeps), and what it
made must be gone — after SIGKILL only once `protolab doctor --clean` ran.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from protolab.net import conntrack, leftovers, nft
from protolab.net.topology import Topology, TopologyError, client_router_server, lock_path

from conftest import ROOT, require, run_cli

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def namespaces_here() -> None:
    require(os.geteuid() == 0, "network namespaces need root")
    for tool in ("ip", "nft", "conntrack"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def root_tables() -> list[tuple[str, str]]:
    return nft.tables()


def ours(run: str) -> set[str]:
    return {n for n in netns_list() if f"-{run}-" in n}


def exchange(net, port: int, payload: bytes = b"seq=1 total=0 add=5") -> tuple[bytes, int]:
    """One request from the client's kernel to the server process; (reply, client port)."""
    with net.client.socket() as sock:
        sock.settimeout(5)
        sock.sendto(payload, (net.server_if.address, port))
        reply, _ = sock.recvfrom(512)
        return reply, sock.getsockname()[1]


def test_a_datagram_through_the_nat_leaves_a_translated_entry_in_the_routers_table() -> None:
    links_before, tables_before = root_links(), root_tables()
    with Topology() as topo:
        net = client_router_server(topo)
        server = topo.spawn(net.server, "protolab.net.counter_server",
                            ["0", net.server_if.address])
        reply, client_port = exchange(net, server.port)
        assert reply.startswith(b"seq=1 total=5 ")  # the server process answered, through NAT
        entries = [e for e in conntrack.read(net.router.netns)
                   if e.proto == "udp" and e.original.dport == server.port]
        assert len(entries) == 1, entries
        [entry] = entries
        assert (entry.original.src, entry.original.sport) == (net.client_if.address, client_port)
        assert entry.original.dst == entry.reply.src == net.server_if.address
        assert entry.translated and entry.reply.dst == net.outside.address
        assert "SRC_NAT" in entry.flags and "SEEN_REPLY" in entry.flags
        assert 0 < entry.timeout <= int(topo.read_sysctl(
            net.router, "net/netfilter/nf_conntrack_udp_timeout"))
        # conntrack(8) inside the router reads the same entry from the same kernel
        listed = net.router.run("conntrack", "-L", "-p", "udp", "--dport", str(server.port))
        assert listed.returncode == 0, listed.stderr
        words = listed.stdout.split()
        assert f"src={net.client_if.address}" in words and f"sport={client_port}" in words
        assert f"dst={entry.reply.dst}" in words and f"dport={entry.reply.dport}" in words
        # nothing of this run is in the machine's own namespace, and the namespaces have no
        # conntrack entry of the router's: each host is a kernel of its own
        assert not [e for e in conntrack.read(net.client.netns) if e.translated]
        run = topo.run
        assert len(ours(run)) == 3
    assert not ours(run)
    assert root_links() == links_before and root_tables() == tables_before
    assert not lock_path(run).exists()


def test_each_step_can_be_asked_again_and_the_network_is_the_same() -> None:
    with Topology() as topo:
        first = client_router_server(topo)
        again = client_router_server(topo)  # hosts, links, addresses, route, rules: all exist
        assert again == first
        links = first.router.run("ip", "-o", "link", "show").stdout.splitlines()
        assert len(links) == 3  # lo, lan, wan: no second pair
        rules = first.router.run("nft", "list", "ruleset").stdout
        assert rules.count("masquerade") == 1  # the table was replaced, not doubled
        server = topo.spawn(first.server, "protolab.net.counter_server",
                            ["0", first.server_if.address])
        assert exchange(first, server.port)[0].startswith(b"seq=1 total=5 ")


def test_two_runs_coexist_with_the_same_host_and_interface_names() -> None:
    with Topology() as one, Topology() as two:
        a, b = client_router_server(one), client_router_server(two)
        assert a.router.netns != b.router.netns
        for topo, net in ((one, a), (two, b)):
            server = topo.spawn(net.server, "protolab.net.counter_server",
                                ["0", net.server_if.address])
            assert exchange(net, server.port)[0].startswith(b"seq=1 total=5 ")
        gone = one.run
    assert not ours(gone) and not ours(two.run)


def test_an_exception_in_the_block_still_removes_everything() -> None:
    with pytest.raises(TopologyError, match="interface name"), Topology() as topo:
        net = client_router_server(topo)
        server = topo.spawn(net.server, "protolab.net.counter_server")
        topo.link(net.client, "a-name-much-too-long", "10.0.0.1/24", net.server, "x",
                  "10.0.0.2/24")
    assert not ours(topo.run)
    assert server.proc.poll() is not None  # the process inside a host was killed and reaped


# -- a run stopped from outside --------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, threading
    from protolab.net import lifecycle
    from protolab.net.topology import Topology, client_router_server
    lifecycle.handle_signals()
    try:
        with Topology() as topo:
            net = client_router_server(topo)
            server = topo.spawn(net.server, "protolab.net.counter_server",
                                ["0", net.server_if.address])
            print("ready", topo.run, server.pid, flush=True)
            threading.Event().wait()
    except lifecycle.Stopped as stop:
        sys.exit(stop.exit_status)
    finally:
        lifecycle.finish()
""")


def start_child() -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    words = proc.stdout.readline().split()
    if len(words) != 3 or words[0] != "ready":
        proc.kill()
        pytest.fail(f"the child did not build its topology: {words} {proc.stderr.read()}")
    return proc, words[1], int(words[2])


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_removes_the_hosts_and_their_processes(signum: int) -> None:
    proc, run, server_pid = start_child()
    assert len(ours(run)) == 3 and lock_path(run).exists()
    proc.send_signal(signum)
    status = proc.wait(30)
    assert status == 128 + signum, proc.stderr.read()
    assert not ours(run)
    assert not lock_path(run).exists()
    assert gone(server_pid)
    proc.stdout.close()
    proc.stderr.close()


def test_after_sigkill_only_doctor_clean_removes_what_was_left() -> None:
    proc, run, server_pid = start_child()
    with Topology() as alive:  # a live run, which --clean must leave alone
        alive.host("bystander")
        proc.kill()
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
        assert len(ours(run)) == 3  # nothing could clean up: the namespaces are still mounted
        found = {(x.kind, x.name) for x in leftovers.find()}
        assert {("namespace", n) for n in ours(run)} <= found
        assert ("lock", run) in found
        assert not any(alive.run in name for _, name in found)
        cleaned = run_cli("doctor", "--clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert not ours(run) and not lock_path(run).exists()
        for name in sorted(n for k, n in found if k == "namespace" and run in n):
            assert f"removed namespace {name}" in cleaned.stdout
        assert ours(alive.run) == {alive.hosts["bystander"].netns}
    again = run_cli("doctor", "--clean")
    assert again.returncode == 0
    assert not any(run in line for line in again.stdout.splitlines())


def test_doctor_clean_without_root_says_so_in_one_line() -> None:
    setpriv = shutil.which("setpriv")
    require(setpriv is not None, "setpriv is not installed")
    out = run_cli("doctor", "--clean", prefix=(setpriv, "--reuid", "65534", "--regid", "65534",
                                               "--clear-groups"))
    assert out.returncode == 2  # a problem the user can fix (cli.CliError)
    assert out.stderr.strip().count("\n") == 0 and "root" in out.stderr
    assert "Traceback" not in out.stderr
