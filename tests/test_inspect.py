"""`protolab inspect` on captures it did not make: every format, tshark's fields, bad files."""

from __future__ import annotations

import json
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

from protolab.inspect import FilterError, Options, compile_filter, run
from protolab.pcap import PcapError

from conftest import ROOT, require_tool, run_cli

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
    from protolab.pcap import Record, write_pcap

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
        code = ("import resource, sys; from protolab.inspect import Options, run; "
                f"run({str(path)!r}, Options(), lambda line: None); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        peaks.append(int(out.stdout.split()[-1]))
    assert peaks[1] < peaks[0] * 1.25, peaks  # ten times the packets, about the same memory
