"""What every demo prints the same way: tables, the capture-off line, the annotated capture.

Where state lives: nowhere; these are pure formatting helpers shared by the labs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from protolab.analysis.annotate import DNS_PORTS, Row, annotate_records
from protolab.analysis.observe import Findings, Observation, StateRow, Status, where_rows
from protolab.analysis.table import format_rows
from protolab.wire.capture import CaptureSummary, fix_hint
from protolab.wire.paths import reference_capture
from protolab.wire.pcap import read_pcap

Out = Callable[[str], None]


def table(rows: list, headers: tuple[str, ...], widths: list[int | None] | None = None) -> str:
    """A plain table; `widths` wraps long cells inside their column."""
    from tabulate import tabulate

    return tabulate(rows, headers=headers, maxcolwidths=widths)


def indent(text: str, n: int = 3) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def capture_off_line(summary: CaptureSummary, lab: str, asked: str) -> str:
    """One line: capture is off, why, the fix (unless the user asked for it), the reference."""
    fix = "" if summary.off_reason == asked else f"; {fix_hint()}"
    return (f"capture off: {summary.off_reason}{fix}. The demo runs anyway; reference capture: "
            f"protolab inspect {reference_capture(lab)}")


def show_capture(summary: CaptureSummary, out: Out,
                 dns_ports: Iterable[int] = DNS_PORTS) -> list[Row]:
    """Read the written capture back (what any reader of the file sees), annotate and print it."""
    path: Path | None = summary.path
    source = read_pcap(path) if path else summary.records
    rows = list(annotate_records(source, dns_ports))
    out(f"\nThe capture, read back and annotated from the packets alone ({summary.packets} "
        f"packets → {path}):")
    out(format_rows(rows))
    out(f"Open it in Wireshark, or: protolab inspect {path}")
    return rows


def print_state_table(title: str, rows: Sequence[StateRow], out: Out,
                      did: str = "this run did") -> None:
    """A lab's "where state lives" table: every row says what this run did to that state and
    what happened, with its evidence, or is marked as an explanation (not tried here / live run
    only). Long cells wrap inside their column; the table fits 120 columns."""
    from tabulate import tabulate

    out(f"\n{title}")
    out(tabulate(where_rows(rows), headers=("state", "held by", did, "what happened",
                                            "evidence"),
                 maxcolwidths=[22, 14, 20, 32, 24]))


def print_summary(lab: str, findings: Findings, out: Out) -> None:
    """The run's last lines: each finding and row counted once, and what was not observed."""
    unique = {o.key: o for o in findings.all()}.values()
    counts = Counter(o.status for o in unique)
    line = ", ".join(f"{counts[s]} {s.value}" for s in Status if counts[s])
    out(f"\n{lab}: {line}.")
    for o in unique:
        if o.failed:
            out(f"{lab}: {o.line()}")


def print_tally(rows: Sequence[StateRow], out: Out) -> None:
    """One line under the table: how many rows were observed, explained, not observed."""
    counts = Counter(r.outcome.status for r in rows)
    failed = [r.outcome.key for r in rows if r.outcome.failed]
    line = ", ".join(f"{counts[s]} {s.value}" for s in Status if counts[s])
    out(f"   rows: {line}" + (f" — not observed: {', '.join(failed)}" if failed else ""))


def print_findings(observations: Iterable[Observation], out: Out, prefix: str = "   ") -> None:
    """Each observation as one finding line (observed with its evidence, or NOT OBSERVED)."""
    for o in observations:
        out(prefix + o.line())
