"""What the compiled fast path's DNS part (protolab/analysis/fast_dns.c) assumes of dnspython: the
names of the types and rcodes in protolab/analysis/fast_dns_names.h (written by
bench/fast_dns_names.py, so a run need not import dnspython) are dnspython's, and any type it
does not name is written in the generic syntax TYPE<n> (RFC 3597 section 5), as
dns.rdatatype.to_text says, for every 16-bit value."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import dns.rcode
import dns.rdatatype
import dns.version
import pytest

from protolab.analysis import fast_inspect

from conftest import require

ROOT = Path(__file__).resolve().parent.parent
HEADER = (ROOT / "protolab" / "analysis" / "fast_dns_names.h").read_text(encoding="utf-8")


def _header_types() -> dict[int, str]:
    """The type table as the C compiler reads it: `{value, "NAME"},` lines."""
    return {int(v): name for v, name in re.findall(r'^\s*\{(\d+), "([^"]*)"\},$', HEADER, re.M)}


def _header_rcodes() -> list[str]:
    block = HEADER[HEADER.index("fi_dns_rcode_names[16]"):]
    return re.findall(r'^\s*"([^"]*)",$', block[:block.index("};")], re.M)


def test_the_header_is_written_from_the_dnspython_installed() -> None:
    """fast_dns.c uses the header's names only with this dnspython version: with another one it
    asks dnspython at run time, so a stale header would cost time, never bytes."""
    assert f'#define FI_DNS_NAMES_DNSPYTHON "{dns.version.version}"' in HEADER


def test_every_type_is_named_as_dnspython_names_it() -> None:
    """The header's name where it has one, else TYPE<n>: dns.rdatatype.to_text, all 65536."""
    named = _header_types()
    assert named  # the table was read
    wrong = [v for v in range(65536) if dns.rdatatype.to_text(v) != named.get(v, f"TYPE{v}")]
    assert wrong == []


def test_every_rcode_a_header_holds_is_named_as_dnspython_names_it() -> None:
    assert _header_rcodes() == [dns.rcode.to_text(v) for v in range(16)]


def test_the_generator_writes_the_header_as_it_is() -> None:
    """bench/fast_dns_names.py run now would write the very same file."""
    generator = runpy.run_path(str(ROOT / "bench" / "fast_dns_names.py"))
    assert generator["header"]() == HEADER


def test_the_named_types_fit_the_tables_of_fast_dns() -> None:
    """fast_dns.c keeps the names below 256 by value and at most 64 above."""
    assert sum(1 for t in dns.rdatatype.RdataType if int(t) >= 256) <= 64
    assert sum(1 for v in _header_types() if v >= 256) <= 64


_COMPILED_RUN = """
import json, sys
import dns.version
if sys.argv[2] != dns.version.version:
    dns.version.version = sys.argv[2]  # as if another dnspython were installed
from protolab.analysis.fast_inspect import run
from protolab.analysis.inspect_options import Options
out = []
got = run(sys.argv[1], Options(json=True), out.append)
sys.stdout.buffer.write(b"".join(out))
print(json.dumps([got is not None, "dns.rdatatype" in sys.modules]), file=sys.stderr)
"""


@pytest.mark.parametrize("capture", ["dns-demo.ref.pcap", "cache-demo.ref.pcap"])
def test_with_another_dnspython_the_compiled_path_asks_it_and_prints_the_same(capture) -> None:
    """fast_dns.c takes the header's names only from the dnspython they were written from; with
    another version it asks dnspython (dns.rdatatype), and prints the same bytes."""
    require(fast_inspect.extension() is not None, "the compiled extension is not built")
    env = {**os.environ, fast_inspect.ENV: "compiled"}

    def ran(version: str) -> tuple[bytes, list[bool]]:
        out = subprocess.run([sys.executable, "-c", _COMPILED_RUN,
                              str(ROOT / "captures" / capture), version],
                             capture_output=True, timeout=60, env=env, check=True)
        return out.stdout, json.loads(out.stderr)

    table, asked = ran(dns.version.version), ran("0.0.0-another")
    assert table[1] == [True, False]  # printed, from the header alone
    assert asked[1] == [True, True]  # printed, having asked dnspython
    assert b'"proto": "DNS"' in table[0] and asked[0] == table[0]
