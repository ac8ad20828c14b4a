"""Where captures go, and where the committed reference captures are.

Live captures go to ./captures/<lab>.pcap (ignored by git); a run with faults writes its own,
./captures/<lab>-faults.pcap, so it never replaces the capture a worksheet is graded against. The
reference capture of each lab is committed as captures/<lab>.ref.pcap in the source tree. A lab
captured at several points at once (`MULTI_POINT`) writes pcapng instead, `<lab>.pcapng` and
`<lab>.ref.pcapng`: a classic pcap cannot say at which point each packet was seen.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = SOURCE_ROOT / "captures"
#: Labs captured at several points of hosts with their own kernels: their capture is pcapng
#: (each packet names its interface), and so is their reference.
MULTI_POINT = frozenset({"nat-demo", "tcp-attack-demo"})


def capture_suffix(lab: str) -> str:
    """".pcapng" for a lab captured at several points, else ".pcap"."""
    return ".pcapng" if lab in MULTI_POINT else ".pcap"


def default_capture_path(lab: str, faults: bool = False) -> Path:
    """Where a run writes its capture unless told: a fault run beside, not over, the plain one
    (`protolab check` grades captures/<lab>.pcap)."""
    return Path("captures") / f"{lab}{'-faults' if faults else ''}{capture_suffix(lab)}"


def hosts_capture_path(lab: str) -> Path:
    """Where a loopback lab run between hosts with their own kernels (`tcp-demo --hosts`) writes
    its capture: pcapng, as it is captured at several points, and beside the plain run's capture
    that `protolab check` grades, never over it."""
    return Path("captures") / f"{lab}-hosts.pcapng"


def reference_file(lab: str, directory: Path = REFERENCE_DIR) -> Path:
    """The committed reference capture (absolute, or in `directory`)."""
    return directory / f"{lab}.ref{capture_suffix(lab)}"


def reference_capture(lab: str) -> Path:
    """The committed reference capture, as a path the user can type from here."""
    ref = reference_file(lab)
    try:
        return ref.relative_to(Path.cwd())
    except ValueError:
        return ref
