"""What the compiled fast path's DNS part (protolab/analysis/fast_dns.c) assumes of dnspython:
it asks dnspython for the names of the types it knows (dns.rdatatype.RdataType) and writes any
other type in the generic syntax TYPE<n> (RFC 3597 section 5) itself. That is what
dns.rdatatype.to_text says, for every 16-bit value."""

from __future__ import annotations

import dns.rdatatype


def test_a_type_dnspython_does_not_name_is_written_type_and_its_number() -> None:
    named = {int(t): dns.rdatatype.to_text(t) for t in dns.rdatatype.RdataType}
    wrong = [v for v in range(65536) if dns.rdatatype.to_text(v) != named.get(v, f"TYPE{v}")]
    assert wrong == []


def test_the_named_types_fit_the_tables_of_fast_dns() -> None:
    """fast_dns.c keeps the names below 256 by value and at most 64 above."""
    assert sum(1 for t in dns.rdatatype.RdataType if int(t) >= 256) <= 64
