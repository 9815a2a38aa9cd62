"""`tiercel module` keeps its HTTP/1.1 connections to the app process alive and reuses them.

The app trusts the module's X-Forwarded-For (it comes from loopback), so ASGI's ``client`` is
the forwarded client, not the module's socket. The socket peer that value replaced is kept in
``x-original-for``: the module's own address and port on its side of the upstream connection,
one port per connection. Fewer distinct ports than requests means the connection was reused."""

from __future__ import annotations

import json
from typing import Any

from module_harness import APP_COMMAND

ModuleFactory = Any
REQUESTS = 6


def test_sequential_requests_from_new_clients_share_one_upstream_connection(
    module: ModuleFactory,
) -> None:
    front = module(APP_COMMAND)
    # Each get_json is a new client connection to the module: the pool is the module's, not
    # tied to one client connection.
    answers = [front.get_json(f"/n/{i}") for i in range(REQUESTS)]
    upstream_ends = [answer["headers"]["x-original-for"] for answer in answers]
    assert all(end.startswith("127.0.0.1:") for end in upstream_ends), upstream_ends
    assert {answer["pid"] for answer in answers} == {answers[0]["pid"]}
    assert len(set(upstream_ends)) == 1, upstream_ends


def test_requests_on_one_client_connection_share_one_upstream_connection(
    module: ModuleFactory,
) -> None:
    front = module(APP_COMMAND)
    connection = front.connection()
    upstream_ends: list[str] = []
    try:
        for i in range(REQUESTS):
            connection.request("POST", f"/n/{i}", body=b"x" * 1000)
            response = connection.getresponse()
            assert response.status == 200
            answer = json.loads(response.read())
            assert answer["body_length"] == 1000
            upstream_ends.append(answer["headers"]["x-original-for"])
    finally:
        connection.close()
    assert len(set(upstream_ends)) == 1, upstream_ends
