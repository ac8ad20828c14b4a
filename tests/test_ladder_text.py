"""The ladder in a terminal (`protolab inspect --ladder`): read back from what it drew and
compared with tshark's reading of the same capture."""

from __future__ import annotations

import re

import pytest

from protolab.analysis.facts import Kind
from protolab.analysis.ladder import By, build
from protolab.analysis.ladder_text import LOOP, TooWide, render, to_ascii

from conftest import ROOT, run_cli
from ladder_support import forgeries, frames, overtaking, rows

GUTTER = re.compile(r"^\s*(\d+)\s+\d+\.\d{3}  ")
HEADS = {"▶": +1, ">": +1, "◀": -1, "<": -1}  #: a head and the side its lifeline is on
DROPPED = ("✕", "X")
SHAFT = set("─┼-")
TAILS = set("├┤|")
LOOP_TOPS = ("┐", ".")


class Drawing:
    """A text ladder read back: its columns and labels, and each packet's lines."""

    def __init__(self, text: str) -> None:
        lines = text.splitlines()
        titles = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#"))
        self.columns: dict[int, str] = {}
        for line in lines[:titles]:
            at = next(i for i, c in enumerate(line) if c not in " │|")
            self.columns[at] = line[at:]
        self.text_at = max(self.columns) + LOOP + 2
        self.blocks: dict[int, list[str]] = {}
        for line in lines[titles + 1:]:
            match = GUTTER.match(line)
            if match:
                self.blocks[int(match[1])] = []
            self.blocks[list(self.blocks)[-1]].append(line)

    def graph(self, line: str) -> str:
        return line[:self.text_at - 1].ljust(self.text_at - 1)

    def text(self, number: int) -> str:
        """The packet's text (summary, marks, note) as one line, spaces squeezed."""
        return " ".join(" ".join(line[self.text_at:].split()) for line in self.blocks[number])

    def ends(self, number: int) -> tuple[str, str, str]:
        """The labels of the arrow's source and destination columns, and its head."""
        first, *rest = self.blocks[number]
        graph = self.graph(first)
        for col in self.columns:  # a packet to itself: a loop on its column
            if graph[col + LOOP] in LOOP_TOPS:
                back = self.graph(rest[0])
                return self.columns[col], self.columns[col], back[col + 1]
        head = next(i for i, c in enumerate(graph) if c in HEADS or c in DROPPED)
        side = HEADS.get(graph[head]) or (1 if graph[head - 1] in SHAFT else -1)
        tail = head - side
        while graph[tail] in SHAFT:
            tail -= side
        assert graph[tail] in TAILS and tail in self.columns and head + side in self.columns
        return self.columns[tail], self.columns[head + side], graph[head]


def _letters(text: str) -> str:
    return "".join(text.split())


def _fitting(ladder, ascii: bool = False) -> str:
    """The ladder at 80 columns, or as wide as its lifelines need (the TLS lab's reference has a
    socket per connection and relay leg: over 15 lifelines)."""
    for width in (80, 132, 200):
        try:
            return render(ladder, ascii=ascii, width=width)
        except TooWide:
            continue
    return render(ladder, ascii=ascii, width=300)


@pytest.mark.parametrize("ascii_", [False, True], ids=["unicode", "ascii"])
def test_each_arrow_joins_the_ends_tshark_reads(picture_capture, ascii_) -> None:
    drawing = Drawing(_fitting(build(rows(picture_capture)), ascii=ascii_))
    seen = frames(picture_capture)
    assert list(drawing.blocks) == [f.number for f in seen]
    for f in seen:
        src, dst, _ = drawing.ends(f.number)
        assert (src, dst) == ((f.quoted_dst, f.quoted_src) if f.icmp else (f.src, f.dst))


@pytest.mark.parametrize("width", [40, 57, 80, 132])
@pytest.mark.parametrize("by", list(By))
def test_every_line_fits_and_no_word_is_lost(picture_capture, width, by) -> None:
    ladder = build(rows(picture_capture), by)
    try:
        text = render(ladder, width=width)
    except TooWide as exc:  # more lifelines than fit: said in one line, with the ways out
        assert "\n" not in str(exc) and "--flow N" in str(exc) and "--by host" in str(exc)
        said = re.match(r"(\d+) lifelines do not fit in (\d+) columns \(at most (\d+) do\)",
                        str(exc))
        assert said and int(said[1]) == len(ladder.lifelines) > int(said[3]) >= 1
        assert int(said[2]) == width and by is By.SOCKET
        return
    assert max(len(line) for line in text.splitlines()) <= width
    drawing = Drawing(text)
    for a in ladder.arrows:  # a word longer than the text's width is cut, not lost
        assert _letters(drawing.text(a.number)) == _letters(f"{a.label} {a.where}")


def test_ascii_is_only_ascii_and_says_the_same(picture_capture) -> None:
    ladder = build(rows(picture_capture))
    plain, fancy = _fitting(ladder, ascii=True), _fitting(ladder)
    assert plain.isascii() and not fancy.isascii()
    drawing = Drawing(plain)
    for a in ladder.arrows:
        assert _letters(drawing.text(a.number)) == _letters(to_ascii(f"{a.label} {a.where}"))


def test_by_host_on_loopback_every_packet_is_a_loop(picture_capture) -> None:
    ladder = build(rows(picture_capture), By.HOST)
    drawing = Drawing(render(ladder))
    for f in frames(picture_capture):
        src, dst, _ = drawing.ends(f.number)
        assert src == f.src.rsplit(":", 1)[0] and (src == dst) == (f.src.split(":")[0] ==
                                                                    f.dst.split(":")[0])
    assert any(src == dst for src, dst, _ in map(drawing.ends, drawing.blocks))


@pytest.mark.parametrize("ascii_", [False, True], ids=["unicode", "ascii"])
@pytest.mark.parametrize("by", list(By))
def test_the_dns_story_is_drawn_as_such(dns_picture_capture, ascii_, by) -> None:
    """Out-of-order answers, the two dropped forgeries, the ICMP error: found from the rows'
    facts, then looked for in the drawing."""
    annotated = rows(dns_picture_capture)
    drawing = Drawing(render(build(annotated, by), ascii=ascii_))
    for number in overtaking(annotated):
        assert "[out of order]" in drawing.text(number)
    forged = forgeries(annotated)
    assert len(forged) == 2
    for number in forged:
        assert drawing.ends(number)[2] in DROPPED and "[dropped]" in drawing.text(number)
    errors = [r.number for r in annotated if r.fact.kind is Kind.ICMP_PORT_UNREACHABLE]
    assert errors
    for number in errors:
        assert "[ICMP error]" in drawing.text(number)
    kept = [r.number for r in annotated if r.fact.kind is Kind.DNS_MATCHED]
    assert all(drawing.ends(n)[2] not in DROPPED and "[dropped]" not in drawing.text(n)
               for n in kept)


# -- the command line -------------------------------------------------------------------------

DNS_REF = str(ROOT / "captures" / "dns-demo.ref.pcap")


def _json_numbers(*args: str) -> list[int]:
    import json

    out = run_cli("inspect", DNS_REF, "--json", *args)
    return [json.loads(line)["number"] for line in out.stdout.splitlines()]


@pytest.mark.parametrize("args", [["--flow", "2"], ["--filter", "icmp or port 37204"],
                                  ["--limit", "7"], ["--flow", "1", "--limit", "3"]])
def test_the_ladder_draws_what_the_table_would_list(args) -> None:
    out = run_cli("inspect", DNS_REF, "--ladder", *args)
    assert out.returncode == 0, out.stderr
    drawing = Drawing(out.stdout.split("\n... ")[0])
    assert list(drawing.blocks) == _json_numbers(*args) != []
    assert all(len(line) <= 80 for line in out.stdout.splitlines())


def test_too_many_lifelines_is_one_line_and_by_host_draws_it() -> None:
    lb = str(ROOT / "captures" / "lb.ref.pcap")
    out = run_cli("inspect", lb, "--ladder", "--width", "48")
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert "lifelines do not fit in 48 columns" in out.stderr and "--by host" in out.stderr
    out = run_cli("inspect", lb, "--ladder", "--width", "48", "--by", "host", "--ascii")
    assert out.returncode == 0, out.stderr
    assert out.stdout.isascii() and max(map(len, out.stdout.splitlines())) <= 48


@pytest.mark.parametrize("args,message", [
    (["--ladder", "--by", "port"], "--by is socket or host, not 'port'"),
    (["--ladder", "--flow", "99"], "there is no flow 99: this capture has 6"),
    (["--ascii"], "--ascii goes with --ladder"),
    (["--by", "host"], "--by goes with --ladder, --mermaid or --html"),
    (["--ladder", "--json"], "--ladder, --mermaid and --html draw packets: not with"),
    (["--ladder", "--flows"], "--ladder, --mermaid and --html draw packets: not with"),
])
def test_bad_ladder_options_are_one_line(args, message) -> None:
    out = run_cli("inspect", DNS_REF, *args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"protolab: error: {message}" + out.stderr.split(message, 1)[1]
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_no_packet_chosen_draws_nothing_and_exits_1() -> None:
    out = run_cli("inspect", DNS_REF, "--ladder", "--filter", "tcp")
    assert out.returncode == 1 and "no packet matched" in out.stdout
    assert "│" not in out.stdout
