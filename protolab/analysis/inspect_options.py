"""What `protolab inspect` is asked (`Options`) and what its packet view counted (`Tally`).

Light on purpose: the command reads these before anything that annotates, so a run the compiled
fast path prints (protolab.analysis.fast_inspect) imports no annotator, dnspython or wsproto; nor
`dataclasses` (it imports `inspect`, `ast` and `dis`: ~10 ms of a 60 ms start-up), hence a
NamedTuple and a class of three counters. The Python path that uses them is
protolab.analysis.inspect.

No `from __future__ import annotations` here: NamedTuple checks each field's annotation, and an
annotation kept as a string is compiled to check it (typing.ForwardRef), 16 times.
"""

from enum import Enum
from typing import NamedTuple

from protolab.wire.dns_wire import DNS_PORTS


class By(Enum):
    """A ladder's lifelines (protolab.analysis.ladder): what one lifeline stands for."""

    SOCKET = "socket"  #: one lifeline per address:port
    HOST = "host"  #: one lifeline per address


class Options(NamedTuple):
    filter: str | None = None
    limit: int | None = None
    json: bool = False
    flows: bool = False
    flow: int | None = None
    detail: int | None = None
    dns_ports: frozenset[int] = DNS_PORTS
    write_annotated: str | None = None  #: pcapng to write, each packet's note as its comment
    secrets: str | None = None  #: a TLS key log to embed in that pcapng
    wide: bool = False  #: one line per packet, nothing wrapped
    width: int | None = None  #: the table's width (default: see `table.table_width`)
    ladder: bool = False  #: draw the packets as a ladder diagram in the terminal
    mermaid: str | None = None  #: write the ladder as Mermaid in this Markdown file
    html: str | None = None  #: write the ladder as this HTML page
    by: By = By.SOCKET  #: the ladder's lifelines: one per socket, or one per host
    ascii: bool = False  #: draw the terminal's ladder in ASCII only


class Tally:
    """What the packet view read, selected and printed (for the lines said after the table),
    counted as it goes."""

    __slots__ = ("read", "matched", "shown")

    def __init__(self, read: int = 0, matched: int = 0, shown: int = 0) -> None:
        self.read = read  #: packets read from the file
        self.matched = matched  #: of those, selected by --filter / --flow
        self.shown = shown  #: of those, printed (--limit cuts the rest)

    def __repr__(self) -> str:
        return f"Tally(read={self.read}, matched={self.matched}, shown={self.shown})"
