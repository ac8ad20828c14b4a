"""`protolab udp-demo` end to end, with a real server process restart."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from protolab.udpdemo import ADDS, run_udp_demo

from conftest import live_run, require, require_tool, run_cli


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    return live_run(tmp_path_factory, "udp-demo", run_udp_demo)


@pytest.fixture
def demo(live, capture_rights):
    return live


def test_the_litmus_test_passes_with_a_real_restart(demo) -> None:
    result, _, text = demo
    assert result.pids[0] != result.pids[1] == result.pids[2]
    assert [r.total for r in result.replies] == [ADDS[0], sum(ADDS[:2]), sum(ADDS)]
    assert result.replies[1].seen == 1  # the new process started from nothing
    assert "server restarted between requests: workflow continued" in text


def test_no_per_peer_entry_in_the_kernel(demo) -> None:
    result, _, _ = demo
    assert result.clients == 3
    assert result.table_before == result.table_after
    assert len(result.table_after) == 1 and "0.0.0.0:0" in result.table_after[0]


def test_connected_socket_gets_the_icmp_error_unconnected_does_not(demo) -> None:
    result, _, _ = demo
    assert result.connected_saw == "ConnectionRefusedError"
    assert result.unconnected_saw == "nothing"
    assert result.icmp_seen == 2


def test_tshark_ports_and_payload_agree_with_the_annotation(demo) -> None:
    result, path, _ = demo
    tshark = require_tool("tshark")
    out = subprocess.run([tshark, "-r", str(path), "-Y", "udp && !icmp", "-T", "fields",
                          "-e", "frame.number", "-e", "udp.srcport", "-e", "udp.dstport"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = {r.number: r for r in result.rows}
    lines = out.stdout.splitlines()
    assert len(lines) == sum(1 for r in result.rows if r.proto == "UDP")
    for line in lines:
        n, sport, dport = line.split("\t")
        assert rows[int(n)].src.endswith(f":{sport}") and rows[int(n)].dst.endswith(f":{dport}")


def test_udp_demo_finishes_under_3_seconds(capture_rights, tmp_path) -> None:
    start = time.monotonic()
    out = run_cli("udp-demo", "--pcap", str(tmp_path / "u.pcap"))
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert elapsed < 3.0, f"udp-demo took {elapsed:.2f} s"


def test_udp_demo_without_any_capability() -> None:
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "dropping capabilities with setpriv needs root")
    out = run_cli("udp-demo", prefix=(setpriv, "--inh-caps=-all", "--bounding-set=-all"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: needs root or CAP_NET_RAW")
    assert "workflow continued" in out.stdout and "ConnectionRefusedError" in out.stdout


def test_udp_demo_no_capture_flag() -> None:
    out = run_cli("udp-demo", "--no-capture")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: --no-capture")


def test_the_live_capture_tells_the_story_a_replay_finds(demo) -> None:
    """The checks a replay of the reference passes are the checks this live run passes."""
    from protolab.story import missing

    result, path, _ = demo
    assert result.rows and missing("udp-demo", result.rows) == []
