"""Starting an app at once (adapters/app_tasks.py): without a task when it answers without
waiting; else as a task that is, to the app, the same task it started in.

Every start happens in a loop callback, where a transport's ``data_received`` runs."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest
import sniffio
from tiercel.adapters.app_tasks import EAGER_TASKS, start_app

LOOPS = ["asyncio", "uvloop"]
request_id: contextvars.ContextVar[int] = contextvars.ContextVar("request_id", default=0)


def _run(loop_name: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


async def _start_in_callback(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    loop = asyncio.get_running_loop()
    started: asyncio.Future[asyncio.Task[None] | None] = loop.create_future()
    loop.call_soon(lambda: started.set_result(start_app(loop, coroutine)))
    return await started


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_app_that_does_not_wait_runs_to_the_end_without_a_task(loop_name):
    seen: list[object] = []

    async def app() -> None:
        seen.append(asyncio.current_task())
        seen.append(sniffio.current_async_library())

    async def main() -> tuple[asyncio.Task[None] | None, int]:
        before = len(asyncio.all_tasks())
        task = await _start_in_callback(app())
        return task, len(asyncio.all_tasks()) - before

    task, new_tasks = _run(loop_name, main)
    assert task is None and new_tasks == 0
    assert seen[0] is not None and seen[1] == "asyncio"


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_app_that_waits_keeps_its_task_and_its_context(loop_name):
    """anyio's cancel scopes and asyncio.timeout keep the task they were entered in: the task
    that runs the rest of the app must be that same object."""
    tasks: list[object] = []

    async def app() -> None:
        request_id.set(7)
        tasks.append(asyncio.current_task())
        async with asyncio.timeout(5):
            with anyio.CancelScope():
                await asyncio.sleep(0.01)  # a real wait: the task takes over here
                tasks.append(asyncio.current_task())
                await asyncio.sleep(0)  # a bare yield
        with anyio.move_on_after(0.01):
            await anyio.sleep(5)
        tasks.append(request_id.get())

    async def main() -> tuple[asyncio.Task[None] | None, int]:
        task = await _start_in_callback(app())
        assert task is not None
        assert task.get_coro() is not None
        await task
        return task, request_id.get()

    task, outside = _run(loop_name, main)
    assert tasks == [task, task, 7]
    assert outside == 0  # the app's context is its own


@pytest.mark.parametrize("loop_name", LOOPS)
def test_cancelling_the_task_cancels_the_app_where_it_waits(loop_name):
    events: list[str] = []

    async def app() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            events.append("cancelled in the app")
            raise

    async def main() -> bool:
        task = await _start_in_callback(app())
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert _run(loop_name, main) is True
    assert events == ["cancelled in the app"]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_the_first_step_task_can_be_inspected_without_harm(loop_name):
    """Debuggers and loggers look at the current task; before it exists as a task, none of
    its methods may crash the interpreter."""
    answers: list[object] = []

    async def app() -> None:
        task = asyncio.current_task()
        assert task is not None
        answers.append(task.get_coro())
        answers.append(task.done())
        answers.append(task.get_name())
        for method in (repr, lambda t: t.get_loop(), lambda t: t.get_stack()):
            with contextlib.suppress(RuntimeError):  # "not initialized": an answer, not a crash
                method(task)

    _run(loop_name, lambda: _start_in_callback(app()))
    assert answers[1] is False


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_app_that_raises_in_its_first_step_is_reported_not_raised(loop_name):
    reported: list[dict[str, Any]] = []

    async def app() -> None:
        raise ValueError("boom")

    async def main() -> asyncio.Task[None] | None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        return await _start_in_callback(app())

    assert _run(loop_name, main) is None
    assert isinstance(reported[0]["exception"], ValueError)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_inside_another_task_the_app_starts_as_that_python_allows(loop_name):
    """An app's send can start the next pipelined request's app. On 3.11 it gets a task and
    waits for its turn; 3.12's eager start runs it at once, the running task set aside."""
    order: list[str] = []

    async def second() -> None:
        order.append("second")

    async def main() -> None:
        task = start_app(asyncio.get_running_loop(), second())  # from inside main's task
        order.append("after start")
        if task is not None:
            await task

    _run(loop_name, main)
    if EAGER_TASKS:
        assert order == ["second", "after start"]
    else:
        assert order == ["after start", "second"]
