"""A host's TCP counters and socket listings, read inside its network namespace.

Where state lives: the kernel of each namespace keeps its own MIB counters (/proc/net/netstat
and /proc/net/snmp: `ListenDrops`, `TCPReqQFullDrop`, `SyncookiesSent`, `SyncookiesRecv`,
`SyncookiesFailed`, `TCPChallengeACK`, ...), as `nstat` shows them. /proc/net is the view of the
*process's* namespace; a thread that entered a host reads its own with /proc/thread-self/net.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Within = Callable[[Callable[[], Any]], Any]


def parse(text: str) -> dict[str, int]:
    """The `Prefix: name name...` / `Prefix: value value...` line pairs of /proc/net/netstat or
    snmp, as one dict (names are unique across the TcpExt, IpExt, Tcp lines we read)."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        for name, value in zip(names.split()[1:], values.split()[1:], strict=False):
            try:
                out.setdefault(name, int(value))
            except ValueError:
                continue
    return out


def counters(within: Within) -> dict[str, int]:
    """Every counter of the host `within` runs in (TcpExt first, then Tcp, Ip, ...)."""
    def read() -> dict[str, int]:
        base = Path("/proc/thread-self/net")
        return parse((base / "netstat").read_text() + (base / "snmp").read_text())

    return within(read)


def delta(before: Mapping[str, int], after: Mapping[str, int],
          names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """name → (before, after) for each of `names`."""
    return {n: (before.get(n, 0), after.get(n, 0)) for n in names}
