"""The lb lab (`protolab lb`, worksheet 05): N backends of one design behind a balancer, and the
login/cart workflow through it, captured, showing which backend served each request.

Where state lives: in the backends (memory), in a shared store (SQLite, Redis) or in the request
(a JWT); the capture shows which, request by request. `captured_workflow` is the one workflow the
demo, the lb reference capture and the tests run.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from protolab.analysis.facts import Row
from protolab.labs.cluster import Cluster, Reply, demo_workflow, own_keys_removed, variants
from protolab.labs.output import capture_off_line, show_capture
from protolab.net.lb import Policy
from protolab.wire.capture import Capture, CaptureSummary
from protolab.wire.paths import default_capture_path

Out = Callable[[str], None]
Replies = list[tuple[str, str, Reply]]
Captured = Callable[[CaptureSummary, list[Row]], None]


def captured_workflow(cluster: Cluster, pcap: str | Path, enabled: bool = True,
                      out: Out | None = None) -> tuple[Capture, Replies]:
    """login → add item → view cart → profile through `cluster`'s balancer, captured on the
    balancer's and every backend's port into `pcap`; with `out`, who served each request."""
    ports = [cluster.address[1], *(p.port for p in cluster.procs.values())]
    with Capture(ports, pcap, enabled=enabled) as cap:
        if out is not None:
            if not cap.active:
                out(capture_off_line(cap.summary, "lb", "--no-capture"))
            out("A workflow through it (who served each request):")
        replies = demo_workflow(cluster)
        if out is not None:
            for method, path, r in replies:
                out(f"   {method} {path} → {r.backend} (pid {r.pid}): HTTP {r.status} "
                    f"{json_short(r.body)}")
    return cap, replies


def run_lb_demo(design: str, policy: str, redis: str, backends: int = 3, lb: str = "protolab",
                serve: bool = False, capture: bool = True, pcap: str | None = None,
                out: Out = print, captured: Captured | None = None) -> None:
    """`protolab lb`: the cluster, the workflow through it captured and annotated; `serve`
    keeps it up until Ctrl-C. `captured` is given the capture's summary and annotated rows
    once the workflow is shown (before serving). A balancer that is missing or does not start
    raises `BalancerError`."""
    with tempfile.TemporaryDirectory(prefix="protolab-lb-") as tmp:
        [variant] = variants([design], redis, tmp)
        log = (lambda line: out(f"   {line}")) if serve else None
        with own_keys_removed([variant]), \
                Cluster(variant, Policy(policy), n=backends, lb=lb, log=log) as cluster:
            _show_cluster(cluster, variant.name, policy, backends, lb, out)
            cap, _ = captured_workflow(cluster, pcap or default_capture_path("lb"),
                                       enabled=capture, out=out)
            rows = show_capture(cap.summary, out) if cap.active else []
            if captured is not None:
                captured(cap.summary, rows)
            if serve:
                host, port = cluster.address
                out(f"serving until Ctrl-C; try: curl -i -c jar -b jar -d "
                    f"'user=alice&password=wonderland' http://{host}:{port}/login")
                threading.Event().wait()


def _show_cluster(cluster: Cluster, name: str, policy: str, backends: int, lb: str,
                  out: Out) -> None:
    host, port = cluster.address
    out(f"{lb} balancer on http://{host}:{port}/ ({policy}) in front of {backends} '{name}' "
        f"backends: " + ", ".join(f"{b}=127.0.0.1:{p.port} (pid {p.pid})"
                                  for b, p in cluster.procs.items()))
    if lb != "protolab":
        out(f"{lb} configuration:\n" + cluster.lb.config)


def json_short(body: dict) -> str:
    """A response body in one short line, without its token."""
    text = json.dumps({k: v for k, v in body.items() if k != "token"})
    return text if len(text) < 90 else text[:87] + "..."
