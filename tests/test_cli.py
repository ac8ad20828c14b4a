"""The command line: fast help, one-line errors, inspect on the reference capture."""

from __future__ import annotations

import subprocess
import sys

import pytest

from protolab.cli import build_parser

from conftest import ROOT, run_cli

HEAVY = ("scapy", "aioquic", "dns", "tabulate")


@pytest.mark.parametrize("args", [["--help"], ["dns-demo", "--help"], ["inspect", "--help"]])
def test_help_imports_nothing_heavy(args) -> None:
    code = (f"import sys, runpy; sys.argv = ['protolab', *{args!r}]\n"
            "try:\n    runpy.run_module('protolab', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "usage: protolab" in out.stdout
    assert out.stdout.strip().endswith("HEAVY []")


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description, name
        assert p.format_help().startswith(f"usage: protolab {name}")


@pytest.mark.parametrize("args,needle", [
    (["inspect", "/no/such/file.pcap"], "cannot open /no/such/file.pcap"),
    (["dns-demo", "--queries", "0"], "must be 1..200"),
    (["dns-demo", "--port", "http"], "not a port number"),
])
def test_bad_input_is_one_line(args, needle) -> None:
    out = run_cli(*args)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert needle in last and "Traceback" not in out.stderr


def test_a_garbage_file_is_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x01\x02\x03" * 100)
    out = run_cli("inspect", str(bad))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "not a pcap file" in out.stderr


def test_a_busy_port_is_one_line() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = run_cli("dns-demo", "--no-capture", "--port", str(port))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"protolab: error: cannot run 127.0.0.1:{port}: "
                                  f"Address already in use")


def test_inspect_the_reference_capture() -> None:
    ref = ROOT / "captures" / "dns-demo.ref.pcap"
    out = run_cli("inspect", str(ref))
    assert out.returncode == 0, out.stderr
    assert "where state lives" in out.stdout
    assert "client app memory matches it to query" in out.stdout
    assert "ICMP port unreachable" in out.stdout


def test_a_privileged_port_without_the_right_says_which_ports_need_root() -> None:
    import os

    from conftest import require, require_tool

    start = int(open("/proc/sys/net/ipv4/ip_unprivileged_port_start").read())
    require(start > 80, f"port 80 is not privileged here (ip_unprivileged_port_start={start})")
    require(os.geteuid() == 0, "dropping CAP_NET_BIND_SERVICE with setpriv needs root")
    as_learner = (require_tool("setpriv"), "--bounding-set", "-net_bind_service",
                  "--inh-caps", "-net_bind_service")  # a user without the right to bind it
    out = run_cli("dns-demo", "--no-capture", "--port", "80", prefix=as_learner)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"protolab: error: cannot run 127.0.0.1:80: Permission denied (ports "
                          f"below {start} need root or CAP_NET_BIND_SERVICE: choose a port of "
                          f"{start} or more, or leave --port out for a free one)\n")
