"""`--netem`: the same faults below the sockets, by the kernel's `tc netem`, in a throwaway netns.

Where state lives: in the kernel of a network namespace made for one run — its own loopback
interface, whose netem queueing discipline holds delayed packets and draws which ones to drop,
duplicate or reorder. No process is told: the sockets above see only what netem lets through.
The namespace (and with it every socket, qdisc and packet of the run) is removed at the end, even
when the run fails.

Differences from the userspace proxy, said to the learner: netem on `lo` hits both directions
(every packet leaves through `lo`), has no "first N only" rule, and draws from the kernel's own
random numbers, so a run cannot be repeated exactly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from protolab.protocols.faults import FaultPlan

ENV = "PROTOLAB_NETEM"  #: set inside the namespace: the netem rule the run is under


class NetemError(Exception):
    """netem cannot run here: one line with the reason and the way out."""


def netem_args(plan: FaultPlan) -> list[str]:
    """`tc qdisc ... netem` arguments for the plan (tc-netem(8))."""
    if plan.count:
        raise NetemError("--fault-count works with the userspace proxy only; netem has no "
                         "'first N datagrams' rule")
    if plan.direction != "both":
        raise NetemError("--direction works with the userspace proxy only; netem on lo hits "
                         "both directions")
    args: list[str] = []
    delay = plan.delay or (0.01 if plan.reorder else 0.0)  # netem reorders by not delaying some
    if delay:
        args += ["delay", f"{delay * 1000:g}ms"]
    if plan.drop:
        args += ["loss", f"{plan.drop * 100:g}%"]
    if plan.duplicate:
        args += ["duplicate", f"{plan.duplicate * 100:g}%"]
    if plan.reorder:
        args += ["reorder", f"{plan.reorder * 100:g}%"]
    return args


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def netem_denied_reason() -> str | None:
    """Why `--netem` cannot run here, or None. Asks the kernel in a scratch namespace."""
    if os.geteuid() != 0:
        return "needs root (a network namespace and a qdisc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs '{tool}' (sudo apt-get install iproute2)"
    ns = f"protolab-probe-{os.getpid()}"
    made = _run("ip", "netns", "add", ns)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        probe = _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root",
                     "netem", "delay", "1ms")
        if probe.returncode != 0:
            why = probe.stderr.strip().splitlines()[0] if probe.stderr.strip() else "tc failed"
            return (f"this kernel has no netem qdisc (tc: {why!r}; it needs "
                    f"CONFIG_NET_SCH_NETEM)")
        return None
    finally:
        _run("ip", "netns", "del", ns)


def run_in_namespace(plan: FaultPlan, argv: Sequence[str]) -> int:
    """Run `python -m protolab ARGV` in a new namespace whose lo has the plan as netem rules;
    remove the namespace afterwards. Returns the run's exit status."""
    rules = netem_args(plan)
    denied = netem_denied_reason()
    if denied:
        raise NetemError(f"--netem: {denied}; drop --netem to use the userspace fault proxy")
    ns = f"protolab-{os.getpid()}"
    made = _run("ip", "netns", "add", ns)
    if made.returncode != 0:
        raise NetemError(f"--netem: cannot create namespace {ns}: {made.stderr.strip()}")
    try:
        for cmd in (("ip", "link", "set", "lo", "up"),
                    ("ip", "addr", "add", "127.0.0.2/8", "dev", "lo"),
                    ("tc", "qdisc", "add", "dev", "lo", "root", "netem", *rules)):
            done = _run("ip", "netns", "exec", ns, *cmd)
            if done.returncode != 0 and "File exists" not in done.stderr:
                raise NetemError(f"--netem: {' '.join(cmd)}: {done.stderr.strip()}")
        env = {**os.environ, ENV: "tc qdisc add dev lo root netem " + " ".join(rules)}
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "protolab",
                               *argv], env=env, timeout=300).returncode
    finally:
        _run("ip", "netns", "del", ns)


def namespaces() -> list[str]:
    """The namespaces `--netem` runs made that exist now (protolab-PID, protolab-probe-PID; none
    should outlive a run). A topology's hosts (protolab-RUN-HOST) are not `--netem`'s."""
    import re

    done = _run("ip", "netns", "list")
    return [name for name in (line.split()[0] for line in done.stdout.splitlines() if line)
            if re.fullmatch(r"protolab-(probe-)?\d+", name)]
