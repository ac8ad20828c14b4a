"""Every process a command starts stops with it, and every temp file it makes goes with it.

The parent (the `protolab` command): `handle_signals()` turns SIGINT, SIGTERM and SIGHUP into
`Stopped` (a KeyboardInterrupt) raised in the main thread, so every `with` block and `finally`
unwinds as on Ctrl-C: the children are killed and reaped, the temp directories removed, and the
command says one line. A second signal while that cleanup runs is ignored, so it cannot cut the
cleanup short; `shielded()` holds a signal back until a short cleanup step has finished. Every
child process registers itself (`track`), and `stop_children()` kills whatever is still
registered when the command ends, whatever way it ends.

The children (`python -m protolab.net.backend`, `.dns_server`, `.counter_server`, `.echo_server`):
`child_init()` first. A child started by `protolab.net.processes` asks the kernel for a parent-death
signal (prctl(2) PR_SET_PDEATHSIG): when the parent dies, even by SIGKILL, which nothing can
catch, the kernel kills the child. `wait_for_stop()` serves until SIGINT, SIGTERM or SIGHUP and
returns quietly: a child never prints a KeyboardInterrupt traceback. The children run in their
own process group, so the terminal's Ctrl-C reaches only the parent, which stops them in order.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

#: the environment variable carrying the parent's PID to a child started by `protolab.net.processes`
PARENT_ENV = "PROTOLAB_PARENT_PID"
PR_SET_PDEATHSIG = 1  #: <linux/prctl.h>
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived: unwind everything, then exit 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        if self.signum == signal.SIGINT:
            return "interrupted"
        return f"stopped by {signal.Signals(self.signum).name}"


def as_stopped(exc: KeyboardInterrupt) -> Stopped:
    """A KeyboardInterrupt raised by Python's own SIGINT handler counts as Stopped(SIGINT)."""
    return exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)


class _State:
    shield = 0  #: depth of `shielded()` blocks
    pending: int | None = None  #: a signal held back by `shielded()`
    stopping = False  #: a Stopped has been raised: ignore further signals
    previous: dict[int, object] = {}  #: the handlers `handle_signals` replaced
    fork_hook = False  #: `_forked` is registered to run in forked children


_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


#: Python functions run around fork() (os.register_at_fork): an exception raised in one is
#: printed and dropped by the interpreter ("Exception ignored in"), so a stop raised there is lost
_AT_FORK = {("logging", "_acquireLock"), ("logging", "_releaseLock")}


def _on_signal(signum: int, frame: object) -> None:
    if _State.stopping:
        return
    if _State.shield:
        _State.pending = signum
        return
    if _in_fork_callback(frame):
        # Sent again from a thread once the main thread has left the fork callback: raised
        # now, the stop would be printed and dropped; sent again at once, it would land here.
        threading.Thread(target=_redeliver, args=(signum,), daemon=True).start()
        return
    _State.stopping = True
    raise Stopped(signum)


def _in_fork_callback(frame: object) -> bool:
    code = getattr(frame, "f_code", None)
    return code is not None and (frame.f_globals.get("__name__"), code.co_name) in _AT_FORK


def _redeliver(signum: int) -> None:
    """Send `signum` to this process again as soon as the main thread is out of the fork
    callback it arrived in (a callback holds a lock for microseconds: this polls at 1 ms)."""
    main = threading.main_thread().ident
    while _within_fork_callback(sys._current_frames().get(main)):
        time.sleep(0.001)
    os.kill(os.getpid(), signum)


def _within_fork_callback(frame: object) -> bool:
    """Whether a fork callback is anywhere on this stack (the handler that started us runs
    inside one until it returns)."""
    while frame is not None:
        if _in_fork_callback(frame):
            return True
        frame = frame.f_back
    return False


def handle_signals() -> None:
    """In the main thread of the command: SIGINT, SIGTERM, SIGHUP raise `Stopped` (elsewhere, as
    when a test calls the command in a thread, Python allows no handler: nothing changes)."""
    _State.stopping, _State.pending, _State.shield = False, None, 0
    if threading.current_thread() is not threading.main_thread():
        return
    if not _State.fork_hook:
        os.register_at_fork(after_in_child=_forked)
        _State.fork_hook = True
    for signum in STOP_SIGNALS:
        _State.previous[signum] = signal.signal(signum, _on_signal)


def _forked() -> None:
    """In a process forked from the command without exec (pyroute2 forks to open a socket in a
    network namespace): a stop signal kills it as by default. It must never raise `Stopped` and
    unwind the command's stack in its copy — that would run the command's cleanup twice, the
    second time in the wrong process."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def finish() -> None:
    """The command's last step, however it ended: kill what is left of its children, then put
    the signal handlers back as they were."""
    _State.stopping = True  # a signal now is ignored: the cleanup below finishes
    stop_children()
    for signum, previous in _State.previous.items():  # as they were (a test calls main())
        signal.signal(signum, previous)
    _State.previous.clear()


@contextmanager
def shielded() -> Iterator[None]:
    """Hold a stop signal back until the block is done (a cleanup step must not be cut)."""
    _State.shield += 1
    try:
        yield
    finally:
        _State.shield -= 1
        if not _State.shield and _State.pending is not None and not _State.stopping:
            signum, _State.pending = _State.pending, None
            _State.stopping = True
            raise Stopped(signum)


def track(proc: subprocess.Popen) -> None:
    with _children_lock:
        _children.add(proc)


def untrack(proc: subprocess.Popen) -> None:
    with _children_lock:
        _children.discard(proc)


def stop_children() -> int:
    """Kill and reap every child process still registered; how many there were."""
    with _children_lock:
        left = list(_children)
        _children.clear()
    for proc in left:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return len(left)


def child_env() -> dict[str, str]:
    """The environment for a child that is to die with this process (see `child_init`).

    The parent-death signal is sent when the *thread* that started the child ends (prctl(2)), so
    it is asked for only when the main thread starts the child; the main thread lives as long as
    the process."""
    env = dict(os.environ)
    if threading.current_thread() is threading.main_thread():
        env[PARENT_ENV] = str(os.getpid())
    return env


def set_parent_death_signal(signum: int = signal.SIGKILL) -> None:
    """prctl(2) PR_SET_PDEATHSIG: the kernel sends `signum` to this process when its parent
    (the thread that forked it) ends; kept across execve(2)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def child_init() -> None:
    """First thing in a child's entry point: die with the parent (when started by
    `protolab.net.processes`); SIGINT, SIGTERM, SIGHUP end `wait_for_stop()` instead of raising."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent:
        # SIGKILL: nobody reads this child's output any more, and it keeps nothing unwritten.
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != int(parent):  # the parent died before prctl: the kernel won't tell
            os._exit(0)
    _stop.clear()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: _stop.set())


_stop = threading.Event()


def wait_for_stop() -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP (after `child_init`), then return quietly."""
    _stop.wait()
