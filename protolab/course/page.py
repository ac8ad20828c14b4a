"""`--html PATH` on a demo: the ladder of its capture, with what the demo printed beside it.

Where state lives: in the page file only. While the demo runs, `DemoPage.out` passes each line
on and keeps it; when the run is over the page is written (atomically) from the run's own
capture, annotated, and those lines as panels. Without a capture of this run there is no diagram
of it: the page says so, or draws the reference capture the demo replayed, titled as the
reference.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from protolab.analysis.ladder import build
from protolab.analysis.ladder_html import panels_of, write_html

if TYPE_CHECKING:
    from protolab.analysis.facts import Row
    from protolab.course.replay import ReplayResult
    from protolab.wire.capture import CaptureSummary

Out = Callable[[str], None]


class PageError(Exception):
    """The page cannot be written where asked: one line for the user."""


def check_target(path: str | os.PathLike[str]) -> None:
    """Fail before the demo runs when `path` cannot be written: a directory, a path under a
    file, a directory that cannot be made (it is made now, as the write would make it)."""
    target = Path(path)
    if target.is_dir():
        raise PageError(f"--html {path}: is a directory; name the page's file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PageError(f"--html {path}: {target.parent} is not a directory") from None
    except OSError as exc:
        raise PageError(f"--html {path}: {exc.strerror or exc}") from None
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise PageError(f"--html {path}: cannot write in {target.parent}")


class DemoPage:
    """The page one demo run writes: its printed lines kept, then its capture drawn."""

    def __init__(self, demo: str, path: str | os.PathLike[str], out: Out) -> None:
        check_target(path)
        self.demo = demo
        self.path = path
        self.lines: list[str] = []
        self._out = out

    def out(self, line: str = "") -> None:
        """The demo's `out`: the line goes on, and is kept for the page."""
        self.lines.append(line)
        self._out(line)

    def write_run(self, summary: CaptureSummary | None, rows: Sequence[Row],
                  replayed: ReplayResult | None = None) -> None:
        """After a live run: this run's capture; else the replayed reference; else no diagram."""
        if summary is not None and not summary.off_reason:
            self._write(rows, f"protolab {self.demo}: this run's capture, {summary.path}")
            self._out(f"--html: the ladder of this run's {len(rows)} packets, with what it "
                      f"printed beside it → {self.path}")
            return
        why = f"capture is off: {summary.off_reason}" if summary is not None else "no capture"
        if replayed is not None:
            shown = _shown(self.demo, replayed.path)
            self._write(replayed.rows, f"protolab {self.demo}: the reference capture {shown} "
                                       f"(not this run)",
                        note=f"No diagram of this run ({why}): this is the reference capture "
                             f"{shown}, replayed.")
            self._out(f"--html: no diagram of this run ({why}); the page draws the reference "
                      f"capture {shown} → {self.path}")
            return
        self._write((), f"protolab {self.demo}: this run, not captured",
                    note=f"No diagram of this run: {why}. Its printed output is beside.")
        self._out(f"--html: no diagram of this run ({why}); the page holds what it printed "
                  f"→ {self.path}")

    def write_replay(self, result: ReplayResult) -> None:
        """After `--replay`: the diagram of the capture it read."""
        shown = _shown(self.demo, result.path)
        self._write(result.rows, f"protolab {self.demo} --replay: {shown}")
        self._out(f"--html: the ladder of {shown} ({len(result.rows)} packets) → {self.path}")

    def _write(self, rows: Sequence[Row], title: str, note: str = "") -> None:
        try:
            write_html(build(rows), self.path, title, panels_of(self.lines), note)
        except OSError as exc:
            raise PageError(f"cannot write {self.path}: {exc.strerror or exc}") from None


def _shown(demo: str, path: Path) -> Path:
    from protolab.course.replay import shown_capture

    return shown_capture(demo, path)
