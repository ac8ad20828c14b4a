"""A demo's live run as `protolab <demo>` makes it: where its capture goes, the replay of the
reference when capture is impossible here, and the annotated pcapng.

Where state lives: in the capture files under captures/ (or --pcap); a run with faults writes its
own (`DEMO-faults.pcap`), never the plain run's capture that `check` grades.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protolab.course.page import DemoPage

Out = Callable[[str], None]


class DemoError(Exception):
    """The run could not start or its file could not be written: one line for the user."""


def demo_pcap(demo: str, pcap: str | None, faults: bool) -> str | None:
    """Where a demo's capture goes: --pcap, else a fault run's own default
    (captures/DEMO-faults.pcap), never the plain run's capture that `check` grades."""
    if pcap or not faults:
        return pcap
    from protolab.wire.paths import default_capture_path

    return str(default_capture_path(demo, faults=True))


def run_live(demo: str, run: Callable[..., Any], prefix: str, capture: bool, pcap: str | None,
             pcapng: str | None, out: Out = print, page: DemoPage | None = None,
             **kwargs: object) -> Any:
    """Run `demo` with the common options; an OSError (a busy port, an unwritable --pcap)
    becomes a `DemoError` starting with `prefix` (with a hint when `port`, among `kwargs`, is
    one only root may bind). When capture was wanted but is impossible
    here, the reference capture is replayed after the live run, so the learner still sees the
    packets. With `page` (--html) the run's output goes through it, and the page is written
    last."""
    out = page.out if page is not None else out
    netem = os.environ.get("PROTOLAB_NETEM")
    if netem:
        out(f"faults below the sockets, in a network namespace made for this run: {netem}")
    target = demo_pcap(demo, pcap, kwargs.get("faults") is not None)
    try:
        result = run(capture=capture, pcap=target, out=out, **kwargs)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise DemoError(f"{prefix}: {exc.strerror or exc}{where}"
                        f"{privileged_port_hint(exc, int(kwargs.get('port') or 0))}") from None
    summary = result.capture
    replayed = None
    if summary is not None and summary.off_reason and pcapng:
        out(f"--pcapng: nothing written to {pcapng}, capture is off")
    if summary is not None and summary.off_reason and capture:
        from protolab.course.replay import replay

        out("")
        replayed = replay(demo, out=out, why=f"capture is impossible here: {summary.off_reason}")
    elif summary is not None and not summary.off_reason and summary.path and pcapng:
        write_pcapng(demo, result, pcapng, out)
    if page is not None:
        page.write_run(summary, result.rows, replayed)
    return result


def privileged_port_hint(exc: OSError, port: int) -> str:
    """Why binding `port` was refused, when it is a port only root may bind."""
    if exc.errno != errno.EACCES or not port:
        return ""
    try:  # the kernel's own limit: ports below it need CAP_NET_BIND_SERVICE (default 1024)
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            start = int(f.read())
    except (OSError, ValueError):
        start = 1024
    if port >= start:
        return ""
    return (f" (ports below {start} need root or CAP_NET_BIND_SERVICE: choose a port of "
            f"{start} or more, or leave --port out for a free one)")


def write_pcapng(demo: str, result: Any, target: str, out: Out = print) -> None:
    """Save the capture just written as annotated pcapng (the TLS secrets inside for QUIC)."""
    from protolab.course.reference import save_pcapng

    pcap = result.capture.path
    server = getattr(result, "server", None) if demo == "dns-demo" else None
    try:
        n, secrets = save_pcapng(demo, pcap, target, getattr(result, "keylog", None),
                                 server[1] if server else None)
    except OSError as exc:
        raise DemoError(f"cannot write {target}: {exc.strerror or exc}") from None
    extra = " with the TLS secrets inside (decrypts alone)" if secrets else ""
    out(f"annotated pcapng: {n} packets, each note a packet comment{extra} → {target} "
        f"(open this one in Wireshark; the classic pcap stays at {pcap})")
