"""``PrefixRouter`` served by a real in-thread server: path bases under a front root_path,
apps without lifespan, and a WSGI app that fails."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import httpx
import prefix_apps
from processes import free_port
from tiercel.apps.prefix_router import AppEntry, MountedApp, PrefixRouter
from tiercel.apps.wsgi_in_asgi import WsgiInAsgi
from tiercel.core.url_prefixes import parse_url_prefix


async def no_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError("this app only speaks http")
    body = f"{scope['root_path']}|{scope['path']}|{scope.get('state')}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def failing_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    raise ValueError("broken on purpose")


def bad_status_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("OK", [])
    return [b"never"]


def router(port: int, *apps: tuple[str, str, Any]) -> PrefixRouter:
    mounted = []
    for name, prefix, app in apps:
        entry = AppEntry(name, (parse_url_prefix(prefix.format(port=port)),), f"tests:{name}")
        interface = "wsgi" if isinstance(app, WsgiInAsgi) else "asgi"
        mounted.append(MountedApp(entry, app, interface))
    return PrefixRouter(mounted)


def test_front_root_path_is_kept_in_front_of_the_path_base(serve: Callable[..., Any]) -> None:
    port = free_port()
    front = router(
        port,
        ("api", "http://+:{port}/api/", prefix_apps.api),
        ("plain", "http://+:{port}/plain/", no_lifespan),
    )
    running = serve(front, urls=f"http://127.0.0.1:{port}", root_path="/outer")
    answer = httpx.get(f"http://127.0.0.1:{port}/outer/api/x").json()
    assert (answer["root_path"], answer["path"]) == ("/outer/api", "/outer/api/x")
    assert answer["state"] == {"started_by": "api"}
    # An app that does not speak lifespan is tolerated, and gets an empty state of its own.
    plain = httpx.get(f"http://127.0.0.1:{port}/outer/plain/y").text
    assert plain == "/outer/plain|/outer/plain/y|{}"
    assert running.port == port


def test_failing_wsgi_app_gets_500_and_the_others_carry_on(serve: Callable[..., Any]) -> None:
    port = free_port()
    front = router(
        port,
        ("fails", "http://+:{port}/fails/", WsgiInAsgi(failing_wsgi)),
        ("bad", "http://+:{port}/bad/", WsgiInAsgi(bad_status_wsgi)),
        ("ok", "http://+:{port}/", WsgiInAsgi(prefix_apps.legacy, threads=2)),
    )
    serve(front, urls=f"http://127.0.0.1:{port}")
    for path in ("/fails/x", "/bad/"):
        response = httpx.get(f"http://127.0.0.1:{port}{path}")
        assert response.status_code == 500
        assert response.text == "500 Internal Server Error\n"
    with httpx.Client() as client:
        for n in range(5):
            answer = client.post(f"http://127.0.0.1:{port}/x{n}", content=b"a\nb\n" * n).json()
            assert (answer["script_name"], answer["path_info"]) == ("", f"/x{n}")
            assert answer["received"] == 4 * n
