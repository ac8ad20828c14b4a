"""`protolab doctor` tells the truth about the machine, including what is missing."""

from __future__ import annotations

from protolab.doctor import TOOLS, checks, report

from conftest import STRICT, run_cli


def test_a_path_without_tools_is_reported_with_the_fix(tmp_path) -> None:
    results = {c.name: c for c in checks({"PATH": str(tmp_path)})}
    for tool in TOOLS:
        assert not results[tool].ok and results[tool].fix.startswith("sudo apt-get install")
    text, ready = report(list(results.values()))
    assert not ready and "MISSING" in text and "sudo apt-get install tshark" in text


def test_the_cli_exits_non_zero_when_something_is_missing(tmp_path) -> None:
    out = run_cli("doctor", env={"PATH": str(tmp_path)})
    assert out.returncode == 1
    line = next(x for x in out.stdout.splitlines() if " tshark " in x)
    assert line.startswith("MISSING") and "sudo apt-get install tshark" in line
    assert "some labs will skip steps here" in out.stdout


def test_on_a_complete_machine_it_says_so() -> None:
    text, ready = report(checks())
    if STRICT:  # CI installs every tool and runs as root: everything must be there
        assert ready, text
    assert ("every lab can run fully here" in text) == ready
