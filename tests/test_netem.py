"""`--netem`: faults below the sockets with tc netem, in a namespace made and removed per run."""

from __future__ import annotations

import os

import pytest

from protolab.net.netem import NetemError, namespaces, netem_args, netem_denied_reason
from protolab.protocols.faults import FaultPlan

from conftest import require, require_tool, run_cli


def test_netem_rules_follow_the_plan() -> None:
    assert netem_args(FaultPlan(drop=0.2, delay=0.05, duplicate=0.1)) == [
        "delay", "50ms", "loss", "20%", "duplicate", "10%"]
    # netem reorders by sending some packets without the delay: reorder needs one
    assert netem_args(FaultPlan(reorder=0.5)) == ["delay", "10ms", "reorder", "50%"]


@pytest.mark.parametrize("plan", [FaultPlan(drop=1.0, count=1),
                                  FaultPlan(drop=1.0, direction="to-client")])
def test_rules_netem_cannot_express_are_refused(plan) -> None:
    with pytest.raises(NetemError):
        netem_args(plan)


def test_netem_runs_the_demo_in_its_own_namespace_or_says_exactly_why_not() -> None:
    require(os.geteuid() == 0, "--netem needs root")
    require_tool("ip")
    require_tool("tc")
    before = namespaces()
    out = run_cli("udp-demo", "--no-capture", "--delay", "20ms", "--netem", timeout=120)
    denied = netem_denied_reason()
    if denied is None:  # a kernel with netem: the faults are below the sockets
        assert out.stdout.startswith("faults below the sockets"), out.stdout + out.stderr
        assert "netem delay 20ms" in out.stdout.splitlines()[0]
        assert "workflow continued" in out.stdout
    else:  # this kernel has none: one line that says why, and how to go on
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert denied in out.stderr and "userspace fault proxy" in out.stderr
    assert namespaces() == before  # nothing outlives the run


def test_netem_without_a_fault_is_refused() -> None:
    out = run_cli("dns-demo", "--netem")
    assert out.returncode == 2 and "--netem needs a fault" in out.stderr
