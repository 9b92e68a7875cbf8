"""Who holds a piece of background work: a process, named ``host:pid:start``, alive or gone.

Several gunicorn workers (and the command line) share one ``MODEL_DIR``: a training run or a
project's scoring is claimed in ``state.db`` by one process at a time, and a claim left by a
process that died is taken over.

A pid alone does not name a process for long: in a container that restarts, numbering starts
again from 1, so the pid of a worker killed mid-run soon names another process, or a thread of
the new worker (``kill(pid, 0)`` answers for thread ids too), and the dead worker's claim would
look alive for ever. So a claim also holds when its process started (``/proc/<pid>/stat``, clock
ticks since boot), and only the same pid with the same start counts as the same process.

Example:
    >>> owner_alive(None)
    False
    >>> owner_alive(owner_id())  # this very process, in this life
    True
"""

from __future__ import annotations

import os
import re
import socket
import time

HEARTBEAT_STALE_S = 300.0
_OWNER = re.compile(r"(?P<host>[^:]*):(?P<pid>\d+)(?::(?P<start>\d+))?")


def process_start(pid: int) -> str | None:
    """When process (or thread) ``pid`` started, in clock ticks since boot, or None (gone, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces: field 3 on
    return fields[19] if len(fields) > 19 else None  # field 22, starttime


def owner_id() -> str:
    """This process, as claims name it: ``host:pid:start`` (``host:pid`` where there is no ``/proc``)."""
    start = process_start(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{start}" if start else "")


def owner_alive(owner: str | None, heartbeat: float | None = None) -> bool:
    """Is the process that made a claim still there?

    Same host: a claim with its start is alive while that pid names a process that started then
    (this very process included); where that pid's start cannot be read (another user's process
    under ``hidepid``), while the pid answers. A claim without it (an older ``host:pid``, or no ``/proc``): its
    pid answers, and this very process counts as gone (a claim of its pid at start-up is a previous
    life's). Another host (or a recreated container): a heartbeat within ``HEARTBEAT_STALE_S``.
    """
    if not owner:
        return False
    m = _OWNER.fullmatch(owner)
    if m is None or m["host"] != socket.gethostname():
        return heartbeat is not None and time.time() - heartbeat < HEARTBEAT_STALE_S
    pid = int(m["pid"])
    if m["start"] is not None and process_start(os.getpid()) is not None:
        started = process_start(pid)
        if started is not None:
            return started == m["start"]
        # unreadable (gone, or /proc mounted with hidepid for another user's process): kill(0) tells which;
        # our own user's process with an unreadable stat is not the one that claimed
        return _pid_answers(pid) is None
    answers = _pid_answers(pid)
    return (pid != os.getpid()) if answers is True else answers is None


def _pid_answers(pid: int) -> bool | None:
    """``kill(pid, 0)``: True when it succeeds, None when the pid is another user's (PermissionError), False when gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return True
