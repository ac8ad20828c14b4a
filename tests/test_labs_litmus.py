"""The litmus table's evidence: each disruption is checked from what the run saw, and a disruption
that was not performed is NOT OBSERVED, has no verdict, and makes `litmus` exit 1."""

from __future__ import annotations

import sqlite3

import pytest

import protolab.labs.litmus as litmus
from protolab.analysis.observe import Status
from protolab.cli import main
from protolab.labs.cluster import Cluster, Variant
from protolab.labs.litmus import run_workflow
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
