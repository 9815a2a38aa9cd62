"""``tiercel --workers N``: real processes, real sockets, signals sent by process id."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable

import pytest
from processes import Processes, clean_env, pid_alive, wait_until_gone
from workers_harness import HERE, ClientLoop, WorkersTiercel, get, run, worker_pid

LOCAL = "http://127.0.0.1:0"
APPS = {"asyncio": "workers_app:app", "trio": "workers_app:app", "threads": "workers_app:wsgi_app"}


@pytest.fixture
def tiercel(processes: Processes) -> Callable[..., WorkersTiercel]:
    def start(*args: str, **kwargs) -> WorkersTiercel:
        return processes.add(WorkersTiercel(*args, cwd=HERE, **kwargs))

    return start


def distinct_pids(address: str, wanted: int, attempts: int = 300, **kwargs) -> set[int]:
    """Worker pids seen over new connections, until ``wanted`` different ones answered."""
    seen: set[int] = set()
    for _ in range(attempts):
        seen.add(worker_pid(address, **kwargs))
        if len(seen) >= wanted:
            break
    return seen


# -- serving ------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["asyncio", "trio", "threads"])
def test_workers_share_the_listening_socket(tiercel, adapter):
    server = tiercel(APPS[adapter], "--workers", "2", "--adapter", adapter, "--urls", LOCAL)
    address, pids = server.started()
    assert len(pids) == 2
    assert any(f"{adapter} adapter" in line for line in server.lines)
    assert any("sockets inherited" in line for line in server.lines)
    assert distinct_pids(address, 2) == set(pids)
    assert server.stop() == 0
    wait_until_gone(*pids)
    assert server.lines[-1] == "stopped"


def test_unix_socket_is_shared_and_removed_at_the_end(tiercel, tmp_path):
    path = tmp_path / "app.sock"
    server = tiercel("workers_app:app", "--workers", "2", "--urls", f"unix:{path}")
    address, pids = server.started()
    assert address == f"unix:{path}"
    assert distinct_pids(address, 2) == set(pids)
    assert server.stop() == 0
    assert not path.exists()


def test_a_socket_passed_as_fd_is_shared_with_the_workers(tiercel):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        fd = listening.fileno()
        server = tiercel(
            "workers_app:app", "--workers", "2", "--urls", f"fd://{fd}", pass_fds=(fd,)
        )
        address, pids = server.started()
        assert address == f"http://127.0.0.1:{listening.getsockname()[1]}"
        assert distinct_pids(address, 2) == set(pids)
        assert server.stop() == 0


def test_https_workers(tiercel, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    server = tiercel(
        "workers_app:app",
        "--workers",
        "2",
        "--urls",
        "https://127.0.0.1:0",
        "--certfile",
        str(tmp_path / "server.pem"),
    )
    address, pids = server.started()
    assert address.startswith("https://")
    assert distinct_pids(address, 2, tls=client) == set(pids)


# -- supervision --------------------------------------------------------------------------------


def test_a_killed_worker_is_replaced(tiercel):
    server = tiercel("workers_app:app", "--workers", "2", "--urls", LOCAL)
    address, pids = server.started()
    victim, survivor = pids
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker {victim} died \(killed by SIGKILL\); starting a replacement")
    seen = distinct_pids(address, 2)
    assert survivor in seen and victim not in seen
    assert server.proc.poll() is None


def test_sigkill_under_load_fails_only_requests_in_flight(tiercel):
    """The issue's test: only requests the killed worker held may fail, never a refused
    connection (the socket outlives every worker)."""
    server = tiercel("workers_app:app", "--workers", "2", "--urls", LOCAL, "--no-access-log")
    address, pids = server.started()
    clients = 4
    with ClientLoop(address, threads=clients) as load:
        load.wait_served(200)
        os.kill(pids[0], signal.SIGKILL)
        server.wait_for(rf"worker {pids[0]} died")
        load.wait_served(200)
    print(
        f"\nSIGKILL under load: {load.served} served, {len(load.failures)} failed "
        f"({load.failures}), by pid {dict(load.pids)}"
    )
    # Each client has at most one request in flight, so at most that many can be lost.
    assert len(load.failures) <= clients, load.failures
    assert not [f for f in load.failures if "refused" in f.lower()], load.failures


@pytest.mark.parametrize("adapter", ["asyncio", "trio", "threads"])
def test_sighup_restarts_every_worker_without_a_failed_request(tiercel, adapter):
    server = tiercel(
        APPS[adapter],
        "--workers",
        "2",
        "--adapter",
        adapter,
        "--urls",
        LOCAL,
        "--no-access-log",
    )
    address, old = server.started()
    with ClientLoop(address, threads=2) as load:
        load.wait_served(50)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_lines(r"is ready; stopping worker \d+ \(rolling restart\)", 2)
        wait_until_gone(*old)
        load.wait_served(50)
    assert load.failures == []
    new = distinct_pids(address, 2)
    assert not new & set(old)
    assert server.proc.poll() is None


def test_sigterm_drains_a_request_in_flight(tiercel):
    server = tiercel("workers_app:slow_logged", "--workers", "2", "--urls", LOCAL)
    address, pids = server.started()
    answer: list[tuple[int, bytes]] = []
    slow = threading.Thread(target=lambda: answer.append(get(address, "/slow?seconds=1")))
    slow.start()
    server.wait_for("slow request started")
    assert server.stop() == 0
    slow.join(5)
    status, body = answer[0]
    assert status == 200 and int(body) in pids
    assert not any(map(pid_alive, pids))


def test_a_worker_still_running_after_the_shutdown_timeout_is_killed(tiercel):
    server = tiercel(
        "workers_app:stuck_at_shutdown", "--workers", "2", "--urls", LOCAL,
        "--shutdown-timeout", "0",
    )  # fmt: skip
    _, pids = server.started()
    assert server.stop(timeout=20) == 0
    server.wait_for("stuck at shutdown")
    for pid in pids:
        server.wait_for(rf"worker {pid} still running .* after SIGTERM: killing it")
    assert not any(map(pid_alive, pids))


# -- --max-requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_max_requests_recycles_workers_without_a_failed_request(tiercel, workers):
    server = tiercel(
        "workers_app:app",
        "--workers",
        workers,
        "--max-requests",
        "20",
        "--max-requests-jitter",
        "5",
        "--urls",
        LOCAL,
        "--no-access-log",
    )
    address, first = server.started()
    recycled = r"is ready; stopping worker (\d+) \(it served its --max-requests\)"
    with ClientLoop(address, threads=2) as load:
        retired = [int(m.group(1)) for m in server.wait_for_lines(recycled, 2)]
        # The replacements answer too: with two workers, the next few answers may all come
        # from the worker that was not replaced, so wait for pids rather than a count.
        load.wait_for_pids(int(workers) + 2)
        load.wait_served(20)
    assert load.failures == []
    assert len(load.pids) >= int(workers) + 2
    # Each retired worker served its 20 (+ up to 5 of jitter) before it asked for a replacement.
    assert all(load.pids[pid] >= 20 for pid in retired), (retired, load.pids)
    assert set(retired) & set(first)


# -- start-up failures and bad configuration ----------------------------------------------------


def test_an_app_that_fails_to_import_stops_the_command_with_its_error():
    result = run("no_such_module_for_workers:app", "--workers", "3", "--urls", LOCAL)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("tiercel: error:")]
    assert len(errors) == 1, result.stderr
    assert "no_such_module_for_workers" in errors[0]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_repeated_start_up_failures_after_a_restart_stop_everything(tiercel, tmp_path):
    break_file = tmp_path / "broken"
    env = clean_env(WORKERS_TEST_BREAK_FILE=str(break_file))
    server = tiercel("workers_app:app", "--workers", "2", "--urls", LOCAL, env=env)
    _, pids = server.started()
    break_file.touch()  # the next import of the app fails, as after a broken deployment
    server.proc.send_signal(signal.SIGHUP)
    assert server.proc.wait(20) == 2
    server.wait_for(r"failed at start-up \(.*broken by the test")
    server.wait_for(r"failed at start-up 3 times in a row")
    assert server.lines[-1].startswith("tiercel: error: ")
    assert "broken by the test" in server.lines[-1]
    wait_until_gone(*pids)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--workers", "0"], "--workers takes a whole number above 0"),
        (["--workers", "-2"], "--workers takes a whole number above 0"),
        (["--workers", "many"], "--workers takes a whole number above 0"),
        (["--max-requests", "0"], "--max-requests takes a whole number above 0"),
        (["--max-requests-jitter", "5"], "--max-requests-jitter needs --max-requests"),
        (["--max-requests", "10", "--max-requests-jitter", "-1"], "not a whole number"),
        (["--adapter", "httpsys", "--workers", "2"], "need a socket adapter"),
    ],
)
def test_bad_worker_options(args, expected):
    result = run("workers_app:app", *args, "--urls", LOCAL)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("tiercel: error:")
    assert expected in result.stderr


def test_supervisor_reports_a_bind_error_once(tiercel):
    first = tiercel("workers_app:app", "--workers", "2", "--urls", LOCAL)
    address, _ = first.started()
    result = run("workers_app:app", "--workers", "2", "--urls", address)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "address already in use" in result.stderr


def test_workers_stop_when_the_supervisor_is_killed(tiercel):
    server = tiercel("workers_app:app", "--workers", "2", "--urls", LOCAL)
    _, pids = server.started()
    server.proc.kill()
    wait_until_gone(*pids, timeout=10)
    time.sleep(0)  # nothing else to check: the lifeline made them stop
