"""The lab DNS server on a real socket, queried by a real client (dig)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from protolab.protocols.dns import LAB_ZONE

from conftest import require_tool


def dig(server, name: str, rdtype: str) -> str:
    exe = require_tool("dig")
    host, port = server.address
    out = subprocess.run([exe, f"@{host}", "-p", str(port), name, rdtype, "+short", "+tries=1",
                          "+time=2"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("entry", LAB_ZONE, ids=lambda e: f"{e.name}{e.rdtype}")
def test_dig_gets_the_zone_answer(dns_server, entry) -> None:
    assert dig(dns_server, entry.name, entry.rdtype).splitlines() == list(entry.values)


def test_dig_gets_nxdomain(dns_server) -> None:
    exe = require_tool("dig")
    host, port = dns_server.address
    out = subprocess.run([exe, f"@{host}", "-p", str(port), "nowhere.lab.", "A", "+tries=1"],
                         capture_output=True, text=True, timeout=10)
    assert "status: NXDOMAIN" in out.stdout


def test_server_survives_garbage_datagrams(dns_server) -> None:
    garbage = [b"", b"\x00", os.urandom(5), os.urandom(11), b"\x12\x34" + bytes(10),
               os.urandom(512), b"\xff" * 12 + os.urandom(30)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for g in garbage:
            s.sendto(g, dns_server.address)
    assert dns_server.wait_until(lambda srv: srv.received >= len(garbage))
    assert dns_server.core.counters.garbage == len(garbage)
    assert dig(dns_server, "delta.lab.", "A") == "10.0.0.4"
