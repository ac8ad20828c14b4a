"""CPU time of the compiled fast path's DNS and QUIC parts alone, on a classic pcap of
Ethernet/IPv4 frames (the benchmark capture of bench/inspect_vs_tshark.py):

    python bench/fastp_time.py FILE

bench/fastp_driver.c reads the file, and hands every UDP datagram to the parts (DNS, QUIC or
both) or, for a baseline, to none; the parts' cost is the difference, in one pass over the file
(as the compiled path makes).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastp_check  # noqa: E402


def main() -> None:
    lib = fastp_check.build()
    lib.drv_bench.restype = ctypes.c_longlong
    lib.drv_bench.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int,
                              ctypes.POINTER(ctypes.c_double), ctypes.c_int]
    ports = (ctypes.c_int * 2)(53, 5353)
    secs = ctypes.c_double()
    best: dict[int, float] = {}
    datagrams = 0
    for _ in range(3):
        for parts in (0, 1, 2, 3):
            datagrams = lib.drv_bench(sys.argv[1].encode(), ports, 2, ctypes.byref(secs), parts)
            if datagrams < 0:
                sys.exit(f"declined or unreadable: {lib.drv_why().decode()}")
            best[parts] = min(best.get(parts, secs.value), secs.value)
    for parts, name in ((1, "DNS"), (2, "QUIC"), (3, "DNS and QUIC")):
        cost = best[parts] - best[0]
        print(f"{name:14} {cost:.3f} CPU s for one pass ({datagrams:,} UDP datagrams in the file)")


if __name__ == "__main__":
    main()
