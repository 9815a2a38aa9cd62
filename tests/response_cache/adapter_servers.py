"""One real server per adapter (asyncio, trio, threads) on a loopback port, with the engine
config under test, and its ``ServerContext`` at hand for the counters."""

from __future__ import annotations

import threading
from typing import Any

from support import RunningServer
from tiercel.apps.options import ServerOptions
from tiercel.core.context import ServerContext

ADAPTERS = ("asyncio", "trio", "threads")


class AdapterServer:
    """``AdapterServer(adapter, app, **ServerOptions fields)``; ``url``, ``port``, ``context``."""

    def __init__(self, adapter: str, app: Any, **options: Any) -> None:
        options.setdefault("urls", "http://127.0.0.1:0")
        options.setdefault("access_log", False)
        options.setdefault("shutdown_timeout", 5.0)
        self.adapter = adapter
        self.options = ServerOptions(adapter=adapter, **options)
        self._app = app
        self._impl: Any = None
        self._running: RunningServer | None = None
        self._trio_token: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> AdapterServer:
        if self.adapter == "asyncio":
            self._running = RunningServer(self._app, options=self.options).start()
            self._impl = self._running.server._impl
        elif self.adapter == "threads":
            from tiercel.adapters.threads_adapter import ThreadedServer

            self._impl = ThreadedServer(self._app, self.options, threads=4)
            self._impl.start_serving()
        else:
            self._start_trio()
        return self

    def _start_trio(self) -> None:
        import trio
        from tiercel.adapters.trio_adapter import TrioServer

        self._impl = TrioServer(self._app, self.options)
        started = threading.Event()

        async def main() -> None:
            self._trio_token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(self._impl.serve)
                started.set()

        def run() -> None:
            try:
                trio.run(main)
            except BaseException as exc:
                self._error = exc
            finally:
                started.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(10)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
        elif self.adapter == "threads":
            self._impl.stop_serving()
        elif self._thread is not None and self._thread.is_alive():
            import trio

            trio.from_thread.run_sync(self._impl.request_stop, trio_token=self._trio_token)
            self._thread.join(30)

    @property
    def context(self) -> ServerContext:
        context: ServerContext = self._impl.context
        return context

    @property
    def url(self) -> str:
        return str(self._impl.addresses[0] if self._running is None else self._running.url)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])
