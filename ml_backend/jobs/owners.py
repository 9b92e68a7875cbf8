"""Who holds a piece of background work: a process, named ``host:pid``, alive or gone.

Several gunicorn workers (and the command line) share one ``MODEL_DIR``: a training run or a
project's scoring is claimed in ``state.db`` by one process at a time, and a claim left by a
process that died is taken over.

Example:
    >>> owner_alive(None)
    False
"""

from __future__ import annotations

import os
import socket
import time

HEARTBEAT_STALE_S = 300.0


def owner_id() -> str:
    """This process, as claims name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None, heartbeat: float | None = None) -> bool:
    """Is the process that made a claim still there? Same host: its pid (this very process counts as
    gone: a claim of its pid at start-up is a previous life's); another host (or a recreated
    container): a heartbeat within ``HEARTBEAT_STALE_S``."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return heartbeat is not None and time.time() - heartbeat < HEARTBEAT_STALE_S
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()
