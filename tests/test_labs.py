"""The worksheets cannot rot: their commands run, and the grader agrees with independent facts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys

import pytest

from protolab.labs import LABS, Mark, find, grade

from conftest import ROOT, require_tool

SHEETS = sorted((ROOT / "labs").glob("[0-9][0-9]-*.md"))


def blocks(sheet) -> list[tuple[list[str], list[str]]]:
    """(commands, strings to look for) for each ```sh block of a worksheet."""
    text = sheet.read_text()
    out = []
    for m in re.finditer(r"```sh\n(.*?)\n```\n((?:> look for: [^\n]*\n)*)", text, re.S):
        commands = [c for c in m.group(1).splitlines() if c.strip()]
        looks = re.findall(r"`([^`]+)`", m.group(2))
        out.append((commands, looks))
    return out


def test_every_lab_has_a_worksheet_and_every_worksheet_a_lab() -> None:
    assert [s.name for s in SHEETS] == [lab.worksheet.name for lab in LABS]
    for lab in LABS:
        text = lab.worksheet.read_text()
        for heading in ("**Goal:**", "**You need:**", "**Time:**", "## Background", "## Steps",
                        "## Questions", "## Break it", "## Where state lives"):
            assert heading in text, (lab.number, heading)
        for q in lab.questions:
            assert f"**{q.key}.**" in text, (lab.number, q.key)
        assert any(f"check {lab.number} --template" in c for cmds, _ in blocks(lab.worksheet)
                   for c in cmds)


@pytest.mark.parametrize("sheet", SHEETS, ids=lambda s: s.stem)
def test_every_command_in_the_worksheet_runs(sheet, tmp_path, capture_rights) -> None:
    # Run where a learner runs them: a checkout's top, with the committed references in captures/
    (tmp_path / "captures").mkdir()
    for ref in (ROOT / "captures").glob("*.ref.*"):
        shutil.copy(ref, tmp_path / "captures")
    for commands, looks in blocks(sheet):
        output = ""
        for command in commands:
            argv = shlex.split(command)
            if argv[0] == "python":
                argv[0] = sys.executable
            else:
                argv[0] = require_tool(argv[0])
            done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, f"{command}\n{done.stderr}"
            output += done.stdout
        for look in looks:
            assert look in output, f"{sheet.name}: `{look}` not in the output of {commands}"


def _tshark(path, *args: str) -> list[str]:
    exe = require_tool("tshark")
    out = subprocess.run([exe, "-r", str(path), *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _independent_answers(number: str, tmp_path) -> tuple[dict[str, str], object]:
    """Answers from the demo's own result and from tshark, not from protolab.labs."""
    if number == "01":
        from protolab.tcpdemo import run_tcp_demo

        path = tmp_path / "t.pcap"
        r = run_tcp_demo(pcap=path, out=lambda s: None)
        client_port = r.client[1]
        fin = _tshark(path, "-Y", f"tcp.srcport == {client_port} && tcp.flags.fin == 1",
                      "-T", "fields", "-e", "frame.number")[0]
        rst = _tshark(path, "-Y", "tcp.dstport == 40404 && tcp.flags.reset == 1", "-T",
                      "fields", "-e", "tcp.srcport")[0]
        return {"q1": "3", "q2": fin, "q3": "client", "q4": r.forged_reply, "q5": rst}, path
    if number == "02":
        from protolab.udpdemo import ADDS, run_udp_demo

        path = tmp_path / "u.pcap"
        r = run_udp_demo(pcap=path, out=lambda s: None)
        sources = set(_tshark(path, "-Y", f"udp.dstport == {r.port} && !icmp", "-T", "fields",
                              "-e", "udp.srcport"))
        return {"q1": str(r.icmp_seen), "q2": str(sum(ADDS)), "q3": str(len(sources))}, path
    if number == "03":
        from protolab.dnsdemo import run_dns_demo

        path = tmp_path / "d.pcap"
        r = run_dns_demo(queries=5, pcap=path, out=lambda s: None)
        icmp = _tshark(path, "-Y", "icmp", "-T", "fields", "-e", "frame.number")[0]
        first = min(r.matched, key=lambda m: m.order_answered)
        in_order = [m.order_sent for m in sorted(r.matched[:5], key=lambda m: m.order_answered)]
        return {"q1": f"{first.qid:#06x}", "q2": "5",
                "q3": "yes" if in_order == sorted(in_order) else "no",
                "q4": f"{r.forged_qid:#06x}", "q5": icmp}, path
    if number == "05":
        from protolab.capture import Capture
        from protolab.lb import Policy
        from protolab.litmus import Cluster, Variant, demo_workflow
        from protolab.sessions import Design

        path = tmp_path / "lb.pcap"
        with Cluster(Variant(Design.STORE, f"sqlite:{tmp_path}/s.db"), Policy.ROUND_ROBIN) as c:
            ports = [c.address[1], *(p.port for p in c.procs.values())]
            with Capture(ports, path):
                replies = demo_workflow(c)
        return {"q1": str(len({r.backend for _, _, r in replies})),
                "q2": f"{replies[1][0]} {replies[1][1]} HTTP/1.1", "q3": "1"}, path
    from protolab.quicdemo import run_quic_demo

    path = tmp_path / "q.pcap"
    r = run_quic_demo(pcap=path, out=lambda s: None)
    retry = _tshark(path, "-o", f"tls.keylog_file:{r.keylog}", "-Y",
                    "quic.long.packet_type == 3 && !icmp", "-T", "fields", "-e",
                    "frame.number")[0]
    return {"q1": r.migrated_to[0], "q2": r.rotated[1].hex(), "q3": retry}, path


def _write(tmp_path, answers: dict[str, str]):
    f = tmp_path / "answers.toml"
    f.write_text("".join(f'{k} = "{v}"\n' for k, v in answers.items()))
    return f


@pytest.mark.parametrize("number", [lab.number for lab in LABS])
def test_answers_from_a_fresh_capture_get_full_marks_and_each_wrong_one_is_caught(
        number, tmp_path, capture_rights) -> None:
    lab = find(number)
    answers, capture = _independent_answers(number, tmp_path)
    marks: list[Mark] = grade(lab, _write(tmp_path, answers), capture)
    assert [m.right for m in marks] == [True] * len(lab.questions), \
        [(m.question.key, m.given, m.expected) for m in marks if not m.right]
    for q in lab.questions:
        wrong = dict(answers)
        wrong[q.key] = "0x9999" if lab.questions[0].kind == "hex" and q.kind == "hex" else \
            {"yes": "no", "no": "yes"}.get(answers[q.key], answers[q.key] + "9")
        marks = grade(lab, _write(tmp_path, wrong), capture)
        assert [m.question.key for m in marks if not m.right] == [q.key]


def test_check_cli_full_marks_exit_0_and_bad_files_one_line(tmp_path) -> None:
    from conftest import run_cli

    ref = ROOT / "captures" / "dns-demo.ref.pcap"
    from protolab.labs import facts

    right = facts(find("03"), ref)
    good = _write(tmp_path, right)
    out = run_cli("check", "03", "--answers", str(good), "--pcap", str(ref))
    assert out.returncode == 0 and "score: 5/5" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("q1 = = 3")
    out = run_cli("check", "03", "--answers", str(bad), "--pcap", str(ref))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "TOML" in out.stderr
    out = run_cli("check", "03", "--answers", str(good),
                  "--pcap", str(ROOT / "captures" / "udp-demo.ref.pcap"))
    assert out.returncode == 2 and "not a capture of `protolab dns-demo`" in out.stderr
    assert run_cli("check", "99", "--template").returncode == 2
