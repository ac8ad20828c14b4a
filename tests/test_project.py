"""The README stays true: CI runs its test command, and it lists every subcommand."""

from __future__ import annotations

import re

from protolab.cli import build_parser

from conftest import ROOT


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_ci_runs_the_readmes_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", _readme(), re.S)
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    assert "PROTOLAB_STRICT=1" in (ROOT / ".ci" / "run").read_text()


def test_readme_lists_every_subcommand() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`protolab {name}" in _readme(), name


def test_every_lab_in_the_readme_has_its_reference_capture() -> None:
    for ref in re.findall(r"`(captures/[\w.-]+\.ref\.pcap)`", _readme()):
        assert (ROOT / ref).is_file(), ref


def test_readme_names_every_option_of_every_subcommand() -> None:
    text = _readme()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in text, f"{name} {option}"
