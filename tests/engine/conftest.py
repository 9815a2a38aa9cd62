"""Every engine test runs once per HTTP/1.1 codec: the fast one and the h11 reference.

A module that sets ``RUNS_BOTH_CODECS = True`` (the differential tests) compares the two
itself and runs once.
"""

from __future__ import annotations

from collections.abc import Iterator

import engine_harness
import pytest

CODECS = ["fast", "h11"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "codec" in metafunc.fixturenames and not getattr(metafunc.module, "RUNS_BOTH_CODECS", False):
        metafunc.parametrize("codec", CODECS, indirect=True)


@pytest.fixture(autouse=True)
def codec(request: pytest.FixtureRequest) -> Iterator[str]:
    """The codec every ``Client`` and ``make_context`` of the test uses by default."""
    name = getattr(request, "param", engine_harness.default_codec)
    saved, engine_harness.default_codec = engine_harness.default_codec, name
    yield name
    engine_harness.default_codec = saved
