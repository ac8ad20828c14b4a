"""`protolab tcp-demo` end to end: every finding an observation with evidence from the run.

The checks read the `Observation` objects in `result.findings` and test their evidence against
what the run left behind (the pcap, decoded here; the kernel's table; tshark), never the English.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from protolab.analysis.observe import Status
from protolab.labs import tcp as tcpdemo
from protolab.labs.tcp import Match, compare, run_tcp_demo, where_from_capture
from protolab.protocols.tcp import ACK, FIN, RST, SYN, Role, Seg, TcpState, Transition
from protolab.wire.kernel_view import _NAME, KernelTransition, SocketEntry, tracing_denied_reason
from protolab.wire.packets import decode
from protolab.wire.pcap import read_pcap

from conftest import require, require_tool, run_cli, run_demo_timed

LIVE = ("tcp-demo", run_tcp_demo, True)  #: the `live` fixture's run: captured, kernel tracing


@pytest.fixture
def demo(live, capture_rights):
    require(tracing_denied_reason() is None, f"kernel tracing: {tracing_denied_reason()}")
    return live


def _ep(addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def _packets(path):
    """The capture as written, decoded here: {packet number: Decoded}."""
    return {n: decode(r.data, r.linktype, r.time) for n, r in enumerate(read_pcap(path), 1)}


def _observed(result, key: str):
    o = result.finding(key)
    assert o is not None, f"no observation {key}"
    assert o.status is Status.OBSERVED, o.line()
    assert o.evidence, key
    return o


def _evidence(o, what: str):
    return next(e for e in o.evidence if e.what == what)


EXPECTED = {
    "client": ["CLOSED→SYN_SENT", "SYN_SENT→ESTABLISHED", "ESTABLISHED→FIN_WAIT_1",
               "FIN_WAIT_1→FIN_WAIT_2", "FIN_WAIT_2→CLOSED"],
    "server": ["LISTEN→SYN_RECV", "SYN_RECV→ESTABLISHED", "ESTABLISHED→CLOSE_WAIT",
               "CLOSE_WAIT→LAST_ACK", "LAST_ACK→CLOSED"],
}


def test_the_kernel_records_the_expected_transitions_in_order(demo) -> None:
    result, _, _ = demo
    client, server = _ep(result.client), _ep(result.server)
    got = {"client": [f"{k.old}→{k.new}" for k in result.kernel
                      if k.local == client or (k.local.endswith(":0") and k.remote == server)],
           "server": [f"{k.old}→{k.new}" for k in result.kernel
                      if k.local == server and k.remote == client]}
    assert got == EXPECTED


def test_the_timeline_shows_the_tracepoint_record_unedited(demo) -> None:
    result, _, _ = demo
    shown = [e.kernel for e in result.timeline if e.kernel is not None]
    assert shown == sorted(result.kernel, key=lambda k: k.time)
    for k in shown:  # each as the kernel wrote it: the raw line's states, only renamed
        old, new = re.search(r"oldstate=(\w+) newstate=(\w+)", k.line).groups()
        assert (_NAME.get(old, old), _NAME.get(new, new)) == (k.old, k.new)
    client_column = [e.kernel_text() for e in result.timeline
                     if e.kernel is not None and e.who.startswith("client")]
    assert client_column[-1] == "client FIN_WAIT_2→CLOSED"
    assert not any("TIME_WAIT" in e.kernel_text() for e in result.timeline)
    assert _observed(result, "tcp.kernel-record")


def test_time_wait_comes_from_the_kernels_table(demo) -> None:
    result, _, _ = demo
    o = _observed(result, "tcp.time-wait")
    tw = result.time_wait
    assert (tw.local, tw.remote, tw.st, tw.inode, tw.timer) == (
        _ep(result.client), _ep(result.server), 6, 0, 3)
    assert _evidence(o, "/proc/net/tcp").after == tw.describe()
    assert tw.line.split()[3] == "06"  # the table's own column, as the kernel wrote it
    assert result.client_info_closed == "CLOSED"
    assert _observed(result, "tcp.time-wait-no-socket")
    # An independent reader of the same kernel table: ss lists the 4-tuple in TIME-WAIT.
    ss = require_tool("ss")
    out = subprocess.run([ss, "-tanH", "state", "time-wait"], capture_output=True, text=True,
                         timeout=10).stdout
    assert any(line.split()[-2:] == [_ep(result.client), _ep(result.server)]
               for line in out.splitlines()), out


def test_the_comparison_says_where_model_and_kernel_differ_and_why(demo) -> None:
    result, _, _ = demo
    explained = [c for c in result.comparison if c.match is Match.EXPLAINED]
    assert [(c.socket, c.model, c.kernel) for c in explained] == [
        ("client", "FIN_WAIT_2→TIME_WAIT", "FIN_WAIT_2→CLOSED")]
    assert result.time_wait.describe() in explained[0].why
    assert explained[0].why.startswith("explanation:")
    assert all(c.match is Match.SAME for c in result.comparison if c not in explained)
    assert len(result.comparison) == 10 and result.agree is True
    o = _observed(result, "tcp.model-vs-kernel")
    assert _evidence(o, "kernel transitions").after == len(result.kernel)


def _t(endpoint: str, old: TcpState, new: TcpState) -> Transition:
    return Transition(endpoint, Role.CLIENT, old, new, Seg.RECV_FIN, 9)


C, S = "127.0.0.1:5000", "127.0.0.1:80"
MODEL = [_t(C, TcpState.FIN_WAIT_2, TcpState.TIME_WAIT)]
TW = SocketEntry(C, S, "TIME_WAIT", st=6, inode=0, timer=3, timer_left=59.0)


def test_compare_explains_closed_only_with_the_time_wait_entry_seen() -> None:
    kernel = [KernelTransition(1.0, C, S, "FIN_WAIT_2", "CLOSED")]
    assert [c.match for c in compare(MODEL, kernel, C, S, TW)] == [Match.EXPLAINED]
    assert [c.match for c in compare(MODEL, kernel, C, S, None)] == [Match.DIFFERS]
    held = SocketEntry(C, S, "TIME_WAIT", st=6, inode=1234, timer=3)  # a socket holds it
    assert [c.match for c in compare(MODEL, kernel, C, S, held)] == [Match.DIFFERS]
    assert [c.match for c in compare(MODEL, kernel, C, S, TW, "FIN_WAIT_2")] == [Match.DIFFERS]


def test_compare_never_rewrites_the_kernels_record() -> None:
    kernel = [KernelTransition(1.0, C, S, "FIN_WAIT_2", "CLOSED")]
    [row] = compare(MODEL, kernel, C, S, TW)
    assert row.kernel == "FIN_WAIT_2→CLOSED"
    same = [KernelTransition(1.0, C, S, "FIN_WAIT_2", "TIME_WAIT")]
    assert [(c.kernel, c.match) for c in compare(MODEL, same, C, S, None)] == [
        ("FIN_WAIT_2→TIME_WAIT", Match.SAME)]


def test_killing_the_server_process(demo) -> None:
    result, path, _ = demo
    fin = _observed(result, "tcp.killed.fin")
    assert _evidence(fin, "server pid").before == result.killed_pid
    with pytest.raises(ProcessLookupError):
        os.kill(result.killed_pid, 0)
    rst = _observed(result, "tcp.killed.rst")
    data_no, rst_no = _evidence(rst, "packets").packets
    [fin_no] = _evidence(fin, "FIN").packets
    p = _packets(path)
    assert p[fin_no].tcp.flags & FIN and p[rst_no].tcp.flags & RST
    assert p[fin_no].sport == p[rst_no].sport == p[data_no].dport
    assert fin_no < data_no < rst_no and p[data_no].payload
    assert _observed(result, "tcp.killed.entry-outlives-process")
    error = _observed(result, "tcp.killed.error")
    assert _evidence(error, "client's next send()/recv()").after in (
        "BrokenPipeError", "ConnectionResetError")


def test_the_forged_segment_is_acked_and_never_reaches_the_application(demo) -> None:
    result, path, _ = demo
    o = _observed(result, "tcp.forged.ack")
    forged_no, reply_no = _evidence(o, "packets").packets
    p = _packets(path)
    forged, reply = p[forged_no], p[reply_no]
    assert forged.payload == b"FORGED" and reply.sport == forged.dport
    assert reply.tcp.flags & (SYN | FIN | RST | ACK) == ACK
    assert (forged.tcp.seq - reply.tcp.ack) & 0xFFFFFFFF == tcpdemo.FORGE_OFFSET
    _observed(result, "tcp.forged.not-delivered")
    assert result.echo_received == b"helloafter"
    assert result.forged_reply == "ACK"


def test_an_ack_to_a_port_without_a_socket_gets_rst(demo) -> None:
    result, path, _ = demo
    o = _observed(result, "tcp.no-socket.rst")
    ack_no, rst_no = _evidence(o, "packets").packets
    p = _packets(path)
    assert p[ack_no].dport == p[rst_no].sport == result.noport
    assert p[rst_no].tcp.flags & RST
    tshark = require_tool("tshark")
    out = subprocess.run([tshark, "-r", str(path), "-Y", "tcp.srcport == 40404 || "
                          "tcp.dstport == 40404", "-T", "fields", "-e", "tcp.flags.str"],
                         capture_output=True, text=True, timeout=30)
    flags = [f.replace("\u00b7", "") for f in out.stdout.split()]
    assert flags == ["A", "R"], out.stdout


def test_a_reconnect_is_a_new_4_tuple_with_a_new_isn(demo) -> None:
    result, path, _ = demo
    (a, isn_a), (b, isn_b) = result.reconnect
    assert a != b and a[0] == b[0] and isn_a != isn_b
    _observed(result, "tcp.reconnect.four-tuple")
    syn_a, syn_b = _evidence(_observed(result, "tcp.reconnect.isn"), "SYN").packets
    p = _packets(path)
    assert [(p[n].sport, p[n].tcp.seq, p[n].tcp.flags & (SYN | ACK)) for n in (syn_a, syn_b)] \
        == [(a[1], isn_a, SYN), (b[1], isn_b, SYN)]


def test_http_goes_on_over_new_connections(demo) -> None:
    result, path, _ = demo
    for key in ("tcp.http.server-closes", "tcp.http.new-connection",
                "tcp.http.state-in-request"):
        _observed(result, key)
    assert len({local for _, _, local in result.http}) == 2
    fins = _evidence(result.finding("tcp.http.server-closes"), "server FIN").packets
    p = _packets(path)
    assert [p[n].dport for n in fins] == [local[1] for _, _, local in result.http]


def test_every_where_row_was_tried_in_this_run_with_evidence(demo) -> None:
    result, _, _ = demo
    rows = result.findings.where
    assert len(rows) == 6
    for r in rows:
        assert r.outcome.status is Status.OBSERVED and r.outcome.evidence, r
    assert result.problem() == ""
    assert str(result.killed_pid) in rows[0].disruption


def test_where_from_capture_fills_rows_from_the_packets(demo) -> None:
    result, _, _ = demo
    rows = where_from_capture(result.rows)
    by_status = {s: [r.outcome.key for r in rows if r.outcome.status is s] for s in Status}
    assert by_status[Status.NOT_OBSERVED] == []
    assert {"tcp.where.time-wait", "tcp.where.kernel-record"} <= set(by_status[Status.LIVE_ONLY])
    socket_row = next(r for r in rows if r.outcome.key == "tcp.where.socket")
    live_rst = _evidence(result.finding("tcp.killed.rst"), "packets").packets
    assert set(live_rst) <= set(socket_row.outcome.evidence[0].packets)


def test_where_from_another_demos_capture_is_not_observed() -> None:
    from protolab.analysis.annotate import annotate_file
    from protolab.wire.paths import reference_file

    rows = where_from_capture(list(annotate_file(reference_file("dns-demo"))))
    tried = [r.outcome for r in rows if r.outcome.status is not Status.LIVE_ONLY]
    assert tried and all(o.status is Status.NOT_OBSERVED for o in tried)


def test_a_forged_segment_that_never_left_is_not_observed_and_exits_1(
        capture_rights, tmp_path, monkeypatch, capsys) -> None:
    """Take one observation away: the forging step sends nothing."""
    from protolab import cli

    monkeypatch.setattr(tcpdemo, "_send_forged", lambda packet: None)
    lines: list[str] = []
    result = run_tcp_demo(pcap=tmp_path / "t.pcap", out=lines.append)
    for key in ("tcp.forged.ack", "tcp.forged.not-delivered", "tcp.where.entry"):
        assert result.finding(key).status is Status.NOT_OBSERVED, key
    assert "tcp.forged.ack" in result.problem()
    assert result.finding("tcp.forged.ack").line() in "\n".join(lines)
    assert result.finding("tcp.forged.ack").line().startswith("NOT OBSERVED")
    assert cli.main(["tcp-demo", "--pcap", str(tmp_path / "u.pcap")]) == cli.EXIT_FAILED
    assert "NOT OBSERVED" in capsys.readouterr().out


class _NoTrace:
    """A TcpStateTrace that could not start."""

    def __init__(self, port: int) -> None:
        self.reason = "test: tracing taken away"
        self.transitions: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_without_the_kernels_record_nothing_is_claimed_about_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tcpdemo, "TcpStateTrace", _NoTrace)
    lines: list[str] = []
    result = run_tcp_demo(capture=False, pcap=tmp_path / "t.pcap", out=lines.append)
    for key in ("tcp.kernel-record", "tcp.model-vs-kernel"):
        o = result.finding(key)
        assert o.status is Status.NOT_TRIED and "tracing taken away" in o.why
        assert "   " + o.line() in lines
    assert result.comparison == [] and result.agree is None
    assert not any(e.kernel for e in result.timeline)


def test_tcp_demo_finishes_in_a_few_startups(capture_rights, tmp_path, startup_unit) -> None:
    run_demo_timed("tcp-demo", tmp_path / "t.pcap", startup_unit)


NO_CAPS = ("--inh-caps=-all", "--bounding-set=-all")


def test_tcp_demo_without_any_capability() -> None:
    """uid 0 but no capabilities: no packet sockets, no raw sockets. What needs them is printed
    as an explanation, not tried here; nothing is claimed, and the run exits 0."""
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "dropping capabilities with setpriv needs root")
    out = run_cli("tcp-demo", prefix=(setpriv, *NO_CAPS))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: needs root or CAP_NET_RAW")
    assert "(not tried here) explanation: a segment far outside the receive window" in out.stdout
    assert "NOT OBSERVED:" not in out.stdout
    assert out.stderr == ""


def test_tcp_demo_no_capture_flag() -> None:
    out = run_cli("tcp-demo", "--no-capture")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: --no-capture")
    assert "BrokenPipeError" in out.stdout or "ConnectionResetError" in out.stdout


def test_the_live_capture_tells_the_story_a_replay_finds(demo) -> None:
    """The checks a replay of the reference passes are the checks this live run passes."""
    from protolab.analysis.story_checks import missing

    result, path, _ = demo
    assert result.rows and missing("tcp-demo", result.rows) == []
