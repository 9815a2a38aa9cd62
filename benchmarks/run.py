#!/usr/bin/env python3
"""Run wrk and h2load against tiercel and its peers side by side, on the same app.

Usage: python benchmarks/run.py [--scenarios h1,h2c,tls-h1,tls-h2,trio-h1,trio-h2c,wsgi-h1]
                                [--duration 10]
                                [--connections 64] [--h2-connections 16] [--h2-streams 10]
                                [--path /] [--servers tiercel,hypercorn-asyncio,...]
                                [--json PATH] [--markdown PATH]

Scenarios (one table each, same columns):
  h1      HTTP/1.1 keep-alive over cleartext, wrk: tiercel and uvicorn rows.
  h2c     HTTP/2 with prior knowledge over cleartext, h2load: tiercel and hypercorn rows.
  tls-h1  HTTP/1.1 over TLS, wrk: tiercel, uvicorn and hypercorn rows.
  tls-h2  HTTP/2 over TLS (ALPN h2), h2load: tiercel and hypercorn rows.

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
    client: str  # "wrk" or "h2load"
    tls: bool
    rows: tuple[Server, ...]

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


def _hypercorn(worker: str, tls: bool = False) -> Server:
    args: tuple[str, ...] = ("-m", "hypercorn", "-c", "{hypercorn_toml}", "-w", "1")
    args += ("-k", worker, "-b", f"{HOST}:{{port}}")
    if tls:
        args += ("--certfile", "{certfile}", "--keyfile", "{keyfile}")
    args += ("--log-level", "warning", APP)
    needs = ("hypercorn", worker) if worker != "asyncio" else ("hypercorn",)
    return Server(f"hypercorn-{worker}", args, needs)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "h1",
            "HTTP/1.1 keep-alive, cleartext (wrk)",
            "wrk",
            False,
            (
                _tiercel("uvloop"),
                _tiercel("asyncio"),
                _uvicorn("httptools", "uvloop"),
                _uvicorn("h11", "asyncio"),
            ),
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
            ),
        ),
        Scenario(
            "tls-h2",
            "HTTP/2 over TLS, ALPN h2 (h2load)",
            "h2load",
            True,
            (_tiercel("uvloop", tls=True), _hypercorn("asyncio", tls=True)),
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
    conditions: Conditions | None = None
    not_installed: str | None = None
    error: str | None = None


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


def wrk_argv(url: str, connections: int, seconds: int, latency: bool) -> list[str]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if latency:
        argv.append("--latency")
    return [*argv, url]


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
    subst = {
        "port": port,
        "certfile": certs.certfile if certs else "",
        "keyfile": certs.keyfile if certs else "",
        "hypercorn_toml": work_dir / "hypercorn_bench.toml",
    }
    argv = pin(1, [sys.executable, *(a.format(**subst) for a in server.args)])
    result.command = shlex.join(argv)
    url = f"{scenario.scheme}://{HOST}:{port}{args.path}"
    log_path = work_dir / f"{scenario.name}-{server.name}.log"
    latency_log = work_dir / f"{scenario.name}-{server.name}.h2load.tsv"
    if scenario.client == "wrk":
        warm = wrk_argv(url, args.connections, WARMUP_SECONDS, latency=False)
        measure = wrk_argv(url, args.connections, args.duration, latency=True)
    else:
        c, m = args.h2_connections, args.h2_streams
        warm = h2load_argv(url, c, m, WARMUP_SECONDS)
        measure = h2load_argv(url, c, m, args.duration, latency_log)
    result.load_command = shlex.join(pin(0, measure))
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
        if scenario.client == "wrk":
            log(f"  probe: {probe_http1(port, args.path, scenario.tls, certs)}")
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


def markdown_table(results: list[Result]) -> str:
    rows = [COLUMNS, *(table_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep, *(line(r) for r in rows[1:])]) + "\n"


def load_template(scenario: Scenario, args: argparse.Namespace) -> str:
    """The measured load command with the port left as PORT."""
    url = f"{scenario.scheme}://{HOST}:PORT{args.path}"
    if scenario.client == "wrk":
        argv = wrk_argv(url, args.connections, args.duration, latency=True)
    else:
        argv = h2load_argv(url, args.h2_connections, args.h2_streams, args.duration, Path("FILE"))
    return shlex.join(argv)


def scenario_heading(scenario: Scenario, args: argparse.Namespace) -> str:
    heading = f"### {scenario.name}: {scenario.title}, GET {args.path}"
    return f"{heading}\n\n`{load_template(scenario, args)}`\n"


def versions(scenarios: list[Scenario]) -> dict[str, str]:
    found = {}
    for dist in ("tiercel", "uvicorn", "httptools", "uvloop", "h11", "hypercorn", "h2", "trustme"):
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
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    parser.add_argument("--h2-connections", type=int, default=16, help="h2load -c (16)")
    parser.add_argument("--h2-streams", type=int, default=10, help="h2load -m (10)")
    parser.add_argument("--path", default="/", help="request path: / or /json (/)")
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
    if min(args.duration, args.connections, args.h2_connections, args.h2_streams) < 1:
        parser.error("--duration, --connections, --h2-connections, --h2-streams must be positive")
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
    needed = [s.client for s in scenarios]
    if (os.cpu_count() or 1) >= 2:
        needed.append("taskset")
    if any(s.tls for s in scenarios) and importlib.util.find_spec("trustme") is None:
        needed.append("openssl")
    for tool in dict.fromkeys(needed):
        if shutil.which(tool) is None:
            fail(f"{tool} not found on PATH; {TOOL_HINT[tool]}")


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
            results[scenario.name] = [
                bench_server(scenario, row, args, work_dir, certs) for row in rows
            ]

    for scenario_results in results.values():
        # The reference is the scenario's first tiercel row (tiercel-trio in trio-h1, ...).
        base = next(
            (r for r in scenario_results if r.server.startswith("tiercel") and r.req_per_s), None
        )
        for r in scenario_results:
            if base is not None and base.req_per_s and r.req_per_s is not None:
                r.vs_tiercel = r.req_per_s / base.req_per_s

    text = "\n".join(
        scenario_heading(scenario, args) + "\n" + markdown_table(results[scenario.name])
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
            "connections": args.connections,
            "h2_connections": args.h2_connections,
            "h2_streams": args.h2_streams,
            "path": args.path,
            "cpus": cpus,
            "tls_certificate": certs_source,
            "versions": versions([s for s, _ in plan]),
            "columns": list(COLUMNS),
            "load_commands": {s.name: load_template(s, args) for s, _ in plan},
            # One list per scenario; each row has its table cells and the raw numbers.
            "scenarios": {
                name: [
                    {"table": dict(zip(COLUMNS, table_row(r), strict=True)), **asdict(r)}
                    for r in rs
                ]
                for name, rs in results.items()
            },
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(r.error is not None for rs in results.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
