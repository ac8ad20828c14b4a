"""Where captures go, and where the committed reference captures are.

Live captures go to ./captures/<lab>.pcap (ignored by git); the reference capture of each lab is
committed as captures/<lab>.ref.pcap in the source tree.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def default_capture_path(lab: str) -> Path:
    return Path("captures") / f"{lab}.pcap"


def reference_capture(lab: str) -> Path:
    """The committed reference capture, as a path the user can type from here."""
    ref = SOURCE_ROOT / "captures" / f"{lab}.ref.pcap"
    try:
        return ref.relative_to(Path.cwd())
    except ValueError:
        return ref
