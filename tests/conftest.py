"""Shared fixtures. Under PROTOLAB_STRICT=1 (CI) a missing capability fails the test; on a
learner's laptop it skips with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protolab.net.udpnet import UdpServerThread
from protolab.protocols.dns import DnsServer
from protolab.wire.capture import capture_denied_reason

ROOT = Path(__file__).resolve().parent.parent
STRICT = os.environ.get("PROTOLAB_STRICT") == "1"


def require(ok: bool, reason: str) -> None:
    """Skip (laptop) or fail (CI, strict) when a capability is missing."""
    if ok:
        return
    if STRICT:
        pytest.fail(f"PROTOLAB_STRICT=1 and {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    return path


def tshark_fields(path, display: str, *fields: str) -> list[list[str]]:
    """tshark's reading of a capture: the `fields` of each packet `display` selects."""
    exe = require_tool("tshark")
    args = [a for f in fields for a in ("-e", f)]
    out = subprocess.run([exe, "-r", str(path), "-Y", display, "-T", "fields", *args],
                         capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in out.stdout.splitlines()]


def without_net_raw() -> tuple[str, ...]:
    """A command prefix that runs a program without CAP_NET_RAW (as a learner without root)."""
    setpriv = require_tool("setpriv")
    require(os.geteuid() == 0, "dropping CAP_NET_RAW with setpriv needs root")
    return (setpriv, "--bounding-set", "-net_raw", "--inh-caps", "-net_raw")


@pytest.fixture
def capture_rights() -> None:
    denied = capture_denied_reason()
    require(denied is None, f"capture {denied}")


@pytest.fixture
def dns_server():
    """The lab DNS server on a free port of 127.0.0.1, without the per-name delays."""
    with UdpServerThread(DnsServer(delays=False)) as server:
        yield server


def live_run(factory, lab: str, run, needs_tracing: bool = False):
    """Run a demo once, captured, for a whole test module: (result, pcap path, printed text).

    None where this machine cannot capture; the `capture_rights` fixture then skips or fails.
    """
    from protolab.wire.kernel_view import tracing_denied_reason

    if capture_denied_reason() or (needs_tracing and tracing_denied_reason()):
        return None
    lines: list[str] = []
    path = factory.mktemp(lab) / f"{lab}.pcap"
    return run(pcap=path, out=lines.append), path, "\n".join(lines)


@pytest.fixture(scope="module")
def live(request, tmp_path_factory):
    """The test module's demo run once, captured (`live_run`): the module names it as
    `LIVE = (subcommand, run)`, plus `True` when it needs kernel tracing too."""
    return live_run(tmp_path_factory, *request.module.LIVE)


def run_cli(*args: str, env: dict | None = None, prefix: tuple[str, ...] = (),
            timeout: float = 30, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m protolab ARGS` as a user would (in `cwd`, if given)."""
    return subprocess.run([*prefix, sys.executable, "-m", "protolab", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


DEMO_STARTUPS = 8  #: a demo's run, in Python start-ups (one is ~0.7 s idle: under 6 s)


def run_demo_timed(demo: str, pcap: Path, startup_unit: float) -> subprocess.CompletedProcess:
    """`protolab DEMO --pcap PCAP`, which must exit 0 within DEMO_STARTUPS Python start-ups with
    the demo's imports (`startup_unit`, measured on this machine now): a demo takes seconds."""
    import time

    start = time.monotonic()
    out = run_cli(demo, "--pcap", str(pcap))
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stdout + out.stderr
    assert elapsed < DEMO_STARTUPS * startup_unit, \
        f"{demo} took {elapsed:.2f} s; a start-up takes {startup_unit:.2f} s"
    return out


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis: the one CI started (PROTOLAB_REDIS), else our own redis-server on a free
    port, stopped at the end."""
    import socket
    import time

    url = os.environ.get("PROTOLAB_REDIS")
    if url:
        from protolab.net.stores import RedisStore

        RedisStore(url).count("x")  # fails loudly if CI's Redis is not there
        yield url
        return
    exe = require_tool("redis-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:  # readiness: Redis answers PING
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait(5)


@pytest.fixture(scope="session")
def startup_unit() -> float:
    """Seconds this machine takes, now, to start Python with what a demo imports: the unit a
    demo's run time is judged in, so a busy machine stretches the limit with it."""
    import time

    cmd = [sys.executable, "-c", "import scapy.all, dns.message, aioquic.quic.connection"]
    times = []
    for _ in range(2):
        start = time.monotonic()
        subprocess.run(cmd, check=True, timeout=120)
        times.append(time.monotonic() - start)
    return max(times)


@pytest.fixture(scope="session")
def live_dns_demo(tmp_path_factory):
    """One captured run of the DNS demo for the tests of the pictures (ladder, Mermaid):
    (result, pcap path, printed text). Skips (fails under PROTOLAB_STRICT=1) where this machine
    cannot capture."""
    from functools import partial

    from protolab.labs.dns import run_dns_demo

    run = live_run(tmp_path_factory, "dns-demo", partial(run_dns_demo, queries=6))
    require(run is not None, f"capture {capture_denied_reason()}")
    return run


#: every reference capture, for the tests that read each one
REFERENCES = sorted((ROOT / "captures").glob("*.ref.pcap"))
LIVE_DNS = "live dns-demo"  #: stands for the `live_dns_demo` run's capture in a parametrization


def _capture_id(param: object) -> str:
    return param if isinstance(param, str) else Path(param).name


def _capture_of(request: pytest.FixtureRequest) -> Path:
    if request.param == LIVE_DNS:
        return Path(request.getfixturevalue("live_dns_demo")[1])
    return Path(request.param)


@pytest.fixture(params=[*REFERENCES, LIVE_DNS], ids=_capture_id)
def picture_capture(request) -> Path:
    """Each reference capture, then a fresh capture of the DNS demo: what the pictures draw."""
    return _capture_of(request)


@pytest.fixture(params=[ROOT / "captures" / "dns-demo.ref.pcap", LIVE_DNS], ids=_capture_id)
def dns_picture_capture(request) -> Path:
    """The DNS demo's reference capture, then a fresh one."""
    return _capture_of(request)
