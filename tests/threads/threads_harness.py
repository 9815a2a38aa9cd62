"""A real ``ThreadedServer`` on a loopback port, started and stopped from the test's thread,
and a log collector for asserting on what the server said."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from tiercel.adapters.threads_adapter import ThreadedServer
from tiercel.apps.options import ServerOptions
from tiercel.core.config import EngineConfig, Limits


class RunningThreadedServer:
    """``ThreadedServer`` serving in its own threads. ``url`` is its first address."""

    def __init__(
        self,
        app: Any,
        *,
        threads: int | None = 4,
        queue_limit: int | None = None,
        urls: str = "http://127.0.0.1:0",
        limits: Limits | None = None,
        root_path: str = "",
        shutdown_timeout: float = 5.0,
        access_log: bool = False,
        interface: str = "auto",
        protocols: str = "http1andhttp2",
        tls: Any = None,
        epoll: bool | None = None,
    ) -> None:
        options = ServerOptions(
            urls=urls,
            adapter="threads",
            engine=EngineConfig(limits=limits or Limits(), root_path=root_path),
            shutdown_timeout=shutdown_timeout,
            access_log=access_log,
            interface=interface,
            protocols=protocols,
            tls=tls,
        )
        self.server = ThreadedServer(
            app, options, threads=threads, queue_limit=queue_limit, epoll=epoll
        )
        self._stopped = False

    def start(self) -> RunningThreadedServer:
        self.server.start_serving()
        return self

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.server.stop_serving()

    def stop_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.stop, daemon=True)
        thread.start()
        return thread

    def wait_for_idle_workers(self, timeout: float = 2.0) -> int:
        """Wait until no worker is busy (a worker finishes its connection a moment after the
        client has its answer); the number still busy when it stopped waiting."""
        deadline = time.monotonic() + timeout
        while self.server.busy_workers and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.server.busy_workers

    @property
    def url(self) -> str:
        return self.server.addresses[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


class LogCollector(logging.Handler):
    """Collects the records of the ``tiercel`` loggers while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_:
            self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        with self._lock_:
            out = []
            for record in self.records:
                if record.levelno >= level:
                    text = record.getMessage()
                    if record.exc_info and record.exc_info[1] is not None:
                        text += f" | {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
                    out.append(text)
            return out

    def text(self, level: int = logging.DEBUG) -> str:
        return "\n".join(self.messages(level))
