"""``kill -9`` of the whole backend (gunicorn master, worker, training child) at the worst moments,
then a restart on the same ``MODEL_DIR`` and port: nothing is lost, the interrupted work runs again.

Moments: while a run trains (killed from outside), right after a trained model is stored and
before it is served, right after the served pointer is switched and before the pool is
re-scored, and in the middle of that re-score (predictions pushed, old version not yet retired).
The three inner moments are hit exactly with ``AL_CRASH_AT`` (:mod:`ml_backend.faults`).
Label Studio is real; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests

from ml_backend.inference.model import load_weights

from .conftest import start_backend, stop_backend
from .test_retraining import TRAIN_ENV, make_project, training_status, wait_for

pytestmark = pytest.mark.e2e


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _check_registry(state: Path, pid: int) -> str | None:
    """Every stored version's weights load; the served pointer (if any) names a stored version."""
    root = state / "projects" / str(pid) / "models"
    versions = root / "versions"
    stored = sorted(p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".tmp-")) if versions.is_dir() else []
    for name in stored:
        weights = next((versions / name).glob("weights.*"))
        load_weights(str(weights), None)  # a half-written file would not load
    pointer = root / "current"
    if not pointer.exists():
        return None
    current = pointer.read_text().strip()
    assert current in stored, (current, stored)
    return current


@pytest.mark.parametrize("moment", ["training", "promotion:stored", "promotion:switched", "scoring:pushed"])
def test_kill_9_and_restart_lose_nothing(ls_client, label_studio, pat, detect_weights, tmp_path, moment) -> None:
    env = {
        "MODEL_PATH": str(detect_weights),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": pat,
        "RETRAIN_MIN_NEW_LABELS": "6",
        "PROMOTION": "always",
        **TRAIN_ENV,
    }
    first = start_backend(tmp_path, {**env, **({"AL_CRASH_AT": moment} if moment != "training" else {})}, new_session=True)
    second = None
    try:
        base = requests.get(f"{first.url}/health", timeout=10).json()["model_version"]
        pid, truth = make_project(ls_client, tmp_path, f"e2e crash {moment.replace(':', ' ')}", 8, seed=41)
        ls_client.add_ml_backend(pid, first.url, title="crash test")
        tasks = sorted(truth)
        for tid in tasks[:6]:
            ls_client.create_annotation(tid, truth[tid])

        if moment == "training":
            wait_for(
                lambda: (s := training_status(first, pid))["state"] == "training" and (s["progress"] or {}).get("stage") == "training",
                120,
                "the run to be training",
            )
            os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=300)  # a crash point kills the group itself
        assert first.proc.returncode == -signal.SIGKILL, first.log()[-3000:]
        wait_for(lambda: _group_gone(first.proc.pid), 120, "every process of the backend (the training child too) to be gone")
        if moment != "training":
            assert f"AL_CRASH_AT={moment}" in first.log()
        served_before = _check_registry(tmp_path / "state", pid)
        assert (served_before is not None) == (moment in ("promotion:switched", "scoring:pushed"))

        second = start_backend(tmp_path, env, port=first.port, new_session=True)  # same MODEL_DIR, same URL for Label Studio
        after = training_status(second, pid)
        if moment != "scoring:pushed":  # (there the run may have finished before the scoring thread crashed)
            assert after["state"] in ("queued", "training") and "stopped during the previous run" in after["reason"], after
            assert after["labels_since_training"] == 6  # no label count lost
        assert after["model_version"] == (served_before or base)  # the served model is intact

        done = wait_for(lambda: (s := training_status(second, pid))["state"] == "idle" and s["runs"] >= 1 and s, 300, "the run to finish")
        assert done["labels_since_training"] == 0 and done["last_run"]["promoted"] is True, done
        versions = requests.get(f"{second.url}/versions", params={"project": pid}, timeout=30).json()
        served = versions["model_version"]
        assert served != base and [d["version"] for d in versions["details"] if d["served"]] == [served]
        assert _check_registry(tmp_path / "state", pid) == served

        # The pool is re-scored with the served model, the interrupted re-score included: one
        # prediction of ours per task, of that version; the scores say the same.
        def rescored() -> bool:
            return all([p["model_version"] for p in ls_client.task_predictions(t)] == [served] for t in tasks)

        def scores() -> list[dict]:
            r = requests.get(f"{second.url}/scores", params={"project": pid}, timeout=30)
            return r.json()["scores"] if r.status_code == 200 else []

        wait_for(rescored, 180, "one prediction of the served version on every task")
        stored = wait_for(lambda: (s := scores()) and {x["model_version"] for x in s} == {served} and s, 60, "the stored scores")
        assert len(stored) == len(tasks)
        r = requests.post(
            f"{second.url}/predict",
            json={
                "tasks": [ls_client.list_tasks(pid)[-1]],
                "project": f"{pid}.0",
                "label_config": ls_client.get_project(pid)["label_config"],
            },
            timeout=100,
        )
        assert r.status_code == 200 and r.json()["results"][0]["model_version"] == served
        assert "Traceback" not in second.log(), second.log()[-3000:]
    finally:
        if first.proc.poll() is None:
            os.killpg(first.proc.pid, signal.SIGKILL)
        if second is not None:
            stop_backend(second)
