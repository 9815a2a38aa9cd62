"""In-process CPU cost per request: tiercel's asyncio adapter (on uvloop) against uvicorn's
httptools protocol, both driven through a fake transport, so no syscall and no load generator
is counted. This is the Python work a server does per request, which is what the hot-path
tuning changes; run.py measures the whole thing over real sockets.

    python benchmarks/inprocess.py              # every case, both servers
    python benchmarks/inprocess.py --only tiercel --cases h1,upload

Each figure is the least CPU time (``time.process_time``) per request over 7 rounds, so other
processes on the machine disturb it less than they disturb wall-clock figures. Reads are
delivered from a loop callback, as a transport delivers them.

What this cannot show: how a server's work is ordered across many connections. One connection
is driven at a time, so tiercel's starting of apps after a whole turn of reads (one loop
callback more per request here) shows up as a cost, while over real sockets with 64
connections it is a gain (benchmarks/README.md, "Tuning"). Judge scheduling changes with
run.py.

``--split`` (tiercel only) times the two halves of an ``h1`` request with no loop turn
between them: ``data_received`` (the engine parses the head and the adapter queues the app),
then the server's ``_start_apps`` (the app runs, the response is built and written). Without
the loop and the driving task, small changes to either half stand out from the noise.

    python benchmarks/inprocess.py --split

Cases:
- ``h1``: ``GET /`` on one keep-alive connection, one request per read;
- ``pipelined``: 16 ``GET /`` in one read, the cost per request;
- ``upload``: ``POST /upload`` with a 64 KiB body arriving in five reads, the app waiting for
  each one (as over a real socket).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from app_asgi import app

GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
UPLOAD = (
    b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 65536\r\n\r\n" + b"x" * 65536
)
READ_SIZE = 16384  # the upload arrives in pieces of this size
ROUNDS = 7


class FakeTransport:
    """What both servers ask of an asyncio transport; writes are collected, not sent."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.write_calls = 0  # write and writelines each count once: one send on a socket

    def write(self, data: bytes) -> None:
        self.out.append(data)
        self.write_calls += 1

    def writelines(self, pieces: list[bytes]) -> None:
        self.out.extend(pieces)
        self.write_calls += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name in ("peername", "sockname") else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def set_protocol(self, protocol: Any) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def tiercel_protocol() -> asyncio.Protocol:
    from tiercel.adapters.asyncio_adapter import AsyncioServer, _Connection
    from tiercel.adapters.sockets import Listener
    from tiercel.apps.options import ServerOptions

    server = AsyncioServer(app, ServerOptions(access_log=False))
    server.loop = asyncio.get_running_loop()
    return _Connection(server, Listener(sock=None, url="http://127.0.0.1:8000"))


def uvicorn_protocol() -> asyncio.Protocol:
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = Config(app, http="httptools", access_log=False, lifespan="off")
    config.load()
    return HttpToolsProtocol(config, ServerState(), app_state={})


def _responses(transport: FakeTransport) -> int:
    return sum(piece.count(b"HTTP/1.1 200") for piece in transport.out)


def _deliver(protocol: asyncio.Protocol, data: bytes) -> None:
    """As a transport delivers a read: from a loop callback, outside any task."""
    asyncio.get_running_loop().call_soon(protocol.data_received, data)


async def _h1(protocol: asyncio.Protocol, transport: FakeTransport) -> int:
    _deliver(protocol, GET)
    await asyncio.sleep(0)
    while not _responses(transport):
        await asyncio.sleep(0)
    return 1


async def _pipelined(protocol: asyncio.Protocol, transport: FakeTransport) -> int:
    _deliver(protocol, GET * 16)
    await asyncio.sleep(0)
    while _responses(transport) < 16:
        await asyncio.sleep(0)
    return 16


async def _upload(protocol: asyncio.Protocol, transport: FakeTransport) -> int:
    for start in range(0, len(UPLOAD), READ_SIZE):
        _deliver(protocol, UPLOAD[start : start + READ_SIZE])
        await asyncio.sleep(0)  # the read
        await asyncio.sleep(0)  # the app wakes and waits for the next piece
        await asyncio.sleep(0)
    while not _responses(transport):
        await asyncio.sleep(0)
    return 1


CASES: dict[str, Callable[[asyncio.Protocol, FakeTransport], Any]] = {
    "h1": _h1,
    "pipelined": _pipelined,
    "upload": _upload,
}
SERVERS: dict[str, Callable[[], asyncio.Protocol]] = {
    "tiercel": tiercel_protocol,
    "uvicorn-httptools": uvicorn_protocol,
}


async def _measure(make: Callable[[], asyncio.Protocol], case: Any, cycles: int) -> float:
    protocol = make()
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    requests = 0
    started = time.process_time()
    for _ in range(cycles):
        requests += await case(protocol, transport)
        transport.out.clear()
    return (time.process_time() - started) / requests


def measure(server: str, case: str, cycles: int) -> float:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_measure(SERVERS[server], CASES[case], cycles // 5))  # warm-up
        return min(
            runner.run(_measure(SERVERS[server], CASES[case], cycles)) for _ in range(ROUNDS)
        )


def measure_split(cycles: int) -> tuple[float, float]:
    """Least seconds per request in (data_received, _start_apps), over ROUNDS rounds."""
    import uvloop

    def halves(protocol: Any, transport: FakeTransport, count: int) -> tuple[float, float]:
        server = protocol._server
        receiving = starting = 0.0
        clock = time.perf_counter
        for _ in range(count):
            began = clock()
            protocol.data_received(GET)
            received = clock()
            server._start_apps()
            starting += clock() - received
            receiving += received - began
            if _responses(transport) != 1:
                raise RuntimeError("the split harness did not get one response per request")
            transport.out.clear()
        return receiving / count, starting / count

    def rounds() -> tuple[float, float]:
        protocol: Any = tiercel_protocol()
        transport = FakeTransport()
        protocol.connection_made(transport)
        halves(protocol, transport, cycles // 5)  # warm-up
        return min((halves(protocol, transport, cycles) for _ in range(ROUNDS)), key=sum)

    async def run() -> tuple[float, float]:
        # From a loop callback, as a transport calls data_received: outside any task.
        loop = asyncio.get_running_loop()
        result: asyncio.Future[tuple[float, float]] = loop.create_future()

        def measure_now() -> None:
            try:
                result.set_result(rounds())
            except Exception as exc:  # reported by the await below, not lost in the loop
                result.set_exception(exc)

        loop.call_soon(measure_now)
        return await result

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of cases")
    parser.add_argument("--only", default=",".join(SERVERS), help="comma list of servers")
    parser.add_argument("--cycles", type=int, default=5000, help="cycles per round")
    parser.add_argument(
        "--split", action="store_true", help="tiercel's h1: data_received and app start apart"
    )
    args = parser.parse_args()
    if args.split:
        receiving, starting = measure_split(args.cycles * 4)
        print("| data_received µs/req | start_apps µs/req | total |")
        print("|---|---|---|")
        total = (receiving + starting) * 1e6
        print(f"| {receiving * 1e6:.2f} | {starting * 1e6:.2f} | {total:.2f} |")
        return 0
    cases = [c for c in args.cases.split(",") if c]
    servers = [s for s in args.only.split(",") if s]
    for name in cases + servers:
        if name not in CASES and name not in SERVERS:
            print(f"error: unknown case or server {name!r}", file=sys.stderr)
            return 2
    print("| case | " + " | ".join(f"{s} µs/req" for s in servers) + " |")
    print("|---|" + "---|" * len(servers))
    for case in cases:
        figures = [measure(server, case, args.cycles) * 1e6 for server in servers]
        print(f"| {case} | " + " | ".join(f"{f:.1f}" for f in figures) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
