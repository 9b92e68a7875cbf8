"""The local runner's child process: settings reach it, failures come back with their reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from integrations.label_studio import LabelStudioError
from ml_backend.jobs.runners import LocalRunner
from ml_backend.settings import Settings
from ml_backend.training.run import TrainingError, TrainRequest


def test_a_failing_child_reports_its_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative MODEL_DIR, as in the default ./ml_state
    settings = Settings.from_env({"MODEL_DIR": "state", "LABEL_STUDIO_URL": "", "DEVICE": "cpu"})
    req = TrainRequest(3, str(tmp_path / "base.pt"), "v0", "state/training/project3/run-1", "test")
    handle = LocalRunner(settings).start(req)
    deadline = time.monotonic() + 120
    while not handle.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert handle.done()
    try:
        handle.outcome()
    except TrainingError as exc:
        assert "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in str(exc)
    else:
        raise AssertionError("a child without Label Studio settings must fail")
    assert (tmp_path / "state/training/project3/run-1/train.log").is_file()


def test_a_killed_child_is_reported_as_such(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "state"), "DEVICE": "cpu"})
    handle = LocalRunner(settings).start(TrainRequest(3, "base.pt", "v0", str(tmp_path / "run"), "test"))
    handle.cancel()
    assert handle.done()
    try:
        handle.outcome()
    except TrainingError as exc:
        assert str(exc).startswith("the training process ")  # killed by signal 15, or exited with 143
    else:
        raise AssertionError("a cancelled run has no outcome")


def test_rq_jobs_enqueued_under_the_old_path_still_find_their_function() -> None:
    """Redis keeps a job's function as a dotted path; jobs enqueued before the move name the old one."""
    from rq.utils import import_attribute

    from ml_backend.jobs.runners import rq_train

    assert import_attribute("ml_backend.training_runners.rq_train") is rq_train


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (LabelStudioError("GET /api/tasks: cannot reach Label Studio"), True),
        (LabelStudioError("HTTP 503", status=503), True),
        (LabelStudioError("HTTP 404", status=404), False),
        (TrainingError("no labels"), False),
        (ValueError("a bug"), False),
    ],
)
def test_a_failed_run_says_whether_label_studio_was_unavailable(exc, transient: bool) -> None:
    from ml_backend.jobs.runners import _error_json

    data = _error_json(exc)
    assert data["transient"] is transient and data["error"]


def test_an_rq_job_carries_the_controls_served_models_both_ways(tmp_path, monkeypatch) -> None:
    """The worker trains each control from the project's served version (sent as bytes, as the base weights are),
    and its new weights come back to the backend, which writes them beside the run."""
    from ml_backend.jobs import runners
    from ml_backend.training.run import TrainOutcome

    seen = {}

    def fake_run(req, settings, progress):
        seen["controls"] = {name: (c["version"], open(c["weights"], "rb").read()) for name, c in req.controls.items()}
        new = Path(req.workdir) / "scene-new.pt"
        new.write_bytes(b"trained scene")
        run = {"status": "trained", "promote": True, "weights": str(new), "model_path": "scenes.pt", "decision": "better"}
        return TrainOutcome(req.project_id, "skipped", req.base_version, "no held-out labels yet", controls={"scene": run})

    monkeypatch.setattr(runners, "run_request", fake_run)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "worker"))
    request = {"project_id": 3, "base_version": "v0", "reason": "test", "base_weights": "", "workdir": "",
               "controls": {"scene": {"weights": "", "version": "scenes-v2", "model_path": "scenes.pt"}}}  # fmt: skip
    result = runners.rq_train(request, b"base", {}, {"scene": b"served scene"})
    assert seen["controls"] == {"scene": ("scenes-v2", b"served scene")}
    assert result["controls"] == {"scene": b"trained scene"}

    class Job:
        id = "job-1"

        def get_status(self, refresh=True):
            return "finished"

        def return_value(self, refresh=True):
            return result

        def delete(self):
            pass

    handle = runners.RQHandle(Job(), tmp_path / "backend-run", 60)
    monkeypatch.setattr(handle, "_status", lambda: "finished")
    outcome = handle.outcome()
    assert Path(outcome.controls["scene"]["weights"]).read_bytes() == b"trained scene"
