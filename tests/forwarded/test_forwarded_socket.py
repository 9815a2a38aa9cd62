"""Over a real socket: the ASGI scope carries the forwarded client, scheme, host, root_path."""

from __future__ import annotations

import json
from typing import Any

from support import recv_until_closed
from tiercel.core.forwarded import ForwardedHeaders, ForwardedOptions


async def scope_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps(
        {
            "client": scope["client"],
            "scheme": scope["scheme"],
            "root_path": scope["root_path"],
            "path": scope["path"],
            "server": scope["server"],
            "host": dict(scope["headers"]).get(b"host", b"").decode(),
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def request(running: Any, head: str) -> bytes:
    sock = running.connect()
    sock.sendall(head.encode())
    data = recv_until_closed(sock)
    sock.close()
    return data


def test_asgi_scope_sees_forwarded_values(serve):
    running = serve(scope_app, forwarded=ForwardedOptions(headers=ForwardedHeaders.ALL))
    data = request(
        running,
        "GET /users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "X-Forwarded-For: 203.0.113.7:1234\r\nX-Forwarded-Proto: https\r\n"
        "X-Forwarded-Host: public.example\r\nX-Forwarded-Prefix: /api\r\n\r\n",
    )
    scope = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert scope["client"] == ["203.0.113.7", 1234]
    assert scope["scheme"] == "https"
    assert scope["host"] == "public.example"
    assert scope["root_path"] == "/api" and scope["path"] == "/api/users"
    assert scope["server"] == ["127.0.0.1", running.port]  # the socket's, as in ASP.NET


def test_allowed_hosts_over_a_socket(serve):
    running = serve(scope_app, forwarded=ForwardedOptions(allowed_hosts=("*.example.com",)))
    data = request(running, "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 ")
    data = request(running, "GET / HTTP/1.1\r\nHost: a.example.com:1\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ")
