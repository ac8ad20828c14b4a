"""`protolab hijack-demo` end to end: real backends behind protolab's balancer and a real nginx
(or HAProxy) terminating TLS, a victim on 127.0.0.1 and an attacker replaying from 127.0.0.2.

The matrix design × logout × deny-list is checked from the responses the attacker's client read
and, independently, from the capture (the request and response packets); what the capture
exposes is checked against tshark's own reading of the same file, and the TLS part with tshark
decrypting the pcapng alone."""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import json
import ssl
import subprocess

import pytest

from protolab.analysis.exposed import Material, scan_file
from protolab.analysis.observe import Status
from protolab.course.reference import save_pcapng
from protolab.labs.hijack import SETUPS, run_hijack_demo
from protolab.labs.hijack_findings import AFTER_LOGOUT, build_findings

from conftest import ROOT, require_tool, run_cli, run_demo_timed

LIVE = ("hijack-demo", run_hijack_demo)  #: the run the `live` fixture makes once for this module
REFERENCE = ROOT / "captures" / "hijack-demo.ref.pcap"


@pytest.fixture
def demo(live, capture_rights):
    require_tool("nginx")
    return live


def _tshark(path, *args: str) -> list[str]:
    done = subprocess.run([require_tool("tshark"), "-r", str(path), *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.split("\n") if line]


def test_every_finding_is_observed_with_evidence(demo) -> None:
    result, _, text = demo
    assert result.problem() == ""
    for o in result.findings.observations:
        if o.status is Status.OBSERVED:
            assert o.evidence, o
        else:
            assert o.status is Status.NOT_TRIED and o.key.startswith("hijack.flag.") \
                or o.key == "hijack.backend-leg", o
    assert "(not tried here) explanation: HttpOnly" in text


def test_the_matrix_is_measured_from_the_responses_and_the_capture(demo) -> None:
    result, pcap, _ = demo
    replies = {(m.src, m.dst): m for m in _http(pcap)}
    for s in SETUPS:
        before, after = result.get(s.name, "replay"), result.get(s.name, "replay after logout")
        assert before.status == 200 and before.body["user"] == "alice", s
        assert (after.status == 200) is AFTER_LOGOUT[s.name], (s, after)
        for ex in (before, after):  # the capture says the same, packet by packet
            answer = next(m for (src, dst), m in replies.items()
                          if dst == f"127.0.0.2:{ex.port}" and m.is_response)
            assert answer.status == ex.status
        victim = result.get(s.name, "logout", "victim")
        assert victim.status == 200 and victim.body["logged_out"] is (s.name != "jwt")


def _http(pcap):
    from protolab.analysis.http_streams import http_messages
    from protolab.wire.packets import decode
    from protolab.wire.pcap import read_pcap

    return http_messages((n, decode(r.data, r.linktype, r.time))
                         for n, r in enumerate(read_pcap(pcap), 1))


def test_the_attacker_replays_what_the_capture_exposed(demo) -> None:
    result, pcap, _ = demo
    exposed = scan_file(pcap).items
    for s in SETUPS:
        theft = result.thefts[s.name]
        assert theft.found is not None and theft.found in exposed
        want = Material.COOKIE if s.cookie else Material.BEARER
        assert theft.found.material is want and theft.found.src.startswith("127.0.0.1:")


def test_session_fixation_never_adopts_the_planted_id(demo) -> None:
    result, _, _ = demo
    for name in ("memory", "store"):
        assert result.fixed[name] and result.fixed[name] != result.planted[name]
        assert result.get(name, "fixation login", "victim").status == 200
        assert result.get(name, "fixation replay").status == 401


def test_the_denylist_cost_is_measured_in_the_run(demo) -> None:
    result, _, text = demo
    lat = result.latency
    assert len(lat.without) == len(lat.with_list) > 0
    assert f"{lat.p50(lat.with_list):.3f} ms with the deny-list" in text


def test_exposed_agrees_with_tshark_and_tls_needs_the_key_log(demo, tmp_path) -> None:
    result, pcap, _ = demo
    port = result.tls.port
    decode = [a for p in result.balancers.values() for a in ("-d", f"tcp.port=={p},http")]
    # tshark names the frame that completes a message (its body), protolab the head's first
    theirs = sorted((int(n), c) for n, c in (line.split("\t") for line in _tshark(
        pcap, *decode, "-Y", f"http.cookie && !tcp.port=={port}", "-T", "fields", "-e",
        "frame.number", "-e", "http.cookie")))
    mine = sorted((e.number, f"{e.name}={e.value}") for e in scan_file(pcap).items
                  if e.material is Material.COOKIE)
    assert [c for _, c in mine] == [c for _, c in theirs] and mine
    # each message ends (tshark's frame) after its head and before the next message's head; how
    # many frames lie between depends on the machine's load (segments, other connections' ACKs)
    heads = [n for n, _ in mine]
    assert all(a <= b < nxt for a, (b, _), nxt in zip(heads, theirs, [*heads[1:], 1 << 62],
                                                        strict=True))
    assert result.tls.scan is not None and not result.tls.scan.items and result.tls.scan.tls
    assert not _tshark(pcap, "-Y", f"tcp.port=={port} && http")  # no key log: nothing
    pcapng = tmp_path / "h.pcapng"
    assert save_pcapng("hijack-demo", pcap, pcapng, result.keylog)[1]
    sets = _tshark(pcapng, "-Y", f"tcp.port=={port} && http.set_cookie", "-T", "fields", "-e",
                   "http.set_cookie")
    assert sets and result.tls.session in sets[0] and "Secure" in sets[0]
    assert result.tls.replay.status == 200


def test_a_claim_the_run_did_not_show_is_not_observed(demo) -> None:
    result, _, _ = demo
    after = result.get("memory", "replay after logout")
    wrong = dataclasses.replace(after, status=200, body={"user": "alice"})
    bad = dataclasses.replace(result, exchanges=[wrong if e is after else e
                                                 for e in result.exchanges])
    assert "hijack.memory.replay-after-logout" in {
        o.key for o in build_findings(bad, True).not_observed()}
    leaked = dataclasses.replace(result, tls=dataclasses.replace(result.tls, id_in_bytes=True))
    assert "hijack.tls-nothing-exposed" in {
        o.key for o in build_findings(leaked, True).not_observed()}


def test_hijack_demo_runs_within_its_budget(tmp_path, capture_rights, startup_unit) -> None:
    require_tool("nginx")
    run_demo_timed("hijack-demo", tmp_path / "h.pcap", startup_unit)


def test_inspect_exposed_on_the_reference_and_on_a_capture_without_secrets() -> None:
    out = run_cli("inspect", str(REFERENCE), "--exposed")
    assert out.returncode == 0, out.stderr
    for word in ("password: password=wonderland", "session set: sessionId=",
                 "bearer token: Authorization=Bearer", "token issued: token=", "no Secure"):
        assert word in out.stdout, word
    assert "TLS connections: encrypted, nothing readable without the key log" in out.stdout
    none = run_cli("inspect", str(ROOT / "captures" / "dns-demo.ref.pcap"), "--exposed")
    assert none.returncode == 0 and none.stdout.startswith("nothing exposed")
    narrowed = run_cli("inspect", str(REFERENCE), "--exposed", "--filter", "host 127.0.0.2")
    assert narrowed.returncode == 0 and "password" not in narrowed.stdout
    assert "cookie sent" in narrowed.stdout
    bad = run_cli("inspect", str(REFERENCE), "--exposed", "--json")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_the_replay_of_the_reference_tells_the_whole_story() -> None:
    out = run_cli("hijack-demo", "--replay")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "NOT in this capture" not in out.stdout and "attacker" in out.stdout
    other = run_cli("hijack-demo", "--replay", str(ROOT / "captures" / "tls-demo.ref.pcap"))
    assert other.returncode == 1 and "NOT in this capture" in other.stdout


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_a_tls_terminating_balancer_marks_the_session_cookie_secure(kind, tmp_path) -> None:
    from protolab.labs.cluster import LOGIN, Cluster, Variant
    from protolab.labs.tls import pem_files
    from protolab.net.lb import Policy, TlsFront
    from protolab.protocols.quic import make_credentials
    from protolab.protocols.webapp import Design

    require_tool(kind)
    cert, key = pem_files(make_credentials(datetime.datetime.now(datetime.UTC)), tmp_path)
    with Cluster(Variant(Design.MEMORY), Policy.ROUND_ROBIN, n=1, lb=kind,
                 tls=TlsFront(str(cert), str(key))) as cluster:
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(*cluster.address, context=ctx, timeout=10)
        conn.request("POST", "/login", body=json.dumps(LOGIN),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and conn.sock.version() == "TLSv1.3"
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("sessionId=") and cookie.rstrip().endswith("Secure")
        conn.close()
