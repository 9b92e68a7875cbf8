"""The README's main job, `python -m ml_backend demo`, run for real (short training)."""

import pytest

from ml_backend.tools.demo import run_demo

pytestmark = pytest.mark.e2e


def test_demo_sets_everything_up_and_is_idempotent(tmp_path) -> None:
    first = run_demo(tmp_path / "demo", ls_port=0, backend_port=0, n_images=3, epochs=2, wait=False)
    assert first.tasks == 3
    assert first.predicted == 3  # Label Studio stored a prediction of our version for every task
    assert first.model_version.startswith("detect-")
    assert sorted(first.queue) == list(range(1, 4))  # every task scored and placed in the queue
    again = run_demo(tmp_path / "demo", ls_port=0, backend_port=0, n_images=3, epochs=2, wait=False)
    assert (again.project_id, again.tasks, again.model_version) == (first.project_id, 3, first.model_version)
    assert again.predicted == 3
