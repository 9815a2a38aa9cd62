"""Parking idle connections (the shared epoll set, and the parker's selector): many
connections taking turns on few workers lose no request, a timer that fires while a worker
holds the connection is not lost, and the keep-alive timer follows a busy connection."""

from __future__ import annotations

import socket
import threading
import time

from support import recv_until_closed
from test_threads_http1 import read_responses
from tiercel.core.config import Limits

GATE = threading.Event()
WAITING = threading.Event()  # set when a request for /wait reaches the app


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/wait":
        WAITING.set()
        GATE.wait(10)
    elif path.startswith("/sleep/"):
        time.sleep(float(path[len("/sleep/") :]))
    body = f"{path} {environ['QUERY_STRING']}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_many_keep_alive_connections_take_turns_on_few_workers(threads_serve):
    """Every request on every connection is answered: a lost wake-up would leave a client
    waiting for its response until the read timeout."""
    server = threads_serve(app, threads=3)
    connections, rounds = 24, 60
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            with server.connect(timeout=10) as sock:
                for index in range(rounds):
                    request = f"GET /c{number}?{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                    if index % 3 == 0:  # in two pieces: parked between them, head half read
                        sock.sendall(request[:12])
                        time.sleep(0.002)
                        request = request[12:]
                    sock.sendall(request)
                    (response,) = read_responses(sock, 1, timeout=10)
                    assert response.endswith(f"/c{number} {index}".encode()), response
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert server.wait_for_idle_workers() == 0


def test_pipelined_bursts_on_many_connections(threads_serve):
    server = threads_serve(app, threads=2)
    socks = [server.connect(timeout=10) for _ in range(8)]
    try:
        for round_number in range(5):
            for number, sock in enumerate(socks):
                burst = b"".join(
                    f"GET /p{number}?{round_number}.{k} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                    for k in range(4)
                )
                sock.sendall(burst)
            for number, sock in enumerate(socks):
                responses = read_responses(sock, 4, timeout=10)
                assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in responses] == [
                    f"/p{number} {round_number}.{k}".encode() for k in range(4)
                ]
    finally:
        for sock in socks:
            sock.close()


def test_a_timer_due_while_a_worker_holds_the_connection_is_not_lost(threads_serve):
    """The keep-alive timer of the first parking fires while the app answers the second
    request: the parker cannot take the connection then, so parking it afterwards must
    schedule its timer again, or the connection would never time out."""
    server = threads_serve(app, threads=1, limits=Limits(keep_alive_timeout=0.5))
    with server.connect(timeout=10) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1)[0].endswith(b"/first ")
        sock.sendall(b"GET /sleep/1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1)[0].endswith(b"/sleep/1.0 ")
        # Still open right after the response, and still serving.
        sock.sendall(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1)[0].endswith(b"/third ")
        started = time.monotonic()
        assert recv_until_closed(sock, timeout=5) == b""
        assert time.monotonic() - started < 4


def test_the_keep_alive_timer_follows_a_busy_connection(threads_serve):
    """Requests spaced below the keep-alive timeout keep the connection open well past it
    (the first parking's timer fires early and is rescheduled), and idling then closes it."""
    server = threads_serve(app, limits=Limits(keep_alive_timeout=1.0))
    with server.connect(timeout=10) as sock:
        for index in range(7):
            sock.sendall(f"GET /n?{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert read_responses(sock, 1)[0].endswith(f"/n {index}".encode())
            time.sleep(0.25)
        assert recv_until_closed(sock, timeout=5) == b""


def test_stopping_closes_parked_connections_and_finishes_busy_ones(threads_serve):
    GATE.clear()
    WAITING.clear()
    server = threads_serve(app, threads=2, shutdown_timeout=5)
    idle = [server.connect(timeout=10) for _ in range(6)]
    for sock in idle:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1)
    busy = server.connect(timeout=10)
    busy.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    assert WAITING.wait(5)
    stopper = server.stop_in_background()
    for sock in idle:
        assert recv_until_closed(sock, timeout=3) == b""
        sock.close()
    GATE.set()
    answer = recv_until_closed(busy, timeout=5)
    busy.close()
    stopper.join(10)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close\r\n" in answer.lower()
    assert answer.endswith(b"/wait ")


def test_a_connection_that_sends_nothing_is_parked_and_timed_out(threads_serve):
    """A new connection waits parked for its first request (no worker held) and meets the
    keep-alive timeout if none comes."""
    server = threads_serve(app, threads=1, limits=Limits(keep_alive_timeout=0.3))
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    with server.connect(timeout=10) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1)[0].endswith(b"/ok ")
    for sock in silent:
        assert recv_until_closed(sock, timeout=5) == b""
        sock.close()
