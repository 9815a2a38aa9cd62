"""The HTTP.sys adapter for real: the Windows CPython runs ``tiercel --adapter httpsys`` against
httpapi.dll (Wine 8's on Linux, set up by .ci/wine-stage), and real clients on this side talk
to it over 127.0.0.1. What Wine 8 lacks is skipped under Wine, with the reason."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest
from httpsys_harness import UNDER_WINE, HttpSysProcess, run_windows_python, skip_under_wine
from support import require_peer

pytestmark = [pytest.mark.peer("wine"), pytest.mark.timeout(300)]


def request(
    port: int,
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    # Every request has a timeout: a request Wine's http.sys cannot route hangs instead of 404.
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request(method, target, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response.status, response.getheaders(), data


def header(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name]


def test_structures_have_the_x64_layout_in_the_windows_interpreter(windows_python):
    output = run_windows_python(
        windows_python,
        "-c",
        "import tiercel.adapters.httpsys.binding as b; "
        "print('problems', b.layout_problems()); print('wine', b.running_under_wine()); "
        "api = b.HttpApi.load(); print('entity body', api.supports_entity_body)",
    )
    assert "problems []" in output
    assert f"wine {UNDER_WINE}" in output
    assert f"entity body {not UNDER_WINE}" in output


def test_get_and_post_reach_the_app_as_asgi(httpsys):
    server = httpsys("httpsys_apps:echo")
    status, headers, data = request(server.port, "GET", "/a%20b/c?x=1&y=%20")
    assert status == 200
    assert header(headers, "content-type") == ["application/json"]
    assert header(headers, "x-app") == ["echo"]
    assert header(headers, "server") == ["tiercel"]
    assert header(headers, "content-length") == [str(len(data))]
    seen = json.loads(data)
    assert seen["method"] == "GET"
    assert seen["path"] == "/a b/c"
    assert seen["raw_path"] == "/a%20b/c"
    assert seen["query_string"] == "x=1&y=%20"
    assert seen["http_version"] == "1.1"
    assert seen["scheme"] == "http"
    assert seen["root_path"] == ""
    assert seen["client"][0] == "127.0.0.1"
    assert seen["server"] == ["127.0.0.1", server.port]
    assert ["host", f"127.0.0.1:{server.port}"] in seen["headers"]
    assert seen["addresses"] == {"addresses": [f"http://127.0.0.1:{server.port}/"]}

    body = os.urandom(3000)
    status, _, data = request(
        server.port, "POST", "/upload", body=body, headers={"X-Custom": "yes"}
    )
    seen = json.loads(data)
    assert status == 200
    assert seen["method"] == "POST"
    assert seen["body_length"] == 3000
    assert seen["body_head"] == body[:64].decode("latin-1")
    assert ["x-custom", "yes"] in seen["headers"]
    assert "listening on http://127.0.0.1:" in server.output
    assert server.wait_for('"POST /upload HTTP/1.1" 200')  # the access log


def test_keep_alive_serves_several_requests_on_one_connection(httpsys):
    server = httpsys("httpsys_apps:echo")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    ports = set()
    for index in range(3):
        status, _, data = request(server.port, "GET", f"/n{index}", connection=connection)
        assert status == 200
        seen = json.loads(data)
        assert seen["path"] == f"/n{index}"
        ports.add(seen["client"][1])
    connection.close()
    assert len(ports) == 1  # one TCP connection


def test_the_matched_prefix_is_the_path_base(httpsys):
    server = httpsys("httpsys_apps:echo", path="/api/")
    status, _, data = request(server.port, "GET", "/api/items/7?full=1")
    seen = json.loads(data)
    assert status == 200
    assert seen["root_path"] == "/api"
    assert seen["path"] == "/api/items/7"
    assert seen["query_string"] == "full=1"
    if not UNDER_WINE:  # Wine's http.sys matches prefix paths case-sensitively
        status, _, data = request(server.port, "GET", "/API")
        assert status == 200
        assert json.loads(data)["root_path"] == "/API"  # the request's own spelling


def test_a_streamed_body_arrives_whole_with_repeated_headers(httpsys):
    server = httpsys("httpsys_apps:parts")
    status, headers, data = request(server.port, "GET", "/")
    assert status == 201
    assert data == b"part0\npart1\npart2\npart3\npart4\nend\n"
    assert header(headers, "set-cookie") == ["a=1", "b=2"]
    if UNDER_WINE:
        # No HttpSendResponseEntityBody: the adapter sent it in one call, with a length.
        assert header(headers, "content-length") == [str(len(data))]
    else:
        assert header(headers, "transfer-encoding") == ["chunked"]


def test_a_large_response_body(httpsys):
    server = httpsys("httpsys_apps:big")
    status, headers, data = request(server.port, "GET", "/")
    assert status == 200
    assert data == bytes(range(256)) * (3 * 4096)
    assert header(headers, "content-length") == [str(3 * 1024 * 1024)]


def test_pathsend_sends_the_file(httpsys):
    server = httpsys("httpsys_apps:pathsend")
    status, headers, data = request(server.port, "GET", "/")
    expected = (Path(__file__).parent / "httpsys_apps.py").read_bytes()
    assert status == 200
    assert data == expected
    assert header(headers, "content-length") == [str(len(expected))]


def test_request_bodies_read_in_pieces(httpsys):
    # 60,000 bytes: more than the first receive carries, so HttpReceiveRequestEntityBody runs.
    server = httpsys("httpsys_apps:echo")
    body = os.urandom(60_000)
    status, _, data = request(server.port, "PUT", "/p", body=body)
    seen = json.loads(data)
    assert status == 200
    assert seen["body_length"] == 60_000
    assert seen["body_head"] == body[:64].decode("latin-1")


def test_a_body_over_the_limit_gets_413(httpsys):
    server = httpsys("httpsys_apps:echo", "--max-request-body-size", "1000")
    status, _, data = request(server.port, "POST", "/", body=b"x" * 5000)
    assert status == 413
    assert b"too large" in data
    status, _, _ = request(server.port, "POST", "/", body=b"x" * 900)
    assert status == 200


def test_an_app_that_fails_gets_500_and_the_server_goes_on(httpsys):
    server = httpsys("httpsys_apps:broken")
    status, _, data = request(server.port, "GET", "/")
    assert status == 500
    assert data == b"Internal Server Error\n"
    status, _, _ = request(server.port, "GET", "/again")
    assert status == 500
    assert server.wait_for("broken on purpose")


def test_curl_talks_to_it(httpsys):
    curl = require_peer("curl")
    server = httpsys("httpsys_apps:echo")
    done = subprocess.run(
        [curl, "-sS", "-m", "20", "--data-binary", "hello", f"{server.base}/curl?q=1"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    seen = json.loads(done.stdout)
    assert seen["method"] == "POST"
    assert seen["body_head"] == "hello"
    assert seen["query_string"] == "q=1"


def test_a_named_request_queue(httpsys):
    server = httpsys("httpsys_apps:echo", "--httpsys-queue-name", "tiercel-tests")
    status, _, _ = request(server.port, "GET", "/")
    assert status == 200


def test_ctrl_c_stops_gracefully_after_the_request_in_flight(httpsys):
    server = httpsys("httpsys_apps:slow")
    results: list[tuple[int, bytes]] = []

    def client() -> None:
        status, _, data = request(server.port, "GET", "/slow")
        results.append((status, data))

    thread = threading.Thread(target=client)
    thread.start()
    threading.Event().wait(0.25)  # the app holds the request for 0.5 s
    server.interrupt()
    thread.join(30)
    assert results == [(200, b"finished\n")]
    assert server.wait_exit(60) == 0, server.output
    assert "shutting down" in server.output
    assert "stopped" in server.output


def test_options_wine_refuses_are_reported_in_one_line(windows_python, httpsys):
    if not UNDER_WINE:
        server = httpsys("httpsys_apps:echo", "--httpsys-queue-limit", "10")
        assert request(server.port, "GET", "/")[0] == 200
        return
    # Wine's HttpSetRequestQueueProperty returns ERROR_CALL_NOT_IMPLEMENTED.
    process = HttpSysProcess(
        windows_python, "httpsys_apps:echo", "/", "--httpsys-queue-limit", "10"
    )
    assert process.wait_exit(90) == 2
    errors = [line for line in process.lines if line.startswith("tiercel: error:")]
    assert len(errors) == 1, process.output
    assert "request queue limit" in errors[0]
    assert "not implemented" in errors[0]
    assert "Traceback" not in process.output


# -- what needs more than Wine 8 has -----------------------------------------------------------


@skip_under_wine("HttpSendResponseEntityBody is a stub that aborts the process")
def test_a_streamed_body_goes_out_as_it_is_written(httpsys):
    server = httpsys("httpsys_apps:parts")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.getheader("transfer-encoding") == "chunked"
    assert response.read() == b"part0\npart1\npart2\npart3\npart4\nend\n"


@skip_under_wine("http.sys closes the connection on request bodies over about 64 KiB")
def test_a_large_upload(httpsys):
    server = httpsys("httpsys_apps:echo")
    body = os.urandom(3 * 1024 * 1024)
    status, _, data = request(server.port, "POST", "/", body=body)
    assert status == 200
    assert json.loads(data)["body_length"] == len(body)


@skip_under_wine("http.sys reads a chunked request body as a new request")
def test_a_chunked_upload(httpsys):
    server = httpsys("httpsys_apps:echo")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    connection.request("POST", "/", body=iter([b"abc", b"defg"]), encode_chunked=True)
    assert json.loads(connection.getresponse().read())["body_length"] == 7


@skip_under_wine("http.sys leaves a request outside every prefix hanging instead of a 404")
def test_a_path_outside_the_prefix_gets_404(httpsys):
    server = httpsys("httpsys_apps:echo", path="/api/")
    assert request(server.port, "GET", "/other")[0] == 404


@skip_under_wine("one URL per port; a second prefix on the port is not routed")
def test_two_prefixes_route_by_the_longest_path(httpsys):
    server = httpsys("httpsys_apps:echo", path=("/", "/api/"))
    assert json.loads(request(server.port, "GET", "/api/x")[2])["root_path"] == "/api"
    assert json.loads(request(server.port, "GET", "/x")[2])["root_path"] == ""


@skip_under_wine("HTTP.sys authentication properties return ERROR_CALL_NOT_IMPLEMENTED")
def test_anonymous_requests_get_a_negotiate_challenge(httpsys):
    server = httpsys(
        "httpsys_apps:echo", "--httpsys-auth", "negotiate,ntlm", "--httpsys-no-anonymous"
    )
    status, headers, _ = request(server.port, "GET", "/")
    assert status == 401
    assert header(headers, "www-authenticate") == ["Negotiate", "NTLM"]


# Wine 8's http.sys answers every repeat through the app: checked by running the cache test
# unskipped under Wine ("call 1", "call 2", "call 3" for three GETs of one URL).
@skip_under_wine(
    "HttpSendHttpResponse accepts the cache policy but ignores it, so every repeat reaches the "
    "app; the cache calls (HttpFlushResponseCache, HttpAddFragmentToCache, "
    "HttpReadFragmentFromCache) are stubs that abort the process"
)
def test_the_kernel_cache_serves_repeats_without_calling_the_app(httpsys):
    server = httpsys("httpsys_apps:cacheable")
    # No query string: HTTP.sys does not cache responses to URLs that have one.
    first = request(server.port, "GET", "/cached")
    second = request(server.port, "GET", "/cached")
    assert first[0] == second[0] == 200
    assert header(second[1], "cache-control") == ["public, max-age=60"]
    assert first[2] == second[2] == b"call 1"  # the kernel answered the repeat
    assert request(server.port, "GET", "/another")[2] == b"call 2"  # another URL, another entry


def test_with_the_response_cache_off_every_request_reaches_the_app(httpsys):
    server = httpsys("httpsys_apps:cacheable", "--httpsys-no-response-cache")
    bodies = [request(server.port, "GET", "/cached")[2] for _ in range(2)]
    assert bodies == [b"call 1", b"call 2"]


HTTPS_URL = os.environ.get("TIERCEL_HTTPSYS_HTTPS_URL", "")
HTTPS_CAFILE = os.environ.get("TIERCEL_HTTPSYS_HTTPS_CAFILE", "")
HTTPS_SETUP = (
    "bind a certificate from LocalMachine\\My with "
    "'netsh http add sslcert ipport=127.0.0.1:44300 certhash=THUMBPRINT "
    "appid={00000000-0000-0000-0000-000000000000}', then set "
    "TIERCEL_HTTPSYS_HTTPS_URL=https://127.0.0.1:44300/ (and TIERCEL_HTTPSYS_HTTPS_CAFILE to a "
    "PEM of its issuer to verify it); see docs/httpsys.md"
)


@skip_under_wine("HttpAddUrlToUrlGroup refuses https:// URLs (Win32 error 1): http.sys has no TLS")
def test_https_through_a_bound_certificate(httpsys):
    if not HTTPS_URL:
        pytest.skip(f"needs a certificate binding: {HTTPS_SETUP}")
    parts = urllib.parse.urlsplit(HTTPS_URL)
    if parts.scheme != "https" or not parts.hostname or not parts.port:
        pytest.fail(
            f"TIERCEL_HTTPSYS_HTTPS_URL must be https://HOST:PORT/ (got {HTTPS_URL!r})",
            pytrace=False,
        )
    server = httpsys("httpsys_apps:echo", base=f"https://{parts.hostname}:{parts.port}")
    if HTTPS_CAFILE:
        context = ssl.create_default_context(cafile=HTTPS_CAFILE)
    else:  # a self-signed test certificate: TLS is still negotiated, just not authenticated
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port, context=context, timeout=20
    )
    status, _, data = request(server.port, "POST", "/secure?x=1", body=b"over tls",
                              connection=connection)  # fmt: skip
    connection.close()
    assert status == 200
    seen = json.loads(data)
    assert seen["scheme"] == "https"
    assert seen["path"] == "/secure"
    assert seen["query_string"] == "x=1"
    assert seen["body_head"] == "over tls"
    assert seen["server"][1] == parts.port
