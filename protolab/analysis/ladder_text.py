"""The ladder diagram in a terminal: a column per lifeline, an arrow per packet, its note under it.

Where state lives: in the notes, which are the annotated rows' own (`protolab.analysis.ladder`);
this module only draws them. The DNS demo's reference capture, `--filter "port 41996"`:

               127.0.0.1:41996
               │         127.0.0.1:33199
     #   time  │         │
    11  0.162  ├────────▶│   query 0x4fa5 bank.lab. A
               │         │     [client app memory, client kernel] creates: pending query ...
    12  0.163  │✕────────┤   answer 0x61d9 bank.lab. A NOERROR 6.6.6.6 [dropped]

The lifelines are narrow columns on the left, headed by their labels as a staircase (so a column
needs 3 characters whatever its label's length), and the text is on the right: each packet's
number and time in the gutter, its arrow between its two columns (`✕` for a head when the
receiver drops the packet), its summary and marks beside the arrow, and its note (who holds the
state, then what the packet does to it) wrapped on the lines under it. A packet from a lifeline
to itself (`--by host` on loopback) is a loop on that one column. `ascii=True` draws with
`|`, `-`, `>` and writes the text in ASCII too.

When the lifelines leave too little room for the text, `TooWide` says so in one line (narrow
the capture to one conversation, draw hosts, or widen): a ladder whose notes are cut is worth
less than a clear refusal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from protolab.analysis.ladder import Arrow, Ladder, Lifeline, Mark
from protolab.analysis.table import wrap

DEFAULT_WIDTH = 80  #: what a ladder fits when no width is given
MIN_WIDTH = 40  #: narrower is drawn as if this wide
MIN_STEP = 3  #: columns from one lifeline to the next, at least: a shaft and a head between
MAX_STEP = 12  #: and at most, however few lifelines there are
MIN_TEXT = 20  #: the text beside the lifelines needs at least this many columns
WANT_TEXT = 44  #: lifelines spread out only as far as the text keeps this many
LOOP = 2  #: columns right of its lifeline that a packet to itself loops through
NOTE_INDENT = 2  #: a note is indented this much under its arrow's summary


@dataclass(frozen=True)
class Glyphs:
    """The characters a ladder is drawn with."""

    line: str  #: a lifeline
    shaft: str  #: an arrow's body
    cross: str  #: an arrow's body where it crosses another lifeline
    right: str  #: the head of an arrow drawn left to right
    left: str  #: the head of an arrow drawn right to left
    dropped: str  #: the head of an arrow whose packet the receiver drops
    out_right: str  #: where an arrow leaves its lifeline to the right
    out_left: str  #: where an arrow leaves its lifeline to the left
    loop_top: str  #: a packet to itself turns back here
    loop_bottom: str  #: and comes back here
    ellipsis: str  #: the end of a label cut short


UNICODE = Glyphs("│", "─", "┼", "▶", "◀", "✕", "├", "┤", "┐", "┘", "…")
ASCII = Glyphs("|", "-", "-", ">", "<", "X", "|", "|", ".", "'", "...")

#: How the text's few non-ASCII characters are written in ASCII (the rest are escaped).
ASCII_TEXT = str.maketrans({"→": "->", "←": "<-", "↔": "<->", "…": "...", "—": "--", "–": "-",
                            "‘": "'", "’": "'", "“": '"', "”": '"', "×": "x", "≈": "~"})


class TooWide(ValueError):
    """More lifelines than fit beside readable text: the message is one line for the user."""


def to_ascii(text: str) -> str:
    """`text` in ASCII: arrows and quotes spelled out, anything else backslash-escaped."""
    return text.translate(ASCII_TEXT).encode("ascii", "backslashreplace").decode("ascii")


def _gutter_widths(last_number: int, last_time: float) -> tuple[int, int]:
    return len(str(max(last_number, 1))), max(len("time"), len(f"{last_time:.3f}"))


class TextLadder:
    """Draws a ladder's header, then its arrows one at a time (so a caller can stream them)."""

    def __init__(self, lifelines: Sequence[Lifeline], last_number: int = 1,
                 last_time: float = 0.0, width: int | None = None, ascii: bool = False) -> None:
        """`last_number`, `last_time`: the largest the gutter will show. Raises TooWide."""
        self.width = max(MIN_WIDTH, DEFAULT_WIDTH if width is None else width)
        self.glyphs = ASCII if ascii else UNICODE
        self.ascii = ascii
        self.lifelines = list(lifelines) or [Lifeline("", "", 0)]
        self._nw, self._tw = _gutter_widths(last_number, last_time)
        self._gutter = self._nw + 2 + self._tw + 2
        self.step = self._step(len(self.lifelines))
        graph = (len(self.lifelines) - 1) * self.step + 1 + LOOP
        self._text_at = self._gutter + graph + 1
        self._plain = self._graph_cells()

    def _step(self, n: int) -> int:
        if n == 1:
            return MIN_STEP
        room = self.width - self._gutter - (1 + LOOP + 1)
        step = min(MAX_STEP, max(MIN_STEP, (room - WANT_TEXT) // (n - 1)))
        if room - (n - 1) * step < MIN_TEXT:
            most = max(1, (room - MIN_TEXT) // MIN_STEP + 1)
            raise TooWide(f"{n} lifelines do not fit in {self.width} columns (at most {most} "
                          f"do): draw one conversation with --flow N (see --flows), hosts with "
                          f"--by host, or widen with --width N")
        return step

    @property
    def text_width(self) -> int:
        """Columns left for an arrow's summary, right of the lifelines."""
        return self.width - self._text_at

    def _graph_cells(self) -> list[str]:
        cells = [" "] * ((len(self.lifelines) - 1) * self.step + 1 + LOOP)
        for i in range(len(self.lifelines)):
            cells[i * self.step] = self.glyphs.line
        return cells

    def _text(self, text: str) -> str:
        return to_ascii(text) if self.ascii else text

    def header(self) -> list[str]:
        """The labels as a staircase, each at its column, then the gutter's titles."""
        lines = []
        for i, lifeline in enumerate(self.lifelines):
            x = i * self.step
            room = self.width - self._gutter - x
            label = self._text(lifeline.label)
            if len(label) > room:
                label = label[:max(0, room - len(self.glyphs.ellipsis))] + self.glyphs.ellipsis
            lines.append((" " * self._gutter + "".join(self._plain[:x]) + label).rstrip())
        titles = f"{'#':>{self._nw}}  {'time':>{self._tw}}  "
        lines.append((titles + "".join(self._plain)).rstrip())
        return lines

    def arrow(self, a: Arrow) -> list[str]:
        """The lines of one packet: its arrow and summary, then its note under them."""
        first, back = self._arrow_cells(a)
        label = wrap(self._text(a.label), self.text_width) or [""]
        note = [" " * NOTE_INDENT + line
                for line in wrap(self._text(a.where), self.text_width - NOTE_INDENT)]
        texts = [*label, *note]
        if back is not None and len(texts) < 2:
            texts.append("")
        plain = "".join(self._plain)
        gutters = [f"{a.number:>{self._nw}}  {a.time:>{self._tw}.3f}  "] + \
            [" " * self._gutter] * (len(texts) - 1)
        graphs = [first, *([back] if back is not None else [])]
        graphs += [plain] * (len(texts) - len(graphs))
        return [(g + graph + " " + text).rstrip()
                for g, graph, text in zip(gutters, graphs, texts, strict=True)]

    def _arrow_cells(self, a: Arrow) -> tuple[str, str | None]:
        """The arrow's line of the graph, and for a packet to itself the loop's second line."""
        g = self.glyphs
        cells = list(self._plain)
        src, dst = a.src * self.step, a.dst * self.step
        dropped = Mark.DROPPED in a.marks
        if src == dst:
            cells[src:src + 3] = [g.out_right, g.shaft, g.loop_top]
            back = list(self._plain)
            back[src + 1:src + 3] = [g.dropped if dropped else g.left, g.loop_bottom]
            return "".join(cells), "".join(back)
        for x in range(min(src, dst) + 1, max(src, dst)):
            cells[x] = g.cross if cells[x] == g.line else g.shaft
        if dst > src:
            cells[src], cells[dst - 1] = g.out_right, g.dropped if dropped else g.right
        else:
            cells[src], cells[dst + 1] = g.out_left, g.dropped if dropped else g.left
        return "".join(cells), None


def lines(ladder: Ladder, width: int | None = None, ascii: bool = False) -> Iterable[str]:
    """The whole ladder's lines. Raises TooWide."""
    last_number = max((a.number for a in ladder.arrows), default=1)
    last_time = max((a.time for a in ladder.arrows), default=0.0)
    drawing = TextLadder(ladder.lifelines, last_number, last_time, width, ascii)
    yield from drawing.header()
    for a in ladder.arrows:
        yield from drawing.arrow(a)


def render(ladder: Ladder, width: int | None = None, ascii: bool = False) -> str:
    """The whole ladder as one string (see `lines`)."""
    return "\n".join(lines(ladder, width, ascii))
