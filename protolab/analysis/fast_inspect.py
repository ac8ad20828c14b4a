"""`protolab inspect`'s compiled fast path: the default table, `--flows` and `--json`, from C.

The C extension (`_fastinspect.c`, built by `pip install` where a C compiler is found, never
required) reads, decodes, annotates and lays out the capture in one loop. It prints the very same
bytes as the Python path (`protolab.analysis.inspect`, the readable reference and the fallback);
the differential test (tests/test_fast_inspect.py) runs both on every capture and requires it.

Before it prints anything, the extension reads the whole capture once, printing into a spool (the
first SPOOL_MEMORY bytes in memory, the rest in an unnamed temporary file): if any packet needs
something it does not implement, it declines (returns None) and the Python path prints the capture
instead, so a run never switches paths mid-output; else it hands the spool to stdout. Where the
spool cannot keep it all (no temporary file, disk full) it reads the capture a second time to
print it. Every sentence
comes from `facts.TEMPLATES`, handed to the extension at each run: rewording one changes both paths.

PROTOLAB_INSPECT=python forces the Python path; =compiled makes a decline an error (for tests and
the benchmark); unset or =auto: compiled where it is built and accepts the capture, else Python.

No `from __future__ import annotations` here: NamedTuple would compile each field's annotation
kept as a string to check it (typing.ForwardRef), at every start-up.
"""

import os
import stat
from collections.abc import Callable
from enum import Enum
from types import ModuleType
from typing import NamedTuple

from protolab.analysis.inspect_options import Options


class Path(Enum):
    AUTO = "auto"  #: compiled where built and the capture is covered, else Python
    PYTHON = "python"  #: always the Python path
    COMPILED = "compiled"  #: the compiled path, or an error saying why not


ENV = "PROTOLAB_INSPECT"
SPOOL_MEMORY = 8 << 20  #: bytes of output kept in memory before the temporary file takes the rest


class FastPathUnavailable(Exception):
    """PROTOLAB_INSPECT=compiled, and the compiled path cannot print this capture."""


class Result(NamedTuple):
    read: int  #: packets read
    matched: int  #: packets chosen (the fast path has no --filter: all of them)
    shown: int  #: packets printed (--limit cuts the rest)
    flows: int  #: conversations numbered


def extension() -> ModuleType | None:
    """The compiled module, or None where it was not built."""
    try:
        from protolab.analysis import _fastinspect
    except ImportError:
        return None
    return _fastinspect


def chosen(env: dict[str, str] | None = None) -> Path:
    value = (env if env is not None else os.environ).get(ENV, "auto").strip().lower() or "auto"
    try:
        return Path(value)
    except ValueError:
        raise FastPathUnavailable(f"{ENV}={value!r}: use auto, python or compiled") from None


def status() -> tuple[bool, str]:
    """(compiled path in use, one line saying which path `inspect` takes here and why)."""
    try:
        path = chosen()
    except FastPathUnavailable as exc:  # `inspect` stops with this line: doctor says it too
        return False, str(exc)
    if path is Path.PYTHON:
        return False, f"Python path ({ENV}=python)"
    ext = extension()
    if ext is None:
        return False, ("Python path: the compiled extension is not built (no C compiler when "
                       "installed?)")
    return True, f"compiled fast path ({ext.__file__}); Python where a capture needs it"


def covers(opts: Options) -> bool:
    """Whether the options ask for what the compiled path prints: the default table, --json or
    --flows, with --limit, --width, --wide and --dns-port (no --filter, --flow, pictures...)."""
    return not (opts.filter or opts.flow is not None
                or opts.detail is not None or opts.write_annotated
                or opts.ladder or opts.mermaid or opts.html)


def run(path: str | os.PathLike[str], opts: Options, write: Callable[[bytes], object],
        encoding: str = "utf-8", fd: int = -1,
        spool_memory: int = SPOOL_MEMORY) -> Result | None:
    """Print the capture through the compiled path and return what it read and printed; None
    when the Python path must print it (forced, not built, options or a capture it does not
    cover: nothing was written then). It writes UTF-8 bytes to the file descriptor `fd` (stdout's,
    flushed) where one is given, else through `write`. Raises FastPathUnavailable under
    PROTOLAB_INSPECT=compiled instead of returning None."""
    path_choice = chosen()
    if path_choice is Path.PYTHON:
        return None
    why = _why_not(opts, encoding) or _read_once(path)
    ext = extension()
    if why is None and ext is None:
        why = "the compiled extension is not built"
    if why is None:
        got = ext.run(os.fspath(path), **_arguments(opts), write=write, fd=fd,
                      spool_dir=os.environ.get("TMPDIR") or "/tmp", spool_memory=spool_memory)
        if isinstance(got, tuple):
            return Result(*got)
        why = f"the capture needs the Python path: {got}"
    if path_choice is Path.COMPILED:
        raise FastPathUnavailable(f"{ENV}=compiled: {why}")
    return None


def _why_not(opts: Options, encoding: str) -> str | None:
    if not covers(opts):
        return "--filter, --flow, --detail, --write-annotated and the pictures are Python's"
    if encoding.replace("-", "").replace("_", "").lower() != "utf8":
        return f"stdout's encoding is {encoding}, the compiled path writes UTF-8"
    return None


def _read_once(path: str | os.PathLike[str]) -> str | None:
    """Why a capture that can be read only once (a pipe, `/dev/stdin`, `<(...)`) is the Python
    path's: a decline after the extension had read it would leave the Python path nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing: both paths say so alike
        return None
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode):
        return "the capture comes from a pipe or a device (it can be read once)"
    return None


def _arguments(opts: Options) -> dict:
    """What the extension needs of the options and of the Python path's tables (the layout,
    the sentences), so both print from one source."""
    from protolab.analysis.fact_kinds import TEMPLATES, Action, Holder, Kind
    from protolab.analysis.table import MIN_WIDTH, layout, table_width

    flows, as_json = bool(opts.flows), bool(opts.json)
    lay = layout(opts.width, opts.wide)
    width, limit = opts.width, getattr(opts, "limit", None)
    return {
        "mode": ("flows_json" if as_json else "flows") if flows else ("json" if as_json
                                                                      else "table"),
        "widths": lay.widths, "state_width": -1 if lay.state is None else lay.state,
        "beside": lay.beside,
        "limit": -1 if limit is None else limit,  # None: no --limit
        "dns_ports": tuple(sorted(opts.dns_ports)),
        "flows_width": -1 if opts.wide else max(MIN_WIDTH, width or table_width()),
        "templates": {kind.value: text for kind, text in TEMPLATES.items()},
        # the enums' names (checked against the C ones) and values (printed), in order
        "names": tuple((tuple(m.name for m in e), tuple(m.value for m in e))
                       for e in (Kind, Holder, Action)),
    }
