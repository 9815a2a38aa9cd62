"""The adapter's decisions on Linux, against a fake httpapi.dll.

``FakeHttpApi`` plays the kernel: it hands out queued requests to ``HttpReceiveHttpRequest``,
posts completion packets to the adapter's completion-port thread, and records every response
call. This is where the paths Wine 8 cannot run are exercised: streaming with
HttpSendResponseEntityBody and chunked framing, HttpCancelHttpRequest, HttpShutdownRequestQueue.
The real DLL is exercised by test_wine.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import queue
from typing import Any

import pytest
from httpsys_harness import FakeKernel
from tiercel.adapters.httpsys import binding as b
from tiercel.adapters.httpsys.adapter import HttpSysServer
from tiercel.adapters.httpsys.marshal import read_chunks, read_response
from tiercel.adapters.httpsys.options import HttpSysOptions
from tiercel.apps.options import ServerOptions
from tiercel.core.config import EngineConfig, Limits

QUEUE_HANDLE = 0x51


class FakeHttpApi:
    def __init__(self, *, entity_body: bool) -> None:
        self.under_wine = not entity_body
        self.supports_entity_body = entity_body
        self.supports_cancel_request = entity_body
        self.supports_shutdown_queue = entity_body
        self.calls: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.bodies: dict[int, list[bytes]] = {}
        self.group_properties: dict[int, Any] = {}  # property -> what was set, decoded
        self.queue_properties: dict[int, int] = {}
        self._packets: queue.Queue[tuple[int, int, int, int]] = queue.Queue()
        self._receives: list[tuple[Any, Any, int]] = []  # (overlapped, buffer, size)
        self._next_id = 100

    @staticmethod
    def version() -> b.HTTPAPI_VERSION:
        return b.HTTPAPI_VERSION(2, 0)

    def check(self, call: str, code: int) -> None:
        assert code == 0, call

    # -- set-up and tear-down -------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("Http"):
            raise AttributeError(name)

        def call(*args: Any) -> int:
            self.calls.append(name)
            return 0

        return call

    def HttpCreateRequestQueue(self, version, name, security, flags, handle) -> int:
        self.calls.append("HttpCreateRequestQueue")
        handle._obj.value = QUEUE_HANDLE
        return 0

    def HttpCreateServerSession(self, version, session, reserved) -> int:
        session._obj.value = 7
        return 0

    def HttpCreateUrlGroup(self, session, group, reserved) -> int:
        group._obj.value = 8
        return 0

    def HttpAddUrlToUrlGroup(self, group, url, context, reserved) -> int:
        self.calls.append(f"HttpAddUrlToUrlGroup {url} {context}")
        return 0

    def HttpSetUrlGroupProperty(self, group, prop, info, size) -> int:
        self.calls.append(f"HttpSetUrlGroupProperty {prop}")
        structure = info._obj
        assert ctypes.sizeof(structure) == size
        if prop == b.HttpServerQosProperty:
            limit = b.HTTP_CONNECTION_LIMIT_INFO.from_address(structure.QosSetting)
            decoded = (structure.QosType, limit.Flags.Present, limit.MaxConnections)
            self.group_properties[prop] = decoded
        elif prop == b.HttpServerAuthenticationProperty:
            self.group_properties[prop] = structure.AuthSchemes
        return 0

    def HttpSetRequestQueueProperty(  # noqa: PLR0917
        self, q, prop, info, size, reserved, reserved2
    ) -> int:
        assert q == QUEUE_HANDLE
        assert size == 4
        self.calls.append(f"HttpSetRequestQueueProperty {prop}")
        self.queue_properties[prop] = info._obj.value
        return 0

    # -- the completion port --------------------------------------------------------------

    def create_completion_port(self) -> int:
        return 0x99

    def associate(self, port: int, handle: int, key: int) -> None:
        self.calls.append("associate")

    def wait_completion(self, port: int) -> tuple[int, int, int, int]:
        return self._packets.get()

    def post_completion(self, port: int, key: int) -> None:
        self._packets.put((0, 0, key, 0))

    def close_handle(self, handle: int) -> None:
        pass

    def _complete(self, overlapped: Any, error: int = 0, count: int = 0) -> int:
        self._packets.put((error, count, 1, ctypes.addressof(overlapped._obj)))
        return b.ERROR_IO_PENDING

    def cancel_io(self, handle: int, overlapped: Any) -> None:
        self.calls.append("CancelIoEx")
        pending, self._receives = self._receives, []
        for waiting, _, _ in pending:
            self._complete(waiting, b.ERROR_OPERATION_ABORTED)

    def token_user(self, token: int) -> str:
        return "CONTOSO\\alice"

    # -- requests -------------------------------------------------------------------------

    def push(self, verb: str, url: bytes, body: bytes = b"", **request: Any) -> int:
        """A request arrives; its id. A body's first 3 bytes come with it, the rest later."""
        request_id = self._next_id
        self._next_id += 1
        if body:
            request["known"] = {11: b"%d" % len(body)}
            request["body"], request["more_body"] = [body[:3]], len(body) > 3
            self.bodies[request_id] = [body[3:]] if len(body) > 3 else []
        self.requests.append({"verb": verb, "url": url, "id": request_id, **request})
        if self._receives:
            self._deliver(*self._receives.pop(0))
        return request_id

    def _deliver(self, overlapped: Any, buffer: Any, size: int) -> None:
        request = self.requests.pop(0)
        kernel = FakeKernel(buffer=buffer)
        kernel.receive(
            request["verb"],
            request["url"],
            known={28: b"localhost:8080", **request.get("known", {})},
            body=request.get("body"),
            more_body=request.get("more_body", False),
            url_context=0,
            local=("127.0.0.1", 8080),
            auth=request.get("auth"),
        )
        kernel.request.RequestId = request["id"]
        self._complete(overlapped, 0, kernel.used)

    def HttpReceiveHttpRequest(  # noqa: PLR0917
        self, q, rid, flags, buffer, size, count, overlapped
    ) -> int:
        if self.requests:
            self._deliver(overlapped, buffer, size)
        else:
            self._receives.append((overlapped, buffer, size))
        return b.ERROR_IO_PENDING

    def HttpReceiveRequestEntityBody(  # noqa: PLR0917
        self, q, rid, flags, buffer, size, count, overlapped
    ) -> int:
        pieces = self.bodies.get(rid, [])
        if not pieces:
            return b.ERROR_HANDLE_EOF  # fails at once: no packet
        data = pieces.pop(0)
        ctypes.memmove(buffer, data, len(data))
        return self._complete(overlapped, 0, len(data))

    def HttpSendHttpResponse(self, q, rid, flags, response, cache, *rest) -> int:
        status, _, headers, body = read_response(response)
        ttl = b.HTTP_CACHE_POLICY.from_address(cache).SecondsToLive if cache else None
        self.sent.append(
            {"call": "response", "id": rid, "flags": flags, "status": status,
             "headers": headers, "body": body, "cache": ttl}
        )  # fmt: skip
        return self._complete(rest[-2])

    def HttpSendResponseEntityBody(self, q, rid, flags, count, chunks, *rest) -> int:
        self.sent.append(
            {"call": "entity", "id": rid, "flags": flags, "body": read_chunks(count, chunks)}
        )
        return self._complete(rest[-2])

    def HttpCancelHttpRequest(self, q, rid, overlapped) -> int:
        self.calls.append(f"HttpCancelHttpRequest {rid}")
        return 0


async def streaming_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        # Yielding lets the flush start: the head goes out before the body is complete.
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"two", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/half":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise RuntimeError("stops halfway")
    user = scope["extensions"].get("tiercel.authentication")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"cache-control", b"public, max-age=30"),
                (b"x-user", repr(user).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"got " + body})


def serve(api: FakeHttpApi, coroutine: Any, body_limit: int = 1000, **httpsys: Any) -> Any:
    options = ServerOptions(
        urls="http://localhost:8080/",
        adapter="httpsys",
        access_log=False,
        lifespan="off",
        shutdown_timeout=2,
        engine=EngineConfig(limits=Limits(max_request_body_size=body_limit)),
        httpsys=HttpSysOptions(max_accepts=2, **httpsys),
    )
    server = HttpSysServer(streaming_app, options, api=api)  # type: ignore[arg-type]

    async def main() -> Any:
        await server.start()
        try:
            return await coroutine(server)
        finally:
            await server.stop()

    return asyncio.run(main())


async def responses(api: FakeHttpApi, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        finals = [s for s in api.sent if not s["flags"] & b.HTTP_SEND_RESPONSE_FLAG_MORE_DATA]
        if len(finals) >= count:
            return api.sent
        await asyncio.sleep(0.01)
    raise AssertionError(f"no complete response: {api.sent}")


def test_a_whole_response_is_one_call_with_a_length_and_a_cache_policy():
    api = FakeHttpApi(entity_body=True)

    async def scenario(server: HttpSysServer) -> None:
        api.push("POST", b"/echo", body=b"hello world")
        (sent,) = await responses(api, 1)
        assert sent["call"] == "response"
        assert sent["flags"] == 0
        assert sent["status"] == 200
        assert sent["body"] == b"got hello world"  # the body came in two receives
        assert (b"content-length", b"15") in sent["headers"]
        assert sent["cache"] is None  # the kernel caches GETs only
        api.push("GET", b"/again")
        sent = (await responses(api, 2))[1]
        assert sent["body"] == b"got "
        assert sent["cache"] == 30  # Cache-Control: public, max-age=30

    serve(api, scenario)
    assert "HttpAddUrlToUrlGroup http://localhost:8080/ 0" in api.calls
    # Stopping: receives cancelled, then the queue shut down and everything closed, in order.
    tail = [c for c in api.calls if c.startswith(("Http", "Cancel")) and "Add" not in c]
    assert tail[-6:] == [
        "HttpShutdownRequestQueue",
        "CancelIoEx",
        "HttpCloseUrlGroup",
        "HttpCloseRequestQueue",
        "HttpCloseServerSession",
        "HttpTerminate",
    ]


def test_a_streamed_response_is_chunked_with_entity_body_calls():
    api = FakeHttpApi(entity_body=True)

    async def scenario(server: HttpSysServer) -> None:
        api.push("GET", b"/stream")
        sent = await responses(api, 1)
        head = sent[0]
        assert head["call"] == "response"
        assert head["flags"] == b.HTTP_SEND_RESPONSE_FLAG_MORE_DATA
        assert (b"transfer-encoding", b"chunked") in head["headers"]
        assert not any(name == b"content-length" for name, _ in head["headers"])
        wire = b"".join(s["body"] for s in sent)
        assert wire == b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"
        assert all(s["call"] == "entity" for s in sent[1:])
        assert sent[-1]["flags"] == 0

    serve(api, scenario)


def test_under_wine_a_streamed_response_is_sent_whole():
    api = FakeHttpApi(entity_body=False)

    async def scenario(server: HttpSysServer) -> None:
        api.push("GET", b"/stream")
        sent = await responses(api, 1)
        assert [s["call"] for s in sent] == ["response"]
        assert sent[0]["flags"] == 0
        assert sent[0]["body"] == b"onetwo"
        assert (b"content-length", b"6") in sent[0]["headers"]

    serve(api, scenario)
    assert "HttpShutdownRequestQueue" not in api.calls  # a stub that aborts under Wine
    assert "HttpSendResponseEntityBody" not in api.calls


def test_an_app_that_stops_halfway_is_cancelled_or_closed():
    api = FakeHttpApi(entity_body=True)

    async def scenario(server: HttpSysServer) -> None:
        request_id = api.push("GET", b"/half")
        for _ in range(200):
            if f"HttpCancelHttpRequest {request_id}" in api.calls:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(api.calls)

    serve(api, scenario)

    wine = FakeHttpApi(entity_body=False)

    async def under_wine(server: HttpSysServer) -> None:
        wine.push("GET", b"/half")
        (sent,) = await responses(wine, 1)
        assert sent["status"] == 500
        assert sent["flags"] & b.HTTP_SEND_RESPONSE_FLAG_DISCONNECT

    serve(wine, under_wine)


def test_too_large_a_body_gets_413_and_the_connection_closes():
    api = FakeHttpApi(entity_body=True)

    async def scenario(server: HttpSysServer) -> None:
        api.push("POST", b"/echo", body=b"x" * 50)
        (sent,) = await responses(api, 1)
        assert sent["status"] == 413
        assert sent["flags"] & b.HTTP_SEND_RESPONSE_FLAG_DISCONNECT

    serve(api, scenario, body_limit=10)


def test_authentication_is_required_and_reported():
    api = FakeHttpApi(entity_body=True)

    async def scenario(server: HttpSysServer) -> None:
        api.push("GET", b"/anonymous")
        api.push("GET", b"/signed-in", auth=(b.HttpAuthStatusSuccess, 4, 0x77))
        sent = await responses(api, 2)
        by_status = {s["status"]: s for s in sent}
        challenges = [v for n, v in by_status[401]["headers"] if n == b"www-authenticate"]
        assert challenges == [b"Negotiate", b"NTLM"]
        user = dict(by_status[200]["headers"])[b"x-user"]
        assert user == repr({"scheme": "Negotiate", "user": "CONTOSO\\alice"}).encode()

    serve(
        api,
        scenario,
        authentication_schemes=("ntlm", "negotiate"),
        allow_anonymous=False,
    )


@pytest.mark.parametrize("mode", ["attach", "createorattach"])
def test_attaching_to_a_named_queue_registers_no_urls(mode):
    api = FakeHttpApi(entity_body=True)
    if mode == "createorattach":
        created: list[int] = []

        def create(version, name, security, flags, handle) -> int:
            created.append(flags)
            handle._obj.value = QUEUE_HANDLE
            return b.ERROR_ALREADY_EXISTS if len(created) == 1 else 0

        api.HttpCreateRequestQueue = create  # type: ignore[method-assign]

    async def scenario(server: HttpSysServer) -> None:
        assert server.queue == QUEUE_HANDLE

    serve(api, scenario, request_queue_name="shared", request_queue_mode=mode)
    assert not any(c.startswith("HttpAddUrlToUrlGroup") for c in api.calls)


def started_with(**httpsys: Any) -> FakeHttpApi:
    """The calls a server makes when it starts and stops with these options."""
    api = FakeHttpApi(entity_body=True)

    async def nothing(server: HttpSysServer) -> None:
        return None

    serve(api, nothing, **httpsys)
    return api


@pytest.mark.parametrize(("max_connections", "expected"), [(50, 50), (-1, 0xFFFFFFFF)])
def test_max_connections_sets_the_qos_connection_limit(max_connections, expected):
    api = started_with(max_connections=max_connections)
    assert api.group_properties[b.HttpServerQosProperty] == (
        b.HttpQosSettingTypeConnectionLimit,
        1,  # Flags.Present
        expected,
    )
    default = started_with()
    assert b.HttpServerQosProperty not in default.group_properties  # the machine-wide setting


def test_the_request_queue_limit_and_503_verbosity_are_queue_properties():
    api = started_with(request_queue_limit=42, http503_verbosity="full")
    assert api.queue_properties == {
        b.HttpServerQueueLengthProperty: 42,
        b.HttpServer503VerbosityProperty: 2,  # Http503ResponseVerbosityFull
    }
    limited = started_with(http503_verbosity="limited")
    assert limited.queue_properties == {b.HttpServer503VerbosityProperty: 1}
    # The defaults (HTTP.sys's own limit of 1000, basic 503) set nothing, so Wine can run them.
    assert started_with().queue_properties == {}


def test_with_response_caching_off_no_cache_policy_is_passed():
    for enabled, expected in ((True, 30), (False, None)):
        api = FakeHttpApi(entity_body=True)

        async def scenario(server: HttpSysServer, api: FakeHttpApi = api) -> None:
            api.push("GET", b"/cacheable")  # the app answers Cache-Control: public, max-age=30
            (sent,) = await responses(api, 1)
            assert sent["status"] == 200

        serve(api, scenario, enable_response_caching=enabled)
        assert api.sent[0]["cache"] == expected, enabled
