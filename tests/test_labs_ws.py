"""`protolab ws-demo` end to end: a WebSocket chat (wsproto) between real processes, behind
protolab's balancer, a real nginx and HAProxy, sharing a real Redis.

What each client lost is counted from its own records (the poster's seqs it received), the
restarts by the PIDs before and after, and the wire is read twice: by protolab's annotator and,
independently, by tshark's WebSocket dissector (the upgrade, the masking keys, the close codes).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from protolab.analysis.observe import Status
from protolab.analysis.story_checks import missing
from protolab.labs.ws import run_ws_demo
from protolab.labs.ws_cluster import WsCluster
from protolab.labs.ws_load import run_under_load
from protolab.protocols.chat import ChatMessage, ClientSide, Design, Inbox, ServerSide
from protolab.protocols.websocket import accept_for, parse_frame, split_frames

from conftest import ROOT, require_tool, run_cli, run_demo_timed

LIVE = ("ws-demo", run_ws_demo)  #: the run the `live` fixture makes once for this module
KEYS = {"ws.upgrade", "ws.masked", "ws.ping", "ws.memory-no-fan-out", "ws.shared-fan-out",
        "ws.crash-1006", "ws.graceful-1001", "ws.memory-place-gone", "ws.pubsub-gap",
        "ws.resume-no-gap", "ws.real-balancer"}


@pytest.fixture
def demo(live, capture_rights):
    return live


# -- the sans-IO cores ----------------------------------------------------------------------------


def test_accept_key_and_a_masked_frame_as_rfc_6455_gives_them() -> None:
    # RFC 6455 section 1.3 and section 5.7 (a masked "Hello" from a client)
    assert accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    frame = parse_frame(bytes.fromhex("818537fa213d7f9f4d5158"))
    assert (frame.text, frame.masked, frame.mask.hex(), frame.size) == ("Hello", True,
                                                                        "37fa213d", 11)
    frames, rest = split_frames(bytes.fromhex("810548656c6c6f" "8905"))  # then half a ping
    assert [f.text for f in frames] == ["Hello"] and rest == bytes.fromhex("8905")


def _open_pair() -> tuple[ClientSide, ServerSide]:
    client, server = ClientSide(), ServerSide()
    step = server.receive(client.start("lab", "/chat?user=alice&since=3&epoch=room-x"))
    assert step.opened and (server.user, server.since, server.epoch) == ("alice", 3, "room-x")
    client.receive(step.out)
    assert client.open
    return client, server


def test_a_replay_is_not_overtaken_by_live_messages_and_nothing_is_sent_twice() -> None:
    client, server = _open_pair()
    msgs = [ChatMessage(i, "bob", f"m{i}", f"bob-{i}", "b2") for i in range(1, 7)]
    assert server.deliver(msgs[5]) == b""  # live while the history is read: queued
    out = server.start({"epoch": "room-x"}, msgs[:5], known=True)
    step = client.receive(out)
    assert step.welcome["replay"] == 2 and [m.id for m in step.messages] == [4, 5, 6]
    assert server.deliver(msgs[4]) == b""  # already sent


def test_an_unknown_place_replays_nothing_and_a_new_epoch_starts_the_count_again() -> None:
    client, server = _open_pair()
    step = client.receive(server.start({"epoch": "b1-99"}, [], known=False))
    assert step.welcome["known"] is False and server.last_sent == 0
    inbox = Inbox("alice", last_id=7, epoch="b1-1")
    inbox.welcomed(step.welcome)
    assert (inbox.epoch, inbox.last_id) == ("b1-99", 0)
    assert "since=0" in inbox.target() and "epoch=b1-99" in inbox.target()


# -- the demo -------------------------------------------------------------------------------


def test_every_finding_is_observed_with_evidence(demo) -> None:
    result, _, text = demo
    assert result.problem() == "", text
    by = {o.key: o for o in result.findings.observations}
    assert set(by) == KEYS
    for o in by.values():
        assert o.status is Status.OBSERVED and o.evidence, o
    assert "(not tried here) explanation:" in text


def test_the_clients_counts_show_the_gap_or_its_absence(demo) -> None:
    result, _, _ = demo
    memory, pubsub, resume = (result.scenarios[d] for d in ("memory", "pubsub", "resume"))
    for s in (memory, pubsub, resume):
        backend, old, new = s.restart
        assert old != new and s.alice[-1].since is not None, s
        assert s.sent == ["bob-1", "bob-2"]  # both posts taken: each echoed to Bob
    assert memory.drop.code == pubsub.drop.code == 1006 and resume.drop.code == 1001
    assert not memory.m1 and pubsub.m1 and resume.m1
    assert not memory.alice[-1].known and "bob-2" in memory.missing
    assert pubsub.missing == ["bob-2"] and pubsub.alice[-1].replayed == 0
    assert resume.missing == [] and resume.alice[-1].known and resume.alice[-1].replayed == 1


def _tshark(path, *args: str) -> list[str]:
    done = subprocess.run([require_tool("tshark"), "-r", str(path), *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.split("\n") if line]


def test_tshark_reads_the_same_upgrade_masks_and_close_codes(demo) -> None:
    result, pcap, _ = demo
    ports = sorted({r.fields["dport"] for r in result.rows
                    if r.fields.get("ws_upgrade") == "request"})
    decode = [a for p in ports for a in ("-d", f"tcp.port=={p},http")]
    masks = _tshark(pcap, *decode, "-Y", "websocket.mask == 1", "-T", "fields", "-e",
                    "frame.number", "-e", "websocket.masking_key")
    ours = {r.number: r.fields["ws_mask"] for r in result.rows if "ws_mask" in r.fields}
    theirs = {int(n): k.split(",")[0].replace(":", "") for n, k in (m.split("\t") for m in masks)}
    assert theirs and theirs == ours
    codes = _tshark(pcap, *decode, "-Y", "websocket.opcode == 8", "-T", "fields", "-e",
                    "websocket.payload.close.status_code")
    assert "1001" in codes and "1006" not in codes  # 1006 is never on the wire
    switched = _tshark(pcap, *decode, "-Y", "http.response.code == 101", "-T", "fields",
                       "-e", "frame.number")
    assert [int(n) for n in switched] == [r.number for r in result.rows
                                          if r.fields.get("ws_upgrade") == "101"]


def test_the_capture_tells_the_story_and_names_where_state_lives(demo) -> None:
    result, _, _ = demo
    assert missing("ws-demo", result.rows) == []
    dropped = [r for r in result.rows if r.fields.get("tcp_flags", 0) & 0x01
               and "no close frame" in r.state]
    assert dropped, "the killed backend's FIN is annotated as the 1006 drop"
    resumed = [r for r in result.rows if r.fields.get("ws_since") is not None]
    assert {r.fields["ws_since"] for r in resumed} == {s.alice[-1].since
                                                       for s in result.scenarios.values()}


def test_ws_demo_runs_within_its_budget(tmp_path, capture_rights, startup_unit) -> None:
    run_demo_timed("ws-demo", tmp_path / "w.pcap", startup_unit)


def test_the_replay_of_the_reference_tells_the_whole_story() -> None:
    out = run_cli("ws-demo", "--replay")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "NOT in this capture" not in out.stdout and "Each WebSocket upgrade" in out.stdout
    other = run_cli("ws-demo", "--replay", str(ROOT / "captures" / "udp-demo.ref.pcap"))
    assert other.returncode == 1 and "NOT in this capture" in other.stdout


def test_bad_options_are_one_line() -> None:
    for args in (("--clients", "5"), ("--under-load", "--pcap", "x.pcap"),
                 ("--under-load", "--clients", "0")):
        out = run_cli("ws-demo", *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, args
        errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
        assert len(errors) == 1 and errors[0].startswith("protolab"), out.stderr


# -- real balancers, and the rolling restart under load ----------------------------------


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_a_real_balancer_proxies_the_upgrade_and_the_reconnect(kind, redis_url) -> None:
    require_tool(kind)
    with WsCluster(Design.RESUME, redis_url, n=2, lb=kind) as c:
        users = [c.user(f"u{i}", seed=i) for i in range(2)]
        try:
            assert c.wait(lambda: all(u.sessions for u in users), 10)
            assert {u.sessions[0].backend for u in users} == {"b1", "b2"}  # round-robin
            victim = users[0].sessions[0].backend
            c.restart(victim, graceful=True)
            assert c.wait(lambda: users[0].drops and users[0].connected, 10)
            assert users[0].drops[0].code == 1001 and users[0].sessions[-1].known
            assert users[1].post("through the balancer", "u1-1")
            assert c.wait(lambda: all("u1-1" in u.inbox.seqs for u in users), 10)
        finally:
            for u in users:
                u.close()


def test_a_rolling_restart_under_load_loses_messages_only_without_a_history(redis_url) -> None:
    start = time.monotonic()
    result = run_under_load(redis=redis_url, out=lambda s: None, clients=200, backends=3,
                            designs=("memory", "resume"))
    assert time.monotonic() - start < 90
    memory, resume = result.runs
    for run in (memory, resume):
        assert run.welcomed == 200 and run.error == ""
        assert len(run.restarts) == 3 and all(old != new for _, old, new in run.restarts)
        assert run.drops >= 200 and run.reconnected == run.drops  # every backend's clients
        assert set(run.codes) == {1001}
        assert 0 < run.pct(50) <= run.pct(99) < 10_000
        assert set(run.per_connection) == {"b1", "b2", "b3"}
        assert all(0 < v < 10 * 1024 * 1024 for v in run.per_connection.values())
        assert run.sent > 0
    assert memory.lost > 0 and resume.lost == 0
    assert result.problem() == ""
