"""Annotated pcapng: the notes travel with the capture, readable by tshark and Wireshark."""

from __future__ import annotations

import subprocess

import pytest

from protolab.analysis.annotate import annotate_file
from protolab.analysis.export import write_annotated
from protolab.wire.pcap import read_pcap

from conftest import ROOT, require_tool, run_cli

CAPTURES = sorted((ROOT / "captures").glob("*.ref.pcap"))


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_tshark_reads_back_the_same_notes_the_table_shows(path, tmp_path) -> None:
    tshark = require_tool("tshark")
    out = tmp_path / "annotated.pcapng"
    assert write_annotated(path, out) == len(list(read_pcap(path)))
    done = subprocess.run([tshark, "-r", str(out), "-T", "fields", "-e", "frame.comment"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [r.where() for r in annotate_file(path)]
    # the packets themselves are unchanged, and protolab reads its own pcapng
    assert [(r.data, r.orig_len) for r in read_pcap(out)] == \
        [(r.data, r.orig_len) for r in read_pcap(path)]


def test_the_section_comment_names_the_capture(tmp_path) -> None:
    capinfos = require_tool("capinfos")
    out = tmp_path / "a.pcapng"
    write_annotated(CAPTURES[0], out)
    info = subprocess.run([capinfos, "-k", str(out)], capture_output=True, text=True,
                          timeout=30).stdout
    assert f"{CAPTURES[0].name}, a capture, annotated by protolab" in info


def test_embedded_secrets_decrypt_quic_from_the_file_alone(tmp_path) -> None:
    tshark = require_tool("tshark")
    ref = ROOT / "captures" / "quic-demo.ref.pcap"
    out = tmp_path / "q.pcapng"
    done = run_cli("inspect", str(ref), "--write-annotated", str(out), "--secrets",
                   str(ref.with_suffix(".keys")))
    assert done.returncode == 0, done.stderr
    stream = subprocess.run([tshark, "-r", str(out), "-Y", "quic.stream_data", "-T", "fields",
                             "-e", "quic.stream_data"], capture_output=True, text=True,
                            timeout=60).stdout.split()
    assert bytes.fromhex(stream[0]) == b"hello"
    without = tmp_path / "plain.pcapng"
    write_annotated(ref, without)
    assert subprocess.run([tshark, "-r", str(without), "-Y", "quic.stream_data"],
                          capture_output=True, text=True, timeout=60).stdout == ""


def _not_observed(stdout: str) -> str:
    """The lines of a demo's output that say what was not observed, and its last line."""
    lines = stdout.splitlines()
    return "\n".join([ln for ln in lines if "not observed" in ln.lower()] + lines[-1:])


@pytest.mark.parametrize("demo", ["udp-demo", "quic-demo"])
def test_a_demo_saves_its_own_annotated_pcapng(demo, capture_rights, tmp_path) -> None:
    tshark, capinfos = require_tool("tshark"), require_tool("capinfos")
    pcap, pcapng = tmp_path / "d.pcap", tmp_path / "d.pcapng"
    done = run_cli(demo, "--pcap", str(pcap), "--pcapng", str(pcapng))
    # a demo exits 1 when a finding was not observed: its lines saying which are in stdout
    assert done.returncode == 0, done.stderr + _not_observed(done.stdout)
    assert f"→ {pcapng}" in done.stdout
    comments = subprocess.run([tshark, "-r", str(pcapng), "-T", "fields", "-e",
                               "frame.comment"], capture_output=True, text=True,
                              timeout=60).stdout.splitlines()
    assert comments == [r.where() for r in annotate_file(pcap)]
    info = subprocess.run([capinfos, "-k", str(pcapng)], capture_output=True, text=True,
                          timeout=30).stdout
    assert f"captured by `protolab {demo}` (lab 0" in info
    if demo == "quic-demo":  # the secrets travel inside: no key log given to tshark
        stream = subprocess.run([tshark, "-r", str(pcapng), "-Y", "quic.stream_data", "-T",
                                 "fields", "-e", "quic.stream_data"], capture_output=True,
                                text=True, timeout=60).stdout.split()
        assert stream and bytes.fromhex(stream[0]) == b"hello"


def test_pcapng_without_capture_says_nothing_was_written(tmp_path) -> None:
    done = run_cli("udp-demo", "--no-capture", "--pcapng", str(tmp_path / "x.pcapng"))
    assert done.returncode == 0 and "--pcapng: nothing written" in done.stdout
    assert not (tmp_path / "x.pcapng").exists()


def test_an_unreadable_source_leaves_an_existing_target_untouched(tmp_path) -> None:
    target = tmp_path / "keep.pcapng"
    target.write_bytes(b"an earlier file")
    done = run_cli("inspect", str(tmp_path / "missing.pcap"), "--write-annotated", str(target))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert target.read_bytes() == b"an earlier file"
