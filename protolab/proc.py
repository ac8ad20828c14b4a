"""Lab servers as real processes, so that a demo can kill or restart them.

Where state lives: in the child process's memory and in the kernel's socket table entries that the
process owns. Killing the process frees both, which is exactly what the litmus tests need.
Readiness is the child's own word: it prints `ready PORT` once its socket is bound.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


class ServerProcess:
    """`python -m MODULE [PORT]` (or `python -m MODULE ARGS...`) as a child process; `port` is
    what it reported when ready."""

    def __init__(self, module: str, port: int = 0, args: Sequence[str] | None = None) -> None:
        argv = list(args) if args is not None else [str(port)]
        self.proc = subprocess.Popen([sys.executable, "-m", module, *argv],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            self.kill()
            raise RuntimeError(f"{module} did not start (said {' '.join(line)!r})")
        self.port = int(line[1])
        self.pid = self.proc.pid

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def terminate(self) -> int | None:
        """SIGTERM (a graceful stop: requests in flight finish) and reap."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.kill()

    def kill(self) -> int | None:
        """SIGKILL and reap; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        status = self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return status
