"""The status of an ASGI http.response.start: an int from 200 to 999, an IntEnum such as
HTTPStatus included; bool (an int subclass) and everything else refused with the ASGI error."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from engine_harness import Client, parse_responses
from tiercel.core.asgi import AsgiHttpCycle
from tiercel.core.errors import LocalProtocolError

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def _start(status: object) -> Client:
    client = Client()
    client.feed(GET)
    cycle = AsgiHttpCycle(client.stream)
    cycle.send({"type": "http.response.start", "status": status, "headers": []})
    cycle.send({"type": "http.response.body", "body": b"ok"})
    return client


@pytest.mark.parametrize("status", [200, 204, 404, 999, HTTPStatus.CREATED])
def test_ints_and_int_enums_in_range_are_sent(status):
    (response,) = parse_responses(_start(status).out())
    assert response.status == int(status)


@pytest.mark.parametrize("status", [True, False, 199, 1000, 200.0, "200", None])
def test_anything_else_is_refused_with_the_asgi_message(status):
    with pytest.raises(LocalProtocolError, match="'status' must be an int from 200 to 999"):
        _start(status)
