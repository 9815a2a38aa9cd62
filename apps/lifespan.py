"""The ASGI lifespan protocol, on anyio so every async adapter shares it.

Startup failure stops the server with the app's message. An app that does not speak lifespan
(raises on the lifespan scope before receiving) is tolerated in "auto" mode, as in uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from tiercel.core.asgi import lifespan_scope
from tiercel.core.errors import TiercelError

log = logging.getLogger("tiercel.error")

ASGIApp = Any


class LifespanFailed(TiercelError):
    """The app reported ``lifespan.startup.failed`` (or crashed during startup)."""


class Lifespan:
    def __init__(self, app: ASGIApp, mode: str, extensions: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode  # "auto", "on" or "off"
        self.state: dict[str, Any] = {}
        self._extensions = extensions
        self._to_app: anyio.abc.ObjectSendStream[dict[str, Any]] | None = None
        self._from_app: anyio.abc.ObjectReceiveStream[dict[str, Any]] | None = None
        self._supported = mode != "off"
        self._error: str | None = None
        self._received_any = False

    async def startup(self, spawn: Callable[..., Any]) -> None:
        """Run startup; ``spawn(fn, *args)`` starts a background task in the host's runtime."""
        if not self._supported:
            return
        to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](2)
        app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](2)
        self._to_app, self._from_app = to_app, from_app
        spawn(self._run, app_inbox, app_outbox)
        await to_app.send({"type": "lifespan.startup"})
        message = await self._next_message()
        if message is None:
            if self._error is not None and (self._received_any or self.mode == "on"):
                raise LifespanFailed(f"the app raised during startup: {self._error}")
            return
        if message["type"] == "lifespan.startup.failed":
            raise LifespanFailed(f"the app's startup failed: {message.get('message', '')}")
        if message["type"] != "lifespan.startup.complete":
            raise LifespanFailed(f"unexpected lifespan message {message['type']!r} at startup")

    async def shutdown(self) -> None:
        if not self._supported or self._to_app is None:
            return
        await self._to_app.send({"type": "lifespan.shutdown"})
        message = await self._next_message()
        if message is not None and message["type"] == "lifespan.shutdown.failed":
            log.error("the app's shutdown failed: %s", message.get("message", ""))
        await self._to_app.aclose()
        if self._from_app is not None:
            await self._from_app.aclose()

    async def _next_message(self) -> dict[str, Any] | None:
        assert self._from_app is not None
        try:
            return await self._from_app.receive()
        except anyio.EndOfStream:
            return None  # the app returned (or raised) without answering

    async def _run(
        self,
        inbox: anyio.abc.ObjectReceiveStream[dict[str, Any]],
        outbox: anyio.abc.ObjectSendStream[dict[str, Any]],
    ) -> None:
        scope = lifespan_scope(self.state, self._extensions)

        async def receive() -> dict[str, Any]:
            self._received_any = True
            return await inbox.receive()

        async def send(message: dict[str, Any]) -> None:
            await outbox.send(message)

        try:
            async with outbox:
                await self.app(scope, receive, send)
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
            self._error = f"{type(exc).__name__}: {exc}"
            if self.mode == "on" or self._received_any:
                log.error("lifespan: the app raised %s", self._error)
            else:
                log.info("the app does not support lifespan (%s); continuing", self._error)
            self._supported = False
