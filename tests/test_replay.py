"""`protolab <demo> --replay`: the story and tables from a capture, with nothing running."""

from __future__ import annotations

import pytest

from protolab.annotate import annotate_file
from protolab.inspect import format_rows
from protolab.paths import reference_file
from protolab.replay import DEMOS, LIVE_ONLY, replay
from protolab.story import STORIES, packets_text

from conftest import run_cli, without_net_raw


@pytest.mark.parametrize("demo", DEMOS)
def test_replay_prints_the_story_found_in_the_reference_and_its_annotation(demo) -> None:
    out = run_cli(demo, "--replay")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("REPLAY: nothing runs")
    assert f"captures/{demo}.ref.pcap" in out.stdout.splitlines()[0]
    rows = list(annotate_file(reference_file(demo)))
    # the same annotation the live demo prints, row for row
    assert format_rows(rows) in out.stdout
    lines: list[str] = []
    result = replay(demo, out=lines.append)
    assert result.complete and result.rows == rows
    for finding in result.findings:
        assert finding.step.text in out.stdout
        assert packets_text(finding.packets) in out.stdout
        assert finding.packets
    for item in LIVE_ONLY[demo]:
        assert item in out.stdout
    assert "Where state lives in" in out.stdout
    assert out.stderr == ""


@pytest.mark.parametrize("demo", DEMOS)
def test_replay_of_a_capture_of_another_demo_says_so_and_fails(demo) -> None:
    other = reference_file(DEMOS[(DEMOS.index(demo) + 1) % len(DEMOS)])
    out = run_cli(demo, "--replay", str(other))
    assert out.returncode == 1
    assert f"is it a capture of `protolab {demo}`?" in out.stdout
    assert out.stdout.count("NOT SHOWN") == len(STORIES[demo])


def test_replay_of_a_missing_or_broken_file_is_one_line(tmp_path) -> None:
    out = run_cli("udp-demo", "--replay", str(tmp_path / "nope.pcap"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "nope.pcap" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    out = run_cli("udp-demo", "--replay", str(bad))
    assert out.returncode == 2 and out.stderr.count("\n") == 1


def test_dns_replay_rebuilds_the_match_table_from_packets() -> None:
    lines: list[str] = []
    result = replay("dns-demo", out=lines.append)
    text = "\n".join(lines)
    queries = [r for r in result.rows if "dns_id" in r.fields
               and not r.fields.get("dns_response") and r.src == result.rows[0].src]
    for q in queries:  # every query of the batch is a row of the table, with its answer
        assert f"{q.fields['dns_id']:#06x}" in text.split("matched by ID:")[1]


def test_without_capture_rights_the_demo_runs_then_replays_the_reference(tmp_path) -> None:
    out = run_cli("udp-demo", "--pcap", str(tmp_path / "u.pcap"),
                  prefix=without_net_raw())
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: needs root or CAP_NET_RAW")
    live, _, replayed = out.stdout.partition("REPLAY (capture is impossible here: needs root "
                                             "or CAP_NET_RAW)")
    assert replayed, "no replay after the live run"
    assert "workflow continued" in live  # the live demo ran first
    rows = list(annotate_file(reference_file("udp-demo")))
    assert format_rows(rows) in replayed
    assert not (tmp_path / "u.pcap").exists()


def test_no_capture_asked_for_does_not_replay() -> None:
    out = run_cli("udp-demo", "--no-capture")
    assert out.returncode == 0 and "REPLAY" not in out.stdout
