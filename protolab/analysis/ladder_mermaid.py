"""The ladder diagram as Mermaid: a `sequenceDiagram` in a Markdown file, which GitHub draws.

Where state lives: in the notes, which are the annotated rows' own (`protolab.analysis.ladder`);
this module only writes them in Mermaid's syntax:

    participant P1 as 127.0.0.1#58;40927
    P1->>P2: #35;1 0.000 s query 0xa8e2 alpha.lab. A
    Note over P1,P2: [client app memory, client kernel] creates#58; pending query ...

Participants are declared in the ladder's order under safe aliases (P1, P2, ...: a socket's
label has a `:`, which a Mermaid participant's name cannot), each packet is one message (a cross
`-x` for a packet its receiver drops, dotted `-->>` for an ICMP error, `A->>A` for a packet to
itself), and its note follows it (`Note over A,B`, or `Note right of A` for a loop), wrapped
with `<br/>`.

Text is written with Mermaid's entity codes (its docs, "Entity codes to escape characters":
`#35;` for `#`, `#59;` for `;`, decimal numbers or HTML names): in a sequence diagram `;` ends
a statement and `#` starts a comment (the lexer's text token is `:` then no `\\n`, `;` or `#`),
`%%` starts a comment, `<`, `>`, `&` and `"` reach the SVG as HTML, a backtick run could close
the Markdown fence, and any line break would end the statement; `:` is coded too (it separates
an arrow from its text). Every message and note is therefore one line, whatever the capture's
text.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Sequence

from protolab.analysis.ladder import Arrow, By, Ladder, Lifeline, Mark
from protolab.analysis.table import wrap

#: Mermaid's default `maxTextSize` (GitHub keeps it): a longer diagram is not drawn at all.
MAX_TEXT = 50_000
NOTE_WIDTH = 60  #: a note is broken (`<br/>`) into lines of about this many characters
BREAK = "<br/>"  #: Mermaid's line break inside a message or note
FENCE = "```mermaid"  #: the Markdown code block that GitHub draws as a diagram

#: Characters that Mermaid's sequence syntax, the HTML it makes or the Markdown fence would read
#: as syntax, as Mermaid entity codes.
ENTITIES = str.maketrans({"#": "#35;", ";": "#59;", ":": "#58;", "%": "#37;", "&": "#amp;",
                          "<": "#lt;", ">": "#gt;", '"': "#quot;", "`": "#96;"})


def escape(text: str) -> str:
    """`text` as one line of Mermaid text: control characters and line breaks (every one that
    `str.splitlines` knows) become spaces, unpaired surrogates U+FFFD, syntax characters
    entity codes (`ENTITIES`)."""
    clean = "".join(_plain(c) for c in text) if not text.isprintable() else text
    return clean.translate(ENTITIES)


def _plain(c: str) -> str:
    category = unicodedata.category(c)
    if category == "Cs":
        return "\ufffd"
    if category in ("Cc", "Zl", "Zp"):
        return " "
    return c


def alias(index: int) -> str:
    """The participant id of lifeline `index`: P1, P2, ..."""
    return f"P{index + 1}"


def header(lifelines: Sequence[Lifeline], title: str, by: By = By.SOCKET) -> list[str]:
    """The Markdown around the diagram, the fence and the participants."""
    what = "a host" if by is By.HOST else "a socket (address:port)"
    return [f"# {_markdown(title)}", "",
            f"Each participant is {what}, each arrow one packet (numbered as in Wireshark), "
            "each note says who holds the state [in brackets] and what the packet does to it. "
            "A cross ends a packet its receiver drops; a dotted arrow is an ICMP error. Made by "
            "`protolab inspect` from the annotated capture.", "",
            FENCE, "sequenceDiagram",
            *(f"    participant {alias(i)} as {escape(ln.label) or alias(i)}"
              for i, ln in enumerate(lifelines))]


FOOTER = ["```"]


def arrow(a: Arrow) -> list[str]:
    """One packet's message and its note, two lines."""
    src, dst = alias(a.src), alias(a.dst)
    kind = "-x" if Mark.DROPPED in a.marks else "-->>" if Mark.ICMP_ERROR in a.marks else "->>"
    text = escape(f"#{a.number} {a.time:.3f} s {a.label}")
    where = f"right of {src}" if a.src == a.dst else f"over {src},{dst}"
    note = BREAK.join(escape(line) for line in wrap(a.where, NOTE_WIDTH)) or "-"
    return [f"    {src}{kind}{dst}: {text}", f"    Note {where}: {note}"]


def document(lifelines: Sequence[Lifeline], arrows: Iterable[Arrow], title: str,
             by: By = By.SOCKET) -> Iterator[str]:
    """The Markdown file's lines (streaming: `arrows` may be a generator)."""
    yield from header(lifelines, title, by)
    for a in arrows:
        yield from arrow(a)
    yield from FOOTER


def render(ladder: Ladder, title: str) -> str:
    """The whole Markdown file for a ladder."""
    return "\n".join(document(ladder.lifelines, ladder.arrows, title, ladder.by)) + "\n"


def diagram_size(text: str) -> int:
    """The characters Mermaid is given: what is inside the fence (compared with MAX_TEXT)."""
    inside = text.split(FENCE + "\n", 1)[-1].rsplit("```", 1)[0]
    return len(inside)


def _markdown(text: str) -> str:
    """A title as Markdown text, its few syntax characters backslash-escaped, on one line."""
    one_line = " ".join(text.split())
    return "".join("\\" + c if c in "\\`*_[]<>#|" else c for c in one_line)
