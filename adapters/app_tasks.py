"""Starting a request's app without a trip through the event loop, and without a task when the
app answers without waiting (DESIGN.md: no task per request where a direct call will do).

Theory of operation
-------------------

``start_app(loop, coroutine)`` runs the app's coroutine up to its first real wait, right away,
inside the loop callback that calls it (the asyncio adapter's ``_start_apps``, once a turn's
reads are done), with no trip through the loop's queue. Most apps answer a small request
without ever waiting; then there is nothing left to schedule and no task is made. Otherwise
the rest of the coroutine runs as an ordinary ``asyncio.Task``, which ``start_app`` returns.

During that first step the app must already see a task: anyio (so Starlette and FastAPI),
sniffio and ``asyncio.timeout`` ask ``asyncio.current_task()`` and keep what it returns, and
anyio's cancel scopes insist that the task leaving a scope is the one that entered it. So the
task that continues the app has to be the very object the first step saw.

- Python 3.12 and later have this built in: ``asyncio.Task(..., eager_start=True)``.
- On 3.11 a ``_FirstStepTask`` is allocated but not initialised, made the loop's current task
  for the first step (``_enter_task``/``_leave_task``, what 3.12's eager tasks use), and
  initialised only if the app waits. It is then given ``_continue``, which yields what the
  app's first step yielded (the future it waits on, or ``None`` for a bare yield), so the task
  waits for exactly that, and then hands every later step to the app's coroutine. The first
  step and the task share one ``contextvars`` context, as a task's steps do.

An uninitialised C task answers most methods with "Future object is not initialized", but
``get_coro`` would crash the interpreter, so ``_FirstStepTask`` answers that one itself until
the task exists.

``start_app`` is meant to be called from a loop callback, outside any task (the asyncio adapter
starts the apps queued in a turn from one). Called inside a running task, it starts the app as
a normal task instead on 3.11, so one app's first step never runs inside another's task.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from asyncio.tasks import (  # type: ignore[attr-defined]
    _current_tasks,
    _enter_task,
    _leave_task,
)
from collections.abc import Coroutine, Generator
from typing import Any

# Python 3.12 starts tasks eagerly on request (asyncio.Task(..., eager_start=True)).
EAGER_TASKS = sys.version_info >= (3, 12)


def start_app(
    loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None]
) -> asyncio.Task[None] | None:
    """Run ``coroutine`` up to its first wait now. None when it finished in that step; else
    the task that runs the rest."""
    if EAGER_TASKS:
        task = asyncio.Task(coroutine, loop=loop, eager_start=True)  # type: ignore[call-arg]
        if not task.done():
            return task
        if not task.cancelled() and (exc := task.exception()) is not None:
            _report(loop, exc)
        return None
    return _start_directly(loop, coroutine)


def _report(loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
    """As a task that nobody awaits reports its exception, but now rather than when the
    garbage collector happens to find it."""
    loop.call_exception_handler(
        {"message": "Unhandled exception in a request's app", "exception": exc}
    )


class _FirstStepTask(asyncio.Task[None]):
    """The task an app sees during its first step, before it exists as a task; see above."""

    __slots__ = ()

    def get_coro(self) -> Any:
        # Not initialised yet (no loop): the C task would hand out a NULL coroutine.
        return super().get_coro() if self._loop is not None else None


def _start_directly(
    loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None]
) -> asyncio.Task[None] | None:
    if _current_tasks.get(loop) is not None:  # another task is running: wait for a turn
        return loop.create_task(coroutine)
    task = _FirstStepTask.__new__(_FirstStepTask)
    context = contextvars.copy_context()
    _enter_task(loop, task)
    try:
        yielded = context.run(coroutine.send, None)
    except StopIteration:
        return None
    except asyncio.CancelledError:
        return None  # a task that cancelled itself: nothing to continue, nobody to tell
    except Exception as exc:  # as a task would: reported, not raised into the protocol
        _report(loop, exc)
        return None
    finally:
        _leave_task(loop, task)
    task.__init__(_continue(coroutine, yielded), loop=loop, context=context)  # type: ignore[misc]
    return task


async def _continue(coroutine: Coroutine[Any, Any, None], yielded: Any) -> None:
    await _resume(coroutine, yielded)


@types.coroutine
def _resume(coroutine: Coroutine[Any, Any, None], yielded: Any) -> Generator[Any, None, None]:
    """Wait on what the first step yielded, as its task would have, then run the rest."""
    while True:
        try:
            yield yielded
        except BaseException as exc:  # cancelled while waiting: delivered where the app waits
            try:
                yielded = coroutine.throw(exc)
            except StopIteration:
                return
            continue
        yield from coroutine
        return
