"""The one lifecycle of the lab's in-process servers: a loop on a daemon thread.

Where state lives: the server's socket is bound when the object is made (so its address is known
before anything runs); `start()` (or `with`) runs the loop on its thread; `stop()` asks the loop to
end, waits for it, then releases the sockets. `stop()` may be called twice, or without a start.
Subclasses say how their loop is asked to end (`_interrupt`) and what they release (`_close`).
"""

from __future__ import annotations

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
