#!/usr/bin/env python3
"""Run wrk and h2load against tiercel and its peers side by side, on the same app.

Usage: python benchmarks/run.py [--scenarios h1,json,pipelined,upload-64k,download-1m,...]
                                [--duration 10] [--idle-connections 1000] [--chart PATH]
                                [--connections 64] [--h2-connections 16] [--h2-streams 10]
                                [--path /] [--servers tiercel,hypercorn-asyncio,...]
                                [--json PATH] [--markdown PATH]

Scenarios: see SCENARIOS below and benchmarks/README.md. Load scenarios print one table each
(requests per second, latency, errors, server CPU per request); idle-memory prints resident
memory per idle keep-alive connection.

Each server runs pinned to CPU 1 and the load generator is pinned to CPU 0 (when the
machine has at least 2 CPUs). See benchmarks/README.md for the method and the columns.
Standard library only (trustme is used for the test certificate if importable, otherwise
the openssl command).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
APP = "app_asgi:app"
WSGI_APP = "app_wsgi:app"
# Worker threads for both WSGI servers, so the comparison is like for like.
WSGI_THREADS = 4
WARMUP_SECONDS = 2
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
PROBE_REQUESTS = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")
# hypercorn closes a connection after keep_alive_max_requests (default 1000); h2load does
# not reconnect, so every hypercorn row loads this config (see peer-benchmarks.md).
HYPERCORN_TOML = "keep_alive_max_requests = 1000000000\n"


@dataclass(frozen=True)
class Server:
    name: str
    # Arguments after ``sys.executable``; ``{port}``, ``{certfile}``, ``{keyfile}`` and
    # ``{hypercorn_toml}`` are substituted.
    args: tuple[str, ...]
    # Modules that must be importable in this Python for the row to run.
    needs: tuple[str, ...]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    client: str  # "wrk", "h2load", or "idle" (connections opened and left idle)
    tls: bool
    rows: tuple[Server, ...]
    path: str | None = None  # fixed request path; None means --path
    wrk_script: str | None = None  # a Lua script in benchmarks/wrk/

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def h2_protocol(self) -> str:
        """What h2load must print as its 'Application protocol'."""
        return "h2" if self.tls else "h2c"


def _tiercel(loop: str, tls: bool = False, protocols: str | None = None) -> Server:
    args: tuple[str, ...] = (
        "-m",
        "tiercel.apps.cli",
        APP,
        "--urls",
        f"{'https' if tls else 'http'}://{HOST}:{{port}}",
    )
    if tls:
        args += ("--certfile", "{certfile}", "--keyfile", "{keyfile}")
    if protocols is not None:
        args += ("--protocols", protocols)
    args += ("--no-access-log", "--log-level", "warning", "--loop", loop)
    needs = ("tiercel", "uvloop") if loop == "uvloop" else ("tiercel",)
    return Server("tiercel" if loop == "uvloop" else f"tiercel-{loop}", args, needs)


def _tiercel_adapter(adapter: str, app: str, extra: tuple[str, ...] = ()) -> Server:
    """tiercel on another adapter (trio, threads) for the adapter-against-peer scenarios."""
    args: tuple[str, ...] = ("-m", "tiercel.apps.cli", app, "--adapter", adapter)
    args += ("--urls", f"http://{HOST}:{{port}}", "--no-access-log", "--log-level", "warning")
    args += extra
    needs = ("tiercel", "trio") if adapter == "trio" else ("tiercel",)
    name = f"tiercel-{adapter}" + ("-wsgi" if app == WSGI_APP else "")
    return Server(name, args, needs)


def _waitress() -> Server:
    args = ("-m", "waitress", f"--listen={HOST}:{{port}}", f"--threads={WSGI_THREADS}", WSGI_APP)
    return Server("waitress-wsgi", args, ("waitress",))


def _uvicorn(http: str, loop: str, tls: bool = False) -> Server:
    args: tuple[str, ...] = ("-m", "uvicorn", "--host", HOST, "--port", "{port}")
    if tls:
        args += ("--ssl-certfile", "{certfile}", "--ssl-keyfile", "{keyfile}")
    args += ("--http", http, "--loop", loop, "--no-access-log", "--log-level", "warning", APP)
    needs = ("uvicorn", http, loop) if loop != "asyncio" else ("uvicorn", http)
    return Server(f"uvicorn-{http}-{loop}", args, needs)


def _granian(tls: bool = False, http: str = "auto") -> Server:
    """granian (Rust, hyper) on its ASGI interface, one worker, one runtime thread."""
    args: tuple[str, ...] = ("-m", "granian", "--interface", "asgi", "--host", HOST)
    args += ("--port", "{port}", "--workers", "1", "--runtime-threads", "1", "--http", http)
    args += ("--loop", "uvloop", "--no-ws", "--no-access-log", "--log-level", "warning")
    if tls:
        args += ("--ssl-certificate", "{certfile}", "--ssl-keyfile", "{keyfile}")
    return Server("granian", (*args, APP), ("granian",))


def _hypercorn(worker: str, tls: bool = False) -> Server:
    args: tuple[str, ...] = ("-m", "hypercorn", "-c", "{hypercorn_toml}", "-w", "1")
    args += ("-k", worker, "-b", f"{HOST}:{{port}}")
    if tls:
        args += ("--certfile", "{certfile}", "--keyfile", "{keyfile}")
    args += ("--log-level", "warning", APP)
    needs = ("hypercorn", worker) if worker != "asyncio" else ("hypercorn",)
    return Server(f"hypercorn-{worker}", args, needs)


H1_ROWS = (
    _tiercel("uvloop"),
    _tiercel("asyncio"),
    _uvicorn("httptools", "uvloop"),
    _uvicorn("h11", "asyncio"),
    _granian(),
)
# The same servers, but with keep-alive timeouts long enough that idle connections stay
# open while their memory is measured (uvicorn and hypercorn close them after 5 s).
IDLE_ROWS = (
    _tiercel("uvloop"),
    Server(
        "uvicorn-httptools-uvloop",
        (*_uvicorn("httptools", "uvloop").args[:-1], "--timeout-keep-alive", "300", APP),
        ("uvicorn", "httptools", "uvloop"),
    ),
    Server(
        "uvicorn-h11-asyncio",
        (*_uvicorn("h11", "asyncio").args[:-1], "--timeout-keep-alive", "300", APP),
        ("uvicorn", "h11"),
    ),
    _hypercorn("asyncio"),
    _granian(),
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("h1", "HTTP/1.1 keep-alive, cleartext (wrk)", "wrk", False, H1_ROWS),
        Scenario("json", "HTTP/1.1 keep-alive, JSON (wrk)", "wrk", False, H1_ROWS, "/json"),
        Scenario(
            "pipelined",
            "HTTP/1.1, 16 requests pipelined per write (wrk + pipeline.lua)",
            "wrk",
            False,
            H1_ROWS,
            wrk_script="pipeline.lua",
        ),
        Scenario(
            "upload-64k",
            "HTTP/1.1 POST of a 64 KiB body, read whole by the app (wrk + upload_64k.lua)",
            "wrk",
            False,
            H1_ROWS,
            "/upload",
            "upload_64k.lua",
        ),
        Scenario(
            "download-1m",
            "HTTP/1.1 GET of a 1 MiB response body (wrk)",
            "wrk",
            False,
            H1_ROWS,
            "/download",
        ),
        Scenario(
            "idle-memory",
            "resident memory per idle keep-alive connection (one GET each, then idle)",
            "idle",
            False,
            IDLE_ROWS,
        ),
        Scenario(
            "h2c",
            "HTTP/2 cleartext, prior knowledge (h2load)",
            "h2load",
            False,
            (
                _tiercel("uvloop"),
                _tiercel("asyncio"),
                _hypercorn("asyncio"),
                _hypercorn("uvloop"),
                _granian(http="2"),
            ),
        ),
        Scenario(
            "tls-h1",
            "HTTP/1.1 keep-alive over TLS (wrk)",
            "wrk",
            True,
            (
                _tiercel("uvloop", tls=True, protocols="http1"),
                _uvicorn("httptools", "uvloop", tls=True),
                _hypercorn("asyncio", tls=True),
                _granian(tls=True, http="1"),
            ),
        ),
        Scenario(
            "tls-h2",
            "HTTP/2 over TLS, ALPN h2 (h2load)",
            "h2load",
            True,
            (
                _tiercel("uvloop", tls=True),
                _hypercorn("asyncio", tls=True),
                _granian(tls=True, http="2"),
            ),
        ),
        Scenario(
            "trio-h1",
            "trio adapter against hypercorn's trio worker, HTTP/1.1 (wrk)",
            "wrk",
            False,
            (_tiercel_adapter("trio", APP), _hypercorn("trio")),
        ),
        Scenario(
            "trio-h2c",
            "trio adapter against hypercorn's trio worker, h2c (h2load)",
            "h2load",
            False,
            (_tiercel_adapter("trio", APP), _hypercorn("trio")),
        ),
        Scenario(
            "wsgi-h1",
            f"threads adapter with WSGI against waitress, {WSGI_THREADS} threads each (wrk)",
            "wrk",
            False,
            (
                _tiercel_adapter("threads", WSGI_APP, ("--threads", str(WSGI_THREADS))),
                _waitress(),
            ),
        ),
    )
}
# Every row name, in first-seen order (the --servers choices).
ROW_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(row.name for s in SCENARIOS.values() for row in s.rows)
)
INSTALL_HINT: dict[str, str] = {
    "uvicorn": "pip install uvicorn (or pip install -e '.[bench]')",
    "httptools": "pip install httptools (or pip install -e '.[bench]')",
    "uvloop": "pip install uvloop (or pip install -e '.[bench]')",
    "hypercorn": "pip install hypercorn (or pip install -e '.[bench]')",
    "h11": "pip install h11",
    "tiercel": "pip install -e . from the repository root",
    "trio": "pip install trio (or pip install -e '.[trio]')",
    "waitress": "pip install waitress (or pip install -e '.[bench]')",
    "granian": "pip install granian (or pip install -e '.[bench]')",
}
TOOL_HINT: dict[str, str] = {
    "wrk": "install it with `apt-get install -y wrk` (Debian package wrk)",
    "h2load": "install it with `apt-get install -y nghttp2-client` (Debian package nghttp2-client)",
    "taskset": "install util-linux",
    "openssl": "install it with `apt-get install -y openssl`, or `pip install trustme`",
}


@dataclass
class Conditions:
    """What the CPUs were doing during the measured run (percent of one core)."""

    server_cpu_pct: float
    client_cpu_pct: float
    others_cpu_pct: float
    steal_pct: float


@dataclass
class Result:
    scenario: str
    server: str
    command: str = ""
    load_command: str = ""
    protocol: str | None = None
    requests: int = 0
    req_per_s: float | None = None
    vs_tiercel: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    # wrk: connect/read/write/timeout socket errors; h2load: failed/errored/timeout.
    error_breakdown: dict[str, int] = field(default_factory=dict)
    non_2xx_3xx: int = 0
    errors: int = 0
    server_cpu_us_per_req: float | None = None
    # idle-memory: resident set size of the server's processes, before and after opening
    # the idle connections, and the difference per connection.
    idle_connections: int = 0
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None
    rss_kib_per_connection: float | None = None
    conditions: Conditions | None = None
    not_installed: str | None = None
    error: str | None = None
    # With --rounds N: every round's req/s (KiB per connection for idle-memory), in the order
    # run; the row's other figures are those of the median round.
    rounds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Certs:
    certfile: Path
    keyfile: Path
    cafile: Path | None  # None for the openssl self-signed fallback
    source: str


class BenchError(Exception):
    """A row could not be measured; the message says why."""


# --------------------------------------------------------------------------- helpers


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pin(cpu: int, argv: list[str]) -> list[str]:
    if (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from ``state`` on (index 0 = state), or None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rfind(")") + 2 :].split()


def group_processes(pgid: int) -> dict[int, list[str]]:
    """/proc/PID/stat fields of every live (non-zombie) process in process group ``pgid``."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat_fields(int(entry.name))
        if fields is None or int(fields[2]) != pgid or fields[0] == "Z":
            continue
        found[int(entry.name)] = fields
    return found


def group_cpu_ticks(pgid: int) -> int:
    """utime+stime (clock ticks) of every live process in process group ``pgid``.

    The server is started as its own session leader, so this is the server process
    plus any children it spawns: for tiercel and uvicorn just the one PID, for
    hypercorn ``-w 1`` the master, its worker and multiprocessing's resource tracker.
    """
    return sum(int(f[11]) + int(f[12]) for f in group_processes(pgid).values())


def system_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq + steal, steal


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def run_client(argv: list[str], seconds: int, name: str) -> str:
    """Run the load generator pinned to CPU 0 and return its stdout."""
    argv = pin(0, argv)
    limit = seconds + 30
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{name} did not finish within {limit} s") from exc
    if proc.returncode != 0:
        detail = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:])
        raise BenchError(f"{name} exited {proc.returncode}: {detail}")
    return proc.stdout


# --------------------------------------------------------------------------- wrk


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str, result: Result) -> None:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ", output, re.M)
    if rps is None or total is None:
        raise BenchError("wrk printed no Requests/sec line: " + " | ".join(output.splitlines()))
    result.req_per_s = float(rps.group(1))
    result.requests = int(total.group(1))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        match = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", output, re.M)
        if match is not None:
            setattr(result, attr, _duration_ms(match.group(1)))
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    keys = ("connect", "read", "write", "timeout")
    counts = sock.groups() if sock is not None else ("0",) * len(keys)  # absent when all 0
    result.error_breakdown = {k: int(v) for k, v in zip(keys, counts, strict=True)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result.non_2xx_3xx = int(non2xx.group(1)) if non2xx else 0
    result.errors = sum(result.error_breakdown.values()) + result.non_2xx_3xx


def wrk_argv(
    url: str, connections: int, seconds: int, latency: bool, script: str | None = None
) -> list[str]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if latency:
        argv.append("--latency")
    if script is not None:
        argv += ["-s", str(BENCH_DIR / "wrk" / script)]
    return [*argv, url]


# --------------------------------------------------------------------------- idle memory


def group_rss_kib(pgid: int) -> int:
    """Resident set size (KiB) summed over the live processes of process group ``pgid``."""
    total = 0
    for pid in group_processes(pgid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if match is not None:
            total += int(match.group(1))
    return total


def open_idle_connections(port: int, count: int) -> tuple[list[socket.socket], int]:
    """``count`` keep-alive connections, each after one complete GET /; returns the sockets
    and how many failed (refused, closed, or answered with something other than 200)."""
    sockets, failed = [], 0
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(STARTUP_TIMEOUT)
        try:
            sock.connect((HOST, port))
            sock.sendall(request)
            received = b""
            while b"Hello, world!" not in received:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed before the response ended")
                received += chunk
            if not received.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(received[:40].decode("latin-1"))
        except OSError:
            failed += 1
            sock.close()
            continue
        sockets.append(sock)
    return sockets, failed


def still_open(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has not closed (nothing readable, no EOF)."""
    alive = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            data = sock.recv(1)
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        else:
            alive += 1 if data else 0
    return alive


def measure_idle(pid: int, port: int, count: int, result: Result) -> None:
    """Resident memory of the server before and after ``count`` idle connections."""
    time.sleep(1.0)  # let start-up allocations settle
    before = group_rss_kib(pid)
    sockets, failed = open_idle_connections(port, count)
    try:
        time.sleep(1.0)
        after = group_rss_kib(pid)
        alive = still_open(sockets)
    finally:
        for sock in sockets:
            sock.close()
    result.idle_connections = alive
    result.errors = failed + (len(sockets) - alive)
    result.rss_before_kib, result.rss_after_kib = before, after
    if alive:
        result.rss_kib_per_connection = (after - before) / alive
    log(
        f"  {alive} idle connections: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
        f"{(after - before) / max(alive, 1):.1f} KiB per connection, {result.errors} errors"
    )


# --------------------------------------------------------------------------- h2load


@dataclass
class H2loadOutput:
    protocol: str | None
    req_per_s: float
    counts: dict[str, int]  # total, started, done, succeeded, failed, errored, timeout
    status: dict[str, int]  # 2xx, 3xx, 4xx, 5xx


def parse_h2load(output: str) -> H2loadOutput:
    proto = re.search(r"^Application protocol: (\S+)", output, re.M)
    finished = re.search(r"^finished in \S+, ([\d.]+) req/s", output, re.M)
    reqs = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
        re.M,
    )
    status = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.M)
    if finished is None or reqs is None or status is None:
        tail_lines = " | ".join(output.strip().splitlines()[-6:])
        raise BenchError(f"h2load printed no 'finished in' / 'requests:' lines: {tail_lines}")
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return H2loadOutput(
        protocol=proto.group(1) if proto else None,
        req_per_s=float(finished.group(1)),
        counts={k: int(v) for k, v in zip(keys, reqs.groups(), strict=True)},
        status={
            k: int(v) for k, v in zip(("2xx", "3xx", "4xx", "5xx"), status.groups(), strict=True)
        },
    )


def check_h2_protocol(out: H2loadOutput, expected: str, what: str) -> None:
    if out.protocol != expected:
        got = "no protocol negotiated" if out.protocol is None else repr(out.protocol)
        raise BenchError(f"{what}: h2load expected application protocol {expected!r}, got {got}")


def h2load_latencies_ms(log_file: Path) -> list[float]:
    """Per-request latencies (ms, ascending) of completed requests in an h2load --log-file.

    Columns: start time (µs since epoch), HTTP status (-1 for failed streams), µs until
    the end of the response.
    """
    values = []
    with log_file.open() as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1] != "-1":
                values.append(int(cols[2]) / 1000)
    values.sort()
    return values


def h2load_argv(
    url: str, connections: int, streams: int, seconds: int | None, log_file: Path | None = None
) -> list[str]:
    argv = ["h2load"]
    argv += ["-D", str(seconds)] if seconds is not None else ["-n", str(PROBE_REQUESTS)]
    argv += ["-c", str(connections), "-m", str(streams), "-t", "1"]
    if log_file is not None:
        argv.append(f"--log-file={log_file}")
    return [*argv, url]


# --------------------------------------------------------------------------- TLS


def make_certs(directory: Path) -> Certs:
    """A certificate for 127.0.0.1/localhost: from trustme if importable, else openssl."""
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    if importlib.util.find_spec("trustme") is not None:
        import trustme

        # RSA 2048, like the openssl fallback, so the handshake cost does not depend on it.
        ca = trustme.CA(key_type=trustme.KeyType.RSA)
        cert = ca.issue_cert(HOST, "localhost", key_type=trustme.KeyType.RSA)
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        cert.private_key_pem.write_to_path(str(keyfile))
        cafile = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(cafile))
        return Certs(certfile, keyfile, cafile, "trustme (RSA 2048, own CA)")
    argv = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
        "-keyout",
        str(keyfile),
        "-out",
        str(certfile),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        fail(f"openssl req failed ({proc.returncode}): {proc.stderr.strip()}")
    return Certs(certfile, keyfile, None, "openssl req -x509 (RSA 2048, self-signed)")


def client_ssl_context(certs: Certs | None) -> ssl.SSLContext:
    if certs is not None and certs.cafile is not None:
        return ssl.create_default_context(cafile=str(certs.cafile))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------------- servers


def wait_for_port(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode}: {tail(log_path)}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"port {port} did not accept connections within {STARTUP_TIMEOUT:.0f} s")


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM one PID, wait up to STOP_TIMEOUT, then SIGKILL it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if proc is not None:
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
    else:
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            fields = proc_stat_fields(pid)
            if fields is None or fields[0] == "Z":
                return
            time.sleep(0.05)
    log(f"  PID {pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; SIGKILL")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server by PID: SIGTERM, then SIGKILL after 5 s.

    Then any process left in the server's process group (e.g. a hypercorn worker whose
    master died) is stopped the same way, one PID at a time.
    """
    if proc.poll() is None:
        _terminate(proc.pid, proc)
    # Children normally exit with their parent (hypercorn's resource tracker exits when
    # the master's end of its pipe closes, a moment later): give them a second first.
    deadline = time.monotonic() + 1.0
    while group_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in group_processes(proc.pid):
        if pid != os.getpid():
            log(f"  stopping leftover PID {pid} of the server's process group")
            _terminate(pid, None)


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no output)"
    return " | ".join(text[-lines:]) or "(no output)"


def missing_modules(server: Server) -> list[str]:
    return [m for m in server.needs if importlib.util.find_spec(m) is None]


def probe_http1(port: int, path: str, tls: bool, certs: Certs | None) -> str:
    """One HTTP/1.1 GET with http.client; returns a description of what was negotiated."""
    if tls:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            HOST, port, timeout=STARTUP_TIMEOUT, context=client_ssl_context(certs)
        )
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=STARTUP_TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        sock = conn.sock
        tls_info = f", {sock.version()}" if isinstance(sock, ssl.SSLSocket) else ""
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"probe GET {path} failed: {exc!r}") from exc
    finally:
        conn.close()
    if resp.version != 11 or not 200 <= resp.status < 400:
        raise BenchError(f"probe GET {path}: HTTP/{resp.version / 10:.1f} {resp.status}")
    return f"HTTP/1.1 {resp.status}, {len(body)} bytes{tls_info}"


def probe_h2(url: str, scenario: Scenario) -> str:
    """A short h2load run; the protocol must be h2c/h2 and every request must succeed."""
    out = parse_h2load(run_client(h2load_argv(url, 1, 10, None), 0, "h2load probe"))
    check_h2_protocol(out, scenario.h2_protocol, "probe")
    if out.counts["succeeded"] != PROBE_REQUESTS:
        raise BenchError(f"probe: h2load {out.counts}, status codes {out.status}")
    return f"{out.protocol}, {out.counts['succeeded']}/{PROBE_REQUESTS} succeeded"


def bench_server(
    scenario: Scenario,
    server: Server,
    args: argparse.Namespace,
    work_dir: Path,
    certs: Certs | None,
) -> Result:
    result = Result(scenario=scenario.name, server=server.name)
    missing = missing_modules(server)
    if missing:
        hints = "; ".join(INSTALL_HINT.get(m, f"pip install {m}") for m in missing)
        result.not_installed = f"{', '.join(missing)} not installed in {sys.executable}: {hints}"
        log(f"[{scenario.name} / {server.name}] not installed: {result.not_installed}")
        return result

    port = free_port()
    path = scenario.path or args.path
    subst = {
        "port": port,
        "certfile": certs.certfile if certs else "",
        "keyfile": certs.keyfile if certs else "",
        "hypercorn_toml": work_dir / "hypercorn_bench.toml",
    }
    argv = pin(1, [sys.executable, *(a.format(**subst) for a in server.args)])
    result.command = shlex.join(argv)
    url = f"{scenario.scheme}://{HOST}:{port}{path}"
    log_path = work_dir / f"{scenario.name}-{server.name}.log"
    latency_log = work_dir / f"{scenario.name}-{server.name}.h2load.tsv"
    if scenario.client == "idle":
        warm = measure = []
    elif scenario.client == "wrk":
        script = scenario.wrk_script
        warm = wrk_argv(url, args.connections, WARMUP_SECONDS, latency=False, script=script)
        measure = wrk_argv(url, args.connections, args.duration, latency=True, script=script)
    else:
        c, m = args.h2_connections, args.h2_streams
        warm = h2load_argv(url, c, m, WARMUP_SECONDS)
        measure = h2load_argv(url, c, m, args.duration, latency_log)
    result.load_command = shlex.join(pin(0, measure)) if measure else ""
    log(f"[{scenario.name} / {server.name}] {result.command}")
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=BENCH_DIR,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(proc, port, log_path)
        if scenario.client == "idle":
            log(f"  probe: {probe_http1(port, '/', scenario.tls, certs)}")
            measure_idle(proc.pid, port, args.idle_connections, result)
            return result
        if scenario.client == "wrk":
            log(f"  probe: {probe_http1(port, path, scenario.tls, certs)}")
        else:
            log(f"  probe: {probe_h2(url, scenario)}")

        log(f"  warm-up: {shlex.join(warm)}")
        warm_out = run_client(warm, WARMUP_SECONDS, scenario.client)
        if scenario.client == "h2load":
            check_h2_protocol(parse_h2load(warm_out), scenario.h2_protocol, "warm-up")

        log(f"  measure: {shlex.join(measure)}")
        srv0, sys0, kids0 = group_cpu_ticks(proc.pid), system_ticks(), children_cpu_seconds()
        t0 = time.monotonic()
        output = run_client(measure, args.duration, scenario.client)
        wall = time.monotonic() - t0
        srv1, sys1, kids1 = group_cpu_ticks(proc.pid), system_ticks(), children_cpu_seconds()
        if proc.poll() is not None:
            raise BenchError(f"server died during the run: {tail(log_path)}")

        if scenario.client == "wrk":
            parse_wrk(output, result)
            result.protocol = "http/1.1"
        else:
            h2 = parse_h2load(output)
            check_h2_protocol(h2, scenario.h2_protocol, "measured run")
            result.protocol = h2.protocol
            result.req_per_s = h2.req_per_s
            result.requests = h2.counts["done"]
            # h2load's "failed" includes non-2xx/3xx responses, "errored" and "timeout".
            result.error_breakdown = {k: h2.counts[k] for k in ("failed", "errored", "timeout")}
            result.non_2xx_3xx = h2.status["4xx"] + h2.status["5xx"]
            result.errors = h2.counts["failed"]
            latencies = h2load_latencies_ms(latency_log)
            latency_log.unlink(missing_ok=True)
            if latencies:
                result.p50_ms = percentile(latencies, 50)
                result.p99_ms = percentile(latencies, 99)

        server_s = (srv1 - srv0) / CLK_TCK
        client_s = kids1 - kids0
        busy_s = (sys1[0] - sys0[0]) / CLK_TCK
        steal_s = (sys1[1] - sys0[1]) / CLK_TCK
        result.conditions = Conditions(
            server_cpu_pct=100 * server_s / wall,
            client_cpu_pct=100 * client_s / wall,
            others_cpu_pct=max(0.0, 100 * (busy_s - server_s - client_s - steal_s) / wall),
            steal_pct=100 * steal_s / wall,
        )
        if result.requests:
            result.server_cpu_us_per_req = server_s * 1e6 / result.requests
        c = result.conditions
        log(
            f"  {result.req_per_s:,.0f} req/s, {result.errors} errors; CPU server "
            f"{c.server_cpu_pct:.0f}% / {scenario.client} {c.client_cpu_pct:.0f}% / "
            f"others {c.others_cpu_pct:.0f}% / steal {c.steal_pct:.0f}% (of one core)"
        )
    except BenchError as exc:
        result.error = str(exc)
        log(f"  FAILED: {exc}")
    finally:
        stop(proc)
        latency_log.unlink(missing_ok=True)
    return result


# --------------------------------------------------------------------------- output

COLUMNS = ("server", "req/s", "vs tiercel", "p50", "p99", "errors", "server CPU µs/req")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def table_row(r: Result) -> tuple[str, ...]:
    if r.not_installed is not None:
        return (r.server, "not installed", "-", "-", "-", "-", "-")
    if r.error is not None or r.req_per_s is None:
        return (r.server, "ERROR", "-", "-", "-", "-", "-")
    return (
        r.server,
        f"{r.req_per_s:,.0f}",
        "-" if r.vs_tiercel is None else f"{r.vs_tiercel:.2f}x",
        _ms(r.p50_ms),
        _ms(r.p99_ms),
        str(r.errors),
        "-" if r.server_cpu_us_per_req is None else f"{r.server_cpu_us_per_req:.1f}",
    )


IDLE_COLUMNS = (
    "server",
    "idle connections",
    "RSS before",
    "RSS after",
    "KiB per connection",
    "vs tiercel",
    "errors",
)


def idle_row(r: Result) -> tuple[str, ...]:
    if r.not_installed is not None:
        return (r.server, "not installed", "-", "-", "-", "-", "-")
    if r.error is not None or r.rss_kib_per_connection is None:
        return (r.server, "ERROR", "-", "-", "-", "-", "-")
    return (
        r.server,
        str(r.idle_connections),
        f"{(r.rss_before_kib or 0) / 1024:.1f} MiB",
        f"{(r.rss_after_kib or 0) / 1024:.1f} MiB",
        f"{r.rss_kib_per_connection:.1f}",
        "-" if r.vs_tiercel is None else f"{r.vs_tiercel:.2f}x",
        str(r.errors),
    )


def markdown_table(results: list[Result], idle: bool = False) -> str:
    columns = IDLE_COLUMNS if idle else COLUMNS
    rows = [columns, *((idle_row if idle else table_row)(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep, *(line(r) for r in rows[1:])]) + "\n"


def load_template(scenario: Scenario, args: argparse.Namespace) -> str:
    """The measured load command with the port left as PORT."""
    url = f"{scenario.scheme}://{HOST}:PORT{scenario.path or args.path}"
    if scenario.client == "idle":
        return f"{args.idle_connections} connections, one GET / each, then idle for 1 s"
    if scenario.client == "wrk":
        script = scenario.wrk_script
        argv = wrk_argv(url, args.connections, args.duration, latency=True, script=script)
    else:
        argv = h2load_argv(url, args.h2_connections, args.h2_streams, args.duration, Path("FILE"))
    return shlex.join(argv)


def scenario_heading(scenario: Scenario, args: argparse.Namespace) -> str:
    if scenario.client == "idle":
        heading = f"### {scenario.name}: {scenario.title}"
    elif scenario.wrk_script == "upload_64k.lua":
        heading = f"### {scenario.name}: {scenario.title}, POST {scenario.path or args.path}"
    else:
        heading = f"### {scenario.name}: {scenario.title}, GET {scenario.path or args.path}"
    rounds = (
        f"\n\nEach row: the median of {args.rounds} rounds, the servers' order rotated each "
        "round (every round's figure is in the JSON)."
        if args.rounds > 1
        else ""
    )
    return f"{heading}\n\n`{load_template(scenario, args)}`{rounds}\n"


def versions(scenarios: list[Scenario]) -> dict[str, str]:
    found = {}
    dists = ("tiercel", "uvicorn", "httptools", "uvloop", "h11", "hypercorn", "h2", "trustme")
    for dist in (*dists, "granian", "waitress", "trio"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    clients = {s.client for s in scenarios}
    if "wrk" in clients:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        first = (wrk.stdout or wrk.stderr).splitlines()
        found["wrk"] = first[0].split(" [")[0] if first else "unknown"
    if "h2load" in clients:
        h2l = subprocess.run(["h2load", "--version"], capture_output=True, text=True, check=False)
        found["h2load"] = h2l.stdout.strip() or "unknown"
    found["openssl (python ssl)"] = ssl.OPENSSL_VERSION
    found["python"] = sys.version.split()[0]
    return found


def table_cells(scenario: Scenario, r: Result) -> dict[str, str]:
    if scenario.client == "idle":
        return dict(zip(IDLE_COLUMNS, idle_row(r), strict=True))
    return dict(zip(COLUMNS, table_row(r), strict=True))


def draw_chart(
    path: Path, plan: list[tuple[Scenario, list[Server]]], results: dict[str, list[Result]]
) -> None:
    """One horizontal bar panel per scenario: req/s (KiB per idle connection for
    idle-memory), tiercel's rows in a darker colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2
    rows = math.ceil(len(plan) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(12, 2.2 * rows + 0.6), squeeze=False)
    for ax, (scenario, _) in zip(axes.flat, plan, strict=False):
        idle = scenario.client == "idle"
        measured = [
            r
            for r in results[scenario.name]
            if (r.rss_kib_per_connection if idle else r.req_per_s) is not None
        ]
        names = [r.server for r in measured]
        values = [float(r.rss_kib_per_connection if idle else r.req_per_s or 0) for r in measured]
        colours = ["#1f4e79" if n.startswith("tiercel") else "#9db4cc" for n in names]
        ax.barh(names, values, color=colours)
        ax.invert_yaxis()
        ax.set_title(
            scenario.name + (" (KiB per idle connection, lower is better)" if idle else " (req/s)"),
            fontsize=9,
        )
        ax.tick_params(labelsize=8)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
    for ax in list(axes.flat)[len(plan) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"chart written to {path}")


# --------------------------------------------------------------------------- main


def _comma_list(text: str) -> list[str]:
    return list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma list of scenarios (default: all = {','.join(SCENARIOS)})",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every row this many times, in rotated order, and report each row's "
        "median round (1; 3 for published figures)",
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    parser.add_argument("--h2-connections", type=int, default=16, help="h2load -c (16)")
    parser.add_argument("--h2-streams", type=int, default=10, help="h2load -m (10)")
    parser.add_argument("--path", default="/", help="request path: / or /json (/)")
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=1000,
        help="connections opened and left idle in idle-memory (1000)",
    )
    parser.add_argument("--chart", metavar="PATH", type=Path, help="also draw a PNG bar chart")
    parser.add_argument(
        "--servers",
        default=",".join(ROW_NAMES),
        help=f"comma list of rows to run (default: all = {','.join(ROW_NAMES)})",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the tables as JSON")
    parser.add_argument(
        "--markdown", metavar="PATH", type=Path, help="also write the tables as markdown"
    )
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        parser.error("--path must start with /")
    numbers = (args.duration, args.rounds, args.connections, args.h2_connections, args.h2_streams)
    if min(*numbers, args.idle_connections) < 1:
        parser.error(
            "--duration, --rounds, --connections, --h2-connections, --h2-streams and "
            "--idle-connections must be positive"
        )
    if args.chart is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error("--chart needs matplotlib: pip install matplotlib (or '.[bench]')")
    scenarios = _comma_list(args.scenarios)
    unknown = [n for n in scenarios if n not in SCENARIOS]
    if unknown or not scenarios:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    servers = _comma_list(args.servers)
    unknown = [n for n in servers if n not in ROW_NAMES]
    if unknown or not servers:
        parser.error(f"unknown server(s) {unknown}; choose from {', '.join(ROW_NAMES)}")
    args.scenarios, args.servers = scenarios, servers
    return args


def check_tools(scenarios: list[Scenario]) -> None:
    needed = [s.client for s in scenarios if s.client != "idle"]
    if (os.cpu_count() or 1) >= 2:
        needed.append("taskset")
    if any(s.tls for s in scenarios) and importlib.util.find_spec("trustme") is None:
        needed.append("openssl")
    for tool in dict.fromkeys(needed):
        if shutil.which(tool) is None:
            fail(f"{tool} not found on PATH; {TOOL_HINT[tool]}")


def rotated(rows: list[Server], round_index: int) -> list[Server]:
    """A scenario's servers in one round's order: each round starts one row later, so that no
    server is always the first one measured after the previous scenario (or a pause)."""
    shift = round_index % len(rows)
    return rows[shift:] + rows[:shift]


def median_round(rounds: list[Result], idle: bool) -> Result:
    """One server's result over its rounds: the round with the median figure (the lower of
    the two middle ones for an even count), with every round's figure in ``rounds``. A round
    that failed makes the result that failure: an error is a fact about the server, not
    noise to be voted away."""
    for result in rounds:
        if result.error is not None or result.not_installed is not None:
            return result
    measure = "rss_kib_per_connection" if idle else "req_per_s"
    ordered = sorted(rounds, key=lambda r: getattr(r, measure) or 0.0)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.rounds = [getattr(r, measure) or 0.0 for r in rounds]
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = []
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        rows = [row for row in scenario.rows if row.name in args.servers]
        if rows:
            plan.append((scenario, rows))
        else:
            log(f"[{name}] skipped: none of --servers {','.join(args.servers)} is in it")
    if not plan:
        fail("no selected scenario has any of the selected servers")
    check_tools([s for s, _ in plan])
    if not (BENCH_DIR / "app_asgi.py").is_file():
        fail(f"{BENCH_DIR / 'app_asgi.py'} is missing")

    started = dt.datetime.now(dt.UTC)
    cpus = os.cpu_count() or 1
    log(
        f"{cpus} CPU(s); "
        + (
            "servers pinned to CPU 1, load generator to CPU 0"
            if cpus >= 2
            else "no pinning (1 CPU)"
        )
    )
    results: dict[str, list[Result]] = {}
    certs_source = None
    with tempfile.TemporaryDirectory(prefix="tiercel-bench-") as tmp:
        work_dir = Path(tmp)
        (work_dir / "hypercorn_bench.toml").write_text(HYPERCORN_TOML)
        certs = None
        if any(s.tls for s, _ in plan):
            certs = make_certs(work_dir)
            certs_source = certs.source
            log(f"TLS certificate: {certs.source}, in {work_dir}")
        for scenario, rows in plan:
            runs: dict[str, list[Result]] = {row.name: [] for row in rows}
            for round_index in range(args.rounds):
                if args.rounds > 1:
                    log(f"[{scenario.name}] round {round_index + 1} of {args.rounds}")
                for row in rotated(rows, round_index):
                    runs[row.name].append(bench_server(scenario, row, args, work_dir, certs))
            idle = scenario.client == "idle"
            results[scenario.name] = [median_round(runs[row.name], idle) for row in rows]

    for name, scenario_results in results.items():
        # The reference is the scenario's first tiercel row (tiercel-trio in trio-h1, ...).
        # For idle-memory the ratio is the peer's memory per connection over tiercel's.
        measure = "rss_kib_per_connection" if SCENARIOS[name].client == "idle" else "req_per_s"
        base = next(
            (r for r in scenario_results if r.server.startswith("tiercel") and getattr(r, measure)),
            None,
        )
        for r in scenario_results:
            value = getattr(r, measure)
            if base is not None and getattr(base, measure) and value is not None:
                r.vs_tiercel = value / getattr(base, measure)

    text = "\n".join(
        scenario_heading(scenario, args)
        + "\n"
        + markdown_table(results[scenario.name], idle=scenario.client == "idle")
        for scenario, _ in plan
    )
    print(text, end="")
    if args.markdown is not None:
        args.markdown.write_text(text)
    if args.json is not None:
        report: dict[str, Any] = {
            "date": started.isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "h2_connections": args.h2_connections,
            "h2_streams": args.h2_streams,
            "path": args.path,
            "cpus": cpus,
            "tls_certificate": certs_source,
            "versions": versions([s for s, _ in plan]),
            "columns": list(COLUMNS),
            "idle_columns": list(IDLE_COLUMNS),
            "load_commands": {s.name: load_template(s, args) for s, _ in plan},
            # One list per scenario; each row has its table cells and the raw numbers.
            "scenarios": {
                name: [{"table": table_cells(SCENARIOS[name], r), **asdict(r)} for r in rs]
                for name, rs in results.items()
            },
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.chart is not None:
        draw_chart(args.chart, plan, results)
    failed = any(r.error is not None for rs in results.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
