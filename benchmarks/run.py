#!/usr/bin/env python3
"""Run wrk against tiercel and uvicorn side by side, on the same app, in one run.

Usage: python benchmarks/run.py [--duration 10] [--connections 64] [--path /]
                                [--servers tiercel,uvicorn-h11-asyncio] [--json PATH]
                                [--markdown PATH]

Each server runs as one process pinned to CPU 1 and wrk is pinned to CPU 0 (when the
machine has at least 2 CPUs). See benchmarks/README.md for the method and the columns.
Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
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
WARMUP_SECONDS = 2
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    name: str
    # Arguments after ``sys.executable``; ``{port}`` is substituted.
    args: tuple[str, ...]
    # Modules that must be importable in this Python for the row to run.
    needs: tuple[str, ...]


def _tiercel(loop: str) -> Server:
    args = (
        "-m",
        "tiercel.apps.cli",
        APP,
        "--urls",
        f"http://{HOST}:{{port}}",
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        loop,
    )
    return Server(f"tiercel-{loop}" if loop != "uvloop" else "tiercel", args, ("tiercel",))


def _uvicorn(http: str, loop: str) -> Server:
    args = (
        "-m",
        "uvicorn",
        "--host",
        HOST,
        "--port",
        "{port}",
        "--http",
        http,
        "--loop",
        loop,
        "--no-access-log",
        "--log-level",
        "warning",
        APP,
    )
    return Server(f"uvicorn-{http}-{loop}", args, ("uvicorn",))


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        _tiercel("uvloop"),
        _tiercel("asyncio"),
        _uvicorn("httptools", "uvloop"),
        _uvicorn("h11", "asyncio"),
    )
}
# Optional extras the rows above need besides the server package itself.
EXTRA_NEEDS: dict[str, tuple[str, ...]] = {
    "tiercel": ("uvloop",),
    "uvicorn-httptools-uvloop": ("httptools", "uvloop"),
    "uvicorn-h11-asyncio": ("h11",),
}
INSTALL_HINT: dict[str, str] = {
    "uvicorn": "pip install uvicorn (or pip install -e '.[bench]')",
    "httptools": "pip install httptools (or pip install -e '.[bench]')",
    "uvloop": "pip install uvloop (or pip install -e '.[bench]')",
    "h11": "pip install h11",
    "tiercel": "pip install -e . from the repository root",
}


@dataclass
class Conditions:
    """What the CPUs were doing during the measured run (percent of one core)."""

    server_cpu_pct: float
    wrk_cpu_pct: float
    others_cpu_pct: float
    steal_pct: float


@dataclass
class Result:
    server: str
    command: str
    requests: int = 0
    req_per_s: float | None = None
    vs_tiercel: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx_3xx: int = 0
    errors: int = 0
    server_cpu_us_per_req: float | None = None
    conditions: Conditions | None = None
    error: str | None = None


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


def group_cpu_ticks(pgid: int) -> int:
    """utime+stime (clock ticks) of every live process in process group ``pgid``.

    The server is started as its own session leader, so this is the server process
    plus any children it may spawn; for the servers here it is just the one PID.
    """
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat_fields(int(entry.name))
        if fields is None or int(fields[2]) != pgid:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def system_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq + steal, steal


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
    result.socket_errors = {k: int(v) for k, v in zip(keys, counts, strict=True)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result.non_2xx_3xx = int(non2xx.group(1)) if non2xx else 0
    result.errors = sum(result.socket_errors.values()) + result.non_2xx_3xx


def run_wrk(url: str, connections: int, seconds: int, latency: bool) -> str:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if latency:
        argv.append("--latency")
    argv = pin(0, [*argv, url])
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {seconds + 30} s") from exc
    if proc.returncode != 0:
        raise BenchError(f"wrk exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


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


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's PID, then SIGKILL it if it is still alive after 5 s."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log(f"  server PID {proc.pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; SIGKILL")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no output)"
    return " | ".join(text[-lines:]) or "(no output)"


def bench_server(server: Server, args: argparse.Namespace, log_dir: Path) -> Result:
    port = free_port()
    argv = pin(1, [sys.executable, *(a.format(port=port) for a in server.args)])
    result = Result(server=server.name, command=shlex.join(argv))
    url = f"http://{HOST}:{port}{args.path}"
    log_path = log_dir / f"{server.name}.log"
    log(f"[{server.name}] {result.command}")
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
        log(f"  warm-up: wrk -t1 -c{args.connections} -d{WARMUP_SECONDS}s {url}")
        run_wrk(url, args.connections, WARMUP_SECONDS, latency=False)

        log(f"  measure: wrk -t1 -c{args.connections} -d{args.duration}s --latency {url}")
        srv0, sys0, kids0 = group_cpu_ticks(proc.pid), system_ticks(), children_cpu_seconds()
        t0 = time.monotonic()
        output = run_wrk(url, args.connections, args.duration, latency=True)
        wall = time.monotonic() - t0
        srv1, sys1, kids1 = group_cpu_ticks(proc.pid), system_ticks(), children_cpu_seconds()
        if proc.poll() is not None:
            raise BenchError(f"server died during the run: {tail(log_path)}")

        parse_wrk(output, result)
        server_s = (srv1 - srv0) / CLK_TCK
        wrk_s = kids1 - kids0
        busy_s = (sys1[0] - sys0[0]) / CLK_TCK
        steal_s = (sys1[1] - sys0[1]) / CLK_TCK
        result.conditions = Conditions(
            server_cpu_pct=100 * server_s / wall,
            wrk_cpu_pct=100 * wrk_s / wall,
            others_cpu_pct=max(0.0, 100 * (busy_s - server_s - wrk_s - steal_s) / wall),
            steal_pct=100 * steal_s / wall,
        )
        if result.requests:
            result.server_cpu_us_per_req = server_s * 1e6 / result.requests
        c = result.conditions
        log(
            f"  {result.req_per_s:,.0f} req/s; CPU server {c.server_cpu_pct:.0f}% / "
            f"wrk {c.wrk_cpu_pct:.0f}% / others {c.others_cpu_pct:.0f}% / "
            f"steal {c.steal_pct:.0f}% (of one core)"
        )
    except BenchError as exc:
        result.error = str(exc)
        log(f"  FAILED: {exc}")
    finally:
        stop(proc)
    return result


# --------------------------------------------------------------------------- output

COLUMNS = ("server", "req/s", "vs tiercel", "p50", "p99", "errors", "server CPU µs/req")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def table_rows(results: list[Result]) -> list[tuple[str, ...]]:
    rows = []
    for r in results:
        if r.error is not None or r.req_per_s is None:
            rows.append((r.server, "ERROR", "-", "-", "-", "-", "-"))
            continue
        rows.append(
            (
                r.server,
                f"{r.req_per_s:,.0f}",
                "-" if r.vs_tiercel is None else f"{r.vs_tiercel:.2f}x",
                _ms(r.p50_ms),
                _ms(r.p99_ms),
                str(r.errors),
                "-" if r.server_cpu_us_per_req is None else f"{r.server_cpu_us_per_req:.1f}",
            )
        )
    return rows


def markdown_table(results: list[Result]) -> str:
    rows = [COLUMNS, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep, *(line(r) for r in rows[1:])]) + "\n"


def versions() -> dict[str, str]:
    found = {}
    for dist in ("tiercel", "uvicorn", "httptools", "uvloop", "h11"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (wrk.stdout or wrk.stderr).splitlines()
    found["wrk"] = first[0].split(" [")[0] if first else "unknown"
    found["python"] = sys.version.split()[0]
    return found


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    parser.add_argument("--path", default="/", help="request path: / or /json (/)")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma list of rows to run (default: all = {','.join(SERVERS)})",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the table as JSON")
    parser.add_argument(
        "--markdown", metavar="PATH", type=Path, help="also write the table as markdown"
    )
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        parser.error("--path must start with /")
    if args.duration < 1 or args.connections < 1:
        parser.error("--duration and --connections must be positive")
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown or not names:
        parser.error(f"unknown server(s) {unknown}; choose from {', '.join(SERVERS)}")
    args.servers = list(dict.fromkeys(names))
    return args


def check_tools(selected: list[Server]) -> None:
    if shutil.which("wrk") is None:
        fail("wrk not found on PATH; install it with `apt-get install -y wrk` (Debian package wrk)")
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is None:
        fail("taskset not found on PATH; install util-linux")
    for server in selected:
        for module in (*server.needs, *EXTRA_NEEDS.get(server.name, ())):
            if importlib.util.find_spec(module) is None:
                fail(
                    f"{module} is not installed in {sys.executable} (needed by {server.name}); "
                    f"{INSTALL_HINT.get(module, f'pip install {module}')}"
                )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [SERVERS[name] for name in args.servers]
    check_tools(selected)
    if not (BENCH_DIR / "app_asgi.py").is_file():
        fail(f"{BENCH_DIR / 'app_asgi.py'} is missing")

    started = dt.datetime.now(dt.UTC)
    cpus = os.cpu_count() or 1
    log(
        f"{cpus} CPU(s); "
        + ("servers pinned to CPU 1, wrk to CPU 0" if cpus >= 2 else "no pinning (1 CPU)")
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tiercel-bench-") as tmp:
        for server in selected:
            results.append(bench_server(server, args, Path(tmp)))

    base = next((r for r in results if r.server == "tiercel" and r.req_per_s), None)
    for r in results:
        if base is not None and base.req_per_s and r.req_per_s is not None:
            r.vs_tiercel = r.req_per_s / base.req_per_s

    table = markdown_table(results)
    print(table, end="")
    if args.markdown is not None:
        args.markdown.write_text(table)
    if args.json is not None:
        report: dict[str, Any] = {
            "date": started.isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "duration_s": args.duration,
            "connections": args.connections,
            "path": args.path,
            "cpus": cpus,
            "versions": versions(),
            "columns": list(COLUMNS),
            "table": [dict(zip(COLUMNS, row, strict=True)) for row in table_rows(results)],
            "rows": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(r.error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
