"""Lab 07, `protolab tcp-attack-demo`: TCP's state under attack, in namespaces.

One captured run for the module (`LIVE`); each test reads what the run saw from the kernel
(counters of the server's namespace, `ss`), the sockets, and the written capture, and checks it
against what the kernel does: the three tcp_syncookies settings, the RSTs, the keepalive. Then
the run as a user starts it (the CLI, its time), stopped by a signal, and without root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from protolab.analysis.annotate import Kind, annotate_file
from protolab.analysis.story_checks import check
from protolab.labs.tcp_attack import BACKLOG, FLOOD, KEEPALIVE, run_tcp_attack_demo

from conftest import ROOT, require, require_tool, run_cli, without_net_raw

LIVE = ("tcp-attack-demo", run_tcp_attack_demo)
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def namespaces_here(capture_rights) -> None:
    require(os.geteuid() == 0, "network namespaces need root")


def _rose(sample, name: str) -> int:
    before, after = sample.counters[name]
    return after - before


def netns_of(run: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if f"-{run}-" in line]


def test_the_three_syncookies_settings_give_their_own_counters_and_queue(live) -> None:
    result, _, _ = live
    off, one, two = (result.samples[k] for k in ("queue", "cookies1", "cookies2"))
    # 0: the queue holds backlog + 1 half-open entries; every other SYN is dropped, no cookie
    assert len(off.ss) == BACKLOG + 1
    assert _rose(off, "TCPReqQFullDrop") == _rose(off, "ListenDrops") == FLOOD - len(off.ss)
    assert _rose(off, "SyncookiesSent") == 0
    # 1: the same queue, then cookies instead of drops
    assert len(one.ss) == BACKLOG + 1
    assert _rose(one, "SyncookiesSent") == FLOOD - len(one.ss)
    assert _rose(one, "TCPReqQFullDrop") == 0
    # 2: cookies only, no entry
    assert two.ss == [] and _rose(two, "SyncookiesSent") == FLOOD


def test_a_cookie_handshake_completes_from_the_ack_and_a_forged_one_fails(live) -> None:
    result, path, _ = live
    ack, forged, no_ts = (result.samples[k] for k in ("cookie-ack", "forged-ack",
                                                      "cookie-no-ts"))
    assert _rose(ack, "SyncookiesRecv") == 1 and ack.ss == []
    assert "wscale" in ack.note and "sack" in ack.note
    assert _rose(forged, "SyncookiesFailed") == 1
    assert _rose(no_ts, "SyncookiesRecv") == 1
    assert "wscale" not in no_ts.note and "sack" not in no_ts.note
    rows = list(annotate_file(path))
    cookie = next(r for r in rows if r.shows(Kind.TCP_SYN_COOKIE)
                  and r.fields["dport"] == ack.ports[0])
    syn = next(r for r in rows if r.flow == cookie.flow and r.fields["tcp_flags"] == 0x02)
    # Linux's cookie TSval: the SYN's wscale in bits 0-3, SACK permitted in bit 4, no ECN
    assert cookie.fields["tcp_tsval"] % 64 == syn.fields["tcp_wscale"] | 0x10


def test_the_exact_rst_resets_and_the_in_window_one_is_challenged(live) -> None:
    result, path, _ = live
    inside, outside, exact = (result.samples[k] for k in ("rst-in", "rst-out", "rst-exact"))
    assert _rose(inside, "TCPChallengeACK") == 1 and inside.after_ss
    assert _rose(outside, "TCPChallengeACK") == 0 and outside.after_ss
    assert exact.ss and not exact.after_ss and "ECONNRESET" in exact.note
    steps = {f.step.key: f.packets for f in check("tcp-attack-demo", list(annotate_file(path)))}
    rst, challenge = steps["challenge"]
    assert challenge > rst
    assert steps["outside"] and steps["exact"][0] > steps["outside"][0]


def test_the_half_open_server_outlives_its_peer_until_keepalive_fires(live) -> None:
    result, path, _ = live
    k = result.samples["keepalive"]
    idle, interval, count = KEEPALIVE
    assert k.ss and "timer:(keepalive" in k.ss[0]  # ESTABLISHED while the client is silent
    assert "ETIMEDOUT" in k.note and not k.after_ss
    waited = float(k.note.split("after ")[1].split(" s")[0])
    assert idle + interval * count - 0.5 <= waited <= idle + interval * count + 1.5
    assert _rose(k, "client kernel entries") == 1  # the client's own kernel still holds it
    steps = {f.step.key: f.packets for f in check("tcp-attack-demo", list(annotate_file(path)))}
    assert len(steps["keepalive"]) == count + 1  # the probes, then the RST


def test_every_finding_is_observed_and_every_story_step_is_in_the_capture(live) -> None:
    result, path, text = live
    assert result.problem() == "", result.problem()
    assert all(f.shown for f in check("tcp-attack-demo", list(annotate_file(path))))
    assert "half-open entry in the server's SYN queue (server kernel)" in text
    assert "no state kept: it is in the ISN (the packet)" in text
    run = text.split("Run ", 1)[1].split(".", 1)[0]
    assert netns_of(run) == []


def test_the_cli_run_takes_under_15_s_and_writes_its_html(tmp_path) -> None:
    start = time.monotonic()
    done = run_cli("tcp-attack-demo", "--pcap", str(tmp_path / "a.pcapng"), "--html",
                   str(tmp_path / "a.html"), timeout=60)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert elapsed < 15, f"{elapsed:.1f} s"
    page = (tmp_path / "a.html").read_text()
    assert "keepalive probe" in page  # a note of the run's capture, drawn in the ladder
    assert "Where state lives when TCP is attacked" in page  # what the demo printed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_leaves_nothing(signum, tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "protolab", "tcp-attack-demo", "--pcap",
                             str(tmp_path / "s.pcapng")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = proc.stdout.readline()
    run = first.split("Run ", 1)[1].split(".", 1)[0]
    while "4. Half-open" not in proc.stdout.readline():  # stopped in part 4, the longest
        assert proc.poll() is None, proc.stderr.read()
    assert netns_of(run)
    proc.send_signal(signum)
    assert proc.wait(30) == 128 + signum
    assert netns_of(run) == []
    proc.stdout.close()
    proc.stderr.close()


def test_without_raw_sockets_it_says_so_in_one_line_and_replays() -> None:
    done = run_cli("tcp-attack-demo", prefix=without_net_raw())
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert "tcp-attack-demo:" in first and "sudo protolab tcp-attack-demo" in first
    assert done.stdout.count("REPLAY") == 1 and "Traceback" not in done.stderr


def test_printed_numbers_are_the_runs_own(live) -> None:
    """The cookie's TSval bits are printed as tshark reads them from the SYN-ACK; the legitimate
    client's wait is measured; the RST lines keep the socket's word apart from the counter."""
    result, path, text = live
    tshark = require_tool("tshark")
    ack = result.samples["cookie-ack"]
    out = subprocess.run([tshark, "-r", str(path), "-Y", f"tcp.flags == 0x012 && tcp.dstport == "
                          f"{ack.ports[0]}", "-T", "fields", "-e", "tcp.options.timestamp.tsval"],
                         capture_output=True, text=True, timeout=60, check=True)
    tsval = int(out.stdout.split()[0])
    bits = next(o for o in result.findings.observations if o.key == "attack.cookies.tsval-bits")
    assert f"TSval {tsval}, low 6 bits {tsval % 64:#04x}" in bits.seen
    waited = float(result.samples["queue"].note.split("after ")[1].split(" s")[0])
    assert 1.2 <= waited < 2.5
    exact = next(line for line in text.splitlines() if line.lstrip().startswith("rst-exact:"))
    assert exact.endswith("; server recv(): ECONNRESET") and "  " not in exact.strip()
