"""ml_backend.jobs.owners: a claim's process, alive or gone, also when its pid is used again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ml_backend.jobs.owners import HEARTBEAT_STALE_S, owner_alive, owner_id, process_start

HOST = socket.gethostname()


@pytest.fixture
def other_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def thread_id():
    """The kernel id of a live thread of this process: what a dead worker's pid may name after a container restarts."""
    ready, stop = threading.Event(), threading.Event()
    box: list[int] = []

    def run() -> None:
        box.append(threading.get_native_id())
        ready.set()
        stop.wait()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait()
    yield box[0]
    stop.set()
    t.join()


def test_this_process_in_this_life_is_alive() -> None:
    assert owner_alive(owner_id()) is True
    assert owner_id().count(":") == 2 and owner_id().endswith(f":{process_start(os.getpid())}")


def test_another_live_process_is_alive_and_the_same_pid_started_at_another_time_is_not(other_process) -> None:
    start = process_start(other_process)
    assert start is not None
    assert owner_alive(f"{HOST}:{other_process}:{start}") is True
    assert owner_alive(f"{HOST}:{other_process}:{int(start) - 1}") is False  # the pid now names another process


def test_a_dead_workers_pid_that_now_names_a_thread_of_this_process_is_gone(thread_id) -> None:
    """The container case: the killed worker held pid N; after the restart, N is a thread of the new worker."""
    start = process_start(thread_id)
    assert start is not None and thread_id != os.getpid()
    os.kill(thread_id, 0)  # the kernel answers for a thread id: a bare pid check would call the claim alive
    assert owner_alive(f"{HOST}:{thread_id}:{int(start) - 100}") is False
    assert owner_alive(f"{HOST}:{thread_id}") is True  # the older form cannot tell (kept for claims made before)


@pytest.mark.parametrize(
    ("owner", "heartbeat_age", "alive"),
    [
        (None, None, False),
        ("", None, False),
        (f"{HOST}:999999999", None, False),  # no such pid
        (f"{HOST}:999999999:12345", None, False),
        (f"{HOST}:{os.getpid()}", None, False),  # the older form of this pid: a previous life's claim
        ("another-host:101:555", 10.0, True),  # another host: its heartbeat decides
        ("another-host:101", HEARTBEAT_STALE_S + 10, False),
        ("another-host:101:555", None, False),
    ],
)
def test_owner_alive(owner, heartbeat_age, alive) -> None:
    heartbeat = None if heartbeat_age is None else time.time() - heartbeat_age
    assert owner_alive(owner, heartbeat) is alive


@pytest.mark.parametrize(("kill_says", "alive"), [(PermissionError, True), (ProcessLookupError, False), (None, False)])
def test_a_claim_whose_process_start_cannot_be_read_asks_kill(monkeypatch, kill_says, alive) -> None:
    """/proc mounted with hidepid hides another user's process: a live one must not be taken over (a second run)."""
    import ml_backend.jobs.owners as owners

    real = owners.process_start
    monkeypatch.setattr(owners, "process_start", lambda pid: None if pid == 4242 else real(pid))

    def kill(pid: int, sig: int) -> None:
        assert (pid, sig) == (4242, 0)
        if kill_says is not None:
            raise kill_says()

    monkeypatch.setattr(owners.os, "kill", kill)
    assert owner_alive(f"{HOST}:4242:777") is alive
