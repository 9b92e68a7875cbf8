"""Named crash points, for the crash tests: ``AL_CRASH_AT=<name>`` kills the backend there.

The reliability tests need a ``kill -9`` at exact moments (between storing a trained model and
serving it, between switching the served model and re-scoring, in the middle of pushing
predictions) that an outside ``kill`` can only hit by luck. When ``AL_CRASH_AT`` names a point,
the process that reaches it sends ``SIGKILL`` to its whole process group (the gunicorn master,
its worker and a training child: like a container dying). Unset, as in production, a crash point
is a dictionary lookup and nothing else.

Points: ``promotion:stored`` (a trained model is stored, not yet served), ``promotion:switched``
(the served pointer is switched, the pool not yet re-scored), ``scoring:pushed`` (a re-score's
predictions are in Label Studio, the old version's not yet retired nor the scores stored).

Example:
    >>> crash_point("promotion:stored")  # AL_CRASH_AT unset: returns
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

CRASH_ENV = "AL_CRASH_AT"
POINTS = ("promotion:stored", "promotion:switched", "scoring:pushed")


def crash_point(name: str) -> None:
    """Kill this process group with SIGKILL when ``AL_CRASH_AT`` is ``name``."""
    if os.environ.get(CRASH_ENV) != name:
        return
    log.critical("AL_CRASH_AT=%s: killing the backend (SIGKILL to process group %s) for a crash test", name, os.getpgrp())
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.killpg(os.getpgrp(), signal.SIGKILL)


SLOW_LOAD_ENV = "AL_SLOW_LOAD"
SLOW_TRAIN_ENV = "AL_SLOW_TRAIN"


def _sleep_from(env: str, stop: threading.Event | None = None) -> None:
    seconds = os.environ.get(env)
    if seconds:
        if stop is not None:
            stop.wait(float(seconds))
        else:
            time.sleep(float(seconds))


def slow_load(stop: threading.Event | None = None) -> None:
    """Sleep ``AL_SLOW_LOAD`` seconds before a model load (the tests' stand-in for a busy machine),
    or until ``stop`` is set (a backend shutting down)."""
    _sleep_from(SLOW_LOAD_ENV, stop)


def slow_train() -> None:
    """Sleep ``AL_SLOW_TRAIN`` seconds as a training run starts (so a test can kill it mid-run)."""
    _sleep_from(SLOW_TRAIN_ENV)
