"""The selectors example server (apps/selectors_server.py), over real sockets on loopback."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tiercel.apps.selectors_server import SelectorsServer, hello_app
from tiercel.core.config import DataRate, Limits
from tiercel.core.features import (
    ConnectionFeature,
    FeatureCollection,
    RequestFeature,
    ResponseBodyFeature,
    ResponseFeature,
    ServerAddressesFeature,
)


def echo_app(features: FeatureCollection) -> None:
    """Answers with the method, target and the whole request body."""
    request = features[RequestFeature]
    body = request.read_body()
    assert request.read_body() == b""  # the server hands over the body once
    response = features[ResponseFeature]
    response.response_headers = [
        (b"content-type", b"application/octet-stream"),
        (b"x-body-length", str(len(body)).encode()),
    ]
    query = b"?" + request.query_string if request.query_string else b""
    head = f"{request.method} {request.path}".encode() + query + b"\n"
    features[ResponseBodyFeature].complete(head + body)


Start = Callable[..., SelectorsServer]


@pytest.fixture
def start() -> Iterator[Start]:
    """``start(app, **engine_config)``: a server on a free port, in a thread; stopped after."""
    running: list[tuple[SelectorsServer, threading.Thread]] = []

    def run(app: Any = echo_app, **config: Any) -> SelectorsServer:
        server = SelectorsServer(app, "127.0.0.1", 0, **config)
        server.bind()
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield run
    for server, thread in running:
        server.stop()
        thread.join(10)
        assert not thread.is_alive(), "serve_forever did not return after stop()"


def connect(server: SelectorsServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_response(reader: Any) -> tuple[int, dict[str, str], bytes]:
    """One response with a content-length body from a binary file object."""
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def exchange(server: SelectorsServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(raw)
        return read_response(reader)


def test_get(start: Start) -> None:
    server = start()
    status, headers, body = exchange(
        server, b"GET /hello/w%C3%B6rld?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    assert status == 200
    assert body == "GET /hello/wörld?x=1\n".encode()
    assert headers["server"] == "tiercel"
    assert headers["date"].endswith(" GMT")
    assert headers["content-type"] == "application/octet-stream"


def test_hello_app(start: Start) -> None:
    server = start(hello_app)
    status, headers, body = exchange(server, b"GET /there HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, body) == (200, b"Hello, GET /there\n")
    assert headers["content-type"] == "text/plain"


def test_post_body_is_echoed(start: Start) -> None:
    server = start()
    payload = b"name=tiercel&kind=falcon"
    raw = b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (
        len(payload),
        payload,
    )
    status, headers, body = exchange(server, raw)
    assert status == 200
    assert body == b"POST /form\n" + payload
    assert headers["x-body-length"] == str(len(payload))


def test_chunked_body_larger_than_the_request_buffer(start: Start) -> None:
    """3 MiB (three times max_request_buffer_size), chunked, sent in pieces: no stall."""
    server = start()
    piece = bytes(range(256)) * 1024
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"PUT /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(12):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        status, headers, body = read_response(reader)
    assert status == 200
    assert headers["x-body-length"] == str(12 * len(piece))
    assert body == b"PUT /up\n" + piece * 12


def test_keep_alive_two_requests_on_one_socket(start: Start) -> None:
    server = start()
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(reader)[2] == b"GET /one\n"
        sock.sendall(b"POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        assert read_response(reader)[2] == b"POST /two\nabc"


def test_pipelined_requests_are_answered_in_order(start: Start) -> None:
    server = start()
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(
            b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /third HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert read_response(reader)[2] == b"POST /first\nhello"
        assert read_response(reader)[2] == b"GET /second\n"
        assert read_response(reader)[2] == b"GET /third\n"
        assert reader.read() == b""  # Connection: close honoured


def test_malformed_request_gets_400_and_close(start: Start) -> None:
    server = start()
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GARBAGE\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = read_response(reader)
        assert status == 400
        assert headers["connection"] == "close"
        assert reader.read() == b""  # closed; the request after the bad one is never served
    assert server.context.rejections["bad_request"] == 1


def test_app_failure_gives_500_and_the_connection_lives_on(start: Start) -> None:
    def failing_app(features: FeatureCollection) -> None:
        raise RuntimeError("boom")

    server = start(failing_app)
    with connect(server) as sock, sock.makefile("rb") as reader:
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, body = read_response(reader)
            assert (status, body) == (500, b"Internal Server Error\n")


def test_app_that_stops_halfway_gets_its_connection_reset(start: Start) -> None:
    def app(features: FeatureCollection) -> None:
        features[ResponseBodyFeature].write(b"partial")

    server = start(app)
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        rest = reader.read()  # chunked, and cut off before the last chunk
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"partial" in rest
    assert not rest.endswith(b"0\r\n\r\n")


def test_body_over_the_limit_gets_413(start: Start) -> None:
    server = start(limits=Limits(max_request_body_size=10))
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
        assert read_response(reader)[0] == 413
        assert reader.read() == b""


def test_server_features(start: Start) -> None:
    seen: dict[str, Any] = {}

    def app(features: FeatureCollection) -> None:
        seen["addresses"] = list(features[ServerAddressesFeature].addresses)
        seen["remote"] = features[ConnectionFeature].remote_address
        features[ResponseBodyFeature].complete(b"ok")

    server = start(app)
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(reader)[2] == b"ok"
        local_port = sock.getsockname()[1]
    assert seen["addresses"] == [f"http://127.0.0.1:{server.port}"]
    assert seen["remote"] == ("127.0.0.1", local_port)


def test_keep_alive_timeout_closes_idle_connection(start: Start) -> None:
    server = start(limits=Limits(keep_alive_timeout=0.3))
    with connect(server) as sock:
        began = time.monotonic()
        assert sock.recv(1) == b""
        assert 0.2 < time.monotonic() - began < 3


def test_request_headers_timeout_answers_408(start: Start) -> None:
    server = start(limits=Limits(request_headers_timeout=0.3))
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # the head never ends
        assert read_response(reader)[0] == 408
        assert reader.read() == b""


def test_large_response_to_a_slow_reader_arrives_whole(start: Start) -> None:
    blob = bytes(range(256)) * 40_000  # ~10 MB: far more than the socket buffers hold

    def app(features: FeatureCollection) -> None:
        features[ResponseBodyFeature].complete(blob)

    server = start(app)
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)  # let the server's buffer fill and the socket block
        assert read_response(reader)[2] == blob
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")  # and the connection lives on
        assert read_response(reader)[2] == blob


def test_pipelined_flood_from_a_client_that_does_not_read_is_paused(start: Start) -> None:
    """Over 64 KiB unsent, the server stops reading: the answers do not pile up in memory."""
    blob = b"y" * 1_000_000

    def app(features: FeatureCollection) -> None:
        features[ResponseBodyFeature].complete(blob)

    server = start(app)
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 40)
        time.sleep(0.5)
        (client,) = list(server._clients)  # a peek inside, for this test only
        assert len(client.out) < 4 * len(blob)
        for _ in range(40):
            assert read_response(reader)[2] == blob


def test_reader_too_slow_for_the_minimum_response_rate_is_dropped(start: Start) -> None:
    blob = b"x" * 20_000_000
    rate = DataRate(bytes_per_second=100_000_000, grace_period=0.3)

    def app(features: FeatureCollection) -> None:
        features[ResponseBodyFeature].complete(blob)

    server = start(app, limits=Limits(min_response_data_rate=rate))
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(1.5)  # read nothing: the write buffer stays above the high-water mark
        received = 0
        with contextlib.suppress(ConnectionResetError):  # a reset or an early EOF
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        assert received < len(blob)
    assert server.context.rejections["response_data_rate"] == 1


def test_connection_limit(start: Start) -> None:
    server = start(limits=Limits(max_concurrent_connections=1))
    with connect(server) as first, connect(server) as second:
        assert second.recv(1) == b""  # closed at once
        first.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert first.recv(100).startswith(b"HTTP/1.1 200 ")
    assert server.context.rejections["connection_limit"] == 1


def test_stop_closes_idle_connections_and_the_listener() -> None:
    server = SelectorsServer(echo_app, "127.0.0.1", 0)
    server.bind()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(reader)[0] == 200
        began = time.monotonic()
        server.stop()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - began < 1
        assert reader.read() == b""  # the idle keep-alive connection was closed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)
    assert server.context.open_connections == 0
    server.stop()  # a second stop is harmless


def test_stop_finishes_a_request_in_flight() -> None:
    server = SelectorsServer(echo_app, "127.0.0.1", 0)
    server.bind()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"POST /late HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(0.2)
        server.stop()
        time.sleep(0.2)
        assert thread.is_alive()  # waiting for the rest of the body
        sock.sendall(b"cd")
        status, headers, body = read_response(reader)
        assert (status, body) == (200, b"POST /late\nabcd")
        assert headers["connection"] == "close"
        thread.join(5)
        assert not thread.is_alive()


CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


@pytest.mark.peer("curl")
@needs_curl
def test_curl_get_and_keep_alive(start: Start) -> None:
    server = start()
    url = f"http://127.0.0.1:{server.port}"
    result = subprocess.run(
        [CURL, "-sS", "-v", f"{url}/a?b=c", f"{url}/second"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == b"GET /a?b=c\nGET /second\n"
    assert b"Re-using existing connection" in result.stderr or b"Reusing" in result.stderr


@pytest.mark.peer("curl")
@needs_curl
def test_curl_upload_with_expect_100_continue(start: Start, tmp_path: Any) -> None:
    server = start()
    payload = bytes(range(256)) * 8192  # 2 MiB: curl asks for 100 Continue first
    upload = tmp_path / "payload.bin"
    upload.write_bytes(payload)
    result = subprocess.run(
        [
            CURL,
            "-sS",
            "-v",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            f"@{upload}",
            f"http://127.0.0.1:{server.port}/upload",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == b"POST /upload\n" + payload
    assert b"HTTP/1.1 100 Continue" in result.stderr


def test_http2_streams_on_one_connection(start: Start) -> None:
    """The engine speaks h2c (prior knowledge) on the same port; the server does not notice."""
    import h2.config
    import h2.connection
    import h2.events

    server = start()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    with connect(server) as sock:
        for stream_id, method, body in ((1, "POST", b"x" * 50_000), (3, "GET", b"")):
            headers = [(":method", method), (":path", f"/s{stream_id}"), (":scheme", "http")]
            client.send_headers(stream_id, [*headers, (":authority", "t")], end_stream=not body)
            for offset in range(0, len(body), 16_384):  # within the initial window of 64 KiB
                end = offset + 16_384 >= len(body)
                client.send_data(stream_id, body[offset : offset + 16_384], end_stream=end)
        sock.sendall(client.data_to_send())
        bodies: dict[int, bytes] = {1: b"", 3: b""}
        ended: set[int] = set()
        while ended != {1, 3}:
            data = sock.recv(65_536)
            assert data, "the server closed the connection"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
            sock.sendall(client.data_to_send())
    assert bodies == {1: b"POST /s1\n" + b"x" * 50_000, 3: b"GET /s3\n"}


@pytest.mark.peer("curl")
@needs_curl
@pytest.mark.parametrize(("how", "size"), [("--http2-prior-knowledge", 1 << 20), ("--http2", 8192)])
def test_curl_http2(start: Start, tmp_path: Any, how: str, size: int) -> None:
    """h2c by prior knowledge, and by Upgrade from HTTP/1.1.

    The upgrade case keeps the answer small: curl 7.88 fails ("connection buffer size is too
    small to store data following HTTP Upgrade response header") when more than 32 KiB of
    HTTP/2 frames arrive with the 101 in one read, whichever adapter drives the engine.
    """
    server = start()
    upload = tmp_path / "payload.bin"
    upload.write_bytes(payload := bytes(range(256)) * (size // 256))
    result = subprocess.run(
        [
            *(CURL, "-sS", how, "--data-binary", f"@{upload}", "-w", "\\n%{http_version}"),
            f"http://127.0.0.1:{server.port}/h2",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )
    # (one URL per curl: curl 7.88 fails to reuse a prior-knowledge connection, curl#10634)
    assert result.stdout == b"POST /h2\n" + payload + b"\n2"
