"""``--max-requests N --max-requests-jitter J``: each worker draws its own limit in N..N+J, so
that workers started together do not all restart together. Every worker says at start-up which
limit it drew ("will recycle after K requests"); these tests read those lines from the real
command, and check the drawing function itself."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from processes import Processes
from tiercel.apps.workers import WorkerSettings
from workers_harness import HERE, WorkersTiercel

LOCAL = "http://127.0.0.1:0"
ANNOUNCED = r"^\[worker (\d+)\] will recycle after (\d+) requests \(--max-requests\)$"


@pytest.fixture
def tiercel(processes: Processes) -> Callable[..., WorkersTiercel]:
    def start(*args: str) -> WorkersTiercel:
        return processes.add(WorkersTiercel(*args, cwd=HERE))

    return start


def announced_limits(server: WorkersTiercel, workers: int) -> dict[int, int]:
    """Each started worker's drawn limit, by pid, once they are all ready."""
    _, pids = server.started()
    matches = server.wait_for_lines(ANNOUNCED, workers)
    limits = {int(match.group(1)): int(match.group(2)) for match in matches}
    assert sorted(limits) == sorted(pids), (limits, pids, server.text)
    return limits


def test_each_worker_draws_its_own_limit_within_the_jitter(tiercel):
    server = tiercel(
        "workers_app:app",
        "--workers",
        "4",
        "--max-requests",
        "20",
        "--max-requests-jitter",
        "1000",
        "--urls",
        LOCAL,
        "--no-access-log",
    )
    limits = announced_limits(server, 4)
    assert all(20 <= limit <= 1020 for limit in limits.values()), limits
    # Four independent draws from 1001 values are all equal with probability 1001**-3.
    assert len(set(limits.values())) > 1, limits


def test_without_jitter_every_worker_uses_max_requests_exactly(tiercel):
    server = tiercel(
        "workers_app:app",
        "--workers",
        "3",
        "--max-requests",
        "20",
        "--urls",
        LOCAL,
        "--no-access-log",
    )
    limits = announced_limits(server, 3)
    assert set(limits.values()) == {20}, limits


def test_workers_without_max_requests_announce_no_limit(tiercel):
    server = tiercel("workers_app:app", "--workers", "2", "--urls", LOCAL)
    server.started()
    assert not any(re.search(ANNOUNCED, line) for line in server.lines), server.text


def test_request_limit_covers_n_to_n_plus_j():
    settings = WorkerSettings(workers=2, max_requests=20, max_requests_jitter=5)
    draws = [settings.request_limit() for _ in range(500)]
    # Missing one of the six values in 500 draws has probability below 6 * (5/6)**500 < 1e-38.
    assert set(draws) == set(range(20, 26)), sorted(set(draws))


def test_request_limit_without_jitter_or_limit():
    assert {WorkerSettings(2, 20, 0).request_limit() for _ in range(50)} == {20}
    assert WorkerSettings(2, None, 0).request_limit() is None
