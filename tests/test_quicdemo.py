"""`protolab quic-demo` end to end, read back by tshark with the key log."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from protolab.quic import decode_header
from protolab.quicdemo import run_quic_demo

from conftest import ROOT, live_run, require, require_tool, run_cli


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    return live_run(tmp_path_factory, "quic-demo", run_quic_demo)


@pytest.fixture
def demo(live, capture_rights):
    return live


def tshark(path, keylog, *args: str) -> list[list[str]]:
    exe = require_tool("tshark")
    out = subprocess.run([exe, "-r", str(path), "-o", f"tls.keylog_file:{keylog}", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


def _dcids_agree(path, keylog) -> int:
    from protolab.packets import decode
    from protolab.pcap import read_pcap

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
    _dcids_agree(ROOT / "captures" / "quic-demo.ref.pcap", ROOT / "captures" / "quic-demo.ref.keys")


def test_with_the_key_log_tshark_decrypts_stream_frames(demo) -> None:
    result, path, _ = demo
    data = [bytes.fromhex(x[0]) for x in tshark(path, result.keylog, "-Y", "quic.stream_data",
                                                  "-T", "fields", "-e", "quic.stream_data")]
    assert b"hello" in data and b"HELLO" in data and b" moved" in data


def test_long_and_short_headers_all_appear(demo) -> None:
    result, _, _ = demo
    kinds = {r.summary.split()[0] for r in result.rows if r.proto == "QUIC"}
    assert {"Initial", "Handshake", "1-RTT", "Retry"} <= kinds


def test_rotation_changes_the_dcid_in_the_capture(demo) -> None:
    result, _, _ = demo
    old, new = result.rotated
    dcids = [r.summary.split("DCID=")[1].split()[0] for r in result.rows
             if r.proto == "QUIC" and r.summary.startswith("1-RTT")]
    assert old.hex() in dcids and new.hex() in dcids
    assert dcids.index(new.hex()) > max(i for i, x in enumerate(dcids) if x == old.hex())
    assert any("rotation" in r.state for r in result.rows)


def test_migration_is_validated_and_the_data_after_it_arrives(demo) -> None:
    result, path, _ = demo
    assert result.server_paths[0] == (result.migrated_to, True)
    assert result.server_received.endswith(b" moved")
    frames = {int(t) for row in tshark(path, result.keylog, "-Y", "ip.src == 127.0.0.2 || "
                                       "ip.dst == 127.0.0.2", "-T", "fields", "-e",
                                       "quic.frame_type") for t in row[0].split(",") if t}
    assert {0x1A, 0x1B} & frames  # PATH_CHALLENGE / PATH_RESPONSE on the new path
    assert any("migration" in r.state for r in result.rows)


def test_a_tcp_connection_moved_the_same_way_does_not_survive(demo) -> None:
    result, _, _ = demo
    move = result.tcp_move
    assert move.attempted and move.rst_seen and move.app_received == b"hello"


def test_a_restarted_server_has_no_state_and_a_new_connection_is_needed(demo) -> None:
    result, _, _ = demo
    assert result.restart_unknown_cid >= 1
    assert result.restart_outcome == "Idle timeout"
    assert result.reconnected


def test_retry_keeps_no_state_before_the_token(demo) -> None:
    result, _, _ = demo
    assert result.retry_sent == 1 and result.retry_table_before_token == 0
    assert result.retry_connected


def test_keylog_and_qlog_are_written(demo) -> None:
    result, _, _ = demo
    assert "CLIENT_TRAFFIC_SECRET_0" in result.keylog.read_text()
    assert '"qlog_version"' in result.qlog.read_text()
    assert result.tshark_command.startswith("tshark -r ")


def test_quic_demo_finishes_under_3_seconds(capture_rights, tmp_path) -> None:
    start = time.monotonic()
    out = run_cli("quic-demo", "--pcap", str(tmp_path / "q.pcap"))
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert elapsed < 3.0, f"quic-demo took {elapsed:.2f} s"


def test_quic_demo_without_any_capability(tmp_path) -> None:
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "dropping capabilities with setpriv needs root")
    out = run_cli("quic-demo", "--pcap", str(tmp_path / "q.pcap"),
                  prefix=(setpriv, "--inh-caps=-all", "--bounding-set=-all"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capture off: needs root or CAP_NET_RAW")
    assert "(needs root to forge)" in out.stdout and "established" in out.stdout


def test_the_live_capture_tells_the_story_a_replay_finds(demo) -> None:
    """The checks a replay of the reference passes are the checks this live run passes."""
    from protolab.story import missing

    result, path, _ = demo
    assert result.rows and missing("quic-demo", result.rows) == []
