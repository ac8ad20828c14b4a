"""inspect's two paths print the same bytes: the differential test of issue 21.

Every capture here is run through the real CLI (`protolab.cli.main`, in this process) three times:
PROTOLAB_INSPECT=python (the reference), =auto (what a user gets: the compiled path where it is
built and accepts the capture) and, where the extension is built, =compiled (the compiled path or
an error saying why not). stdout's bytes, stderr's text and the exit code must be the same; a
declined compiled run must print nothing and exactly one line of error. Inputs: the reference
captures, generated captures of every link type and file format the reader knows carrying every
protocol the annotator follows, a benchmark-shaped capture, damaged files, and a hypothesis
stream of fuzzed and damaged packets.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protolab.analysis import fast_inspect
from protolab.analysis.facts import Kind
from protolab.analysis.flows import MAX_TRACKED
from protolab.cli import main

from capture_builders import (
    ADDRESSES,
    FORMATS,
    LINKS,
    Packet,
    as_ipv6,
    capture_bytes,
    framed,
    ip_packets,
    reference_packets,
    story,
    tcp_segment,
)
from conftest import ROOT, require, run_cli

#: THE SWITCH: flip to True once the compiled path covers the benchmark's capture (issue 21:
#: bench/inspect_vs_tshark.py's make_capture). From then on, where the extension is built, the
#: compiled path declining the benchmark-shaped capture under any of OPTION_SETS is a failure
#: instead of a quiet fall back to the Python path.
COMPILED_MUST_ACCEPT_BENCHMARK = True
#: More inputs the compiled path must accept where it is built, as its coverage grows: a reference
#: capture's file name ("udp-demo.ref.pcap"), a generated one's ("ethernet-ipv4.pcap-usec").
COMPILED_MUST_ACCEPT: frozenset[str] = frozenset(
    f"{lab}.ref.{ext}" for lab in ("udp-demo", "dns-demo", "cache-demo", "quic-demo", "tcp-demo",
                                   "lb") for ext in ("pcap", "pcapng"))

OPTION_SETS: tuple[tuple[str, ...], ...] = (
    (), ("--json",), ("--flows",), ("--flows", "--json"), ("--wide",), ("--width", "200"),
    ("--limit", "7"), ("--dns-port", "5300"))
#: for the many generated captures: each view, both widths, the narrowest, and the port only
#: --dns-port makes DNS
GENERATED_OPTIONS = ((), ("--json",), ("--flows",), ("--flows", "--json"),
                     ("--wide", "--limit", "40"), ("--flows", "--wide"),
                     ("--dns-port", "5300", "--width", "60"))
DAMAGED_OPTIONS = ((), ("--json",), ("--flows",), ("--limit", "3"))

#: a longer hunt for differences than CI's: PROTOLAB_DIFFTEST_EXAMPLES=5000 (each property)
EXAMPLES = int(os.environ.get("PROTOLAB_DIFFTEST_EXAMPLES") or 0)

#: (input, options) -> "accepted" or the compiled path's reason to decline, for the report
#: written to $PROTOLAB_DIFFTEST_REPORT (a JSON file) at the end of the module
COVERAGE: dict[str, str] = {}


@dataclass(frozen=True)
class Ran:
    """What one `protolab inspect` run printed and returned."""

    stdout: bytes
    stderr: str
    code: int


def inspect(path: Path | str, options: tuple[str, ...], which: str,
            encoding: str = "utf-8") -> Ran:
    """`protolab inspect PATH OPTIONS` with PROTOLAB_INSPECT=`which`, stdout a byte stream in
    `encoding` that is not a terminal (as when piped), COLUMNS unset."""
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="replace")
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(fast_inspect.ENV, which)
        mp.delenv("COLUMNS", raising=False)
        mp.setattr(sys, "stdout", out)
        mp.setattr(sys, "stderr", err)
        try:
            code = main(["inspect", str(path), *options])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        out.flush()
        return Ran(out.buffer.getvalue(), err.getvalue(), code)


def declined(ran: Ran) -> bool:
    """A PROTOLAB_INSPECT=compiled run that did not take the compiled path (fast_inspect.run)."""
    return ran.code == 2 and f"{fast_inspect.ENV}=compiled" in ran.stderr


def built() -> bool:
    return fast_inspect.extension() is not None


def differences(path: Path | str, options: tuple[str, ...], name: str = "") -> list[str]:
    """What differs between the paths on this capture (nothing: []); records whether the
    compiled path accepted it."""
    python = inspect(path, options, "python")
    problems = [f"auto: {what}" for what in _diff(python, inspect(path, options, "auto"))]
    if built():
        compiled = inspect(path, options, "compiled")
        name = name or Path(path).name
        key = f"{name} {' '.join(options)}".strip()
        if declined(compiled):
            COVERAGE[key] = compiled.stderr.strip()
            if must_accept(name):
                problems.append(f"compiled declined what it must accept: {compiled.stderr}")
            if compiled.stdout or compiled.stderr.count("\n") != 1:
                problems.append(f"compiled declined but printed {compiled.stdout[:200]!r} "
                                f"{compiled.stderr!r}")
        else:
            COVERAGE[key] = "accepted"
            problems += [f"compiled: {what}" for what in _diff(python, compiled)]
    return [f"{name or path} {' '.join(options)}: {p}" for p in problems]


def must_accept(name: str) -> bool:
    return name in COMPILED_MUST_ACCEPT or (name == "benchmark" and COMPILED_MUST_ACCEPT_BENCHMARK)


def _diff(want: Ran, got: Ran) -> list[str]:
    out = []
    if got.code != want.code:
        out.append(f"exit {got.code}, Python's {want.code}")
    if got.stderr != want.stderr:
        out.append(f"stderr {got.stderr!r}, Python's {want.stderr!r}")
    if got.stdout != want.stdout:
        mine, theirs = got.stdout.splitlines(), want.stdout.splitlines()
        at = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                  min(len(mine), len(theirs)))
        out.append(f"stdout line {at + 1}: {mine[at:at + 1]!r}, Python's {theirs[at:at + 1]!r} "
                   f"({len(mine)} and {len(theirs)} lines)")
    return out


@pytest.fixture(scope="module", autouse=True)
def coverage_report():
    """Where $PROTOLAB_DIFFTEST_REPORT names a file: which inputs the compiled path accepted."""
    yield
    target = os.environ.get("PROTOLAB_DIFFTEST_REPORT")
    if target and COVERAGE:
        Path(target).write_text(json.dumps(COVERAGE, indent=1, sort_keys=True) + "\n")


def test_the_extension_is_built_where_ci_runs() -> None:
    require(built(), "the compiled extension is not built (python setup.py build_ext --inplace): "
                     "only the Python path is compared with itself")
    assert callable(fast_inspect.extension().run)


class _Recorded:
    """A stand-in for the extension that accepts every capture and prints `text` (what the
    Python path printed, or a byte changed): the harness must see every wrong byte."""

    __file__ = "recorded"

    def __init__(self, text: bytes, tally: tuple[int, int, int, int]) -> None:
        self.text, self.tally = text, tally

    def run(self, path: str, *, write, **_arguments) -> tuple[int, int, int, int]:
        write(self.text)
        return self.tally


@pytest.mark.parametrize("options", [(), ("--json", "--limit", "7"), ("--flows",)])
def test_the_harness_passes_the_same_bytes_and_sees_a_wrong_one(options, monkeypatch) -> None:
    path = ROOT / "captures/udp-demo.ref.pcap"
    python = inspect(path, options, "python")
    read = len(inspect(path, ("--json",), "python").stdout.splitlines())
    shown = min(7, read) if "--limit" in options else read
    text = b"".join(x + b"\n" for x in python.stdout.splitlines()[:shown]) \
        if "--limit" in options else python.stdout  # the note after them is the CLI's
    tally = (read, read, shown, 3)
    monkeypatch.setattr(sys.modules[__name__], "COVERAGE", {})  # not the real extension's
    monkeypatch.setattr(fast_inspect, "extension", lambda: _Recorded(text, tally))
    assert differences(path, options) == []
    assert COVERAGE[f"{path.name} {' '.join(options)}".strip()] == "accepted"
    wrong = bytearray(text)
    wrong[len(wrong) // 2] ^= 0x01
    monkeypatch.setattr(fast_inspect, "extension", lambda: _Recorded(bytes(wrong), tally))
    found = differences(path, options)
    assert len(found) == 2 and "auto: stdout line" in found[0] and "compiled: stdout" in found[1]


class _PythonBehind:
    """A stand-in for a perfect extension: it prints through the Python path, from the arguments
    the extension is given (fast_inspect._arguments), and declines a file it cannot read whole,
    as the C does. With it, what differs is the seam's doing (cli._inspect_compiled, the notes
    the CLI prints from the counts returned), not the C's."""

    __file__ = "python-behind"

    def run(self, path: str, *, mode: str, limit: int, dns_ports: tuple[int, ...],
            flows_width: int, write, **_arguments) -> tuple[int, int, int, int] | str:
        from protolab.analysis.inspect import Options, run
        from protolab.wire.pcap import PcapError

        wide = flows_width == -1  # a piped run's width is 120: flows_width says it otherwise
        opts = Options(json=mode.endswith("json"), flows=mode.startswith("flows"),
                       limit=limit if limit > 0 else None,  # none: 0 or -1
                       dns_ports=frozenset(dns_ports), wide=wide,
                       width=None if wide else flows_width)
        lines: list[str] = []
        try:
            tally = run(path, opts, lines.append)
        except PcapError as exc:
            return f"a damaged file: {exc}"
        write("".join(line + "\n" for line in lines).encode())
        return tally.read, tally.matched, tally.shown, 0


def test_a_compiled_path_printing_what_python_prints_passes(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "COVERAGE", {})  # not the real extension's
    monkeypatch.setattr(fast_inspect, "extension", lambda: _PythonBehind())
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(DAMAGED["header-only"])  # a capture of no packets: exit 1, said why
    names = ("udp-demo.ref.pcap", "dns-demo.ref.pcap", "tcp-demo.ref.pcapng")
    for path in (*(ROOT / "captures" / name for name in names), empty):
        assert not [d for options in OPTION_SETS for d in differences(path, options)]
    assert COVERAGE and set(COVERAGE.values()) == {"accepted"}


# -- the reference captures -----------------------------------------------------------------------

REFERENCES = sorted([*(ROOT / "captures").glob("*.ref.pcap"),
                     *(ROOT / "captures").glob("*.ref.pcapng")])


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.name)
def test_both_paths_print_the_same_for_a_reference_capture(path) -> None:
    # a .pcapng twin holds the .pcap's packets: its own reading, under the four views, is new
    twin = path.suffix == ".pcapng" and path.with_suffix(".pcap").exists()
    assert not [d for options in (OPTION_SETS[:4] if twin else OPTION_SETS)
                for d in differences(path, options)]


# -- generated: every link type and file format, every protocol ----------------------------------

#: (reference capture, packets taken from its start): TLS, WebSocket, HTTP, QUIC as labs make them
SLICES = (("udp-demo.ref.pcap", None), ("dns-demo.ref.pcap", None),
          ("quic-demo.ref.pcap", None), ("tcp-demo.ref.pcap", 40), ("tls-demo.ref.pcap", 40),
          ("ws-demo.ref.pcap", 90), ("hijack-demo.ref.pcap", 30), ("lb.ref.pcap", 30),
          ("cache-demo.ref.pcap", 60), ("tcp-attack-demo.ref.pcapng", 60))
#: what no generated capture shows: a packet seen at several capture points (nat-demo's
#: reference capture has them) and the legs of a middlebox relaying DNS or TLS
NOT_GENERATED = {Kind.SAME_PACKET, Kind.DNS_RELAYED, Kind.DNS_RELAY_ANSWER, Kind.TLS_RELAYED}
#: the Python path links no ICMPv6 error to the datagram it quotes (annotate_udp.IcmpAnnotator
#: writes the quoted endpoints without IPv6's brackets), so over IPv6 these do not happen
NOT_OVER_IPV6 = {Kind.UDP_TO_CLOSED_PORT, Kind.DNS_TO_CLOSED_SOCKET}

#: name -> (link, IP version or 0 for both, file format); each format on several link types
GENERATED = {f"{link}-ipv{v}": (link, v, FORMATS[(2 * i + j) % len(FORMATS)])
             for i, link in enumerate(LINKS) for j, v in enumerate((4, 6))}
GENERATED["ethernet-dual-stack"] = ("ethernet", 0, "pcap-usec")


@pytest.fixture(scope="module")
def mixed_packets() -> dict[int, list[Packet]]:
    """IP version -> the story's packets, then the reference slices (as IPv6: re-addressed)."""
    v4 = [p for name, n in SLICES for p in reference_packets(name, n)]
    v6 = [q for q in map(as_ipv6, v4) if q is not None]
    return {4: story(4) + v4, 6: story(6) + v6,
            0: [p for pair in zip(story(4), story(6), strict=False) for p in pair]}


@pytest.mark.parametrize("name", list(GENERATED))
def test_both_paths_print_the_same_for_every_link_type_and_format(name, mixed_packets,
                                                                  tmp_path) -> None:
    link, version, fmt = GENERATED[name]
    linktype, frames = framed(mixed_packets[version], link)
    path = tmp_path / f"{name}.{fmt}"
    path.write_bytes(capture_bytes(frames, linktype, fmt))
    python = inspect(path, ("--json",), "python")
    rows = [json.loads(x) for x in python.stdout.splitlines()]
    assert python.code == 0 and len(rows) == len(frames)  # every frame read, as its own row
    facts = {Kind(k) for r in rows for k in (r["fact"], *r["also"])}
    if version:  # every fact the annotator knows, but those no generated capture can show
        missing = set(Kind) - NOT_GENERATED - (NOT_OVER_IPV6 if version == 6 else set()) - facts
        assert not missing, sorted(k.value for k in missing)
    views = GENERATED_OPTIONS if link == "ethernet" else GENERATED_OPTIONS[:2]  # time: < 60 s
    assert not [d for options in views for d in differences(path, options, f"{name}.{fmt}")]


# -- the benchmark's shape ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def benchmark_capture(tmp_path_factory) -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    from inspect_vs_tshark import make_capture

    path = tmp_path_factory.mktemp("bench") / "mixed-3000.pcap"
    make_capture(path, 3_000)
    return path


def test_the_benchmark_shaped_capture(benchmark_capture) -> None:
    assert not [d for options in OPTION_SETS
                for d in differences(benchmark_capture, options, "benchmark")]
    if COMPILED_MUST_ACCEPT_BENCHMARK:  # differences() failed any decline where it is built
        require(built(), "the compiled extension is not built")


@pytest.mark.parametrize("name", [n for n in GENERATED if not n.endswith("dual-stack")])
def test_the_benchmarks_packets_on_every_link_type_and_format(name, benchmark_capture,
                                                             tmp_path) -> None:
    """The benchmark's kind of packets (which the compiled path takes) behind every link-layer
    header and in every file format, over IPv4 and IPv6."""
    link, version, fmt = GENERATED[name]
    packets = ip_packets(benchmark_capture, 150)
    if version == 6:
        packets = [q for q in map(as_ipv6, packets) if q is not None]
    linktype, frames = framed(packets, link)
    path = tmp_path / f"bench-{name}.{fmt}"
    path.write_bytes(capture_bytes(frames, linktype, fmt))
    assert not [d for options in GENERATED_OPTIONS[:3]
                for d in differences(path, options, path.name)]
    if COMPILED_MUST_ACCEPT_BENCHMARK:  # the switch covers the benchmark's packets here too
        require(built(), "the compiled extension is not built")
        assert not declined(inspect(path, (), "compiled"))


def _past_the_tracked_limit() -> list[Packet]:
    """More TCP connections than flows.MAX_TRACKED: SYNs (some answered), pairs of connections
    interleaving, three of the oldest used again half way, then the oldest coming back (the
    untouched ones forgotten by then, the three not), the newest again, and one 4-tuple closed
    and opened anew."""
    server = "10.200.0.1"

    def client(i: int) -> str:
        return f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"

    def seg(i: int, to_server: bool, flags: int, seq: int, ack: int, data: bytes = b"") -> Packet:
        ends = (client(i), server, 1025, 80) if to_server else (server, client(i), 80, 1025)
        return tcp_segment(4, *ends, seq, ack, flags, payload=data)

    packets = []
    for i in range(MAX_TRACKED + 10):
        packets.append(seg(i, True, 0x02, 1000, 0))
        if i % 7 == 0:
            packets.append(seg(i, False, 0x12, 5000, 1001))
        if i % 1000 == 3:
            packets += [seg(i - k % 2, True, 0x18, 1001, 5001, b"x") for k in range(6)]
        if i == MAX_TRACKED // 2:  # used again: the last to be forgotten of the oldest
            packets += [seg(k, True, 0x18, 1001, 5001, b"again") for k in (0, 2, 7)]
    for i in (0, 1, 2, 7, 14, 9999, MAX_TRACKED - 1, MAX_TRACKED + 9, 3):
        packets += [seg(i, True, 0x18, 1001, 5001, b"hello"), seg(i, False, 0x10, 5001, 1006)]
    last = MAX_TRACKED + 8
    for _ in range(2):
        packets += [seg(last, True, 0x11, 1001, 5001), seg(last, False, 0x11, 5001, 1002),
                    seg(last, True, 0x10, 1002, 5002), seg(last, True, 0x02, 7000, 0)]
    return packets


def test_both_paths_forget_the_same_connections_past_the_tracked_limit(tmp_path) -> None:
    """The LRU bounds (TcpObserver's tracked connections, FlowNumbers): which ones are forgotten,
    and in which order, is the same on both paths."""
    linktype, frames = framed(_past_the_tracked_limit(), "ethernet")
    path = tmp_path / "past-the-limit.pcap"
    path.write_bytes(capture_bytes(frames, linktype, "pcap-usec"))
    assert not [d for options in ((), ("--json",)) for d in differences(path, options)]


# -- damaged files ---------------------------------------------------------------------------------


def _damaged() -> dict[str, bytes]:
    pcap = (ROOT / "captures/dns-demo.ref.pcap").read_bytes()
    pcapng = (ROOT / "captures/dns-demo.ref.pcapng").read_bytes()
    huge = bytearray(pcap)
    huge[24 + 8:24 + 12] = (10 ** 8).to_bytes(4, "little")  # the first record's caplen
    block = bytearray(pcapng)
    block[4:8] = (13).to_bytes(4, "little")  # the section header's length: not a multiple of 4
    return {"empty": b"", "ten-bytes": pcap[:10], "bad-magic": b"no capture at all" + bytes(40),
            "header-only": pcap[:24], "cut-in-a-record-header": pcap[:24 + 9],
            "cut-in-a-record": pcap[:700], "cut-at-the-end": pcap[:-5],
            "huge-record-length": bytes(huge), "pcapng-cut": pcapng[:-7],
            "pcapng-bad-block-length": bytes(block), "pcapng-cut-in-a-block": pcapng[:300]}


DAMAGED = _damaged()


@pytest.mark.parametrize("name", list(DAMAGED))
def test_both_paths_print_the_same_for_a_damaged_file(name, tmp_path) -> None:
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(DAMAGED[name])
    assert inspect(path, (), "python").code != 0  # it is damaged: an error, after what was read
    assert not [d for options in DAMAGED_OPTIONS for d in differences(path, options, name)]


def test_both_paths_say_the_same_of_packets_cut_by_the_snap_length(tmp_path,
                                                                   mixed_packets) -> None:
    for snaplen in (14, 40, 60):  # the Ethernet header; inside TCP's; inside TCP's payload
        linktype, frames = framed(mixed_packets[4], "ethernet")
        cut = [type(f)(f.time, f.data[:snaplen], f.orig_len) for f in frames]
        path = tmp_path / f"snap{snaplen}.pcap"
        path.write_bytes(capture_bytes(cut, linktype, "pcap-usec"))
        assert not [d for options in GENERATED_OPTIONS[:3]
                    for d in differences(path, options, path.name)]


@pytest.mark.parametrize("what", ["missing", "directory", "unknown-link-type"])
def test_both_paths_say_the_same_of_what_is_no_capture(what, tmp_path, mixed_packets) -> None:
    path = tmp_path / "x.pcap"
    if what == "directory":
        path.mkdir()
    elif what == "unknown-link-type":
        _, frames = framed(mixed_packets[4][:20], "ethernet")
        path.write_bytes(capture_bytes(frames, 147, "pcap-usec"))  # LINKTYPE_USER0
    assert not [d for options in DAMAGED_OPTIONS for d in differences(path, options, what)]


# -- a hypothesis stream of fuzzed and damaged packets ---------------------------------------------

_TEMPLATES = story(4) + story(6)
_PORTS = st.sampled_from([53, 80, 443, 4433, 5300, 3333, 40000, 51000]) | st.integers(0, 65535)
_SEQS = st.sampled_from([0, 1000, 1001, 1069, 5000, 5001, 2 ** 32 - 1]) | \
    st.integers(0, 2 ** 32 - 1)


@st.composite
def fuzzed(draw: st.DrawFn) -> Packet:
    """A template packet with other ports, sequence numbers, flags or DNS id, some bytes
    overwritten, and maybe cut short."""
    p = draw(st.sampled_from(_TEMPLATES))
    b = bytearray(p.ip)
    l4 = 20 if p.version == 4 else 40
    proto = b[9] if p.version == 4 else b[6]
    if len(b) >= l4 + 4 and draw(st.booleans()):
        b[l4:l4 + 4] = draw(_PORTS).to_bytes(2, "big") + draw(_PORTS).to_bytes(2, "big")
    if proto == 6 and len(b) >= l4 + 14 and draw(st.booleans()):
        b[l4 + 4:l4 + 12] = draw(_SEQS).to_bytes(4, "big") + draw(_SEQS).to_bytes(4, "big")
        b[l4 + 13] = draw(st.integers(0, 255))
    if proto == 17 and len(b) >= l4 + 10 and draw(st.booleans()):
        b[l4 + 8:l4 + 10] = draw(st.sampled_from([0x1111, 0x2222, 0x9999]) |
                                 st.integers(0, 0xFFFF)).to_bytes(2, "big")
    for at, value in draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(0, 255)),
                                   max_size=2)):
        b[at] = value
    return Packet(p.version, bytes(b), draw(st.none() | st.integers(0, len(b))))


@settings(max_examples=EXAMPLES or 60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(packets=st.lists(fuzzed(), max_size=40), link=st.sampled_from(list(LINKS)),
       fmt=st.sampled_from(FORMATS), cut=st.none() | st.integers(0, 3000),
       options=st.sampled_from(OPTION_SETS))
def test_both_paths_print_the_same_for_any_stream_of_packets(packets, link, fmt, cut,
                                                             options) -> None:
    data = _capture(packets, link, fmt)
    assert not _differences_in(data if cut is None else data[:cut], options,
                               f"{len(packets)} packets, {link}, {fmt}, cut {cut}")


def _capture(packets: list[Packet], link: str, fmt: str) -> bytes:
    linktype, frames = framed(packets, link)
    return capture_bytes(frames, linktype, fmt)


def _differences_in(data: bytes, options: tuple[str, ...], what: str) -> list[str]:
    """differences() of a capture given as its bytes (a property's example), in a temporary
    file of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example.pcap"
        path.write_bytes(data)
        return differences(path, options, what)


#: TCP flag bits (RFC 9293 section 3.1) and the combinations a conversation is made of
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_FLAGS = st.sampled_from([SYN, SYN | ACK, ACK, ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK,
                          FIN, SYN | FIN]) | st.integers(0, 255)
#: a client, a server, and a stranger who knows the server's port; their initial sequence numbers
_ENDS = ((40000, 1000), (80, 5000), (40001, 9000))


@st.composite
def tcp_segments(draw: st.DrawFn, version: int) -> Packet:
    """A segment between two of _ENDS, its numbers near each side's initial ones (in the window
    or just outside it) or anywhere, now and then with data."""
    src, dst = draw(st.sampled_from([(0, 1), (1, 0), (1, 0), (2, 1), (1, 2)]))
    near = st.integers(-2, 400)
    seq = _ENDS[src][1] + draw(near) if draw(st.integers(0, 9)) else draw(_SEQS)
    ack = _ENDS[dst][1] + draw(near) if draw(st.integers(0, 9)) else draw(_SEQS)
    payload = draw(st.sampled_from([b""] * 6 + [b"x", b"y" * 100]))
    window = draw(st.sampled_from([65535, 65535, 512, 1, 0]))
    hosts = ADDRESSES[version]
    return tcp_segment(version, hosts[min(src, 1)], hosts[min(dst, 1)], _ENDS[src][0],
                       _ENDS[dst][0], seq, ack, draw(_FLAGS), window, payload)


@settings(max_examples=EXAMPLES or 100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), link=st.sampled_from(list(LINKS)), fmt=st.sampled_from(FORMATS),
       options=st.sampled_from(OPTION_SETS))
def test_both_paths_print_the_same_for_any_tcp_conversation(data, link, fmt, options) -> None:
    """Only TCP, between few endpoints: the connection state machine fuzzed (handshakes, data,
    keep-alives, resets in and out of the window, challenge ACKs, FINs), where the compiled path
    is likeliest to take the capture."""
    version = data.draw(st.sampled_from([4, 6]))
    packets = data.draw(st.lists(tcp_segments(version), min_size=3, max_size=80))
    assert not _differences_in(_capture(packets, link, fmt), options,
                               f"{len(packets)} TCP segments, {link}, {fmt}")


_SERVER_PORTS = (53, 5300, 4433)


def _server_datagrams(version: int) -> list[Packet]:
    """The story's whole UDP datagrams to or from a DNS or QUIC server port."""
    l4 = 20 if version == 4 else 40
    out = []
    for p in story(version):
        proto = p.ip[9] if version == 4 else p.ip[6]
        ports = {int.from_bytes(p.ip[at:at + 2], "big") for at in (l4, l4 + 2)}
        if p.kept is None and proto == 17 and ports & set(_SERVER_PORTS):
            out.append(p)
    return out


_DATAGRAMS = {v: _server_datagrams(v) for v in (4, 6)}
_CIDS = st.sampled_from([b"C" * 8, b"S" * 8, b"D" * 8, b"T" * 8])


@st.composite
def dns_and_quic(draw: st.DrawFn, version: int) -> Packet:
    """A DNS or QUIC datagram of the story between few ports, its DNS id or QUIC connection IDs
    (RFC 9000 section 17.2) drawn from small sets, so queries meet answers and keys meet
    lookups, or do not."""
    b = bytearray(draw(st.sampled_from(_DATAGRAMS[version])).ip)
    l4 = 20 if version == 4 else 40
    sport, dport = int.from_bytes(b[l4:l4 + 2], "big"), int.from_bytes(b[l4 + 2:l4 + 4], "big")
    client = draw(st.sampled_from([3333, 3334, 51000, 51001]))
    server = 4433 if 4433 in (sport, dport) else draw(st.sampled_from([53, 5300]))
    ports = (server, client) if sport in _SERVER_PORTS else (client, server)
    b[l4:l4 + 4] = ports[0].to_bytes(2, "big") + ports[1].to_bytes(2, "big")
    quic = b[l4 + 8] & 0x40 and 4433 in ports
    if not quic:
        b[l4 + 8:l4 + 10] = draw(st.sampled_from([0x1111, 0x2222, 0x9999])).to_bytes(2, "big")
    elif b[l4 + 8] & 0x80 and b[l4 + 13] == 8:  # a long header: DCID, then SCID
        b[l4 + 14:l4 + 22], b[l4 + 23:l4 + 31] = draw(_CIDS), draw(_CIDS)
    elif not b[l4 + 8] & 0x80:  # a short header: the DCID only
        b[l4 + 9:l4 + 17] = draw(_CIDS)
    return Packet(version, bytes(b))


@settings(max_examples=EXAMPLES or 60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), link=st.sampled_from(list(LINKS)), fmt=st.sampled_from(FORMATS),
       options=st.sampled_from(OPTION_SETS))
def test_both_paths_print_the_same_for_any_dns_and_quic_exchange(data, link, fmt,
                                                                  options) -> None:
    version = data.draw(st.sampled_from([4, 6]))
    packets = data.draw(st.lists(dns_and_quic(version), min_size=2, max_size=60))
    assert not _differences_in(_capture(packets, link, fmt), options,
                               f"{len(packets)} datagrams, {link}, {fmt}")


# -- the spool: one pass, and nothing printed before the whole capture is known covered ---------

#: what the spool tests print: the table and --flows, 120 columns (the piped default)
SPOOL_VIEWS = {"table": (), "flows": ("--flows",)}


def _spooled(path: Path, view: str, *, fd: int = -1, spool_memory: int,
             tmpdir: Path | None = None) -> tuple[fast_inspect.Result | None, bytes]:
    """fast_inspect.run itself (PROTOLAB_INSPECT=auto): what it returned, and the bytes it
    handed to `write` (those written to `fd` are the caller's to read)."""
    from protolab.analysis.inspect import Options

    require(built(), "the compiled extension is not built")
    chunks: list[bytes] = []
    opts = Options(flows=view == "flows", width=120)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(fast_inspect.ENV, "auto")
        if tmpdir is not None:
            mp.setenv("TMPDIR", str(tmpdir))
        got = fast_inspect.run(path, opts, chunks.append, "utf-8", fd, spool_memory)
    return got, b"".join(chunks)


def _python_prints(path: Path, view: str) -> bytes:
    ran = inspect(path, (*SPOOL_VIEWS[view], "--width", "120"), "python")
    assert ran.code == 0
    return ran.stdout


@pytest.mark.parametrize("view", list(SPOOL_VIEWS))
@pytest.mark.parametrize("spool_memory", [0, 1000, fast_inspect.SPOOL_MEMORY])
def test_what_the_spool_keeps_in_memory_and_in_its_file_comes_out_whole(view, spool_memory,
                                                                         tmp_path) -> None:
    path = ROOT / "captures/tcp-demo.ref.pcap"
    want = _python_prints(path, view)
    assert len(want) > 1000  # so 1000 bytes in memory leaves the rest to the file
    spool = tmp_path / "spool"
    spool.mkdir()
    got, written = _spooled(path, view, spool_memory=spool_memory, tmpdir=spool)
    assert got is not None and written == want
    out = tmp_path / "out"  # and through a file descriptor (sendfile where the file is past
    with out.open("wb") as f:  # the memory)
        got, written = _spooled(path, view, fd=f.fileno(), spool_memory=spool_memory,
                                tmpdir=spool)
    assert (got is not None, written, out.read_bytes()) == (True, b"", want)
    assert not list(spool.iterdir())  # the spool's file had no name, or lost it at once


def test_an_append_mode_stdout_and_a_pipe_get_the_same_bytes(tmp_path) -> None:
    path = ROOT / "captures/dns-demo.ref.pcap"
    want = _python_prints(path, "table")
    out = tmp_path / "out"  # sendfile(2) refuses an O_APPEND file: the spool is read and written
    out.write_bytes(b"before\n")
    fd = os.open(out, os.O_WRONLY | os.O_APPEND)
    try:
        assert _spooled(path, "table", fd=fd, spool_memory=0)[0] is not None
    finally:
        os.close(fd)
    assert out.read_bytes() == b"before\n" + want
    read, write = os.pipe()  # a pipe holds 64 KiB: a reader drains it as it fills
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(read)))
    reader.start()
    try:
        assert _spooled(path, "table", fd=write, spool_memory=0)[0] is not None
    finally:
        os.close(write)
        reader.join()
        os.close(read)
    assert received == [want]


def _read_all(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("view", list(SPOOL_VIEWS))
def test_without_a_spool_file_a_second_pass_prints_the_same(view, tmp_path) -> None:
    path = ROOT / "captures/tcp-demo.ref.pcap"
    got, written = _spooled(path, view, spool_memory=100, tmpdir=tmp_path / "no-such-folder")
    assert got is not None and written == _python_prints(path, view)


def test_a_capture_declined_late_has_written_nothing_to_stdout(tmp_path) -> None:
    path = ROOT / "captures/nat-demo.ref.pcapng"  # capture points: the Python path's
    out = tmp_path / "out"
    with out.open("wb") as f:
        got, written = _spooled(path, "table", fd=f.fileno(), spool_memory=0, tmpdir=tmp_path)
    assert (got, written, out.read_bytes()) == (None, b"", b"")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_dns_id_of_zero_reads_0x0000_in_the_conversations_table(tmp_path) -> None:
    """mDNS asks with id 0: --flows lists it as Python's f"{0:#06x}", 0x0000 (C's "%#06x" would
    write 000000), unanswered and matched to no query alike."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    ask = (Ether() / IP(src="192.168.1.10", dst="224.0.0.251") / UDP(sport=5353, dport=5353)
           / DNS(id=0, qd=DNSQR(qname="printer.local.")))
    query = (Ether() / IP(src="10.0.0.2", dst="10.0.0.53") / UDP(sport=40000, dport=53)
             / DNS(id=7, qd=DNSQR(qname="a.lab.")))
    unasked = (Ether() / IP(src="10.0.0.53", dst="10.0.0.2") / UDP(sport=53, dport=40000)
               / DNS(id=0, qr=1, qd=DNSQR(qname="a.lab."),
                     an=DNSRR(rrname="a.lab.", rdata="10.0.0.9")))
    path = tmp_path / "dns-id-0.pcap"
    wrpcap(str(path), [ask, query, unasked])
    python = inspect(path, ("--flows",), "python")
    assert python.stdout.count(b"0x0000") == 2, python.stdout  # both lists show the id
    assert not [d for options in (("--flows",), ("--flows", "--json"))
                for d in differences(path, options, "dns-id-0.pcap")]
    if built():
        assert COVERAGE["dns-id-0.pcap --flows"] == "accepted"


def test_a_capture_read_from_a_pipe_is_the_python_paths(tmp_path) -> None:
    """A pipe can be read once: were the compiled path to read it and decline (TLS here), the
    Python path would find nothing left, so it is the Python path's from the start."""
    capture = ROOT / "captures/tls-demo.ref.pcap"
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(capture.read_bytes()))
    feeder.start()
    try:
        ran = inspect(fifo, (), "auto")
    finally:
        feeder.join()
    assert ran == inspect(capture, (), "python")
    if built():
        assert fast_inspect._read_once(fifo) and fast_inspect._read_once(capture) is None


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_run_whose_reader_has_stalled(sig, benchmark_capture) -> None:
    """`protolab inspect big.pcap | less`, then Ctrl-C: the compiled path, blocked writing to a
    full pipe nobody reads, stops at once with the CLI's one line and 128 + the signal."""
    require(built(), "the compiled extension is not built")
    env = {**os.environ, fast_inspect.ENV: "compiled"}
    proc = subprocess.Popen([sys.executable, "-m", "protolab", "inspect", str(benchmark_capture)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        started = time.monotonic()
        assert proc.stdout is not None and proc.stdout.read(1)  # it is delivering: the pass ran
        took = time.monotonic() - started
        proc.send_signal(getattr(signal, sig))  # the pipe (64 KiB) is full, or soon will be
        code = proc.wait(timeout=max(10.0, 20 * took))  # without reading stdout
    finally:
        proc.kill()
        proc.wait()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert (code, err) == (128 + getattr(signal, sig), "protolab: interrupted\n"
                           if sig == "SIGINT" else "protolab: stopped by SIGTERM\n"), err


# -- PROTOLAB_INSPECT itself -----------------------------------------------------------------------


def test_a_bad_protolab_inspect_value_is_one_clear_line() -> None:
    path = ROOT / "captures/udp-demo.ref.pcap"
    out = run_cli("inspect", str(path), env={fast_inspect.ENV: "fast"})
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == ("protolab: error: PROTOLAB_INSPECT='fast': use auto, python or "
                          "compiled\n")
    with pytest.raises(fast_inspect.FastPathUnavailable):
        fast_inspect.chosen({fast_inspect.ENV: "fast"})
    assert fast_inspect.chosen({fast_inspect.ENV: " Python "}) is fast_inspect.Path.PYTHON
    assert fast_inspect.chosen({}) is fast_inspect.Path.AUTO


def test_compiled_without_the_extension_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setattr(fast_inspect, "extension", lambda: None)
    ran = inspect(ROOT / "captures/udp-demo.ref.pcap", (), "compiled")
    assert (ran.code, ran.stdout) == (2, b"")
    assert ran.stderr == ("protolab: error: PROTOLAB_INSPECT=compiled: the compiled extension is "
                          "not built\n")
    assert inspect(ROOT / "captures/udp-demo.ref.pcap", (), "auto") == \
        inspect(ROOT / "captures/udp-demo.ref.pcap", (), "python")


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_a_stdout_that_is_not_utf8_gets_the_python_paths_text(encoding) -> None:
    path = ROOT / "captures/tcp-demo.ref.pcap"  # its notes hold "→" and "↔"
    python = inspect(path, (), "python", encoding)
    assert b"?" in python.stdout and python.code == 0  # what that stdout makes of the arrows
    assert inspect(path, (), "auto", encoding) == python
    if built():  # the compiled path writes UTF-8 only: it must leave this stdout to Python
        compiled = inspect(path, (), "compiled", encoding)
        assert declined(compiled) and "encoding" in compiled.stderr, compiled.stderr


# -- installing where there is no C compiler -------------------------------------------------------


def _wheel_without_a_compiler(tmp: Path) -> tuple[Path, str]:
    """Build the project's wheel from a copy of its files with CC=false: (wheel, pip's log)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "protolab", src / "protolab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    offline = all(_importable(m) for m in ("setuptools", "wheel"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp / "dist"),
           *(["--no-build-isolation"] if offline else []), str(src)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CFLAGS", "LDSHARED")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp,
                          env={**env, "CC": "false", "PIP_NO_INPUT": "1"})
    log = done.stdout + done.stderr
    if done.returncode and not offline and ("Could not find a version" in log
                                            or "NewConnectionError" in log):
        require(False, "pip cannot fetch setuptools and wheel to build in isolation, and "
                       "this environment has no wheel package")
    assert done.returncode == 0, log[-3000:]
    [wheel] = (tmp / "dist").glob("protolab-*.whl")
    return wheel, log


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.timeout(300)  # pip may fetch setuptools and wheel to build in isolation
def test_without_a_c_compiler_the_install_works_and_inspect_takes_the_python_path(
        tmp_path) -> None:
    wheel, log = _wheel_without_a_compiler(tmp_path)
    # the compiler was asked, failed, and the optional extension was left out (setup.py)
    assert 'building extension "protolab.analysis._fastinspect" failed' in log, log[-3000:]
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if "_fastinspect." in n
                and n.endswith((".so", ".pyd"))]
    target = tmp_path / "installed"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not list(target.rglob("_fastinspect*.so"))
    env = {**{k: v for k, v in os.environ.items() if k != fast_inspect.ENV},
           "PYTHONPATH": str(target)}

    def installed(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path, env=env)

    where = installed("-c", "import protolab; print(protolab.__file__)").stdout.strip()
    assert Path(where).is_relative_to(target), where  # this copy runs, not the work tree's
    capture = ROOT / "captures/dns-demo.ref.pcap"
    for options in ((), ("--flows",)):
        out = installed("-m", "protolab", "inspect", str(capture), *options)
        assert (out.returncode, out.stderr) == (0, "")
        assert out.stdout.encode() == inspect(capture, options, "python").stdout
    doctor = installed("-m", "protolab", "doctor").stdout
    [line] = [x for x in doctor.splitlines() if "inspect's compiled fast path" in x]
    assert "Python path: the compiled extension is not built" in line, line

