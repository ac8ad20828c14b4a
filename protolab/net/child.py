"""The "ready PORT" handshake between a lab server process and the command that started it.

Where state lives: the child's port is its own word. A server process (`python -m MODULE [PORT]`,
started by `protolab.net.processes`) binds its socket, then prints `ready PORT` as its first line;
the parent reads that line (`ready_port`) and only then talks to it. Both sides of the handshake
are here, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from protolab.net import lifecycle

READY = "ready"  #: the first word of a child's first line once its socket is bound


class Listening(Protocol):
    address: tuple[str, int]


def announce_ready(port: int) -> None:
    """The child's first line: it serves on `port` now."""
    print(f"{READY} {port}", flush=True)


def ready_port(line: str) -> int | None:
    """The port a child announced in `line`; None when `line` is not `ready PORT`."""
    words = line.split()
    if len(words) != 2 or words[0] != READY or not words[1].isdigit():
        return None
    return int(words[1])


def serve(start: Callable[[int], Listening], argv: Sequence[str]) -> int:
    """A child's whole entry point: `start(PORT)` (argv[0], or 0: a free one) returns the running
    server; say `ready PORT`, serve until SIGTERM/SIGINT/SIGHUP, then return 0 quietly. The child
    dies with its parent (`lifecycle.child_init`)."""
    lifecycle.child_init()
    server = start(int(argv[0]) if argv else 0)
    announce_ready(server.address[1])
    lifecycle.wait_for_stop()
    return 0
