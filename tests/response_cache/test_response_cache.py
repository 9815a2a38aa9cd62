"""The response cache over real sockets, on every adapter, with httpx as the client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cache_apps import CallCounter, asgi_app, wsgi_app
from response_cache.adapter_servers import AdapterServer
from tiercel.core.config import EngineConfig
from tiercel.core.response_cache import ResponseCacheSettings

# (adapter, interface): every adapter, and WSGI on the adapters that run it in threads.
SETUPS = [("asyncio", "asgi"), ("asyncio", "wsgi"), ("trio", "asgi"), ("threads", "wsgi")]

Start = Callable[..., tuple[AdapterServer, CallCounter]]


@pytest.fixture(params=SETUPS, ids=[f"{a}-{i}" for a, i in SETUPS])
def start(request: pytest.FixtureRequest) -> Iterator[Start]:
    adapter, interface = request.param
    servers: list[AdapterServer] = []

    def start(
        max_size: int | None = 1 << 20, max_entry_size: int = 262_144, **options: Any
    ) -> tuple[AdapterServer, CallCounter]:
        counter = CallCounter()
        app = asgi_app(counter) if interface == "asgi" else wsgi_app(counter)
        settings = None if max_size is None else ResponseCacheSettings(max_size, max_entry_size)
        server = AdapterServer(
            adapter,
            app,
            interface=interface,
            engine=EngineConfig(response_cache=settings),
            **options,
        ).start()
        servers.append(server)
        return server, counter

    yield start
    for server in servers:
        server.stop()


def test_second_request_is_answered_from_the_cache(start: Start) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        first = client.get("/public/page")
        second = client.get("/public/page")
    assert first.status_code == second.status_code == 200
    assert first.text == second.text == "GET /public/page? call 1\n"
    assert counter.calls["/public/page"] == 1
    assert "age" not in first.headers
    assert int(second.headers["age"]) >= 0
    assert second.headers["cache-control"] == "public, max-age=60"
    assert second.headers["content-length"] == str(len(first.content))
    assert "date" in second.headers
    counters = server.context.response_cache_counters
    assert (counters["misses"], counters["stores"], counters["hits"]) == (1, 1, 1)


def test_head_is_answered_from_the_get_entry(start: Start) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        body = client.get("/public/h").content
        head = client.head("/public/h")
        # and the connection is still in step: a later request works
        again = client.get("/public/h")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(body))
    assert again.content == body
    assert counter.calls["/public/h"] == 1


def test_head_alone_does_not_store(start: Start) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        client.head("/public/onlyhead")
        client.head("/public/onlyhead")
    assert counter.calls["/public/onlyhead"] == 2
    assert server.context.response_cache_counters["stores"] == 0


def test_entries_expire_after_their_max_age(start: Start) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        first = client.get("/public/short", params={"max-age": "1"})
        cached = client.get("/public/short", params={"max-age": "1"})
        time.sleep(1.2)
        fresh = client.get("/public/short", params={"max-age": "1"})
    assert cached.text == first.text
    assert fresh.text.endswith("call 2\n")
    assert counter.calls["/public/short"] == 2
    assert server.context.response_cache_counters["expirations"] == 1


@pytest.mark.parametrize("path", ["/smaxage/x", "/expires/x"])
def test_s_maxage_and_expires_make_a_response_cacheable(start: Start, path: str) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        texts = {client.get(path).text for _ in range(3)}
    assert len(texts) == 1
    assert counter.calls[path] == 1


@pytest.mark.parametrize(
    "path",
    [
        "/cookie/x",  # Set-Cookie
        "/vary/x",  # Vary
        "/pragma/x",  # Pragma
        "/private/x",  # private
        "/notpublic/x",  # max-age without public
        "/nostore/x",  # no-store
        "/plain/x",  # no caching headers at all
        "/missing/x",  # status 404
    ],
)
def test_responses_the_rules_forbid_are_never_stored(start: Start, path: str) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        for _ in range(2):
            client.get(path)
    assert counter.calls[path] == 2
    assert server.context.response_cache_counters["stores"] == 0


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("POST", {}),
        ("GET", {"authorization": "Bearer x"}),
        ("GET", {"range": "bytes=0-3"}),
        ("GET", {"if-none-match": '"x"'}),
    ],
    ids=["post", "authorization", "range", "conditional"],
)
def test_requests_the_rules_forbid_go_to_the_app(
    start: Start, method: str, headers: dict[str, str]
) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        client.get("/public/r")  # stored
        for _ in range(2):
            client.request(method, "/public/r", headers=headers)
    assert counter.calls["/public/r"] == 3


def test_client_no_cache_is_ignored_as_http_sys_does(start: Start) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        client.get("/public/reload")
        reloaded = client.get("/public/reload", headers={"cache-control": "no-cache"})
    assert reloaded.text.endswith("call 1\n")
    assert counter.calls["/public/reload"] == 1


def test_query_is_part_of_the_key(start: Start) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as client:
        a = client.get("/public/q", params={"v": "1"}).text
        b = client.get("/public/q", params={"v": "2"}).text
        a_again = client.get("/public/q", params={"v": "1"}).text
    assert a != b and a_again == a
    assert counter.calls["/public/q"] == 2


def test_responses_over_the_entry_size_are_not_stored(start: Start) -> None:
    server, counter = start(max_entry_size=10_000)
    with httpx.Client(base_url=server.url) as client:
        big = [client.get("/public/big", params={"size": "20000"}) for _ in range(2)]
        small = [client.get("/public/small", params={"size": "9000"}) for _ in range(2)]
    assert all(len(r.content) == 20_000 for r in big)
    assert counter.calls["/public/big"] == 2
    assert small[0].content == small[1].content
    assert counter.calls["/public/small"] == 1


def test_memory_is_bounded_least_recently_used_first(start: Start) -> None:
    # Room for two 40 kB entries, not three.
    server, counter = start(max_size=100_000)
    with httpx.Client(base_url=server.url) as client:

        def get(name: str) -> None:
            client.get(f"/public/{name}", params={"size": "40000"})

        get("one")
        get("two")
        get("one")  # a hit: "one" is now the most recently used
        get("three")  # evicts "two"
        get("one")
        get("three")
        get("two")
    assert counter.calls["/public/one"] == 1
    assert counter.calls["/public/three"] == 1
    assert counter.calls["/public/two"] == 2
    counters = server.context.response_cache_counters
    assert counters["evictions"] >= 1
    cache = server.context.response_cache
    assert cache is not None and cache.size <= 100_000


def test_the_cache_is_off_by_default(start: Start) -> None:
    server, counter = start(max_size=None)
    with httpx.Client(base_url=server.url) as client:
        client.get("/public/off")
        client.get("/public/off")
    assert counter.calls["/public/off"] == 2
    assert server.context.response_cache is None
    assert not server.context.response_cache_counters


def test_http2_requests_are_answered_from_the_cache(start: Start) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url, http1=False, http2=True) as client:
        first = client.get("/public/h2")
        second = client.get("/public/h2")
        head = client.head("/public/h2")
    assert first.http_version == "HTTP/2"
    assert second.text == first.text
    assert "age" in second.headers
    assert head.headers["content-length"] == str(len(first.content))
    assert counter.calls["/public/h2"] == 1


def test_http1_and_http2_share_entries(start: Start) -> None:
    server, counter = start()
    with httpx.Client(base_url=server.url) as h1:
        stored = h1.get("/public/shared").text
    with httpx.Client(base_url=server.url, http1=False, http2=True) as h2:
        assert h2.get("/public/shared").text == stored
    assert counter.calls["/public/shared"] == 1
