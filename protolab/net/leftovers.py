"""What a killed run left behind, and its removal (`protolab doctor --clean`).

Where state lives: a namespace outlives the process that made it as long as its name is mounted
under /run/netns, and with it its links, rules and conntrack table. A run that ends in any way
Python sees removes them (`protolab.net.topology.Topology`); SIGKILL leaves them. A leftover is
anything of protolab's (its name starts with the prefix) whose run is not alive: a live run holds
the lock /run/protolab/RUN.lock, which the kernel frees when the process dies, however it dies;
for names that carry a process id instead (`--netem`'s protolab-PID), that process must be gone.
In the machine's own namespace protolab makes no interface and no nftables table, so one there
with its prefix is left over from a run that was killed while making it.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass

from protolab.net import netns, nft
from protolab.net.topology import PREFIX, RUN_DIR, lock_path, remove_namespace


@dataclass(frozen=True)
class Leftover:
    kind: str  #: "namespace", "interface", "nft table", "lock"
    name: str
    family: str = ""  #: an nft table's family ("ip")

    def line(self) -> str:
        return f"{self.kind} {self.name}"


def run_alive(run: str) -> bool:
    """Does a live process hold this run's lock?"""
    path = lock_path(run)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing frees the lock if we took it
    return False


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def name_alive(name: str) -> bool:
    """Is the run that a protolab name belongs to alive? (its lock, or the PID in it)"""
    parts = re.split(r"[-_]", name[len(PREFIX):].strip("-_"))
    if parts and parts[0] and run_alive(parts[0]):
        return True
    return any(p.isdigit() and _pid_alive(int(p)) for p in parts)


def _ours(name: str) -> bool:
    return name.startswith(PREFIX) and not name_alive(name)


def find() -> list[Leftover]:
    """Every leftover of a run that is not alive any more."""
    found = [Leftover("namespace", n) for n in sorted(_listdir(netns.NETNS_DIR)) if _ours(n)]
    found += [Leftover("interface", n) for n in _root_links() if _ours(n)]
    try:
        found += [Leftover("nft table", n, fam) for fam, n in nft.tables() if _ours(n)]
    except nft.NftError:
        pass  # no nft here: no table either
    found += [Leftover("lock", n[:-len(".lock")]) for n in sorted(_listdir(RUN_DIR))
              if n.endswith(".lock") and not run_alive(n[:-len(".lock")])]
    return found


def remove(left: Leftover) -> None:
    if left.kind == "namespace":
        remove_namespace(left.name)
    elif left.kind == "interface":
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=left.name):
                ipr.link("del", index=index)
    elif left.kind == "nft table":
        nft.delete_table(left.family, left.name)
    elif left.kind == "lock":
        lock_path(left.name).unlink(missing_ok=True)


def _listdir(path: os.PathLike[str]) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _root_links() -> list[str]:
    return sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []
