"""HTTP.sys request/response marshalling on Linux CPython, against a fake kernel.

There is no httpapi.dll here, so ``FakeKernel`` lays out an HTTP_REQUEST_V2 the way HTTP.sys
does: the structure first, then everything it points to, in one receive buffer. The structures
use fixed-width integers, so their layout is the Windows x64 one here too (checked below).
"""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest
from httpsys_harness import FakeKernel
from tiercel.adapters.httpsys import binding as b
from tiercel.adapters.httpsys.marshal import (
    EntityChunks,
    ResponseBuffers,
    kernel_cache_seconds,
    parse_request,
    read_chunks,
    read_response,
)
from tiercel.adapters.httpsys.options import HttpSysOptions, parse_url_prefixes
from tiercel.core.errors import ConfigError
from tiercel.core.http1_chunked import LAST_CHUNK, chunk_frame

HOST, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT = 28, 11, 12, 40


def test_the_structures_have_the_windows_x64_layout():
    assert b.layout_problems() == []
    assert ctypes.sizeof(b.HTTP_RESPONSE_V2) == 568
    assert b.HTTP_REQUEST_V2.Headers.offset == 120  # fixed-width fields, as on Windows
    assert b.HTTP_REQUEST_V2.BytesReceived.offset == 808


def test_a_request_with_known_and_unknown_headers():
    kernel = FakeKernel()
    address = kernel.receive(
        "POST",
        b"/a%20b/%E2%82%AC?x=1&y=2",
        known={HOST: b"example.com:8080", CONTENT_TYPE: b"text/plain", CONTENT_LENGTH: b"11"},
        unknown=[(b"X-Trace", b"abc"), (b"x-empty", b"")],
        body=[b"hello ", b"world"],
    )
    request = parse_request(address)
    assert request.method == "POST"
    assert request.request_id == 0xABCDEF
    assert request.connection_id == 77
    assert request.url_context == 3
    assert request.http_version == "1.1"
    assert request.scheme == "http"
    assert request.raw_target == b"/a%20b/%E2%82%AC?x=1&y=2"
    assert request.raw_path == b"/a%20b/%E2%82%AC"
    assert request.path == "/a b/\u20ac"
    assert request.query_string == b"x=1&y=2"
    assert request.headers == [
        (b"content-length", b"11"),
        (b"content-type", b"text/plain"),
        (b"host", b"example.com:8080"),
        (b"x-trace", b"abc"),
        (b"x-empty", b""),
    ]
    assert request.content_length == 11
    assert request.body == b"hello world"
    assert not request.more_body
    assert request.remote_address == ("192.0.2.7", 50123)
    assert request.local_address == ("127.0.0.1", 8080)
    assert request.authentication is None


def test_unknown_verbs_versions_ipv6_and_https():
    kernel = FakeKernel()
    address = kernel.receive(
        "PURGE",
        b"http://example.com/cache/item?v=2",
        version=(1, 0),
        remote=("2001:db8::5", 443),
        local=("::1", 8443),
        ssl=True,
        more_body=True,
    )
    request = parse_request(address)
    assert request.method == "PURGE"
    assert request.http_version == "1.0"
    assert request.raw_path == b"/cache/item"  # absolute-form: the path only
    assert request.query_string == b"v=2"
    assert request.scheme == "https"
    assert request.more_body
    assert request.remote_address == ("2001:db8::5", 443)
    assert request.local_address == ("::1", 8443)


def test_http2_requests_and_the_cooked_url_scheme():
    kernel = FakeKernel()
    address = kernel.receive(
        "GET", b"/", version=(2, 0), flags=b.HTTP_REQUEST_FLAG_HTTP2, full_url="https://h/"
    )
    request = parse_request(address)
    assert request.http_version == "2"
    assert request.scheme == "https"


def test_an_authenticated_request_names_its_user():
    names: list[int] = []

    def token_user(token: int) -> str:
        names.append(token)
        return "CONTOSO\\alice"

    kernel = FakeKernel()
    address = kernel.receive("GET", b"/", auth=(b.HttpAuthStatusSuccess, 4, 0x1234))
    request = parse_request(address, token_user)
    assert request.authentication is not None
    assert request.authentication.scheme == "Negotiate"
    assert request.authentication.user == "CONTOSO\\alice"
    assert names == [0x1234]

    failed = FakeKernel().receive("GET", b"/", auth=(2, 3, 0))  # HttpAuthStatusFailure, NTLM
    assert parse_request(failed, token_user).authentication is None


def test_a_response_round_trips_through_its_structures():
    body = [b"first ", b"", b"second"]
    headers = [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"x-custom", b"yes"),
        (b"etag", b'"v1"'),
    ]
    buffers = ResponseBuffers(201, None, headers, body)
    status, reason, sent_headers, sent_body = read_response(buffers.address)
    assert status == 201
    assert reason == b"Created"
    assert sent_body == b"first second"
    assert buffers.chunk_count == 2  # empty pieces are not chunks
    response = buffers.response
    assert response.Headers.KnownHeaders[12].RawValueLength == len(b"text/plain")  # known
    assert not response.Headers.KnownHeaders[27].pRawValue  # Set-Cookie twice: unknown
    assert sorted(sent_headers) == sorted(headers)
    assert buffers.cache_policy is None


def test_response_body_chunks_point_at_the_apps_bytes():
    data = b"x" * 100_000
    buffers = EntityChunks([data])
    chunk = b.HTTP_DATA_CHUNK.from_address(buffers.chunks_address)
    assert chunk.FromMemory.pBuffer == ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert read_chunks(buffers.chunk_count, buffers.chunks_address) == data


def test_reason_phrases_and_cache_policy():
    buffers = ResponseBuffers(299, b"Fine", [], [], cache_seconds=60)
    status, reason, _, _ = read_response(buffers.address)
    assert (status, reason) == (299, b"Fine")
    assert buffers.cache_policy is not None
    assert buffers.cache_policy.Policy == b.HttpCachePolicyTimeToLive
    assert buffers.cache_policy.SecondsToLive == 60


@pytest.mark.parametrize(
    ("method", "status", "headers", "expected"),
    [
        ("GET", 200, [(b"cache-control", b"public, max-age=60")], 60),
        ("GET", 200, [(b"cache-control", b"public, max-age=60, s-maxage=5")], 5),
        ("GET", 200, [(b"Cache-Control", b"max-age=60"), (b"cache-control", b"public")], 60),
        ("GET", 200, [(b"cache-control", b"max-age=60")], None),  # not public
        ("GET", 200, [(b"cache-control", b"public")], None),  # no lifetime
        ("GET", 200, [(b"cache-control", b"public, max-age=0")], None),
        ("GET", 200, [(b"cache-control", b"public, no-store, max-age=9")], None),
        ("GET", 200, [(b"cache-control", b"public, max-age=9"), (b"set-cookie", b"a=1")], None),
        ("GET", 200, [(b"cache-control", b"public, max-age=9"), (b"vary", b"accept")], None),
        ("GET", 200, [(b"cache-control", b"public, max-age=9"), (b"pragma", b"x")], None),
        ("POST", 200, [(b"cache-control", b"public, max-age=9")], None),
        ("GET", 404, [(b"cache-control", b"public, max-age=9")], None),
        # Expires, against the response's Date (the engine's response cache has the same rules)
        (
            "GET",
            200,
            [
                (b"date", b"Tue, 24 Nov 2026 06:00:00 GMT"),
                (b"expires", b"Tue, 24 Nov 2026 06:00:30 GMT"),
            ],
            30,
        ),
        ("GET", 200, [(b"expires", b"0")], None),  # an invalid date means already expired
        ("GET", 200, [(b"cache-control", b"public, private, max-age=9")], None),
    ],
)
def test_the_kernel_cache_rules(method, status, headers, expected):
    wall_time = 1_795_500_000.0  # used only where a response has Expires but no Date
    assert kernel_cache_seconds(method, status, headers, wall_time) == expected


def test_chunked_framing_of_a_streamed_body():
    assert b"".join(chunk_frame(b"hello")) == b"5\r\nhello\r\n"
    assert chunk_frame(b"") == []
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_options_are_checked_with_one_line_errors():
    assert HttpSysOptions().accepts >= 5
    options = HttpSysOptions(authentication_schemes=("Negotiate", " ntlm "), allow_anonymous=False)
    assert options.authentication_schemes == ("negotiate", "ntlm")
    assert options.auth_scheme_flags == b.HTTP_AUTH_ENABLE_NEGOTIATE | b.HTTP_AUTH_ENABLE_NTLM
    assert options.challenges() == [b"Negotiate", b"NTLM"]
    bad = [
        ({"max_connections": 0}, "max connections"),
        ({"request_queue_limit": 0}, "request queue limit"),
        ({"request_queue_name": "x" * 261}, "260"),
        ({"request_queue_mode": "join"}, "createorattach"),
        ({"request_queue_mode": "attach"}, "needs a request queue name"),
        ({"http503_verbosity": "loud"}, "verbosity"),
        ({"authentication_schemes": ("digest",)}, "unknown authentication scheme"),
        ({"allow_anonymous": False}, "needs an authentication scheme"),
    ]
    for kwargs, words in bad:
        with pytest.raises(ConfigError, match=words):
            HttpSysOptions(**kwargs)


def test_url_prefixes_come_from_the_shared_parser():
    prefixes = parse_url_prefixes("http://+:8080/;https://example.com/api")
    assert [p.canonical for p in prefixes] == [
        "http://+:8080/",
        "https://example.com:443/api/",
    ]
    with pytest.raises(ConfigError, match="registered twice"):
        parse_url_prefixes("http://+:8080/;http://+:8080")
    with pytest.raises(ConfigError, match="no URL prefix"):
        parse_url_prefixes(" ; ")


@pytest.mark.skipif(sys.platform == "win32", reason="this is the platform without httpapi.dll")
def test_the_command_says_in_one_line_that_there_is_no_httpapi_dll():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiercel.apps.cli",
            "--adapter",
            "httpsys",
            "--urls",
            "http://+:8080/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "httpapi.dll" in lines[0]
    assert "--adapter asyncio" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--httpsys-auth", "ntlm"], "--httpsys-auth needs --adapter httpsys"),
        (["--adapter", "httpsys", "--urls", "http://+:0/"], "fixed port"),
        (["--adapter", "httpsys", "--httpsys-queue-mode", "attach"], "needs a request queue name"),
    ],
)
def test_bad_httpsys_options_exit_2_with_one_line(args, words):
    done = subprocess.run(
        [sys.executable, "-m", "tiercel.apps.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert words in done.stderr
