"""Holds fast_dns.c and fast_quic.c to the Python annotator, row by row, on captures.

    python bench/fastp_check.py FILE... [--dns-port P]

Builds bench/fastp_driver.c with the two parts into a shared library (ctypes), feeds it every
packet the Python reader decodes (non-UDP packets as placeholders, so the window and numbering
match), and compares each DNS and QUIC row with the Python Annotator's: proto, summary, action,
holders, kind, also, refs, key, flow, the fact's values and the part's fields. Rows an ICMP error
amended (the core's) are left out. Prints the first difference, or how many rows agreed, or why
the C parts declined.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protolab.analysis.annotate import DNS_PORTS, Annotator  # noqa: E402
from protolab.analysis.facts import Action, Holder, Kind  # noqa: E402
from protolab.wire.packets import PROTO_UDP, decode  # noqa: E402
from protolab.wire.pcap import read_pcap  # noqa: E402

LIB = Path("/tmp/fastp_driver.so")
SKIP = {Kind.UDP_TO_CLOSED_PORT, Kind.DNS_TO_CLOSED_SOCKET}
COMMON = {"length", "sport", "dport", "tcp_seq", "tcp_ack", "tcp_flags", "icmp_type",
          "icmp_code", "interface", "truncated"}


def build() -> ctypes.CDLL:
    a = ROOT / "protolab" / "analysis"
    cmd = ["gcc", "-shared", "-fPIC", "-O2", "-g", "-fno-omit-frame-pointer", "-std=c11", "-Wall",
           f"-I{sysconfig.get_paths()['include']}", str(ROOT / "bench" / "fastp_driver.c"),
           *(str(a / name) for name in ("fast_dns.c", "fast_quic.c", "fi_row.c", "fi_map.c",
                                        "fi_text.c")), "-o", str(LIB)]
    subprocess.run(cmd, check=True)
    lib = ctypes.PyDLL(str(LIB))
    lib.drv_feed.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_double, ctypes.c_double,
                             ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                             ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    lib.drv_why.restype = ctypes.c_char_p
    return lib


def c_rows(text: str) -> list[tuple]:
    rows = []
    for line in text.split("\n")[:-1]:
        (number, proto, summary, action, holders, kind, also, refs, key, flow, values,
         fields) = line.split("\x1e")
        rows.append((int(number), proto, summary, int(action), _ints(holders), int(kind),
                     _ints(also), _ints(refs), key, flow, _vals(values), _vals(fields)))
    return rows


def _ints(s: str) -> tuple:
    return tuple(int(x) for x in s.split("\x1f") if x)


def _vals(s: str) -> dict:
    out = {}
    for item in s.split("\x1f"):
        if not item:
            continue
        name, _, rest = item.partition("=")
        t, _, v = rest.partition(":")
        out[name] = {"N": lambda _: None, "B": lambda x: bool(int(x)), "I": int,
                     "F": float, "S": str}[t](v)
    return out


def py_row(row) -> tuple:
    kinds, holders, actions = list(Kind), list(Holder), list(Action)
    return (row.number, row.proto, row.summary, actions.index(row.action),
            tuple(holders.index(h) for h in row.holders), kinds.index(row.fact.kind),
            tuple(kinds.index(k) for k in row.fact.also), tuple(row.fact.refs), row.fact.key,
            row.flow, dict(row.fact.values),
            {k: v for k, v in row.fields.items() if k not in COMMON})


def check(lib: ctypes.CDLL, path: str, ports: tuple[int, ...]) -> str:
    arr = (ctypes.c_int * len(ports))(*ports)
    lib.drv_start(arr, len(ports))
    ann = Annotator(ports)
    buf = ctypes.create_string_buffer(1 << 20)
    py, got, t0 = [], [], None
    for n, r in enumerate(read_pcap(path), 1):
        d = decode(r.data, r.linktype, r.time, r.orig_len, r.interface)
        t0 = d.time if t0 is None else t0
        udp = d.proto == PROTO_UDP and not (d.error and d.sport is None)
        rc = lib.drv_feed(1 if udp else 0, n, d.time, d.time - t0, d.sport or 0, d.dport or 0,
                          d.endpoint("src").encode(), d.endpoint("dst").encode(),
                          bytes(d.payload or b""), len(d.payload or b""), buf, len(buf))
        if rc < 0:
            return f"declined: {lib.drv_why().decode()}"
        got += c_rows(buf.value.decode())
        py += ann.feed(d)
    lib.drv_finish(buf, len(buf))
    got += c_rows(buf.value.decode())
    py += ann.finish()
    same = 0
    for p, c in zip(py, got, strict=True):
        if p.proto not in ("DNS", "QUIC") or p.fact.kind in SKIP:
            continue
        want = py_row(p)
        if c[9] == "":
            want = (*want[:9], "", *want[10:])
        if want != c:
            return f"row {p.number} differs:\n  python {want}\n  C      {c}"
        same += 1
    return f"{same} DNS/QUIC rows identical"


def main() -> None:
    args = sys.argv[1:]
    ports = tuple(sorted(DNS_PORTS))
    if "--dns-port" in args:
        i = args.index("--dns-port")
        ports = (int(args[i + 1]),)
        del args[i:i + 2]
    lib = build()
    for path in args:
        print(f"{path}: {check(lib, path, ports)}")


if __name__ == "__main__":
    main()
