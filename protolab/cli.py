"""The `protolab` command: parses arguments and calls library functions, nothing else.

Every subcommand's module is imported only when that subcommand runs, so `protolab --help` stays
fast (no scapy, no aioquic, no dnspython). Bad input ends in one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from protolab import __version__

EXIT_USAGE = 2
EXIT_FAILED = 1


class CliError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


class OutputClosed(Exception):
    """Whoever reads our output stopped (`protolab inspect x | head`): end quietly.

    Not an OSError on purpose: the demos' own sockets raise BrokenPipeError as part of the story.
    """


def out(line: str = "") -> None:
    """Print one line of a demo's story."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        raise OutputClosed from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {value}")
    return value


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, not {value}")
        return value

    return parse


def cmd_dns_demo(args: argparse.Namespace) -> int:
    from protolab.dnsdemo import run_dns_demo

    try:
        result = run_dns_demo(queries=args.queries, port=args.port, capture=not args.no_capture,
                              pcap=args.pcap, out=out)
    except PermissionError as exc:
        raise CliError(f"cannot bind or write: {exc.strerror} ({exc.filename or 'port'})") \
            from None
    except OSError as exc:
        where = f"127.0.0.1:{args.port}" if args.port else "the lab"
        raise CliError(f"cannot run {where}: {exc.strerror or exc}") from None
    ok = len(result.matched) == args.queries + 1 and result.complete is not False
    return 0 if ok else EXIT_FAILED


def cmd_tcp_demo(args: argparse.Namespace) -> int:
    from protolab.tcpdemo import run_tcp_demo

    try:
        result = run_tcp_demo(capture=not args.no_capture, pcap=args.pcap, out=out)
    except OSError as exc:
        raise CliError(f"tcp-demo: {exc.strerror or exc}") from None
    ok = result.http_verdict.endswith("workflow continued") and result.agree is not False
    return 0 if ok else EXIT_FAILED


def cmd_udp_demo(args: argparse.Namespace) -> int:
    from protolab.udpdemo import run_udp_demo

    try:
        result = run_udp_demo(capture=not args.no_capture, pcap=args.pcap, out=out)
    except OSError as exc:
        raise CliError(f"udp-demo: {exc.strerror or exc}") from None
    return 0 if result.verdict.endswith("workflow continued") else EXIT_FAILED


def cmd_quic_demo(args: argparse.Namespace) -> int:
    from protolab.quicdemo import run_quic_demo

    try:
        result = run_quic_demo(capture=not args.no_capture, pcap=args.pcap, out=out)
    except OSError as exc:
        raise CliError(f"quic-demo: {exc.strerror or exc}") from None
    ok = result.reconnected and result.retry_connected and result.server_paths[:1] == [
        (result.migrated_to, True)]
    return 0 if ok else EXIT_FAILED


def cmd_inspect(args: argparse.Namespace) -> int:
    from protolab.annotate import annotate_file, format_rows
    from protolab.pcap import PcapError

    rows = []
    try:
        for row in annotate_file(args.file, dns_ports=set(args.dns_port or ()) | {53, 5353}):
            rows.append(row)
    except PcapError as exc:
        if rows:
            out(format_rows(rows))
        print(f"protolab: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    out(format_rows(rows))
    return 0


def _capture_options(p: argparse.ArgumentParser, lab: str) -> None:
    p.add_argument("--no-capture", action="store_true", help="run without capturing")
    p.add_argument("--pcap", metavar="PATH",
                   help=f"where to write the capture (default captures/{lab}.pcap)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protolab",
        description="See where state lives in network protocols: run a demo, capture it, read "
                    "the annotated capture.")
    parser.add_argument("--version", action="version", version=f"protolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "dns-demo", help="DNS over UDP: answers matched to queries by ID (the headline lab)",
        description="A lab DNS server and a client on one UDP socket: out-of-order answers "
                    "matched by query ID, forged answers dropped, an answer to a closed socket. "
                    "Captures the traffic (needs root or CAP_NET_RAW) and annotates it.")
    p.add_argument("--queries", type=_count(1, 200), default=5, metavar="N",
                   help="queries sent at once in part 1 (default 5)")
    p.add_argument("--port", type=_port, default=0,
                   help="the lab server's UDP port on 127.0.0.1 (default: a free one)")
    _capture_options(p, "dns-demo")
    p.set_defaults(func=cmd_dns_demo)

    p = sub.add_parser(
        "tcp-demo", help="TCP: connection state in two kernels, keyed by the 4-tuple",
        description="A TCP connection's states next to the packets that cause them (protolab's "
                    "model checked against the kernel's own record), then the state taken away: "
                    "a killed server, a forged out-of-window segment, an ACK to a port with no "
                    "socket, a reconnect; and HTTP carrying its state over new connections. "
                    "Capture, forging and the kernel's record need root; the rest runs without.")
    _capture_options(p, "tcp-demo")
    p.set_defaults(func=cmd_tcp_demo)

    p = sub.add_parser(
        "udp-demo", help="UDP: nothing to lose; the litmus test with a real server restart",
        description="A UDP counter server as its own process: no handshake and no per-peer "
                    "kernel entry; the server is restarted between two requests and the "
                    "workflow goes on because the client carries its state; a datagram to the "
                    "stopped server from an unconnected and a connected socket.")
    _capture_options(p, "udp-demo")
    p.set_defaults(func=cmd_udp_demo)

    p = sub.add_parser(
        "quic-demo", help="QUIC: connection IDs, migration, Retry tokens, a restart",
        description="aioquic's sans-IO QUIC over plain UDP sockets: the DCID in every packet "
                    "is the key of the receiver's connection table; CID rotation; migration to "
                    "127.0.0.2 (QUIC survives, TCP does not); a server restart (the table is "
                    "gone); a Retry whose token carries the state. Writes the TLS key log and a "
                    "qlog next to the capture.")
    _capture_options(p, "quic-demo")
    p.set_defaults(func=cmd_quic_demo)

    p = sub.add_parser(
        "inspect", help="annotate a pcap file: where the state for each packet lives",
        description="Read a classic pcap file and print one row per packet with the state it "
                    "creates, uses or finds missing, and who holds that state.")
    p.add_argument("file", help="a classic pcap file")
    p.add_argument("--dns-port", type=_port, action="append", metavar="PORT",
                   help="also decode UDP on this port as DNS (53 and 5353 always are)")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"protolab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OutputClosed:
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("protolab: interrupted", file=sys.stderr)
        return 130
