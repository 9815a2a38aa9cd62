"""Micro-benchmark of the HTTP/1.1 codecs: one request/response cycle in memory.

Each cycle feeds a request's bytes to a keep-alive ``Http1Protocol`` connection, answers it
the way a small app would (read the body, send a 13-byte response with one header) and takes
the response bytes: engine plus codec, no sockets, no event loop. Three requests: a wrk-like
GET, a browser-like GET with 12 headers and a 4 KiB POST. A last line times h11 alone (no
tiercel) on the wrk-like GET, for scale.

    python benchmarks/codec_micro.py [--seconds 1.5]

Standard library and tiercel only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import h11  # tiercel's own dependency (the reference codec)
from tiercel.core.config import EngineConfig
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.events import RequestReceived
from tiercel.core.http1 import Http1Protocol

WRK_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
BROWSER_GET = (
    b"GET /static/app.js?v=3 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"Connection: keep-alive\r\n"
    b'sec-ch-ua: "Chromium";v="124", "Not-A.Brand";v="99"\r\n'
    b"sec-ch-ua-mobile: ?0\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b'sec-ch-ua-platform: "Linux"\r\n'
    b"Accept: */*\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: no-cors\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-GB,en;q=0.9\r\n"
    b"\r\n"
)
POST_4K = (
    b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n" + b"x" * 4096
)
REQUESTS = {"wrk-like GET": WRK_GET, "browser GET, 12 headers": BROWSER_GET, "4 KiB POST": POST_4K}
RESPONSE_BODY = b"Hello, world!"
RESPONSE_HEADERS = [(b"content-type", b"text/plain")]


def engine_cycle(codec: str, request: bytes) -> Callable[[], None]:
    """One keep-alive connection; each call serves one request on it."""
    conn = Http1Protocol(ServerContext(EngineConfig(http1_codec=codec)), TransportInfo(), 0.0)

    def cycle() -> None:
        for event in conn.receive_data(request, 0.0):
            if isinstance(event, RequestReceived):
                stream = event.stream
                while stream.read_body(0.0):
                    pass
                stream.response_headers = list(RESPONSE_HEADERS)
                stream.complete(RESPONSE_BODY, 0.0)
        conn.pop_events()
        if not conn.data_to_send():
            raise RuntimeError(f"{codec}: no response")

    cycle()
    assert conn.is_idle, "the connection must be reusable"
    return cycle


def h11_alone_cycle(request: bytes) -> Callable[[], None]:
    """h11 by itself: parse the request, send the same response, start the next cycle."""
    conn = h11.Connection(h11.SERVER)
    headers = [(b"content-length", b"%d" % len(RESPONSE_BODY)), *RESPONSE_HEADERS]

    def cycle() -> None:
        conn.receive_data(request)
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                break
            if event is h11.NEED_DATA:
                raise RuntimeError("h11: incomplete request")
        out = conn.send(h11.Response(status_code=200, headers=headers))
        out += conn.send(h11.Data(data=RESPONSE_BODY))
        out += conn.send(h11.EndOfMessage())
        conn.start_next_cycle()

    cycle()
    return cycle


def measure(cycle: Callable[[], None], seconds: float) -> float:
    """Microseconds per call: the best of three runs of about ``seconds / 3`` each."""
    batch = 1
    while True:  # size a batch to take about 10 ms
        start = time.perf_counter()
        for _ in range(batch):
            cycle()
        elapsed = time.perf_counter() - start
        if elapsed > 0.01:
            break
        batch *= 2
    best = float("inf")
    for _ in range(3):
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while time.perf_counter() < deadline:
            for _ in range(batch):
                cycle()
            calls += batch
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    args = parser.parse_args()

    print(f"{'request':<26}{'fast µs':>10}{'h11 µs':>10}{'speed-up':>10}")
    for name, request in REQUESTS.items():
        fast = measure(engine_cycle("fast", request), args.seconds)
        reference = measure(engine_cycle("h11", request), args.seconds)
        print(f"{name:<26}{fast:>10.1f}{reference:>10.1f}{reference / fast:>9.1f}x")
    alone = measure(h11_alone_cycle(WRK_GET), args.seconds)
    print(f"{'h11 alone, wrk-like GET':<26}{'':>10}{alone:>10.1f}")


if __name__ == "__main__":
    main()
