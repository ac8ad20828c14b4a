"""The ladder diagram as one self-contained HTML page (inline SVG, CSS and script; no fetches).

Interface placeholder: the page itself is being written (issue 15). `render` returns the page,
`write_html` writes it atomically.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from protolab.analysis.ladder import Ladder
from protolab.wire.files import write_text_atomic


@dataclass(frozen=True)
class Panel:
    """Text shown beside the diagram: a demo's own tables and observations, as it printed them."""

    title: str
    text: str


def render(ladder: Ladder, title: str, panels: Sequence[Panel] = ()) -> str:
    data = json.dumps(ladder.as_dict()).replace("</", "<\\/")
    side = "".join(f"<h2>{html.escape(p.title)}</h2><pre>{html.escape(p.text)}</pre>"
                   for p in panels)
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1>{side}"
            f"<script type=application/json id=ladder>{data}</script>")


def write_html(ladder: Ladder, path: str | os.PathLike[str], title: str,
               panels: Sequence[Panel] = ()) -> None:
    write_text_atomic(path, render(ladder, title, panels))
