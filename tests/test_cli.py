"""The command line: fast help, one-line errors, inspect on the reference capture."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from protolab.analysis import fast_inspect
from protolab.cli import SUBCOMMANDS, build_parser

from conftest import ROOT, require, run_cli

HEAVY = ("scapy", "aioquic", "dns", "tabulate", "pyroute2", "wsproto", "redis")


@pytest.mark.parametrize("args", [["--help"], ["dns-demo", "--help"], ["inspect", "--help"],
                                  ["doctor", "--help"]])
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


def test_the_subcommands_are_their_parsers() -> None:
    """SUBCOMMANDS' names are the parsers' names, in --help's order, and each alone builds the
    very parser it is among all (what `main` builds to run one)."""
    every = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert list(every) == list(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        alone = next(a for a in build_parser(name)._actions if a.dest == "command").choices
        assert list(alone) == [name]
        assert alone[name].format_help() == every[name].format_help()


def _parsed(parser_of, argv: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            got = vars(parser_of(argv).parse_args(argv))
        except SystemExit as exc:
            got = exc.code
    return got, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", [
    ["inspect"], ["inspect", "x.pcap", "--bogus"], ["inspect", "x.pcap", "--limit", "0"],
    ["inspect", "x.pcap", "--flows", "--flow", "2"], ["inspect", "-h"], ["inspect", "x.pcap"],
    ["inspect", "x.pcap", "--version"], ["dns-demo", "--queries", "0"], ["doctor", "extra"],
    ["check", "--help"]])
def test_a_line_parses_alike_by_its_subcommand_alone(argv) -> None:
    """What `main` prints and returns for a line parsed by its subcommand's parser alone is what
    the parser of every subcommand makes of it: the values, the usage errors, the help."""
    alone = _parsed(lambda a: build_parser(a[0]), argv)
    assert alone == _parsed(lambda a: build_parser(), argv)
    assert alone[1] or alone[2] or isinstance(alone[0], dict)  # it did parse, or said why not


#: what a run of `inspect` the compiled path prints must not import: the Python path's
#: annotators (every protolab.analysis.annotate*), its rows and packet decoder, the libraries they
#: decode with (dnspython: only `dns.version`, which says whether the compiled path's copy of
#: its names is this dnspython's), and `dataclasses` (it imports inspect, ast and dis: ~10 ms)
NOT_ON_THE_COMPILED_PATH = ("protolab.analysis.inspect", "protolab.analysis.flows",
                            "protolab.analysis.facts", "protolab.wire.packets",
                            "protolab.protocols.tcp", "dataclasses", "scapy", "aioquic",
                            "wsproto", "h11", "tabulate")


def _on_the_python_path(module: str) -> bool:
    top = module.split(".")[0]
    if top == "dns":
        return module not in ("dns", "dns.version")
    return (module.startswith("protolab.analysis.annotate") or module in NOT_ON_THE_COMPILED_PATH
            or top in NOT_ON_THE_COMPILED_PATH)


def _inspect_modules(args: list[str], which: str) -> tuple[str, object, list[str]]:
    """`protolab inspect ARGS` under PROTOLAB_INSPECT=`which`, in a fresh interpreter: what it
    printed, its exit code, and every module it had imported at the end."""
    argv = ["protolab", "inspect", str(ROOT / "captures" / args[0]), *args[1:]]
    code = (f"import json, sys, runpy; sys.argv = {argv!r}\n"
            "try:\n    runpy.run_module('protolab', run_name='__main__')\n"
            "except SystemExit as exc:\n    code = exc.code\n"
            "print(json.dumps([code, sorted(sys.modules)]), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, fast_inspect.ENV: which})
    exit_code, modules = json.loads(out.stderr.splitlines()[-1])
    return out.stdout, exit_code, modules


@pytest.mark.parametrize("args", [["dns-demo.ref.pcap"], ["quic-demo.ref.pcap", "--flows"],
                                  ["cache-demo.ref.pcap", "--json"]])
def test_inspect_the_compiled_path_prints_imports_no_annotator(args) -> None:
    """The start-up of a compiled run holds (counted in modules, not timed): the CLI reads its
    options from a light module and tries the compiled path before importing the Python path;
    the C has its DNS names built in (fast_dns_names.h)."""
    require(fast_inspect.extension() is not None, "the compiled extension is not built")
    printed, exit_code, modules = _inspect_modules(args, "compiled")
    assert printed and exit_code == 0  # the compiled path printed it (or it would exit 2)
    assert "protolab.analysis._fastinspect" in modules
    assert [m for m in modules if _on_the_python_path(m)] == []


def test_the_python_path_imports_what_the_compiled_path_must_not() -> None:
    """The list above is not empty words: PROTOLAB_INSPECT=python imports them (the annotators,
    dnspython's parsers)."""
    printed, exit_code, modules = _inspect_modules(["dns-demo.ref.pcap"], "python")
    assert printed and exit_code == 0
    assert {"protolab.analysis.annotate_dns", "protolab.analysis.inspect", "dns.rdata",
            "wsproto", "dataclasses"} <= {m for m in modules if _on_the_python_path(m)}


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


# -- a fault run writes its own capture (issue 13 item 5) ------------------------------------------


@pytest.mark.parametrize("demo,faults", [
    ("dns-demo", ["--delay", "50ms"]), ("udp-demo", ["--drop", "0.2"]),
    ("quic-demo", ["--netem", "--drop", "0.1"]), ("tcp-demo", [])])
def test_a_fault_run_has_its_own_default_capture(demo, faults) -> None:
    from protolab.cli import _faults
    from protolab.course.live import demo_pcap

    args = build_parser().parse_args([demo, *faults])
    active = bool(faults)
    if active:
        assert _faults(args) is not None
    want = f"captures/{demo}-faults.pcap" if active else None
    assert demo_pcap(demo, args.pcap, active) == want
    args = build_parser().parse_args([demo, *faults, "--pcap", "mine.pcap"])
    assert demo_pcap(demo, args.pcap, active) == "mine.pcap"


@pytest.mark.parametrize("demo,lab", [("dns-demo", "03"), ("udp-demo", "02")])
def test_a_fault_run_leaves_the_graded_capture_alone(demo, lab, tmp_path,
                                                     capture_rights) -> None:
    """A learner's capture and answers, then `DEMO --delay 50ms`: check still grades 6/6."""
    import hashlib
    import os
    import shutil

    from protolab.course.grading import facts, find

    (tmp_path / "captures").mkdir()
    graded = tmp_path / "captures" / f"{demo}.pcap"
    shutil.copy(ROOT / "captures" / f"{demo}.ref.pcap", graded)
    right = facts(find(lab), graded)
    answers = tmp_path / "answers.toml"
    answers.write_text("".join(f'{k} = "{v}"\n' for k, v in right.items()))
    before = hashlib.sha256(graded.read_bytes()).hexdigest()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "protolab", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    run = cli(demo, "--delay", "50ms")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert (tmp_path / "captures" / f"{demo}-faults.pcap").stat().st_size > 24
    assert f"captures/{demo}-faults.pcap" in run.stdout
    assert hashlib.sha256(graded.read_bytes()).hexdigest() == before
    out = cli("check", lab, "--answers", str(answers))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"graded against captures/{demo}.pcap (written " in out.stdout
    assert f"score: {len(right)}/{len(right)}" in out.stdout and "warning" not in out.stdout


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


@pytest.mark.parametrize("path", ["python", "compiled"])
@pytest.mark.parametrize("capture", ["tcp-demo.ref.pcap", "udp-demo.ref.pcap"])
def test_a_stdout_that_cannot_be_written_is_one_line(path, capture) -> None:
    """`> /dev/full`: no space left on stdout's device is said in one line, exit 1, by both of
    inspect's paths (a big output fails in a write, a small one in the last flush)."""
    if path == "compiled":
        require(fast_inspect.extension() is not None, "the compiled extension is not built")
    with open("/dev/full", "wb") as full:
        ran = subprocess.run([sys.executable, "-m", "protolab", "inspect",
                              str(ROOT / "captures" / capture)], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=60,
                             env={**os.environ, fast_inspect.ENV: path})
    assert (ran.returncode, ran.stderr) == (
        1, "protolab: error: cannot write the output: No space left on device\n")


def test_a_closed_stdout_is_one_line() -> None:
    ran = subprocess.run([sys.executable, "-m", "protolab", "inspect",
                          str(ROOT / "captures/udp-demo.ref.pcap")], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, timeout=60,
                         preexec_fn=lambda: os.close(1))
    assert (ran.returncode, ran.stderr) == (1, "protolab: error: no standard output (it is "
                                               "closed)\n")


def test_lines_written_many_at_once_are_the_lines_written_one_by_one(capsys, monkeypatch) -> None:
    """cli.Lines takes `inspect`'s rows a batch at a time (`many`): what it writes, and when
    (SIZE lines kept at most), is what the same lines written one call each make."""
    from protolab.cli import Lines

    monkeypatch.setattr(Lines, "SIZE", 4)
    texts = [f"row {n}" for n in range(11)]
    one_by_one, at_once = Lines(), Lines()
    for text in texts:
        one_by_one(text)
    written = capsys.readouterr().out
    assert written == "".join(f"{t}\n" for t in texts[:8])  # two writes of SIZE lines
    one_by_one.flush()
    assert capsys.readouterr().out == "row 8\nrow 9\nrow 10\n"
    at_once.many(texts[:3])
    assert capsys.readouterr().out == ""  # fewer than SIZE: kept
    at_once.many(texts[3:6])
    assert capsys.readouterr().out == "".join(f"{t}\n" for t in texts[:6])
    at_once("")
    at_once.flush()
    assert capsys.readouterr().out == "\n"
