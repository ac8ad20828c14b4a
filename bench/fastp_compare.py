"""Both paths of `protolab inspect` on captures and option sets: stdout, stderr and exit code
must be identical (PROTOLAB_INSPECT=python against =compiled).

    python bench/fastp_compare.py FILE... [-- OPTION SETS as "--json|--flows --wide|..."]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETS = ["", "--json", "--flows", "--flows --json", "--wide", "--width 200", "--width 70",
        "--limit 7", "--dns-port 9999", "--flows --width 90"]


def run(way: str, path: str, opts: str) -> tuple[int, bytes, bytes]:
    env = {**os.environ, "PROTOLAB_INSPECT": way, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "protolab", "inspect", path, *opts.split()],
                       env=env, capture_output=True)
    return p.returncode, p.stdout, p.stderr


def main() -> None:
    args = sys.argv[1:]
    sets = SETS
    if "--" in args:
        i = args.index("--")
        args, sets = args[:i], args[i + 1:]
    for path in args:
        for opts in sets:
            a, b = run("python", path, opts), run("compiled", path, opts)
            if a == b:
                verdict = "identical"
            elif b[0] != 0 and b"PROTOLAB_INSPECT=compiled" in b[2]:
                verdict = "declined: " + b[2].decode().strip().splitlines()[-1][-150:]
            else:
                verdict = "DIFFERENT"
                al, bl = a[1].splitlines(), b[1].splitlines()
                for n, (x, y) in enumerate(zip(al, bl, strict=False)):
                    if x != y:
                        verdict += f" at line {n + 1}:\n    py {x[:300]!r}\n    c  {y[:300]!r}"
                        break
                else:
                    verdict += f" (lines {len(al)} vs {len(bl)}; rc {a[0]} vs {b[0]}; " \
                               f"stderr {a[2][-200:]!r} vs {b[2][-200:]!r})"
            print(f"{path} [{opts}]: {verdict}", flush=True)


if __name__ == "__main__":
    main()
