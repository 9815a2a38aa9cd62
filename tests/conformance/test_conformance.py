"""The conformance suite: every adapter passes all of it (README.md lists the genuine skips).

Clients are raw sockets wherever framing matters (pipelining, trickled headers, half bodies),
and real outside programs for HTTP/2 (curl, h2load).
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from conformance_apps import CHUNK, MB, pattern, sha256
from conformance_harness import AdapterServer, Certificates
from support import require_peer
from tiercel.core.config import Limits


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, raw_head: bytes) -> None:
        self.status, self.headers, self.body, self.raw_head = status, headers, body, raw_head

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


class Reader:
    """Reads HTTP/1.1 responses off a socket, one at a time (so pipelined answers separate)."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _take_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(f"closed in the middle of a line: {self.buffer!r}")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if not self._fill():
                raise EOFError(f"closed {count - len(self.buffer)} bytes short")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def at_eof(self, timeout: float) -> bool:
        """True when the server closes the connection within ``timeout`` with nothing more."""
        self.sock.settimeout(timeout)
        try:
            return not self.buffer and not self._fill()
        except ConnectionResetError:
            return True

    def response(self, timeout: float = 10.0) -> Response:
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(f"closed before a response head: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 "), lines[0]
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while size := int(self._take_line().split(b";")[0], 16):
                parts.append(self._take(size))
                assert self._take(2) == b"\r\n"
            while self._take_line():  # trailers, then the empty line
                pass
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:  # delimited by the close
            while self._fill():
                pass
            body, self.buffer = self.buffer, b""
        return Response(status, headers, body, head)


def request(
    method: str, target: str, body: bytes = b"", *headers: str, close: bool = False
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: conformance", *headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def exchange(server: AdapterServer, raw: bytes, timeout: float = 10.0) -> Response:
    with server.connect(timeout) as sock:
        sock.sendall(raw)
        return Reader(sock).response(timeout)


def assert_healthy(server: AdapterServer) -> None:
    """A fresh connection still gets an answer."""
    answer = exchange(server, request("POST", "/echo", b"still here", close=True))
    assert (answer.status, answer.body) == (200, b"POST /echo 10\nstill here")


def small_receive_buffer_socket(server: AdapterServer) -> socket.socket:
    """A client socket with a small receive buffer, so the kernel hides little of the server's
    back-pressure."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", server.port))
    return sock


def skip_unless(server: AdapterServer, capability: str, what: str) -> None:
    if capability not in server.supports:
        pytest.skip(f"{server.adapter} does not support {what}")


# -- connection reuse ------------------------------------------------------------------------


def test_keep_alive_two_requests_on_one_socket(adapter_server: AdapterServer) -> None:
    with adapter_server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(request("GET", "/echo"))
        first = reader.response()
        assert (first.status, first.body) == (200, b"GET /echo 0\n")
        assert first.headers.get("connection", "").lower() != "close"
        sock.sendall(request("POST", "/echo", b"abc"))
        second = reader.response()
        assert (second.status, second.body) == (200, b"POST /echo 3\nabc")


def test_pipelining_three_requests_in_one_send(adapter_server: AdapterServer) -> None:
    with adapter_server.connect() as sock:
        sock.sendall(
            request("POST", "/echo", b"hello")
            + request("GET", "/stream?n=2")
            + request("GET", "/echo?third", close=True)
        )
        reader = Reader(sock)
        answers = [reader.response() for _ in range(3)]
        assert reader.at_eof(5)
    assert answers[0].body == b"POST /echo 5\nhello"
    assert answers[1].body == b"A" * CHUNK + b"B" * CHUNK
    assert answers[2].body == b"GET /echo 0\n"
    assert [a.status for a in answers] == [200, 200, 200]


# -- chunked bodies --------------------------------------------------------------------------


def test_chunked_request_body(adapter_server: AdapterServer) -> None:
    pieces = [b"x" * 10, b"y" * 70_000, b"z"]
    with adapter_server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.02)
        sock.sendall(b"0\r\n\r\n")
        answer = Reader(sock).response()
    body = b"".join(pieces)
    assert answer.status == 200
    assert answer.body == f"POST /echo {len(body)}\n".encode() + body


def test_chunked_response(adapter_server: AdapterServer) -> None:
    answer = exchange(adapter_server, request("GET", "/stream?n=5"))
    assert answer.status == 200
    assert answer.chunked, answer.raw_head
    assert "content-length" not in answer.headers
    assert answer.body == b"".join(bytes([65 + i]) * CHUNK for i in range(5))


def test_chunked_both_ways_on_one_connection(adapter_server: AdapterServer) -> None:
    with adapter_server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"3\r\nabc\r\n0\r\n\r\n" + request("GET", "/stream?n=1"))
        upload = reader.response()
        stream = reader.response()
    assert upload.body == f"3 {sha256(b'abc')}".encode()
    assert stream.chunked and stream.body == b"A" * CHUNK


# -- large bodies and back-pressure ----------------------------------------------------------

BIG_MB = 20


def test_upload_20mb_sent_slowly(adapter_server: AdapterServer) -> None:
    size = BIG_MB * MB
    data = pattern(size)
    with adapter_server.connect(30) as sock:
        sock.sendall(f"POST /upload HTTP/1.1\r\nHost: c\r\nContent-Length: {size}\r\n\r\n".encode())
        for offset in range(0, size, MB):
            sock.sendall(data[offset : offset + MB])
            time.sleep(0.02)  # a slow client: the body arrives over ~0.5 s in pieces
        answer = Reader(sock).response(30)
    assert answer.status == 200
    assert answer.body == f"{size} {sha256(data)}".encode()


def test_upload_back_pressure_while_the_app_does_not_read(
    adapter_server: AdapterServer,
) -> None:
    """While the app is not reading the body, the server must stop reading the socket: the
    client cannot push 20 MB into the server."""
    skip_unless(adapter_server, "backpressure", "request back-pressure (input)")
    size = BIG_MB * MB
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.connect(("127.0.0.1", adapter_server.port))
    with sock:
        # /slow does not read its body: it sleeps 2 s, answers, and leaves the body unread.
        sock.sendall(
            f"POST /slow?s=2 HTTP/1.1\r\nHost: c\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        assert adapter_server.progress.slow_started.wait(5)
        sock.setblocking(False)
        piece, accepted, deadline = b"u" * CHUNK, 0, time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                accepted += sock.send(piece)
            except BlockingIOError:
                time.sleep(0.01)
        assert accepted < 10 * MB, f"the server took {accepted} bytes nobody was reading"
    time.sleep(0.3)
    assert_healthy(adapter_server)


def _read_head(sock: socket.socket, reader: Reader) -> dict[str, str]:
    while b"\r\n\r\n" not in reader.buffer:
        assert reader._fill(), "closed before the head"
    head, _, reader.buffer = reader.buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 200"), lines[0]
    return {
        k.strip().lower(): v.strip()
        for k, _, v in (line.decode("latin-1").partition(":") for line in lines[1:])
    }


def test_download_20mb_to_a_slow_reader(adapter_server: AdapterServer) -> None:
    """The whole 20 MB arrives intact at a client that reads in small, slow pieces."""
    size = BIG_MB * MB
    with small_receive_buffer_socket(adapter_server) as sock:
        sock.sendall(request("GET", f"/big?mb={BIG_MB}"))
        reader = Reader(sock)
        headers = _read_head(sock, reader)
        assert int(headers["content-length"]) == size
        digest, total = hashlib.sha256(reader.buffer), len(reader.buffer)
        reader.buffer = b""
        pauses = 0
        while total < size:
            data = sock.recv(64 * 1024)
            assert data, f"closed after {total} of {size} bytes"
            digest.update(data)
            total += len(data)
            if total // MB > pauses:  # a pause every MiB: about 0.4 s in all
                pauses += 1
                time.sleep(0.02)
    assert total == size
    assert digest.hexdigest() == sha256(pattern(size))


def test_download_back_pressure_bounds_what_the_server_holds(
    adapter_server: AdapterServer,
) -> None:
    """While the client does not read, the app's writes must wait: the server must not take
    (buffer) the whole 20 MB body from the app."""
    skip_unless(adapter_server, "backpressure", "response back-pressure to the app")
    size = BIG_MB * MB
    progress = adapter_server.progress
    with small_receive_buffer_socket(adapter_server) as sock:
        sock.sendall(request("GET", f"/big?mb={BIG_MB}"))
        reader = Reader(sock)
        _read_head(sock, reader)
        time.sleep(1.0)  # not reading: the socket buffers fill, then the app must wait
        held = progress.big_sent
        time.sleep(0.5)
        assert progress.big_sent == held, "the app kept writing while the client read nothing"
        assert held < 8 * MB, f"the app handed over {held} bytes to a client that read ~0"
        digest, total = hashlib.sha256(reader.buffer), len(reader.buffer)
        reader.buffer = b""
        while total < size:
            data = sock.recv(256 * 1024)
            assert data, f"closed after {total} of {size} bytes"
            digest.update(data)
            total += len(data)
    assert digest.hexdigest() == sha256(pattern(size))


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.server_options(limits=Limits(max_request_body_size=1000))
def test_413_request_body_too_large(adapter_server: AdapterServer) -> None:
    answer = exchange(adapter_server, request("POST", "/echo", b"x" * 5000))
    assert answer.status == 413
    small = exchange(adapter_server, request("POST", "/echo", b"x" * 1000))
    assert small.status == 200


@pytest.mark.server_options(limits=Limits(max_request_body_size=1000))
def test_413_chunked_request_body_too_large(adapter_server: AdapterServer) -> None:
    with adapter_server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (3000, b"y" * 3000))
        answer = Reader(sock).response()
    assert answer.status == 413


def test_431_too_many_headers(adapter_server: AdapterServer) -> None:
    headers = [f"X-Header-{n}: {n}" for n in range(101)]
    answer = exchange(adapter_server, request("GET", "/echo", b"", *headers))
    assert answer.status == 431
    assert_healthy(adapter_server)


def test_414_request_line_too_long(adapter_server: AdapterServer) -> None:
    answer = exchange(adapter_server, request("GET", "/echo?" + "a" * 9000))
    assert answer.status == 414
    assert_healthy(adapter_server)


# -- timeouts --------------------------------------------------------------------------------


@pytest.mark.server_options(limits=Limits(request_headers_timeout=0.5))
def test_408_request_headers_trickled_past_the_timeout(adapter_server: AdapterServer) -> None:
    started = time.monotonic()
    with adapter_server.connect() as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: c\r\n")
        answer = None
        for n in range(20):  # a header every 0.2 s: 4 s in all, never finishing the head
            time.sleep(0.2)
            try:
                sock.sendall(f"X-Trickle-{n}: y\r\n".encode())
            except OSError:  # the server closed already
                break
            sock.settimeout(0.01)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            reader = Reader(sock)
            reader.buffer = data
            answer = reader.response() if data else None
            break
        if answer is None:
            answer = Reader(sock).response(5)
    elapsed = time.monotonic() - started
    assert answer.status == 408
    assert elapsed < 3.0, f"the 0.5 s header timeout fired after {elapsed:.2f} s"


@pytest.mark.server_options(limits=Limits(keep_alive_timeout=0.5))
def test_keep_alive_timeout_closes_an_idle_connection(adapter_server: AdapterServer) -> None:
    with adapter_server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(request("GET", "/echo"))
        assert reader.response().status == 200
        idle_from = time.monotonic()
        assert reader.at_eof(5), "the idle connection was not closed"
        waited = time.monotonic() - idle_from
    assert 0.3 < waited < 3.0, f"closed after {waited:.2f} s idle (keep_alive_timeout=0.5)"


# -- TLS -------------------------------------------------------------------------------------


@pytest.mark.server_options(tls=True)
def test_tls_https_get_and_post(adapter_server: AdapterServer, certificates: Certificates) -> None:
    skip_unless(adapter_server, "tls", "TLS")
    assert adapter_server.scheme == "https" and adapter_server.url.startswith("https://")
    context = certificates.client_context(["http/1.1"])
    with (
        adapter_server.connect() as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
        reader = Reader(tls)
        tls.sendall(request("GET", "/echo"))
        assert reader.response().body == b"GET /echo 0\n"
        tls.sendall(request("POST", "/upload", pattern(300_000)))
        assert reader.response().body == f"300000 {sha256(pattern(300_000))}".encode()
        tls.sendall(request("GET", "/stream?n=3", close=True))
        streamed = reader.response()
        assert streamed.chunked and len(streamed.body) == 3 * CHUNK


@pytest.mark.server_options(tls=True)
def test_tls_with_httpx(adapter_server: AdapterServer, certificates: Certificates) -> None:
    skip_unless(adapter_server, "tls", "TLS")
    import httpx

    with httpx.Client(verify=ssl.create_default_context(cafile=str(certificates.ca_pem))) as client:
        answer = client.post(f"{adapter_server.url}/echo", content=b"over tls")
        assert (answer.status_code, answer.content) == (200, b"POST /echo 8\nover tls")
        big = client.get(f"{adapter_server.url}/big?mb=2")
        assert sha256(big.content) == sha256(pattern(2 * MB))


# -- HTTP/2 ----------------------------------------------------------------------------------


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [require_peer("curl"), "-sS", "--max-time", "20", *args],
        capture_output=True,
        timeout=30,
        check=False,
    )


@pytest.mark.peer("curl")
def test_h2c_prior_knowledge_with_curl(adapter_server: AdapterServer, tmp_path) -> None:
    skip_unless(adapter_server, "h2", "HTTP/2")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern(200_000))
    url = adapter_server.url
    # One request per curl run: curl 7.88 itself fails ("Error in the HTTP2 framing layer")
    # when it reuses a prior-knowledge connection, against any server (hypercorn too).
    runs = [
        (["--http2-prior-knowledge", f"{url}/echo"], b"GET /echo 0\n"),
        (
            ["--http2-prior-knowledge", "--data-binary", f"@{upload}", f"{url}/upload"],
            f"200000 {sha256(pattern(200_000))}".encode(),
        ),
        (
            ["--http2-prior-knowledge", f"{url}/stream?n=3"],
            b"A" * CHUNK + b"B" * CHUNK + b"C" * CHUNK,
        ),
    ]
    for args, expected in runs:
        result = _curl("-w", "\n%{http_version} %{http_code}", *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected + b"\n2 200"


@pytest.mark.peer("curl")
@pytest.mark.server_options(tls=True)
def test_h2_over_tls_with_curl(adapter_server: AdapterServer, certificates: Certificates) -> None:
    skip_unless(adapter_server, "tls", "TLS")
    skip_unless(adapter_server, "h2", "HTTP/2")
    result = _curl(
        "--http2", "--cacert", str(certificates.ca_pem),
        "-w", "\n%{http_version} %{http_code}",
        f"{adapter_server.url}/echo",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"GET /echo 0\n\n2 200"


@pytest.mark.peer("h2load")
def test_h2load(adapter_server: AdapterServer) -> None:
    skip_unless(adapter_server, "h2", "HTTP/2")
    result = subprocess.run(
        [require_peer("h2load"), "-n", "300", "-c", "3", "-m", "10", f"{adapter_server.url}/echo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = result.stdout
    assert "Application protocol: h2c" in out, out + result.stderr
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    assert counts, out
    assert counts.groups() == ("300", "300", "300", "300", "0", "0", "0"), out
    codes = re.search(r"status codes: (\d+) 2xx", out)
    assert codes and codes.group(1) == "300", out


# -- clients that leave ----------------------------------------------------------------------


def test_client_disconnect_mid_request(adapter_server: AdapterServer) -> None:
    for path in ("/upload", "/echo"):
        with adapter_server.connect() as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: c\r\nContent-Length: 200000\r\n\r\n".encode()
            )
            sock.sendall(b"h" * 100_000)
            time.sleep(0.2)
        time.sleep(0.2)
        assert_healthy(adapter_server)
    # And on a kept-alive connection that served a request first.
    with adapter_server.connect() as sock:
        sock.sendall(request("GET", "/echo"))
        assert Reader(sock).response().status == 200
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: c\r\nContent-Length: 5000\r\n\r\nhalf")
    time.sleep(0.2)
    assert_healthy(adapter_server)
    left = adapter_server.progress.wait_all_ended()
    assert not left, f"handlers still waiting for bodies whose client left: {left}"


def test_client_disconnect_mid_response(adapter_server: AdapterServer) -> None:
    for abrupt in (False, True):
        with small_receive_buffer_socket(adapter_server) as sock:
            sock.sendall(request("GET", f"/big?mb={BIG_MB}"))
            received = 0
            while received < 300_000:
                data = sock.recv(65536)
                assert data
                received += len(data)
            if abrupt:  # a reset rather than a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.3)
        assert_healthy(adapter_server)
    with adapter_server.connect() as sock:  # the chunked kind too
        sock.sendall(request("GET", "/stream?n=200"))
        assert sock.recv(65536)
    time.sleep(0.3)
    assert_healthy(adapter_server)
    left = adapter_server.progress.wait_all_ended()
    assert not left, f"handlers still writing to clients that left: {left}"
    # The server stopped taking the 20 MB bodies from the app soon after the clients left.
    if "backpressure" in adapter_server.supports:
        assert adapter_server.progress.big_sent < 2 * BIG_MB * MB


def test_client_reset_during_an_endless_stream(adapter_server: AdapterServer) -> None:
    """A client resets while the app streams without end (think server-sent events): the
    app's writes must stop (send raises, or waits), and the server must keep serving."""
    skip_unless(adapter_server, "streaming", "streaming apps (feature apps write, then return)")
    progress = adapter_server.progress
    for attempt in range(3):  # the race between the reset and the next write varies
        with small_receive_buffer_socket(adapter_server) as sock:
            sock.sendall(request("GET", "/forever?s=5"))
            received = 0
            while received < 300_000:
                data = sock.recv(65536)
                assert data
                received += len(data)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset_at, chunks_then = time.monotonic(), progress.forever_chunks
        answer = exchange(adapter_server, request("GET", "/echo", close=True), timeout=2.0)
        assert answer.status == 200, f"attempt {attempt}"
        left = progress.wait_all_ended(2.0)
        assert not left, (
            f"attempt {attempt}: /forever still running {time.monotonic() - reset_at:.1f} s "
            f"after the reset; it wrote {progress.forever_chunks - chunks_then} more chunks"
        )


# -- graceful shutdown -----------------------------------------------------------------------


@pytest.mark.server_options(shutdown_timeout=10.0)
def test_graceful_shutdown_with_a_request_in_flight(adapter_server: AdapterServer) -> None:
    port = adapter_server.port
    with adapter_server.connect() as sock:
        sock.sendall(request("GET", "/slow?s=1.5"))
        assert adapter_server.progress.slow_started.wait(5)
        started = time.monotonic()
        stopper = adapter_server.stop_in_background()
        time.sleep(0.3)
        assert stopper.is_alive(), "stop() returned with a request in flight"
        reader = Reader(sock)
        answer = reader.response(10)
        assert (answer.status, answer.body) == (200, b"done")
        assert reader.at_eof(5), "the connection stayed open after the last response"
    stopper.join(15)
    assert not stopper.is_alive(), "stop() did not return after the request finished"
    assert time.monotonic() - started < 8
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.server_options(shutdown_timeout=10.0)
def test_graceful_shutdown_closes_idle_keep_alive_connections(
    adapter_server: AdapterServer,
) -> None:
    with adapter_server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(request("GET", "/echo"))
        assert reader.response().status == 200
        started = time.monotonic()
        adapter_server.stop()
        assert time.monotonic() - started < 3, "stop() waited on an idle connection"
        assert reader.at_eof(3)


def _h2_frames(sock: socket.socket, buffer: bytearray) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame the server sends, until it closes."""
    while True:
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            kind, flags = buffer[3], buffer[4]
            stream_id = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[9 : 9 + length])
            del buffer[: 9 + length]
            yield kind, flags, stream_id, payload
        data = sock.recv(65536)
        if not data:
            return
        buffer += data


def test_graceful_shutdown_with_an_http2_stream_in_flight(adapter_server: AdapterServer) -> None:
    """HTTP/2: stop() sends GOAWAY, lets the stream in flight finish, then closes. The frames
    are read raw: h2's client state machine refuses frames after a GOAWAY."""
    skip_unless(adapter_server, "h2", "HTTP/2")
    import h2.config
    import h2.connection
    import hpack

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1,
        [(":method", "GET"), (":path", "/slow?s=1.5"), (":scheme", "http"),
         (":authority", "conformance")],
        end_stream=True,
    )  # fmt: skip
    decoder = hpack.Decoder()
    status, body, goaway, ended = None, b"", None, False
    with adapter_server.connect() as sock:
        sock.sendall(client.data_to_send())
        assert adapter_server.progress.slow_started.wait(5)
        stopper = adapter_server.stop_in_background()
        sock.settimeout(10)
        for kind, flags, stream_id, payload in _h2_frames(sock, bytearray()):
            if kind == 4 and not flags & 1:  # SETTINGS: acknowledge
                sock.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
            elif kind == 7:  # GOAWAY
                goaway = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            elif kind == 1 and stream_id == 1:  # HEADERS (small: no padding, no CONTINUATION)
                status = dict(decoder.decode(payload)).get(":status")
            elif kind == 0 and stream_id == 1:
                body += payload
            elif kind == 3 and stream_id == 1:
                raise AssertionError(f"the stream in flight was reset: {payload.hex()}")
            if stream_id == 1 and flags & 1 and kind in (0, 1):  # END_STREAM
                ended = True
                break
        assert (status, body, ended) == ("200", b"done", True)
        assert goaway is None or goaway >= 1, f"GOAWAY last_stream_id={goaway} drops stream 1"
    stopper.join(15)
    assert not stopper.is_alive(), "stop() did not return after the stream finished"


def test_lifespan_startup_and_shutdown(adapter_server: AdapterServer) -> None:
    skip_unless(adapter_server, "lifespan", "the ASGI lifespan protocol")
    assert adapter_server.progress.lifespan == ["startup"]
    assert_healthy(adapter_server)
    adapter_server.stop()
    assert adapter_server.progress.lifespan == ["startup", "shutdown"]
