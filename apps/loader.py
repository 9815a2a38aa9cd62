"""Finding the app the user named: ``module:attribute`` (attribute may be dotted), optionally a
factory to call. Every failure is one ``AppLoadError`` line, never a traceback. Also: telling an
ASGI app from a WSGI one (``--interface auto``)."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any

from tiercel.core.errors import TiercelError


class AppLoadError(TiercelError):
    pass


def load_app(spec: str, factory: bool = False) -> Any:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(
            f"APP must look like 'module:attribute' (got {spec!r}), e.g. 'myproject.main:app'"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                "(run tiercel from your project's directory, or check the name)"
            ) from None
        raise AppLoadError(f"importing {module_name!r} failed: {_last_frame(exc)}") from None
    except Exception as exc:
        raise AppLoadError(f"importing {module_name!r} failed: {_last_frame(exc)}") from None
    app: Any = module
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if factory:
        if not callable(app):
            raise AppLoadError(f"--factory: {spec!r} is not callable")
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(f"the factory {spec!r} raised: {_last_frame(exc)}") from None
    if not callable(app):
        raise AppLoadError(f"{spec!r} is not callable, so it is neither an ASGI nor a WSGI app")
    return app


def looks_like_asgi3(app: Any) -> bool:
    target = app if inspect.isroutine(app) else getattr(app, "__call__", app)  # noqa: B004
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(app)


def detect_interface(app: Any) -> str | None:
    """Which interface ``app`` speaks: "asgi", "wsgi", or None when it is not clear.

    An async callable is ASGI 3. An object with a ``wsgi_app`` method (Flask) is WSGI. Otherwise
    the call signature decides: two positional parameters ``(environ, start_response)`` is WSGI,
    three ``(scope, receive, send)`` is ASGI (a sync callable that returns an awaitable, as some
    middleware does). ``*args``, C callables and anything else are unclear.
    """
    if looks_like_asgi3(app):
        return "asgi"
    if callable(getattr(app, "wsgi_app", None)):
        return "wsgi"
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    required = [p for p in params if p.kind in positional and p.default is p.empty]
    if any(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty for p in params):
        return None
    return {2: "wsgi", 3: "asgi"}.get(len(required))


def resolve_interface(app: Any, requested: str, unclear: str = "asgi") -> str:
    """The interface to call ``app`` with: ``requested`` unless it is "auto"."""
    if requested != "auto":
        return requested
    return detect_interface(app) or unclear


def _last_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
