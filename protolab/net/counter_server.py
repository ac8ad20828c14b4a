"""`python -m protolab.net.counter_server [PORT [HOST]]`: the UDP counter server as its own
process.

It prints `ready PORT`; each reply names this process's PID, so a restart shows in the packets.
"""

from __future__ import annotations

import os
import sys

from protolab.net.udpnet import serve_child
from protolab.protocols.counter import CounterServer


def main(argv: list[str]) -> int:
    return serve_child(CounterServer(pid=os.getpid()), argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
