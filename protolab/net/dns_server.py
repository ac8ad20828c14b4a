"""`python -m protolab.net.dns_server [PORT]`: the lab DNS server as its own process.

It prints `ready PORT`, then `holding 0xID` for each answer it holds back, so that a demo can
restart it (a new PID) and know from the process itself what the restart loses.
"""

from __future__ import annotations

import sys

from protolab.net.udpnet import serve_child
from protolab.protocols.dns import Address, DnsServer


class ReportingServer(DnsServer):
    """The lab server that says on stdout each answer it holds back in its memory for a delay:
    `holding 0x1234` (so a demo knows, from the process itself, what killing it would lose)."""

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        seq = self._seq
        super().receive(data, addr, now)
        for due, s, wire, _, _ in self._due:
            if s > seq and due > now:
                print(f"holding {int.from_bytes(wire[:2], 'big'):#06x}", flush=True)


def main(argv: list[str]) -> int:
    """The lab server on 127.0.0.1:PORT (0: a free one) until killed; says `ready PORT`."""
    return serve_child(ReportingServer(), argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
