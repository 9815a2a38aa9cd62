"""``tiercel --workers N --reuse-port``: each worker binds its own SO_REUSEPORT socket.

Real processes and real sockets. The rolling-restart test counts the requests a client loop
loses while every worker is replaced, with ``net.ipv4.tcp_migrate_req`` off (connections queued
on a stopping worker's own socket are reset: a small number may fail) and on (they move to another
worker: none may fail). The setting is per network namespace; the test sets it only where it is
writable and puts the old value back.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import Processes, wait_until_gone
from tiercel.apps.workers import migrate_req_setting
from workers_harness import HERE, ClientLoop, WorkersTiercel, run, worker_pid

LOCAL = "http://127.0.0.1:0"
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="these tests read Linux's socket tables"
)


@pytest.fixture
def tiercel(processes: Processes) -> Callable[..., WorkersTiercel]:
    def start(*args: str, **kwargs) -> WorkersTiercel:
        return processes.add(WorkersTiercel(*args, cwd=HERE, **kwargs))

    return start


def _migrate_req_writable() -> bool:
    try:
        with MIGRATE_REQ.open("r+") as setting:
            setting.write(setting.read())
    except OSError:
        return False
    return True


@pytest.fixture(params=["0", "1"])
def migrate_req(request) -> Iterator[str]:
    """net.ipv4.tcp_migrate_req set to the parameter for the test, then put back."""
    before = migrate_req_setting()
    if before is None:
        pytest.skip("this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+)")
    if before != request.param and not _migrate_req_writable():
        pytest.skip(f"net.ipv4.tcp_migrate_req is {before} and cannot be changed here")
    MIGRATE_REQ.write_text(request.param)
    try:
        yield request.param
    finally:
        MIGRATE_REQ.write_text(before)


def listening_sockets(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:``port``, from /proc/net/tcp (state 0A = LISTEN)."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# -- serving ------------------------------------------------------------------------------------


def test_each_worker_has_its_own_socket_and_all_of_them_serve(tiercel):
    server = tiercel("workers_app:app", "--workers", "3", "--reuse-port", "--urls", LOCAL)
    address, pids = server.started()
    assert any("SO_REUSEPORT" in line for line in server.lines if "supervising" in line)
    # Three listening sockets on the port, one in each worker; the supervisor's reservation of
    # the port is bound but not listening, so the kernel hands it no connection.
    listening = listening_sockets(port_of(address))
    assert len(listening) == 3, server.text
    for pid in pids:
        assert len(socket_inodes(pid) & listening) == 1, pid
    assert not socket_inodes(server.pid) & listening
    # The kernel spreads new connections over the workers by their addresses: over many
    # connections each worker answers, and none waits on a socket that nobody accepts from
    # (worker_pid fails on a timeout).
    seen = {worker_pid(address, timeout=5) for _ in range(300)}
    assert seen == set(pids)
    assert server.stop() == 0
    wait_until_gone(*pids)


def test_the_port_stays_held_while_workers_are_replaced(tiercel):
    """Port 0 becomes one port that the replacements bind again."""
    server = tiercel("workers_app:app", "--workers", "2", "--reuse-port", "--urls", LOCAL)
    address, old = server.started()
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("rolling restart done")
    wait_until_gone(*old)
    seen = {worker_pid(address, timeout=5) for _ in range(100)}
    assert len(seen) == 2 and not seen & set(old)


@pytest.mark.parametrize(
    ("adapter", "app", "clients"),
    [
        ("asyncio", "workers_app:app", 4),
        ("asyncio", "reuse_port_app:busy", 16),
        ("trio", "reuse_port_app:busy", 16),
    ],
)
def test_rolling_restart_under_load(tiercel, migrate_req, adapter, app, clients):
    """A light load, and a busy one where connections queue on every worker's own socket. The
    asyncio adapter takes its socket's queue as it stops (take_reuse_port_queue); the trio
    adapter does not, so there only tcp_migrate_req saves the queued connections."""
    server = tiercel(
        app,
        "--workers",
        "3",
        "--reuse-port",
        "--adapter",
        adapter,
        "--urls",
        LOCAL,
        "--no-access-log",
    )
    address, old = server.started()
    with ClientLoop(address, threads=clients) as load:
        load.wait_served(100)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("rolling restart done", timeout=30)
        wait_until_gone(*old)
        load.wait_served(100)
    # Logged with the start-up lines, which came before the restart's.
    warned = any("set sysctl net.ipv4.tcp_migrate_req=1" in line for line in server.lines)
    assert warned == (migrate_req == "0")
    resets = [f for f in load.failures if "reset" in f.lower() or "refused" in f.lower()]
    print(
        f"\n--reuse-port SIGHUP, {adapter}, {app}, {clients} clients, "
        f"tcp_migrate_req={migrate_req}: {load.served} served, {len(load.failures)} failed, "
        f"{len(resets)} of them reset or refused {load.failures}"
    )
    assert len(set(load.pids) - set(old)) == 3, load.pids  # every replacement served
    # Only connections queued on a stopping worker's socket can be lost; each client has one
    # at a time, and three workers stop.
    assert len(load.failures) <= clients * 3, load.failures
    if migrate_req == "1":
        assert resets == [], load.failures  # moved to the other workers' queues instead
        if app == "workers_app:app":
            assert load.failures == []


def test_max_requests_replaces_workers_that_bind_their_own_sockets(tiercel, migrate_req):
    server = tiercel(
        "workers_app:app",
        "--workers",
        "2",
        "--reuse-port",
        "--max-requests",
        "30",
        "--urls",
        LOCAL,
        "--no-access-log",
    )
    address, first = server.started()
    recycled = r"is ready; stopping worker (\d+) \(it served its --max-requests\)"
    clients = 2
    with ClientLoop(address, threads=clients) as load:
        retired = [int(m.group(1)) for m in server.wait_for_lines(recycled, 3, timeout=30)]
        load.wait_served(30)
    print(
        f"\n--reuse-port --max-requests, tcp_migrate_req={migrate_req}: {load.served} served, "
        f"{len(load.failures)} failed {load.failures}"
    )
    assert set(retired) & set(first)
    assert len(load.pids) >= 4  # the replacements bound the port again and served
    if migrate_req == "1":
        assert load.failures == []
    else:
        assert len(load.failures) <= clients * len(retired), load.failures


# -- bad configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["unix:{tmp}/app.sock", "fd://3", "systemd://"],
)
def test_addresses_that_cannot_be_bound_again_are_refused(url, tmp_path):
    result = run(
        "workers_app:app", "--workers", "2", "--reuse-port", "--urls", url.format(tmp=tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"tiercel: error: --reuse-port cannot be used with {url.format(tmp=tmp_path)}: only TCP "
        "addresses can be bound again by each worker; leave out --reuse-port to share the socket"
    ]
    assert not (tmp_path / "app.sock").exists()


def test_reuse_port_needs_workers():
    result = run("workers_app:app", "--reuse-port", "--urls", LOCAL)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "tiercel: error: --reuse-port is for worker processes: add --workers N (N above 1)"
    ]


def test_a_port_taken_without_so_reuseport_is_refused_by_the_supervisor():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "workers_app:app", "--workers", "2", "--reuse-port", "--urls",
            f"http://127.0.0.1:{port}",
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "address already in use" in result.stderr
