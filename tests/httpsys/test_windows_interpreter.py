"""tests/httpsys run INSIDE the Windows interpreter (Wine's CPython on Linux), with its pytest.

The marshalling and fake-kernel tests run there on Windows' own ctypes, so the structure layouts
and the adapter's logic are checked against the Windows ABI, not only Linux's. And
test_inside_windows.py runs the adapter in-process in that interpreter against Wine's HTTP.sys
while the client is here, on the Linux side: the Windows-side test prints its URL, this side
sends the request, and the Windows-side pytest reports whether the app saw it right.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from httpsys_harness import ON_WINDOWS, ROOT, WINE_ENV, run_windows_python

pytestmark = [pytest.mark.peer("wine"), pytest.mark.timeout(300)]

UNIT_MODULES = ("test_marshal.py", "test_adapter_fake.py")
# Linux-only on purpose: the one-line error on a platform without httpapi.dll.
SKIPPED_ON_WINDOWS = {"test_the_command_says_in_one_line_that_there_is_no_httpapi_dll"}


def windows_path(path: Path) -> str:
    """How the Windows interpreter names a path of this checkout (Wine maps / to Z:)."""
    return str(path) if ON_WINDOWS else "Z:" + str(path).replace("/", "\\")


def collected_here(modules: tuple[str, ...]) -> set[str]:
    """The test ids pytest collects from ``modules`` on this side."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *(f"tests/httpsys/{m}" for m in modules)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return {line.split("::", 1)[1] for line in done.stdout.splitlines() if "::" in line}


def test_the_unit_tests_pass_inside_the_windows_interpreter(windows_python, tmp_path):
    report = tmp_path / "report.xml"
    output = run_windows_python(
        windows_python,
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
        f"--junitxml={windows_path(report)}",
        *(windows_path(ROOT / "tests" / "httpsys" / m) for m in UNIT_MODULES),
        timeout=240,
    )  # fmt: skip
    assert report.exists(), output
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes: dict[str, str] = {}
    for case in cases:
        name = case.get("name", "")
        kinds = [child.tag for child in case if child.tag in {"failure", "error", "skipped"}]
        outcomes[name] = kinds[0] if kinds else "passed"
    failed = {name: kind for name, kind in outcomes.items() if kind in {"failure", "error"}}
    assert not failed, output
    # Every test collected on Linux ran there too, and only the Linux-only one was skipped.
    assert set(outcomes) == collected_here(UNIT_MODULES), output
    assert {n for n, kind in outcomes.items() if kind == "skipped"} == SKIPPED_ON_WINDOWS, output
    # Real Windows ctypes (not Linux's) agrees with the x64 layouts the binding declares.
    assert outcomes["test_the_structures_have_the_windows_x64_layout"] == "passed"
    assert f"{len(outcomes) - 1} passed, 1 skipped" in output


def test_the_adapter_in_the_windows_interpreter_serves_a_client_on_this_side(windows_python):
    if ON_WINDOWS:
        pytest.skip("on Windows, test_inside_windows.py runs directly with its own client")
    process = subprocess.Popen(
        [*windows_python, "-u", "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         windows_path(ROOT / "tests" / "httpsys" / "test_inside_windows.py")],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, **WINE_ENV, "TIERCEL_HTTPSYS_OUTSIDE_CLIENT": "1"},
    )  # fmt: skip
    lines: list[str] = []
    serving = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if line.startswith("SERVING ") and not url:
                url.append(line.split()[1])
                serving.set()
        serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        serving.wait(180)
        assert url, "\n".join(lines)
        port = int(url[0].rsplit(":", 1)[1].strip("/"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/inside/a%20b?x=1", body=b"from the other side")
        response = conn.getresponse()
        data = response.read()
        conn.close()
        assert response.status == 200
        assert response.getheader("x-served-by") == "in-process"
        assert json.loads(data) == {
            "method": "POST",
            "path": "/inside/a b",
            "body": "from the other side",
        }
        assert process.wait(120) == 0, "\n".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        reader.join(5)
    assert "1 passed" in "\n".join(lines)
