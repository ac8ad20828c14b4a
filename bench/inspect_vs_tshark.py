"""protolab inspect against tshark on the same capture, in one run.

    python bench/inspect_vs_tshark.py [PACKETS] [--repeat N] [--before REV|none]
    (default 1,000,000 packets, 1 run each, the BEFORE revision)

Generates a pcap of mixed packets (TCP conversations with data, DNS queries and answers, QUIC-like
long and short header datagrams), then times `protolab inspect FILE` (the default table),
`--flows` and `--json`, each by both paths (the compiled fast path, PROTOLAB_INSPECT=compiled, and
the Python path, PROTOLAB_INSPECT=python; see protolab/analysis/fast_inspect.py), then
`tshark -r FILE` and `tshark -r FILE -q -z conv,tcp`, all writing to /dev/null, and prints
packets/s, the ratio to tshark (the conversation table for --flows, `tshark -r` for the others),
and each one's peak memory (max RSS of the child process). Each child's CPU time (user + system)
is printed too, and the rates are also given per CPU second: on a machine that other work shares,
wall time says more about the neighbours than about the code. --repeat N runs every command N
times, in turn, and keeps each one's run of least CPU time (the same for tshark as for protolab).
The Python path's table is timed a second time by the code of before issue 21 (`--before REV`,
default BEFORE: main before the issue's first merge), taken from this checkout's git history
into a temporary folder, so that "3x today's" is a ratio of two runs of the same script on the
same machine (`--before none` skips it: it is the slowest run, ~2 minutes for 1M packets).
The last lines say, from these figures, where each of the issue's goals stands. Where the
extension is not built (or declines the capture) its rows say so instead of a figure, and a
before that cannot be taken from git says why. The issue's goals: compiled >= 10x `tshark -r`
(table), >= 5x the conversation table (--flows), <= 300 MB; the Python table >= 3x the code of
before.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protolab.wire.pcap import LINKTYPE_ETHERNET, Record, write_pcap  # noqa: E402


def _templates() -> dict[str, bytes]:
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    c, s = IP(src="10.1.0.2", dst="10.1.0.1"), IP(src="10.1.0.1", dst="10.1.0.2")
    quic_long = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + b"D" * 8 + bytes([8]) + \
        b"S" * 8 + bytes(1200)
    quic_short = bytes([0x43]) + b"S" * 8 + bytes(60)
    return {
        "syn": bytes(Ether() / c / TCP(sport=40000, dport=443, flags="S", seq=1)),
        "synack": bytes(Ether() / s / TCP(sport=443, dport=40000, flags="SA", seq=9, ack=2)),
        "data": bytes(Ether() / c / TCP(sport=40000, dport=443, flags="PA", seq=2, ack=10)
                      / (b"x" * 100)),
        "ack": bytes(Ether() / s / TCP(sport=443, dport=40000, flags="A", seq=10, ack=102)),
        "query": bytes(Ether() / c / UDP(sport=50000, dport=53)
                       / DNS(id=1, qd=DNSQR(qname="www.example.com."))),
        "answer": bytes(Ether() / s / UDP(sport=53, dport=50000)
                        / DNS(id=1, qr=1, qd=DNSQR(qname="www.example.com."),
                              an=DNSRR(rrname="www.example.com.", rdata="192.0.2.7"))),
        "quic_long": bytes(Ether() / c / UDP(sport=51000, dport=4433) / quic_long),
        "quic_short": bytes(Ether() / c / UDP(sport=51000, dport=4433) / quic_short),
    }


def _packets(n: int) -> Iterator[Record]:
    t = _templates()
    # offsets: Ethernet 14 + IPv4 20: TCP ports at 34/36, seq at 38, ack at 42; UDP ports at 34/36;
    # DNS id at 42.
    t0 = 1_700_000_000.0
    i = 0
    conv = 0
    while i < n:
        conv += 1
        port = 1024 + conv % 60000
        seq = (conv * 7919) & 0xFFFFFFFF
        for name in ("syn", "synack", "data", "ack", "data", "ack"):
            if i >= n:
                return
            b = bytearray(t[name])
            client_is_src = name in ("syn", "data")
            struct.pack_into("!H", b, 34 if client_is_src else 36, port)
            if name == "syn":
                struct.pack_into("!I", b, 38, seq)
            yield Record(t0 + i * 1e-5, LINKTYPE_ETHERNET, bytes(b), len(b))
            i += 1
        for name in ("query", "answer", "quic_long", "quic_short", "quic_short"):
            if i >= n:
                return
            b = bytearray(t[name])
            if name in ("query", "answer"):
                struct.pack_into("!H", b, 34 if name == "query" else 36, port)
                struct.pack_into("!H", b, 42, conv & 0xFFFF)
            yield Record(t0 + i * 1e-5, LINKTYPE_ETHERNET, bytes(b), len(b))
            i += 1


def make_capture(path: str | os.PathLike[str], n: int) -> int:
    return write_pcap(path, _packets(n))


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int] | str:
    """(wall seconds, CPU seconds, peak RSS in bytes) of one run of `cmd`, or why it failed
    (its last line on stderr: the compiled path not built, or declining the capture)."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE, env=env)
        err = proc.stderr.read() if proc.stderr else b""
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        lines = err.decode(errors="replace").strip().splitlines() or ["no message"]
        return f"failed: {lines[-1]}"
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def _arguments(argv: list[str]) -> tuple[int, int, str | None]:
    """(packets, repeats, the revision of before or None) from [PACKETS] [--repeat N]
    [--before REV|none]."""
    rest = list(argv)
    repeat = int(_option(rest, "--repeat") or 1)
    before = _option(rest, "--before") or BEFORE
    return ((int(rest[0]) if rest else 1_000_000), max(1, repeat),
            None if before == "none" else before)


def _option(rest: list[str], name: str) -> str | None:
    """The value after `name` in `rest` (both taken out of it), or None."""
    if name not in rest:
        return None
    at = rest.index(name)
    value = rest[at + 1]
    del rest[at:at + 2]
    return value


#: main before issue 21's first merge (6b43b66 "Merge fast"): the Python path the issue timed
BEFORE = "39e74cd09d0e5ad03c3325ea27e848f35ba7775c"


def _before_tree(revision: str, into: Path) -> Path | str:
    """The protolab package of `revision`, from this checkout's git history, in `into`; or why
    it cannot be had (no git, not a checkout, no such revision)."""
    git = shutil.which("git")
    if git is None:
        return "git not found"
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run([git, "-C", str(root), "archive", revision, "protolab"],
                             capture_output=True)
    if archive.returncode != 0:
        why = archive.stderr.decode(errors="replace").strip().splitlines() or ["git failed"]
        return f"no revision {revision} here: {why[-1]}"
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    where = "import protolab; print(protolab.__file__)"
    found = subprocess.run([sys.executable, "-P", "-c", where], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(into)}).stdout.strip()
    if not found.startswith(str(into)):  # the timed run must be the old code, seen to be
        return f"its package is not the one imported (found {found or 'none'})"
    return into


def _runs(capture: Path, tshark: str | None,
          before: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    runs: dict[str, tuple[list[str], dict[str, str]]] = {}
    for way in ("compiled", "python"):
        env = {**os.environ, "PROTOLAB_INSPECT": way}
        for view in ("", "--flows", "--json"):
            cmd = [sys.executable, "-m", "protolab", "inspect", str(capture), *view.split()]
            runs[f"{way} {view or 'table'}"] = (cmd, env)
    if before is not None:  # its package first on the path (-P: not the working folder's)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(before), *filter(None, [os.environ.get("PYTHONPATH")])])}
        runs[BEFORE_RUN] = ([sys.executable, "-P", "-m", "protolab", "inspect", str(capture)],
                            env)
    if tshark:
        runs["tshark -r"] = ([tshark, "-r", str(capture)], dict(os.environ))
        runs["tshark -q -z conv,tcp"] = ([tshark, "-r", str(capture), "-q", "-z", "conv,tcp"],
                                         dict(os.environ))
    return runs


BEFORE_RUN = "python table, before"


def _best(runs: dict[str, tuple[list[str], dict[str, str]]],
          repeat: int) -> dict[str, tuple[float, float, int] | str]:
    """Each command run `repeat` times, in turn: its run of least CPU time, or why it failed."""
    best: dict[str, tuple[float, float, int] | str] = {}
    for _ in range(repeat):
        for name, (cmd, env) in runs.items():
            got, had = _timed(cmd, env), best.get(name)
            if had is None or (isinstance(got, tuple) and (isinstance(had, str)
                                                           or got[1] < had[1])):
                best[name] = got
    return best


def _against(name: str) -> str:
    return "tshark -q -z conv,tcp" if name.endswith("--flows") else "tshark -r"


def _table(results: dict[str, tuple[float, float, int] | str], n: int) -> None:
    print(f"{'':28}{'seconds':>9}{'packets/s':>12}{'vs tshark':>11}{'CPU s':>8}"
          f"{'pkt/CPU s':>12}{'vs tshark':>11}{'peak RSS':>11}")
    for name, got in results.items():
        if isinstance(got, str):
            print(f"{name:28}{got}")
            continue
        secs, cpu, rss = got
        base = results.get(_against(name)) if not name.startswith("tshark") else None
        base = base if isinstance(base, tuple) else None
        ratio = f"{base[0] / secs:.2f}x" if base else "-"
        cpu_ratio = f"{base[1] / cpu:.2f}x" if base else "-"
        print(f"{name:28}{secs:9.2f}{n / secs:12,.0f}{ratio:>11}{cpu:8.2f}{n / cpu:12,.0f}"
              f"{cpu_ratio:>11}{rss / 1e6:9.0f} MB")


#: the issue's goals: (run, what it is held against, the ratio asked for, in CPU time)
GOALS = (("compiled table", 10.0), ("compiled --flows", 5.0))
PYTHON_GOAL = 3.0  #: the Python table against the code of before (`BEFORE_RUN`), in CPU time


def _goals(results: dict[str, tuple[float, float, int] | str], n: int) -> None:
    """Where each goal stands, from the figures above (CPU time; memory <= 300 MB)."""
    for name, want in GOALS:
        got, base = results.get(name), results.get(_against(name))
        if not (isinstance(got, tuple) and isinstance(base, tuple)):
            print(f"goal {name}: not measured")
            continue
        ratio, met = base[1] / got[1], base[1] / got[1] >= want and got[2] <= 300e6
        print(f"goal {name} >= {want:.0f}x {_against(name)}: {ratio:.2f}x, "
              f"{got[2] / 1e6:.0f} MB -> {'met' if met else 'NOT met'}")
    got, before = results.get("python table"), results.get(BEFORE_RUN)
    if not (isinstance(got, tuple) and isinstance(before, tuple)):
        print(f"goal python table >= {PYTHON_GOAL:.0f}x the code of before: not measured")
        return
    ratio = before[1] / got[1]
    print(f"goal python table >= {PYTHON_GOAL:.0f}x the code of before: {n / got[1]:,.0f} "
          f"against {n / before[1]:,.0f}/CPU s = {ratio:.2f}x -> "
          f"{'met' if ratio >= PYTHON_GOAL else 'NOT met'}")


def main() -> None:
    n, repeat, revision = _arguments(sys.argv[1:])
    tshark = shutil.which("tshark")
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "mixed.pcap"
        start = time.perf_counter()
        make_capture(capture, n)
        print(f"generated {n:,} packets ({capture.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - start:.1f} s; each command's best of {repeat}")
        before = _before_tree(revision, Path(tmp) / "before") if revision else None
        if isinstance(before, str):
            print(f"{BEFORE_RUN}: not run: {before}")
        results = _best(_runs(capture, tshark, before if isinstance(before, Path) else None),
                        repeat)
    _table(results, n)
    if not tshark:
        print("tshark not found: no comparison (apt-get install tshark)")
    _goals(results, n)


if __name__ == "__main__":
    main()
