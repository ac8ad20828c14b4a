"""The `protolab` command: parses arguments and calls library functions, nothing else.

Every subcommand's module is imported only when that subcommand runs, so `protolab --help` stays
fast (no scapy, no aioquic, no dnspython). Bad input ends in one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from protolab import __version__

if TYPE_CHECKING:
    from protolab.analysis.fast_inspect import Result
    from protolab.analysis.inspect_options import Options, Tally

Subparsers = argparse._SubParsersAction  #: what `add_subparsers` returns

EXIT_USAGE = 2
EXIT_FAILED = 1


class CliError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


class OutputClosed(Exception):
    """Whoever reads our output stopped (`protolab inspect x | head`): end quietly.

    Not an OSError on purpose: the demos' own sockets raise BrokenPipeError as part of the story.
    """


T = TypeVar("T")


class OutputFailed(Exception):
    """stdout cannot be written (`> /dev/full`: no space left): one line, exit 1."""


def _written(write: Callable[[], T]) -> T:
    """Run a write to stdout (what it returns): the reader gone is OutputClosed, any other
    failure OutputFailed."""
    try:
        return write()
    except BrokenPipeError:
        raise OutputClosed from None
    except OSError as exc:
        raise OutputFailed(exc.strerror or str(exc)) from None


def out(line: str = "") -> None:
    """Print one line of a demo's story."""
    _written(lambda: print(line))


class Lines:
    """`out` for a long stream of lines (`inspect`'s rows): kept, and written SIZE at a time in
    one write, not one print each (`many`: a batch of them in one call); `flush` before
    anything else is printed."""

    SIZE = 512  #: lines kept before a write (a batch given at once may bring more)

    def __init__(self) -> None:
        self._lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        self._lines.append(line)
        if len(self._lines) >= self.SIZE:
            self.flush()

    def many(self, lines: list[str]) -> None:
        """Each of `lines`, in one call (`inspect` hands a batch of rows so)."""
        self._lines += lines
        if len(self._lines) >= self.SIZE:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines = []  # gone even when the reader has closed the pipe
        _written(lambda: sys.stdout.write(text))


def _ranged(convert: Callable, what: str, low: float, high: float, name: str = ""):
    """An argparse type: `convert` the text, then check low <= value <= high."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name + ' ' if name else ''}must be "
                                             f"{low}..{high}, not {value}")
        return value

    return parse


_port = _ranged(int, "a port number", 0, 65535, "port")
_probability = _ranged(float, "a probability", 0.0, 1.0, "a probability")


def _reference_demos() -> tuple[str, ...]:
    """Every demo with a reference capture: the captured demos of the registry, and lb."""
    from protolab.labs import DEMOS

    return (*DEMOS, "lb")


def _demo(text: str) -> str:
    demos = _reference_demos()
    if text not in demos:
        raise argparse.ArgumentTypeError(f"no demo {text!r}: choose from {', '.join(demos)}")
    return text


def _duration(text: str) -> float:
    """50ms, 0.2s or a bare number of milliseconds → seconds."""
    t = text.strip().lower()
    scale, number = (1.0, t[:-2]) if t.endswith("ms") else (1000.0, t[:-1]) if t.endswith(
        "s") else (1.0, t)
    try:
        value = float(number) * scale / 1000.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 50ms)") from None
    if not 0.0 <= value <= 10.0:
        raise argparse.ArgumentTypeError(f"must be 0..10 s, not {text}")
    return value


def _count(low: int, high: int) -> Callable[[str], int]:
    return _ranged(int, "a whole number", low, high)


def _run_demo(args: argparse.Namespace, run: Callable, prefix: str, **kwargs: object):
    """Run a demo live with the common options (`protolab.course.live`): a failure to start or
    to write is one line."""
    from protolab.course.live import DemoError, run_live

    page = _page(args)
    with _page_errors():
        try:
            return run_live(args.command, run, prefix, capture=not args.no_capture,
                            pcap=args.pcap, pcapng=args.pcapng, out=out, page=page, **kwargs)
        except DemoError as exc:
            raise CliError(str(exc)) from None


def _page(args: argparse.Namespace):
    """`--html PATH`: the page this run writes (`protolab.course.page`), or None; a PATH that
    can never be written is one line before anything runs."""
    if not args.html:
        return None
    from protolab.course.page import DemoPage

    with _page_errors():
        return DemoPage(args.command, args.html, out)


@contextlib.contextmanager
def _page_errors() -> Iterator[None]:
    """The --html page cannot be written: one line, exit 2."""
    from protolab.course.page import PageError

    try:
        yield
    except PageError as exc:
        raise CliError(str(exc)) from None


def _netem(args: argparse.Namespace) -> int | None:
    """`--netem`: run this demo again inside a namespace whose lo has netem rules; None when
    not asked for."""
    if not getattr(args, "netem", False):
        return None
    from protolab.course.live import demo_pcap
    from protolab.net.netem import NetemError, run_in_namespace

    plan = _faults(args)
    argv = [args.command]
    if args.no_capture:
        argv.append("--no-capture")
    # The run inside the namespace sees no fault option: name the fault run's capture for it.
    paths = {"pcap": demo_pcap(args.command, args.pcap, True), "pcapng": args.pcapng,
             "html": args.html}
    for option, path in paths.items():
        if path:
            argv += [f"--{option}", os.path.abspath(path)]
    if args.command == "dns-demo":
        argv += ["--queries", str(args.queries), "--port", str(args.port)]
    try:
        return run_in_namespace(plan, argv)
    except NetemError as exc:
        raise CliError(str(exc)) from None


def _replay(args: argparse.Namespace) -> int | None:
    """`--replay [CAPTURE]`: the demo read back from a capture; None when not asked for."""
    if args.replay is None:
        return None
    from protolab.course.replay import replay
    from protolab.wire.pcap import PcapError

    page = _page(args)
    try:
        result = replay(args.command, args.replay or None, out=page.out if page else out)
    except PcapError as exc:
        raise CliError(str(exc)) from None
    if page is not None:
        with _page_errors():
            page.write_replay(result)
    return 0 if result.complete else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    """Any captured demo (`protolab.labs.DEMOS`): replayed, under netem, or run live."""
    if getattr(args, "hosts", False):
        return _tcp_hosts(args)
    if (code := _replay(args)) is not None or (code := _netem(args)) is not None:
        return code
    from protolab.labs import demo_module

    kwargs: dict[str, object] = {}
    prefix = args.command
    if args.command == "dns-demo":
        kwargs.update(queries=args.queries, port=args.port)
        prefix = f"cannot run 127.0.0.1:{args.port}" if args.port else prefix
    if args.command == "hijack-demo":
        kwargs["lb"] = args.lb
    if hasattr(args, "drop"):  # the demos with fault options
        kwargs["faults"] = _faults(args)
    if args.command == "ws-demo":
        kwargs.update(_ws_demo_options(args))
    with _balancer_errors():
        result = _run_demo(args, demo_module(args.command).run, prefix, **kwargs)
    return EXIT_FAILED if result.problem() else 0


def _tcp_hosts(args: argparse.Namespace) -> int:
    """`tcp-demo --hosts`: the TCP lab between two network namespaces (root only)."""
    if args.replay is not None:
        raise CliError("tcp-demo: --hosts runs live and --replay reads a capture: choose one")
    from protolab.labs import tcp_hosts

    if (denied := tcp_hosts.denied_reason()) is not None:
        raise CliError(denied)
    result = _run_demo(args, tcp_hosts.run, "tcp-demo --hosts")
    return EXIT_FAILED if result.problem() else 0


def _dns_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "dns-demo", help="DNS over UDP: answers matched to queries by ID (the headline lab)",
        description="A lab DNS server and a client on one UDP socket: out-of-order answers "
                    "matched by query ID, forged answers dropped, an answer to a closed socket. "
                    "Captures the traffic (needs root or CAP_NET_RAW) and annotates it.")
    p.add_argument("--queries", type=_count(1, 200), default=5, metavar="N",
                   help="queries sent at once in part 1 (default 5)")
    p.add_argument("--port", type=_port, default=0,
                   help="the lab server's UDP port on 127.0.0.1 (default: a free one)")
    _capture_options(p, "dns-demo", faults=True)
    _fault_options(p, "part 1's queries: watch the client's retry timer and count")
    p.set_defaults(func=cmd_demo)


def _tcp_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "tcp-demo", help="TCP: connection state in two kernels, keyed by the 4-tuple",
        description="A TCP connection's states next to the packets that cause them (protolab's "
                    "model checked against the kernel's own record), then the state taken away: "
                    "a killed server, a forged out-of-window segment, an ACK to a port with no "
                    "socket, a reconnect; and HTTP carrying its state over new connections. "
                    "Capture, forging and the kernel's record need root; the rest runs without.")
    _capture_options(p, "tcp-demo")
    p.add_argument("--hosts", action="store_true",
                   help="client and server as two hosts with their own kernels (network "
                        "namespaces over a veth link): each host's socket table read inside it, "
                        "captured at both ends into captures/tcp-demo-hosts.pcapng (root)")
    p.set_defaults(func=cmd_demo)


def _udp_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "udp-demo", help="UDP: nothing to lose; the litmus test with a real server restart",
        description="A UDP counter server as its own process: no handshake and no per-peer "
                    "kernel entry; the server is restarted between two requests and the "
                    "workflow goes on because the client carries its state; a datagram to the "
                    "stopped server from an unconnected and a connected socket.")
    _capture_options(p, "udp-demo", faults=True)
    _fault_options(p, "part 3: numbered datagrams; nothing in UDP notices")
    p.set_defaults(func=cmd_demo)


def _quic_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "quic-demo", help="QUIC: connection IDs, migration, Retry tokens, a restart",
        description="aioquic's sans-IO QUIC over plain UDP sockets: the DCID in every packet "
                    "is the key of the receiver's connection table; CID rotation; migration to "
                    "127.0.0.2 (QUIC survives, TCP does not); a server restart (the table is "
                    "gone); a Retry whose token carries the state. Writes the TLS key log and a "
                    "qlog next to the capture.")
    _capture_options(p, "quic-demo", faults=True)
    _fault_options(p, "part 7: loss recovery and ACK ranges")
    p.set_defaults(func=cmd_demo)


def _tls_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "tls-demo", help="TLS 1.3 session tickets: the server's state, held by the client",
        description="Python ssl (TLS 1.3) on loopback: a full handshake and its ticket, a "
                    "resumption, a restarted server (a new ticket key: full handshake), and two "
                    "backends behind a TCP relay sharing one ticket key or each its own. Writes "
                    "the client's TLS key log next to the capture.")
    _capture_options(p, "tls-demo")
    p.set_defaults(func=cmd_demo)


def _ws_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "ws-demo", help="a WebSocket chat: restart and resume behind the balancer (lab 10)",
        description="A chat on WebSocket (wsproto) with backends as processes behind "
                    "protolab's balancer, which tunnels the upgrade, and a real nginx: three "
                    "designs (memory; Redis pub/sub; pub/sub and a history to resume from), a "
                    "backend restarted under a client (PIDs before and after), its reconnect with "
                    "backoff and what it lost. Uses a private redis-server unless --redis.")
    p.add_argument("--redis", metavar="URL", help="a Redis to share the chat through (default: "
                                                  "a private redis-server for the run)")
    p.add_argument("--under-load", action="store_true",
                   help="instead: N clients per design, a rolling restart of every backend; "
                        "reconnect p50/p99, messages lost, memory per connection (not captured)")
    p.add_argument("--clients", type=_count(1, 2000), default=200, metavar="N",
                   help="--under-load: clients per design (default 200)")
    p.add_argument("--backends", type=_count(2, 8), default=3, metavar="N",
                   help="--under-load: backend processes (default 3)")
    p.add_argument("--lb", choices=BALANCERS, default="protolab",
                   help="--under-load: the balancer in front (default protolab)")
    _capture_options(p, "ws-demo")
    p.set_defaults(func=cmd_demo)


def _ws_demo_options(args: argparse.Namespace) -> dict[str, object]:
    """ws-demo's own options as the run's keyword arguments; the load ones only with
    --under-load, which is measured, not captured."""
    load = args.under_load
    if not load and (args.clients != 200 or args.backends != 3 or args.lb != "protolab"):
        raise CliError("--clients, --backends and --lb go with --under-load")
    if load and (args.html or args.pcapng or args.pcap):
        raise CliError("--under-load is measured, not captured: no --pcap, --pcapng or --html")
    options: dict[str, object] = {"redis": args.redis}
    if load:
        options.update(under_load=True, clients=args.clients, backends=args.backends,
                       lb=args.lb)
    return options


def _cache_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "cache-demo", help="a resolver's cache: TTLs, restarts, negative answers, poisoning",
        description="protolab's own caching resolver and dnsmasq (Debian dnsmasq-base, its own "
                    "config on a free loopback port) answer the same clients: the upstream sees "
                    "only the misses, TTLs count down, NXDOMAIN is cached for the SOA minimum, "
                    "a restart (new PID) empties the cache; then a bounded poisoning attempt on "
                    "loopback: a fixed port and sequential IDs are poisoned, random ones are not.")
    _capture_options(p, "cache-demo")
    p.set_defaults(func=cmd_demo)


def _nat_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "nat-demo", help="a NAT router's conntrack entry: UDP breaks when it expires (root)",
        description="Client, NAT router and server as hosts with their own kernels (network "
                    "namespaces): the router's conntrack entry for a UDP flow, the same "
                    "datagram before and after translation, a server restart that loses "
                    "nothing, a mapping that expires and drops the server's next datagram, "
                    "keepalives that hold it, TCP held three times and the router's table "
                    "flushed. Captured at four points into one pcapng. Needs root; without it, "
                    "replays the reference.")
    _capture_options(p, "nat-demo")
    p.set_defaults(func=cmd_demo)


def _tcp_attack_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "tcp-attack-demo", help="TCP under attack: SYN queue, SYN cookies, RST injection, "
                                "half-open connections (lab 07)",
        description="A server, a client and an attacker, each a network namespace: a bounded, "
                    "paced flood of spoofed SYNs fills the SYN queue (tcp_syncookies=0), then "
                    "meets SYN cookies (=1, =2); forged RSTs exact, in the window and outside; "
                    "a client that vanishes while the server's keepalive timer runs. Needs root "
                    "(without it, says so and replays the reference capture).")
    _capture_options(p, "tcp-attack-demo")
    p.set_defaults(func=cmd_demo)


def _hijack_demo_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "hijack-demo", help="a stolen session: replay a captured cookie or JWT; logout; TLS",
        description="The victim logs in through protolab's balancer over plain HTTP (memory, "
                    "store, jwt, jwt with a deny-list); the attacker reads the cookie or token "
                    "off the capture and replays it from 127.0.0.2, before and after the "
                    "victim's logout; session fixation; the deny-list's cost; then the same "
                    "behind a TLS-terminating nginx or HAProxy, without and with the victim's "
                    "key log (written next to the capture).")
    p.add_argument("--lb", choices=("nginx", "haproxy"), default="nginx",
                   help="the balancer that terminates TLS in part 6 (default nginx)")
    _capture_options(p, "hijack-demo")
    p.set_defaults(func=cmd_demo)


def _check_redis(names: list[str], url: str, shared: bool = False) -> None:
    if "store-redis" not in names:
        return
    from protolab.labs.cluster import redis_problem

    if problem := redis_problem(names, url, shared):
        raise CliError(problem)


DESIGNS = ("memory", "store-sqlite", "store-redis", "jwt")
POLICIES = ("round-robin", "sticky-cookie", "ip-hash", "cookie-hash")
BALANCERS = ("protolab", "nginx", "haproxy")
LB_HELP = ("protolab's own balancer, or a real nginx or HAProxy configured for the same "
           "policy (the config is printed)")
POLICY_HELP = ("round-robin; sticky-cookie (the balancer sets a cookie naming the backend "
               "that served the first request); ip-hash; cookie-hash (the lesson: a hash of "
               "the session cookie, which does not stick to the backend that made it)")
LITMUS_DESIGNS = ("memory", "store-sqlite", "jwt")  #: without --redis: no Redis is needed
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _redis_shared_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-shared", action="store_true",
                   help="use the Redis database even if it holds keys protolab did not create "
                        "(protolab touches only its own protolab:* keys)")


def _litmus_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "litmus", help="restart things mid-workflow, for every design and policy: verdicts",
        description="For every design × balancer policy: login → add item → (switch backend "
                    "| restart the serving backend | restart all backends | wipe the store) → "
                    "view cart, with real process restarts; then measured latency, throughput "
                    "and memory per session; --under-load adds a rolling restart under load.")
    p.add_argument("--designs", nargs="+", choices=DESIGNS, default=None,
                   help="default: " + " ".join(LITMUS_DESIGNS) + ", and store-redis when "
                        "--redis is given")
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES[:3]),
                   help="default: round-robin sticky-cookie ip-hash; add cookie-hash to see "
                        "why hashing the session cookie is not a sticky session")
    p.add_argument("--lb", choices=BALANCERS, default="protolab", help=LB_HELP)
    p.add_argument("--redis", default=None, metavar="URL",
                   help=f"a Redis for store-redis (adds it to the default designs; without it "
                        f"store-redis uses {DEFAULT_REDIS})")
    p.add_argument("--no-measure", action="store_true", help="skip the trade-off measurements")
    _redis_shared_option(p)
    p.add_argument("--under-load", action="store_true",
                   help="also restart each backend in turn under a bounded load")
    p.add_argument("--requests", type=_count(100, 1_000_000), default=10_000, metavar="N",
                   help="requests in the --under-load run (default 10000)")
    p.add_argument("--no-capture", action="store_true",
                   help="--under-load: do not capture the users' side of the balancer")
    p.add_argument("--pcap", metavar="PATH",
                   help="--under-load: where to write the capture (default "
                        "captures/litmus-DESIGN.pcap, one per design)")
    p.set_defaults(func=cmd_litmus)


def cmd_litmus(args: argparse.Namespace) -> int:
    from protolab.labs.litmus import run_litmus

    if args.designs is None:  # naming a Redis asks for the design that uses it
        args.designs = [*LITMUS_DESIGNS, *(["store-redis"] if args.redis else [])]
    args.redis = args.redis or DEFAULT_REDIS
    _check_redis(args.designs, args.redis, args.redis_shared)
    with _balancer_errors():
        failed = run_litmus(args.designs, args.policies, args.lb, args.redis,
                            measured=not args.no_measure, under_load=args.under_load,
                            requests=args.requests, capture=not args.no_capture,
                            pcap=args.pcap, out=out)
    return EXIT_FAILED if failed else 0


@contextlib.contextmanager
def _balancer_errors() -> Iterator[None]:
    """A real balancer that is missing or did not start: one line, exit 2."""
    from protolab.net.lb import BalancerError

    try:
        yield
    except BalancerError as exc:
        raise CliError(str(exc)) from None


def _lb_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "lb", help="N backends behind a load balancer (protolab's, nginx or HAProxy), and a "
                   "workflow",
        description="Start N backend processes of one design behind a balancer with a policy, "
                    "run a login/cart workflow through it printing which backend served each "
                    "request; --serve keeps it up for curl.")
    p.add_argument("--design", choices=DESIGNS, default="memory")
    p.add_argument("--policy", choices=POLICIES, default="round-robin", help=POLICY_HELP)
    p.add_argument("--backends", type=_count(1, 8), default=3, metavar="N")
    p.add_argument("--lb", choices=BALANCERS, default="protolab", help=LB_HELP)
    p.add_argument("--redis", default=DEFAULT_REDIS, metavar="URL")
    p.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    _redis_shared_option(p)
    _capture_options(p, "lb", replay=False)
    p.set_defaults(func=cmd_lb)


def cmd_lb(args: argparse.Namespace) -> int:
    from protolab.labs.lb import run_lb_demo

    _check_redis([args.design], args.redis, args.redis_shared)
    page = _page(args)
    with _balancer_errors(), _page_errors():
        run_lb_demo(args.design, args.policy, args.redis, backends=args.backends, lb=args.lb,
                    serve=args.serve, capture=not args.no_capture, pcap=args.pcap,
                    out=page.out if page else out, captured=page.write_run if page else None)
    return 0


def _backend_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "backend", help="run one backend of the login/profile/cart app (memory, store, jwt)",
        description="The lab application as one HTTP backend process: POST /login, GET "
                    "/profile, POST /cart/items, GET /cart, POST /logout. Prints 'ready PORT'.")
    p.add_argument("--design", choices=("memory", "store", "jwt"), required=True)
    p.add_argument("--store", metavar="URL", help="sqlite:PATH or redis://HOST:PORT (store, jwt)")
    p.add_argument("--id", default="b1", help="the name this backend gives in its answers")
    p.add_argument("--port", type=_port, default=0)
    p.add_argument("--secret-file", metavar="F", help="jwt: file with the HS256 key (32+ bytes)")
    p.add_argument("--denylist", action="store_true", help="jwt: keep a deny-list for logout")
    _redis_shared_option(p)
    p.set_defaults(func=cmd_backend)


def cmd_backend(args: argparse.Namespace) -> int:
    from protolab.net.backend import serve
    from protolab.protocols.webapp import Design

    if args.store and args.store.startswith("redis://") and args.design != "memory":
        _check_redis(["store-redis"], args.store, args.redis_shared)
    try:
        return serve(Design(args.design), args.id, args.port, args.store, args.secret_file,
                     args.denylist)
    except (OSError, ValueError) as exc:
        raise CliError(f"backend: {getattr(exc, 'strerror', None) or exc}") from None


def _doctor_arguments(sub: Subparsers) -> None:
    p = sub.add_parser("doctor", help="what works here, and the exact fix for what does not",
                       description="Python and package versions, capture rights, the kernel's "
                                   "TCP record, hosts with their own kernels (namespaces, "
                                   "veth, nftables, conntrack: each tried for real), tshark, "
                                   "dig, curl, redis-server, nginx, 127.0.0.2, free ports. "
                                   "Exit 0 only when every lab can run fully.")
    p.add_argument("--clean", action="store_true",
                   help="remove what runs killed by SIGKILL left behind: protolab's network "
                        "namespaces, interfaces and nft tables of runs no process holds (root)")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from protolab.course.doctor import checks, clean, report

    if args.clean:
        if os.geteuid() != 0:
            raise CliError("doctor --clean: needs root (namespaces and rules are the kernel's)")
        return EXIT_FAILED if clean(out) else 0
    text, ready = report(checks())
    out(text)
    return 0 if ready else EXIT_FAILED


def _captures_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "captures", help="the reference captures: check that each still tells its demo's story; "
                         "--refresh regenerates them",
        description="List the committed reference captures and check each against its demo's "
                    "story (the steps it must show, not its bytes). --refresh runs each demo "
                    "with capture (root or CAP_NET_RAW) and replaces a reference only when the "
                    "new capture is complete and tells the whole story; it writes "
                    "DEMO.ref.pcap, DEMO.ref.pcapng (annotated) and, for the demos with TLS, "
                    "DEMO.ref.keys (a demo captured at several points: DEMO.ref.pcapng only).")
    p.add_argument("demos", nargs="*", metavar="DEMO", type=_demo,
                   help=f"only these: {', '.join(_reference_demos())} (default: all)")
    p.add_argument("--refresh", action="store_true", help="regenerate them (needs capture)")
    p.add_argument("--dir", metavar="DIR", help="where the references are (default captures/ "
                                                "in the source tree)")
    p.set_defaults(func=cmd_captures)


def cmd_captures(args: argparse.Namespace) -> int:
    from pathlib import Path

    from protolab.course.reference import (
        DEFAULT_DIR,
        DEMOS,
        LAB_ONLY,
        RefreshError,
        refresh,
        status,
    )
    from protolab.labs.output import table

    directory = Path(args.dir) if args.dir else DEFAULT_DIR
    demos = args.demos or [*DEMOS, *LAB_ONLY]
    if args.refresh:
        try:
            done = refresh(demos, directory, out=out)
        except RefreshError as exc:
            raise CliError(str(exc)) from None
        if any(d.problem for d in done):
            return EXIT_FAILED
    rows, ok = [], True
    for demo in demos:
        s = status(demo, directory)
        ok &= s.ok
        rows.append((demo, s.path, s.packets, f"ok: {s.verdict}" if s.ok else s.verdict))
    out(table(rows, ("demo", "reference capture", "packets", "story")))
    return 0 if ok else EXIT_FAILED


def _labs_arguments(sub: Subparsers) -> None:
    p = sub.add_parser("labs", help="list the lab worksheets and what exists for each",
                       description="The numbered worksheets in labs/, in the order to take "
                                   "them, with their demo and whether you have a capture.")
    p.set_defaults(func=cmd_labs)


def cmd_labs(args: argparse.Namespace) -> int:
    from protolab.course.grading import status
    from protolab.labs.output import table

    out(table(status(), ("lab", "title", "worksheet", "capture")))
    out("Take them in order; each worksheet ends with `protolab check NN --template`.")
    return 0


def _check_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "check", help="grade a worksheet's answers against facts from your own capture",
        description="Grade an answers file (TOML: q1 = \"...\") for lab NN against facts "
                    "computed from your capture (default: the demo's live capture in "
                    "captures/). Exit 0 on full marks.")
    p.add_argument("lab", metavar="NN", help="the lab's number, e.g. 03")
    p.add_argument("--answers", metavar="FILE")
    p.add_argument("--pcap", metavar="CAPTURE", help="the capture to grade against")
    p.add_argument("--template", action="store_true", help="print an empty answers file")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from protolab.course.grading import (
        CheckError,
        find,
        grade,
        graded_line,
        newer_capture,
        template,
    )

    try:
        lab = find(args.lab)
        if args.template:
            out(template(lab))
            return 0
        if not args.answers:
            raise CheckError("give --answers FILE (or --template to make one)")
        capture = Path(args.pcap) if args.pcap else lab.capture
        if not capture.exists():
            from protolab.wire.paths import reference_capture

            raise CheckError(f"no capture at {capture}: run `protolab {lab.demo}` first, or "
                             f"give --pcap CAPTURE (without root: --pcap "
                             f"{reference_capture(lab.demo)}, the reference a replay shows)")
        marks = grade(lab, Path(args.answers), capture)
    except CheckError as exc:
        raise CliError(str(exc)) from None
    out(graded_line(lab, capture))
    if (newer := newer_capture(Path(args.answers), capture)) is not None:
        out(f"  warning — {newer.line()}")
    for m in marks:
        if m.right:
            out(f"  {m.question.key}  right   {m.question.text}")
        else:
            given = f"you said {m.given!r}" if m.given else "no answer"
            out(f"  {m.question.key}  WRONG   {m.question.text}\n"
                f"           {given}; hint: {m.question.hint}\n"
                f"           answer as {m.question.form.value}")
    score = sum(m.right for m in marks)
    out(f"score: {score}/{len(marks)}")
    return 0 if score == len(marks) else EXIT_FAILED


def _inspect_arguments(sub: Subparsers) -> None:
    p = sub.add_parser(
        "inspect", help="annotate a pcap file: where the state for each packet lives",
        description="Read a pcap or pcapng file (Ethernet, Linux cooked v1/v2, raw IP, BSD "
                    "loopback; IPv4/IPv6; VLAN) and print one row per packet with the state it "
                    "creates, uses or finds missing, and who holds that state; or the "
                    "conversations (--flows), one of them as a timeline (--flow N), JSON.")
    p.add_argument("file", help="a pcap or pcapng file")
    p.add_argument("--dns-port", type=_port, action="append", metavar="PORT",
                   help="also decode UDP on this port as DNS (53 and 5353 always are)")
    p.add_argument("--filter", metavar="EXPR",
                   help="tcp, udp, dns, quic, icmp, http, host ADDR, port N, flow N; with and, "
                        "or, not, ( )")
    p.add_argument("--limit", type=_count(1, 10 ** 9), metavar="N", help="print at most N rows")
    p.add_argument("--json", action="store_true", help="one JSON object per row (or flow)")
    p.add_argument("--wide", action="store_true",
                   help="one line per packet, nothing wrapped (default: fit the terminal's "
                        "width, or 120 columns when not printing to a terminal)")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--flows", action="store_true", help="a table of conversations")
    view.add_argument("--flow", type=_count(1, 10 ** 9), metavar="N",
                      help="one conversation as a state timeline")
    view.add_argument("--detail", type=_count(1, 10 ** 9), metavar="N",
                      help="scapy's full dissection of packet N")
    view.add_argument("--write-annotated", metavar="OUT.pcapng",
                      help="write the capture as pcapng with each note as a packet comment")
    view.add_argument("--exposed", action="store_true",
                      help="list the credentials and session material the capture exposes in "
                           "cleartext HTTP (Set-Cookie, Cookie, bearer tokens, login passwords), "
                           "each with its packet number (--filter narrows the packets)")
    p.add_argument("--secrets", metavar="KEYLOG",
                   help="with --write-annotated: embed this TLS key log (QUIC decrypts alone)")
    p.add_argument("--width", type=_count(40, 10 ** 4), metavar="N",
                   help="fit N columns (the table: default the terminal's, 120 when piped, at "
                        "least 60; the ladder: default 80)")
    pictures = p.add_argument_group(
        "pictures", "the chosen packets (all, or --flow N, --filter, --limit) as a ladder "
                    "diagram: a lifeline per endpoint, an arrow per packet, and its note: who "
                    "holds the state and what the packet does to it")
    pictures.add_argument("--ladder", action="store_true",
                          help="draw it in the terminal (80 columns unless --width)")
    pictures.add_argument("--mermaid", metavar="OUT.md",
                          help="write it as a Mermaid sequenceDiagram in Markdown (GitHub "
                               "draws it)")
    pictures.add_argument("--html", metavar="OUT.html",
                          help="write it as one self-contained HTML page")
    pictures.add_argument("--by", metavar="socket|host",
                          help="a lifeline per socket, address:port (the default), or per host")
    pictures.add_argument("--ascii", action="store_true",
                          help="draw the terminal's ladder in plain ASCII")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    """Exit 0 when rows were printed; 1 when none matched (as grep) or the file is bad (after
    printing what could be read); 2 for a bad option, filter or --secrets/--write-annotated.
    The compiled path is tried first, with only the light modules it needs: the annotators are
    imported when the Python path prints."""
    from protolab.analysis.inspect_options import Options, Tally
    from protolab.wire.dns_wire import DNS_PORTS

    if args.secrets and not args.write_annotated:
        raise CliError("--secrets goes with --write-annotated (it embeds the key log there)")
    if args.exposed:
        return _inspect_exposed(args)
    opts = Options(filter=args.filter, limit=args.limit, json=args.json, flows=args.flows,
                   flow=args.flow, detail=args.detail, write_annotated=args.write_annotated,
                   secrets=args.secrets, wide=args.wide, width=args.width,
                   dns_ports=frozenset(args.dns_port or ()) | DNS_PORTS, **_pictures(args))
    packet_view = not (args.flows or args.detail or args.write_annotated)
    if (fast := _inspect_compiled(args.file, opts)) is not None:
        tally = Tally(fast.read, fast.matched, fast.shown)
        return _inspect_notes(args, tally) if packet_view else 0
    return _inspect_python(args, opts, packet_view)


def _inspect_python(args: argparse.Namespace, opts: Options, packet_view: bool) -> int:
    """`inspect` through the Python path (protolab.analysis.inspect): cmd_inspect's exits."""
    from protolab.analysis.export import FileError
    from protolab.analysis.filter import FilterError
    from protolab.analysis.inspect import run
    from protolab.analysis.inspect_options import Tally
    from protolab.analysis.ladder_text import TooWide
    from protolab.wire.pcap import PcapError

    tally = Tally()
    lines = Lines()
    try:
        try:
            run(args.file, opts, lines, tally)
        finally:
            lines.flush()  # the rows read before an error come before it
    except (FilterError, FileError, TooWide) as exc:
        raise CliError(str(exc)) from None
    except PcapError as exc:
        if packet_view:
            _inspect_notes(args, tally, complete=False)
        print(f"protolab: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return _inspect_notes(args, tally) if packet_view else 0


def _inspect_compiled(path: str, opts: Options) -> Result | None:
    """The compiled fast path where it is built and covers the capture (it prints the same bytes
    as the Python path, or nothing and None); see protolab.analysis.fast_inspect."""
    from protolab.analysis import fast_inspect

    _written(sys.stdout.flush)

    def write(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)

    try:  # the C writes to stdout's descriptor itself: its OSError is about stdout
        got = _written(lambda: fast_inspect.run(path, opts, write, sys.stdout.encoding or "",
                                                _stdout_fd()))
        _written(sys.stdout.flush)
    except fast_inspect.FastPathUnavailable as exc:
        raise CliError(str(exc)) from None
    return got


def _stdout_fd() -> int:
    """stdout's file descriptor (its Python buffers flushed), or -1 where it has none (a test's
    in-memory stream): the compiled path writes there itself."""
    try:
        return sys.stdout.buffer.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return -1


def _inspect_exposed(args: argparse.Namespace) -> int:
    """`inspect --exposed`: the secrets in the capture's cleartext HTTP; exit 0 whether or not
    there are any (nothing exposed is an answer), 1 for a file that cannot be read."""
    from protolab.analysis.exposed import report, scan_file
    from protolab.analysis.filter import FilterError, compile_filter
    from protolab.wire.pcap import PcapError

    if args.json or args.limit or args.wide or args.ladder or args.mermaid or args.html:
        raise CliError("--exposed prints its own list: not with --json, --limit, --wide or "
                       "the pictures")
    try:
        pred = compile_filter(args.filter) if args.filter else None
        found = scan_file(args.file, pred)
    except FilterError as exc:
        raise CliError(str(exc)) from None
    except PcapError as exc:
        print(f"protolab: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    report(found, args.file + (f" (--filter {args.filter!r})" if args.filter else ""), out)
    return 0


def _pictures(args: argparse.Namespace) -> dict:
    """inspect's --ladder, --mermaid, --html, --by and --ascii, checked, as Options fields."""
    from protolab.analysis.inspect_options import By

    drawn = args.ladder or args.mermaid or args.html
    if drawn and (args.flows or args.detail or args.write_annotated or args.json or args.wide):
        raise CliError("--ladder, --mermaid and --html draw packets: not with --flows, --detail, "
                       "--write-annotated, --json or --wide")
    if args.by is not None and not drawn:
        raise CliError("--by goes with --ladder, --mermaid or --html")
    if args.ascii and not args.ladder:
        raise CliError("--ascii goes with --ladder (the terminal's drawing)")
    choices = {b.value: b for b in By}
    if args.by is not None and args.by not in choices:
        raise CliError(f"--by is socket or host, not {args.by!r}")
    return {"ladder": args.ladder, "mermaid": args.mermaid, "html": args.html,
            "by": choices[args.by or "socket"], "ascii": args.ascii}


def _inspect_notes(args: argparse.Namespace, tally: Tally, complete: bool = True) -> int:
    """After the rows: how many --limit left out, or (`complete` file) that nothing matched
    (exit 1, as grep). On the table's stdout; with --json on stderr, so stdout stays one object
    per line."""
    def note(line: str) -> None:
        if args.json:
            print(line, file=sys.stderr)
        else:
            out(line)

    if tally.matched > tally.shown:
        note(f"... {tally.matched - tally.shown:,} more matching packets not shown "
             f"(--limit {args.limit}; {tally.matched:,} matched of {tally.read:,} read)")
    if tally.matched or not complete:
        return 0
    from protolab.analysis.filter import shorten

    chosen = " and ".join(x for x in (f"--filter {shorten(args.filter)!r}" if args.filter else "",
                                      f"--flow {args.flow}" if args.flow else "") if x)
    note(f"no packet matched {chosen} ({tally.read:,} packets read)" if chosen
         else "no packets in this capture")
    return EXIT_FAILED

def _capture_options(p: argparse.ArgumentParser, lab: str, replay: bool = True,
                     faults: bool = False) -> None:
    from protolab.wire.paths import default_capture_path, reference_file

    p.add_argument("--no-capture", action="store_true", help="run without capturing")
    fault_run = f"; a run with faults: captures/{lab}-faults.pcap" if faults else ""
    p.add_argument("--pcap", metavar="PATH",
                   help=f"where to write the capture (default {default_capture_path(lab)}"
                        f"{fault_run})")
    p.add_argument("--pcapng", metavar="PATH",
                   help="also save the capture as pcapng with each packet's note as its comment"
                        + (" and the TLS secrets inside" if lab in ("quic-demo", "tls-demo",
                                                                    "hijack-demo")
                           else ""))
    p.add_argument("--html", metavar="PATH",
                   help="also write the ladder diagram of this run's capture as one HTML page, "
                        "what the demo printed beside it" + (" (with --replay: of the replayed "
                        "capture)" if replay else ""))
    if replay:
        p.add_argument("--replay", nargs="?", const="", metavar="CAPTURE",
                       help=f"run nothing: read the story back from a capture (default the "
                            f"reference, captures/{reference_file(lab).name}); needs no root")


def _fault_options(p: argparse.ArgumentParser, used_for: str) -> None:
    g = p.add_argument_group(
        "faults", f"put a userspace UDP fault proxy between client and server ({used_for}); "
                  "seeded, so a run can be repeated")
    g.add_argument("--drop", type=_probability, default=0.0, metavar="P",
                   help="drop each datagram with probability P (0..1)")
    g.add_argument("--delay", type=_duration, default=0.0, metavar="TIME",
                   help="delay each datagram, e.g. 50ms")
    g.add_argument("--duplicate", type=_probability, default=0.0, metavar="P",
                   help="send a datagram twice with probability P")
    g.add_argument("--reorder", type=_probability, nargs="?", const=0.5, default=0.0,
                   metavar="P", help="hold a datagram back 50 ms so the ones after it pass "
                                     "(probability P, default 0.5)")
    g.add_argument("--direction", choices=("both", "to-server", "to-client"), default="both",
                   help="which datagrams the faults hit (default both)")
    g.add_argument("--fault-count", type=_count(0, 10 ** 6), default=0, metavar="N",
                   help="only the first N datagrams of that direction (default: all)")
    g.add_argument("--seed", type=_count(0, 2 ** 32), default=1, metavar="N",
                   help="the random seed (default 1): the same seed, the same faults")
    g.add_argument("--netem", action="store_true",
                   help="apply the faults with the kernel's tc netem instead, in a network "
                        "namespace created for the run (root)")


def _faults(args: argparse.Namespace):
    """The FaultPlan the options ask for, or None."""
    from protolab.protocols.faults import FaultPlan

    plan = FaultPlan(drop=args.drop, delay=args.delay, duplicate=args.duplicate,
                     reorder=args.reorder, direction=args.direction, count=args.fault_count,
                     seed=args.seed)
    if args.netem and not plan.active:
        raise CliError("--netem needs a fault to apply: --drop, --delay, --duplicate or "
                       "--reorder")
    return plan if plan.active else None


#: the subcommands by name, in the order --help lists them: each declares its arguments and its
#: function (and adds the parser of that name: tests/test_cli.py holds the two to each other)
SUBCOMMANDS: dict[str, Callable[[Subparsers], None]] = {
    "dns-demo": _dns_demo_arguments,
    "tcp-demo": _tcp_demo_arguments,
    "udp-demo": _udp_demo_arguments,
    "quic-demo": _quic_demo_arguments,
    "nat-demo": _nat_demo_arguments,
    "tcp-attack-demo": _tcp_attack_demo_arguments,
    "tls-demo": _tls_demo_arguments,
    "hijack-demo": _hijack_demo_arguments,
    "ws-demo": _ws_demo_arguments,
    "cache-demo": _cache_demo_arguments,
    "backend": _backend_arguments,
    "lb": _lb_arguments,
    "litmus": _litmus_arguments,
    "doctor": _doctor_arguments,
    "captures": _captures_arguments,
    "labs": _labs_arguments,
    "check": _check_arguments,
    "inspect": _inspect_arguments,
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; `only`: with that subcommand alone (what `main` builds to run it:
    the others' arguments cost most of a short run's start-up, and parse nothing of its line)."""
    parser = argparse.ArgumentParser(
        prog="protolab",
        description="See where state lives in network protocols: run a demo, capture it, read "
                    "the annotated capture.")
    parser.add_argument("--version", action="version", version=f"protolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, arguments in SUBCOMMANDS.items():
        if only is None or name == only:
            arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Ctrl-C, SIGTERM and SIGHUP unwind it like an exception (its children
    killed, its temp files removed: see `protolab.net.lifecycle`) and end in one line, exit
    128+N."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if sys.stdout is None and sys.stderr is not None:  # `protolab ... >&-`
        print("protolab: error: no standard output (it is closed)", file=sys.stderr)
        return EXIT_FAILED
    # A line that starts with a subcommand's name is parsed by that subcommand alone; any other
    # (--help, --version, a mistyped name) needs them all, to list them.
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    from protolab.net import lifecycle

    lifecycle.handle_signals()
    try:
        code = args.func(args)
        _written(sys.stdout.flush)  # here, not at the interpreter's exit: errors said as ours
        return code
    except CliError as exc:
        print(f"protolab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OutputClosed, OutputFailed) as exc:
        if isinstance(exc, OutputFailed):
            print(f"protolab: error: cannot write the output: {exc}", file=sys.stderr)
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        stopped = lifecycle.as_stopped(exc)
        print(f"protolab: {stopped.line()}", file=sys.stderr)
        return stopped.exit_status
    finally:
        lifecycle.finish()
