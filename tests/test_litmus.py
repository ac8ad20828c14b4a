"""The litmus table's evidence: each disruption is checked from what the run saw, and a disruption
that was not performed is NOT OBSERVED, has no verdict, and makes `litmus` exit 1."""

from __future__ import annotations

import sqlite3

import pytest

import protolab.labs.litmus as litmus
from protolab.analysis.observe import Status
from protolab.cli import main
from protolab.labs.litmus import Cluster, LoadResult, Variant, run_workflow
from protolab.net.lb import Policy
from protolab.net.stores import SqliteStore
from protolab.protocols.webapp import Design


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, list]:
    """`protolab litmus ARGS --no-measure` in this process: (exit status, output, cells)."""
    cells: list = []
    shown = litmus.print_litmus

    def keep(got, out):
        cells.extend(got)
        shown(got, out)

    monkeypatch.setattr(litmus, "print_litmus", keep)
    code = main(["litmus", *args, "--no-measure"])
    return code, capsys.readouterr().out, cells


def test_memory_round_robin_broke_at_add_item_and_exits_0(monkeypatch, capsys) -> None:
    code, text, cells = _run_cli(monkeypatch, capsys, "--designs", "memory", "--policies",
                                 "round-robin")
    assert code == 0, text
    broke = [c for c in cells if c.disruption != "wipe the store"]
    assert len(broke) == 3
    for c in broke:
        added = c.steps[-1]
        assert c.broke_at == "add item" and c.verdict == "" and c.restarts == []
        assert added.status == 401 and added.error  # the refusal, as the backend said it
        assert f"add item HTTP 401 from {added.backend} pid {added.pid}: {added.error}" \
            in c.text()
        assert c.text().startswith(f"broke at add item; {c.disruption}: not tried")
    assert text.count("broke at add item;") == 3
    assert "NOT OBSERVED" not in text and "logged out" not in text


def _restart_does_nothing(monkeypatch) -> None:
    monkeypatch.setattr(Cluster, "restart",
                        lambda self, b, graceful=False: (self.procs[b].pid, self.procs[b].pid))


def _switch_to_the_same(monkeypatch) -> None:
    monkeypatch.setattr(litmus, "_other_backend", lambda cluster, b: b)


def _wipe_does_nothing(monkeypatch) -> None:
    monkeypatch.setattr(SqliteStore, "wipe", lambda self: None)


@pytest.mark.parametrize("fault,failing", [
    (_restart_does_nothing, {"restart serving backend", "restart all backends"}),
    (_switch_to_the_same, {"switch backend"}),
    (_wipe_does_nothing, {"wipe the store"}),
], ids=["restart", "switch", "wipe"])
def test_a_disruption_not_performed_is_not_observed_and_exits_1(fault, failing, monkeypatch,
                                                                capsys) -> None:
    fault(monkeypatch)
    code, text, cells = _run_cli(monkeypatch, capsys, "--designs", "store-sqlite",
                                 "--policies", "sticky-cookie")
    assert code == 1, text
    assert {c.disruption for c in cells if c.problem()} == failing
    for c in cells:
        if c.disruption in failing:
            assert c.done.status is Status.NOT_OBSERVED and c.verdict == ""
            assert c.outcome.failed  # no verdict for a disruption that did not happen
            assert f"NOT OBSERVED: {c.done.claim} — {c.done.why}" in text
            assert c.text().startswith("NOT OBSERVED")
        else:
            assert c.done.observed and c.verdict == (
                "logged out" if c.disruption == "wipe the store" else "workflow continued")
    if "wipe the store" in failing:
        [cell] = [c for c in cells if c.disruption == "wipe the store"]
        [ev] = cell.done.evidence
        assert ev.before == ev.after > 0  # the store's own count: nothing was wiped


def test_the_evidence_matches_the_processes_and_the_store_file(tmp_path) -> None:
    db = tmp_path / "s.db"
    with Cluster(Variant(Design.STORE, f"sqlite:{db}"), Policy.ROUND_ROBIN) as cluster:
        before = {b: p.pid for b, p in cluster.procs.items()}
        cell = run_workflow(cluster, "restart serving backend", policy="round-robin")
        [(backend, old, new)] = cell.restarts
        assert backend == cell.steps[1].backend  # the one that served add item
        assert (old, new) == (before[backend], cluster.procs[backend].pid)  # what we started
        assert cell.verdict == "workflow continued" and cell.done.observed

        def rows() -> int:
            with sqlite3.connect(db) as con:
                return con.execute("SELECT COUNT(*) FROM kv").fetchone()[0]

        keys = rows()
        cell = run_workflow(cluster, "wipe the store", policy="round-robin")
        [ev] = cell.done.evidence
        assert (ev.before, ev.after) == (keys + 2, rows()) == (keys + 2, 0)  # + session, cart
        assert cell.verdict == "logged out" and cell.steps[-1].status == 401


def test_a_rolling_restart_is_checked_by_pid() -> None:
    assert LoadResult("jwt", restarts=[("b1", 10, 11), ("b2", 12, 13)]).restarted().observed
    same = LoadResult("jwt", restarts=[("b1", 10, 11), ("b2", 12, 12)]).restarted()
    assert same.failed and "b2 pid 12 → 12" in same.why
    assert LoadResult("jwt").restarted().failed  # no restart at all is not a rolling restart


def test_a_measurement_that_cannot_finish_says_so_and_the_table_still_prints(monkeypatch,
                                                                              capsys) -> None:
    """Issue 13 item 1: POST /lab/sessions timing out (a slow disk) crashed `protolab litmus`."""
    real = litmus.Client.request

    def slow_disk(self, method, path, fields=None):
        if path == "/lab/sessions":
            raise TimeoutError("timed out")
        return real(self, method, path, fields)

    monkeypatch.setattr(litmus.Client, "request", slow_disk)
    code = main(["litmus", "--designs", "store-sqlite", "jwt", "--policies", "round-robin"])
    text = capsys.readouterr().out
    assert code == 1, text
    [failed] = [line for line in text.splitlines() if line.startswith("NOT OBSERVED: the trade")]
    assert failed.startswith("NOT OBSERVED: the trade-offs of store (sqlite) — could not finish:"
                             " POST /lab/sessions (sessions 1-2000): TimeoutError: timed out")
    [jwt_row] = [line for line in text.splitlines() if line.startswith("jwt ")]
    assert "none: in the tokens" in jwt_row  # the rest of the table printed


def test_measure_creates_sessions_in_batches_each_answered(tmp_path) -> None:
    seen: list[int] = []
    real = litmus.Client.request

    def count(self, method, path, fields=None):
        reply = real(self, method, path, fields)
        if path == "/lab/sessions":
            assert reply.status == 200
            seen.append(reply.body["created"])
        return reply

    import pytest as _pytest

    with _pytest.MonkeyPatch.context() as mp:
        mp.setattr(litmus.Client, "request", count)
        t = litmus.measure(Variant(Design.STORE, f"sqlite:{tmp_path}/s.db"), requests=40,
                           sessions=(100, 4500))
    assert not t.unfinished and sum(seen) == 4500 and max(seen) <= litmus.SESSION_BATCH
    assert t.bytes_per_session_store > 0


# -- counting HTTP in a capture by TCP stream (issue 13 item 13) ---------------------------------


def _frames(segments) -> list:
    """Real frames (scapy-built bytes, decoded by protolab's decoder) for (src port, dst port,
    flags, seq, payload) on 127.0.0.1."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from protolab.wire.packets import decode
    from protolab.wire.pcap import LINKTYPE_ETHERNET

    out = []
    for i, (sport, dport, flags, seq, payload) in enumerate(segments):
        frame = Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(
            sport=sport, dport=dport, flags=flags, seq=seq) / payload
        out.append(decode(bytes(frame), LINKTYPE_ETHERNET, float(i)))
    return out


LB, CLIENT = 8080, 40000
POST = b'POST /cart/items HTTP/1.1\r\nHost: lb\r\nContent-Length: 2\r\n\r\n{}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def _connection(isn: int, request_parts: list[bytes], retransmit: bool = False) -> list:
    segs = [(CLIENT, LB, "S", isn, b""), (LB, CLIENT, "SA", 7000, b"")]
    seq = isn + 1
    for part in request_parts:
        segs.append((CLIENT, LB, "PA", seq, part))
        seq += len(part)
    if retransmit:  # the same bytes again: the receiver's ACK was late (or the first was lost)
        segs.append((CLIENT, LB, "PA", isn + 1, request_parts[0]))
    segs.append((LB, CLIENT, "PA", 7001, OK))
    return segs


def test_a_retransmitted_request_is_counted_once() -> None:
    frames = _frames(_connection(100, [POST], retransmit=True))
    got = litmus.http_streams(frames, LB)
    assert (got.requests, got.responses, got.connections, got.repeated) == (1, 1, 1, 1)
    assert got.gaps == 0


def test_a_head_split_over_segments_and_a_reused_port_are_counted_by_stream() -> None:
    frames = _frames(_connection(100, [POST[:2], POST[2:]])  # "PO" + "ST /cart..."
                     + _connection(90_000, [POST]))  # the same 4-tuple again: a new ISN
    got = litmus.http_streams(frames, LB)
    assert (got.requests, got.responses, got.connections, got.repeated) == (2, 2, 2, 0)


def test_bytes_missing_from_the_capture_are_a_gap_not_a_request() -> None:
    segs = _connection(100, [POST[:10], POST[10:]])
    del segs[2]  # the first part of the head never reached the capture
    got = litmus.http_streams(_frames(segs), LB)
    assert (got.requests, got.gaps) == (0, 1)


def test_the_users_counts_are_explained_by_kind() -> None:
    r = LoadResult("memory", requests=10_003, total=10_000, logins=8, relogins=6_646,
                   sent=16_657, answered=16_657)
    o = r.counted()
    assert o.observed and o.seen.startswith(
        "16657 requests written = 10003 add item/view cart (10000 asked; 3 more were already "
        "in flight when the count was reached) + 8 logins + 6646 logins again after a 401")
    assert LoadResult("x", requests=5, total=5, logins=1, sent=7, answered=7).counted().failed


def test_naming_a_redis_adds_the_design_that_uses_it(monkeypatch) -> None:
    """`litmus --redis URL` alone runs store-redis too; without it no Redis is needed."""
    from protolab import cli

    seen: list[list[str]] = []

    def stop(designs, url, shared):  # where cmd_litmus first uses the designs
        seen.append(list(designs))
        raise cli.CliError("stop here")

    monkeypatch.setattr(cli, "_check_redis", stop)
    for argv in (["litmus", "--redis", "redis://127.0.0.1:1/0"], ["litmus"],
                 ["litmus", "--designs", "jwt", "--redis", "redis://127.0.0.1:1/0"]):
        assert cli.main(argv) == 2
    assert seen == [["memory", "store-sqlite", "jwt", "store-redis"],
                    ["memory", "store-sqlite", "jwt"], ["jwt"]]


def test_backends_listen_below_the_ephemeral_range_so_a_restart_finds_its_port_free() -> None:
    """A client's source port can never be the port a restarted backend must bind again."""
    from protolab.net.processes import restartable_port

    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    ports = {restartable_port() for _ in range(5)}
    assert all(10000 <= p < low for p in ports)
