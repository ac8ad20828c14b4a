"""The optional compiled fast path of `protolab inspect` (protolab/analysis/_fastinspect.c).

Everything else is in pyproject.toml. The extension is `optional`: where it cannot be built (no C
compiler, no Python headers) `pip install` still succeeds and `inspect` runs its Python path;
`protolab doctor` says which path is in use.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "protolab.analysis._fastinspect", [
        "protolab/analysis/_fastinspect.c", "protolab/analysis/fi_row.c",
        "protolab/analysis/fi_map.c", "protolab/analysis/fi_read.c",
        "protolab/analysis/fi_decode.c", "protolab/analysis/fi_tcp.c",
        "protolab/analysis/fi_text.c", "protolab/analysis/fi_out.c",
        "protolab/analysis/fi_flows.c", "protolab/analysis/fi_spool.c",
        "protolab/analysis/fast_dns.c", "protolab/analysis/fast_quic.c"],
    depends=["protolab/analysis/fastinspect.h", "protolab/analysis/fi_core.h",
             "protolab/analysis/fi_map.h", "protolab/analysis/fi_out.h",
             "protolab/analysis/fi_flows.h", "protolab/analysis/fast_text.h",
             "protolab/analysis/fi_spool.h", "protolab/analysis/fast_dns_names.h",
             "protolab/analysis/fi_buf.h"],
    extra_compile_args=["-O3", "-std=c11", "-Wall"], optional=True)])
