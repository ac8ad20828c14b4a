"""`protolab doctor` tells the truth about the machine, including what is missing.

Each verdict is checked against a fact the test finds out for itself: the files on PATH, the
capability bits in /proc/self/status, an import, a bind, the tracepoint's file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from protolab.course.doctor import PACKAGES, TOOLS, Check, checks, report

from conftest import STRICT, run_cli, without_net_raw

CAP_NET_RAW = 13  # linux/capability.h
#: the module each package installs (its distribution name differs for some)
MODULES = {"dnspython": "dns", "PyJWT": "jwt"}


def executable_on(path: str, tool: str) -> bool:
    """Is there a file `tool` the user may execute in a directory of `path`? (POSIX execvp)"""
    for d in path.split(os.pathsep):
        f = Path(d or ".") / tool
        if f.is_file() and os.access(f, os.X_OK):
            return True
    return False


def has_net_raw() -> bool:
    """CAP_NET_RAW in this process's effective set, as the kernel reports it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_RAW & 1)
    raise AssertionError("no CapEff line in /proc/self/status")


def can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def facts(path: str) -> dict[str, bool]:
    """What the test itself finds on this machine, by the doctor's check names."""
    found = {tool: executable_on(path, tool) for tool in TOOLS}
    found |= {pkg: importlib.util.find_spec(MODULES.get(pkg, pkg)) is not None
              for pkg in PACKAGES}
    found["python"] = sys.version_info[:2] >= (3, 11)
    found["loopback interface"] = "lo" in {name for _, name in socket.if_nameindex()}
    if sys.platform == "linux":
        found["capture (root or CAP_NET_RAW)"] = has_net_raw()
    found["kernel TCP state record (tracefs)"] = os.geteuid() == 0 and Path(
        "/sys/kernel/tracing/events/sock/inet_sock_set_state").exists()
    found["127.0.0.2 (QUIC migration)"] = can_bind("127.0.0.2")
    found["free ports on 127.0.0.1"] = can_bind("127.0.0.1")
    return found


def status_column(text: str, results: list[Check]) -> dict[str, str]:
    """The first column the report prints for each check ("ok", "MISSING" or "-")."""
    lines = text.splitlines()
    out = {}
    for c in results:
        [line] = [x for x in lines if x.split(None, 1)[1:] and
                  x.split(None, 1)[1].startswith(c.name + "  ")]
        out[c.name] = line.split(None, 1)[0]
    return out


def test_every_verdict_agrees_with_what_the_machine_shows() -> None:
    results = checks()
    text, ready = report(results)
    known = facts(os.environ.get("PATH", ""))  # after checks(): it may mount tracefs
    shown = status_column(text, results)
    by_name = {c.name: c for c in results}
    assert set(known) <= set(by_name)
    for name, present in known.items():
        assert shown[name] == ("ok" if present else "MISSING"), (name, text)
    needed_missing = [c.name for c in results if c.needed and shown[c.name] != "ok"]
    assert ready == (not needed_missing)
    if STRICT:  # CI installs every tool and runs as root: everything must be there
        assert ready, text


def test_a_path_with_some_tools_reports_exactly_those(tmp_path) -> None:
    present, not_executable = "tshark", "dig"
    tool = tmp_path / present
    tool.write_text("#!/bin/sh\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    (tmp_path / not_executable).write_text("#!/bin/sh\n")  # there, but no x bit: not a tool
    (tmp_path / not_executable).chmod(0o644)
    results = {c.name: c for c in checks({"PATH": str(tmp_path)})}
    for name in TOOLS:
        assert results[name].ok == executable_on(str(tmp_path), name), name
    assert results[present].ok and results[present].detail == str(tool)
    assert not results[not_executable].ok  # not even root may execute a file with no x bit


def test_a_path_without_tools_is_reported_with_the_fix(tmp_path) -> None:
    results = {c.name: c for c in checks({"PATH": str(tmp_path)})}
    for tool in TOOLS:
        assert not results[tool].ok and results[tool].fix == TOOLS[tool][1]
    text, ready = report(list(results.values()))
    assert not ready
    assert status_column(text, list(results.values()))["tshark"] == "MISSING"
    assert "sudo apt-get install tshark" in text


def test_the_cli_exits_non_zero_when_something_is_missing(tmp_path) -> None:
    out = run_cli("doctor", env={"PATH": str(tmp_path)})
    assert out.returncode == 1
    line = next(x for x in out.stdout.splitlines() if " tshark " in x)
    assert line.startswith("MISSING") and "sudo apt-get install tshark" in line


@pytest.mark.skipif(sys.platform != "linux", reason="capabilities are Linux's")
def test_without_cap_net_raw_capture_is_missing_and_the_cli_fails() -> None:
    prefix = without_net_raw()
    code = ("import pathlib; print([x for x in pathlib.Path('/proc/self/status').read_text()"
            ".splitlines() if x.startswith('CapEff:')][0].split()[1])")
    capeff = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=30, check=True).stdout.strip()
    assert not int(capeff, 16) >> CAP_NET_RAW & 1  # the fact: this process has no CAP_NET_RAW
    out = run_cli("doctor", prefix=prefix)
    assert out.returncode == 1
    line = next(x for x in out.stdout.splitlines() if "capture (root or CAP_NET_RAW)" in x)
    assert line.startswith("MISSING")


FAST_PATH = "inspect's compiled fast path"


def compiled_extension() -> str | None:
    """The file of the compiled extension this interpreter imports, or None (found by importing
    it, as `inspect` would)."""
    try:
        module = importlib.import_module("protolab.analysis._fastinspect")
    except ImportError:
        return None
    return module.__file__


@pytest.mark.parametrize("value", ["auto", "compiled", "python", "fast"])
def test_doctor_says_which_path_inspect_takes(value) -> None:
    out = run_cli("doctor", env={"PROTOLAB_INSPECT": value})
    assert "Traceback" not in out.stderr, out.stderr
    [line] = [x for x in out.stdout.splitlines() if f" {FAST_PATH}  " in x]
    status, detail = line.split(None, 1)[0], line.split(FAST_PATH, 1)[1].strip()
    built = compiled_extension()
    if value == "python":
        assert (status, detail.startswith("Python path (PROTOLAB_INSPECT=python)")) == ("-", True)
    elif value == "fast":  # inspect refuses the value in one line: doctor shows the same line
        assert status == "-" and "PROTOLAB_INSPECT='fast': use auto, python or compiled" in detail
    elif built is not None:
        assert status == "ok" and detail.startswith(f"compiled fast path ({built})"), line
    else:
        assert status == "-" and "the compiled extension is not built" in detail, line
