"""A private redis-server for one run: a child process on a free loopback port, no persistence.

Where state lives: everything the chat shares (ids, history, the pub/sub channel) is in this
process's memory; it dies with the run (a parent-death signal, `protolab.net.lifecycle`), so a run
leaves no Redis and no keys behind. Readiness is the server's own word: it answers PING.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

from protolab.net import lifecycle


class RedisError(RuntimeError):
    """No redis-server here, or it did not start: one line."""


class RedisServer:
    """`redis-server` on 127.0.0.1:PORT (a free port); `url` names its database 0."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisError("redis-server is not installed (Debian: apt-get install "
                             "redis-server), and no --redis URL was given")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._dir = tempfile.mkdtemp(prefix="protolab-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", self._dir, "--maxclients", "10000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            process_group=0, preexec_fn=lifecycle.set_parent_death_signal)
        lifecycle.track(self.proc)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RedisError(f"redis-server did not start on 127.0.0.1:{self.port}")
            time.sleep(0.01)  # polling the server's own answer: readiness is checked

    def stop(self) -> None:
        with lifecycle.shielded():
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
            lifecycle.untrack(self.proc)
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
