"""Logging for the host: server messages on ``tiercel.error``, one line per request on
``tiercel.access`` (Common Log Format), engine rejections on ``tiercel.rejections``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from tiercel.core.accesslog import format_access_line
from tiercel.core.context import Rejection
from tiercel.core.errors import ConfigError
from tiercel.core.headers import escape_for_log
from tiercel.core.stream import HttpStream

error_log = logging.getLogger("tiercel.error")
access_log = logging.getLogger("tiercel.access")
rejection_log = logging.getLogger("tiercel.rejections")

LEVELS = ("critical", "error", "warning", "info", "debug")
# Rejections are logged at INFO unless the user picks another level: WARNING makes every refused
# request visible behind a proxy even with --log-level warning, DEBUG keeps them out of a busy log.
REJECTION_LOG_LEVELS = ("debug", "info", "warning", "error")


def configure(level: str = "info") -> None:
    """Plain stderr logging for the command; programs that embed tiercel configure their own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("tiercel")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class LoggingObserver:
    """Turns engine notifications into log records."""

    def __init__(self, access: bool = True, rejection_level: str = "info") -> None:
        if rejection_level not in REJECTION_LOG_LEVELS:
            raise ConfigError(
                f"unknown rejection log level {rejection_level!r}; choose one of: "
                + ", ".join(REJECTION_LOG_LEVELS)
            )
        self.access = access
        self.rejection_level: int = logging.getLevelNamesMapping()[rejection_level.upper()]

    def response_completed(self, stream: HttpStream) -> None:
        if self.access and access_log.isEnabledFor(logging.INFO):
            access_log.info(format_access_line(stream))

    def request_rejected(self, rejection: Rejection) -> None:
        if rejection_log.isEnabledFor(self.rejection_level):
            remote = rejection.remote_address
            who = f"{remote[0]}:{remote[1]}" if remote else "-"
            status = rejection.status if rejection.status is not None else "closed"
            rejection_log.log(
                self.rejection_level,
                "rejected %s from %s (connection %s): %s [%s]",
                status,
                who,
                rejection.connection_id,
                rejection.message,
                rejection.reason,
            )


# -- rejection counts: at shutdown and on SIGUSR1 -----------------------------------------------


def format_rejection_summary(counts: Mapping[str, int]) -> str:
    """``requests refused before the app: 3 (bad_request 2, headers_too_large 1)``: the most
    frequent reason first, ties in name order."""
    reasons = sorted(((n, r) for r, n in counts.items() if n > 0), key=lambda x: (-x[0], x[1]))
    total = sum(n for n, _ in reasons)
    detail = ", ".join(f"{reason} {count}" for count, reason in reasons)
    return f"requests refused before the app: {total}" + (f" ({detail})" if detail else "")


def log_rejection_summary(counts: Mapping[str, int], *, when_none: bool = False) -> None:
    """One INFO line on ``tiercel.error`` with the counts by reason (``ServerContext.rejections``).
    At shutdown nothing is said when nothing was refused (``when_none`` says it anyway: SIGUSR1
    asked)."""
    if when_none or any(count > 0 for count in counts.values()):
        error_log.info("%s", format_rejection_summary(counts))


# -- an app's failures, as every adapter reports them ---------------------------------------------


def log_app_exception(interface: str, stream: HttpStream) -> None:
    """Inside ``except``: the app (``interface`` is "ASGI" or "WSGI") raised while serving
    ``stream``; logged with its traceback."""
    error_log.exception(
        "exception in %s app while serving %s %s",
        interface,
        stream.method,
        escape_for_log(stream.raw_target),  # never the decoded path: %1b, %0a
    )


def log_app_problem(stream: HttpStream, problem: str) -> None:
    """What the app left wrong when it returned (``app_finished``'s answer), e.g. no response."""
    error_log.error("%s %s: %s", stream.method, escape_for_log(stream.raw_target), problem)
