"""Apps the CLI tests serve with the real ``tiercel`` command (cwd = this folder)."""

from __future__ import annotations

import asyncio
import sys

not_an_app = 42


async def _answer(send, body: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    """Answers ``hello <path> root=<root_path>``."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await _answer(send, f"hello {scope['path']} root={scope['root_path']}".encode())


async def slow(scope, receive, send):
    if scope["type"] != "http":
        return
    print("slow request started", file=sys.stderr, flush=True)
    await asyncio.sleep(1)
    await _answer(send, b"slow done")


def create_app():
    """A factory: ``tiercel sample_apps:create_app --factory``."""

    async def made(scope, receive, send):
        if scope["type"] == "http":
            await _answer(send, b"made by the factory")

    return made


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "cannot reach the database"})


async def body_reader(scope, receive, send):
    """Reads the whole body and answers with its length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await _answer(send, str(size).encode())


async def hang_startup(scope, receive, send):
    """Lifespan startup that never completes."""
    if scope["type"] == "lifespan":
        await receive()
        print("startup is hanging", file=sys.stderr, flush=True)
        await asyncio.sleep(3600)


async def hang_shutdown(scope, receive, send):
    """Lifespan shutdown that never completes."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        print("shutdown is hanging", file=sys.stderr, flush=True)
        await asyncio.sleep(3600)
    elif scope["type"] == "http":
        await _answer(send, b"up")


async def no_lifespan(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError(f"only http, not {scope['type']}")
    await _answer(send, b"no lifespan here")


async def crash(scope, receive, send):
    """Raises on every request."""
    if scope["type"] == "http":
        raise RuntimeError("crashed on purpose")
