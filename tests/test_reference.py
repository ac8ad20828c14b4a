"""`protolab captures`: reference captures checked by their story; `--refresh` remakes them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from protolab.analysis.annotate import annotate_file
from protolab.course.reference import DEMOS, LAB_ONLY
from protolab.wire.paths import MULTI_POINT, reference_file

from conftest import ROOT, require_tool, run_cli, without_net_raw


def test_the_committed_references_all_tell_their_story() -> None:
    out = run_cli("captures")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok: every step of the story is in the packets") == len(DEMOS)
    assert "ok: lab 05's questions" in out.stdout


def test_a_reference_that_no_longer_tells_its_story_fails(tmp_path) -> None:
    for demo in DEMOS:
        shutil.copy(reference_file(demo), tmp_path)
    # the DNS reference replaced by the UDP one: same file name, wrong story
    shutil.copy(ROOT / "captures" / "udp-demo.ref.pcap", tmp_path / "dns-demo.ref.pcap")
    (tmp_path / "tcp-demo.ref.pcap").write_bytes(b"garbage")
    out = run_cli("captures", "--dir", str(tmp_path))
    assert out.returncode == 1
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[2:]}
    assert "MISSING: batch, matched" in lines["dns-demo"]
    assert "ok" not in lines["tcp-demo"].split()[-1] and "pcap" in lines["tcp-demo"]
    assert "ok: every step" in lines["udp-demo"] and "ok: every step" in lines["quic-demo"]


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory):
    from protolab.wire.capture import capture_denied_reason

    if capture_denied_reason():
        return None
    where = tmp_path_factory.mktemp("refs")
    out = run_cli("captures", "--refresh", "--dir", str(where), timeout=120)
    return out, where


def test_refresh_writes_every_reference_and_checks_it(refreshed, capture_rights) -> None:
    out, where = refreshed
    assert out.returncode == 0, out.stdout + out.stderr
    for demo in DEMOS + LAB_ONLY:
        assert f"{demo}: refreshed" in out.stdout
        assert reference_file(demo, where).exists() and (where / f"{demo}.ref.pcapng").exists()
    assert (where / "quic-demo.ref.keys").exists() and (where / "tls-demo.ref.keys").exists()
    assert sorted(p.name for p in where.iterdir()) == sorted(
        {f"{d}.ref.{ext}" for d in DEMOS + LAB_ONLY for ext in ("pcap", "pcapng")
         if d not in MULTI_POINT or ext == "pcapng"}
        | {"quic-demo.ref.keys", "tls-demo.ref.keys", "hijack-demo.ref.keys"})
    assert out.stdout.count("ok: every step of the story is in the packets") == len(DEMOS)
    assert "ok: lab 05's questions are answered from it" in out.stdout
    for demo in DEMOS:  # each run's where-state-lives table, every row with its evidence
        assert f"{demo} — where state lives, in this run:" in out.stdout
    assert "NOT OBSERVED" not in out.stdout


def test_refresh_shows_what_a_run_did_not_observe(monkeypatch) -> None:
    """A run whose findings fail is shown with its NOT OBSERVED lines (and is then kept out)."""
    from protolab.analysis.observe import Findings, StateRow, observe
    from protolab.course import reference

    findings = Findings(where=[StateRow("the state", "nobody", "restarted it",
                                        observe("k.row", "it went on", False,
                                                why_not="no answer came"))])
    lines: list[str] = []
    reference._show_findings("dns-demo", type("R", (), {"findings": findings})(), lines.append)
    text = "\n".join(lines)
    assert "dns-demo — where state lives, in this run:" in text
    assert "NOT OBSERVED: no answer came" in text and "NOT OBSERVED: it went on" in text


def test_refreshed_pcapng_carries_the_notes_the_lab_and_for_quic_the_secrets(
        refreshed, capture_rights) -> None:
    _, where = refreshed
    tshark, capinfos = require_tool("tshark"), require_tool("capinfos")
    for demo in DEMOS + LAB_ONLY:
        comments = subprocess.run([tshark, "-r", str(where / f"{demo}.ref.pcapng"), "-T",
                                   "fields", "-e", "frame.comment"], capture_output=True,
                                  text=True, timeout=60).stdout.splitlines()
        assert comments == [r.where() for r in annotate_file(reference_file(demo, where))]
        info = subprocess.run([capinfos, "-k", str(where / f"{demo}.ref.pcapng")],
                              capture_output=True, text=True, timeout=30).stdout
        assert f"`protolab {demo}` (lab " in info
    stream = subprocess.run([tshark, "-r", str(where / "quic-demo.ref.pcapng"), "-Y",
                             "quic.stream_data", "-T", "fields", "-e", "quic.stream_data"],
                            capture_output=True, text=True, timeout=60).stdout.split()
    assert stream and bytes.fromhex(stream[0]) == b"hello"


def test_refresh_without_capture_rights_is_one_line_and_touches_nothing(tmp_path) -> None:
    old = tmp_path / "udp-demo.ref.pcap"
    shutil.copy(ROOT / "captures" / "udp-demo.ref.pcap", old)
    before = old.read_bytes()
    out = run_cli("captures", "--refresh", "--dir", str(tmp_path), "udp-demo",
                  prefix=without_net_raw())
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "needs capture" in out.stderr and "setcap cap_net_raw+ep" in out.stderr
    assert old.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [old.name]
