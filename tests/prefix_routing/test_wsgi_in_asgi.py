"""``WsgiInAsgi`` behind the prefix router builds its environ, ``wsgi.input`` and headers with
core/wsgi.py's pieces, so a WSGI app sees what it sees when served natively."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from tiercel.apps.prefix_router import AppEntry, MountedApp, PrefixRouter
from tiercel.apps.wsgi_in_asgi import WsgiInAsgi
from tiercel.core.url_prefixes import parse_url_prefix


def echo_environ(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["wsgi.input"]
    lines = [line.decode() for line in body.readlines()]
    seen = {
        key: environ.get(key)
        for key in (
            "SCRIPT_NAME",
            "PATH_INFO",
            "CONTENT_LENGTH",
            "CONTENT_TYPE",
            "HTTP_X_TWICE",
            "HTTP_COOKIE",
            "HTTP_X_UNDER_SCORE",
        )
    }
    seen["lines"] = lines
    start_response("200 OK", [("Content-Type", "application/json"), ("Connection", "close")])
    return [json.dumps(seen).encode()]


def bad_header(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("X-Split", "a\r\nInjected: yes")])
    return [b"never"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def mounted(port: int) -> PrefixRouter:
    apps = [("echo", "/echo/", echo_environ), ("bad", "/bad/", bad_header)]
    return PrefixRouter(
        [
            MountedApp(
                AppEntry(name, (parse_url_prefix(f"http://+:{port}{path}"),), f"tests:{name}"),
                WsgiInAsgi(app, threads=2),
                "wsgi",
            )
            for name, path, app in apps
        ]
    )


def test_environ_and_body_match_native_wsgi(serve: Callable[..., Any]) -> None:
    port = free_port()
    serve(mounted(port), urls=f"http://127.0.0.1:{port}")
    headers = [
        ("content-type", "text/plain"),
        ("x-twice", "one"),
        ("x-twice", "two"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("x_under_score", "spoofed"),
    ]
    response = httpx.post(
        f"http://127.0.0.1:{port}/echo/caf%C3%A9", content=b"first\nsecond\nlast", headers=headers
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["SCRIPT_NAME"] == "/echo"
    assert seen["PATH_INFO"] == "/café".encode().decode("latin-1")
    assert seen["CONTENT_LENGTH"] == "17"
    assert seen["CONTENT_TYPE"] == "text/plain"
    assert seen["HTTP_X_TWICE"] == "one, two"
    assert seen["HTTP_COOKIE"] == "a=1; b=2"
    assert seen["HTTP_X_UNDER_SCORE"] is None  # as natively: "_" names are left out
    assert seen["lines"] == ["first\n", "second\n", "last"]


def test_a_header_with_cr_lf_is_refused_with_a_500(serve: Callable[..., Any]) -> None:
    port = free_port()
    serve(mounted(port), urls=f"http://127.0.0.1:{port}")
    response = httpx.get(f"http://127.0.0.1:{port}/bad/")
    assert response.status_code == 500
    assert "injected" not in response.headers
