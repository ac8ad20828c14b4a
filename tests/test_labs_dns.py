"""`protolab dns-demo` end to end: the story, the capture, and tshark's reading of it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

import pytest

from protolab.analysis.annotate import Action, annotate_file
from protolab.analysis.observe import Status
from protolab.labs.dns import (
    RestartRun,
    asked_again,
    never_answered_then_asked_again,
    run_dns_demo,
    where_from_capture,
)
from protolab.protocols.dns import RejectReason
from protolab.protocols.faults import FaultPlan
from protolab.wire.packets import Decoded
from protolab.wire.paths import reference_file
from protolab.wire.pcap import read_pcap

from conftest import live_run, require_tool, run_cli, run_demo_timed, without_net_raw


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return live_run(tmp_path_factory, "dns-demo", partial(run_dns_demo, queries=6))


@pytest.fixture
def captured(demo, capture_rights):
    return demo


def tshark_fields(path, *fields: str, display_filter: str = "") -> list[list[str]]:
    tshark = require_tool("tshark")
    cmd = [tshark, "-r", str(path), "-T", "fields", *[a for f in fields for a in ("-e", f)]]
    if display_filter:
        cmd += ["-Y", display_filter]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


def decode_as_dns(port: int) -> tuple[str, ...]:
    return ("-d", f"udp.port=={port},dns")


def test_tshark_dns_ids_equal_the_ids_the_client_sent(captured) -> None:
    result, path, _ = captured
    tshark = require_tool("tshark")
    out = subprocess.run([tshark, "-r", str(path), *decode_as_dns(result.server[1]), "-Y",
                          "dns.flags.response == 0", "-T", "fields", "-e", "dns.id"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    sent = [*result.log.sent, *result.restart.log.sent]  # parts 1-3, then part 4's client
    assert [int(x, 16) for x in out.stdout.split()] == [s.qid for s in sent]


def test_capture_holds_each_packet_once_and_the_first_query(captured) -> None:
    result, path, _ = captured
    records = list(read_pcap(path))
    assert len(records) == len({r.data for r in records}) == result.capture.packets
    assert len(tshark_fields(path, "frame.number")) == len(records)
    first = result.rows[0]
    assert first.proto == "DNS" and first.summary.startswith(f"query {result.log.sent[0].qid:#06x}")
    assert result.complete is True and result.capture.kernel_drops == 0


def test_answers_arrive_out_of_order_and_all_match(captured) -> None:
    result, _, _ = captured
    part1 = [m for m in result.log.matched if m.name not in ("bank.lab.", "late.lab.")]
    assert len(part1) == 6
    assert [m.order_sent for m in part1] != sorted(m.order_sent for m in part1)


def test_forged_answers_are_dropped_for_the_right_reason(captured) -> None:
    result, _, text = captured
    assert [(r.reason, r.qid) for r in result.log.rejected] == [
        (RejectReason.UNKNOWN_ID, result.forged_qid), (RejectReason.WRONG_SOURCE, result.bank_qid)]
    bank = [m for m in result.log.matched if m.qid == result.bank_qid]
    assert [m.answers for m in bank] == [("10.0.0.10",)]
    obs = observations(result)
    assert obs["dns.forged-id-dropped"].observed and obs["dns.wrong-source-dropped"].observed
    assert obs["dns.real-answer-matched"].observed


def test_the_annotation_sees_the_same_story_from_packets(captured) -> None:
    result, _, _ = captured
    missing = [r for r in result.rows if r.action is Action.MISSING]
    kinds = [r.proto for r in missing]
    # forged wrong id, forged wrong source, the late answer, and the ICMP error
    assert kinds == ["DNS", "DNS", "DNS", "ICMP"]
    assert f"{result.forged_qid:#06x}" in missing[0].state
    assert "spoofed source" in missing[1].state
    assert "closed its socket" in missing[2].state and f"#{missing[3].number}" in missing[2].state
    assert result.icmp_seen is True
    assert missing[3].summary == (f"ICMP port unreachable for 127.0.0.1:{result.server[1]} → "
                                  f"127.0.0.1:{result.late_port}")


def test_icmp_port_unreachable_quotes_the_late_answer(captured) -> None:
    result, path, _ = captured
    rows = tshark_fields(path, "icmp.type", "icmp.code", "udp.dstport",
                         display_filter="icmp")
    assert len(rows) == 1
    itype, code, ports = rows[0]
    assert (itype, code) == ("3", "3")
    assert ports == str(result.late_port)
    assert result.log.abandoned[-1].qid == result.late_qid


def test_demo_finishes_in_a_few_startups_with_capture(capture_rights, tmp_path,
                                                       startup_unit) -> None:
    out = run_demo_timed("dns-demo", tmp_path / "d.pcap", startup_unit)
    assert "capture complete" in out.stdout


def test_no_capture_rights_still_runs_and_says_how_to_fix(tmp_path) -> None:
    out = run_cli("dns-demo", "--pcap", str(tmp_path / "d.pcap"),
                  prefix=without_net_raw())
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("capture off: needs root or CAP_NET_RAW")
    assert "setcap cap_net_raw+ep" in first and "protolab inspect" in first
    assert "dns-demo.ref.pcap" in first
    assert "Where state lives" in out.stdout and "NOT OBSERVED" not in out.stdout
    assert not (tmp_path / "d.pcap").exists()
    assert out.stderr == ""


def test_no_capture_flag(tmp_path) -> None:
    out = run_cli("dns-demo", "--no-capture", "--queries", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("capture off: --no-capture")
    assert out.stdout.count("yes: source, id, question") == 3
    assert "NOT OBSERVED" not in out.stdout


def test_the_live_capture_tells_the_story_a_replay_finds(captured) -> None:
    """The checks a replay of the reference passes are the checks this live run passes."""
    from protolab.analysis.story_checks import missing

    result, path, _ = captured
    assert result.rows and missing("dns-demo", result.rows) == []


# -- findings and "where state lives" rows, as observations ---------------------------------


def observations(result) -> dict:
    return {o.key: o for o in result.findings.all()}


def rows_by_key(rows) -> dict:
    return {r.outcome.key: r for r in rows}


def quiet(**kw):
    lines: list[str] = []
    return run_dns_demo(out=lines.append, **kw), "\n".join(lines)


def test_every_finding_and_row_of_a_captured_run_has_packet_evidence(captured) -> None:
    result, _, text = captured
    assert result.problem() == ""
    for o in result.findings.all():
        assert o.status is Status.OBSERVED, o.line()
        assert o.evidence, o.key
        if o.key not in ("dns.abandoned", "dns.capture-complete"):  # memory, counters
            assert any(e.packets for e in o.evidence), o.key
        assert o.line() in text or o.seen in text.replace("\n", " ") or o.key.startswith(
            "dns.where.")
    numbers = {r.number for r in result.rows}
    for o in result.findings.all():
        assert {n for e in o.evidence for n in e.packets} <= numbers
    assert [r.outcome.key for r in result.findings.where] == [
        "dns.where.pending-table", "dns.where.port-binding", "dns.where.query-id",
        "dns.where.source", "dns.where.between-queries", "dns.where.delayed-answer"]


def test_the_packets_named_as_evidence_are_the_ones_the_run_used(captured) -> None:
    result, _, _ = captured
    by_number = {r.number: r for r in result.rows}
    obs = observations(result)
    [forged] = [e for e in obs["dns.forged-id-dropped"].evidence if e.packets]
    assert [by_number[n].fields["dns_id"] for n in forged.packets] == [result.forged_qid]
    order = next(e for e in obs["dns.matched-out-of-order"].evidence if e.packets)
    ids = [by_number[n].fields["dns_id"] for n in order.packets]
    sent = {s.order: s.qid for s in result.log.sent[:result.queries]}
    assert ids == [sent[int(k)] for k in order.after.split(", ")]  # as the client recorded
    late, icmp = next(e for e in obs["dns.icmp"].evidence).packets
    assert by_number[late].fields["dns_id"] == result.late_qid
    assert by_number[icmp].fields["icmp_type"] == 3 and icmp > late


def test_the_restart_row_shows_two_pids_and_the_next_query_answered(captured) -> None:
    result, _, _ = captured
    row = rows_by_key(result.findings.where)["dns.where.between-queries"]
    assert row.outcome.observed
    pid = next(e for e in row.outcome.evidence if e.what == "server pid")
    assert isinstance(pid.before, int) and isinstance(pid.after, int) and pid.before != pid.after
    run = result.restart
    assert run.pids == [pid.before, pid.after] and run.old_exit is not None
    assert [m.qid for m in run.log.matched] == [run.qids[0], run.qids[2]]
    answers = next(e for e in row.outcome.evidence if e.packets).packets
    by_number = {r.number: r for r in result.rows}
    assert [by_number[n].fields["dns_id"] for n in answers] == [run.qids[0], run.qids[2]]
    assert all(by_number[n].fields["sport"] == result.server[1]
               and by_number[n].action is Action.ENDS for n in answers)
    # what a replay of this capture can say about the same row: the packets, not the PIDs
    again = asked_again(result.rows)
    assert (again[1], again[3]) == answers and again[2] > again[1]
    replayed = rows_by_key(where_from_capture(result.rows))["dns.where.between-queries"]
    assert replayed.outcome.status is Status.LIVE_ONLY and f"#{answers[1]}" in replayed.outcome.why


def test_the_killed_server_lost_the_answer_it_held(captured) -> None:
    result, _, _ = captured
    row = rows_by_key(result.findings.where)["dns.where.delayed-answer"]
    run = result.restart
    held = run.qids[1]
    assert row.outcome.observed and f"{held:#06x}" in row.disruption
    said = next(e for e in row.outcome.evidence if e.what.endswith("said"))
    assert said.after == f"holding {held:#06x}"  # the process's own word
    assert run.pending_at_kill is True and run.answered(held) is None
    assert [t.qid for t in run.log.timed_out] == [held]
    [query] = next(e for e in row.outcome.evidence if e.packets).packets
    by_number = {r.number: r for r in result.rows}
    assert by_number[query].fields["dns_id"] == held
    assert not [r for r in result.rows if r.fields.get("dns_response")
                and r.fields.get("dns_id") == held]  # no answer to it in the capture
    lost, again, answer = never_answered_then_asked_again(result.rows)
    assert lost == query and by_number[answer].fields["dns_id"] == run.qids[2]
    replayed = rows_by_key(where_from_capture(result.rows))["dns.where.delayed-answer"]
    assert replayed.outcome.status is Status.LIVE_ONLY and f"#{lost}" in replayed.outcome.why


def test_an_answer_the_server_did_not_hold_is_not_a_lost_answer(monkeypatch) -> None:
    """Part 4 asks a name the server answers at once: nothing is held when it is killed."""
    from functools import partial as bind

    import protolab.labs.dns as demo

    monkeypatch.setattr(demo, "HELD", ("delta.lab.", "A"))
    monkeypatch.setattr(demo, "_said", bind(demo._said, timeout=0.3))
    result, text = quiet(queries=2, capture=False)
    row = rows_by_key(result.findings.where)["dns.where.delayed-answer"]
    assert row.outcome.status is Status.NOT_OBSERVED
    assert result.restart.answered(result.restart.qids[1]) is not None  # its answer came
    assert "dns.where.delayed-answer" in result.problem() and "NOT OBSERVED" in text


def test_capture_off_explains_the_icmp_and_still_observes_the_rest() -> None:
    result, text = quiet(queries=3, capture=False)
    obs = observations(result)
    assert obs["dns.icmp"].status is Status.NOT_TRIED  # explained, never asserted
    assert "capture was off" in obs["dns.icmp"].why
    binding = obs["dns.where.port-binding"]
    assert binding.observed
    [udp] = binding.evidence
    assert (udp.before, udp.after) == (1, 0) and udp.packets == ()
    restart = obs["dns.where.between-queries"]
    assert restart.observed and not any(e.packets for e in restart.evidence)
    assert result.problem() == "" and "NOT OBSERVED" not in text
    assert obs["dns.icmp"].line() in text and "(not tried here) explanation" in text


def test_no_answer_back_means_out_of_order_is_not_observed() -> None:
    """Every answer to part 1 is dropped: nothing came back, so no order was seen."""
    plan = FaultPlan(drop=1.0, direction="to-client")
    result, text = quiet(queries=3, capture=False, faults=plan)
    obs = observations(result)
    matched = obs["dns.matched-out-of-order"]
    assert matched.status is Status.NOT_OBSERVED and "0 of 3 answers" in matched.why
    assert obs["dns.retries"].observed  # what the client did see: its retry timer
    assert "dns.matched-out-of-order" in result.problem()
    assert matched.line() in text and "NOT OBSERVED" in text


def test_cli_exits_1_when_no_answer_comes_back() -> None:
    out = run_cli("dns-demo", "--no-capture", "--queries", "2", "--drop", "1.0",
                  "--direction", "to-client")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "NOT OBSERVED: each answer is matched to its query by ID" in out.stdout


def test_a_server_that_cannot_restart_is_not_a_verdict(monkeypatch) -> None:
    import protolab.labs.dns as demo

    class NoServer:
        def __init__(self, *a, **kw) -> None:
            raise RuntimeError("protolab.protocols.dns did not start (said '')")

    monkeypatch.setattr(demo, "ServerProcess", NoServer)
    result, text = quiet(queries=2, capture=False)
    row = rows_by_key(result.findings.where)["dns.where.between-queries"]
    assert row.outcome.status is Status.NOT_OBSERVED and not row.outcome.evidence
    assert "could not be (re)started" in row.outcome.why
    assert result.restart.pids == [] and result.problem() == (
        "not observed: dns.where.between-queries; dns.where.delayed-answer")
    assert "NOT OBSERVED" in text


def test_a_restart_that_keeps_the_pid_is_not_observed() -> None:
    """The row needs two different PIDs and both answers; the same PID twice is no restart."""
    from protolab.labs.dns import ClientLog, DnsDemoResult, _Packets, _row_restart
    from protolab.protocols.dns import AnswerMatched

    server = ("127.0.0.1", 53)
    log = ClientLog(matched=[AnswerMatched(q, "a.lab.", "A", "NOERROR", (), server, 0.0, 1, 1)
                             for q in (1, 3)])
    for pids, status in (([41, 41], Status.NOT_OBSERVED), ([41, 42], Status.OBSERVED)):
        run = RestartRun(pids=pids, old_exit=-9, qids=[1, 2, 3], log=log)
        result = DnsDemoResult(server=server, restart=run)
        assert _row_restart(result, _Packets()).outcome.status is status


def test_where_from_the_reference_capture_has_packet_evidence() -> None:
    rows = list(annotate_file(reference_file("dns-demo")))
    where = rows_by_key(where_from_capture(rows))
    numbers = {r.number for r in rows}
    for key in ("dns.where.pending-table", "dns.where.port-binding", "dns.where.query-id",
                "dns.where.source"):
        o = where[key].outcome
        assert o.observed, o.line()
        packets = {n for e in o.evidence for n in e.packets}
        assert packets and packets <= numbers
    assert where["dns.where.between-queries"].outcome.status is Status.LIVE_ONLY
    assert where["dns.where.delayed-answer"].outcome.status is Status.LIVE_ONLY


def test_where_from_another_demos_capture_observes_nothing() -> None:
    rows = list(annotate_file(reference_file("udp-demo")))
    where = where_from_capture(rows)
    assert not any(r.outcome.observed for r in where)
    assert {r.outcome.key for r in where if r.outcome.failed} == {
        "dns.where.pending-table", "dns.where.port-binding", "dns.where.query-id",
        "dns.where.source"}


# -- other traffic on the server port (issue 13 item 14) ------------------------------------------

FOREIGN = {1: 20, 2: 5, 3: 5, 4: 20}  #: datagrams another socket sends once part N's server is up


def test_other_traffic_on_the_server_port_is_reported_not_counted(tmp_path,
                                                                   capture_rights) -> None:
    """50 datagrams from a socket the demo did not open (queries, some the server holds back,
    and garbage), sent once each part's server is up, part 4's process server too: the demo
    still tells its whole story (exit 0) and says what else arrived."""
    import socket

    import dns.message

    foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    foreign.bind(("127.0.0.1", 0))
    source = f"127.0.0.1:{foreign.getsockname()[1]}"
    sent = []

    def hook(part: int, server: tuple[str, int]) -> None:
        for i in range(FOREIGN[part]):
            wire = (b"not dns" if i % 3 == 2 else
                    dns.message.make_query("alpha.lab." if i % 3 else "nope.lab.", "A").to_wire())
            foreign.sendto(wire, server)
            sent.append(part)

    lines: list[str] = []
    try:
        result = run_dns_demo(pcap=tmp_path / "dns.pcap", out=lines.append, on_part=hook)
    finally:
        foreign.close()
    text = "\n".join(lines)
    assert len(sent) == sum(FOREIGN.values()) == 50
    assert result.problem() == "", text[-3000:]
    assert result.complete is True and all(c.counted == c.captured for c in result.own)
    assert result.heard[source] == FOREIGN[1] + FOREIGN[2] + FOREIGN[3] == result.others.heard
    others = next(o for o in result.findings.observations if o.key == "dns.other-traffic")
    assert others.status is Status.OBSERVED
    captured = result.others.sources[source]
    assert set(result.others.sources) == {source}
    assert captured == 50 if result.capture.kernel_drops == 0 else 0 < captured <= 50
    assert len(result.others.to_server) == captured
    assert f"{captured} other datagrams reached the server port from {source} ({captured})" \
        in text
    assert "dns.other-traffic" not in result.problem()


def test_without_other_traffic_there_is_no_such_finding(captured) -> None:
    result, _, _ = captured
    assert result.others.sources == {} and result.others.heard == 0
    assert all(o.key != "dns.other-traffic" for o in result.findings.all())


def test_other_traffic_without_a_capture_comes_from_the_servers_own_record() -> None:
    from protolab.labs.dns import DnsDemoResult, build_findings, other_traffic

    result = DnsDemoResult(server=("127.0.0.1", 5300), client_port=4001, bank_port=4002,
                           late_port=4003)
    result.heard = {"127.0.0.1:4001": 5, "127.0.0.1:4002": 1, "127.0.0.1:4003": 1,
                    "127.0.0.1:9999": 7, "127.0.0.2:4001": 2}
    result.others = other_traffic(result, [], 5300)
    assert result.others.sources == {"127.0.0.1:9999": 7, "127.0.0.2:4001": 2}
    assert result.others.heard == 9 and result.others.to_server == ()
    line = next(o for o in build_findings(result).observations
                if o.key == "dns.other-traffic").line()
    assert line.startswith("observed: 9 other datagrams reached the server port from "
                           "127.0.0.1:9999 (7), 127.0.0.2:4001 (2) (capture off")


# -- part 4's record against the capture: an answer after the client gave up ----------------------


def test_an_answer_after_part_4s_client_gave_up_is_in_its_record(tmp_path, capture_rights,
                                                                 monkeypatch) -> None:
    """The cause of the fault run's rare `complete False`: part 4's last answer, held 0.16 s by
    the new server process, came after the client had given the query up (a loaded machine). The
    capture had it; the client had stopped reading and its close dropped it unread; its record
    was one answer short. Here the client gives up sooner than the server answers, and the
    process is killed only once the capture has seen that answer leave it: the client's record
    must hold it (a late answer: unknown id), and the capture is complete."""
    import protolab.labs.dns as lab
    from protolab.wire.capture import Capture

    monkeypatch.setattr(lab, "GIVE_UP", 0.05)  # < the 0.16 s the server holds HELD's answer
    stack = ExitStack()
    seen: list[Capture] = []

    def hook(part: int, server: tuple[str, int]) -> None:
        if part == 4:  # the test's own capture of the server port, from part 4 on
            seen.append(stack.enter_context(Capture([server[1]], None)))

    def third_answered(port: int) -> Callable[[Decoded], bool]:
        """A frame is the answer to part 4's third query (FIRST, HELD, HELD again)."""
        queries: list[bytes] = []

        def check(d: Decoded) -> bool:
            if len(d.payload) < 3 or port not in (d.sport, d.dport):
                return False
            if not d.payload[2] & 0x80:  # QR clear: a query to the server
                queries.append(d.payload[:2])
                return False
            return len(queries) >= 3 and d.payload[:2] == queries[2]
        return check

    real_kill, killed = lab.ServerProcess.kill, []

    def kill_once_answered(proc) -> int | None:
        if proc.proc.poll() is None and killed:  # the second process, still alive
            assert seen[0].wait_for(third_answered(proc.port), timeout=5), "it never answered"
        killed.append(proc.pid)
        return real_kill(proc)

    monkeypatch.setattr(lab.ServerProcess, "kill", kill_once_answered)
    with stack:
        result = run_dns_demo(pcap=tmp_path / "dns.pcap", out=lambda _: None, on_part=hook)
    run = result.restart
    late = [r for r in run.log.rejected if r.qid == run.qids[2]]
    assert [r.reason for r in late] == [RejectReason.UNKNOWN_ID]
    assert any(t.qid == run.qids[2] for t in run.log.timed_out)
    leg = next(c for c in result.own if c.leg.startswith("server → part 4's client"))
    assert leg.counted == leg.captured == 2
    assert result.complete is True, result.own
