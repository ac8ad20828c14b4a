"""Code that runs inside a host of a topology: a thread, a socket or a process in its namespace.

Where state lives: a network namespace is a kernel of its own for the network — its interfaces,
routes, socket table, conntrack table and sysctls. Which one a socket belongs to is fixed when the
socket is made: by the namespace of the *thread* that made it (setns(2) moves the calling thread
only). So a socket in a host is made by a short-lived thread that first enters the host
(`within`), and then serves from any thread; a process is started by `python -m
protolab.net.netns NETNS MODULE ARGS...`, which enters the namespace while it is still one thread
and then runs the module as `python -m MODULE ARGS...` would (`protolab.net.processes` starts
it, so it keeps the "ready PORT" handshake and dies with its parent). A namespace is named by its
file under /run/netns, as `ip netns` makes them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")  #: where `ip netns` (and pyroute2) keep a namespace's name
CLONE_NEWNET = 0x40000000  #: <linux/sched.h>
T = TypeVar("T")


def path(name: str) -> Path:
    return NETNS_DIR / name


def command(name: str | None, *argv: str) -> list[str]:
    """The argv that runs program `argv` inside namespace `name` (None: here)."""
    return ["ip", "netns", "exec", name, *argv] if name else list(argv)


def enter(name: str) -> None:
    """setns(2): move the calling thread into namespace `name` (the others stay where they are)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def within(name: str, work: Callable[[], T]) -> T:
    """`work()` run by a thread inside namespace `name`; its result, or its exception. The thread
    ends with it, so no thread of this process stays in the namespace."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            enter(name)
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as is
            error.append(exc)

    thread = threading.Thread(target=run, name=f"in {name}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def main(argv: list[str]) -> int:
    """`python -m protolab.net.netns NETNS MODULE ARGS...`: MODULE's `__main__` inside NETNS."""
    import runpy

    if len(argv) < 2:
        print("usage: python -m protolab.net.netns NETNS MODULE [ARGS...]", file=sys.stderr)
        return 2
    try:
        enter(argv[0])
    except OSError as exc:
        print(f"cannot enter network namespace {argv[0]}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
