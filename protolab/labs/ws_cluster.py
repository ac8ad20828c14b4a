"""The chat as a cluster: N WebSocket backend processes of one design behind a balancer, and
the Redis they share; the users that talk to it.

Where state lives: each backend process holds its connections (`protolab.net.ws_backend`); with a
shared design the ids, history and fan-out are in the Redis (`protolab.net.chat_store`), which a
run starts for itself (`protolab.net.redis_server`) unless given one. A restart is a new process
on the same port: its PID before and after is the evidence.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from protolab.net import lifecycle
from protolab.net.lb import Policy, Upstream, start_balancer
from protolab.net.processes import ServerProcess, restartable_port
from protolab.net.ws_client import ChatUser
from protolab.protocols.chat import Design

MODULE = "protolab.net.ws_backend"


@dataclass
class WsCluster:
    """`n` chat backends of `design` behind a balancer of `lb` kind (protolab, nginx, haproxy)."""

    design: Design
    redis: str  #: the Redis URL ("" for the memory design)
    n: int = 2
    lb: str = "protolab"
    room: str = field(default_factory=lambda: secrets.token_hex(4))
    procs: dict[str, ServerProcess] = field(default_factory=dict)
    restarts: list[tuple[str, int, int]] = field(default_factory=list)  #: (id, old, new pid)

    def __post_init__(self) -> None:
        try:
            ids = [f"b{i}" for i in range(1, self.n + 1)]
            started = ServerProcess.many(MODULE, [self._args(b, restartable_port())
                                                  for b in ids])
            self.procs = dict(zip(ids, started, strict=True))
            self.upstreams = [Upstream(b, "127.0.0.1", p.port) for b, p in self.procs.items()]
            self.balancer = start_balancer(self.lb, self.upstreams, Policy.ROUND_ROBIN,
                                           websocket=True)
        except BaseException:
            self.stop()
            raise
        self.address: tuple[str, int] = self.balancer.address
        self.changed = threading.Condition()

    def _args(self, backend: str, port: int) -> list[str]:
        args = ["--design", self.design.value, "--id", backend, "--port", str(port)]
        return args + (["--redis", self.redis, "--room", self.room] if self.design.shared
                       else [])

    @property
    def ports(self) -> list[int]:
        return [self.balancer.address[1], *(p.port for p in self.procs.values())]

    def user(self, name: str, seed: int = 0) -> ChatUser:
        return ChatUser(name, self.address, self.changed, seed=seed).start()

    def restart(self, backend: str, graceful: bool) -> tuple[int, int]:
        """The backend's process stopped (SIGTERM: close frames 1001; else SIGKILL) and a new
        one started on its port: (old pid, new pid). protolab's balancer stops sending it new
        connections meanwhile."""
        old = self.procs[backend]
        drain = getattr(self.balancer, "drain", None)
        if drain is not None:
            drain(backend, timeout=0)
        (old.terminate if graceful else old.kill)()
        new = ServerProcess(MODULE, args=self._args(backend, old.port))
        self.procs[backend] = new
        if drain is not None:
            self.balancer.undrain(backend)
        self.restarts.append((backend, old.pid, new.pid))
        return old.pid, new.pid

    def wait(self, predicate, timeout: float) -> bool:
        """Wait until `predicate()` holds (the users notify on every change), or `timeout`."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def stop(self) -> None:
        with lifecycle.shielded():
            try:
                balancer = getattr(self, "balancer", None)
                if balancer is not None:
                    balancer.stop()
            finally:
                for proc in self.procs.values():
                    proc.kill()
                if self.design.shared and self.redis:
                    _wipe(self.redis, self.room)

    def __enter__(self) -> WsCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wipe(url: str, room: str) -> None:
    from protolab.net.chat_store import RedisChat

    try:
        RedisChat(url, room).wipe()
    except Exception:  # noqa: BLE001 - the Redis may be gone already (a private one)
        pass


class redis_for_run:  # noqa: N801 - used as `with redis_for_run(url)`
    """The Redis URL to use: the one given, else a private redis-server for this run."""

    def __init__(self, url: str | None) -> None:
        self.url, self.server = url, None

    def __enter__(self) -> str:
        if self.url:
            return self.url
        from protolab.net.redis_server import RedisServer

        self.server = RedisServer()
        return self.server.url

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()
