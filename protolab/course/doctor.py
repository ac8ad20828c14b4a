"""`protolab doctor`: what works on this machine, and the exact fix for what does not.

Where state lives: nowhere; this only asks the machine. Each check is a plain function returning a
`Check`, so tests can make a capability missing (a PATH without tshark) and see it reported.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from protolab.wire.capture import capture_denied_reason, fix_hint
from protolab.wire.kernel_view import tracing_denied_reason

PACKAGES = ("scapy", "dnspython", "aioquic", "tabulate", "cryptography", "PyJWT", "redis",
            "pyroute2")
TOOLS = {
    "tshark": ("reads and decrypts the captures in the tests and worksheets",
               "sudo apt-get install tshark"),
    "capinfos": ("shows an annotated pcapng's section comment", "sudo apt-get install tshark"),
    "dig": ("the real DNS client in the DNS lab's tests", "sudo apt-get install dnsutils"),
    "curl": ("the real HTTP client in the backend lab", "sudo apt-get install curl"),
    "redis-server": ("the shared session store with Redis", "sudo apt-get install redis-server"),
    "nginx": ("the load balancer you will use at work (--lb nginx)",
              "sudo apt-get install nginx-light"),
    "setpriv": ("runs a demo without capabilities in the tests", "sudo apt-get install util-linux"),
    "ip": ("runs programs inside a lab's hosts (ip netns exec)", "sudo apt-get install iproute2"),
    "nft": ("loads the NAT router's rules in its host", "sudo apt-get install nftables"),
    "conntrack": ("lists a router's conntrack table, as you would at work",
                  "sudo apt-get install conntrack"),
}
#: The fix for each capability of hosts with their own kernels (`protolab.net.topology.probe`).
TOPOLOGY_FIXES = {
    "network namespaces": "run as root, on Linux with CONFIG_NET_NS",
    "veth links": "a kernel with CONFIG_VETH",
    "nftables NAT": "sudo apt-get install nftables; a kernel with CONFIG_NF_TABLES and NAT",
    "conntrack table": "a kernel with CONFIG_NF_CONNTRACK and CONFIG_NF_CT_NETLINK",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    needed: bool = True  #: False: nice to have, does not stop a lab from running fully


def checks(env: Mapping[str, str] | None = None) -> list[Check]:
    path = (env if env is not None else os.environ).get("PATH", "")
    out = [Check("python", sys.version_info >= (3, 11), platform.python_version(),
                 "install Python 3.11 or newer")]
    for pkg in PACKAGES:
        try:
            out.append(Check(pkg, True, importlib.metadata.version(pkg)))
        except importlib.metadata.PackageNotFoundError:
            out.append(Check(pkg, False, "not installed", "pip install -e ."))
    denied = capture_denied_reason()
    out.append(Check("capture (root or CAP_NET_RAW)", denied is None,
                     "packet sockets open" if denied is None else denied, fix_hint()))
    out.append(Check("loopback interface", os.path.exists("/sys/class/net/lo"),
                     "lo" if os.path.exists("/sys/class/net/lo") else "no 'lo' interface",
                     "the labs capture on Linux's loopback interface 'lo'"))
    import ctypes.util

    libpcap = ctypes.util.find_library("pcap")
    out.append(Check("libpcap", True, libpcap or "not installed (not needed: protolab filters "
                     "without it)", needed=False))
    from protolab.analysis.fast_inspect import status

    compiled, which = status()
    out.append(Check("inspect's compiled fast path", compiled, which,
                     "pip install -e . on a machine with a C compiler and Python's headers "
                     "(apt-get install gcc python3-dev); the Python path prints the same",
                     needed=False))
    tracing = tracing_denied_reason()
    out.append(Check("kernel TCP state record (tracefs)", tracing is None,
                     "sock:inet_sock_set_state readable" if tracing is None else tracing,
                     "run tcp-demo as root (tracefs is mounted at /sys/kernel/tracing)"))
    from protolab.net.netem import netem_denied_reason

    netem = netem_denied_reason()
    out.append(Check("tc netem (--netem faults)", netem is None,
                     "netem qdisc works in a namespace" if netem is None else netem,
                     "use the userspace fault proxy (the same options without --netem), or a "
                     "kernel with CONFIG_NET_SCH_NETEM", needed=False))
    out += topology_checks()
    for tool, (why, fix) in TOOLS.items():
        found = shutil.which(tool, path=path)
        out.append(Check(tool, found is not None, found or f"missing: {why}", fix))
    out.append(_bind("127.0.0.2 (QUIC migration)", "127.0.0.2",
                     "Linux routes all of 127.0.0.0/8 to lo; elsewhere: sudo ifconfig lo0 "
                     "alias 127.0.0.2"))
    out.append(_bind("free ports on 127.0.0.1", "127.0.0.1", "free some ports or raise "
                     "net.ipv4.ip_local_port_range"))
    return out


def topology_checks() -> list[Check]:
    """Hosts with their own kernels: each capability tried for real, then removed."""
    from protolab.net.topology import probe

    return [Check(name, why is None, "works (tried, then removed)" if why is None else why,
                  TOPOLOGY_FIXES[name]) for name, why in probe().items()]


def clean(out: Callable[[str], None]) -> int:
    """`doctor --clean`: remove what killed runs left (namespaces, interfaces, nft tables, locks
    of runs no process holds); say each; return how many could not be removed."""
    from protolab.net import leftovers

    found = leftovers.find()
    failed = 0
    for left in found:
        try:
            leftovers.remove(left)
            out(f"removed {left.line()}")
        except Exception as exc:  # noqa: BLE001 - said, and the others still go
            failed += 1
            out(f"could not remove {left.line()}: {' '.join(str(exc).split())}")
    if not found:
        out("nothing left over from earlier runs")
    return failed


def _bind(name: str, host: str, fix: str) -> Check:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        return Check(name, True, f"bound {host}:{port}")
    except OSError as exc:
        return Check(name, False, exc.strerror or str(exc), fix)


def report(results: list[Check]) -> tuple[str, bool]:
    """The screen, and whether every lab can run fully."""
    from protolab.labs.output import table

    rows = [("ok" if c.ok else ("MISSING" if c.needed else "-"), c.name, c.detail,
             "" if c.ok else c.fix) for c in results]
    ready = all(c.ok or not c.needed for c in results)
    verdict = ("every lab can run fully here" if ready else
               "some labs will skip steps here: see MISSING, each with its fix")
    return table(rows, ("", "what", "here", "fix")) + "\n" + verdict, ready
