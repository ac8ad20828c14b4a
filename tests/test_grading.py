"""The worksheets cannot rot: their commands run, the grader agrees with facts computed
independently from a fresh run (the demo's own result and tshark), accepts every form the output
prints, and a copied answers file (another run's, or the reference capture's) never passes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protolab.course.grading import (
    LABS,
    CheckError,
    Form,
    Lab,
    Mark,
    facts,
    find,
    grade,
    read,
    template,
)
from protolab.wire.paths import default_capture_path, reference_file

from conftest import ROOT, require, require_tool

SHEETS = sorted((ROOT / "labs").glob("[0-9][0-9]-*.md"))
NUMBERS = [lab.number for lab in LABS]


def blocks(sheet) -> list[tuple[list[str], list[str]]]:
    """(commands, strings to look for) for each ```sh block of a worksheet."""
    text = sheet.read_text()
    out = []
    for m in re.finditer(r"```sh\n(.*?)\n```\n((?:> look for: [^\n]*\n)*)", text, re.S):
        commands = [c for c in m.group(1).splitlines() if c.strip()]
        looks = re.findall(r"`([^`]+)`", m.group(2))
        out.append((commands, looks))
    return out


def _bullet(text: str, key: str) -> str:
    """A worksheet's question bullet `- **q1.** ...`, up to the next bullet or blank line, with
    its line breaks and indentation folded into single spaces."""
    m = re.search(rf"^- \*\*{key}\.\*\* (.*?)(?=\n- |\n\n)", text, re.S | re.M)
    assert m, key
    return " ".join(m.group(1).split())


def test_every_lab_has_a_worksheet_and_every_worksheet_a_lab() -> None:
    assert [s.name for s in SHEETS] == sorted(lab.worksheet.name for lab in LABS)
    for lab in LABS:
        text = lab.worksheet.read_text()
        for heading in ("**Goal:**", "**You need:**", "**Time:**", "## Background", "## Steps",
                        "## What your run shows, and what is explained", "## Questions",
                        "## Break it", "## Where state lives"):
            assert heading in text, (lab.number, heading)
        assert any(f"check {lab.number} --template" in c for cmds, _ in blocks(lab.worksheet)
                   for c in cmds)


@pytest.mark.parametrize("number", NUMBERS)
def test_the_worksheet_asks_what_the_grader_grades_in_the_form_it_accepts(number) -> None:
    lab = find(number)
    text = lab.worksheet.read_text()
    asked = re.findall(r"^- \*\*(q\d+)\.\*\*", text, re.M)
    assert asked == [q.key for q in lab.questions]
    for q in lab.questions:
        bullet = _bullet(text, q.key)
        assert q.text in bullet, (q.key, bullet)
        assert f"*Answer: {q.form.label}" in bullet, (q.key, bullet)


@pytest.mark.parametrize("number", NUMBERS)
def test_most_questions_ask_for_values_of_this_run(number) -> None:
    lab = find(number)
    assert 2 * sum(q.varies for q in lab.questions) >= len(lab.questions)


@pytest.mark.parametrize("sheet", SHEETS, ids=lambda s: s.stem)
def test_every_command_in_the_worksheet_runs(sheet, tmp_path, capture_rights) -> None:
    # Run where a learner runs them: a checkout's top, with the committed references in captures/
    (tmp_path / "captures").mkdir()
    for ref in (ROOT / "captures").glob("*.ref.*"):
        shutil.copy(ref, tmp_path / "captures")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's protolab, wherever run
    for commands, looks in blocks(sheet):
        output = ""
        for command in commands:
            argv = shlex.split(command)
            if argv[0] == "python":
                argv[0] = sys.executable
            else:
                argv[0] = require_tool(argv[0])
            done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=120, env=env)
            assert done.returncode == 0, f"{command}\n{done.stderr}"
            output += done.stdout
        for look in looks:
            assert look in output, f"{sheet.name}: `{look}` not in the output of {commands}"


# -- the right answers, computed without protolab.course.grading ----------------------------


def _tshark(path, *args: str) -> list[str]:
    exe = require_tool("tshark")
    out = subprocess.run([exe, "-r", str(path), *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _fields(path, display_filter: str, *fields: str, decode: tuple[str, ...] = ()) -> list[str]:
    args = [a for d in decode for a in ("-d", d)]
    args += ["-Y", display_filter, "-T", "fields", *(a for f in fields for a in ("-e", f))]
    return _tshark(path, *args)


def _tcp(path: Path) -> dict[str, str]:
    from protolab.labs.tcp import run_tcp_demo

    r = run_tcp_demo(pcap=path, out=lambda s: None)
    syns = _fields(path, "tcp.stream == 0", "tcp.flags.syn")
    syn = _fields(path, "tcp.stream == 0 && tcp.flags.syn == 1 && tcp.flags.ack == 0",
                  "tcp.seq_raw")
    syn_ack = _fields(path, "tcp.stream == 0 && tcp.flags.syn == 1 && tcp.flags.ack == 1",
                      "tcp.seq_raw")
    fin = _fields(path, f"tcp.srcport == {r.client[1]} && tcp.flags.fin == 1", "frame.number")
    rst = _fields(path, "tcp.dstport == 40404 && tcp.flags.reset == 1", "tcp.srcport")
    return {"q1": str(r.client[1]), "q2": str(syns.index("0") + 1), "q3": syn[0],
            "q4": syn_ack[0], "q5": fin[0], "q6": r.forged_reply, "q7": rst[0]}


def _udp(path: Path) -> dict[str, str]:
    from protolab.labs.udp import run_udp_demo

    r = run_udp_demo(pcap=path, out=lambda s: None)
    workflow = _fields(path, f'udp.dstport == {r.port} && udp contains "seq=2 "', "udp.srcport")
    quoted = _fields(path, "icmp", "udp.srcport")
    answered = set(_fields(path, f"udp.srcport == {r.port} && !icmp", "udp.dstport"))
    return {"q1": str(r.pids[0]), "q2": str(r.pids[-1]), "q3": str(r.replies[-1].total),
            "q4": workflow[0], "q5": quoted[0], "q6": str(len(answered))}


def _dns(path: Path) -> dict[str, str]:
    from protolab.labs.dns import run_dns_demo

    r = run_dns_demo(queries=5, pcap=path, out=lambda s: None)
    port = r.server[1]
    icmp = _fields(path, "icmp", "frame.number")
    wrong = _fields(path, f"dns.flags.response == 1 && udp.srcport != {port} && !icmp",
                    "udp.srcport", decode=(f"udp.port=={port},dns",))
    first = min(r.log.matched, key=lambda m: m.order_answered)
    in_order = [m.order_sent for m in sorted(r.log.matched[:5], key=lambda m: m.order_answered)]
    return {"q1": f"{first.qid:#06x}", "q2": str(r.client_port),
            "q3": "yes" if in_order == sorted(in_order) else "no",
            "q4": f"{r.forged_qid:#06x}", "q5": wrong[0], "q6": icmp[0]}


def _quic(path: Path) -> dict[str, str]:
    from protolab.labs.quic import run_quic_demo

    r = run_quic_demo(pcap=path, out=lambda s: None)
    keys = f"tls.keylog_file:{r.keylog}"
    server = _tshark(path, "-o", keys, "-Y",
                     f"quic.long.packet_type == 0 && udp.srcport == {r.server[1]}", "-T",
                     "fields", "-e", "quic.scid")
    retry = _tshark(path, "-o", keys, "-Y", "quic.long.packet_type == 3 && !icmp", "-T",
                    "fields", "-e", "frame.number")
    return {"q1": r.client_cid.hex(), "q2": server[0].split(",")[0], "q3": r.rotated[1].hex(),
            "q4": f"{r.migrated_to[0]}:{r.migrated_to[1]}", "q5": retry[0]}


def _lb(path: Path) -> dict[str, str]:
    from protolab.labs.cluster import Cluster, Variant
    from protolab.labs.lb import captured_workflow
    from protolab.net.lb import Policy
    from protolab.protocols.webapp import Design

    with Cluster(Variant(Design.STORE, f"sqlite:{path.parent}/s.db"), Policy.ROUND_ROBIN) as c:
        ports = {name: p.port for name, p in c.procs.items()}
        _, replies = captured_workflow(c, path)
    cookie = _fields(path, "http.set_cookie", "http.set_cookie")[0]
    cart = replies[2][2]
    return {"q1": str(ports[replies[0][2].backend]),
            "q2": cookie.removeprefix("sessionId=").split(";")[0], "q3": str(cart.pid),
            "q4": str(cart.status), "q5": str(len({r.backend for _, _, r in replies}))}


def _attack(path: Path) -> dict[str, str]:
    from protolab.labs.tcp_attack import PORTS, run_tcp_attack_demo

    r = run_tcp_attack_demo(pcap=path, out=lambda s: None)
    resent = _fields(path, "tcp.flags == 0x012 && tcp.analysis.retransmission", "ip.dst",
                     "tcp.dstport")
    cookie = _fields(path, f"tcp.flags == 0x012 && tcp.dstport == "
                           f"{r.samples['cookie-ack'].ports[0]}", "tcp.options.timestamp.tsval")
    rsts = _fields(path, f"tcp.flags.reset == 1 && tcp.dstport == {PORTS['rst']}",
                   "frame.number", "tcp.seq_raw")
    after = _fields(path, f"tcp.srcport == {PORTS['rst']} && tcp.flags == 0x010 && "
                          f"frame.number > {rsts[0]}", "frame.number")
    probes = _fields(path, f"tcp.srcport == {PORTS['keepalive']} && tcp.analysis.keep_alive",
                     "frame.number")
    return {"q1": f"{resent[0]}:{resent[1]}", "q2": str(r.samples["queue"].ports[0]),
            "q3": cookie[0], "q4": f"{int(cookie[0]) % 64:#04x}", "q5": after[0],
            "q6": rsts[5], "q7": str(r.samples["keepalive"].ports[0]), "q8": str(len(probes))}


def _tls(path: Path) -> dict[str, str]:
    from protolab.labs.tls import run_tls_demo

    r = run_tls_demo(pcap=path, out=lambda s: None)
    resumed = _fields(path, "tls.handshake.type==2 && tls.handshake.extension.type==41",
                      "frame.number")
    ticket = _fields(path, "tls.handshake.type==1", "tls.handshake.extensions.psk.identity."
                     "identity")
    return {"q1": resumed[0], "q2": ticket[0][:8], "q3": str(r.get("restarted")[0].client_port),
            "q4": r.get("separate")[1].answer["port"],
            "q5": str(sum(a.offered for a in r.attempts))}



def _nat(path: Path) -> dict[str, str]:
    """Lab 06 from the demo's own result (the router's entry, the replies, the sockets) and
    tshark's frame.interface_name: the capture point of each packet."""
    from protolab.labs.nat import run_nat_demo

    require(os.geteuid() == 0, "network namespaces need root")
    r = run_nat_demo(pcap=path, out=lambda s: None)
    assert not r.problem(), r.problem()
    seen = _fields(path, 'udp contains "seq=1 total=0 "', "frame.interface_name")
    dropped = _fields(path, f'udp contains "{r.lost.pushed.decode()}"', "frame.interface_name",
                      "frame.number")
    return {"q1": str(r.entries[0].reply.dport), "q2": str(len(set(seen))),
            "q3": str(r.restart[1]), "q4": dropped[dropped.index("router:wan") + 1],
            "q5": str(r.lost.outside[1]), "q6": r.tcp.seen_by_server.rsplit(":", 1)[1]}


def _hijack(path: Path) -> dict[str, str]:
    from protolab.labs.hijack import run_hijack_demo

    r = run_hijack_demo(pcap=path, out=lambda s: None)
    password = _fields(path, 'tcp contains "wonderland"', "frame.number")
    attacker = [e for e in r.exchanges if e.who == "attacker" and e.design != "tls"]
    return {"q1": r.thefts["memory"].value[:8], "q2": str(r.get("memory", "replay").port),
            "q3": password[0], "q4": str(r.get("memory", "replay after logout").status),
            "q5": str(sum(e.status == 200 for e in attacker)),
            "q6": str(r.get("jwt", "replay after logout").port), "q7": r.fixed["memory"][:8]}


def _ws(path: Path) -> dict[str, str]:
    """Lab 10 from tshark (its HTTP and WebSocket dissectors, told which ports carry HTTP) and
    the demo's own result (the clients' welcomes and ports)."""
    import re

    from protolab.labs.ws import run_ws_demo

    r = run_ws_demo(pcap=path, out=lambda s: None)
    assert not r.problem(), r.problem()
    ports = sorted(set(_fields(path, 'frame contains "Upgrade: websocket"', "tcp.dstport")))
    decode = tuple(f"tcp.port=={p},http" for p in ports if p)
    switched = _fields(path, "http.response.code == 101", "frame.number", decode=decode)
    heads = _fields(path, 'frame contains "Sec-WebSocket-Key"', "tcp.payload")
    key = re.search(r"Sec-WebSocket-Key: (\S+)", bytes.fromhex(heads[0].replace(":", ""))
                    .decode("latin-1"))[1]
    masks = _fields(path, "websocket.mask == 1", "websocket.masking_key", decode=decode)
    codes = _fields(path, "websocket.mask == 0 && websocket.opcode == 8",
                    "websocket.payload.close.status_code", decode=decode)
    memory, resume = r.scenarios["memory"], r.scenarios["resume"]
    return {"q1": switched[0], "q2": key, "q3": masks[0].split(",")[0].replace(":", ""),
            "q4": next(c for c in codes if c and c != "1000"),
            "q5": str(memory.alice[-1].pid), "q6": str(resume.alice[-1].port),
            "q7": str(memory.alice[-1].since)}


def _cache(path: Path) -> dict[str, str]:
    """Lab 11 from the demo's own result (the upstream's record, the clients' answers, the
    attack) and tshark: the forged answers to the weak resolver's port, counted."""
    from protolab.labs.dns_cache import WWW, run_cache_demo
    from protolab.net.dnsmasq import dnsmasq_path

    require(dnsmasq_path() is not None, "dnsmasq is not installed")
    r = run_cache_demo(pcap=path, out=lambda s: None)
    assert not r.problem(), r.problem()
    ours = r.side("protolab")
    weak = next(a for a in r.attacks if a.target == "protolab weak")
    flood = _fields(path, f"!icmp && dns.flags.response == 1 && udp.dstport == {weak.real.port} "
                          f"&& dns.a == {FORGED_A} && dns.qry.name == \"bank.lab\"", "frame.number")
    return {"q1": str(ours.heard[0].port), "q2": str(r.asked("protolab", "2", WWW)[0].ttl),
            "q3": str(len(ours.upstream_queries(WWW))), "q4": f"{weak.real.qid:#06x}",
            "q5": str(weak.real.port), "q6": str(len(flood))}


FORGED_A = "6.6.6.6"  #: the attacker's address for bank.lab in lab 11
INDEPENDENT = {"01": _tcp, "02": _udp, "03": _dns, "04": _quic, "05": _lb, "06": _nat,
               "07": _attack, "08": _tls, "09": _hijack, "10": _ws, "11": _cache}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """live(number, i): run i of the lab's demo, captured: (right answers from tshark and the
    demo's own result, the capture). Each run is made once per test module (and xdist worker)."""
    runs: dict[tuple[str, int], tuple[dict[str, str], Path]] = {}

    def get(number: str, i: int = 0) -> tuple[dict[str, str], Path]:
        if (number, i) not in runs:
            lab = find(number)
            name = default_capture_path(lab.demo).name
            path = tmp_path_factory.mktemp(f"lab{number}-run{i}") / name
            runs[number, i] = INDEPENDENT[number](path), path
        return runs[number, i]

    return get


def _write(tmp_path, answers: dict[str, object]) -> Path:
    """An answers file; strings are quoted, anything else is written as the TOML literal given."""
    f = tmp_path / "answers.toml"
    f.write_text("".join(f"{k} = {json.dumps(v) if isinstance(v, str) else v}\n"
                         for k, v in answers.items()))
    return f


def _wrong(value: str, form: Form) -> str:
    """Another answer of the same form."""
    if form is Form.YESNO:
        return {"yes": "no", "no": "yes"}[value]
    if form is Form.HEX:
        return f"{int(value, 16) ^ 1:x}"
    if form is Form.FLAGS:
        return "RST" if value != "RST" else "ACK"
    if form is Form.ENDPOINT:
        host, port = value.rsplit(":", 1)
        return f"{host}:{int(port) + 1}"
    if form in (Form.NUMBER, Form.PACKET):
        return str(int(value) + 1)
    return value + "x"


@pytest.mark.parametrize("number", NUMBERS)
def test_answers_from_a_fresh_capture_get_full_marks_and_each_wrong_one_is_caught(
        number, tmp_path, capture_rights, live) -> None:
    lab = find(number)
    answers, capture = live(number)
    marks: list[Mark] = grade(lab, _write(tmp_path, answers), capture)
    assert [m.right for m in marks] == [True] * len(lab.questions), \
        [(m.question.key, m.given, m.expected) for m in marks if not m.right]
    for q in lab.questions:
        wrong = {**answers, q.key: _wrong(answers[q.key], q.form)}
        marks = grade(lab, _write(tmp_path, wrong), capture)
        assert [m.question.key for m in marks if not m.right] == [q.key]


def _differ(lab: Lab, a: dict[str, str], b: dict[str, str]) -> list[str]:
    return [q.key for q in lab.questions if a[q.key] != b[q.key]]


@pytest.mark.parametrize("number", NUMBERS)
def test_a_copied_answers_file_never_gets_full_marks(number, tmp_path, capture_rights,
                                                     live) -> None:
    """Another run's right answers, and the reference capture's, against this run; and this
    run's against the reference. The questions marked `varies` must all change, but for one
    (two runs may draw the same port by chance, 1 in ~28,000)."""
    lab = find(number)
    _, first = live(number, 0)
    _, second = live(number, 1)
    reference = reference_file(lab.demo)
    varies = [q.key for q in lab.questions if q.varies]
    for copied, graded in ((first, second), (reference, first), (first, reference)):
        right = facts(lab, copied)
        marks = grade(lab, _write(tmp_path, right), graded)
        assert not all(m.right for m in marks), (copied, graded, right)
        differ = _differ(lab, right, facts(lab, graded))
        assert len(set(differ) & set(varies)) >= len(varies) - 1, (copied, graded, differ)


# -- answer forms ----------------------------------------------------------------------------------


def _forms(value: str, form: Form) -> tuple[list[object], list[object]]:
    """(accepted, rejected) ways to write an answer, as the TOML value or a literal (non-str)."""

    class Literal(str):
        """Written unquoted into the TOML file."""

    def lit(text: str) -> Literal:
        return Literal(text)

    if form in (Form.PACKET, Form.NUMBER):
        n = int(value)
        right = [lit(str(n)), str(n), f" {n} ", lit(f"0x{n:x}")]
        right += [f"#{n}", f" #{n}"] if form is Form.PACKET else []
        return right, [lit(str(n + 1)), str(n - 1), f"#{n + 1}", "x", lit("true"), ""]
    if form is Form.HEX:
        n, digits = int(value, 16), value.removeprefix("0x")
        right = [value, digits, "0x" + digits, "0X" + digits.upper(), lit(f"0x{n:x}")]
        right += [lit(digits)] if digits.isdigit() and not digits.startswith("0") else []
        return right, [f"0x{n ^ 1:x}", lit(f"0x{n ^ 1:x}"), "zz", lit("false")]
    if form is Form.YESNO:
        yes = value == "yes"
        right = [lit("true" if yes else "false"), value, value.upper(), value[0]]
        return right, [lit("false" if yes else "true"), "no" if yes else "yes", "maybe"]
    if form is Form.FLAGS:
        return [value, f"[{value}]", value.lower()], ["RST", "SYN/ACK", lit("1")]
    if form is Form.ENDPOINT:
        return [value, f" {value} "], [_wrong(value, form), value.rsplit(":", 1)[0]]
    return [value, f"sessionId={value}"], [value + "x", value[1:], lit("1")]


@pytest.mark.parametrize("number", NUMBERS)
def test_every_printed_form_of_a_right_answer_is_accepted_and_wrong_values_are_not(
        number, tmp_path) -> None:
    lab = find(number)
    reference = reference_file(lab.demo)
    right = facts(lab, reference)
    answers = tmp_path / "answers.toml"
    for q in lab.questions:
        accepted, rejected = _forms(right[q.key], q.form)
        for value, ok in [(v, True) for v in accepted] + [(v, False) for v in rejected]:
            literal = value if type(value) is not str else '"' + value + '"'
            answers.write_text(f"{q.key} = {literal}\n")
            [mark] = [m for m in grade(lab, answers, reference) if m.question is q]
            assert mark.right is ok, (q.key, q.form.name, literal, right[q.key])


def test_the_template_names_each_answers_form_and_grades_as_unanswered(tmp_path) -> None:
    import tomllib

    for lab in LABS:
        text = template(lab)
        assert tomllib.loads(text) == {q.key: "" for q in lab.questions}
        for q in lab.questions:
            assert f'{q.key} = ""   # {q.form.value}\n' in text
        f = tmp_path / "t.toml"
        f.write_text(text)
        marks = grade(lab, f, reference_file(lab.demo))
        assert [(m.right, m.given) for m in marks] == [(False, "")] * len(lab.questions)


# -- facts come from the packets, not from the annotator's sentences -------------------------------


def test_no_fact_reads_the_annotators_sentences(monkeypatch) -> None:
    from protolab.analysis.annotate import Row

    expected = {lab.number: facts(lab, reference_file(lab.demo)) for lab in LABS}

    def no_sentences(self):
        raise AssertionError("a lab fact read a row's sentence")

    monkeypatch.setattr(Row, "state", property(no_sentences))
    monkeypatch.setattr(Row, "where", no_sentences)
    for lab in LABS:
        assert facts(lab, reference_file(lab.demo)) == expected[lab.number]


def _handshake_pcap(path: Path, *, retransmit_syn: bool, complete: bool) -> Path:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap

    def seg(sport, dport, flags, seq, ack=0, load=b""):
        return IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=sport, dport=dport,
                                                          flags=flags, seq=seq, ack=ack) / load

    other = [seg(5000, 6000, "PA", 10, 20, b"mid-stream"), seg(6000, 5000, "A", 20, 20),
             seg(5000, 6000, "A", 20, 20)]  # a connection whose handshake is not captured
    syn = seg(40000, 8080, "S", 1000)
    packets = [*other, syn, *([syn] if retransmit_syn else []),
               seg(8080, 40000, "SA", 7000, 1001)]
    packets += [seg(40000, 8080, "A", 1001, 7001)] if complete else []
    wrpcap(str(path), packets)
    return path


def test_the_handshake_is_counted_from_the_flags(tmp_path) -> None:
    from protolab.course.grading import tcp_client_isn, tcp_handshake_packets, tcp_server_isn

    plain = read(_handshake_pcap(tmp_path / "a.pcap", retransmit_syn=False, complete=True))
    assert (tcp_handshake_packets(plain), tcp_client_isn(plain), tcp_server_isn(plain)) == \
        (3, 1000, 7000)
    again = read(_handshake_pcap(tmp_path / "b.pcap", retransmit_syn=True, complete=True))
    assert tcp_handshake_packets(again) == 4
    cut = read(_handshake_pcap(tmp_path / "c.pcap", retransmit_syn=False, complete=False))
    with pytest.raises(LookupError):
        tcp_handshake_packets(cut)


def test_a_capture_that_cannot_answer_is_one_line(tmp_path) -> None:
    path = _handshake_pcap(tmp_path / "x.pcap", retransmit_syn=False, complete=False)
    with pytest.raises(CheckError, match=r"not a capture of `protolab tcp-demo` \(question q2"):
        facts(find("01"), path)


# -- the command -----------------------------------------------------------------------------------


def test_check_cli_full_marks_exit_0_and_bad_files_one_line(tmp_path) -> None:
    from conftest import run_cli

    ref = ROOT / "captures" / "dns-demo.ref.pcap"
    right = facts(find("03"), ref)
    good = _write(tmp_path, right)
    out = run_cli("check", "03", "--answers", str(good), "--pcap", str(ref))
    assert out.returncode == 0 and "score: 6/6" in out.stdout
    half = tmp_path / "half.toml"
    half.write_text(f'q1 = {right["q1"]}\nq6 = "#{right["q6"]}"\nq3 = "maybe"\n')
    out = run_cli("check", "03", "--answers", str(half), "--pcap", str(ref))
    assert out.returncode == 1 and "score: 2/6" in out.stdout
    assert "you said 'maybe'" in out.stdout and f"answer as {Form.YESNO.value}" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("q1 = = 3")
    out = run_cli("check", "03", "--answers", str(bad), "--pcap", str(ref))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "TOML" in out.stderr
    out = run_cli("check", "03", "--answers", str(good),
                  "--pcap", str(ROOT / "captures" / "udp-demo.ref.pcap"))
    assert out.returncode == 2 and "not a capture of `protolab dns-demo`" in out.stderr
    assert run_cli("check", "99", "--template").returncode == 2
    out = run_cli("check", "03", "--template")
    assert out.returncode == 0 and f'q6 = ""   # {Form.PACKET.value}' in out.stdout


def test_check_names_its_capture_and_warns_when_the_capture_is_newer_than_the_answers(
        tmp_path) -> None:
    """The rule: a capture written after the answers file is a re-run the answers did not see."""
    import datetime
    import os
    import shutil

    from conftest import run_cli

    capture = tmp_path / "dns-demo.pcap"
    shutil.copy(ROOT / "captures" / "dns-demo.ref.pcap", capture)
    answers = _write(tmp_path, facts(find("03"), capture))
    made = 1_700_000_000.25

    def stamp(t: float) -> str:
        return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    for answered, warned in ((made - 60, True), (made + 60, False), (made, False)):
        os.utime(capture, (made, made))
        os.utime(answers, (answered, answered))
        out = run_cli("check", "03", "--answers", str(answers), "--pcap", str(capture))
        assert out.returncode == 0 and "score: 6/6" in out.stdout, out.stdout + out.stderr
        first, second = out.stdout.splitlines()[:2]
        assert first.endswith(f"graded against {capture} (written {stamp(made)})")
        assert ("your capture is newer than your answers file" in second) is warned, second
        if warned:
            assert second.lstrip().startswith("warning — observed:")
            assert f"{answers} written {stamp(answered)}" in second
            assert f"{capture} written {stamp(made)}" in second
