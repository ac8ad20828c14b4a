"""How long `protolab --help` takes, against `python -c pass` and `import scapy.all`, in one run.

    python bench/cli_startup.py [RUNS]

Prints the median wall time of each and the ratios. The goal: `--help` under 0.3 s, far below
scapy's own import.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def median_time(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    py = sys.executable
    bare = median_time([py, "-c", "pass"], runs)
    helptime = median_time([py, "-m", "protolab", "--help"], runs)
    scapy = median_time([py, "-c", "import scapy.all"], runs)
    print(f"python -c pass           {bare * 1000:7.1f} ms")
    print(f"protolab --help          {helptime * 1000:7.1f} ms  "
          f"({helptime / bare:.1f}x bare python)")
    print(f"python -c 'import scapy.all' {scapy * 1000:7.1f} ms  "
          f"(--help is {scapy / helptime:.1f}x faster)")
    print("goal: --help under 300 ms:", "met" if helptime < 0.3 else "NOT met")


if __name__ == "__main__":
    main()
