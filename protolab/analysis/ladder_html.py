"""The ladder diagram as one self-contained HTML page: inline SVG, CSS and script, no fetches.

Where state lives: nowhere new; the page draws `protolab.analysis.ladder`'s model. Every arrow is
one packet (numbered as Wireshark numbers frames), its note is the row's own fact, coloured by the
holder it names; marks (out of order, dropped, ICMP error, retransmit, reset) are drawn as such.

The page opens from file:// with the network off: the style and the script are inline, allowed by
a Content-Security-Policy that names their hashes and forbids every fetch. The ladder travels as
JSON in a `<script type="application/json">` block with every `<`, `>` and `&` escaped, so a DNS
name holding `</script>` stays text. The script draws lazily (virtual scrolling): only the rows
in view, and a few around them, are in the DOM, so 10,000 packets open as fast as 10.

Test hooks: each drawn packet is a `.pkt` element with `data-n` (its number), `data-src` and
`data-dst` (its lifelines' keys) and `data-marks`; `#filter`, `#count`, `#detail`, `#scroller`;
when the first rows are painted the page sets `window.ladderReady` and `data-rendered-ms` (on
`<html>`: milliseconds since navigation started, `performance.now()`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from protolab.analysis.facts import Holder
from protolab.analysis.ladder import By, Ladder, Mark
from protolab.analysis.observe import Status
from protolab.wire.files import write_text_atomic

#: Each holder's colour: the note, the arrow and the legend swatch of what it holds.
COLOURS: dict[Holder, str] = {
    Holder.CLIENT_APP: "#2563eb",
    Holder.CLIENT_KERNEL: "#0891b2",
    Holder.SERVER_APP: "#ea580c",
    Holder.SERVER_KERNEL: "#a16207",
    Holder.SHARED_STORE: "#7c3aed",
    Holder.TOKEN: "#16a34a",
    Holder.PACKET: "#64748b",
    Holder.NOBODY: "#dc2626",
    Holder.ROUTER_KERNEL: "#be185d",
}
#: How each mark is drawn, for the legend (the script draws the marks themselves).
MARK_LEGEND: dict[Mark, str] = {
    Mark.OUT_OF_ORDER: "answer overtook an earlier query's answer",
    Mark.DROPPED: "the receiver drops it: the arrow ends in an X before the lifeline",
    Mark.ICMP_ERROR: "the kernel's error, dashed, from the port that had no socket",
    Mark.RETRANSMIT: "the same request again (the sender's timer)",
    Mark.RST: "a TCP reset",
}
#: A panel longer than this many lines starts folded (the packet table the diagram draws).
FOLD_LINES = 60


@dataclass(frozen=True)
class Panel:
    """Text shown beside the diagram: a demo's own tables and observations, as it printed them."""

    title: str
    text: str


def panels_of(lines: Sequence[str]) -> list[Panel]:
    """A demo's printed lines as panels: one per paragraph (lines between blank lines), titled
    by its first line."""
    text = "\n".join(lines)
    found = []
    for chunk in re.split(r"\n[ \t]*\n", text):
        chunk = chunk.strip("\n")
        if chunk.strip():
            title, _, body = chunk.partition("\n")
            found.append(Panel(title.strip(), body))
    return found


def slug(text: str) -> str:
    """A class-name form of a value: "out of order" → "out-of-order"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def _json(data: object) -> str:
    """JSON that cannot end the script block it sits in, nor open a comment or an entity."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _style() -> str:
    """The page's CSS: the static sheet, then one custom property per holder (`.hN`)."""
    holders = "".join(f".h{i}{{--c:{COLOURS[h]}}}" for i, h in enumerate(Holder))
    return _asset("ladder_page.css") + holders + "\n"


def _legend() -> str:
    holders = "".join(f'<li class="holder h{i}"><span class=swatch></span>{html.escape(h.value)}'
                      f"</li>" for i, h in enumerate(Holder))
    marks = "".join(f'<li class=mark title="{html.escape(why)}"><span class="tag '
                    f't-{slug(m.value)}">{html.escape(m.value)}</span></li>'
                    for m, why in MARK_LEGEND.items())
    return (f'<ul id=legend aria-label="legend"><li class=key>who holds the state '
            f"(note and arrow colour):</li>{holders}<li class=key>marks:</li>{marks}</ul>")


#: Line markers in a demo's output, and the class each line gets (first match wins).
_LINE_CLASSES = (
    (Status.NOT_OBSERVED.value, "not-observed"),
    (f"({Status.NOT_TRIED.value}) explanation", "explained"),
    (f"({Status.LIVE_ONLY.value}) explanation", "explained"),
    (f"{Status.OBSERVED.value}:", "observed"),
)


def _panel_line(line: str) -> str:
    for marker, cls in _LINE_CLASSES:
        if marker in line:
            return f"<span class={cls}>{html.escape(line)}</span>"
    return html.escape(line)


def _panel(p: Panel) -> str:
    lines = p.text.splitlines()
    title = f"<span class=title>{_panel_line(p.title)}</span>"
    if not lines:
        return f"<div class=panel><p class=single>{title}</p></div>"
    body = "\n".join(_panel_line(x) for x in lines)
    state = "" if len(lines) > FOLD_LINES else " open"
    return (f"<details class=panel{state}><summary>{title} <span class=lines>"
            f"{len(lines)} lines</span></summary><pre>{body}</pre></details>")


def _meta(ladder: Ladder) -> str:
    per = "socket (address:port)" if ladder.by is By.SOCKET else "host"
    n, m = len(ladder.arrows), len(ladder.lifelines)
    return (f"{n:,} packet{'s' * (n != 1)} (numbers as in Wireshark) · {m} lifeline"
            f"{'s' * (m != 1)}, one per {per}")


def render(ladder: Ladder, title: str, panels: Sequence[Panel] = (), note: str = "") -> str:
    """The whole page. `note` is one line shown above the diagram (why there is none, whose
    capture it is)."""
    style, script = _style(), _asset("ladder_page.js")
    csp = (f"default-src 'none'; style-src {_hash(style)}; script-src {_hash(script)}; "
           f"img-src data:; base-uri 'none'; form-action 'none'")
    esc = html.escape
    side = "".join(_panel(p) for p in panels)
    notice = f"<p id=notice>{esc(note)}</p>" if note else ""
    page = (
        f"<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">\n'
        f"<meta name=viewport content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{style}</style>\n</head>\n"
        f"<body{'' if ladder.arrows else ' class=bare'}>\n"
        f"<header id=top><div class=titles><h1>{esc(title)}</h1>"
        f"<p id=meta>{esc(_meta(ladder))}</p></div>"
        f'<div class=tools><input id=filter type=search autocomplete=off spellcheck=false '
        f'placeholder="filter: words · #12 · flow:&quot;tcp 2&quot; · mark:dropped · '
        f'proto:dns" aria-label="filter the packets"> <span id=count></span></div>'
        f"{_legend()}</header>\n<main>\n<section id=diagram>{notice}"
        f'<div id=scroller tabindex=0 aria-label="the ladder: one row per packet">'
        f"<div id=head></div><div id=canvas><div id=rows></div></div></div></section>\n"
        f'<aside id=side><section id=detail aria-live=polite><p class=hint>Click a packet '
        f"(or hover one) for its full note and fields; ↑/↓ move along.</p></section>"
        f"<div id=panels>{side}</div></aside>\n</main>\n"
        f"<script type=application/json id=ladder-data>{_json(ladder.as_dict())}</script>\n"
        f"<script>{script}</script>\n</body>\n</html>\n")
    # A capture's bytes may reach here as lone surrogates (surrogateescape): never fail on them.
    return page.encode("utf-8", "replace").decode("utf-8")


def write_html(ladder: Ladder, path: str | os.PathLike[str], title: str,
               panels: Sequence[Panel] = (), note: str = "") -> None:
    """The page, written atomically (a temporary name beside `path`, then renamed)."""
    write_text_atomic(path, render(ladder, title, panels, note))
