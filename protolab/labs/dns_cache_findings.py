"""What `protolab cache-demo` found, as observations: from the clients' answers, each upstream's
record of the queries it got, each resolver's own log (protolab's JSON lines, dnsmasq's
--log-queries and SIGUSR1 cache dump), the PIDs, and this run's capture; and its "where state
lives" table, from a run or from packets.

Where state lives: nowhere new; this module only judges the run's data (`protolab.labs.dns_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from protolab.analysis.facts import Kind, Row
from protolab.analysis.observe import (
    Evidence,
    Findings,
    Observation,
    StateRow,
    Status,
    explain,
    from_packets,
    observe,
)
from protolab.protocols.dns_cache import Config

if TYPE_CHECKING:
    from protolab.labs.dns_cache import CacheDemoResult, Side

HOLDER = "resolver app memory, shared by every client"
STUB = ("each client's own pending-query table (lab 03): app memory of the client, one per "
        "socket; a stub resolver keeps no cache here")


def odds(config: Config, budget: int) -> str:
    """The chance that `budget` guesses hit one pending query, from the bits to guess."""
    bits = config.guess_bits()
    p = min(1.0, budget / 2 ** bits) if bits else 1.0
    return "certain (nothing to guess)" if p >= 1 else f"{budget}/2^{bits:.0f} = {p:.1e}"


def _upstream_packets(result: CacheDemoResult, side: Side, name: str) -> tuple[int, ...]:
    up = f":{side.upstream[1]}"
    return tuple(r.number for r in result.rows if r.dst.endswith(up) and r.proto == "DNS"
                 and not r.fields.get("dns_response")
                 and r.fields.get("dns_question", "").startswith(name))


def _side_findings(result: CacheDemoResult, side: Side, captured: bool) -> list[Observation]:
    from protolab.labs.dns_cache import NOPE, TTL, WWW

    n = side.name
    asked = [a for a in result.asks if a.side == n]
    names = (WWW, NOPE)
    heard = sum(len(side.upstream_queries(x)) for x in names)
    misses = sum(side.misses(x) for x in names)
    pkts = tuple(p for x in names for p in _upstream_packets(result, side, x))
    ok = heard == misses and heard < len(asked) and (not captured or len(pkts) == heard)
    first = result.asked(n, "1", WWW)
    later = result.asked(n, "2", WWW)
    again = [h for h in side.upstream_queries(WWW)]
    neg = result.asked(n, "1", NOPE)
    before, after = side.pids
    part4 = [h for h in side.heard if _during(result, "4", h.at)]
    return [
        observe(f"cache.{n}.upstream-is-misses", f"{n}: the upstream gets only the misses",
                ok, seen=f"{n}: {len(asked)} client questions, {misses} misses in its own log, "
                f"{heard} queries in the upstream's record" + (f", {len(pkts)} in the capture"
                                                              if captured else ""),
                evidence=[Evidence("upstream queries", after=heard, packets=pkts)],
                why_not=f"{len(asked)} asked, {misses} misses, {heard} at the upstream, "
                        f"{len(pkts)} captured"),
        observe(f"cache.{n}.ttl-counts-down", f"{n}: a cached answer's TTL counts down", bool(
            first and later and first[0].ttl == TTL and (later[0].ttl or TTL) < TTL
            and not any(_during(result, "2", h.at) for h in side.heard)),
            seen=f"{n}: {WWW} TTL {first[0].ttl if first else '?'} (part 1) → "
                 f"{later[0].ttl if later else '?'} (part 2), no upstream query in part 2",
            evidence=[Evidence("TTL", first[0].ttl if first else None,
                               later[0].ttl if later else None)],
            why_not="the TTL did not go down, or part 2 went upstream"),
        observe(f"cache.{n}.expiry-new-query", f"{n}: after the TTL, a new upstream query, a "
                f"new ID", len(again) >= 2 and any(_during(result, "3", h.at) for h in again)
                and again[0].qid != again[1].qid,
                seen=f"{n}: {WWW} upstream IDs " + " → ".join(f"{h.qid:#06x}" for h in again),
                evidence=[Evidence("upstream query IDs", after=" ".join(
                    f"{h.qid:#06x}" for h in again))],
                why_not="no new upstream query after expiry"),
        observe(f"cache.{n}.negative-cached", f"{n}: NXDOMAIN is cached for the SOA minimum",
                len(neg) >= 2 and all(a.rcode == "NXDOMAIN" for a in neg)
                and len([h for h in side.upstream_queries(NOPE) if _during(result, "1", h.at)])
                == 1, seen=f"{n}: {len(neg)} clients told NXDOMAIN (SOA TTL "
                f"{' '.join(str(a.ttl) for a in neg)}), 1 upstream query",
                evidence=[Evidence("NXDOMAIN answers", after=len(neg))],
                why_not="NXDOMAIN went upstream for every client"),
        observe(f"cache.{n}.restart-empties", f"{n}: a restarted resolver has an empty cache",
                before != after and before > 0 and {WWW, NOPE} <= {h.name for h in part4},
                done=f"restarted {n} (pid {before} → {after})",
                seen=f"{n}: the answers cached {TTL} s long in part 3 went upstream again: "
                     + ", ".join(f"{h.name} {h.qid:#06x}" for h in part4),
                evidence=[Evidence("pid", before, after),
                          Evidence("upstream queries after restart", after=len(part4))],
                why_not="the questions after the restart did not go upstream"),
    ]


def _during(result: CacheDemoResult, part: str, at: float) -> bool:
    lo, hi = result.marks.get(part, (0.0, -1.0))
    return lo <= at <= hi


def _attack_findings(result: CacheDemoResult) -> list[Observation]:
    from protolab.labs.dns_cache import BUDGET, FORGED

    obs = []
    for a in result.attacks:
        key = a.target.replace(" ", "-")
        told = " ".join(sorted({" ".join(x.values) for x in a.answers if x.client != "attacker"}))
        went = (f"{a.target}: its query went out as id {a.real.qid if a.real else 0:#06x} on "
                f"port {a.real.port if a.real else 0}")
        ev = [Evidence("forged answers", after=a.sent), Evidence("clients told", after=told),
              Evidence("cache entry", after=a.entry)]
        if not a.config.random_ports and not a.config.random_ids:
            obs.append(observe(
                f"cache.{key}.poisoned", f"{a.target}: fixed port and sequential IDs: poisoned",
                a.poisoned and a.guessed_right and FORGED in a.entry,
                done=f"learned id {a.seen_id:#06x} port {a.seen_port}, flooded {a.sent}",
                seen=f"{went}: guessed; every client now gets {FORGED}",
                evidence=ev, why_not="the forged answer did not land"))
        else:
            obs.append(observe(
                f"cache.{key}.not-poisoned", f"{a.target}: random port and ID: not poisoned "
                f"with the same budget", not a.poisoned and a.sent == BUDGET and bool(told)
                and FORGED not in told and bool(a.real) and a.real.port != a.seen_port,
                done=f"learned id {a.seen_id:#06x} port {a.seen_port}, flooded {a.sent}",
                seen=f"{went}; clients told {told}; odds "
                     f"{odds(a.config, BUDGET)}", evidence=ev,
                why_not="poisoned, or the flood was not sent in full"))
    return obs


def build_findings(result: CacheDemoResult, captured: bool) -> Findings:
    f = Findings()
    by: dict[str, Observation] = {}
    for side in result.sides:
        for o in _side_findings(result, side, captured):
            by[o.key] = f.add(o)
    for o in _attack_findings(result):
        by[o.key] = f.add(o)
    if captured:
        f.add(_forged_in_capture(result))
    f.where = _where(result, by)
    return f


def _forged_in_capture(result: CacheDemoResult) -> Observation:
    accepted = tuple(r.number for r in result.rows if r.shows(Kind.DNS_FORGED_ACCEPTED))
    hits = tuple(r.number for r in result.rows if r.shows(Kind.DNS_CACHE_HIT))
    return observe("cache.capture", "the capture shows cache hits and the forged answer taken",
                   bool(accepted) and bool(hits),
                   seen=f"{len(hits)} answers from a cache with no upstream query; "
                        f"{len(accepted)} forged answer(s) taken",
                   evidence=[Evidence("forged answer accepted", packets=accepted[:3]),
                             Evidence("cache hits", packets=hits[:6])],
                   why_not="no cache hit or no accepted forgery in the capture")


def _both(by: dict[str, Observation], what: str, claim: str) -> Observation:
    """One row's outcome from both resolvers' observations of `what`."""
    pair = [by.get(f"cache.{n}.{what}") for n in ("protolab", "dnsmasq")]
    if any(o is None or not o.observed for o in pair):
        bad = next((o for o in pair if o is not None and not o.observed), None)
        return bad or observe(f"where.{what}", claim, False, why_not="not run")
    return observe(f"where.{what}", claim, True, seen="; ".join(o.seen for o in pair),
                   evidence=[e for o in pair for e in o.evidence[:1]])


def _where(result: CacheDemoResult, by: dict[str, Observation]) -> list[StateRow]:
    from protolab.labs.dns_cache import BUDGET

    pids = "; ".join(f"{s.name} {s.pids[0]} → {s.pids[1]}" for s in result.sides)
    tried = [o for k, o in by.items() if k.endswith((".poisoned", ".not-poisoned"))]
    poison = observe("where.poison", "a fixed port and sequential IDs are poisoned, random "
                     "ones are not", len(tried) == 3 and all(o.observed for o in tried),
                     seen="; ".join(o.seen for o in tried),
                     evidence=[e for o in tried for e in o.evidence[2:3]],
                     why_not="; ".join(o.why for o in tried if not o.observed) or "not run")
    return [
        StateRow("cached answers (name, type, class → answer, expiry)", HOLDER,
                 "three clients asked the same names", _both(
                     by, "upstream-is-misses", "the upstream gets only the misses")),
        StateRow("each answer's TTL, counting down", HOLDER, "asked again 1 s later, then "
                 "past the TTL", _both(by, "ttl-counts-down", "the TTL counts down")),
        StateRow("negative answers (NXDOMAIN, SOA minimum)", HOLDER, "two clients asked a "
                 "name that does not exist", _both(by, "negative-cached", "NXDOMAIN cached")),
        StateRow("the whole cache", "the resolver process's memory",
                 f"restarted both resolvers ({pids})", _both(
                     by, "restart-empties", "a new process starts with an empty cache")),
        StateRow("the pending-upstream table (upstream, port, ID, question)", HOLDER,
                 f"flooded {BUDGET} forged answers at each resolver",
                 poison),
        StateRow("each client's pending query", "client app memory", "-",
                 explain("cache.stub", STUB, "lab 03 (dns-demo) tries it")),
    ]


# -- from a capture (replay) ----------------------------------------------------------------------


def where_from_capture(rows: Sequence[Row]) -> list[StateRow]:
    """The same table from the packets: the annotator's cache hits, upstream queries and the
    forged answer it saw taken."""
    live = Status.LIVE_ONLY

    def packets(key: str, claim: str, kind: Kind, seen: str) -> Observation:
        found = tuple(r.number for r in rows if r.shows(kind))
        return from_packets(key, claim, found[:8], f"{len(found)} {seen}", kind.value)

    return [
        StateRow("cached answers (name, type, class → answer, expiry)", HOLDER,
                 "clients asked names already cached", packets(
                     "where.cache.hit", "answers from the cache, no upstream query",
                     Kind.DNS_CACHE_HIT, "answers with no upstream query since the ask")),
        StateRow("a cache miss: the pending-upstream entry", HOLDER, "clients asked names "
                 "not cached (or expired)", packets(
                     "where.cache.upstream", "a miss goes upstream", Kind.DNS_UPSTREAM,
                     "upstream queries, each for a client's question")),
        StateRow("the whole cache", "the resolver process's memory", "-", explain(
            "where.cache.restart", "a restart empties it (the PIDs are not in packets)",
            "the run's PIDs and the resolvers' logs", live)),
        StateRow("the pending-upstream table (upstream, port, ID, question)", HOLDER,
                 "forged answers flooded", packets(
                     "where.cache.forged", "a forged answer matched and was cached",
                     Kind.DNS_FORGED_ACCEPTED, "forged answers taken")),
        StateRow("each client's pending query", "client app memory", "-",
                 explain("where.cache.stub", STUB)),
    ]
