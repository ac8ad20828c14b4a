"""`protolab udp-demo` end to end, with a real server process restart.

Every finding is an `Observation`; these tests check each one against a second source (the
capture read back from the file, /proc/net/udp, the proxy's decisions), and remove one observation
at a time (no restart, no capture, a send error, a gap no decision explains) to see it reported as
NOT OBSERVED with a non-zero exit."""

from __future__ import annotations

import os
import subprocess

import pytest

from protolab.analysis.observe import Status
from protolab.labs import udp as udpdemo
from protolab.labs.udp import ADDS, FAULT_DATAGRAMS, FaultRun, account, fault_findings, run_udp_demo
from protolab.protocols.faults import Decision, Direction, Fate, FaultPlan

from conftest import require, require_tool, run_cli, run_demo_timed

LIVE_KEYS = {"udp.one-entry", "udp.restart", "udp.workflow-continued", "udp.count-restarted",
             "udp.port-unbound", "udp.icmp", "udp.connected-refused", "udp.unconnected-silent"}
LIVE = ("udp-demo", run_udp_demo)  #: the run the `live` fixture makes once for this module


@pytest.fixture
def demo(live, capture_rights):
    return live


def _by_key(result) -> dict:
    return {o.key: o for o in result.findings.observations}


def _ev(obs, what: str):
    return next(e for e in obs.evidence if e.what.startswith(what))


def test_every_finding_is_observed_with_evidence(demo) -> None:
    result, _, text = demo
    found = _by_key(result)
    assert set(found) == LIVE_KEYS
    for o in found.values():
        assert o.status is Status.OBSERVED and o.evidence, o
        assert o.line() in text  # the printed line is rendered from the object
    assert result.problem() == "" and "NOT OBSERVED" not in text


def test_the_litmus_test_passes_with_a_real_restart(demo) -> None:
    result, _, _ = demo
    old, new = result.restart
    assert old != new and result.old_status is not None  # the old process is dead
    assert result.pids == [old, new, new]  # what the processes themselves put in pid=
    assert [r.total for r in result.replies] == [ADDS[0], sum(ADDS[:2]), sum(ADDS)]
    found = _by_key(result)
    assert _ev(found["udp.restart"], "server pid").before == old
    assert _ev(found["udp.restart"], "server pid").after == new
    seen = _ev(found["udp.count-restarted"], "seen=")
    assert (seen.before, seen.after) == (result.replies[0].seen, 1)


def test_reply_packets_cited_are_the_replies_in_the_capture(demo) -> None:
    """The packet numbers in the evidence, checked against the file as any reader sees it."""
    result, _, _ = demo
    rows = {r.number: r for r in result.rows}
    cited = _ev(_by_key(result)["udp.workflow-continued"], "total=").packets
    assert len(cited) == len(ADDS)
    for n, reply in zip(cited, result.replies, strict=True):
        assert rows[n].src.endswith(f":{result.port}")
        assert f"total={reply.total} seen={reply.seen} pid={reply.pid}" in rows[n].summary


def test_no_per_peer_entry_in_the_kernel(demo) -> None:
    result, _, _ = demo
    assert result.clients == 3
    assert result.table_before == result.table_after
    assert len(result.table_after) == 1 and "0.0.0.0:0" in result.table_after[0]
    entries = _ev(_by_key(result)["udp.one-entry"], "/proc/net/udp")
    assert (entries.before, entries.after) == (1, 1)
    clients = _ev(_by_key(result)["udp.one-entry"], "client sockets").packets
    rows = {r.number: r for r in result.rows}
    assert len({rows[n].src for n in clients if rows[n].dst.endswith(f":{result.port}")}) == 3


def test_connected_socket_gets_the_icmp_error_unconnected_does_not(demo) -> None:
    result, _, _ = demo
    assert result.connected_saw == "ConnectionRefusedError"
    assert result.unconnected_saw == "nothing"
    assert result.icmp_seen == 2
    icmp = _ev(_by_key(result)["udp.icmp"], "ICMP").packets
    assert list(icmp) == [r.number for r in result.rows if r.proto == "ICMP"]
    stopped = _ev(_by_key(result)["udp.port-unbound"], "/proc/net/udp")
    assert (stopped.before, stopped.after) == (1, 0) and result.table_stopped == []


def test_where_rows_come_from_this_run(demo) -> None:
    result, _, text = demo
    where = result.findings.where
    assert [r.outcome.status for r in where] == [Status.OBSERVED] * 5 + [Status.NOT_TRIED]
    workflow = next(r for r in where if r.state.startswith("the workflow's state"))
    assert f"pid {result.restart[0]} → {result.restart[1]}" in workflow.disruption
    assert _ev(workflow.outcome, "server pid").after == result.restart[1]
    assert "Where state lives in UDP:" in text and "(not tried here)" in text
    assert not hasattr(udpdemo, "WHERE_STATE_LIVES")


def test_without_a_restart_the_litmus_is_not_observed(monkeypatch, capsys) -> None:
    """Remove the disruption: the same demo must say NOT OBSERVED and the CLI exit 1."""
    from protolab.cli import main

    monkeypatch.setattr(udpdemo, "_restart", lambda server: server)
    lines: list[str] = []
    result = run_udp_demo(capture=False, out=lines.append)
    found = _by_key(result)
    for key in ("udp.restart", "udp.workflow-continued", "udp.count-restarted"):
        assert found[key].status is Status.NOT_OBSERVED and key in result.problem()
        assert "   " + found[key].line() in lines and found[key].line().startswith("NOT OBSERVED")
    assert "not restarted" in found["udp.restart"].why
    assert found["udp.one-entry"].observed  # the rest of the story still stands
    assert main(["udp-demo", "--no-capture"]) == 1
    assert "NOT OBSERVED: the server process is restarted" in capsys.readouterr().out


def test_capture_off_leaves_the_icmp_not_tried_and_claims_nothing() -> None:
    lines: list[str] = []
    result = run_udp_demo(capture=False, out=lines.append)
    icmp = _by_key(result)["udp.icmp"]
    assert icmp.status is Status.NOT_TRIED and "capture is off" in icmp.why
    assert icmp.evidence == () and icmp.line().startswith("(not tried here) explanation:")
    assert result.problem() == ""
    assert "   " + icmp.line() in lines
    assert _by_key(result)["udp.connected-refused"].observed  # told by the socket, not packets


def test_udp_demo_finishes_in_a_few_startups(capture_rights, tmp_path, startup_unit) -> None:
    run_demo_timed("udp-demo", tmp_path / "u.pcap", startup_unit)


def test_udp_demo_without_any_capability() -> None:
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "dropping capabilities with setpriv needs root")
    out = run_cli("udp-demo", prefix=(setpriv, "--inh-caps=-all", "--bounding-set=-all"))
    assert out.returncode == 0, out.stderr  # what needs capture is not tried, and says so
    live = out.stdout.split("REPLAY")[0]
    assert live.startswith("capture off: needs root or CAP_NET_RAW")
    assert "workflow continued" in live and "ConnectionRefusedError" in live
    assert "(not tried here) explanation: the kernel answers both datagrams with ICMP" in live
    assert "NOT OBSERVED" not in live


def test_udp_demo_no_capture_flag() -> None:
    out = run_cli("udp-demo", "--no-capture")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: --no-capture")
    assert "NOT OBSERVED: " not in out.stdout
    assert "(not tried here) explanation: the kernel answers both datagrams" in out.stdout


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


def test_the_live_capture_tells_the_story_a_replay_finds(demo) -> None:
    """The checks a replay of the reference passes are the checks this live run passes."""
    from protolab.analysis.story_checks import missing

    result, path, _ = demo
    assert result.rows and missing("udp-demo", result.rows) == []


# -- part 5, faults --------------------------------------------------------------------------------


def test_faults_each_gap_is_a_proxy_decision(capture_rights, tmp_path) -> None:
    plan = FaultPlan(drop=0.2, duplicate=0.1, reorder=0.2, seed=4)
    result = run_udp_demo(pcap=tmp_path / "f.pcap", out=lambda _: None, faults=plan)
    run = result.faults
    found = _by_key(result)
    assert all(found[k].observed for k in ("udp.faults.sender-unaware", "udp.faults.numbered",
                                           "udp.faults.no-icmp")), result.problem()
    acc = account(run.sent, list(zip(run.replies, run.seen, strict=True)), run.base_seen,
                  run.fates, run.plan)
    assert set(acc.lost) == set(range(1, FAULT_DATAGRAMS + 1)) - set(run.replies) != set()
    for seq, why in acc.lost.items():
        up = [d for d in run.fates if (d.index, d.direction) == (seq, Direction.TO_SERVER)]
        assert (up[0].fate is Fate.DROPPED) == why.startswith("to-server"), seq
    # the capture, read back: every datagram left the client once, and no ICMP
    out = [r for r in result.rows if r.src.endswith(f":{run.client_port}")
           and r.dst.endswith(f":{run.proxy_port}")]
    assert len(out) == FAULT_DATAGRAMS == _ev(found["udp.faults.no-icmp"], "datagrams").after
    icmp = [r.number for r in result.rows if r.proto == "ICMP"]  # only part 4's two
    assert icmp == sorted(result.icmp_for["connected"] + result.icmp_for["unconnected"])
    where = result.findings.where[-1]
    assert where.outcome.observed and "fault proxy" in where.disruption


def _d(index: int, direction: Direction, fate: Fate) -> Decision:
    return Decision(index, direction, fate, 20)


UP, DOWN = Direction.TO_SERVER, Direction.TO_CLIENT
F, DROP, DUP, RE = Fate.FORWARDED, Fate.DROPPED, Fate.DUPLICATED, Fate.REORDERED


def test_account_matches_each_gap_to_its_decision() -> None:
    # seq 1 dropped on the way; seq 2 duplicated to the server (seen 1 and 2); seq 3's reply
    # (seen 3) dropped; seq 4's reply (seen 4) held back, so it arrives after seq 2's copies.
    decisions = [_d(1, UP, DROP), _d(2, UP, DUP), _d(3, UP, F), _d(4, UP, F),
                 _d(1, DOWN, F), _d(2, DOWN, F), _d(3, DOWN, DROP), _d(4, DOWN, RE)]
    acc = account(4, [(2, 11), (2, 12), (4, 14)], 10, decisions)
    assert acc.unexplained == []
    assert acc.lost == {1: "to-server datagram 1 dropped", 3: "its reply dropped"}
    assert acc.doubled == {2: "to-server datagram 2 duplicated"}
    assert acc.late == {}  # 4 came after 2: not late
    acc = account(4, [(4, 14), (2, 11), (2, 12)], 10, decisions)
    assert acc.late == {}  # 2 arrived after 4, but neither it nor its reply was held back:
    assert acc.unexplained == ["seq 2 arrived after seq 4; neither it nor its reply was held "
                               "back"]


def test_account_reports_what_no_decision_explains() -> None:
    """A reply missing although the proxy forwarded everything: the finding must fail."""
    decisions = [_d(1, UP, F), _d(2, UP, F), _d(1, DOWN, F), _d(2, DOWN, F)]
    acc = account(2, [(1, 1)], 0, decisions)
    assert acc.unexplained
    run = FaultRun(sent=2, sent_whole=2, replies=[1], seen=[1], base_seen=0, fates=decisions,
                   seqs_out=[1, 2], datagrams_out=(1, 2))
    numbered = next(o for o in fault_findings(run) if o.key == "udp.faults.numbered")
    assert numbered.status is Status.NOT_OBSERVED and "seen= [2]" in numbered.why


def test_a_send_error_is_not_reported_as_sent() -> None:
    run = FaultRun(sent=20, send_errors=2, sent_whole=18, base_seen=0)
    sender, _, quiet = fault_findings(run, capture_off="--no-capture")
    assert sender.status is Status.NOT_OBSERVED and "2 sendto() errors" in sender.why
    assert quiet.status is Status.NOT_TRIED and "capture is off" in quiet.why


# -- replay ----------------------------------------------------------------------------------------


def test_where_from_the_reference_capture() -> None:
    from protolab.analysis.annotate import annotate_file
    from protolab.analysis.story_checks import counter_replies
    from protolab.wire.paths import reference_file

    rows = list(annotate_file(reference_file("udp-demo")))
    where = udpdemo.where_from_capture(rows)
    assert [r.outcome.status for r in where] == [Status.OBSERVED] * 4 + [Status.LIVE_ONLY] * 2
    pids = _ev(where[2].outcome, "pid=")
    by_number = {r.number: reply for r, reply in counter_replies(rows)}
    assert pids.before != pids.after
    assert [by_number[n].pid for n in pids.packets] == [pids.before, pids.after]
    assert list(_ev(where[0].outcome, "ICMP").packets) == [r.number for r in rows
                                                           if r.proto == "ICMP"]
    assert udpdemo.WHERE_TITLE == "Where state lives in UDP:"


def test_where_from_another_demos_capture_is_not_observed() -> None:
    from protolab.analysis.annotate import annotate_file
    from protolab.wire.paths import reference_file

    where = udpdemo.where_from_capture(list(annotate_file(reference_file("dns-demo"))))
    assert [r.outcome.status for r in where[:4]] == [Status.NOT_OBSERVED] * 4
