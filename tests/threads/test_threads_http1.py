"""HTTP/1.1 through the threaded adapter with raw sockets and httpx: keep-alive, pipelining,
the engine's limits and timeouts, and idle connections that do not hold a worker."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from support import recv_until_closed
from tiercel.adapters.threads_adapter import ThreadedServer, worker_threads
from tiercel.apps.hosting import Server
from tiercel.apps.options import ServerOptions
from tiercel.core.config import DataRate, Limits
from tiercel.core.errors import ConfigError


def hello(environ, start_response):
    body = environ["wsgi.input"].read()
    text = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(body)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]


def read_responses(sock, count: int, timeout: float = 5.0) -> list[bytes]:
    """``count`` complete Content-Length responses from a keep-alive connection."""
    sock.settimeout(timeout)
    buffer = b""
    responses = []
    while len(responses) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end].lower()
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            end = head_end + 4 + length
            if len(buffer) >= end:
                responses.append(buffer[:end])
                buffer = buffer[end:]
                continue
        data = sock.recv(65536)
        if not data:
            break
        buffer += data
    return responses


def test_keep_alive_serves_several_requests_on_one_connection(threads_serve):
    server = threads_serve(hello)
    with server.connect() as sock:
        for index in range(3):
            sock.sendall(f"GET /n{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            (response,) = read_responses(sock, 1)
            assert response.startswith(b"HTTP/1.1 200 OK\r\n")
            assert response.endswith(f"GET /n{index} 0".encode())


def test_pipelined_requests_are_answered_in_order(threads_serve):
    server = threads_serve(hello)
    with server.connect() as sock:
        sock.sendall(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        responses = read_responses(sock, 3)
    assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in responses] == [
        b"GET /one 0",
        b"POST /two 3",
        b"GET /three 0",
    ]


def test_connection_close_is_honoured(threads_serve):
    server = threads_serve(hello)
    with server.connect() as sock:
        sock.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = recv_until_closed(sock)
    assert answer.endswith(b"GET /bye 0")
    assert b"connection: close" in answer.lower()


def test_413_for_a_body_over_the_limit(threads_serve):
    server = threads_serve(hello, limits=Limits(max_request_body_size=100))
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + b"z" * 101)
        answer = recv_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_431_for_headers_over_the_limit(threads_serve):
    server = threads_serve(hello, limits=Limits(max_request_headers_total_size=1024))
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        answer = recv_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_408_when_the_request_head_is_too_slow(threads_serve):
    # The half-sent head waits in the parker, whose timer answers 408.
    server = threads_serve(hello, limits=Limits(request_headers_timeout=0.5))
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = recv_until_closed(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3


def test_408_when_the_request_body_is_too_slow(threads_serve):
    # The app waits in wsgi.input.read(); the worker applies the minimum body data rate.
    rate = DataRate(bytes_per_second=1000, grace_period=0.5)
    server = threads_serve(hello, limits=Limits(min_request_body_data_rate=rate))
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        answer = recv_until_closed(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_keep_alive_timeout_closes_idle_connections(threads_serve):
    server = threads_serve(hello, limits=Limits(keep_alive_timeout=0.5))
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1)
        started = time.monotonic()
        assert recv_until_closed(sock, timeout=5) == b""
        assert time.monotonic() - started < 3


def test_idle_keep_alive_connections_do_not_hold_workers(threads_serve):
    server = threads_serve(hello, threads=1)
    idle = [server.connect() for _ in range(5)]
    for sock in idle:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1)
    # Five open keep-alive connections and one worker: a new client is still served at once,
    # and so is each idle connection when it comes back.
    assert httpx.get(server.url + "/new", timeout=2).text == "GET /new 0"
    for sock in idle:
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_responses(sock, 1, timeout=2)[0].endswith(b"GET /again 0")
        sock.close()
    assert server.wait_for_idle_workers() == 0


def test_many_concurrent_clients(threads_serve):
    server = threads_serve(hello, threads=4)
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            with httpx.Client() as session:
                for index in range(10):
                    text = session.post(f"{server.url}/c{number}", content=b"x" * index).text
                    assert text == f"POST /c{number} {index}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []


def test_the_serve_fixture_works_through_server_start_and_stop(serve):
    # tiercel.apps.hosting.Server's async start()/stop() drive the threaded adapter too.
    running = serve(hello, adapter="threads")
    assert httpx.get(running.url + "/via-server").text == "GET /via-server 0"


def test_asgi_apps_are_refused_clearly():
    async def asgi(scope, receive, send):
        pass

    with pytest.raises(ConfigError, match="threads adapter runs WSGI apps only"):
        Server(asgi, urls="http://127.0.0.1:0", adapter="threads")
    # Forced with --interface wsgi, it is the user's call.
    options = ServerOptions(urls="http://127.0.0.1:0", adapter="threads", interface="wsgi")
    assert ThreadedServer(asgi, options).interface == "wsgi"


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("TIERCEL_THREADS", "5")
    assert worker_threads() == 5
    options = ServerOptions(urls="http://127.0.0.1:0", adapter="threads")
    assert ThreadedServer(hello, options).threads == 5
    monkeypatch.setenv("TIERCEL_THREADS", "zero")
    with pytest.raises(ConfigError, match="TIERCEL_THREADS"):
        ThreadedServer(hello, options)
    monkeypatch.delenv("TIERCEL_THREADS")
    assert worker_threads() >= 8


def test_https_with_http1_and_h2_by_alpn(threads_serve, tmp_path):
    import ssl

    import trustme
    from tiercel.apps.tls import CertificateFiles, TlsOptions

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    server = threads_serve(
        hello,
        urls="https://127.0.0.1:0",
        tls=TlsOptions(default=CertificateFiles(str(cert), str(key))),
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    for http2 in (False, True):
        with httpx.Client(verify=context, http2=http2) as client:
            for index in range(3):
                response = client.post(f"{server.url}/tls{index}", content=b"12345")
                assert response.text == f"POST /tls{index} 5"
                assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
