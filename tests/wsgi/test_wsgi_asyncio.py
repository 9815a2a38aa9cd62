"""WSGI apps on the asyncio adapter run in a thread pool: a slow request does not hold up the
others, and everything the app does to its response goes through the event loop."""

from __future__ import annotations

import threading
import time

import httpx
from support import RunningServer
from wsgi_apps import STATE, flask_app, plain_app


def test_flask_serves_other_requests_while_one_is_slow(monkeypatch):
    monkeypatch.setenv("TIERCEL_THREADS", "4")
    server = RunningServer(flask_app, shutdown_timeout=0.3).start()
    try:
        results: list[str] = []
        slow = threading.Thread(
            target=lambda: results.append(httpx.get(server.url + "/slow", timeout=10).text)
        )
        slow.start()
        assert STATE.event("flask_slow_started").wait(5)
        # The slow view holds one pool thread; the loop and the other threads keep serving.
        for _ in range(5):
            assert httpx.get(server.url + "/", timeout=5).text == "flask index"
        assert results == []
        STATE.event("flask_slow_release").set()
        slow.join(5)
        assert results == ["slow flask done"]
    finally:
        STATE.event("flask_slow_release").set()
        server.stop()


def test_pool_size_comes_from_tiercel_threads(monkeypatch):
    monkeypatch.setenv("TIERCEL_THREADS", "3")
    server = RunningServer(plain_app, shutdown_timeout=0.3).start()
    try:
        assert server.server._impl.wsgi_pool.threads == 3
        assert server.server.interface == "wsgi"
        assert httpx.get(server.url + "/x").text == "hello /x"
    finally:
        server.stop()


def test_lifespan_is_off_for_wsgi_apps(server_log):
    server = RunningServer(plain_app, lifespan="auto", shutdown_timeout=0.3).start()
    try:
        assert httpx.get(server.url + "/x").text == "hello /x"
    finally:
        server.stop()
    assert "lifespan" not in server_log.text()


def test_h2c_prior_knowledge(wsgi_serve):
    server = wsgi_serve(plain_app)
    with httpx.Client(http1=False, http2=True) as client:
        for _ in range(3):
            response = client.post(server.url + "/echo", content=b"over h2c")
            assert response.http_version == "HTTP/2"
            assert response.content == b"over h2c"
        environ = client.get(server.url + "/environ").json()
    assert environ["SERVER_PROTOCOL"] == "HTTP/2"


def test_graceful_shutdown_waits_for_the_wsgi_request_in_flight():
    server = RunningServer(flask_app, shutdown_timeout=5).start()
    results: list[httpx.Response] = []
    client = threading.Thread(
        target=lambda: results.append(httpx.get(server.url + "/slow", timeout=10))
    )
    client.start()
    try:
        assert STATE.event("flask_slow_started").wait(5)
        stopper = server.stop_in_background()
        time.sleep(0.3)
        assert results == []  # still waiting for the app
        STATE.event("flask_slow_release").set()
        client.join(5)
        stopper.join(10)
        assert not stopper.is_alive()
        assert results[0].status_code == 200
        assert results[0].text == "slow flask done"
        assert results[0].headers["connection"] == "close"
    finally:
        STATE.event("flask_slow_release").set()
        server.stop()
