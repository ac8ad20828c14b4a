"""A host's nftables rules: loaded with `nft -f -` (the ruleset on stdin) in its namespace.

Where state lives: the ruleset lives in the kernel of the host's namespace, and with a NAT rule in
it, that kernel keeps a conntrack entry per flow (`protolab.net.conntrack`): the translation is
decided by the flow's first packet and then looked up for every later one, both ways (RFC 3022
section 2.1, NAPT; RFC 4787 on how UDP mappings behave). A table's name starts with PREFIX, so
`protolab doctor --clean` can tell protolab's tables from anyone else's.
"""

from __future__ import annotations

import json
import subprocess

from protolab.net.netns import command

PREFIX = "protolab"  #: every table protolab makes starts with this
TABLE = PREFIX  #: the table of a host's rules (its namespace is the run's own)


class NftError(Exception):
    """nft refused a ruleset or a command: one line with nft's own reason."""


def masquerade(outside: str, table: str = TABLE) -> str:
    """The ruleset of a NAT router: what leaves by interface `outside` gets the router's own
    address there as its source (and a source port of its choosing when the original is taken).
    Loading it again replaces the table whole, in one transaction."""
    return (f"table ip {table} {{}}\n"
            f"delete table ip {table}\n"
            f"table ip {table} {{\n"
            f"    chain postrouting {{\n"
            f"        type nat hook postrouting priority srcnat; policy accept;\n"
            f"        oifname \"{outside}\" masquerade\n"
            f"    }}\n"
            f"}}\n")


def _nft(netns: str | None, *args: str, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(command(netns, "nft", *args), input=stdin, capture_output=True,
                              text=True, timeout=30)
    except FileNotFoundError as exc:
        raise NftError(f"nft is not installed ({exc.filename}): sudo apt-get install "
                       f"nftables") from None
    if done.returncode != 0:
        why = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise NftError(f"nft {' '.join(args)}: {why}")
    return done.stdout


def load(ruleset: str, netns: str | None = None) -> None:
    """`nft -f -` with `ruleset` on stdin, in namespace `netns` (None: this one)."""
    _nft(netns, "-f", "-", stdin=ruleset)


def tables(netns: str | None = None) -> list[tuple[str, str]]:
    """(family, name) of every nftables table in `netns` (`nft -j list tables`)."""
    out = json.loads(_nft(netns, "-j", "list", "tables") or "{}")
    return [(item["table"]["family"], item["table"]["name"])
            for item in out.get("nftables", []) if "table" in item]


def delete_table(family: str, name: str, netns: str | None = None) -> None:
    _nft(netns, "delete", "table", family, name)
