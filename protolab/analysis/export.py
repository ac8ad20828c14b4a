"""A capture copied to pcapng with each packet's "where state lives" note as its comment
(`protolab inspect --write-annotated`, and the demos' `--pcapng`), optionally with a TLS key log
embedded so a QUIC capture decrypts from the file alone.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator

from protolab import __version__
from protolab.analysis.annotate import DNS_PORTS, Annotator
from protolab.wire.packets import decode
from protolab.wire.pcap import PcapError, read_pcap

Out = Callable[[str], None]


class FileError(ValueError):
    """A file named on the command line (not the capture) that cannot be read or written."""


def export_annotated(path: str | os.PathLike[str], target: str, secrets_path: str | None,
                     dns_ports: frozenset[int], out: Out) -> None:
    """`--write-annotated`: write the pcapng (with the key log at `secrets_path` embedded, if
    given) and say what was written. Raises FileError when the key log cannot be read or the
    target cannot be written, PcapError when the capture cannot be read."""
    secrets = None
    if secrets_path:
        try:
            with open(secrets_path, "rb") as f:
                secrets = f.read()
        except OSError as exc:
            raise FileError(f"cannot read the key log {secrets_path}: "
                            f"{exc.strerror or exc}") from None
    try:
        n = write_annotated(path, target, secrets, dns_ports)
    except OSError as exc:  # the capture's own errors are PcapError; this is the target
        raise FileError(f"cannot write {target}: {exc.strerror or exc}") from None
    out(f"wrote {n} packets with their notes as comments to {target}"
        + (" (with the TLS secrets embedded)" if secrets else "")
        + f"; see them with: tshark -r {target} -T fields -e frame.comment")


def write_annotated(path: str | os.PathLike[str], target: str | os.PathLike[str],
                    secrets: bytes | None = None,
                    dns_ports: frozenset[int] = DNS_PORTS, made_by: str = "",
                    where: str = "on loopback") -> int:
    """Copy a capture to pcapng with each packet's "where state lives" note as its comment.

    The section comment names the capture, what made it (`made_by`, e.g. a demo) and how the
    notes were made."""
    from protolab.wire.pcap import write_pcapng

    annotator = Annotator(dns_ports)
    pending: deque = deque()
    error: PcapError | None = None
    # A file that cannot be opened at all must not replace the target with an empty pcapng.
    next(iter(read_pcap(path)), None)

    def commented() -> Iterator[tuple[object, str]]:
        nonlocal error
        try:
            for rec in read_pcap(path):
                pending.append(rec)
                for row, _ in annotator.feed_pairs(decode(rec.data, rec.linktype, rec.time,
                                                          rec.orig_len, rec.interface)):
                    yield pending.popleft(), row.where()
        except PcapError as exc:
            error = exc
        for row, _ in annotator.finish_pairs():
            yield pending.popleft(), row.where()

    name = os.path.basename(os.fspath(path))
    origin = f"captured by {made_by} {where}" if made_by else "a capture"
    count = write_pcapng(target, commented(),
                         f"protolab {__version__}: {name}, {origin}, annotated by protolab "
                         f"(as `protolab inspect --write-annotated`); each packet's comment says "
                         f"where the state for it lives",
                         secrets=secrets)
    if error is not None:
        raise error
    return count
