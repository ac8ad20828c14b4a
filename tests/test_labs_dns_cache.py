"""`protolab cache-demo` end to end: protolab's resolver and a real dnsmasq, real clients
(dnspython), real upstream servers, a real forger. Each claim is checked against the run's own
records and, independently, against the capture as tshark reads it."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from protolab.analysis.observe import Status
from protolab.labs.dns_cache import BUDGET, FORGED, NOPE, TTL, WWW, run_cache_demo
from protolab.labs.dns_cache_findings import build_findings
from protolab.net.dnsmasq import dnsmasq_path

from conftest import require, require_tool, run_cli, run_demo_timed

LIVE = ("cache-demo", run_cache_demo)  #: the run the `live` fixture makes once for this module


@pytest.fixture
def demo(live, capture_rights):
    require(dnsmasq_path() is not None, "dnsmasq is not installed (apt-get install dnsmasq-base)")
    return live


def _tshark(path, display_filter: str, *fields: str) -> list[list[str]]:
    args = ["-Y", display_filter, "-T", "fields", *(a for f in fields for a in ("-e", f))]
    done = subprocess.run([require_tool("tshark"), "-r", str(path), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines() if line]


IDLE_STARTUP = 0.7  #: seconds a Python start-up with the demo's imports takes on an idle machine


def test_every_finding_is_observed_with_evidence(demo, startup_unit) -> None:
    result, _, text = demo
    assert result.problem() == ""
    for o in result.findings.observations:
        assert o.status is Status.OBSERVED and o.evidence, o
    assert "(not tried here) explanation:" in text
    # Under 5 s (the budget) on an idle machine; a busy one stretches it with its
    # measured start-up time.
    limit = 5.0 * max(1.0, startup_unit / IDLE_STARTUP)
    assert result.elapsed < limit, f"the run took {result.elapsed:.2f} s (limit {limit:.1f})"


def test_the_upstream_gets_exactly_the_misses(demo) -> None:
    result, pcap, _ = demo
    for side in result.sides:
        asked = [a for a in result.asks if a.side == side.name]
        for name in (WWW, NOPE):
            heard = side.upstream_queries(name)
            # tshark, on the upstream's port: the resolver's own queries, its side of the cache
            wire = _tshark(pcap, f"udp.dstport == {side.upstream[1]} && dns.flags.response == 0 "
                                 f"&& dns.qry.name == \"{name.rstrip('.')}\"", "dns.id")
            assert len(heard) == side.misses(name) == len(wire) == 3, (side.name, name)
            assert len({h.qid for h in heard}) == 3  # each a new query, with a new ID
        assert len(asked) > 6  # many client questions, three misses per name


def test_ttl_counts_down_and_a_negative_answer_is_cached(demo) -> None:
    result, pcap, _ = demo
    for side in ("protolab", "dnsmasq"):
        part1, part2 = result.asked(side, "1", WWW), result.asked(side, "2", WWW)
        assert [a.ttl for a in part1] == [TTL] * 3 and part2[0].ttl < TTL
        neg = result.asked(side, "1", NOPE)
        assert [a.rcode for a in neg] == ["NXDOMAIN"] * 2
    port = result.side("dnsmasq").address[1]
    ttls = _tshark(pcap, f"udp.srcport == {port} && dns.qry.name == \"www.lab\" && dns.a",
                   "dns.resp.ttl")
    assert int(ttls[0][0]) == TTL and min(int(t[0]) for t in ttls) < TTL


def test_a_restart_empties_the_cache(demo) -> None:
    result, _, _ = demo
    for side in result.sides:
        old, new = side.pids
        assert old != new and not os.path.exists(f"/proc/{old}")
        lo, hi = result.marks["4"]
        after = {h.name for h in side.heard if lo <= h.at <= hi}
        assert after == {WWW, NOPE}, side.name
    real = result.side("dnsmasq")
    assert any(c.host == "www.lab" for c in real.dump)
    assert not any(c.host == "www.lab" for c in real.dump_after)


def test_the_weak_resolver_is_poisoned_and_the_strong_ones_are_not(demo) -> None:
    result, pcap, _ = demo
    by = {a.target: a for a in result.attacks}
    weak = by["protolab weak"]
    assert weak.poisoned and weak.guessed_right and FORGED in weak.entry
    for name in ("protolab strong", "dnsmasq"):
        a = by[name]
        assert not a.poisoned and a.sent == BUDGET and a.real.port != a.seen_port
        assert all(FORGED not in x.values for x in a.answers)
    forged = _tshark(pcap, f"!icmp && dns.flags.response == 1 && dns.a == {FORGED} && "
                           f"dns.qry.name == \"bank.lab\"", "udp.srcport", "udp.dstport")
    clients = {str(a.port) for a in weak.answers}
    weak_port = str(next(e for e in result.weak_events if e["kind"] == "upstream")["port"])
    flood = [f for f in forged if f[1] not in clients and f[0] != ""]
    assert len(flood) <= 3 * BUDGET + 3  # the budget, and the weak resolver's clients' answers
    assert sum(1 for f in flood if f[1] == weak_port) == BUDGET
    told = [f for f in forged if f[1] in clients]
    assert len(told) == 4  # the attacker and A, B, C, each from the weak resolver's cache


def test_a_claim_the_run_did_not_show_is_not_observed(demo) -> None:
    result, _, _ = demo
    tampered = dataclasses.replace(result, attacks=[
        dataclasses.replace(a, answers=[]) for a in result.attacks])
    findings = build_findings(tampered, captured=True)
    failed = {o.key for o in findings.not_observed()}
    assert "cache.protolab-weak.poisoned" in failed
    assert "cache.dnsmasq.not-poisoned" in failed


def test_cache_demo_runs_within_its_budget(tmp_path, capture_rights, startup_unit) -> None:
    require(dnsmasq_path() is not None, "dnsmasq is not installed (apt-get install dnsmasq-base)")
    run_demo_timed("cache-demo", tmp_path / "c.pcap", startup_unit)


def test_the_replay_of_the_reference_tells_the_whole_story() -> None:
    out = run_cli("cache-demo", "--replay")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("REPLAY")
    assert "NOT in this capture" not in out.stdout and "forged taken" in out.stdout


def test_without_dnsmasq_the_demo_says_so_in_one_line() -> None:
    import sys

    code = ("import sys, protolab.net.dnsmasq as d; d.dnsmasq_path = lambda: None; "
            "from protolab.cli import main; sys.exit(main(['cache-demo', '--no-capture']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("protolab: error: cache-demo: dnsmasq is not installed "
                                   "(Debian: apt-get install dnsmasq-base)")


def test_a_chaos_answer_is_never_called_a_cache_hit() -> None:
    """dnsmasq's version.bind (class CH, asked to mark its cache dumps) is the server's own
    word: the packets tshark reads as class CH carry no cache fact."""
    from protolab.analysis.annotate import annotate_file
    from protolab.analysis.facts import Kind
    from protolab.wire.paths import reference_file

    ref = reference_file("cache-demo")
    out = subprocess.run([require_tool("tshark"), "-r", str(ref), "-Y", "dns.qry.class == 3",
                          "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, timeout=60)
    chaos = {int(n) for n in out.stdout.split()}
    assert chaos, "the reference has no CH question to check"
    rows = [r for r in annotate_file(ref) if r.number in chaos]
    assert len(rows) == len(chaos)
    assert not [r.number for r in rows
                if r.shows(Kind.DNS_CACHE_HIT) or r.shows(Kind.DNS_CACHE_MISS)]
