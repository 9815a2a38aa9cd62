"""tiercel servers on each adapter with the PROXY protocol on their listener."""

from __future__ import annotations

import json
import threading
from typing import Any

from support import RunningServer
from tiercel.apps.options import ServerOptions
from tiercel.core.proxy_protocol import ProxyProtocolSettings

ADAPTERS = ["asyncio", "trio", "threads"]


async def scope_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"], "server": scope["server"]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    client = [environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"])]
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps({"client": client, "server": None}).encode()]


class Backend:
    """tiercel on one adapter, PROXY protocol required on its listener."""

    def __init__(self, adapter: str, settings: ProxyProtocolSettings | None = None) -> None:
        options = ServerOptions(
            urls="http://127.0.0.1:0",
            adapter=adapter,
            access_log=False,
            interface="wsgi" if adapter == "threads" else "asgi",
            proxy_protocol=settings or ProxyProtocolSettings(timeout=3.0),
        )
        self.stop: Any
        if adapter == "asyncio":
            running = RunningServer(scope_app, options=options).start()
            self.port = running.port
            self.stop = running.stop
        elif adapter == "threads":
            from tiercel.adapters.threads_adapter import ThreadedServer

            threaded = ThreadedServer(wsgi_app, options, threads=4)
            threaded.start_serving()
            self.port = int(threaded.addresses[0].rsplit(":", 1)[1])
            self.stop = threaded.stop_serving
        else:
            self._start_trio(options)

    def _start_trio(self, options: ServerOptions) -> None:
        import trio
        from tiercel.adapters.trio_adapter import TrioServer

        server = TrioServer(scope_app, options)
        ready = threading.Event()
        token: list[Any] = []

        async def main() -> None:
            token.append(trio.lowlevel.current_trio_token())
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                ready.set()

        thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        thread.start()
        assert ready.wait(10)
        self.port = int(server.addresses[0].rsplit(":", 1)[1])

        def stop() -> None:
            trio.from_thread.run_sync(server.request_stop, trio_token=token[0])
            thread.join(30)

        self.stop = stop
