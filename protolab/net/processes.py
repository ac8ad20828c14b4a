"""Lab servers as real processes, so that a demo can kill or restart them.

Where state lives: in the child process's memory and in the kernel's socket table entries that the
process owns. Killing the process frees both, which is exactly what the litmus tests need.
Readiness is the child's own word: it prints `ready PORT` once its socket is bound
(`protolab.net.child`, both sides of that handshake).

Each child dies with this process (see `protolab.net.lifecycle`): it runs in its own process group
(the terminal's Ctrl-C goes to the command, which stops its children), it is registered until
reaped, and it asks the kernel for a parent-death signal in case the command itself is killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence

from protolab.net import child, lifecycle

#: test seam: with PROTOLAB_HOLD_AFTER_SPAWN=N the command stops after its Nth child process is
#: ready, says `holding after spawn N (pid P)` and waits there for a signal; this is how the tests
#: stop a demo at a known point, with its children alive
HOLD_ENV = "PROTOLAB_HOLD_AFTER_SPAWN"
_spawned = 0


class ServerProcess:
    """`python -m MODULE [PORT]` (or `python -m MODULE ARGS...`) as a child process; `port` is
    what it reported when ready."""

    def __init__(self, module: str, port: int = 0, args: Sequence[str] | None = None,
                 wait: bool = True) -> None:
        argv = list(args) if args is not None else [str(port)]
        self.module = module
        self.proc = subprocess.Popen([sys.executable, "-m", module, *argv],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                     env=lifecycle.child_env(), process_group=0)
        lifecycle.track(self.proc)
        self.pid = self.proc.pid
        self.port = 0
        if wait:
            self.ready()

    @classmethod
    def many(cls, module: str, arg_lists: Sequence[Sequence[str]]) -> list[ServerProcess]:
        """Several children started at once (their start-ups overlap), each ready on return;
        when one fails, all of them are killed."""
        procs: list[ServerProcess] = []
        try:
            for args in arg_lists:
                procs.append(cls(module, args=args, wait=False))
            for proc in procs:
                proc.ready()
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
        return procs

    def ready(self) -> ServerProcess:
        """Wait for the child's `ready PORT` line, its own word that it listens (with
        `wait=False`, several children start at once and are waited for in turn)."""
        try:
            line = self.proc.stdout.readline()
            port = child.ready_port(line)
            if port is None:
                raise RuntimeError(f"{self.module} did not start (said "
                                   f"{' '.join(line.split())!r})")
            self.port = port
            _hold(self.pid)
        except BaseException:  # a stop signal while starting, too: this child goes with us
            self.kill()
            raise
        return self

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def terminate(self) -> int | None:
        """SIGTERM (a graceful stop: requests in flight finish), reap; SIGKILL after 5 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int | None:
        """SIGKILL and reap; returns the exit status."""
        with lifecycle.shielded():
            if self.proc.poll() is None:
                self.proc.kill()
            status = self.proc.wait(5)
            lifecycle.untrack(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return status


def _hold(pid: int) -> None:
    """The test seam (HOLD_ENV): wait here, in the main thread, for a signal."""
    global _spawned
    _spawned += 1
    hold = os.environ.get(HOLD_ENV)
    if hold and hold.isdigit() and int(hold) == _spawned \
            and threading.current_thread() is threading.main_thread():
        print(f"holding after spawn {_spawned} (pid {pid})", flush=True)
        threading.Event().wait()


def restartable_port(host: str = "127.0.0.1", udp: bool = False) -> int:
    """A free port below the kernel's ephemeral range, for a server that will be restarted on
    the same port: a port the kernel hands out as an outgoing connection's source port could be
    taken by some client while the server is down, and the new process could not bind it."""
    import random
    import socket

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = random.Random().sample(range(10000, max(low, 10001)), 200)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) \
                as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    return 0  # none free: let the kernel choose
