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


def test_train_runs_its_project_only_and_leaves_other_queued_runs_to_the_server(tmp_path, tiny_weights, monkeypatch, capsys) -> None:
    from ml_backend import cli
    from ml_backend.jobs.training_jobs import TrainingState
    from ml_backend.settings import Settings
    from tests.jobs.test_training_jobs import FakeRunner

    env = {"MODEL_DIR": str(tmp_path / "state"), "MODEL_PATH": str(tiny_weights("detect")), "DEVICE": "cpu"}
    env |= {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "unused"}  # the fake runner reads no labels
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    state_db = Settings.from_env().paths.state_db
    state_db.parent.mkdir(parents=True)
    TrainingState(state_db).request(7, "50 new or changed labels")  # the server queued project 7 before
    runner = FakeRunner(["worse", "worse"])  # trained, not served: nothing to re-score (the second: were project 7 run too)
    real = cli.build_backend
    monkeypatch.setattr(cli, "build_backend", lambda settings, **kw: real(settings, training_runner=runner, **kw))

    assert cli.main(["train", "--project", "12"]) == 0
    assert [r.project_id for r in runner.requests] == [12]
    assert "project 12: idle: worse" in capsys.readouterr().out
    after = TrainingState(state_db)
    assert (after.get(7)["state"], after.get(7)["reason"]) == ("queued", "50 new or changed labels")
    assert after.get(12)["state"] == "idle"
