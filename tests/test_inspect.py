"""`protolab inspect` on captures it did not make: every format, tshark's fields, bad files."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1Q, Ether, Loopback
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, PcapWriter

from protolab.analysis.filter import FilterError, compile_filter
from protolab.analysis.inspect import Options, run
from protolab.wire.pcap import PcapError

from conftest import ROOT, require, require_tool, run_cli

IP4 = IP(src="192.0.2.1", dst="192.0.2.53")
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}  # no ARP lookups by scapy
IP6 = IPv6(src="2001:db8::1", dst="2001:db8::53")


def l4(ip):
    return [ip / UDP(sport=3333, dport=53) / DNS(id=0x1234, qd=DNSQR(qname="x.example.")),
            ip / TCP(sport=4444, dport=80, flags="S", seq=1000),
            ip / TCP(sport=4444, dport=80, flags="PA", seq=1001, ack=7) / Raw(b"GET / HTTP/1.1")]


VARIANTS = {
    "ethernet": (1, lambda ip: Ether(**MACS) / ip),
    "vlan": (1, lambda ip: Ether(**MACS) / Dot1Q(vlan=7) / ip),
    "linux-sll": (113, lambda ip: CookedLinux(proto=0x86DD if ip.version == 6 else 0x800) / ip),
    "linux-sll2": (276, lambda ip: CookedLinuxV2(proto=0x86DD if ip.version == 6 else 0x800)
                   / ip),
    "raw-ip": (101, lambda ip: ip),
    "bsd-null": (0, lambda ip: Loopback(type=24 if ip.version == 6 else 2) / ip),
}


def rows_of(path, **opts) -> list[dict]:
    lines: list[str] = []
    run(path, Options(json=True, **opts), lines.append)
    return [json.loads(x) for x in lines]


def write(path, frames, linktype, fmt):
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i / 10
    if fmt == "pcapng":
        w = PcapNgWriter(str(path))
    else:
        w = PcapWriter(str(path), linktype=linktype, nano=fmt == "nsec",
                       endianness=">" if fmt == "big-endian" else "<")
    for f in frames:
        w.write(f)
    w.close()


@pytest.mark.parametrize("fmt", ["usec", "nsec", "big-endian", "pcapng"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("ip", [IP4, IP6], ids=["ipv4", "ipv6"])
def test_every_link_type_and_file_variant_is_read(tmp_path, fmt, variant, ip) -> None:
    linktype, frame = VARIANTS[variant]
    path = tmp_path / f"x.{fmt}"
    write(path, [frame(p) for p in l4(ip)], linktype, fmt)
    rows = rows_of(path)
    assert [r["proto"] for r in rows] == ["DNS", "TCP", "TCP"]
    assert rows[0]["fields"]["dns_id"] == 0x1234
    assert rows[1]["fields"]["tcp_seq"] == 1000 and rows[1]["summary"].startswith("[SYN]")
    assert "GET / HTTP/1.1" in rows[2]["summary"]
    assert rows[0]["src"].startswith(("192.0.2.1:", "[2001:db8::1]:"))
    assert abs(rows[2]["time"] - 0.2) < 1e-6


def test_packets_cut_by_the_snap_length_are_marked(tmp_path) -> None:
    from protolab.wire.pcap import Record, write_pcap

    path = tmp_path / "cut.pcap"
    frame = bytes(Ether(**MACS) / IP4 / UDP(sport=1, dport=2) / Raw(b"x" * 500))
    write_pcap(path, [Record(1.0, 1, frame[:60], len(frame))])
    [row] = rows_of(path)
    assert row["fields"]["truncated"] is True and "cut: 60 of" in row["summary"]


def _tshark_fields(path, extra=()):
    exe = require_tool("tshark")
    out = subprocess.run([exe, "-r", str(path), *extra, "-T", "fields", "-E", "separator=|",
                          "-e", "frame.number", "-e", "tcp.srcport", "-e", "tcp.dstport",
                          "-e", "udp.srcport", "-e", "udp.dstport", "-e", "tcp.seq_raw",
                          "-e", "tcp.ack_raw", "-e", "tcp.flags", "-e", "dns.id",
                          "-e", "quic.dcid", "-e", "icmp.type"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [line.split("|") for line in out.stdout.splitlines()]


CAPTURES = sorted((ROOT / "captures").glob("*.ref.pcap"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "bench"))
    from inspect_vs_tshark import make_capture

    path = tmp_path_factory.mktemp("gen") / "mixed.pcap"
    make_capture(path, 3_000)
    return path


def test_field_agreement_with_tshark_on_a_generated_capture(generated) -> None:
    test_field_agreement_with_tshark(generated)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_field_agreement_with_tshark(path) -> None:
    rows = {r["number"]: r for r in rows_of(path)}
    dns_ports = {r["fields"]["sport"] for r in rows.values()
                 if r["fields"].get("dns_response") and r["proto"] == "DNS"}
    extra = [a for p in sorted(dns_ports) for a in ("-d", f"udp.port=={p},dns")]
    keys = path.with_suffix(".keys")
    if keys.exists():
        extra += ["-o", f"tls.keylog_file:{keys}"]
    checked = 0
    for n, tsp, tdp, usp, udp_, seq, ack, flags, dns_id, dcid, icmp in _tshark_fields(path,
                                                                                      extra):
        f = rows[int(n)]["fields"]
        if icmp:
            continue
        assert (f["sport"], f["dport"]) == (int(tsp or usp), int(tdp or udp_)), n
        if tsp:
            assert (f["tcp_seq"], f["tcp_ack"], f["tcp_flags"]) == \
                (int(seq), int(ack), int(flags, 16)), n
        if dns_id:
            assert f["dns_id"] == int(dns_id.split(",")[0], 16), n
        if dcid:
            assert f["quic_dcid"] == dcid.split(",")[0], n
        checked += 1
    assert checked == len([r for r in rows.values() if not r["proto"].startswith("ICMP")])


def test_flows_group_a_migrated_quic_connection_across_addresses() -> None:
    lines: list[str] = []
    run(ROOT / "captures" / "quic-demo.ref.pcap", Options(flows=True, json=True), lines.append)
    quic = [json.loads(x) for x in lines if json.loads(x)["kind"] == "quic"]
    migrated = [f for f in quic if any("127.0.0.2" in p for p in f["paths"])]
    assert len(migrated) == 1
    assert any("127.0.0.1:" in p and "127.0.0.2" not in p for p in migrated[0]["paths"])
    assert "migrated" in migrated[0]["state"]


def test_flows_match_every_dns_answer_and_list_the_forged_ones() -> None:
    lines: list[str] = []
    run(ROOT / "captures" / "dns-demo.ref.pcap", Options(flows=True, json=True), lines.append)
    flows = [json.loads(x) for x in lines if json.loads(x)["kind"] == "dns"]
    states = " | ".join(f["state"] for f in flows)
    # one query is never answered: the one the lab server held when part 4 killed it
    assert states.count("unanswered") == 1 and "1 unanswered" in states
    assert states.count("forged?") == 2  # the wrong-id one and the wrong-port one
    assert "after the client closed its socket" in states
    assert any(f["state"].startswith("5 answered") for f in flows)


def test_flow_n_is_one_conversation() -> None:
    rows = rows_of(ROOT / "captures" / "tcp-demo.ref.pcap", flow=1)
    assert rows and {r["flow"] for r in rows} == {1}
    assert rows[0]["summary"].startswith("[SYN]")


@pytest.mark.parametrize("expr,expect", [
    ("tcp", {"TCP"}), ("dns", {"DNS"}), ("icmp", {"ICMP"}),
    ("udp and not dns", set()), ("dns or icmp", {"DNS", "ICMP"})])
def test_filters(expr, expect) -> None:
    path = ROOT / ("captures/tcp-demo.ref.pcap" if expr == "tcp" else "captures/dns-demo.ref.pcap")
    assert {r["proto"] for r in rows_of(path, filter=expr)} == expect


@pytest.mark.parametrize("bad", ["", "tcp and", "port x", "(tcp", "frobnicate", "tcp tcp"])
def test_bad_filters_are_one_clear_error(bad) -> None:
    with pytest.raises(FilterError):
        compile_filter(bad)


def test_limit_and_cli_errors(tmp_path) -> None:
    out = run_cli("inspect", str(ROOT / "captures/dns-demo.ref.pcap"), "--json", "--limit", "3")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 3
    bad = run_cli("inspect", str(ROOT / "captures/dns-demo.ref.pcap"), "--filter", "port")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((ROOT / "captures/dns-demo.ref.pcap").read_bytes()[:700])
    out = run_cli("inspect", str(cut), "--json")
    assert out.returncode == 1 and len(out.stdout.splitlines()) >= 3
    assert out.stderr.startswith("protolab: error:") and out.stderr.count("\n") == 1


@pytest.mark.parametrize("number", [11, 13])  # neighbours have other ports
def test_detail_uses_scapys_dissection_of_that_packet(number) -> None:
    path = ROOT / "captures/dns-demo.ref.pcap"
    out = run_cli("inspect", str(path), "--detail", str(number))
    assert out.returncode == 0, out.stderr
    assert "###[ IP ]###" in out.stdout and "###[ UDP ]###" in out.stdout
    # the ports scapy shows are tshark's for that frame number (not another packet's)
    [(sport, dport)] = [(usp, udp_) for n, _, _, usp, udp_, *_ in _tshark_fields(path)
                        if int(n) == number]
    udp_lines = out.stdout.split("###[ UDP ]###")[1].split("###[")[0].splitlines()
    fields = {k.strip(): v.strip() for k, v in (x.split("=", 1) for x in udp_lines if "=" in x)}
    assert (fields["sport"], fields["dport"]) == (sport, dport)


def test_detail_of_a_packet_that_is_not_there_is_one_error() -> None:
    path = ROOT / "captures/dns-demo.ref.pcap"
    frames = len(_tshark_fields(path))
    out = run_cli("inspect", str(path), "--detail", str(frames + 1))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and f"no packet {frames + 1}" in out.stderr


_SEED = (ROOT / "captures" / "dns-demo.ref.pcap").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=400),
    st.lists(st.tuples(st.integers(0, len(_SEED) - 1), st.integers(0, 255)), max_size=8).map(
        lambda muts: bytes(_mutate(_SEED, muts))),
    st.integers(0, len(_SEED)).map(lambda n: _SEED[:n])))
def test_random_and_mutated_files_only_ever_give_our_error(tmp_path, data) -> None:
    only_our_error(tmp_path, data)


def only_our_error(tmp_path, data: bytes) -> None:
    """Reading `data` as a capture prints well-formed rows and at most raises PcapError."""
    path = tmp_path / "fuzz.pcap"
    path.write_bytes(data)
    for opts in (Options(json=True), Options(flows=True)):
        lines: list[str] = []
        try:
            run(path, opts, lines.append)
        except PcapError:
            pass  # our one error; what was printed before it must still be well formed
        if opts.json:  # every packet read before any error is one JSON row, numbered in order
            assert [json.loads(x)["number"] for x in lines] == list(range(1, len(lines) + 1))


def _mutate(seed: bytes, muts) -> bytearray:
    b = bytearray(seed)
    for i, v in muts:
        b[i] = v
    return b


def test_memory_stays_flat_as_the_file_grows(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from inspect_vs_tshark import make_capture

    peaks = []
    for n in (4_000, 40_000):
        path = tmp_path / f"{n}.pcap"
        make_capture(path, n)
        code = ("import resource, sys; from protolab.analysis.inspect import Options, run; "
                f"run({str(path)!r}, Options(), lambda line: None); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        peaks.append(int(out.stdout.split()[-1]))
    assert peaks[1] < peaks[0] * 1.25, peaks  # ten times the packets, about the same memory


# -- issue 13: bad input and cut captures (items 9 and 10) ----------------------------------------


def _snapped(tmp_path, snaplen: int = 40):
    """The load-balancer reference capture as `tcpdump -s 40` would have taken it (editcap)."""
    cut = tmp_path / f"s{snaplen}.pcap"
    done = subprocess.run([require_tool("editcap"), "-s", str(snaplen),
                           str(ROOT / "captures/lb.ref.pcap"), str(cut)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return cut


def test_flows_of_a_capture_whose_tcp_headers_are_cut(tmp_path) -> None:
    cut = _snapped(tmp_path)
    packets = len(_tshark_fields(cut))
    flows: list[str] = []
    run(cut, Options(flows=True, json=True), flows.append)
    flows_ = [json.loads(x) for x in flows]
    assert sum(f["packets"] for f in flows_) == packets
    assert all(f"{f['packets']} of {f['packets']} packets not decoded (frame ends inside the "
               f"TCP header)" in f["state"] for f in flows_)
    out = run_cli("inspect", str(cut), "--flows")
    assert out.returncode == 0 and out.stderr == ""
    assert f"{len(flows_)} conversations" in out.stdout
    assert len(rows_of(cut)) == packets


_CELL = st.lists(st.sampled_from(["a", "b", " ", "  ", "→", "é", "1", "-", "\t", "\n", "\r",
                                  "\x1b[1m", "\xa0"]), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**7), _CELL, _CELL, st.integers(1, 10**9), _CELL,
                          st.sampled_from([None, 30, 45])), max_size=5),
       st.booleans())
def test_the_flows_table_is_the_one_tabulate_makes(rows, trimmed) -> None:
    """--flows writes its table out itself (tabulate was a tenth of its time): the same text as
    tabulate's, for plain cells and for the ones it hands on to tabulate."""
    from tabulate import tabulate

    from protolab.analysis.flows import FLOW_ALIGN, FLOW_HEADERS, flows_table
    from protolab.analysis.table import wrap

    def cell(text: str) -> str:
        return text.strip() if trimmed else text

    cells = [(str(n), cell(kind), cell(first), str(packets), wrap(cell(state), width))
             for n, kind, first, packets, state, width in rows]
    assert flows_table(cells) == tabulate(
        [(*row, "\n".join(state)) for *row, state in cells], headers=FLOW_HEADERS,
        disable_numparse=True, colalign=FLOW_ALIGN)


def _ip4(payload: bytes, src: int, proto: int = 1) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, min(20 + len(payload), 65535), 0, 0, 64, proto, 0,
                       bytes([10, 0, src // 256, src % 256]), bytes([10, 9, 9, 9])) + payload


def nested_icmp_errors(depth: int) -> bytes:
    """A UDP datagram from 10.0.0.0 quoted by an ICMP port unreachable, quoted by another... each
    layer from its own address (layer k from 10.0.k/256.k%256), `depth` errors deep."""
    frame = _ip4(bytes([0x30, 0x39, 0, 53, 0, 8, 0, 0]), 0, proto=17)
    for k in range(1, depth + 1):
        frame = _ip4(bytes([3, 3, 0, 0, 0, 0, 0, 0]) + frame, k)
    return frame


@pytest.mark.parametrize("depth", [1, 2, 600, 5000])
def test_icmp_errors_nested_deep_in_one_frame_decode_in_one_step(tmp_path, depth) -> None:
    from protolab.wire.packets import decode
    from protolab.wire.pcap import Record, write_pcap

    frame = nested_icmp_errors(depth)[:65535]
    d = decode(frame, 101)
    assert (d.src, d.icmp_type, d.error) == (f"10.0.{depth // 256}.{depth % 256}", 3, None)
    # the quoted datagram is the next layer in (RFC 792), read no further than its header
    inner = depth - 1
    assert (d.quoted.src, d.quoted.proto) == (f"10.0.{inner // 256}.{inner % 256}",
                                              17 if depth == 1 else 1)
    assert (d.quoted.sport, d.quoted.dport) == ((12345, 53) if depth == 1 else (None, None))
    path = tmp_path / "nested.pcap"
    write_pcap(path, [Record(1.0, 101, frame, len(frame))], linktype=101)
    [row] = rows_of(path)
    assert row["proto"] == "ICMP"


DEEP_FILTERS = {
    "400 (": ("(" * 400 + "tcp" + ")" * 400, None),
    "2000 not": ("not " * 2000 + "tcp", "tcp"),
    "2001 not": ("not " * 2001 + "tcp", "not tcp"),
    "3000 or": (" or ".join(["udp"] * 2999 + ["tcp"]), "udp or tcp"),
    "3000 and": (" and ".join(["tcp"] * 3000), "tcp"),
    f"{64} (": ("(" * 64 + "not tcp" + ")" * 64, "not tcp"),
}


@pytest.mark.parametrize("name", list(DEEP_FILTERS))
def test_deep_filter_expressions_are_evaluated_or_refused_in_one_line(name) -> None:
    expr, same_as = DEEP_FILTERS[name]
    path = ROOT / "captures/tcp-demo.ref.pcap"
    if same_as is None:
        with pytest.raises(FilterError, match="nests parentheses deeper than 64"):
            compile_filter(expr)
        out = run_cli("inspect", str(path), "--filter", expr)
        assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
        return
    assert [r["number"] for r in rows_of(path, filter=expr)] == \
        [r["number"] for r in rows_of(path, filter=same_as)]


@pytest.mark.parametrize("args,message", [
    (["--write-annotated", "{tmp}/x.pcapng", "--secrets", "/nonexistent"],
     "cannot read the key log /nonexistent: No such file or directory"),
    (["--write-annotated", "{tmp}/x.pcapng", "--secrets", "{tmp}"],
     "cannot read the key log {tmp}: Is a directory"),
    (["--write-annotated", "/proc/nope/x.pcapng"], "cannot write /proc/nope/x.pcapng: "),
    (["--write-annotated", "{tmp}/ro/x.pcapng"], "cannot write {tmp}/ro/x.pcapng: "),
    (["--secrets", "{tmp}/keys"], "--secrets goes with --write-annotated"),
])
def test_files_that_cannot_be_read_or_written_are_one_line(tmp_path, args, message) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    prefix = (*without_root(),) if "/ro/" in " ".join(args) else ()
    argv = [a.format(tmp=tmp_path) for a in args]
    out = run_cli("inspect", str(ROOT / "captures/quic-demo.ref.pcap"), *argv, prefix=prefix)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("protolab: error: " + message.format(tmp=tmp_path))
    assert out.stderr.count("\n") == 1 and out.stdout == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ro"]  # nothing half-written left


def without_root() -> tuple[str, ...]:
    """Run as nobody, so a directory's mode bits apply (root ignores them)."""
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "changing user with setpriv needs root")
    return (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")


def test_detail_of_a_frame_scapy_cannot_dissect_is_one_line(tmp_path) -> None:
    from protolab.wire.pcap import Record, write_pcap

    path = tmp_path / "radiotap.pcap"
    frame = b"\x00\x00\x08\x00\x01\x00\x00\x00"  # radiotap: a TSFT field promised, not there
    write_pcap(path, [Record(1.0, 127, frame, len(frame))], linktype=127)
    out = run_cli("inspect", str(path), "--detail", "1")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"protolab: error: {path}: scapy cannot dissect packet 1 "
                                 f"(link type 127, 8 bytes): ")
    assert out.stderr.count("\n") == 1


_SHB_SIZES = st.integers(0, 40).map(lambda n: n - n % 4)


def _pcapng_with_short_blocks(lengths: list[int], tail: bytes) -> bytes:
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    return b"".join(struct.pack("<II", 0x0A0D0D0A if i == 0 else 1, n) + shb
                    + struct.pack("<I", n) for i, n in enumerate(lengths)) + tail


def _one_frame_pcap(frame: bytes) -> bytes:
    from protolab.wire.pcap import MAGIC_USEC

    return struct.pack("<IHHiIII", MAGIC_USEC, 2, 4, 0, 0, 262144, 101) + \
        struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.builds(_pcapng_with_short_blocks, st.lists(_SHB_SIZES, min_size=1, max_size=3),
              st.binary(max_size=64)),
    st.integers(0, 2500).map(lambda d: _one_frame_pcap(nested_icmp_errors(d)[:65535])),
    st.tuples(st.integers(0, 2500), st.binary(max_size=8)).map(
        lambda t: _one_frame_pcap(nested_icmp_errors(t[0])[:65535] + t[1]))))
def test_short_blocks_and_deep_nesting_only_ever_give_our_error(tmp_path, data) -> None:
    only_our_error(tmp_path, data)


_FILTER_WORDS = st.sampled_from(["(", ")", "not", "and", "or", "tcp", "dns", "port", "53", "x"])


@settings(max_examples=80, deadline=None)
@given(st.one_of(
    st.lists(_FILTER_WORDS, max_size=40).map(" ".join),
    st.tuples(st.integers(0, 3000), st.sampled_from(["(", "not ", "( not ", "tcp or ",
                                                     "tcp and "]),
              st.integers(0, 3000)).map(lambda t: t[1] * t[0] + "tcp" + ")" * t[2])))
def test_any_filter_expression_compiles_or_is_refused_in_one_line(expr) -> None:
    try:
        pred = compile_filter(expr)
    except FilterError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 200
        return
    for row in _SAMPLE_ROWS:
        assert pred(row) in (True, False)


def _sample_rows():
    from protolab.analysis.annotate import annotate_records
    from protolab.wire.pcap import read_pcap

    return list(annotate_records(read_pcap(ROOT / "captures/dns-demo.ref.pcap")))[:10]


_SAMPLE_ROWS = _sample_rows()


# -- issue 13 item 7: what the table says and how wide it is ------------------------------------


def _env(**columns: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**env, **columns}


def run_table(*args: str, env: dict) -> subprocess.CompletedProcess:
    """`python -m protolab inspect ARGS` with exactly this environment (no inherited COLUMNS)."""
    return subprocess.run([sys.executable, "-m", "protolab", "inspect", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_no_match_says_so_and_exits_1() -> None:
    path = ROOT / "captures/tcp-demo.ref.pcap"
    read = len(_tshark_fields(path))
    said = f"no packet matched --filter 'icmp' ({read} packets read)\n"
    out = run_table(str(path), "--filter", "icmp", env=_env())
    assert (out.returncode, out.stdout, out.stderr) == (1, said, "")
    out = run_table(str(path), "--filter", "icmp", "--json", env=_env())
    assert (out.returncode, out.stdout, out.stderr) == (1, "", said)  # stdout stays JSON lines
    out = run_table(str(path), "--filter", "tcp", "--json", env=_env())
    assert out.returncode == 0 and len(out.stdout.splitlines()) == read


@pytest.mark.parametrize("json_", [False, True], ids=["table", "json"])
def test_limit_says_how_many_matching_packets_were_not_shown(json_) -> None:
    path = ROOT / "captures/dns-demo.ref.pcap"
    matching = len(rows_of(path, filter="dns"))
    read = len(_tshark_fields(path))
    out = run_table(str(path), "--filter", "dns", "--limit", "3", *(["--json"] if json_ else []),
                    env=_env())
    assert out.returncode == 0
    said = (f"... {matching - 3} more matching packets not shown (--limit 3; {matching} matched "
            f"of {read} read)\n")
    if json_:
        assert len(out.stdout.splitlines()) == 3 and out.stderr == said
    else:
        assert out.stdout.endswith(said) and out.stderr == ""
    whole = run_table(str(path), "--filter", "dns", "--limit", str(matching), env=_env())
    assert "not shown" not in whole.stdout + whole.stderr


def state_lines(table: str) -> dict[int, str]:
    """Each packet's 'where state lives' text as the stacked table printed it (lines indented by
    exactly 8 under the packet's row), joined."""
    states: dict[int, list[str]] = {}
    number = None
    for line in table.splitlines():
        head = line.split(" ", 1)[0]
        if head.isdigit():
            number = int(head)
            states[number] = []
        elif number is not None and line.startswith(" " * 8) and line[8:9] not in ("", " "):
            states[number].append(line[8:])
    return {n: " ".join(parts) for n, parts in states.items()}


def where(row: dict) -> str:
    """The note as the table prints it, from the JSON row: `action: state`."""
    return row["state"] if row["action"] == "none" else f"{row['action']}: {row['state']}"


def _squeezed(text: str) -> str:
    return "".join(text.split())


def in_terminal(*args: str, columns: int, env: dict | None = None) -> str:
    """What `protolab inspect ARGS` prints to a terminal `columns` wide (a pseudo-terminal with
    that window size; COLUMNS unset, so the size is read from the terminal itself)."""
    import fcntl
    import pty
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "protolab", "inspect", *args],
                            stdout=terminal, stderr=subprocess.PIPE, env=env or _env())
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    proc.stderr.close()
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [60, 80, 90, 120, 159])
def test_the_table_fits_the_terminal_and_wraps_the_state_without_losing_a_word(columns) -> None:
    path = ROOT / "captures/quic-demo.ref.pcap"  # the longest notes and DCIDs
    text = in_terminal(str(path), columns=columns)
    widest = max(len(line) for line in text.splitlines())
    assert columns - 10 < widest <= columns, widest  # it used the width it was given
    truth = {r["number"]: where(r) for r in rows_of(path)}
    printed = state_lines(text)
    assert {n: _squeezed(s) for n, s in printed.items()} == \
        {n: _squeezed(s) for n, s in truth.items()}


def test_a_wide_terminal_puts_the_state_beside_the_row() -> None:
    path = ROOT / "captures/tcp-demo.ref.pcap"
    lines = in_terminal(str(path), columns=200).splitlines()
    assert lines[0].endswith("where state lives") and max(len(x) for x in lines) <= 200
    first = rows_of(path)[0]
    row, note = lines[2].split("  " + where(first)[:40], 1)  # the note starts beside the row
    assert row.startswith("1 ") and first["summary"] in row


def test_columns_in_the_environment_sets_the_width_on_a_terminal() -> None:
    path = ROOT / "captures/dns-demo.ref.pcap"
    text = in_terminal(str(path), columns=200, env=_env(COLUMNS="70"))
    assert 60 < max(len(x) for x in text.splitlines()) <= 70


@pytest.mark.parametrize("columns", [None, "80", "250"])
def test_piped_the_layout_is_fixed_at_120_columns_whatever_columns_says(columns) -> None:
    from protolab.analysis.table import PIPED_WIDTH

    path = ROOT / "captures/quic-demo.ref.pcap"
    env = _env() if columns is None else _env(COLUMNS=columns)
    out = run_table(str(path), env=env)  # stdout is a pipe
    assert out.returncode == 0
    assert 110 < max(len(x) for x in out.stdout.splitlines()) <= PIPED_WIDTH == 120
    assert out.stdout == in_terminal(str(path), columns=120)


def test_wide_is_one_line_per_packet_with_every_note_whole() -> None:
    path = ROOT / "captures/quic-demo.ref.pcap"
    out = run_table(str(path), "--wide", env=_env(COLUMNS="80"))
    rows = rows_of(path)
    lines = out.stdout.splitlines()
    assert len(lines) == 2 + len(rows)
    for line, row in zip(lines[2:], rows, strict=True):
        assert line.startswith(f"{row['number']} ") and line.endswith("  " + where(row))


def test_format_rows_keeps_the_demos_call_and_its_width(monkeypatch) -> None:
    from protolab.analysis.annotate import annotate_records
    from protolab.analysis.table import PIPED_WIDTH, format_rows, layout
    from protolab.wire.pcap import read_pcap

    monkeypatch.delenv("COLUMNS", raising=False)
    rows = list(annotate_records(read_pcap(ROOT / "captures/udp-demo.ref.pcap")))
    text = format_rows(rows)  # as report.show_capture and replay call it
    assert max(len(x) for x in text.splitlines()) <= PIPED_WIDTH
    assert set(state_lines(text)) == {r.number for r in rows}
    assert max(len(x) for x in format_rows(rows, layout(80)).splitlines()) <= 80


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_flow_numbers_forget_the_least_recently_seen_and_renumber_a_flow_that_comes_back(limit):
    """FlowNumbers answers a row of the row before's conversation without its dict: the numbers
    stay those of an LRU of `limit` conversations (a model written out here)."""
    from types import SimpleNamespace

    from protolab.analysis.flows import FlowNumbers

    flows = "a a b a c b a c c b a".split()
    numbers, got = FlowNumbers(limit), []
    model: dict[str, int] = {}
    expected, count = [], 0
    for flow in flows:
        got.append(numbers.number_of(SimpleNamespace(flow=flow)))
        if flow not in model:
            count += 1
            if len(model) >= limit:
                del model[next(iter(model))]
        model[flow] = model.pop(flow, count)
        expected.append(model[flow])
    assert got == expected and numbers.count == count


def test_the_every_row_loop_prints_what_choosing_prints() -> None:
    """`run` prints every row by its own loop (print_every); --filter goes through `select`: a
    filter that chooses every row prints the same table and JSON, and --limit cuts both alike."""
    path = ROOT / "captures" / "tcp-demo.ref.pcap"
    for opts in ({}, {"json": True}, {"limit": 5}, {"json": True, "limit": 5}, {"wide": True},
                 {"width": 200}):
        every: list[str] = []
        chosen: list[str] = []
        run(path, Options(**opts), every.append)
        run(path, Options(filter="tcp or not tcp", **opts), chosen.append)
        assert every == chosen and len(every) >= 5


@pytest.mark.parametrize("capture", ["nat-demo.ref.pcapng", "quic-demo.ref.pcap",
                                     "dns-demo.ref.pcap", "lb.ref.pcap"])
def test_flow_table_take_is_number_of_then_add(capture) -> None:
    """--flows counts each row by FlowTable.take: the same summaries as number_of, then add."""
    from protolab.analysis.annotate import annotate_file
    from protolab.analysis.flows import FlowTable

    taken, added = FlowTable(), FlowTable()
    for row in annotate_file(ROOT / "captures" / capture):
        assert taken.take(row) == added.number_of(row)
        added.add(row)
    assert taken.flows == added.flows and len(taken.flows) > 1


@pytest.mark.parametrize("view", [{}, {"json": True}, {"flows": True}, {"wide": True}])
def test_a_run_leaves_no_cyclic_garbage_and_the_collector_as_it_was(view) -> None:
    """The Python path runs with the collector's passes far apart (inspect.fewer_collections),
    which is safe only while rows, facts and packets hold no reference cycle: nothing a run
    makes may need the collector to be freed. And the thresholds are given back, even when the
    capture is damaged."""
    import gc

    captures = sorted(p for p in (ROOT / "captures").iterdir() if ".pcap" in p.name)
    assert captures
    before = gc.get_threshold()
    gc.collect()
    gc.disable()
    try:
        for path in captures:
            run(path, Options(**view), lambda _line: None)
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0
    assert gc.get_threshold() == before


def test_the_collector_thresholds_come_back_after_a_damaged_capture(tmp_path) -> None:
    import gc

    source = (ROOT / "captures" / "dns-demo.ref.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(source[:len(source) - 7])
    before = gc.get_threshold()
    with pytest.raises(PcapError):
        run(cut, Options(), lambda _line: None)
    assert gc.get_threshold() == before


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.floats(-2.0, 2.0),
                          st.integers(-4000, 4000).map(lambda n: n / 1000 + 0.0005),
                          st.integers(0, 10**6).map(lambda n: n * 1e-5)), max_size=60))
def test_a_time_written_from_the_last_times_text_is_written_as_formatting_it(times) -> None:
    """The table writes a row's time from the last time's text when it is sure to be the same
    (table._time_text); in time order or not, next to the rounding boundaries (x.xxx5) and 0, huge,
    infinite or NaN, every time is written as f"{time:.3f}" writes it."""
    _assert_times_written_as_formatted(sorted(times) + times)


def test_times_swept_across_every_rounding_boundary_are_written_as_formatting_them() -> None:
    """`_time_text` in time order, every 1e-5 s and at each x.xxx5 and next to it (0.0025
    written "0.003" after 0.002's text: the boundaries are the doubles' own, not decimal)."""
    sweep = [n * 1e-5 for n in range(-300_000, 300_000)]
    close = [n / 1000 + 0.0005 + d for n in range(-3000, 3000) for d in (-1e-9, 0.0, 1e-9)]
    _assert_times_written_as_formatted(sweep)
    _assert_times_written_as_formatted(close)
    _assert_times_written_as_formatted([t + 86_400 * 365 for t in close])


def _assert_times_written_as_formatted(times: list[float]) -> None:
    from protolab.analysis.table import _time_text

    low, high, text = 1.0, 0.0, ""
    for time in times:
        if not low < time < high:
            low, high, text = _time_text(time)
        assert text == f"{time:.3f}", time
