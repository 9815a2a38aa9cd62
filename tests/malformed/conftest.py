"""The malformed corpus runs once per HTTP/1.1 codec: the fast one and the h11 reference."""

from __future__ import annotations

import pytest

CODECS = ["fast", "h11"]


@pytest.fixture(scope="module", params=CODECS)
def codec(request: pytest.FixtureRequest) -> str:
    """The codec under test; module-scoped so that one server per codec serves the corpus."""
    return str(request.param)
