"""A plain WSGI app and a Flask app, unchanged, on the threads and asyncio adapters: routes,
the environ, JSON, forms and uploads, streaming responses, files, write(), close()."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import httpx
import pytest
from support import recv_until_closed
from wsgi_apps import FILE_BODY, STATE, flask_app, plain_app


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# -- the environ --------------------------------------------------------------------------------


def test_environ_follows_pep_3333(wsgi_serve):
    server = wsgi_serve(plain_app, root_path="/mount")
    response = httpx.post(
        server.url + "/mount/environ?a=1&b=%20",
        content=b"field=value",
        headers=[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-multi", "one"),
            ("x-multi", "two"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x_under_score", "dropped"),
        ],
    )
    assert response.status_code == 200
    environ = response.json()
    port = str(server.port)
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == "/mount"
    assert environ["PATH_INFO"] == "/environ"
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert environ["CONTENT_LENGTH"] == "11"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", port)
    assert environ["HTTP_HOST"] == f"127.0.0.1:{port}"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["HTTP_X_MULTI"] == "one, two"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_UNDER_SCORE" not in environ
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"].isdigit()
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.version"] == [1, 0]
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.input_terminated"] is True
    assert environ["file_wrapper"] == "FileWrapper"


def test_path_info_is_the_percent_decoded_bytes_as_latin_1(wsgi_serve):
    server = wsgi_serve(plain_app)
    response = httpx.get(server.url + "/caf%C3%A9/a%2Fb")
    # PEP 3333: the UTF-8 bytes of "café", each byte one character; %2F decoded like CGI.
    assert response.content == "hello /caf\xc3\xa9/a/b".encode()


def test_server_name_without_a_port_in_host(wsgi_serve):
    server = wsgi_serve(plain_app)
    response = httpx.get(server.url + "/environ", headers={"host": "example.com"})
    environ = response.json()
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.com", "80")


def test_chunked_request_body_has_no_content_length(wsgi_serve):
    server = wsgi_serve(plain_app)

    def parts():
        yield b"first "
        yield b"second"

    response = httpx.post(server.url + "/echo", content=parts())
    assert response.content == b"first second"
    environ = httpx.post(server.url + "/environ", content=parts()).json()
    assert "CONTENT_LENGTH" not in environ
    assert environ["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_input_readline_and_iteration(wsgi_serve):
    server = wsgi_serve(plain_app)
    response = httpx.post(server.url + "/lines", content=b"a\nbb\nccc")
    assert response.json() == ["a\n", "bb\n", "ccc"]


def test_expect_100_continue_is_sent_when_the_app_reads(wsgi_serve):
    server = wsgi_serve(plain_app)
    with server.connect() as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        answer = recv_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nhello")


# -- responses -----------------------------------------------------------------------------------


def test_write_callable(wsgi_serve):
    server = wsgi_serve(plain_app)
    response = httpx.get(server.url + "/write")
    assert response.content == b"written with write()"
    assert response.headers["transfer-encoding"] == "chunked"


def test_generator_is_sent_chunked_and_a_list_with_content_length(wsgi_serve):
    server = wsgi_serve(plain_app)
    streamed = httpx.get(server.url + "/stream")
    assert streamed.content == b"".join(f"part {i}\n".encode() for i in range(5))
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.headers
    listed = httpx.get(server.url + "/hello")
    assert listed.content == b"hello /hello"
    assert listed.headers["content-length"] == "12"


def test_close_is_called_on_the_iterable(wsgi_serve, server_log):
    server = wsgi_serve(plain_app)
    assert httpx.get(server.url + "/closing").content == b"abc"
    assert wait_until(lambda: "closing" in STATE.closed)
    with pytest.raises(httpx.HTTPError):  # the body failed after its first chunk was sent
        httpx.get(server.url + "/closing-fails")
    assert wait_until(lambda: "closing-fails" in STATE.closed)
    assert "the body failed halfway" in server_log.text()


def test_content_length_is_held_to(wsgi_serve, server_log):
    server = wsgi_serve(plain_app)
    response = httpx.get(server.url + "/too-long")
    assert response.content == b"12345"
    assert wait_until(lambda: "more than its Content-Length of 5 bytes" in server_log.text())
    with pytest.raises(httpx.RemoteProtocolError):  # short: the client is not left waiting
        httpx.get(server.url + "/too-short", timeout=5)
    assert wait_until(lambda: "ended after 5 of the 10 bytes" in server_log.text())


def test_head_with_content_length_and_no_body(wsgi_serve, server_log):
    server = wsgi_serve(plain_app)
    head = httpx.head(server.url + "/head-length")
    assert head.status_code == 200
    assert head.headers["content-length"] == "11"
    assert head.content == b""
    assert httpx.get(server.url + "/head-length").content == b"hello world"
    assert "Content-Length" not in server_log.text()


def test_hop_by_hop_headers_from_the_app_are_dropped(wsgi_serve):
    server = wsgi_serve(plain_app)
    response = httpx.get(server.url + "/hop-by-hop")
    assert response.content == b"plain body"
    assert "transfer-encoding" not in response.headers
    assert response.headers["content-length"] == "10"


def test_file_wrapper(wsgi_serve, big_file):
    server = wsgi_serve(plain_app)
    response = httpx.get(server.url + "/file?" + quote(str(big_file)))
    assert response.status_code == 200
    assert response.content == FILE_BODY


def test_wsgi_errors_goes_to_the_error_log(wsgi_serve, server_log):
    server = wsgi_serve(plain_app)
    assert httpx.get(server.url + "/errors").content == b"logged"
    messages = server_log.messages()
    assert "a line for wsgi.errors" in messages
    assert "partial and its end" in messages


def test_keep_alive_connection_serves_many_requests(wsgi_serve):
    server = wsgi_serve(plain_app)
    with httpx.Client() as client:
        for index in range(20):
            assert client.get(f"{server.url}/n{index}").content == f"hello /n{index}".encode()


# -- Flask ---------------------------------------------------------------------------------------


@pytest.fixture
def flask_server(wsgi_serve, big_file):
    flask_app.config["FILE_PATH"] = str(big_file)
    return wsgi_serve(flask_app)


def test_flask_routes_json_and_404(flask_server):
    url = flask_server.url
    assert httpx.get(url + "/").text == "flask index"
    response = httpx.get(url + "/json", params={"x": "1"})
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": True, "args": {"x": "1"}}
    assert httpx.post(url + "/json-echo", json={"a": [1, 2]}).json() == {"got": {"a": [1, 2]}}
    missing = httpx.get(url + "/missing")
    assert missing.status_code == 404
    assert b"Not Found" in missing.content


def test_flask_form_and_file_upload(flask_server):
    url = flask_server.url
    assert httpx.post(url + "/form", data={"name": "bob"}).text == "name=bob files=[]"
    payload = bytes(range(256)) * 12_000  # about 3 MB, multipart
    response = httpx.post(url + "/upload", files={"file": ("data.bin", payload)})
    assert response.json() == {
        "filename": "data.bin",
        "size": len(payload),
        "sum": sum(payload) % 65536,
    }


def test_flask_streaming_response(flask_server):
    response = httpx.get(flask_server.url + "/stream")
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert response.headers["transfer-encoding"] == "chunked"


def test_flask_send_file(flask_server):
    response = httpx.get(flask_server.url + "/file")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-test"
    assert response.headers["content-length"] == str(len(FILE_BODY))
    assert response.content == FILE_BODY


def test_flask_error_handler_answers_500(flask_server):
    response = httpx.get(flask_server.url + "/fail")
    assert response.status_code == 500
    assert b"Internal Server Error" in response.content


def test_flask_keep_alive_and_json_roundtrips(flask_server):
    with httpx.Client() as client:
        for index in range(10):
            body = client.post(flask_server.url + "/json-echo", json={"i": index}).json()
            assert body == {"got": {"i": index}}


def test_flask_app_is_called_from_a_worker_thread(flask_server, adapter):
    name = httpx.get(flask_server.url + "/thread").text
    assert name.startswith("tiercel-worker-" if adapter == "threads" else "tiercel-wsgi")
    assert json.dumps(name)
