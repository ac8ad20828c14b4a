"""The cache-demo's story in a capture: a caching resolver's misses, hits, TTLs, expiry and the
forged answer it took, found in the annotated rows (`annotate_dns`: DNS_UPSTREAM, DNS_CACHE_HIT,
DNS_CACHE_MISS, DNS_FORGED_ACCEPTED).

Where state lives: the resolver's cache and pending-upstream table (its app memory); here they
are only inferred from packets: an upstream query between a client's question and its answer is a
miss, an answer with none is a hit.
"""

from __future__ import annotations

from collections.abc import Sequence

from protolab.analysis.facts import Kind, Row


def _answers(rows: Sequence[Row], kind: Kind) -> list[Row]:
    return [r for r in rows if r.shows(kind)]


def cache_miss(rows: Sequence[Row]) -> list[int]:
    """An upstream query for a client's question, then the resolver's answer to that client."""
    for r in _answers(rows, Kind.DNS_CACHE_MISS):
        return [int(r.fact.values["upstream_ref"].lstrip("#")), r.number]
    return []


def cache_hit(rows: Sequence[Row]) -> list[int]:
    """Answers with no upstream query since the question: from the cache."""
    return [r.number for r in _answers(rows, Kind.DNS_CACHE_HIT)
            if "NXDOMAIN" not in r.summary][:6]


def cache_negative(rows: Sequence[Row]) -> list[int]:
    """NXDOMAIN answered from the cache (RFC 2308)."""
    return [r.number for r in _answers(rows, Kind.DNS_CACHE_HIT) if "NXDOMAIN" in r.summary][:4]


def cache_ttl_down(rows: Sequence[Row]) -> list[int]:
    """The same resolver's answer to the same question: TTL t on a miss, less on a later hit."""
    first: dict[tuple[str, str], Row] = {}
    for r in rows:
        if not (r.shows(Kind.DNS_CACHE_MISS) or r.shows(Kind.DNS_CACHE_HIT)):
            continue
        key = (r.src, r.fields.get("dns_question", ""))
        ttl = r.fact.values.get("ttl")
        if r.shows(Kind.DNS_CACHE_MISS):
            first[key] = r
        elif key in first and ttl is not None and ttl < first[key].fact.values.get("ttl", 0):
            return [first[key].number, r.number]
    return []


def cache_expiry(rows: Sequence[Row]) -> list[int]:
    """A resolver asks upstream again for a question it asked before, with a new ID."""
    seen: dict[tuple[str, str], Row] = {}
    for r in _answers(rows, Kind.DNS_UPSTREAM):
        key = (r.fact.values.get("resolver", ""), r.fields.get("dns_question", ""))
        if key in seen and seen[key].fields.get("dns_id") != r.fields.get("dns_id"):
            return [seen[key].number, r.number]
        seen[key] = r
    return []


def cache_forged(rows: Sequence[Row]) -> list[int]:
    """A forged answer taken into a cache, and a client later told what it said, from the
    cache."""
    for f in _answers(rows, Kind.DNS_FORGED_ACCEPTED):
        told = [r.number for r in _answers(rows, Kind.DNS_CACHE_HIT)
                if r.number > f.number and r.fields.get("dns_question")
                == f.fields.get("dns_question") and r.summary.split()[-1] == f.summary.split()[-1]]
        if told:
            return [f.number, *told[:3]]
    return []


def cache_flood_dropped(rows: Sequence[Row]) -> list[int]:
    """Forged answers a resolver's upstream socket drops: no pending query has their ID."""
    found = [r.number for r in rows if r.shows(Kind.DNS_UNKNOWN_ID)
             and r.holders and r.holders[0].name == "SERVER_APP"]
    return found[:1] + found[-1:] if len(found) >= 100 else []
