"""`protolab inspect --ladder / --mermaid OUT.md / --html OUT.html`: the selected packets drawn.

Where state lives: in the annotated rows (protolab.analysis.annotate); the pictures place them
(`protolab.analysis.ladder`) and draw them (`ladder_text`, `ladder_mermaid`, `ladder_html`).

Two passes over the file, so that memory stays flat for the terminal and Mermaid: the first
learns the lifelines, the marks that depend on later packets (an answer that overtook another)
and the gutter's widths, keeping no row (`ladder.Survey`); the second annotates the file again
and draws each chosen packet as it comes. The HTML page is written whole, so it keeps the chosen
packets' arrows in memory (a list): narrow a large capture with --flow, --filter or --limit.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

from protolab.analysis import ladder_mermaid
from protolab.analysis.annotate import Annotator
from protolab.analysis.export import FileError
from protolab.analysis.facts import Row
from protolab.analysis.filter import Pred, shorten
from protolab.analysis.flows import MAX_TRACKED, FlowNumbers
from protolab.analysis.inspect import Options, Tally, check_flow, select
from protolab.analysis.ladder import Arrow, Ladder, Survey
from protolab.analysis.ladder_text import TextLadder
from protolab.wire.files import atomic_file
from protolab.wire.pcap import PcapError

Out = Callable[[str], None]
Sink = Callable[[Arrow | None], None]  #: an arrow to draw; None: the end


def draw(path: str | os.PathLike[str], opts: Options, pred: Pred | None, out: Out,
         tally: Tally) -> Tally:
    """Draw what `opts` asks for; count in `tally` as the packet view does. Raises FilterError
    (no such flow), TooWide (before printing anything), FileError (an output that cannot be
    written, before drawing anything) or PcapError (after drawing what could be read)."""
    survey = Survey(opts.by)
    numbers = FlowNumbers()
    error = _each(path, opts, pred, numbers, tally, survey.see)
    check_flow(opts, numbers.count)
    if not survey.selected:
        if error is not None:
            raise error
        return tally
    title = _title(path, opts)
    with ExitStack() as stack:
        sinks = _sinks(opts, survey, title, out, stack)

        def visit(row: Row, chosen: bool) -> None:
            if chosen:
                a = survey.arrow(row)
                for sink in sinks:
                    sink(a)

        _each(path, opts, pred, FlowNumbers(), Tally(), visit)
        for sink in sinks:
            sink(None)
    if error is not None:
        raise error
    return tally


def _each(path: str | os.PathLike[str], opts: Options, pred: Pred | None, numbers: FlowNumbers,
          tally: Tally, visit: Callable[[Row, bool], None]) -> PcapError | None:
    """One pass: `visit(row, chosen)` for every readable row; the file's error, if any."""
    try:
        for row, chosen in select(path, opts, pred, Annotator(opts.dns_ports, MAX_TRACKED),
                                  numbers, tally):
            visit(row, chosen)
    except PcapError as exc:
        return exc
    return None


def _sinks(opts: Options, survey: Survey, title: str, out: Out,
           stack: ExitStack) -> list[Sink]:
    """One function per output asked for, called with each arrow, then with None at the end.
    The files are opened (or checked) first: one that cannot be written fails before any
    drawing; a terminal ladder that does not fit fails before anything is written."""
    sinks = []
    if opts.html:
        _check_writable(opts.html)
    if opts.mermaid:
        sinks.append(_mermaid(opts.mermaid, survey, title, out,
                              stack.enter_context(_writing(opts.mermaid))))
    if opts.ladder:
        drawing = TextLadder(survey.lifelines, survey.last_number, survey.last_time,
                             opts.width, opts.ascii)
        sinks.insert(0, _text(drawing, out))
    if opts.html:
        sinks.append(_html(opts.html, survey, title, out))
    return sinks


def _text(drawing: TextLadder, out: Out) -> Sink:
    for line in drawing.header():
        out(line)

    def sink(a: Arrow | None) -> None:
        for line in drawing.arrow(a) if a is not None else ():
            out(line)

    return sink


def _mermaid(target: str, survey: Survey, title: str, out: Out, f: BinaryIO) -> Sink:
    size = 0

    def write(lines: list[str]) -> None:
        nonlocal size
        text = "".join(line + "\n" for line in lines)
        size += len(text)
        f.write(text.encode())

    lines = ladder_mermaid.header(survey.lifelines, title, survey.by)
    fence = lines.index(ladder_mermaid.FENCE) + 1
    write(lines[:fence])
    start = size  # Mermaid is given what is inside the fence
    write(lines[fence:])

    def sink(a: Arrow | None) -> None:
        if a is not None:
            write(ladder_mermaid.arrow(a))
            return
        diagram = size - start
        write(ladder_mermaid.FOOTER)
        drawn = diagram <= ladder_mermaid.MAX_TEXT
        out(f"wrote the ladder of {_packets(survey.selected)} ({len(survey.lifelines)} "
            f"participants) as Mermaid to {target}"
            + (": GitHub draws it" if drawn else
               f", but it has {diagram:,} characters and Mermaid (on GitHub too) draws at most "
               f"{ladder_mermaid.MAX_TEXT:,}: narrow it with --flow N, --filter or --limit"))

    return sink


def _html(target: str, survey: Survey, title: str, out: Out) -> Sink:
    arrows: list[Arrow] = []

    def sink(a: Arrow | None) -> None:
        if a is not None:
            arrows.append(a)
            return
        from protolab.analysis.ladder_html import write_html

        try:
            write_html(Ladder(survey.by, survey.lifelines, arrows), target, title=title)
        except OSError as exc:
            raise FileError(f"cannot write {target}: {exc.strerror or exc}") from None
        out(f"wrote the ladder of {_packets(len(arrows))} as HTML to {target}: open it in a "
            f"browser")

    return sink


@contextmanager
def _writing(target: str) -> Iterator[BinaryIO]:
    """`atomic_file(target)`, a failure to write it as FileError (one line)."""
    try:
        with atomic_file(target) as f:
            yield f
    except OSError as exc:
        raise FileError(f"cannot write {target}: {exc.strerror or exc}") from None


def _check_writable(target: str) -> None:
    """Fail now, as FileError, where writing `target` at the end would fail."""
    where = Path(target)
    try:
        if where.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        where.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{where.name}.", suffix=".part", dir=where.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FileError(f"cannot write {target}: {exc.strerror or exc}") from None


def _title(path: str | os.PathLike[str], opts: Options) -> str:
    """The capture's name and what was chosen of it."""
    parts = [os.path.basename(os.fspath(path))]
    if opts.flow is not None:
        parts.append(f"flow {opts.flow}")
    if opts.filter:
        parts.append(f"filter {shorten(opts.filter)!r}")
    if opts.limit is not None:
        parts.append(f"first {opts.limit} packets")
    parts.append(f"by {opts.by.value}")
    return ", ".join(parts)


def _packets(n: int) -> str:
    return f"{n:,} packet" + ("" if n == 1 else "s")
