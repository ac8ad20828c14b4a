"""`protolab dns-demo` end to end: the story, the capture, and tshark's reading of it."""

from __future__ import annotations

import subprocess
import time
from functools import partial

import pytest

from protolab.annotate import Action
from protolab.dns import RejectReason
from protolab.dnsdemo import run_dns_demo
from protolab.pcap import read_pcap

from conftest import live_run, require_tool, run_cli, without_net_raw


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
    assert [int(x, 16) for x in out.stdout.split()] == [s.qid for s in result.sent]


def test_capture_holds_each_packet_once_and_the_first_query(captured) -> None:
    result, path, _ = captured
    records = list(read_pcap(path))
    assert len(records) == len({r.data for r in records}) == result.capture.packets
    assert len(tshark_fields(path, "frame.number")) == len(records)
    first = result.rows[0]
    assert first.proto == "DNS" and first.summary.startswith(f"query {result.sent[0].qid:#06x}")
    assert result.complete is True and result.capture.kernel_drops == 0


def test_answers_arrive_out_of_order_and_all_match(captured) -> None:
    result, _, _ = captured
    part1 = [m for m in result.matched if m.name not in ("bank.lab.", "late.lab.")]
    assert len(part1) == 6
    assert [m.order_sent for m in part1] != sorted(m.order_sent for m in part1)


def test_forged_answers_are_dropped_for_the_right_reason(captured) -> None:
    result, _, text = captured
    assert [(r.reason, r.qid) for r in result.rejected] == [
        (RejectReason.UNKNOWN_ID, result.forged_qid), (RejectReason.WRONG_SOURCE, result.bank_qid)]
    bank = [m for m in result.matched if m.qid == result.bank_qid]
    assert [m.answers for m in bank] == [("10.0.0.10",)]
    assert "dropped: answer id" in text and "wrong source" in text


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
    assert result.abandoned[-1].qid == result.late_qid


def test_demo_finishes_under_3_seconds_with_capture(capture_rights, tmp_path) -> None:
    start = time.monotonic()
    out = run_cli("dns-demo", "--pcap", str(tmp_path / "d.pcap"))
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert "capture complete" in out.stdout
    assert elapsed < 3.0, f"dns-demo took {elapsed:.2f} s"


def test_no_capture_rights_still_runs_and_says_how_to_fix(tmp_path) -> None:
    out = run_cli("dns-demo", "--pcap", str(tmp_path / "d.pcap"),
                  prefix=without_net_raw())
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("capture off: needs root or CAP_NET_RAW")
    assert "setcap cap_net_raw+ep" in first and "protolab inspect" in first
    assert "dns-demo.ref.pcap" in first
    assert "accepted: answer id" in out.stdout and "Where state lives" in out.stdout
    assert not (tmp_path / "d.pcap").exists()
    assert out.stderr == ""


def test_no_capture_flag(tmp_path) -> None:
    out = run_cli("dns-demo", "--no-capture", "--queries", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("capture off: --no-capture")
    assert out.stdout.count("yes: source, id, question") == 3


def test_the_live_capture_tells_the_story_a_replay_finds(captured) -> None:
    """The checks a replay of the reference passes are the checks this live run passes."""
    from protolab.story import missing

    result, path, _ = captured
    assert result.rows and missing("dns-demo", result.rows) == []
