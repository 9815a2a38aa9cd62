"""start_response and the app's iterable breaking PEP 3333: the client gets a 500 (or, once the
response has started, a cut-off connection), and the error log says what went wrong."""

from __future__ import annotations

import time

import httpx
import pytest
from wsgi_apps import plain_app


def wait_for_log(server_log, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server_log.text()
        if text in log:
            return log
        time.sleep(0.01)
    raise AssertionError(f"{text!r} not in the log:\n{server_log.text()}")


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/twice", "start_response was called a second time without exc_info"),
        ("/bad-status", "status must be three digits, a space and a reason phrase"),
        ("/int-status", "status must be a str like '200 OK'"),
        ("/crlf-header", "contains CR, LF, NUL or another control character"),
        ("/bytes-header", "header names and values must be native strings (str)"),
        ("/no-start", "without calling start_response first"),
        ("/text-body", "must be bytes (got str)"),
        ("/raises", "the app failed on purpose"),
    ],
)
def test_errors_before_the_response_answer_500_and_are_logged(wsgi_serve, server_log, path, logged):
    server = wsgi_serve(plain_app)
    response = httpx.get(server.url + path)
    assert response.status_code == 500
    assert response.content == b"Internal Server Error\n"
    assert "evil" not in str(response.headers)
    log = wait_for_log(server_log, logged)
    assert f"exception in WSGI app while serving GET {path}" in log
    # The connection stays usable: the 500 is a complete response.
    assert httpx.get(server.url + "/ok").content == b"hello /ok"


def test_exc_info_replaces_a_response_not_yet_sent(wsgi_serve):
    server = wsgi_serve(plain_app)
    response = httpx.get(server.url + "/exc-info-before")
    assert response.status_code == 503
    assert response.headers["x-handled"] == "yes"
    assert response.content == b"handled"


def test_exc_info_after_the_headers_were_sent_reraises_and_cuts_the_response(
    wsgi_serve, server_log
):
    server = wsgi_serve(plain_app)
    with httpx.Client() as client, client.stream("GET", server.url + "/exc-info-after") as r:
        assert r.status_code == 200  # the head went out with the first write()
        with pytest.raises(httpx.HTTPError):
            r.read()
    log = wait_for_log(server_log, "failed after the headers were sent")
    assert "ValueError" in log
    assert "connection aborted" in log
