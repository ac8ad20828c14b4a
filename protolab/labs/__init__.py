"""The labs: one module per lab with its whole run, and what every lab prints.

`DEMOS` is the one registry of the captured demos: replay, the reference captures and the CLI
find a demo's module here, by its subcommand name.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

#: subcommand → the module that runs it (`run`, `WHERE_TITLE`, `where_from_capture`)
DEMOS: dict[str, str] = {
    "dns-demo": "protolab.labs.dns",
    "tcp-demo": "protolab.labs.tcp",
    "udp-demo": "protolab.labs.udp",
    "quic-demo": "protolab.labs.quic",
    "nat-demo": "protolab.labs.nat",
    "tcp-attack-demo": "protolab.labs.tcp_attack",
    "tls-demo": "protolab.labs.tls",
    "hijack-demo": "protolab.labs.hijack",
    "ws-demo": "protolab.labs.ws",
    "cache-demo": "protolab.labs.dns_cache",
}


def demo_module(demo: str) -> ModuleType:
    """The lab module of `demo` (imported now: the CLI's --help imports none of them)."""
    return import_module(DEMOS[demo])
