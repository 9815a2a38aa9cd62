"""WSGI apps the tests serve: a plain PEP 3333 app with many routes, a Flask app, and apps that
break the rules on purpose. Also served by the real ``tiercel`` command (cwd = this folder)."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any
from urllib.parse import unquote

import flask

FILE_BODY = bytes(range(256)) * 4096  # 1 MiB, for file sends


class AppState:
    """What the apps saw, shared between the server's threads and the test."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.closed: list[str] = []  # iterables whose close() was called
        self.events: dict[str, threading.Event] = {}
        self.upload_reads: list[int] = []  # sizes of wsgi.input reads, in order
        self.upload_first_read_at: float | None = None
        self.upload_total = 0
        self.upload_max_read = 0
        self.started: list[str] = []
        self.lock = threading.Lock()

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())


STATE = AppState()


class ClosingBody:
    """An iterable with close(), to check that the server calls it."""

    def __init__(self, name: str, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.name = name
        self.chunks = chunks
        self.fail_at = fail_at

    def __iter__(self) -> Any:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise RuntimeError("the body failed halfway")
            yield chunk

    def close(self) -> None:
        STATE.closed.append(self.name)


def _text(start_response: Any, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def plain_app(environ: dict[str, Any], start_response: Any) -> Any:
    """A plain WSGI app: no framework. The path picks the behaviour."""
    path = environ["PATH_INFO"]
    if path == "/environ":
        environ["wsgi.input"].read()
        keys = {
            key: value
            for key, value in environ.items()
            if isinstance(value, str | bool | tuple | int) and key != "wsgi.version"
        }
        keys["wsgi.version"] = list(environ["wsgi.version"])
        keys["file_wrapper"] = environ["wsgi.file_wrapper"].__name__
        return _text(start_response, json.dumps(keys).encode())
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return _text(start_response, body)
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        return _text(start_response, json.dumps([line.decode() for line in lines]).encode())
    if path == "/upload":  # read in 64 KiB reads, recording when and how much
        stream = environ["wsgi.input"]
        gate = environ.get("QUERY_STRING") == "gate"
        while True:
            data = stream.read(65536)
            if not data:
                break
            with STATE.lock:
                if STATE.upload_first_read_at is None:
                    STATE.upload_first_read_at = time.monotonic()
                STATE.upload_total += len(data)
                STATE.upload_max_read = max(STATE.upload_max_read, len(data))
                STATE.upload_reads.append(len(data))
            if STATE.upload_total >= 65536:
                STATE.event("upload_started").set()
                if gate:
                    STATE.event("upload_release").wait(10)
        return _text(start_response, str(STATE.upload_total).encode())
    if path == "/write":  # the write() callable, then an empty iterable
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"")
        write(bytearray(b"with write()"))
        return []
    if path == "/stream":  # a generator: chunked
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part {i}\n".encode() for i in range(5))
    if path == "/closing":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody("closing", [b"a", b"b", b"c"])
    if path == "/closing-fails":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody("closing-fails", [b"a", b"b", b"c"], fail_at=1)
    if path == "/too-long":  # more bytes than the Content-Length
        start_response("200 OK", [("Content-Length", "5")])
        return iter([b"12345", b"6789"])
    if path == "/too-short":  # fewer bytes than the Content-Length
        start_response("200 OK", [("Content-Length", "10")])
        return iter([b"12345"])
    if path == "/file":
        handle = open(unquote(environ["QUERY_STRING"]), "rb")  # noqa: SIM115
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        wrapper = environ["wsgi.file_wrapper"](handle, 8192)
        STATE.started.append("file")
        return wrapper
    if path == "/twice":
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b"never"]
    if path == "/bad-status":
        start_response("OK 200", [])
        return [b"never"]
    if path == "/int-status":
        start_response(200, [])
        return [b"never"]
    if path == "/crlf-header":
        start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: evil=1")])
        return [b"never"]
    if path == "/bytes-header":
        start_response("200 OK", [(b"X-Bytes", b"value")])
        return [b"never"]
    if path == "/no-start":
        return [b"body without start_response"]
    if path == "/text-body":
        start_response("200 OK", [])
        return ["text, not bytes"]
    if path == "/raises":
        raise RuntimeError("the app failed on purpose")
    if path == "/exc-info-before":  # an error handler replaces the response before it is sent
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Service Unavailable", [("X-Handled", "yes")], sys.exc_info())
        return [b"handled"]
    if path == "/exc-info-after":  # too late: the headers went out, start_response re-raises
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first part")
        try:
            raise ValueError("failed after the headers were sent")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"never"]
    if path == "/hop-by-hop":
        start_response("200 OK", [("Connection", "keep-alive"), ("Transfer-Encoding", "chunked")])
        return [b"plain body"]
    if path == "/slow":
        STATE.started.append("slow")
        STATE.event("slow_started").set()
        STATE.event("slow_release").wait(float(environ.get("QUERY_STRING") or 10))
        return _text(start_response, b"slow done")
    if path == "/errors":
        environ["wsgi.errors"].write("a line for wsgi.errors\npartial ")
        environ["wsgi.errors"].write("and its end\n")
        environ["wsgi.errors"].flush()
        return _text(start_response, b"logged")
    if path == "/head-length":
        start_response("200 OK", [("Content-Length", "11")])
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else b"hello world"]
    return _text(start_response, f"hello {path}".encode())


# -- Flask ----------------------------------------------------------------------------------

flask_app = flask.Flask(__name__)


@flask_app.get("/")
def index() -> str:
    return "flask index"


@flask_app.get("/json")
def json_route() -> Any:
    return {"ok": True, "args": flask.request.args.to_dict()}


@flask_app.post("/form")
def form_route() -> str:
    return f"name={flask.request.form['name']} files={sorted(flask.request.files)}"


@flask_app.post("/upload")
def upload_route() -> Any:
    upload = flask.request.files["file"]
    data = upload.read()
    return {"filename": upload.filename, "size": len(data), "sum": sum(data) % 65536}


@flask_app.post("/json-echo")
def json_echo() -> Any:
    return {"got": flask.request.get_json()}


@flask_app.get("/stream")
def stream_route() -> Any:
    def generate() -> Any:
        for i in range(3):
            yield f"chunk {i}\n"

    return flask.Response(flask.stream_with_context(generate()), mimetype="text/plain")


@flask_app.get("/file")
def file_route() -> Any:
    return flask.send_file(flask.current_app.config["FILE_PATH"], mimetype="application/x-test")


@flask_app.get("/slow")
def flask_slow() -> str:
    STATE.event("flask_slow_started").set()
    STATE.event("flask_slow_release").wait(10)
    return "slow flask done"


@flask_app.get("/fail")
def flask_fail() -> str:
    raise RuntimeError("a Flask view failed")


@flask_app.get("/thread")
def which_thread() -> str:
    return threading.current_thread().name


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app, for the tests that check it is refused by the threads adapter."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})
