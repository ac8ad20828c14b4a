"""`protolab tls-demo` end to end: real TLS 1.3 (Python ssl, OpenSSL) between real processes.

Resumption is checked three ways for every connection: the client's `session_reused`, the
backend's own `resumed=`, and extension 41 in the ServerHello, read by protolab's annotator and,
independently, by tshark from the pcapng alone (its embedded key log decrypts the tickets)."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from protolab.analysis.observe import Status
from protolab.course.reference import save_pcapng
from protolab.labs.tls import run_tls_demo
from protolab.labs.tls_findings import build_findings

from conftest import ROOT, require_tool, run_cli, run_demo_timed

LIVE = ("tls-demo", run_tls_demo)  #: the run the `live` fixture makes once for this module
#: what each part's connections must show, in order: was the session resumed?
EXPECTED = {"direct": [False, True], "restarted": [False], "shared": [False, True, True],
            "separate": [False, False, True]}
KEYS = {"tls.ticket-issued", "tls.server-holds-nothing", "tls.resumed",
        "tls.restart-full-handshake", "tls.shared-key-resumes", "tls.shared-key-back",
        "tls.separate-keys-refused", "tls.separate-keys-sticky"}


@pytest.fixture
def demo(live, capture_rights):
    return live


def _tshark(path, *args: str) -> list[str]:
    done = subprocess.run([require_tool("tshark"), "-r", str(path), *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_every_finding_is_observed_with_evidence(demo) -> None:
    result, _, text = demo
    assert result.problem() == ""
    by = {o.key: o for o in result.findings.observations}
    assert set(by) == KEYS
    for o in by.values():
        assert o.status is Status.OBSERVED and o.evidence, o
    zero = next(r.outcome for r in result.findings.where if r.outcome.key == "tls.zero-rtt")
    assert zero.status is Status.NOT_TRIED and "(not tried here) explanation:" in text


def test_resumed_or_not_from_the_client_the_backend_and_the_capture(demo) -> None:
    result, _, _ = demo
    for part, expected in EXPECTED.items():
        attempts = result.get(part)
        assert [a.reused for a in attempts] == expected, part
        for a in attempts:
            assert a.answer["resumed"] == ("yes" if a.reused else "no")
            assert a.hello.fields["tls_psk"] is a.offered
            assert a.server_hello.fields["tls_psk"] is a.reused
    shared, separate = result.get("shared"), result.get("separate")
    assert shared[1].backend != shared[0].backend == shared[2].backend
    assert separate[1].backend != separate[0].backend == separate[2].backend
    old, new = result.restart
    assert old != new and result.get("restarted")[0].answer["pid"] == str(new)


def test_the_backends_keep_no_session_per_client(demo) -> None:
    result, _, _ = demo
    assert [a.answer["sessions_held"] for a in result.attempts] == ["0"] * len(result.attempts)
    first = result.get("direct")[0]
    assert first.has_ticket and first.lifetime > 0


def test_tshark_reads_extension_41_and_decrypts_the_tickets_from_the_pcapng_alone(
        demo, tmp_path) -> None:
    result, pcap, _ = demo
    pcapng = tmp_path / "tls.pcapng"
    assert save_pcapng("tls-demo", pcap, pcapng, result.keylog) == (len(result.rows), True)
    resumed = {line for line in _tshark(
        pcapng, "-Y", "tls.handshake.type==2 && tls.handshake.extension.type==41", "-T",
        "fields", "-e", "tcp.dstport") if line}
    for a in result.attempts:
        assert (str(a.client_port) in resumed) is a.reused, a
    tickets = [x for x in _tshark(pcapng, "-Y", "tls.handshake.type==4") if x.strip()]
    assert tickets, "no NewSessionTicket decrypted from the pcapng alone"
    assert not [x for x in _tshark(pcap, "-Y", "tls.handshake.type==4") if x.strip()], \
        "the plain pcap (no key log) must not decrypt"


def test_a_claim_the_run_did_not_show_is_not_observed(demo) -> None:
    result, _, _ = demo
    separate = result.get("separate")
    wrong = dataclasses.replace(separate[1], reused=True)
    bad = dataclasses.replace(result, attempts=[wrong if a is separate[1] else a
                                                for a in result.attempts])
    failed = {o.key for o in build_findings(bad, True).not_observed()}
    assert "tls.separate-keys-refused" in failed
    unseen = dataclasses.replace(result.get("direct")[1], server_hello=None)
    bad = dataclasses.replace(result, attempts=[unseen if a is result.get("direct")[1] else a
                                                for a in result.attempts])
    assert "tls.resumed" in {o.key for o in build_findings(bad, True).not_observed()}
    # without a capture the wire is not claimed: both ends' words, no packet evidence
    off = build_findings(bad, False)
    assert off.problem() == ""
    assert not any(e.packets for o in off.observations for e in o.evidence)


def test_back_at_the_issuer_is_checked_and_the_sticky_row_shows_the_refusal(demo) -> None:
    """"Back at the issuer" holds only when the third connection reached the first one's
    backend; the own-keys row of the table carries the refusal at b2 as well as the return."""
    result, _, _ = demo
    shared = result.get("shared")
    elsewhere = dataclasses.replace(shared[2], answer={**shared[2].answer,
                                                       "backend": shared[1].backend})
    bad = dataclasses.replace(result, attempts=[elsewhere if a is shared[2] else a
                                                for a in result.attempts])
    assert "tls.shared-key-back" in {o.key for o in build_findings(bad, True).not_observed()}
    own = [r.outcome.key for r in result.findings.where if r.state == "a ticket key per backend"]
    assert own == ["tls.separate-keys-refused", "tls.separate-keys-sticky"]


def test_tls_demo_runs_within_its_budget(tmp_path, capture_rights, startup_unit) -> None:
    run_demo_timed("tls-demo", tmp_path / "t.pcap", startup_unit)


def test_the_replay_of_the_reference_tells_the_whole_story() -> None:
    out = run_cli("tls-demo", "--replay")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "NOT in this capture" not in out.stdout and "resumed (ext 41)" in out.stdout
    other = run_cli("tls-demo", "--replay", str(ROOT / "captures" / "udp-demo.ref.pcap"))
    assert other.returncode == 1 and "NOT in this capture" in other.stdout


@pytest.mark.parametrize("shared", [True, False])
def test_a_backend_port_taken_between_the_look_and_the_bind_is_replaced(
        shared, tmp_path, monkeypatch) -> None:
    """A port found free can be bound by another program before the backend binds it (CI saw
    tls-demo end with a traceback so): the part starts its backends on two other ports; and
    when every try finds its port taken, it says why."""
    import datetime
    import socket

    from protolab.labs import tls
    from protolab.net.processes import restartable_port
    from protolab.protocols.quic import make_credentials

    cert, key = tls.pem_files(make_credentials(datetime.datetime.now(datetime.UTC)), tmp_path)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)  # (no SO_REUSEADDR: a listener nobody else may bind beside)
    busy = taken.getsockname()[1]
    handed: list[int] = []

    def busy_first(then_free: bool):
        """The busy port first; after it, free ports (`then_free`), or busy and free in turn."""
        def port() -> int:
            handed.append(busy if not handed or (not then_free and len(handed) % 2)
                          else restartable_port())
            return handed[-1]
        return port

    with taken:
        monkeypatch.setattr(tls, "restartable_port", busy_first(then_free=True))
        procs, ports = tls._backends((str(cert), str(key)), shared)
        try:
            assert handed[0] == busy and busy not in ports and len(set(ports)) == 2
            for port in ports:  # each one serves: a TCP connection is accepted
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
        finally:
            for proc in procs:
                proc.kill()
        handed.clear()
        monkeypatch.setattr(tls, "restartable_port", busy_first(then_free=False))
        with pytest.raises(RuntimeError, match="did not start"):
            tls._backends((str(cert), str(key)), shared)
