"""The fault proxy: sans-IO decisions, seeded and repeatable; live through DNS, dig, UDP, QUIC."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protolab.net.fault_proxy import UdpFaultProxy
from protolab.net.udpnet import UdpServerThread
from protolab.protocols.dns import DnsServer
from protolab.protocols.faults import (
    REORDER_HOLD,
    Direction,
    Fate,
    FaultCore,
    FaultPlan,
)

from conftest import require_tool, run_cli

TO_S, TO_C = Direction.TO_SERVER, Direction.TO_CLIENT


def feed(core: FaultCore, n: int, direction: Direction = TO_S, now: float = 0.0) -> list[bytes]:
    for i in range(n):
        core.receive(f"d{i}".encode(), direction, now, tag=i)
    return [data for data, _, _ in core.datagrams_to_send(now + 100)]


def fates(core: FaultCore) -> list[tuple[str, int, str]]:
    return [(d.direction.value, d.index, d.fate.value) for d in core.decisions]


def test_the_same_seed_gives_the_same_fates_and_another_seed_others() -> None:
    plan = FaultPlan(drop=0.3, duplicate=0.2, reorder=0.2, seed=7)
    a, b, c = FaultCore(plan), FaultCore(plan), FaultCore(FaultPlan(drop=0.3, duplicate=0.2,
                                                                     reorder=0.2, seed=8))
    assert feed(a, 200) == feed(b, 200)
    feed(c, 200)
    assert fates(a) == fates(b) != fates(c)


def test_fates_per_direction_do_not_depend_on_interleaving() -> None:
    plan = FaultPlan(drop=0.5, seed=3)
    a, b = FaultCore(plan), FaultCore(plan)
    for i in range(50):  # a: strictly alternating; b: all to-server first
        a.receive(b"x", TO_S, 0, i)
        a.receive(b"y", TO_C, 0, i)
    for i in range(50):
        b.receive(b"x", TO_S, 0, i)
    for i in range(50):
        b.receive(b"y", TO_C, 0, i)
    assert sorted(fates(a)) == sorted(fates(b))


def test_drop_all_duplicate_all_and_pass_all() -> None:
    assert feed(FaultCore(FaultPlan(drop=1.0)), 10) == []
    assert feed(FaultCore(FaultPlan(duplicate=1.0)), 3) == [b"d0", b"d0", b"d1", b"d1",
                                                             b"d2", b"d2"]
    assert feed(FaultCore(FaultPlan()), 3) == [b"d0", b"d1", b"d2"]


def test_reorder_holds_a_datagram_so_the_next_ones_pass_and_never_loses_it() -> None:
    core = FaultCore(FaultPlan(reorder=1.0, count=1))
    core.receive(b"d0", TO_S, 0.0)
    core.receive(b"d1", TO_S, 0.01)
    assert [d for d, _, _ in core.datagrams_to_send(0.01)] == [b"d1"]
    assert core.datagrams_to_send(REORDER_HOLD - 0.001) == []
    assert [d for d, _, _ in core.datagrams_to_send(REORDER_HOLD)] == [b"d0"]
    assert [d.fate for d in core.decisions] == [Fate.REORDERED, Fate.FORWARDED]


def test_delay_holds_until_due_and_tags_come_back() -> None:
    core = FaultCore(FaultPlan(delay=0.05))
    core.receive(b"a", TO_S, 1.0, tag=("127.0.0.1", 5))
    assert core.datagrams_to_send(1.049) == [] and core.next_timer() == pytest.approx(1.05)
    assert core.datagrams_to_send(1.05) == [(b"a", TO_S, ("127.0.0.1", 5))]


def test_direction_and_count_limit_where_faults_hit() -> None:
    core = FaultCore(FaultPlan(drop=1.0, direction="to-client", count=1))
    core.receive(b"q", TO_S, 0)
    core.receive(b"a1", TO_C, 0)
    core.receive(b"a2", TO_C, 0)
    assert [d.fate for d in core.decisions] == [Fate.FORWARDED, Fate.DROPPED, Fate.FORWARDED]
    assert core.snapshot()["dropped"] == 1


@pytest.mark.parametrize("kwargs", [{"drop": 1.5}, {"duplicate": -0.1}, {"delay": 11.0},
                                    {"direction": "sideways"}, {"count": -1}])
def test_bad_plans_are_refused_with_the_option_named(kwargs) -> None:
    with pytest.raises(ValueError) as info:
        FaultPlan(**kwargs)
    assert next(iter(kwargs)).replace("count", "fault-count") in str(info.value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=40)), max_size=60),
       st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.integers(0, 2 ** 16))
def test_every_datagram_is_accounted_for(items, drop, dup, reorder, seed) -> None:
    """Whatever comes in: each datagram is dropped, or sent once, or (duplicated) twice."""
    core = FaultCore(FaultPlan(drop=drop, duplicate=dup, reorder=reorder, seed=seed))
    for to_server, data in items:
        core.receive(data, TO_S if to_server else TO_C, 0.0)
    sent = core.datagrams_to_send(1.0)
    c = core.counters
    assert len(core.decisions) == len(items)
    assert len(sent) == c.forwarded + c.delayed + c.reordered + 2 * c.duplicated
    assert c.dropped + c.forwarded + c.delayed + c.reordered + c.duplicated == len(items)


def test_cli_rejects_bad_fault_options_in_one_line() -> None:
    for args in (["--drop", "2"], ["--delay", "soon"], ["--direction", "up"]):
        out = run_cli("udp-demo", "--no-capture", *args)
        last = out.stderr.strip().splitlines()[-1]
        assert out.returncode == 2 and "Traceback" not in out.stderr, args
        assert last.startswith(f"protolab udp-demo: error: argument {args[0]}"), last


# -- live ------------------------------------------------------------------------------------------


def test_dig_retries_through_a_lost_first_answer_and_succeeds() -> None:
    """A real client: dig's own retry state gets it through the dropped first answer."""
    dig = require_tool("dig")
    with UdpServerThread(DnsServer(delays=False)) as server, \
            UdpFaultProxy(server.address, FaultPlan(drop=1.0, direction="to-client",
                                                    count=1)) as proxy:
        out = subprocess.run([dig, "@127.0.0.1", "-p", str(proxy.address[1]), "alpha.lab.",
                              "A", "+tries=3", "+timeout=1", "+short"], capture_output=True,
                             text=True, timeout=15)
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "10.0.0.1", out.stdout + out.stderr
    assert "timed out" in lines[0]  # dig noticed the loss by its own timer, then retried
    assert server.core.counters.queries == 2  # the retry reached the server as a new query
    assert [d.fate for d in proxy.core.decisions if d.direction is TO_C] == [Fate.DROPPED,
                                                                            Fate.FORWARDED]


def test_dns_demo_client_retries_after_the_first_answer_is_dropped(capture_rights,
                                                                   tmp_path) -> None:
    from protolab.analysis.annotate import annotate_file
    from protolab.labs.dns import RETRY_AFTER, run_dns_demo

    lines: list[str] = []
    plan = FaultPlan(drop=1.0, direction="to-client", count=1)
    result = run_dns_demo(pcap=tmp_path / "f.pcap", out=lines.append, faults=plan)
    assert len(result.log.retransmitted) == 1
    retried = result.log.retransmitted[0]
    assert retried.attempt == 2 and retried.after >= RETRY_AFTER
    [matched] = [m for m in result.log.matched if m.qid == retried.qid]
    assert matched.attempts == 2 and matched.rtt >= RETRY_AFTER
    assert len(result.log.matched) == 5 + 1
    assert result.complete is True, (result.own, result.capture and result.capture.kernel_drops)
    rows = list(annotate_file(tmp_path / "f.pcap"))
    again = [r for r in rows if r.summary.endswith("(again)")]
    assert len(again) == 1 and f"{retried.qid:#06x}" in again[0].summary
    assert "retry count and timer live in client app memory" in again[0].state
    assert any("after 2 copies" in r.state for r in rows)


def _dns_decisions(seed: int) -> tuple[list, list]:
    from protolab.labs.dns import run_dns_demo

    result = run_dns_demo(capture=False, out=lambda _: None,
                          faults=FaultPlan(drop=0.3, seed=seed))
    decided = sorted((d.direction.value, d.index, d.fate.value)
                     for d in result.faults.decisions)
    return decided, sorted(r.name for r in result.log.retransmitted)


def test_a_seeded_dns_run_is_identical_twice() -> None:
    first, second = _dns_decisions(11), _dns_decisions(11)
    assert first == second
    assert any(f == "dropped" for _, _, f in first[0])  # the seed does drop something


def test_udp_nothing_notices_and_a_seeded_run_repeats() -> None:
    from protolab.labs.udp import FAULT_DATAGRAMS, run_udp_demo

    plan = FaultPlan(drop=0.2, duplicate=0.1, reorder=0.2, seed=4)
    runs = [run_udp_demo(capture=False, out=lambda _: None, faults=plan).faults
            for _ in range(2)]
    for run in runs:
        assert run.sent == FAULT_DATAGRAMS and run.send_errors == 0
        assert len(set(run.replies)) < FAULT_DATAGRAMS  # some were lost ...
        assert len(run.replies) > len(set(run.replies))  # ... some came twice
    assert runs[0].decisions == runs[1].decisions
    assert set(runs[0].replies) == set(runs[1].replies)


def test_quic_recovers_from_loss_and_acks_show_ranges(tmp_path) -> None:
    from protolab.labs.quic import run_quic_demo

    result = run_quic_demo(capture=False, pcap=tmp_path / "q.pcap", out=lambda _: None,
                           faults=FaultPlan(drop=0.2, seed=1))
    assert result.loss_complete
    assert result.loss.lost, "no packet was declared lost"
    assert result.loss.gapped_acks and all(len(r) > 1 for r in result.loss.gapped_acks)
