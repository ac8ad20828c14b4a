"""`protolab tcp-demo` end to end: kernel record, forged segments, tshark's reading."""

from __future__ import annotations

import os
import time

import pytest

from protolab.annotate import Action
from protolab.kstate import tracing_denied_reason
from protolab.tcpdemo import run_tcp_demo

from conftest import live_run, require, require_tool, run_cli


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    return live_run(tmp_path_factory, "tcp-demo", run_tcp_demo, needs_tracing=True)


@pytest.fixture
def demo(live, capture_rights):
    require(tracing_denied_reason() is None, f"kernel tracing: {tracing_denied_reason()}")
    return live


EXPECTED = {
    "client": ["CLOSED→SYN_SENT", "SYN_SENT→ESTABLISHED", "ESTABLISHED→FIN_WAIT_1",
               "FIN_WAIT_1→FIN_WAIT_2", "FIN_WAIT_2→CLOSED"],
    "server": ["LISTEN→SYN_RECV", "SYN_RECV→ESTABLISHED", "ESTABLISHED→CLOSE_WAIT",
               "CLOSE_WAIT→LAST_ACK", "LAST_ACK→CLOSED"],
}


def test_the_kernel_records_the_expected_transitions_in_order(demo) -> None:
    result, _, _ = demo
    client = f"{result.client[0]}:{result.client[1]}"
    server = f"{result.server[0]}:{result.server[1]}"
    got = {"client": [f"{k.old}→{k.new}" for k in result.kernel if k.local == client],
           "server": [f"{k.old}→{k.new}" for k in result.kernel
                      if k.local == server and k.remote == client]}
    assert got == EXPECTED
    assert result.time_wait, "the client closed first: its 4-tuple must be in TIME_WAIT"


def test_the_model_agrees_with_the_kernel(demo) -> None:
    result, _, text = demo
    assert result.agree is True
    assert len(result.model) == 10
    assert "AGREES with the kernel on every transition" in text


def test_the_handshake_is_annotated_with_relative_numbers(demo) -> None:
    result, _, _ = demo
    client = f"{result.client[0]}:{result.client[1]}"
    hs = [r for r in result.rows if client in (r.src, r.dst)][:3]
    assert [r.summary for r in hs] == ["[SYN] seq=0 len=0", "[SYN/ACK] seq=0 ack=1 len=0",
                                       "[ACK] seq=1 ack=1 len=0"]
    assert "CLOSED→SYN_SENT" in hs[0].state and "SYN_RECV→ESTABLISHED" in hs[2].state


def test_the_forged_segment_never_reaches_the_application(demo) -> None:
    result, _, _ = demo
    assert result.forged_sent
    assert result.echo_received == b"helloafter"
    assert result.forged_reply == "ACK"
    forged = [r for r in result.rows if r.action is Action.MISSING and "far outside" in r.state]
    assert len(forged) == 1 and forged[0].summary.endswith("len=6")


def test_an_ack_to_a_port_without_a_socket_gets_rst(demo) -> None:
    result, path, _ = demo
    assert result.noport_rst_seen is True
    tshark = require_tool("tshark")
    import subprocess

    out = subprocess.run([tshark, "-r", str(path), "-Y", "tcp.srcport == 40404 || "
                          "tcp.dstport == 40404", "-T", "fields", "-e", "tcp.flags.str"],
                         capture_output=True, text=True, timeout=30)
    flags = [f.replace("\u00b7", "") for f in out.stdout.split()]
    assert flags == ["A", "R"], out.stdout


def test_tshark_agrees_with_the_fresh_capture(demo) -> None:
    from test_captures import assert_tshark_agrees

    _, path, _ = demo
    assert_tshark_agrees(path)


def test_killing_the_server_process_gets_the_client_a_reset(demo) -> None:
    result, _, _ = demo
    assert result.kill_rst_seen is True
    assert result.kill_client_error in ("BrokenPipeError", "ConnectionResetError")


def test_a_reconnect_is_a_new_4_tuple_with_a_new_isn(demo) -> None:
    result, _, _ = demo
    (a, isn_a), (b, isn_b) = result.reconnect
    assert a != b and a[0] == b[0]
    assert None not in (isn_a, isn_b) and isn_a != isn_b


def test_http_goes_on_over_new_connections(demo) -> None:
    result, _, _ = demo
    assert result.http_verdict == "connection closed by the server between requests: workflow " \
                                  "continued"
    assert len({local for _, _, local in result.http}) == 2
    assert "cart: apple, pear" in result.http[-1][1]


def test_tcp_demo_finishes_under_3_seconds(capture_rights, tmp_path) -> None:
    start = time.monotonic()
    out = run_cli("tcp-demo", "--pcap", str(tmp_path / "t.pcap"))
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert elapsed < 3.0, f"tcp-demo took {elapsed:.2f} s"


NO_CAPS = ("--inh-caps=-all", "--bounding-set=-all")


def test_tcp_demo_without_any_capability() -> None:
    """uid 0 but no capabilities: no packet sockets, no raw sockets, no mounting tracefs."""
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "dropping capabilities with setpriv needs root")
    out = run_cli("tcp-demo", prefix=(setpriv, *NO_CAPS))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: needs root or CAP_NET_RAW")
    assert "needs root (raw sockets): skipped" in out.stdout
    assert "workflow continued" in out.stdout
    assert out.stderr == ""


def test_tcp_demo_no_capture_flag() -> None:
    out = run_cli("tcp-demo", "--no-capture")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: --no-capture")
    assert "BrokenPipeError" in out.stdout or "ConnectionResetError" in out.stdout


def test_the_live_capture_tells_the_story_a_replay_finds(demo) -> None:
    """The checks a replay of the reference passes are the checks this live run passes."""
    from protolab.story import missing

    result, path, _ = demo
    assert result.rows and missing("tcp-demo", result.rows) == []
