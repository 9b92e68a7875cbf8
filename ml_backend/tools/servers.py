"""A backend process for the tools (demo, benchmarks, load test): start it, wait for its model.

Example:
    >>> proc = start_backend(Path("/tmp/demo"), 9090, {"MODEL_PATH": "/tmp/best.pt"})  # doctest: +SKIP
    >>> wait_for_model("http://127.0.0.1:9090", proc)["model_loaded"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]  # the folder holding ml_backend/


def start_backend(workdir: Path, port: int, env_extra: dict[str, str]) -> subprocess.Popen:
    """``python -m ml_backend serve`` on 127.0.0.1:``port`` in a session of its own, logging to ``workdir/backend.log``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    logf = open(workdir / "backend.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ml_backend", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )


def wait_for_model(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    """Wait until the backend at ``url`` has loaded its model; returns its ``/health``.

    Raises:
        RuntimeError: the process exited, the weights could not be had, or ``timeout`` passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the backend exited; see backend.log in the demo folder")
        try:
            health = requests.get(f"{url}/health", timeout=1).json()
            if health.get("model_loaded"):
                return health
            if health.get("model_error"):
                raise RuntimeError(health["model_error"])
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the backend did not load its model within {timeout:.0f}s")
