"""Real Starlette and FastAPI apps, unchanged, served by tiercel and driven by httpx."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import StreamingResponse as FastAPIStreamingResponse
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

CHUNK = b"0123456789abcdef" * 4096  # 64 KiB
CHUNKS = 16


# -- Starlette ------------------------------------------------------------------------------


def make_starlette() -> tuple[Starlette, dict]:
    record: dict = {"events": [], "background": threading.Event()}

    @asynccontextmanager
    async def lifespan(app: Starlette):
        record["events"].append("startup")
        yield {"greeting": "hello from lifespan", "counter": [0]}
        record["events"].append("shutdown")

    async def item(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "item_id": request.path_params["item_id"],
                "q": request.query_params.get("q"),
                "tags": request.query_params.getlist("tag"),
            }
        )

    async def echo_json(request: Request) -> JSONResponse:
        data = await request.json()
        return JSONResponse({"received": data, "keys": sorted(data)}, status_code=201)

    async def stream(request: Request) -> StreamingResponse:
        async def chunks():
            for _ in range(CHUNKS):
                yield CHUNK
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def teapot(request: Request) -> PlainTextResponse:
        raise StarletteHTTPException(status_code=418, detail="short and stout")

    async def background(request: Request) -> PlainTextResponse:
        def job() -> None:
            record["background"].set()

        return PlainTextResponse("queued", background=BackgroundTask(job))

    async def state(request: Request) -> JSONResponse:
        request.state.counter[0] += 1
        return JSONResponse(
            {"greeting": request.state.greeting, "counter": request.state.counter[0]}
        )

    app = Starlette(
        routes=[
            Route("/items/{item_id:int}", item),
            Route("/json", echo_json, methods=["POST"]),
            Route("/stream", stream),
            Route("/teapot", teapot),
            Route("/background", background),
            Route("/state", state),
        ],
        lifespan=lifespan,
    )
    return app, record


def test_starlette_routes_params_json_streaming_errors(serve):
    app, _record = make_starlette()
    server = serve(app)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        response = client.get("/items/42", params=[("q", "a b"), ("tag", "x"), ("tag", "y")])
        assert response.status_code == 200
        assert response.json() == {"item_id": 42, "q": "a b", "tags": ["x", "y"]}

        response = client.post("/json", json={"name": "tiercel", "n": [1, 2, 3]})
        assert response.status_code == 201
        assert response.json() == {
            "received": {"name": "tiercel", "n": [1, 2, 3]},
            "keys": ["n", "name"],
        }

        with client.stream("GET", "/stream") as response:
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            digest = hashlib.sha256()
            size = 0
            for part in response.iter_bytes():
                digest.update(part)
                size += len(part)
        assert size == len(CHUNK) * CHUNKS
        assert digest.hexdigest() == hashlib.sha256(CHUNK * CHUNKS).hexdigest()

        response = client.get("/nowhere")
        assert response.status_code == 404
        assert response.reason_phrase == "Not Found"

        response = client.get("/items/not-a-number")
        assert response.status_code == 404

        response = client.get("/teapot")
        assert response.status_code == 418
        assert response.text == "short and stout"

        response = client.post("/items/1")
        assert response.status_code == 405


def test_starlette_middleware_threads_and_timeouts_keep_their_task(serve):
    """anyio under Starlette across real waits: BaseHTTPMiddleware runs the app in a task
    group, a sync endpoint runs in anyio's thread pool, and cancel scopes and asyncio.timeout
    span awaits. Each needs the task an app starts in to stay its task after its first wait
    (adapters/app_tasks.py); the first two requests answer without waiting at all."""
    import anyio
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    class Stamp(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            response = await call_next(request)
            response.headers["x-stamped"] = "yes"
            return response

    async def quick(request: Request) -> PlainTextResponse:
        return PlainTextResponse("quick")

    def blocking(request: Request) -> PlainTextResponse:  # Starlette runs it in a thread
        return PlainTextResponse(threading.current_thread().name)

    async def waits(request: Request) -> PlainTextResponse:
        task = asyncio.current_task()
        with anyio.fail_after(5):
            await anyio.sleep(0.01)
        async with asyncio.timeout(5):
            await asyncio.sleep(0.01)
        with anyio.move_on_after(0.01) as scope:
            await anyio.sleep(5)
        same = asyncio.current_task() is task
        return PlainTextResponse(f"same task: {same}, moved on: {scope.cancel_called}")

    app = Starlette(
        routes=[Route("/quick", quick), Route("/blocking", blocking), Route("/waits", waits)],
        middleware=[Middleware(Stamp)],
    )
    server = serve(app)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(3):
            response = client.get("/quick")
            assert (response.status_code, response.text) == (200, "quick")
            assert response.headers["x-stamped"] == "yes"
            response = client.get("/blocking")
            assert response.status_code == 200
            assert response.text == "AnyIO worker thread"
            response = client.get("/waits")
            assert response.status_code == 200
            assert response.text == "same task: True, moved on: True"
            assert response.headers["x-stamped"] == "yes"


def test_starlette_background_task_runs_after_response(serve):
    app, record = make_starlette()
    server = serve(app)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        response = client.get("/background")
        assert response.status_code == 200
        assert response.text == "queued"
    assert record["background"].wait(5)


def test_starlette_lifespan_state_reaches_requests_and_shutdown_runs(serve):
    app, record = make_starlette()
    server = serve(app)
    assert record["events"] == ["startup"]
    with httpx.Client(base_url=server.url, timeout=5) as client:
        first = client.get("/state").json()
        second = client.get("/state").json()
    assert first == {"greeting": "hello from lifespan", "counter": 1}
    # The state dict is copied per request, but the objects in it are shared.
    assert second == {"greeting": "hello from lifespan", "counter": 2}
    server.stop()
    assert record["events"] == ["startup", "shutdown"]


# -- FastAPI --------------------------------------------------------------------------------


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def make_fastapi() -> tuple[FastAPI, dict]:
    record: dict = {"events": [], "background": threading.Event(), "background_arg": None}

    async def on_startup() -> None:
        record["events"].append("startup")
        app.state.started = True

    async def on_shutdown() -> None:
        record["events"].append("shutdown")

    app = FastAPI(on_startup=[on_startup], on_shutdown=[on_shutdown])

    @app.get("/users/{user_id}")
    async def get_user(user_id: int, verbose: bool = False, limit: int = 10) -> dict:
        return {"user_id": user_id, "verbose": verbose, "limit": limit}

    @app.post("/items", status_code=201)
    async def create_item(item: Item) -> dict:
        return {"name": item.name, "total": item.price * 2, "tags": item.tags}

    @app.get("/stream")
    async def stream() -> FastAPIStreamingResponse:
        async def chunks():
            for i in range(5):
                yield f"line {i}\n".encode()
                await asyncio.sleep(0.01)

        return FastAPIStreamingResponse(chunks(), media_type="text/plain")

    @app.get("/missing/{name}")
    async def missing(name: str) -> dict:
        raise HTTPException(status_code=404, detail=f"{name} not found")

    @app.get("/forbidden")
    async def forbidden() -> dict:
        raise HTTPException(status_code=403, detail="no", headers={"x-why": "because"})

    @app.post("/notify")
    async def notify(tasks: BackgroundTasks, who: str) -> dict:
        def job(name: str) -> None:
            record["background_arg"] = name
            record["background"].set()

        tasks.add_task(job, who)
        return {"queued": who}

    @app.get("/started")
    async def started() -> dict:
        return {"started": getattr(app.state, "started", False)}

    return app, record


def test_fastapi_routes_validation_streaming_errors(serve):
    app, _ = make_fastapi()
    server = serve(app)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        response = client.get("/users/7", params={"verbose": "true", "limit": "3"})
        assert response.status_code == 200
        assert response.json() == {"user_id": 7, "verbose": True, "limit": 3}

        response = client.get("/users/abc")
        assert response.status_code == 422

        response = client.post("/items", json={"name": "bolt", "price": 2.5, "tags": ["m3"]})
        assert response.status_code == 201
        assert response.json() == {"name": "bolt", "total": 5.0, "tags": ["m3"]}

        response = client.post("/items", json={"price": "cheap"})
        assert response.status_code == 422

        with client.stream("GET", "/stream") as response:
            assert response.status_code == 200
            lines = list(response.iter_lines())
        assert lines == [f"line {i}" for i in range(5)]

        response = client.get("/missing/widget")
        assert response.status_code == 404
        assert response.json() == {"detail": "widget not found"}

        response = client.get("/forbidden")
        assert response.status_code == 403
        assert response.headers["x-why"] == "because"
        assert response.json() == {"detail": "no"}

        response = client.get("/no/such/route")
        assert response.status_code == 404
        assert response.json() == {"detail": "Not Found"}

        response = client.get("/openapi.json")
        assert response.status_code == 200
        assert "/users/{user_id}" in response.json()["paths"]


def test_fastapi_background_task_and_startup_shutdown_handlers(serve):
    app, record = make_fastapi()
    server = serve(app)
    assert record["events"] == ["startup"]
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/started").json() == {"started": True}
        response = client.post("/notify", params={"who": "ops"})
        assert response.status_code == 200
        assert response.json() == {"queued": "ops"}
    assert record["background"].wait(5)
    assert record["background_arg"] == "ops"
    server.stop()
    assert record["events"] == ["startup", "shutdown"]


def test_fastapi_lifespan_state(serve):
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        events.append("startup")
        yield {"db": {"answer": 42}}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/answer")
    async def answer(request: Request) -> dict:
        return {"answer": request.state.db["answer"]}

    server = serve(app)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/answer").json() == {"answer": 42}
    server.stop()
    assert events == ["startup", "shutdown"]


@pytest.mark.parametrize("maker", [make_starlette, make_fastapi])
def test_framework_apps_over_keep_alive(serve, maker):
    app, _ = maker()
    server = serve(app)
    path = "/items/1" if maker is make_starlette else "/users/1"
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(20):
            assert client.get(path).status_code == 200
