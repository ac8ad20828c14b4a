"""Files written whole or not at all: a temporary name beside the target, renamed into place.

Where state lives: in the file system only. A reader of `path` sees either the old file or the
complete new one, never a half-written one, whatever interrupts the writer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on success it replaces `path`, on error it vanishes.

    Whatever was at `path` before stays intact until the new file is complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """`text` (UTF-8) as the whole of `path`, atomically (see `atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text.encode())
