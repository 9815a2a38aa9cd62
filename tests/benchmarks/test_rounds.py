"""benchmarks/run.py --rounds: every row measured several times in rotated order, the median
round reported, and a failure never voted away."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import run  # benchmarks/ is not a package


def _result(server: str, req_per_s: float | None = None, **fields: object) -> run.Result:
    return run.Result(scenario="h1", server=server, req_per_s=req_per_s, **fields)


def test_each_round_starts_one_server_later():
    rows = [run.SCENARIOS["h1"].rows[i] for i in range(3)]
    names = [[row.name for row in run.rotated(rows, r)] for r in range(4)]
    first, second, third = (row.name for row in rows)
    assert names == [
        [first, second, third],
        [second, third, first],
        [third, first, second],
        [first, second, third],
    ]


def test_the_median_round_is_reported_with_every_round():
    rounds = [_result("tiercel", 48_000, p50_ms=1.3), _result("tiercel", 52_000, p50_ms=1.1)]
    rounds.insert(1, _result("tiercel", 50_000, p50_ms=1.2))
    chosen = run.median_round(rounds, idle=False)
    assert (chosen.req_per_s, chosen.p50_ms) == (50_000, 1.2)
    assert chosen.rounds == [48_000, 50_000, 52_000]


def test_an_even_count_reports_the_lower_middle_round():
    rounds = [_result("granian", value) for value in (40_000, 46_000, 44_000, 42_000)]
    assert run.median_round(rounds, idle=False).req_per_s == 42_000


def test_idle_memory_rounds_are_ranked_by_memory_per_connection():
    rounds = [
        run.Result(scenario="idle-memory", server="tiercel", rss_kib_per_connection=value)
        for value in (3.1, 2.2, 2.9)
    ]
    chosen = run.median_round(rounds, idle=True)
    assert chosen.rss_kib_per_connection == 2.9
    assert chosen.rounds == [3.1, 2.2, 2.9]


def test_a_failed_round_is_the_result_whatever_the_others_measured():
    failed = _result("hypercorn-trio", error="server died during the run")
    rounds = [_result("hypercorn-trio", 2_400), failed, _result("hypercorn-trio", 2_300)]
    assert run.median_round(rounds, idle=False) is failed


def test_rounds_must_be_positive(capsys):
    try:
        run.parse_args(["--rounds", "0"])
    except SystemExit as exit:
        assert exit.code == 2
    else:
        raise AssertionError("--rounds 0 was accepted")
    assert "--rounds" in capsys.readouterr().err
