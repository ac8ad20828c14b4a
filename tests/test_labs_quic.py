"""`protolab quic-demo` end to end, read back by tshark with the key log; every finding it prints
is an Observation of this run, with evidence these tests check against the packets."""

from __future__ import annotations

import os
import subprocess

import pytest

from protolab.analysis.annotate import annotate_file
from protolab.analysis.observe import Status
from protolab.labs import quic as quicdemo
from protolab.labs.quic import run_quic_demo, where_from_capture
from protolab.protocols.quic import decode_header
from protolab.protocols.tcp import RST

from conftest import ROOT, live_run, require, require_tool, run_cli, run_demo_timed

REFERENCE = ROOT / "captures" / "quic-demo.ref.pcap"
FINDINGS = ("quic.handshake", "quic.client-key", "quic.server-table", "quic.dcid-is-key",
            "quic.rotation", "quic.migration", "quic.tcp-moved", "quic.restart-table",
            "quic.restart-dropped", "quic.restart-ended", "quic.new-handshake",
            "quic.retry-no-state", "quic.retry-token", "quic.half-open-cap",
            "quic.flood-real-client")
#: memory and events: no packet (the burst of fake Initials is not captured)
RUN_DATA_ONLY = {"quic.restart-table", "quic.restart-ended", "quic.half-open-cap",
                 "quic.flood-real-client", "where.half-open"}
WHERE = ("where.table", "where.dcid", "where.path", "where.tcp", "where.tls", "where.loss",
         "where.token", "where.half-open")
LIVE = ("quic-demo", run_quic_demo)  #: the run the `live` fixture makes once for this module


@pytest.fixture
def demo(live, capture_rights):
    return live


def obs(result, key: str):
    return next(o for o in result.findings.all() if o.key == key)


def evidence(o, what: str):
    return next(e for e in o.evidence if e.what == what)


def by_number(result) -> dict:
    return {r.number: r for r in result.rows}


def tshark(path, keylog, *args: str) -> list[list[str]]:
    exe = require_tool("tshark")
    out = subprocess.run([exe, "-r", str(path), "-o", f"tls.keylog_file:{keylog}", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


def _dcids_agree(path, keylog) -> int:
    from protolab.wire.packets import decode
    from protolab.wire.pcap import read_pcap

    ours = {}
    for n, rec in enumerate(read_pcap(path), 1):
        d = decode(rec.data, rec.linktype)
        h = decode_header(d.payload) if d.proto == 17 else None
        if h is not None and d.tcp is None:
            ours[n] = h.dcid.hex()
    theirs = {int(n): dcids.split(",")[0] for n, dcids in
              tshark(path, keylog, "-Y", "quic && !icmp", "-T", "fields", "-e", "frame.number",
                     "-e", "quic.dcid")}
    assert theirs and set(ours) == set(theirs)
    assert ours == theirs
    return len(theirs)


def test_every_dcid_equals_tsharks(demo) -> None:
    result, path, _ = demo
    assert _dcids_agree(path, result.keylog) > 20


def test_the_reference_capture_dcids_equal_tsharks() -> None:
    _dcids_agree(REFERENCE, ROOT / "captures" / "quic-demo.ref.keys")


def test_with_the_key_log_tshark_decrypts_stream_frames(demo) -> None:
    result, path, _ = demo
    data = [bytes.fromhex(x[0]) for x in tshark(path, result.keylog, "-Y", "quic.stream_data",
                                                  "-T", "fields", "-e", "quic.stream_data")]
    assert b"hello" in data and b"HELLO" in data and b" moved" in data


def test_long_and_short_headers_all_appear(demo) -> None:
    result, _, _ = demo
    kinds = {r.fields["quic_type"] for r in result.rows if r.fields.get("quic_type")}
    assert {"Initial", "Handshake", "1-RTT", "Retry"} <= kinds


# -- the findings: every one observed, with evidence the packets confirm ----------------------


def test_a_captured_run_observes_every_finding_and_fills_every_where_row(demo) -> None:
    result, _, text = demo
    keys = [o.key for o in result.findings.observations]
    assert keys == list(FINDINGS)
    assert [r.outcome.key for r in result.findings.where] == list(WHERE)
    for o in result.findings.all():
        if o.key == "where.loss":  # no faults asked for: an explanation, marked as one
            assert o.status is Status.NOT_TRIED
            continue
        assert o.status is Status.OBSERVED, o.line()
        assert o.evidence, o.key
        assert o.key in RUN_DATA_ONLY or any(e.packets for e in o.evidence), o.key
    assert result.problem() == "" and "NOT OBSERVED" not in text


def test_every_printed_finding_line_is_rendered_from_an_observation(demo) -> None:
    """Between the first heading and the capture, a line is an observation's rendering, an
    explanation (marked), a heading, the server's key table, or part 6's file names."""
    result, _, text = demo
    lines = text.split("\nThe capture, read back")[0].splitlines()
    rendered = {"   " + o.line() for o in result.findings.observations}
    keys = {c.hex() for c in result.server_cids}
    for line in lines:
        if line in rendered or line.startswith(("   explanation: ", "   decrypt", "   tshark ")):
            continue
        if not line or line[0].isdigit() or line.strip().startswith(("connection ID", "---")):
            continue
        assert line.split()[0] in keys, f"printed without an observation: {line!r}"
    for line in rendered:
        assert line in lines


def test_every_packets_dcid_is_a_key_of_the_receivers_table(demo) -> None:
    result, _, _ = demo
    o = obs(result, "quic.dcid-is-key")
    assert evidence(o, "client→server packets").after >= 3
    assert evidence(o, "server→client packets").after >= 3
    first = by_number(result)[evidence(o, "client→server packets").packets[0]]
    assert bytes.fromhex(first.fields["quic_dcid"]) in result.server_keys_seen


def test_rotation_changes_the_dcid_in_the_capture(demo) -> None:
    result, _, _ = demo
    old, new = result.rotated
    o = obs(result, "quic.rotation")
    assert evidence(o, "client DCID").before == old.hex() != evidence(o, "client DCID").after
    last_old, first_new = evidence(o, "last old, first new").packets
    rows = by_number(result)
    assert rows[last_old].fields["quic_dcid"] == old.hex()
    assert rows[first_new].fields["quic_dcid"] == new.hex()
    assert first_new > last_old
    before, after = result.keys_around_rotation
    assert old in before and old not in after


def test_migration_is_validated_and_the_data_after_it_arrives(demo) -> None:
    result, path, _ = demo
    assert result.server_paths[0] == (result.migrated_to, True)
    assert result.server_received.endswith(b" moved")
    o = obs(result, "quic.migration")
    first, reply = evidence(o, "first from / to the new path").packets
    rows = by_number(result)
    moved = f"{result.migrated_to[0]}:{result.migrated_to[1]}"
    assert rows[first].src == moved and rows[reply].dst == moved
    assert bytes.fromhex(rows[first].fields["quic_dcid"]) in result.server_keys_seen
    frames = {int(t) for row in tshark(path, result.keylog, "-Y", "ip.src == 127.0.0.2 || "
                                       "ip.dst == 127.0.0.2", "-T", "fields", "-e",
                                       "quic.frame_type") for t in row[0].split(",") if t}
    assert {0x1A, 0x1B} & frames  # PATH_CHALLENGE / PATH_RESPONSE on the new path


def test_a_tcp_connection_moved_the_same_way_gets_the_rst_in_the_capture(demo) -> None:
    result, _, _ = demo
    move = result.tcp_move
    assert move.attempted and move.rst_seen and move.app_received == b"hello"
    seg, rst = evidence(obs(result, "quic.tcp-moved"), "segment, RST").packets
    rows = by_number(result)
    assert rows[seg].src == move.new_source and rows[rst].dst == move.new_source
    assert rows[rst].fields["tcp_flags"] & RST


def test_a_restarted_server_has_an_empty_table_and_drops_the_clients_packets(demo) -> None:
    result, _, _ = demo
    rs = result.restart
    table = evidence(obs(result, "quic.restart-table"), "server table keys")
    assert table.before == len(rs.keys_before) >= 2 and table.after == 0
    core = evidence(obs(result, "quic.restart-table"), "server core object")
    assert core.before != core.after  # in-process: a new core object, the same PID
    assert rs.pid == os.getpid()
    dropped = evidence(obs(result, "quic.restart-dropped"), "dropped").packets
    assert len(dropped) == rs.dropped >= 1
    rows = by_number(result)
    moved = f"{result.migrated_to[0]}:{result.migrated_to[1]}"
    server = f"{result.server[0]}:{result.server[1]}"
    for n in dropped:
        assert rows[n].src == moved and rows[n].dst == server
        assert rows[n].fields["quic_dcid"] == rs.dcid.hex()
    assert not [r for r in result.rows if r.src == server and r.dst == moved
                and r.number > dropped[0]]
    assert rs.terminated == "Idle timeout" and rs.answered == b""
    assert rs.reconnected and not set(rs.fresh_keys) & set(rs.keys_before)


def test_retry_keeps_no_state_and_the_token_comes_back_byte_for_byte(demo) -> None:
    result, path, _ = demo
    assert result.retry.sent == 1 and result.retry.keys_at_retry == 0
    assert result.retry.accepted == 1 and result.retry.connected
    retry, echo = evidence(obs(result, "quic.retry-token"), "Retry, echo").packets
    tokens = {int(n): (a, b) for n, a, b in tshark(
        path, result.keylog, "-Y", "quic.long.packet_type==3 || quic.token_length>0", "-T",
        "fields", "-e", "frame.number", "-e", "quic.retry_token", "-e", "quic.token")}
    assert tokens[retry][0] and tokens[echo][1].split(",")[0] == tokens[retry][0]


def test_keylog_and_qlog_are_written(demo) -> None:
    result, _, _ = demo
    assert "CLIENT_TRAFFIC_SECRET_0" in result.keylog.read_text()
    assert '"qlog_version"' in result.qlog.read_text()
    assert result.tshark_command.startswith("tshark -r ")


def test_the_live_capture_tells_the_story_a_replay_finds(demo) -> None:
    """The checks a replay of the reference passes are the checks this live run passes."""
    from protolab.analysis.story_checks import missing

    result, path, _ = demo
    assert result.rows and missing("quic-demo", result.rows) == []
    replayed = where_from_capture(result.rows)
    assert [r.outcome.status for r in replayed].count(Status.OBSERVED) == 5


# -- replay: the where rows from a capture's packets -----------------------------------------


def test_where_from_the_reference_capture_cites_its_packets_and_marks_live_only() -> None:
    rows = list(annotate_file(REFERENCE))
    where = where_from_capture(rows)
    assert [r.outcome.key for r in where] == list(WHERE)
    numbers = {r.number for r in rows}
    for r in where:
        o = r.outcome
        assert o.status in (Status.OBSERVED, Status.LIVE_ONLY), o.line()
        if o.status is Status.OBSERVED:
            assert o.evidence[0].packets and set(o.evidence[0].packets) <= numbers
    assert {r.outcome.key for r in where if r.outcome.status is Status.LIVE_ONLY} == {
        "where.tls", "where.loss", "where.half-open"}
    retry = next(r for r in where if r.outcome.key == "where.token").outcome.evidence[0]
    assert [x.fields["quic_type"] for x in rows if x.number in retry.packets] == [
        "Retry", "Initial"]


def test_where_from_another_demos_capture_is_not_observed() -> None:
    rows = list(annotate_file(ROOT / "captures" / "dns-demo.ref.pcap"))
    statuses = [r.outcome.status for r in where_from_capture(rows)]
    assert Status.OBSERVED not in statuses and statuses.count(Status.NOT_OBSERVED) == 5


# -- without a capture; and with one step of the story taken away ----------------------------


def _quiet(tmp_path, **kw):
    lines: list[str] = []
    result = run_quic_demo(capture=False, pcap=tmp_path / "q.pcap", out=lines.append, **kw)
    return result, "\n".join(lines)


def test_without_a_capture_the_run_data_still_backs_each_finding(tmp_path) -> None:
    result, text = _quiet(tmp_path)
    assert result.problem() == "", text
    tried = {o.key for o in result.findings.all() if o.status is Status.NOT_TRIED}
    assert tried == {"quic.dcid-is-key", "quic.tcp-moved", "where.tcp", "where.loss"}
    for o in result.findings.all():
        assert o.status is not Status.NOT_OBSERVED
        assert o.status is not Status.OBSERVED or o.evidence
    assert "(not tried here) explanation: a TCP connection moved" in text


def _stay(client, sock, core, entry):
    """Part 3 without the move: the data goes on from the same socket."""
    client.send(b" moved")
    quicdemo.pump(client, sock, lambda: b"MOVED" in client.log.received)
    return sock


def test_no_migration_is_printed_as_not_observed_and_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(quicdemo, "_migrate", _stay)
    result, text = _quiet(tmp_path)
    o = obs(result, "quic.migration")
    assert o.status is Status.NOT_OBSERVED and "did not change" in o.why
    assert obs(result, "where.path").status is Status.NOT_OBSERVED
    assert "   NOT OBSERVED: the connection continues from another address" in text
    assert "quic.migration" in result.problem() and "where.path" in result.problem()


def test_no_restart_is_printed_as_not_observed_and_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(quicdemo, "restart_server", lambda server, creds: server)
    result, text = _quiet(tmp_path)
    for key in ("quic.restart-table", "quic.restart-dropped", "quic.restart-ended",
                "where.table", "where.tls"):
        assert obs(result, key).status is Status.NOT_OBSERVED, key
    assert "no restart was performed" in obs(result, "quic.restart-table").why
    assert obs(result, "quic.restart-ended").why.startswith("the server answered b' ANYONE")
    assert text.count("NOT OBSERVED") >= 3
    assert "quic.restart-table" in result.problem()


def test_the_cli_exits_1_when_a_step_is_not_observed(tmp_path, monkeypatch, capsys) -> None:
    from protolab.cli import main

    monkeypatch.setattr(quicdemo, "_migrate", _stay)
    assert main(["quic-demo", "--no-capture", "--pcap", str(tmp_path / "q.pcap")]) == 1
    assert "NOT OBSERVED: the connection continues" in capsys.readouterr().out


def test_loss_findings_come_from_the_clients_qlog(tmp_path) -> None:
    from protolab.protocols.faults import FaultPlan

    result, text = _quiet(tmp_path, faults=FaultPlan(drop=0.2, seed=1))
    declared = obs(result, "quic.loss-declared")
    assert declared.observed and evidence(
        declared, "recovery:packet_lost events (client qlog)").after == len(result.loss.lost) > 0
    assert obs(result, "quic.loss-complete").observed and result.loss_complete
    assert obs(result, "where.loss").observed
    assert result.loss_run.counters.dropped >= 1
    assert "\n7. Loss recovery" in text


# -- the command --------------------------------------------------------------------------------


def test_quic_demo_finishes_in_a_few_startups(capture_rights, tmp_path, startup_unit) -> None:
    run_demo_timed("quic-demo", tmp_path / "q.pcap", startup_unit)


def test_quic_demo_without_any_capability(tmp_path) -> None:
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "dropping capabilities with setpriv needs root")
    out = run_cli("quic-demo", "--pcap", str(tmp_path / "q.pcap"),
                  prefix=(setpriv, "--inh-caps=-all", "--bounding-set=-all"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: needs root or CAP_NET_RAW")
    assert "(not tried here) explanation: a TCP connection moved" in out.stdout
    assert "NOT OBSERVED" not in out.stdout.split("\nReplay")[0]


# -- issue 13: the fault run read in tshark; the parts in order; the half-open cap -------------


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    from protolab.protocols.faults import FaultPlan

    return live_run(tmp_path_factory, "quic-demo",
                    lambda **kw: run_quic_demo(faults=FaultPlan(drop=0.2, seed=1), **kw))


def test_the_printed_command_decrypts_the_loss_part_with_its_ack_ranges(faulty, capture_rights):
    """Part 7 through the fault proxy: the command the demo prints shows decrypted ACK frames
    with ranges, and every captured packet of that connection decrypts (one leg only)."""
    import shlex

    result, path, text = faulty
    command = result.tshark_loss_command
    assert f"   {command}" in text.splitlines()
    argv = shlex.split(command)
    assert argv[0] == "tshark"
    out = subprocess.run([require_tool("tshark"), *argv[1:], "-T", "fields", "-e",
                          "frame.number", "-e", "quic.ack.ack_range_count"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ranges = [line.split("\t") for line in out.stdout.splitlines()]
    assert ranges and all(any(int(n) > 0 for n in c.split(",") if n) for _, c in ranges)
    leg = f"udp.port=={result.loss_run.proxy_port}"
    # an ICMP error quoting a datagram of the leg (its port closed at the end) is no QUIC packet
    packets = tshark(path, result.keylog, "-d", f"{leg},quic", "-Y", f"{leg} && !icmp", "-T",
                     "fields", "-e", "frame.number", "-e", "quic.frame_type")
    assert len(packets) >= 40 and all(frames for _, frames in packets)  # none undecrypted


def test_the_annotated_pcapng_of_the_fault_run_decrypts_alone(faulty, capture_rights, tmp_path):
    from protolab.course.reference import save_pcapng

    result, path, _ = faulty
    target = tmp_path / "q.pcapng"
    save_pcapng("quic-demo", path, target, result.keylog, None)
    acks = subprocess.run([require_tool("tshark"), "-r", str(target), "-d",
                           f"udp.port=={result.loss_run.proxy_port},quic", "-Y",
                           quicdemo.ACK_RANGES_FILTER], capture_output=True, text=True,
                          timeout=60)
    assert acks.returncode == 0 and acks.stdout.strip(), acks.stderr


def test_the_parts_print_in_order(tmp_path) -> None:
    out = run_cli("quic-demo", "--no-capture", "--drop", "0.2", "--pcap", str(tmp_path / "q.pcap"))
    assert out.returncode == 0, out.stderr
    headings = [int(line.split(".")[0]) for line in out.stdout.splitlines()
                if line[:1].isdigit() and line[1:3] == ". "]
    assert headings == list(range(1, 8))


def test_a_burst_of_fake_initials_is_bounded_by_the_cap_and_a_real_client_connects(tmp_path):
    result, text = _quiet(tmp_path)
    f = result.flood
    o = obs(result, "quic.half-open-cap")
    assert o.observed, o.line()
    assert evidence(o, "half-open connections (server memory)").before == 0
    assert f.half_open_after <= f.cap == evidence(o, "cap").after < f.valid
    assert f.peak <= f.cap and f.in_memory <= f.cap
    # each real ClientHello got an entry (held now, or pruned once it timed out) or a Retry
    assert f.retries_at_cap + f.half_open_after + f.pruned == f.valid and f.retries_at_cap >= 1
    assert f.undecryptable == f.garbage
    assert f.received == f.valid + f.garbage
    assert obs(result, "quic.flood-real-client").observed and f.connected
    assert obs(result, "where.half-open").observed
    assert "   " + o.line() in text.splitlines()


def test_without_a_cap_the_burst_is_not_observed_and_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(quicdemo, "FLOOD_CAP", 10_000)
    result, text = _quiet(tmp_path)
    assert obs(result, "quic.half-open-cap").status is Status.NOT_OBSERVED
    assert obs(result, "quic.flood-real-client").status is Status.NOT_OBSERVED
    assert "   NOT OBSERVED: a burst of fake Initials" in text
    assert "quic.half-open-cap" in result.problem() and "where.half-open" in result.problem()
