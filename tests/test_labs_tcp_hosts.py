"""`protolab tcp-demo --hosts`: the TCP lab between two network namespaces over a veth link.

Each host's table is the kernel's, read inside that host by the run; the checks compare the three
tables (client host, server host, this machine's own) against each other, and the capture against
tshark's reading of it (frame.interface_name is the capture point). `ip netns` says what is left
after a normal run and after a stop signal.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from protolab.analysis.observe import Status
from protolab.labs.tcp_hosts import STEPS, run_tcp_hosts_demo

from conftest import ROOT, require, require_tool, run_cli, tshark_fields

pytestmark = pytest.mark.timeout(120)


def _root() -> None:
    require(os.geteuid() == 0, "network namespaces need root")
    require_tool("ip")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    if os.geteuid() != 0:
        return None
    path = tmp_path_factory.mktemp("hosts") / "tcp-demo-hosts.pcapng"
    lines: list[str] = []
    return run_tcp_hosts_demo(pcap=path, out=lines.append), path, "\n".join(lines)


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines()}


def _run_of(text: str) -> str:
    return re.search(r"\(protolab-(\w+)-client\)", text).group(1)


def _left(run: str) -> list[str]:
    return sorted(n for n in _namespaces() if n.startswith(f"protolab-{run}-")) + (
        [f"/run/protolab/{run}.lock"] if os.path.exists(f"/run/protolab/{run}.lock") else [])


def _states(result, step: str) -> dict[str, list[tuple[str, str]]]:
    """host → [(local endpoint, state)] of that host's table at `step`."""
    return {h: [(e.local, e.state) for e in result.read(step, h).rows]
            for h in ("client", "server", "root")}


def test_each_host_holds_its_own_end_in_its_own_state(live) -> None:
    _root()
    result, _, text = live
    assert not result.problem(), text
    client, server = "{}:{}".format(*result.client), "{}:{}".format(*result.server)
    connected = _states(result, STEPS[1])
    assert connected == {"client": [(client, "ESTABLISHED")],
                         "server": [(server, "ESTABLISHED")], "root": []}
    half = _states(result, STEPS[2])
    assert half == {"client": [(client, "FIN_WAIT_1")], "server": [(server, "CLOSE_WAIT")],
                    "root": []}
    closed = _states(result, STEPS[4])  # TIME_WAIT only in the client's namespace
    assert closed == {"client": [(client, "TIME_WAIT")], "server": [], "root": []}
    tw = result.read(STEPS[4], "client").rows[0]
    assert tw.inode == 0 and tw.st == 6 and result.client_info_closed == "CLOSED"


def test_the_pcapng_names_both_points_and_each_packet_is_seen_at_both(live) -> None:
    _root()
    result, path, _ = live
    points = {r[0] for r in tshark_fields(path, "tcp", "frame.interface_name")}
    assert points == {"client:eth0", "server:eth0"}
    port = str(result.client[1])
    syn = tshark_fields(path, f"tcp.flags == 0x002 && tcp.srcport == {port}",
                  "frame.interface_name", "ip.src")
    assert [r[0] for r in syn] == ["client:eth0", "server:eth0"]  # sent, then received
    assert {r[1] for r in syn} == {result.client[0]}
    where = [e.where for e in result.timeline]  # packets at both ends, the record, the tables
    assert {"client:eth0", "server:eth0", "tracepoint (machine-wide)"} <= set(where)
    assert [w for w in where if w.startswith("tables after")] == [
        f"tables after: {s}" for s in STEPS]
    assert [e.time for e in result.timeline] == sorted(e.time for e in result.timeline)


def test_the_killed_servers_entry_stays_in_the_server_host_and_rst_crosses_the_link(
        live) -> None:
    _root()
    result, path, _ = live
    k = result.killed
    after = _states(result, "after the kill")
    assert after["client"] == [(k.client, "CLOSE_WAIT")] and after["root"] == []
    (orphan,) = result.read("after the kill", "server").rows
    assert orphan.local == k.server and orphan.inode == 0
    assert _states(result, "after the next data") == {"client": [], "server": [], "root": []}
    port = k.server.rsplit(":", 1)[1]
    rst = tshark_fields(path, f"tcp.flags.reset == 1 && tcp.srcport == {port}",
                        "frame.interface_name")
    assert [r[0] for r in rst][:2] == ["server:eth0", "client:eth0"]


def test_an_ack_to_no_socket_is_reset_by_the_server_hosts_kernel(live) -> None:
    _root()
    result, path, _ = live
    o = result.finding("tcp.no-socket.rst")
    assert o.status is Status.OBSERVED and result.read("the ACK to no socket", "server").rows == ()
    rst = tshark_fields(path, f"tcp.flags.reset == 1 && tcp.srcport == {result.noport} && "
                        f"tcp.dstport == 40404", "frame.interface_name", "ip.src")
    assert [r[0] for r in rst] == ["server:eth0", "client:eth0"]
    assert {r[1] for r in rst} == {result.server[0]}


def test_what_is_not_run_across_hosts_is_an_explanation_not_a_claim(live) -> None:
    _root()
    result, _, text = live
    untried = [o for o in result.findings.observations if o.status is Status.NOT_TRIED]
    assert {o.key for o in untried} == {"tcp.forged.ack", "tcp.reconnect.four-tuple",
                                       "tcp.http.state-in-request"}
    assert all("protolab tcp-demo" in o.why for o in untried)
    assert text.count("(not tried here)") >= len(untried)


def test_the_cli_run_writes_its_own_pcapng_and_html_and_leaves_nothing(tmp_path) -> None:
    _root()
    out = run_cli("tcp-demo", "--hosts", "--html", str(tmp_path / "h.html"), cwd=tmp_path,
                  env={"PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert (tmp_path / "captures" / "tcp-demo-hosts.pcapng").stat().st_size > 0
    assert not (tmp_path / "captures" / "tcp-demo.pcap").exists()  # what `check 01` grades
    assert "client:eth0" in (tmp_path / "h.html").read_text()
    assert not _left(_run_of(out.stdout))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_mid_run_leaves_nothing(signum, tmp_path) -> None:
    _root()
    proc = subprocess.Popen([sys.executable, "-m", "protolab", "tcp-demo", "--hosts", "--pcap",
                             str(tmp_path / "s.pcapng")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                                 "PROTOLAB_HOLD_AFTER_SPAWN": "1"})
    text = ""
    while not (line := proc.stdout.readline()).startswith("holding after spawn"):
        assert line, proc.stderr.read()
        text += line
    run = _run_of(text)
    assert _left(run)  # held in part 3a: the hosts are there
    proc.send_signal(signum)
    assert proc.wait(30) == 128 + signum, proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert not _left(run)


def test_without_root_one_line_and_a_non_zero_exit() -> None:
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "switching to another user needs root")
    out = run_cli("tcp-demo", "--hosts", cwd=ROOT,
                  prefix=(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups"))
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "sudo protolab tcp-demo --hosts" in out.stderr
    assert "Traceback" not in out.stderr


def test_hosts_and_replay_together_is_one_line() -> None:
    out = run_cli("tcp-demo", "--hosts", "--replay")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "choose one" in out.stderr
