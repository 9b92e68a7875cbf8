import subprocess
import sys
from pathlib import Path

import pytest
import requests

from integrations.local_label_studio import free_port
from tests.e2e.conftest import start_backend, stop_backend

ROOT = Path(__file__).resolve().parents[1]


def test_bad_setting_stops_the_start_with_a_clear_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ml_backend", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SCORE_THRESHOLD": "lots", "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "SCORE_THRESHOLD='lots' is not valid" in proc.stderr


def test_importing_the_package_loads_no_model_and_no_torch() -> None:
    code = "import sys, ml_backend.server, ml_backend.cli, integrations.label_studio; print('torch' in sys.modules, 'ultralytics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.parametrize("model_path", ["/nonexistent/weights/best.pt", "yolo-offline-test-missing.pt"])
def test_server_starts_without_weights_and_says_which(tmp_path, model_path) -> None:
    backend = start_backend(tmp_path, {"MODEL_PATH": model_path})
    try:
        health = requests.get(f"{backend.url}/health", timeout=10).json()
        assert health["status"] == "UP" and health["model_loaded"] is False
        assert model_path in health["model_error"]
    finally:
        stop_backend(backend)
    assert model_path in backend.log()


def test_unwritable_model_dir_stops_the_start_with_a_clear_message(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = subprocess.run(
        [sys.executable, "-m", "ml_backend", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MODEL_DIR": str(blocker / "state")},
    )
    assert proc.returncode == 2
    assert "error: MODEL_DIR=" in proc.stderr and "is not writable" in proc.stderr
