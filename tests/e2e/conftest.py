"""A real Label Studio (own virtual environment, SQLite, loopback) and a real backend process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from integrations.label_studio import LabelStudioClient
from integrations.local_label_studio import LocalLabelStudio, free_port
from ml_backend.tools.synthetic import make_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory):
    ls = LocalLabelStudio(data_dir=tmp_path_factory.mktemp("label-studio"))
    ls.start()
    yield ls
    ls.stop()


@pytest.fixture(scope="session")
def pat(label_studio: LocalLabelStudio) -> str:
    return label_studio.personal_access_token()


@pytest.fixture(scope="session")
def ls_client(label_studio: LocalLabelStudio, pat: str) -> LabelStudioClient:
    return LabelStudioClient(label_studio.url, pat)


class BackendProcess:
    def __init__(self, port: int, proc: subprocess.Popen, log_path: Path):
        self.port, self.proc, self.log_path = port, proc, log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_backend(
    tmp_path: Path, env_extra: dict[str, str], timeout: float = 90.0, new_session: bool = False, port: int | None = None, workers: int = 1
) -> BackendProcess:
    """A real backend (``python -m ml_backend serve``: gunicorn) on ``port`` (default: a free one),
    with its state in ``tmp_path/state``; ``new_session``: in its own process group, which a crash
    test can kill whole."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "BASIC_AUTH_"))}
    env.update({"PYTHONPATH": str(ROOT), "MODEL_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"})
    env.update(env_extra)
    log_path = tmp_path / f"backend-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_backend", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=new_session,
    )
    backend = BackendProcess(port, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited:\n{backend.log()}")
        try:
            health = requests.get(f"{backend.url}/health", timeout=1).json()
            if health.get("model_loaded") or health.get("model_error"):
                return backend
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"backend did not start:\n{backend.log()}")


def stop_backend(backend: BackendProcess) -> None:
    backend.proc.terminate()
    try:
        backend.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        backend.proc.kill()


@pytest.fixture(scope="session")
def backend(tmp_path_factory, label_studio, pat, detect_weights):
    b = start_backend(
        tmp_path_factory.mktemp("backend"),
        {
            "MODEL_PATH": str(detect_weights),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
            "IMGSZ": "96",
            "SCORE_THRESHOLD": "0.3",
        },
    )
    yield b
    stop_backend(b)
    assert pat not in b.log(), "the Label Studio token must never appear in the backend log"


@pytest.fixture(scope="session")
def shape_files(tmp_path_factory) -> list[tuple[Path, object]]:
    """Synthetic images (path, SyntheticImage) to upload."""
    root = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(7)
    out = []
    for i in range(5):
        s = make_image(rng, 96, 80)
        p = root / f"shapes_{i}.jpg"
        s.image.save(p, quality=95)
        out.append((p, s))
    return out
