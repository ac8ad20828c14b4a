"""The one lifecycle of the lab's in-process servers: a loop on a daemon thread.

Where state lives: the server's socket is bound when the object is made (so its address is known
before anything runs); `start()` (or `with`) runs the loop on its thread; `stop()` asks the loop to
end, waits for it, then releases the sockets. `stop()` may be called twice, or without a start.
Subclasses say how their loop is asked to end (`_interrupt`) and what they release (`_close`).
`TcpServerThread` is the TCP kind: an accept loop, a thread per connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Self


class ServerThread:
    """A server whose loop `target` runs on a daemon thread between `start()` and `stop()`."""

    def __init__(self, target: Callable[[], object], name: str | None = None) -> None:
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._stopped = False

    def start(self) -> Self:
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._interrupt()
            self._thread.join(5)
        self._close()

    def _interrupt(self) -> None:
        """Make the running loop return (it is blocked in select/accept/serve_forever)."""
        raise NotImplementedError

    def _close(self) -> None:
        """Release the sockets (and anything else the server holds); the loop has ended."""
        raise NotImplementedError


class TcpServerThread(ServerThread):
    """A TCP server: a listening socket bound now, an accept loop on the server thread, and a
    thread per connection running `serve(conn, peer)`. Subclasses write `serve`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(16)
        self.address: tuple[str, int] = self.listener.getsockname()
        self._threads: list[threading.Thread] = []
        super().__init__(self._accept_loop)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve_guarded, args=(conn, peer), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve_guarded(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with conn:
            try:
                self.serve(conn, peer)
            except OSError:
                pass  # the peer reset or went away: nothing to keep

    def serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Talk to one accepted connection; it is closed when this returns."""
        raise NotImplementedError

    def _interrupt(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # accept() returns with an error
        except OSError:
            pass

    def _close(self) -> None:
        self.listener.close()
        for t in self._threads:
            t.join(2)
