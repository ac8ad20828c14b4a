"""Hosts with their own kernels on one machine: network namespaces joined by veth links.

Where state lives: each host is a network namespace, so it has its own interfaces, addresses,
routes, socket table, sysctls, nftables rules and conntrack table — a kernel of its own for the
network. A link is a veth pair, one end in each host: a frame sent on one end arrives on the
other. A router is a host with forwarding on (net.ipv4.ip_forward in its namespace) and, for NAT,
a masquerade rule (`protolab.net.nft`) that makes its kernel keep a conntrack entry per flow
(`protolab.net.conntrack`).

Everything is made through netlink (pyroute2), sysctls by writing /proc/sys from a thread inside
the host (`protolab.net.netns.within`), processes by `protolab.net.netns` as a module. Names carry
the run's id: host `client` of run `3fa9c1` is namespace `protolab-3fa9c1-client`, so two runs
coexist; a veth is made with each end directly in its host's namespace, so interface names
(`eth0`, `wan`) never meet in the machine's own namespace. Creation is idempotent: asking again
for what exists is not an error. `Topology` is a context manager: whatever way the block ends
(normally, an exception, Ctrl-C, SIGTERM as `lifecycle.Stopped`), its processes are killed and
its namespaces removed, taking links, rules and conntrack tables with them. While it lives it
holds a lock (/run/protolab/RUN.lock) that tells `protolab doctor --clean` the run is alive; a
run killed by SIGKILL leaves its namespaces, and the lock free: `protolab.net.leftovers`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from protolab.net import lifecycle, netns, nft

if TYPE_CHECKING:
    from protolab.net.processes import ServerProcess

PREFIX = "protolab"  #: every namespace (and lock) protolab makes starts with this
RUN_DIR = Path("/run/protolab")  #: one lock file per live run
IFNAMSIZ = 16  #: <linux/if.h>: an interface name is at most 15 bytes
IFF_NOARP = 0x80  #: <linux/if.h>: the interface resolves no addresses (no ARP)
T = TypeVar("T")


class TopologyError(Exception):
    """A host, link or rule could not be made: one line saying which, and the kernel's reason."""


def new_run_id() -> str:
    return secrets.token_hex(3)


def lock_path(run: str) -> Path:
    return RUN_DIR / f"{run}.lock"


@dataclass(frozen=True)
class Host:
    """A host: a network namespace of its own."""

    name: str  #: the host's name in the lab: "client", "router"
    netns: str  #: its namespace: protolab-RUN-NAME

    def within(self, work: Callable[[], T]) -> T:
        """`work()` run by a thread inside this host (a socket made there belongs to it)."""
        return netns.within(self.netns, work)

    def socket(self, family: int = socket.AF_INET,
               kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket of this host's kernel (it stays there whichever thread uses it)."""
        return self.within(lambda: socket.socket(family, kind))

    def run(self, *argv: str, stdin: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
        """Program `argv` run inside this host, its output captured (`ss -tn`, `conntrack -L`)."""
        return subprocess.run(netns.command(self.netns, *argv), input=stdin,
                              capture_output=True, text=True, timeout=timeout)

    def point(self, iface: str) -> str:
        """The capture point's name for interface `iface` of this host: "router:wan"."""
        return f"{self.name}:{iface}"


@dataclass(frozen=True)
class Interface:
    """One end of a link, with its address."""

    host: Host
    name: str  #: the interface's name inside its host: "eth0", "wan"
    address: str  #: its IPv4 address
    prefixlen: int

    @property
    def point(self) -> str:
        return self.host.point(self.name)


@dataclass
class _Made:
    """What this run made, removed in reverse at the end."""

    hosts: dict[str, Host] = field(default_factory=dict)
    links: list[Interface] = field(default_factory=list)
    processes: list[ServerProcess] = field(default_factory=list)


def _ipr(host: Host):
    from pyroute2 import IPRoute

    return IPRoute(netns=host.netns, flags=0)  # flags=0: never create a namespace by accident


def _exists_ok(work: Callable[[], object]) -> None:
    """Run a netlink request; what already exists is not an error (creation is idempotent)."""
    from pyroute2 import NetlinkError

    try:
        work()
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def _split(cidr: str) -> tuple[str, int]:
    address, _, plen = cidr.partition("/")
    return address, int(plen or 32)


class Topology:
    """The hosts, links, routes and rules of one run; a context manager that removes them."""

    def __init__(self, run: str | None = None) -> None:
        self.run = run or new_run_id()
        self._made = _Made()
        self._lock: int | None = None

    @property
    def hosts(self) -> dict[str, Host]:
        return dict(self._made.hosts)

    def __enter__(self) -> Topology:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(self.run), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TopologyError(f"run {self.run} is already in use by another process") from None
        self._lock = fd
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def host(self, name: str, forward: bool = False) -> Host:
        """Host `name` (made if new): its own namespace, loopback up, IPv6 off (no neighbour
        discovery chatter in the captures), IPv4 forwarding on if `forward` (a router)."""
        host = self._made.hosts.get(name)
        if host is None:
            host = Host(name, f"{PREFIX}-{self.run}-{name}")
            self._made.hosts[name] = host  # registered first: removed even if made halfway
            if not netns.path(host.netns).exists():
                from pyroute2 import netns as pyroute2_netns

                try:
                    pyroute2_netns.create(host.netns)
                except OSError as exc:
                    raise TopologyError(f"cannot create network namespace {host.netns}: "
                                        f"{exc.strerror or exc}") from None
            for key in ("net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"):
                self.sysctl(host, key, 1)
            with _ipr(host) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        if forward:
            self.sysctl(host, "net/ipv4/ip_forward", 1)
        return host

    def link(self, a: Host, a_if: str, a_addr: str, b: Host, b_if: str,
             b_addr: str) -> tuple[Interface, Interface]:
        """A veth pair: `a_if` in host a with address `a_addr` ("192.168.1.2/24"), `b_if` in
        host b; both up."""
        for name in (a_if, b_if):
            if not 0 < len(name.encode()) < IFNAMSIZ:
                raise TopologyError(f"interface name {name!r}: 1 to {IFNAMSIZ - 1} bytes")
        with _ipr(a) as ipr:
            if not ipr.link_lookup(ifname=a_if):
                ipr.link("add", ifname=a_if, kind="veth",
                         peer={"ifname": b_if, "net_ns_fd": b.netns})
        ends = []
        for host, name, cidr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            address, plen = _split(cidr)
            with _ipr(host) as ipr:
                found = ipr.link_lookup(ifname=name)
                if not found:
                    raise TopologyError(f"{host.name}: no interface {name} after making the link")
                _exists_ok(lambda ipr=ipr, i=found[0], address=address, plen=plen:
                           ipr.addr("add", index=i, address=address, prefixlen=plen))
                ipr.link("set", index=found[0], state="up")
            ends.append(Interface(host, name, address, plen))
        self._made.links.append(ends[0])
        return ends[0], ends[1]

    def route(self, host: Host, via: str, dst: str = "0.0.0.0/0") -> None:
        """A route in `host`: to `dst` (default: everywhere) through gateway `via`."""
        with _ipr(host) as ipr:
            _exists_ok(lambda: ipr.route("add", dst=dst, gateway=via))

    def sysctl(self, host: Host, key: str, value: object) -> None:
        """Write /proc/sys/KEY ("net/netfilter/nf_conntrack_udp_timeout") in `host`'s kernel."""
        def write() -> None:
            Path("/proc/sys", key).write_text(f"{value}\n")

        try:
            host.within(write)
        except OSError as exc:
            raise TopologyError(f"{host.name}: sysctl {key.replace('/', '.')}={value}: "
                                f"{exc.strerror or exc}") from None

    def read_sysctl(self, host: Host, key: str) -> str:
        return host.within(lambda: Path("/proc/sys", key).read_text().strip())

    def nft(self, host: Host, ruleset: str) -> None:
        """Load an nftables ruleset in `host` (`nft -f -`)."""
        try:
            nft.load(ruleset, host.netns)
        except nft.NftError as exc:
            raise TopologyError(f"{host.name}: {exc}") from None

    def spawn(self, host: Host, module: str, args: Sequence[str] = ()) -> ServerProcess:
        """`python -m MODULE ARGS` as a process inside `host`, once it said `ready PORT`; it is
        killed at the end of the run at the latest."""
        from protolab.net.processes import ServerProcess

        proc = ServerProcess("protolab.net.netns", args=[host.netns, module, *args])
        self._made.processes.append(proc)
        return proc

    def teardown(self) -> None:
        """Kill this run's processes, delete its links, remove its namespaces and its lock.
        Held from signals until done; safe to call twice."""
        with lifecycle.shielded():
            made, self._made = self._made, _Made()
            for proc in reversed(made.processes):
                proc.kill()
            for end in made.links:  # deleting one end deletes the pair, now
                _quietly(lambda end=end: _delete_link(end))
            for host in made.hosts.values():
                _quietly(lambda host=host: remove_namespace(host.netns))
            if self._lock is not None:
                _quietly(lambda: lock_path(self.run).unlink(missing_ok=True))
                os.close(self._lock)
                self._lock = None


def _delete_link(end: Interface) -> None:
    with _ipr(end.host) as ipr:
        found = ipr.link_lookup(ifname=end.name)
        if found:
            ipr.link("del", index=found[0])


def remove_namespace(name: str) -> None:
    """Unmount and unlink /run/netns/NAME (as `ip netns del`): the kernel destroys the namespace,
    with its interfaces, once nothing else holds it."""
    if netns.path(name).exists():
        from pyroute2 import netns as pyroute2_netns

        pyroute2_netns.remove(name)


def _quietly(step: Callable[[], object]) -> None:
    """One teardown step; a failure does not stop the others (what is left, `doctor --clean`
    finds)."""
    try:
        step()
    except Exception:  # noqa: BLE001 - every step runs whatever one of them met
        pass


#: What `probe` checks, in order: each needs the ones before it.
CAPABILITIES = ("network namespaces", "veth links", "nftables NAT", "conntrack table")


def probe() -> dict[str, str | None]:
    """Does each of CAPABILITIES work here? None when it does, else why not (one line). For
    real: two hosts, a link, a masquerade table, one datagram, its entry in the conntrack table;
    all removed after."""
    if os.geteuid() != 0:
        return dict.fromkeys(CAPABILITIES, "needs root (namespaces, links and rules are the "
                                           "kernel's)")
    from protolab.net import conntrack

    def datagram_tracked(topo: Topology) -> None:
        a = topo.hosts["a"]
        with a.socket() as s:
            s.sendto(b"protolab doctor", ("198.18.0.2", 9))
        entries = [e for e in conntrack.read(a.netns) if e.original.dst == "198.18.0.2"]
        if not entries:
            raise TopologyError("the datagram left, but the conntrack table has no entry")

    steps: list[tuple[str, Callable[[Topology], object]]] = [
        ("network namespaces", lambda t: (t.host("a"), t.host("b"))),
        ("veth links", lambda t: t.link(t.hosts["a"], "eth0", "198.18.0.1/30",
                                        t.hosts["b"], "eth0", "198.18.0.2/30")),
        ("nftables NAT", lambda t: t.nft(t.hosts["a"], nft.masquerade("eth0"))),
        ("conntrack table", datagram_tracked),
    ]
    result: dict[str, str | None] = {}
    with Topology() as topo:
        for name, step in steps:
            failed = next((n for n, why in result.items() if why), None)
            if failed:
                result[name] = f"not tried: {failed} failed"
                continue
            try:
                step(topo)
                result[name] = None
            except Exception as exc:  # noqa: BLE001 - any failure is this capability's answer
                result[name] = " ".join(str(exc).split()) or type(exc).__name__
    return result


@dataclass(frozen=True)
class NatNet:
    """client — router (masquerade) — server: the inside uses private addresses (RFC 1918), the
    outside a documentation prefix (RFC 5737 TEST-NET-3)."""

    client: Host
    router: Host
    server: Host
    client_if: Interface  #: client:eth0, 192.168.1.2
    inside: Interface  #: router:lan, 192.168.1.1, the client's gateway
    outside: Interface  #: router:wan, 203.0.113.1: every inside flow leaves with this source
    server_if: Interface  #: server:eth0, 203.0.113.2


def client_router_server(topo: Topology) -> NatNet:
    """Build the NAT lab's network in `topo` (idempotent, like every step of it)."""
    client, router, server = topo.host("client"), topo.host("router", forward=True), \
        topo.host("server")
    client_if, inside = topo.link(client, "eth0", "192.168.1.2/24", router, "lan",
                                  "192.168.1.1/24")
    outside, server_if = topo.link(router, "wan", "203.0.113.1/24", server, "eth0",
                                   "203.0.113.2/24")
    topo.route(client, inside.address)
    topo.nft(router, nft.masquerade(outside.name))
    return NatNet(client, router, server, client_if, inside, outside, server_if)


@dataclass(frozen=True)
class AttackNet:
    """client — server — attacker, the server in the middle; spoofed sources (RFC 5737
    TEST-NET-2) are routed to a sink inside the server's own namespace, so its answers to them
    are sent (and captured there) but never leave the server."""

    client: Host
    server: Host
    attacker: Host
    client_if: Interface  #: client:eth0, 192.0.2.2 (TEST-NET-1)
    server_if: Interface  #: server:eth0, 192.0.2.1: the address the lab's listeners use
    attacker_if: Interface  #: attacker:eth0, 203.0.113.2 (TEST-NET-3)
    sink: str  #: the server's interface the spoofed sources are routed to
    spoofed: str  #: the prefix the attacker's spoofed SYNs come from


def blackhole(topo: Topology, host: Host, prefix: str, ifname: str = "sink") -> None:
    """Route `prefix` in `host` to a veth whose other end is in the same host, with no address
    and no ARP: what goes there is sent (a capture point sees it) and then dropped, as it is
    for no address of the host and forwarding is off. (A `blackhole` route would refuse the
    packet before it is sent, and a SYN whose answer cannot be routed is not queued at all.)"""
    with _ipr(host) as ipr:
        if not ipr.link_lookup(ifname=ifname):
            ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": f"{ifname}-end"})
        for name in (ifname, f"{ifname}-end"):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=index, flags=IFF_NOARP, change=IFF_NOARP)
        _exists_ok(lambda: ipr.route("add", dst=prefix, oif=index))


def server_client_attacker(topo: Topology) -> AttackNet:
    """Build lab 07's network in `topo`: the server's source-address check is off (the
    attacker's packets carry other hosts' addresses; rp_filter is per namespace)."""
    client, server, attacker = topo.host("client"), topo.host("server"), topo.host("attacker")
    server_if, client_if = topo.link(server, "eth0", "192.0.2.1/24", client, "eth0",
                                     "192.0.2.2/24")
    att, attacker_if = topo.link(server, "att", "203.0.113.1/24", attacker, "eth0",
                                 "203.0.113.2/24")
    topo.route(attacker, att.address)
    spoofed = "198.51.100.0/24"
    blackhole(topo, server, spoofed)
    for conf in ("all", "default", "eth0", "att", "sink"):
        topo.sysctl(server, f"net/ipv4/conf/{conf}/rp_filter", 0)
    return AttackNet(client, server, attacker, client_if, server_if, attacker_if, "sink",
                     spoofed)
