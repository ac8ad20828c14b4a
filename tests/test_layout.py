"""The layout's walls: import-linter's contracts hold here, and break when a wall is crossed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    require(LINT.exists(), "lint-imports is not installed (pip install -e '.[test]')")
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)})


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "protolab", tree / "protolab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_walls_hold(tmp_path) -> None:
    out = _lint(_copy(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module,line,contract", [
    ("protocols/dns.py", "import socket", "Protocol cores are sans-IO"),
    ("protocols/counter.py", "import protolab.net.udpnet", "Layers"),
    ("analysis/story_checks.py", "import protolab.labs.dns", "Layers"),
    ("wire/pcap.py", "import protolab.cli", "Layers"),
    ("labs/dns.py", "import aioquic.quic.connection", "Only the QUIC core"),
])
def test_crossing_a_wall_breaks_its_contract(tmp_path, module, line, contract) -> None:
    tree = _copy(tmp_path)
    path = tree / "protolab" / module
    path.write_text(path.read_text() + f"\n{line}  # crossing a wall on purpose\n")
    out = _lint(tree)
    assert out.returncode != 0, out.stdout
    broken = out.stdout.split("Broken contracts", 1)[1]
    assert contract in broken and module.replace("/", ".").removesuffix(".py") in broken
