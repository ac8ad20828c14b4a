"""What `protolab hijack-demo` prints after its run: the capture read back, the matrix design ×
logout × deny-list, the findings, the cookie's flags explained, and the table.

Where state lives: nowhere new; this renders `protolab.labs.hijack`'s data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from protolab.analysis.exposed import scan
from protolab.analysis.http_streams import http_messages
from protolab.analysis.observe import packet_list
from protolab.labs.hijack import LAB, SETUPS, WHERE_TITLE, HijackResult
from protolab.labs.hijack_findings import NOTES, build_findings, messages_of
from protolab.labs.output import (
    indent,
    print_findings,
    print_state_table,
    print_summary,
    show_capture,
    table,
)
from protolab.wire.packets import decode
from protolab.wire.pcap import read_pcap

Out = Callable[[str], None]


def report(result: HijackResult, captured: bool, path: Path, out: Out) -> None:
    messages = []
    shown: list[str] = []
    if captured and result.capture is not None:
        result.rows = show_capture(result.capture, shown.append)
        packets = [(n, decode(r.data, r.linktype, r.time))
                   for n, r in enumerate(read_pcap(path), 1)]
        result.final = scan(packets)
        messages = http_messages(packets)
    result.findings = build_findings(result, captured, messages)
    out("\nThe matrix, measured in this run: the stolen session replayed from 127.0.0.2 "
        "before and after the victim's logout:")
    out(indent(table([_row(result, s.name, s.denylist, messages) for s in SETUPS],
                     ("design", "deny-list", "replay while logged in", "after logout",
                      "packets"))))
    notes = [o for o in result.findings.observations if o.key.startswith(NOTES)]
    print_findings([o for o in result.findings.observations if o not in notes], out)
    out("\nThe cookie's flags, read from the capture's Set-Cookie, and what each one stops:")
    print_findings(notes, out)
    for line in shown:
        out(line)
    if captured:
        out(f"Everything it exposes: protolab inspect {path} --exposed")
        out(f"Decrypt the TLS part: tshark -r {path} -o tls.keylog_file:{result.keylog} -d "
            f"tcp.port=={result.tls.port},tls -Y http.cookie")
    print_state_table(WHERE_TITLE, result.findings.where, out)
    print_summary(LAB, result.findings, out)


def _row(result: HijackResult, name: str, denylist: bool, messages: list) -> tuple:
    before, after = result.get(name, "replay"), result.get(name, "replay after logout")
    packets = [n for ex in (before, after) if ex for n in messages_of(messages, ex)]
    return (name, "yes" if denylist else "-",
            _verdict(before), _verdict(after), packet_list(packets) or "-")


def _verdict(ex) -> str:
    if ex is None:
        return "not run"
    return ("accepted" if ex.status == 200 else "refused") + f" ({ex.said()})"
