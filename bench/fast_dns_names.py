"""Write protolab/analysis/fast_dns_names.h: dnspython's names of the DNS types and rcodes, for
the compiled fast path (fast_dns.c), so a run need not import dnspython to learn them.

    python bench/fast_dns_names.py [--check]

The header says which dnspython it was written from; fast_dns.c uses it only with that version
installed (with another one it asks dnspython, as before). Run this again when dnspython changes:
tests/test_fast_dns_names.py fails until the header and the installed dnspython agree.
--check writes nothing and exits 1 when the header differs from what would be written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import dns.rcode
import dns.rdatatype
import dns.version

HEADER = Path(__file__).resolve().parent.parent / "protolab" / "analysis" / "fast_dns_names.h"
_NAME = re.compile(r"[A-Za-z0-9_-]+")  #: what a C string literal holds as it is


def type_names() -> list[tuple[int, str]]:
    """(value, dns.rdatatype.to_text(value)) for every type dnspython names, by value; any other
    type is written TYPE<n> (RFC 3597 section 5), in C as in dnspython."""
    return sorted({(int(t), dns.rdatatype.to_text(t)) for t in dns.rdatatype.RdataType})


def rcode_names() -> list[str]:
    """dns.rcode.to_text of the 16 rcodes a DNS header holds (4 bits)."""
    return [dns.rcode.to_text(v) for v in range(16)]


def header() -> str:
    names = [name for _, name in type_names()] + rcode_names()
    bad = [name for name in names if not _NAME.fullmatch(name)]
    if bad:
        raise SystemExit(f"names that need escaping in C: {bad}")
    types = "\n".join(f"    {{{value}, \"{name}\"}}," for value, name in type_names())
    rcodes = "\n".join(f"    \"{name}\"," for name in rcode_names())
    return f"""/* dnspython's names of the DNS types and rcodes (dns.rdatatype.to_text,
 * dns.rcode.to_text), written by bench/fast_dns_names.py from dnspython {dns.version.version}: do
 * not edit, run it again. fast_dns.c uses them where that dnspython is the one installed;
 * tests/test_fast_dns_names.py holds them to it. */
#ifndef FAST_DNS_NAMES_H
#define FAST_DNS_NAMES_H

#define FI_DNS_NAMES_DNSPYTHON "{dns.version.version}"

/* every type dnspython names, by value; any other is TYPE<n> */
static const struct {{ unsigned value; const char *name; }} fi_dns_type_names[] = {{
{types}
}};

/* rcodes 0..15 */
static const char *const fi_dns_rcode_names[16] = {{
{rcodes}
}};

#endif
"""


def main() -> int:
    text = header()
    if sys.argv[1:] == ["--check"]:
        same = HEADER.exists() and HEADER.read_text(encoding="utf-8") == text
        print(f"{HEADER}: {'as dnspython says' if same else 'differs: run without --check'}")
        return 0 if same else 1
    HEADER.write_text(text, encoding="utf-8")
    print(f"wrote {HEADER} from dnspython {dns.version.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
