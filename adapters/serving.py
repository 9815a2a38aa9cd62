"""``serve``/``serve_started``/``request_stop`` for the servers that run on asyncio (the asyncio
and HTTP.sys adapters): what ``apps/hosting.py`` calls, the same for both.

``start()`` creates ``_stop_requested``; ``request_stop()`` sets it (also from a signal handler
through ``call_soon_threadsafe``); ``serve_started()`` waits for it, then runs the server's own
graceful ``stop()``.
"""

from __future__ import annotations

import asyncio


class ServesUntilStopped:
    _stop_requested: asyncio.Event | None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def serve(self) -> None:
        await self.start()
        await self.serve_started()

    async def serve_started(self) -> None:
        """Serve an already started server until ``request_stop``, then stop gracefully."""
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        await self.stop()
