"""The ladder as Mermaid (`protolab inspect --mermaid OUT.md`): read back from the file and
compared with tshark's reading of the capture; any text gives one valid Mermaid line."""

from __future__ import annotations

import html
import json
import random
import re
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protolab.analysis.facts import Action, Holder, Kind
from protolab.analysis.ladder import Arrow, By, Ladder, Lifeline, Mark, build
from protolab.analysis.ladder_mermaid import BREAK, MAX_TEXT, arrow, diagram_size, render

from conftest import REFERENCES, ROOT, require, require_tool, run_cli
from ladder_support import forgeries, frames, overtaking, rows

PARTICIPANT = re.compile(r"^    participant (P\d+) as (.+)$")
MESSAGE = re.compile(r"^    (P\d+)(->>|-x|-->>)(P\d+): (.+)$")
NOTE = re.compile(r"^    Note (?:over (P\d+),(P\d+)|right of (P\d+)): (.+)$")
#: Mermaid's entity codes: `#35;` (decimal) or `#quot;` (an HTML name)
CODE = re.compile(r"#(\d+|[A-Za-z]+);")
#: Mermaid's text token once its entity codes are set aside: no line break, `;` or `#`
TEXT_TOKEN = re.compile(r"[^\r\n;#]+")
#: what must never be raw in a message or note: syntax, HTML, the Markdown fence
RAW = set(";#:%<>\"&`\r\n")


def decode(text: str) -> str:
    return CODE.sub(lambda m: chr(int(m[1])) if m[1].isdigit()
                    else html.unescape(f"&{m[1]};"), text)


class Diagram:
    """A Mermaid ladder read back: participants, messages, notes."""

    def __init__(self, markdown: str) -> None:
        lines = markdown.splitlines()
        assert lines.count("```mermaid") == 1 and lines.count("```") == 1
        body = lines[lines.index("```mermaid") + 1:lines.index("```")]
        assert body[0] == "sequenceDiagram"
        self.participants = [PARTICIPANT.match(line).groups() for line in body
                             if line.startswith("    participant ")]
        self.labels = {alias: decode(label) for alias, label in self.participants}
        self.messages = [MESSAGE.match(line).groups() for line in body if MESSAGE.match(line)]
        self.notes = [NOTE.match(line).groups() for line in body if NOTE.match(line)]
        assert len(body) == 1 + len(self.participants) + len(self.messages) + len(self.notes)

    def numbered(self) -> dict[int, tuple[str, str, str, str]]:
        """Each message by its packet number: (source label, kind, target label, text)."""
        out = {}
        for src, kind, dst, text in self.messages:
            number = re.match(r"#(\d+) ", decode(text))
            out[int(number[1])] = (self.labels[src], kind, self.labels[dst], decode(text))
        return out


@pytest.mark.parametrize("by", list(By))
def test_one_message_per_packet_between_the_ends_tshark_reads(picture_capture, by) -> None:
    diagram = Diagram(render(build(rows(picture_capture), by), "x"))
    seen = frames(picture_capture)
    messages = diagram.numbered()
    assert list(messages) == [f.number for f in seen] and len(diagram.messages) == len(seen)
    assert len(diagram.notes) == len(seen)  # each packet's note follows its message
    for f in seen:
        src, _, dst, _ = messages[f.number]
        ends = (f.quoted_dst, f.quoted_src) if f.icmp else (f.src, f.dst)
        if by is By.HOST:
            ends = tuple(e.rsplit(":", 1)[0] for e in ends)
        assert (src, dst) == ends


def test_participants_are_declared_once_in_order_of_appearance(picture_capture) -> None:
    ladder = build(rows(picture_capture))
    diagram = Diagram(render(ladder, "x"))
    aliases = [alias for alias, _ in diagram.participants]
    assert aliases == [f"P{i}" for i in range(1, len(ladder.lifelines) + 1)]
    assert list(diagram.labels.values()) == [ln.key for ln in ladder.lifelines]
    assert len(set(diagram.labels.values())) == len(aliases)
    used = [p for src, _, dst, _ in diagram.messages for p in (src, dst)]
    assert set(used) == set(aliases)
    firsts = [used.index(a) for a in aliases]
    assert firsts == sorted(firsts)


def test_no_raw_syntax_character_inside_a_message_or_note(picture_capture) -> None:
    diagram = Diagram(render(build(rows(picture_capture)), "a title; with # and `ticks`"))
    texts = [m[3] for m in diagram.messages] + [n[3] for n in diagram.notes]
    for text in texts:
        bare = CODE.sub("", text.replace(BREAK, " "))
        assert not set(bare) & RAW, text
        assert TEXT_TOKEN.fullmatch(CODE.sub("x", text))


def test_the_dns_story_is_in_the_messages(dns_picture_capture) -> None:
    annotated = rows(dns_picture_capture)
    messages = Diagram(render(build(annotated), "x")).numbered()
    for number in overtaking(annotated):
        assert messages[number][1] == "->>" and "[out of order]" in messages[number][3]
    forged = forgeries(annotated)
    assert len(forged) == 2
    for number in forged:  # a cross: the client drops it
        assert messages[number][1] == "-x" and "[dropped]" in messages[number][3]
    errors = [r.number for r in annotated if r.fact.kind is Kind.ICMP_PORT_UNREACHABLE]
    assert errors and all(messages[n][1] == "-->>" and "[ICMP error]" in messages[n][3]
                          for n in errors)


def _one_line(text: str) -> str:
    """What `escape` promises to keep of any text: line breaks and controls become spaces."""
    def keep(c: str) -> str:
        category = unicodedata.category(c)
        return "\ufffd" if category == "Cs" else " " if category in ("Cc", "Zl", "Zp") else c

    return "".join(map(keep, text))


@settings(max_examples=300, deadline=None)
@given(summary=st.text(), note=st.text(), number=st.integers(1, 10 ** 9),
       dropped=st.booleans(), to_itself=st.booleans())
def test_any_text_gives_one_valid_mermaid_line_each(summary, note, number, dropped,
                                                    to_itself) -> None:
    a = Arrow(number=number, time=1.5, src=0, dst=0 if to_itself else 1, proto="UDP",
              summary=summary, note=note, action=Action.USES, holders=(Holder.PACKET,),
              kind=Kind.UDP_DATAGRAM, flow="udp 1", marks=(Mark.DROPPED,) if dropped else ())
    message, note_line = arrow(a)
    for line in (message, note_line):
        assert line.splitlines() == [line] and "%%" not in line and "`" not in line
        line.encode("utf-8")  # writable: no lone surrogate
    m = MESSAGE.match(message)
    assert m and (m[1] == m[3]) == to_itself and (m[2] == "-x") == dropped
    assert TEXT_TOKEN.fullmatch(CODE.sub("x", m[4]))
    assert decode(m[4]) == f"#{number} 1.500 s " + _one_line(a.label)
    n = NOTE.match(note_line)
    assert n and TEXT_TOKEN.fullmatch(CODE.sub("x", n[4].replace(BREAK, " ")))
    assert "".join(decode(n[4].replace(BREAK, "")).split()) == \
        "".join(_one_line(a.where).split())


# -- the command line -------------------------------------------------------------------------

DNS_REF = str(ROOT / "captures" / "dns-demo.ref.pcap")


def test_the_file_is_written_whole_and_said_so(tmp_path) -> None:
    target = tmp_path / "ladder.md"
    target.write_text("old")
    out = run_cli("inspect", DNS_REF, "--mermaid", str(target), "--flow", "2")
    assert out.returncode == 0, out.stderr
    text = target.read_text()
    assert Diagram(text).numbered() and "GitHub draws it" in out.stdout
    assert f"as Mermaid to {target}" in out.stdout and len(out.stdout.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ladder.md"]
    assert len(text) - diagram_size(text) < 1000  # the fence's content is the diagram


@pytest.mark.parametrize("args,message", [
    (["--mermaid", "/proc/nope/x.md"], "cannot write /proc/nope/x.md: "),
    (["--html", "{tmp}"], "cannot write {tmp}: Is a directory"),
    (["--mermaid", "{tmp}/x.md", "--html", "/proc/nope/x.html"], "cannot write /proc/nope/"),
    (["--mermaid", "{tmp}/x.md", "--ladder", "--width", "40"], "lifelines do not fit in 40"),
])
def test_an_output_that_cannot_be_made_is_one_line_and_nothing_written(tmp_path, args,
                                                                        message) -> None:
    lb = str(ROOT / "captures" / "lb.ref.pcap")
    out = run_cli("inspect", lb, *(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert out.stderr.startswith("protolab: error: ") and message.format(tmp=tmp_path) in \
        out.stderr
    assert list(tmp_path.iterdir()) == []


def test_html_is_written_through_the_page_module(tmp_path) -> None:
    target = tmp_path / "ladder.html"
    out = run_cli("inspect", DNS_REF, "--html", str(target), "--filter", "icmp")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("wrote the ladder of 1 packet as HTML to ")
    page = target.read_text()
    assert page.lower().startswith("<!doctype html") and "dns-demo.ref.pcap" in page


def test_a_diagram_too_long_for_mermaid_says_so(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from inspect_vs_tshark import make_capture

    big = tmp_path / "big.pcap"
    make_capture(big, 400)
    target = tmp_path / "big.md"
    out = run_cli("inspect", str(big), "--mermaid", str(target))
    assert out.returncode == 0, out.stderr
    size = diagram_size(target.read_text())
    assert size > MAX_TEXT and f"it has {size:,} characters" in out.stdout
    assert "GitHub draws it" not in out.stdout and "--flow N" in out.stdout


# -- Mermaid itself reads the diagrams ---------------------------------------------------------

#: where .ci/run installs Mermaid and jsdom for the test (npm install --prefix .cache/node ...)
NODE_PREFIX = ROOT / ".cache" / "node"
#: Mermaid's stand-ins for entity codes while it parses (decoded when it draws the SVG)
PLACEHOLDER = re.compile(r"ﬂ°(°?)(\w+)¶ß")


def mermaid_itself(*files) -> list[dict]:
    """What Mermaid's own parser reads in each file (tests/mermaid_parse.mjs)."""
    node = require_tool("node")
    require(all((NODE_PREFIX / "node_modules" / m).is_dir() for m in ("mermaid", "jsdom")),
            f"Mermaid is not installed: npm install --prefix {NODE_PREFIX} mermaid@11 jsdom")
    out = subprocess.run([node, str(ROOT / "tests" / "mermaid_parse.mjs"), str(NODE_PREFIX),
                          *map(str, files)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def placeholders(text: str) -> str:
    return PLACEHOLDER.sub(lambda m: chr(int(m[2])) if m[1] else html.unescape(f"&{m[2]};"),
                           text)


def test_mermaid_itself_reads_one_message_and_one_note_per_packet(tmp_path) -> None:
    files = []
    for i, capture in enumerate(REFERENCES):
        files.append(tmp_path / f"{i}.md")
        files[-1].write_text(render(build(rows(capture)), capture.name))
    for capture, read in zip(REFERENCES, mermaid_itself(*files), strict=True):
        assert "error" not in read, read
        ladder = build(rows(capture))
        assert read["type"] == "sequence"
        assert [[k, placeholders(d)] for k, d in read["actors"]] == \
            [[f"P{i + 1}", ln.key] for i, ln in enumerate(ladder.lifelines)]
        kinds = read["lineTypes"]
        messages = read["messages"][0::2]
        assert [m["type"] for m in read["messages"][1::2]] == [kinds["NOTE"]] * len(ladder.arrows)
        assert len(messages) == len(ladder.arrows)
        for a, m in zip(ladder.arrows, messages, strict=True):
            assert (m["from"], m["to"]) == (f"P{a.src + 1}", f"P{a.dst + 1}")
            assert placeholders(m["text"]) == f"#{a.number} {a.time:.3f} s {a.label}"
            expected = "SOLID_CROSS" if Mark.DROPPED in a.marks else "DOTTED" \
                if Mark.ICMP_ERROR in a.marks else "SOLID"
            assert m["type"] == kinds[expected]


def test_mermaid_itself_reads_any_text_back_whole(tmp_path) -> None:
    """Texts made of what Mermaid, HTML and Markdown read as syntax, and random ones from those
    characters: Mermaid parses every message, and its text is the original (line breaks and
    controls as spaces, ends trimmed as Mermaid trims them)."""
    chars = "ab ;#:%<>\"&`\n\r\t-x>{}()[]+,|\\/é→\u2028\x00"
    rnd = random.Random(15)
    texts = ["a;b", "#1 x", "%%{init: {}}%%", "%% comment", "end", "P1->>P2: hi", "wrap: yes",
             "<script>alert(1)</script>", "<br/>", "```", "#35; literal", "x:y", "-x", "--)",
             "Note right of P1: x", "}%%", "a,b", "&amp;"]
    texts += ["".join(rnd.choice(chars) for _ in range(rnd.randint(1, 40))) for _ in range(200)]
    arrows = [Arrow(number=i + 1, time=0.5, src=i % 2, dst=i // 2 % 2, proto="UDP", summary=t,
                    note=t[::-1], action=Action.USES, holders=(), kind=Kind.UDP_DATAGRAM,
                    flow="udp 1") for i, t in enumerate(texts)]
    lifelines = [Lifeline("a;#:1", "a;#:1", 1), Lifeline("%%b", "%%b", 1)]
    target = tmp_path / "any.md"
    target.write_text(render(Ladder(By.SOCKET, lifelines, arrows), "any"))
    [read] = mermaid_itself(target)
    assert "error" not in read, read
    assert [placeholders(d) for _, d in read["actors"]] == ["a;#:1", "%%b"]
    assert len(read["messages"]) == 2 * len(texts)
    for a, m in zip(arrows, read["messages"][0::2], strict=True):
        assert placeholders(m["text"]) == f"#{a.number} 0.500 s {_one_line(a.summary)}".strip()
