"""``read_range`` on both paths: ``os.pread`` where the OS has it, and seek-then-read where it
does not (Windows, so the HTTP.sys adapter under Wine reads files with the same function)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from tiercel.adapters.files import FileBodyError, read_range
from tiercel.core.files import READ_CHUNK_SIZE

CONTENT = bytes(range(256)) * (READ_CHUNK_SIZE // 256 * 3)  # three pieces


@pytest.fixture(params=["pread", "seek-and-read"])
def data_file(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BinaryIO]:
    if request.param == "seek-and-read":
        monkeypatch.delattr(os, "pread")
    path = tmp_path / "data.bin"
    path.write_bytes(CONTENT)
    with path.open("rb") as file:
        yield file


def test_a_range_comes_back_whole_in_bounded_pieces(data_file: BinaryIO) -> None:
    offset, count = 1000, READ_CHUNK_SIZE * 2 + 77
    pieces = list(read_range(data_file, offset, count))
    assert b"".join(pieces) == CONTENT[offset : offset + count]
    assert all(len(piece) <= READ_CHUNK_SIZE for piece in pieces)
    assert len(pieces) == 3


def test_a_range_past_the_end_of_the_file_is_an_error(data_file: BinaryIO) -> None:
    pieces = read_range(data_file, len(CONTENT) - 10, 20)
    assert next(pieces) == CONTENT[-10:]
    with pytest.raises(FileBodyError, match="ended 10 bytes before the range did"):
        next(pieces)
