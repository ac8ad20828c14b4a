"""`python -m protolab.net.dns_resolver PORT --upstream HOST:PORT [--route SUFFIX=HOST:PORT]
[--weak]`: protolab's caching resolver (`protolab.protocols.dns_cache`) as its own process.

Where state lives: the cache and the pending-upstream table are this process's memory, so a
restart (a new PID) starts with both empty. The sockets are its kernel's: the listening socket for
clients on 127.0.0.1:PORT, and the upstream side — one fixed socket (`--weak`), or a socket bound
to the random port the core picked for each query, closed once nothing waits on it.

It prints `ready PORT` (`protolab.net.child`), then one JSON line per thing it did (hit, miss,
upstream, stored, rejected, expired, timeout): the demo reads its record from the process itself.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict

from protolab.net import child, lifecycle
from protolab.net.server_thread import ServerThread
from protolab.protocols.dns_cache import STRONG, WEAK, Resolver

Address = tuple[str, int]


class ResolverThread(ServerThread):
    """The resolver core on real sockets, in a thread; every event printed as a JSON line."""

    def __init__(self, port: int, upstream: Address, routes: dict[str, Address],
                 weak: bool) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listener.bind(("127.0.0.1", port))
        self.address: Address = self.listener.getsockname()
        self.sockets: dict[int, socket.socket] = {}
        fixed = 0
        if weak:  # one upstream socket for the process's life: its port never changes
            fixed = self._bind(0).getsockname()[1]
        self.core = Resolver(upstream, WEAK if weak else STRONG, random.SystemRandom(),
                             fixed_port=fixed, routes=routes)
        self._weak = weak
        self._wake_r, self._wake_w = socket.socketpair()
        self._running = True
        super().__init__(self._run, name=f"resolver-{self.address[1]}")

    def _bind(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            raise
        self.sockets[s.getsockname()[1]] = s
        return s

    def _run(self) -> None:
        while self._running:
            due = self.core.next_timer()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            ready, _, _ = select.select([self.listener, self._wake_r, *self.sockets.values()],
                                        [], [], timeout)
            now = time.monotonic()
            for s in ready:
                if s is self._wake_r:
                    continue
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                if s is self.listener:
                    self.core.receive_client(data, addr, now)
                else:
                    self.core.receive_upstream(data, addr, s.getsockname()[1], now)
            self.core.handle_timer(now)
            self._send()
            self._report()

    def _send(self) -> None:
        outs = deque(self.core.datagrams_to_send())
        while outs:
            out = outs.popleft()
            sock = self.listener if out.port is None else self._socket(out.port)
            if sock is None:  # the random port is taken here: the core picks another
                self.core.port_busy(out.port)
                outs.extend(self.core.datagrams_to_send())
                continue
            try:
                sock.sendto(out.wire, out.dest)
            except OSError:
                pass
        if not self._weak:  # a random port lives as long as a query waits on it
            for port in set(self.sockets) - self.core.ports_in_use():
                self.sockets.pop(port).close()

    def _socket(self, port: int) -> socket.socket | None:
        if port in self.sockets:
            return self.sockets[port]
        try:
            return self._bind(port)
        except OSError:
            return None

    def _report(self) -> None:
        while (ev := self.core.next_event()) is not None:
            print(json.dumps({k: v for k, v in asdict(ev).items() if v not in ("", None, (), 0)}),
                  flush=True)

    def _interrupt(self) -> None:
        self._running = False
        self._wake_w.send(b"x")

    def _close(self) -> None:
        for s in (self.listener, self._wake_r, self._wake_w, *self.sockets.values()):
            s.close()


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str]) -> int:
    """Serve on 127.0.0.1:PORT (0: a free one) until stopped; says `ready PORT` first."""
    p = argparse.ArgumentParser(prog="protolab.net.dns_resolver")
    p.add_argument("port", type=int)
    p.add_argument("--upstream", type=_address, required=True)
    p.add_argument("--route", action="append", default=[], metavar="SUFFIX=HOST:PORT")
    p.add_argument("--weak", action="store_true", help="fixed source port, sequential IDs")
    args = p.parse_args(argv)
    routes = {s: _address(a) for s, _, a in (r.partition("=") for r in args.route)}
    lifecycle.child_init()
    server = ResolverThread(args.port, args.upstream, routes, args.weak).start()
    child.announce_ready(server.address[1])
    lifecycle.wait_for_stop()
    server.stop()
    return 0



def ask(sock: socket.socket, query: object, where: Address, timeout: float = 2.0) -> object:
    """Send `query` (a dns.message.Message) from `sock` to `where` and return the first answer
    that matches it the way a stub does (from `where`, same ID and question: RFC 5452 section
    9.1); anything else that arrives meanwhile is dropped. TimeoutError after `timeout`.
    (dnspython's dns.query does the same, but importing it costs half a second.)"""
    import dns.exception
    import dns.message

    sock.sendto(query.to_wire(), where)  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data, addr = sock.recvfrom(65535)
            if (addr[0], addr[1]) != (where[0], where[1]):
                continue
            try:
                answer = dns.message.from_wire(data)
            except (dns.exception.DNSException, ValueError, UnicodeError, IndexError):
                continue
            if query.is_response(answer):  # type: ignore[attr-defined]
                return answer
    finally:
        sock.settimeout(None)
    raise TimeoutError(f"no answer from {where[0]}:{where[1]} in {timeout} s")


class ResolverProcess:
    """The resolver as a child process (`protolab.net.processes.ServerProcess`), with its log
    read on a thread as it comes: `events` (dicts), `wait_for` one. A restart is a new process
    on the same port: a new PID, a new, empty memory."""

    def __init__(self, upstream: Address, routes: dict[str, Address] | None = None,
                 weak: bool = False, port: int = 0, wait: bool = True) -> None:
        from protolab.net.processes import restartable_port

        self._args = ["--upstream", f"{upstream[0]}:{upstream[1]}", *(["--weak"] if weak else []),
                      *(f"--route={s}={a[0]}:{a[1]}" for s, a in (routes or {}).items())]
        self.port = port or restartable_port(udp=True)
        self.address: Address = ("127.0.0.1", self.port)
        self.pids: list[int] = []
        self.events: list[dict] = []  #: every process's events, in order, each with its "pid"
        self._cond = threading.Condition()
        self._start(wait)

    def _start(self, wait: bool = True) -> None:
        from protolab.net.processes import ServerProcess

        self.proc = ServerProcess(MODULE, args=[str(self.port), *self._args], wait=False)
        self.pids.append(self.proc.pid)
        if wait:
            self.ready()

    def ready(self) -> ResolverProcess:
        """Wait for its `ready PORT`, then read its log on a thread."""
        self.proc.ready()
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, proc: object) -> None:
        stream = proc.proc.stdout  # type: ignore[attr-defined]
        try:
            for line in stream:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                with self._cond:
                    self.events.append({**ev, "pid": proc.pid})  # type: ignore[attr-defined]
                    self._cond.notify_all()
        except (OSError, ValueError):  # the pipe closed under us: the process is gone
            return

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 2.0) -> dict | None:
        """The first event (of any process so far) for which `predicate` holds, once it is
        logged; None after `timeout`."""
        def found() -> dict | None:
            return next((e for e in self.events if predicate(e)), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout)
            return found()

    def restart(self) -> tuple[int, int]:
        """Kill the process, start a new one on the same port: (old pid, new pid)."""
        old = self.proc.pid
        self.proc.kill()
        self._start()
        return old, self.proc.pid

    def stop(self) -> None:
        self.proc.kill()

    def __enter__(self) -> ResolverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


MODULE = "protolab.net.dns_resolver"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
