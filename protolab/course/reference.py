"""The committed reference captures: list them, check them, regenerate them in one command.

Where state lives: in the files under captures/. Each demo's reference is `<demo>.ref.pcap`
(classic pcap, for any tool), `<demo>.ref.pcapng` (the same packets with each note as a packet
comment; for QUIC with the TLS secrets inside) and, for QUIC, `<demo>.ref.keys`; a lab captured
at several points (`nat-demo`) has only `<demo>.ref.pcapng`, its points named, its notes inside.
A reference is good when its packets still tell the demo's story
(`protolab.analysis.story_checks`), not when its bytes match: ports, IDs and times change with
every run. `refresh` runs each demo as root into a scratch directory, checks the new capture's
story and completeness, and only then replaces the old files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from protolab.analysis.annotate import annotate_file
from protolab.analysis.story_checks import missing
from protolab.labs import DEMOS as REGISTRY
from protolab.wire.paths import MULTI_POINT, REFERENCE_DIR, reference_file
from protolab.wire.pcap import PcapError

DEMOS = tuple(REGISTRY)  #: the captured demos, from the one registry
#: Captures refreshed with the demos but checked by their lab's graded questions (no story yet).
LAB_ONLY = ("lb",)
DEFAULT_DIR = REFERENCE_DIR


class RefreshError(Exception):
    """Refreshing cannot start here (no capture rights, no such demo): one line."""


@dataclass(frozen=True)
class Status:
    demo: str
    path: Path
    packets: int
    missing: tuple[str, ...]  #: story steps the capture does not show
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.missing

    @property
    def verdict(self) -> str:
        if self.ok:
            return ("lab 05's questions are answered from it" if self.demo in LAB_ONLY
                    else "every step of the story is in the packets")
        return self.error or "MISSING: " + ", ".join(m.split(":")[0] for m in self.missing)


def status(demo: str, directory: Path = DEFAULT_DIR) -> Status:
    path = reference_file(demo, directory)
    try:
        rows = list(annotate_file(path))
    except PcapError as exc:
        return Status(demo, path, 0, (), str(exc))
    if demo in LAB_ONLY:
        from protolab.course.grading import LABS, CheckError, facts

        try:
            facts(next(x for x in LABS if x.demo == demo), path)
        except CheckError as exc:
            return Status(demo, path, len(rows), (f"questions: {exc}",))
        return Status(demo, path, len(rows), ())
    return Status(demo, path, len(rows), tuple(missing(demo, rows)))


def _run_lb(pcap: Path) -> tuple[object, str]:
    """Lab 05's capture: `protolab lb`'s workflow (memory design, round-robin, 3 backends)."""
    from protolab.labs.cluster import Cluster, Variant
    from protolab.labs.lb import captured_workflow
    from protolab.net.lb import Policy
    from protolab.protocols.webapp import Design

    with Cluster(Variant(Design.MEMORY), Policy.ROUND_ROBIN, n=3) as cluster:
        # memory + round-robin: some get 401, the lesson
        cap, replies = captured_workflow(cluster, pcap)
    if cap.summary.kernel_drops or len(replies) != 4 or replies[0][2].status != 200:
        return cap.summary, "capture incomplete, or the login failed"
    return cap.summary, ""


def _run(demo: str, pcap: Path, out: Callable[[str], None]) -> tuple[object, str]:
    """Run `demo` captured into `pcap`; return (result, why it is not good enough, or "")."""
    if demo == "lb":
        return _run_lb(pcap)
    from protolab.labs import demo_module

    run = demo_module(demo).run
    result = run(pcap=pcap, out=out)
    return result, result.problem()


def _show_findings(demo: str, result: object, out: Callable[[str], None]) -> None:
    """The run's "where state lives" rows, with their evidence, and anything not observed."""
    from protolab.labs.output import print_findings, print_state_table

    findings = getattr(result, "findings", None)
    if findings is None:
        return
    print_state_table(f"{demo} — where state lives, in this run:", findings.where, out)
    print_findings(findings.not_observed(), out)


def save_pcapng(demo: str, pcap: Path, target: Path | str, keylog: Path | None = None,
                dns_server_port: int | None = None, purpose: str = "") -> tuple[int, bool]:
    """Save a demo's capture as annotated pcapng: each note a packet comment, a section comment
    naming the lab and how it was made, the TLS secrets inside when `keylog` exists. Returns
    (packets, secrets embedded)."""
    from protolab.analysis.annotate import DNS_PORTS
    from protolab.analysis.export import write_annotated
    from protolab.course.grading import LABS

    secrets = keylog.read_bytes() if keylog is not None and keylog.exists() else None
    lab = next((f" (lab {x.number}, {x.title})" for x in LABS if x.demo == demo), "")
    ports = DNS_PORTS | ({dns_server_port} if dns_server_port else set())
    count = write_annotated(pcap, target, secrets=secrets, dns_ports=frozenset(ports),
                            made_by=f"`protolab {demo}`{lab}{purpose}", where=_where(pcap))
    return count, secrets is not None


def _where(pcap: Path) -> str:
    """Where the capture was taken, as its file says: the named capture points of a capture in
    network namespaces, else loopback."""
    from protolab.wire.pcap import read_pcap

    points = list(dict.fromkeys(r.interface for r in read_pcap(pcap) if r.interface))
    if not points:
        return "on loopback"
    return f"at {len(points)} points in network namespaces ({', '.join(points)})"


@dataclass(frozen=True)
class Refreshed:
    demo: str
    written: tuple[Path, ...]  #: empty when the old reference was kept
    problem: str  #: why the new capture was not taken, or ""


def refresh(demos: Sequence[str] = DEMOS + LAB_ONLY, directory: Path = DEFAULT_DIR,
            out: Callable[[str], None] = print) -> list[Refreshed]:
    """Regenerate each demo's reference files; keep the old ones when the new run falls short."""
    from protolab.wire.capture import capture_denied_reason, fix_hint

    denied = capture_denied_reason()
    if denied:
        raise RefreshError(f"refreshing reference captures needs capture: {denied}; "
                           f"{fix_hint()}")
    directory.mkdir(parents=True, exist_ok=True)
    done = []
    for demo in demos:
        scratch = Path(tempfile.mkdtemp(prefix=".refresh-", dir=directory))
        try:
            native = demo in MULTI_POINT  # captured at several points: its pcapng is all
            pcap = scratch / (f"{demo}.run.pcapng" if native else f"{demo}.ref.pcap")
            lines: list[str] = []
            result, problem = _run(demo, pcap, lines.append)
            _show_findings(demo, result, out)
            if native and not problem:
                save_pcapng(demo, pcap, reference_file(demo, scratch),
                            purpose=" for `protolab captures --refresh`")
            new = None if problem else status(demo, scratch)
            if problem or not new.ok:
                problem = problem or f"not good enough: {new.verdict}"
                done.append(Refreshed(demo, (), problem))
                out(f"{demo}: KEPT the old reference — {problem}")
                continue
            if not native:
                save_pcapng(demo, pcap, scratch / f"{demo}.ref.pcapng",
                            pcap.with_suffix(".keys"),
                            result.server[1] if demo == "dns-demo" else None,
                            " for `protolab captures --refresh`")
            written = []
            for name in (f"{demo}.ref.pcap", f"{demo}.ref.pcapng", f"{demo}.ref.keys"):
                if (scratch / name).exists():
                    os.replace(scratch / name, directory / name)
                    written.append(directory / name)
            done.append(Refreshed(demo, tuple(written), ""))
            out(f"{demo}: refreshed — {', '.join(p.name for p in written)} ({new.verdict})")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return done
