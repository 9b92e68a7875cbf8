"""The auto-label loop against a real Label Studio: labels in, a retrained model served, the queue reordered.

Annotations are created through Label Studio's API; Label Studio's own webhooks start the
training (a child process of the backend, or an RQ worker on a real Redis server), and Label
Studio's own train button is pressed through its API. Nothing of Label Studio is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests

from integrations.queue_view import serving_order
from ml_backend.tools.synthetic import ls_box_result, make_image

from .conftest import ROOT, start_backend, stop_backend
from .test_label_studio import CONFIG

pytestmark = pytest.mark.e2e

LABELS = {0: "Circle", 1: "Square", 2: "Triangle"}
TRAIN_ENV = {
    "IMGSZ": "96",
    "SCORE_THRESHOLD": "0.3",
    "TRAIN_IMGSZ": "96",
    "TRAIN_EPOCHS": "2",
    "TRAIN_BATCH": "8",
    "DEVICE": "cpu",
    "TRAIN_VAL_FRACTION": "0.3",
    "RESCORE_MIN_NEW_LABELS": "1000",
    "AL_CLUSTERS": "3",
}


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def make_project(ls_client, tmp_path: Path, title: str, n: int, seed: int) -> tuple[int, dict[int, list[dict]]]:
    """A project of ``n`` uploaded shape images; returns its id and each task's true boxes."""
    rng = np.random.default_rng(seed)
    truth, paths = {}, []
    for i in range(n):
        s = make_image(rng, 96, 80)
        p = tmp_path / f"{title.replace(' ', '_')}_{i}.jpg"
        s.image.save(p, quality=95)
        paths.append(str(p))
        truth[p.name] = ls_box_result(s, LABELS)
    pid = ls_client.create_project(title, CONFIG)["id"]
    ls_client.upload_files(pid, paths)
    by_task = {}
    for t in ls_client.list_tasks(pid):
        name = next(k for k in truth if t["data"]["image"].endswith(k))
        by_task[t["id"]] = truth[name]
    return pid, by_task


def training_status(backend, pid: int) -> dict:
    return requests.get(f"{backend.url}/training", params={"project": pid}, timeout=30).json()


def test_new_labels_retrain_promote_and_reorder_the_queue(on_db, detect_weights, tmp_path) -> None:
    ls_client, label_studio, pat = on_db.client, on_db.server, on_db.pat
    backend = start_backend(
        tmp_path,
        {
            "MODEL_PATH": str(detect_weights),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
            "RETRAIN_MIN_NEW_LABELS": "8",
            # The served shapes model is already right on these images, so a 2-epoch fine-tune on 8 labels is worse on
            # them and the default rule keeps it back (worse_on_labeled: tests/training/test_promotion.py, and the demo's
            # e2e). This test is about the loop around a promotion: every run is served.
            "PROMOTION": "always",
            "PSEUDO_LABELS": "on",
            "PSEUDO_MIN_SUPPORT": "1",
            "PSEUDO_PRECISION": "0.6",
            **TRAIN_ENV,
        },
    )
    try:
        base = requests.get(f"{backend.url}/health", timeout=10).json()["model_version"]
        pid, truth = make_project(ls_client, tmp_path, "e2e retrain", 16, seed=31)
        ml = ls_client.add_ml_backend(pid, backend.url, title="retrain")  # Label Studio adds its webhook to /webhook
        task_ids = sorted(truth)

        # Annotators label 7 tasks: below the threshold, nothing trains.
        for tid in task_ids[:7]:
            ls_client.create_annotation(tid, truth[tid])
        wait_for(lambda: training_status(backend, pid)["labels_since_training"] == 7, 120, "7 label webhooks")
        assert training_status(backend, pid)["state"] == "idle"

        # The 8th label crosses RETRAIN_MIN_NEW_LABELS: Label Studio's webhook starts a run.
        ls_client.create_annotation(task_ids[7], truth[task_ids[7]])
        running = wait_for(lambda: (s := training_status(backend, pid))["state"] in ("training", "failed") and s, 60, "training to start")
        assert running["state"] == "training", running
        assert "8 new or changed labels" in running["reason"]

        # Serving goes on during training: /health within Label Studio's 1 s, /predict answered.
        seen_progress = []
        while (s := training_status(backend, pid))["state"] == "training":
            # (its latency while a run trains is measured by `make load`, not asserted on a machine that may be busy)
            assert requests.get(f"{backend.url}/health", timeout=30).status_code == 200
            if s["progress"]:
                seen_progress.append(s["progress"].get("stage"))
            time.sleep(0.5)
        r = requests.post(
            f"{backend.url}/predict",
            json={"tasks": [ls_client.list_tasks(pid)[0]], "project": f"{pid}.0", "label_config": CONFIG},
            timeout=100,
        )
        assert r.status_code == 200 and r.json()["results"][0].get("result") is not None
        done = training_status(backend, pid)
        assert done["state"] == "idle", done
        assert {"fetching labels", "training", "evaluating"} & set(seen_progress), seen_progress
        last = done["last_run"]
        assert last["promoted"] is True and last["dataset"]["train"] + last["dataset"]["val"] == 8
        assert last["judgement"]["rule"] == "always" and last["decision"].startswith("PROMOTION=always: served")
        # The run looked for pseudo-labels among the 8 unlabeled tasks (whether a class earns any depends on
        # how the served model does on the held-out images, which the tasks' ids choose); none reached Label Studio.
        pseudo = last["dataset"]["pseudo"]
        assert pseudo["examined"] > 0 and len(pseudo["thresholds"]) == 3, pseudo
        assert pseudo["boxes"] >= pseudo["images"] and (pseudo["images"] == 0 or any(pseudo["thresholds"].values())), pseudo
        assert all(not t["annotations"] for t in ls_client.list_tasks(pid) if t["id"] not in task_ids[:8])
        new = last["version"]
        assert done["model_version"] == new != base and done["labels_since_training"] == 0

        # Every version is kept with its metrics and lineage; /setup reports the new one.
        versions = requests.get(f"{backend.url}/versions", params={"project": pid}, timeout=30).json()
        assert versions["model_version"] == new and versions["versions"] == [base, new]
        detail = versions["details"][0]
        assert detail["parent"] == base and detail["served"] is True
        assert 0.0 <= detail["metrics"]["new"]["map50_95"] <= 1.0 and "per_class" in detail["metrics"]["previous"]
        # what its pre-annotations save against drawing every box, on the held-out tasks it was judged on
        assert detail["speedup"] == last["speedup"] and detail["speedup"]["heldout_images"] == last["dataset"]["val"] > 0
        setup = requests.post(f"{backend.url}/setup", json={"project": f"{pid}.123", "schema": CONFIG}, timeout=10).json()
        assert setup["model_version"] == new
        assert requests.get(f"{backend.url}/health", timeout=10).json()["model_version"] == base  # other projects: the base model

        # After the promotion the pool is re-scored with the new model: Label Studio's predictions
        # for the tasks are the new version's (one each), and the queue follows the new scores.
        def refreshed() -> bool:
            if ls_client.get_project(pid)["model_version"] != new:
                return False
            return all([p["model_version"] for p in ls_client.task_predictions(t)] == [new] for t in task_ids)

        wait_for(refreshed, 120, "predictions of the new version on every task")
        scores = wait_for(
            lambda: (
                (r := requests.get(f"{backend.url}/scores", params={"project": pid}, timeout=30)).status_code == 200
                and {s["model_version"] for s in r.json()["scores"]} == {new}
                and r.json()["scores"]
            ),
            60,
            "new scores",
        )
        labeled = {s["task"] for s in scores if s["labeled"]}
        assert labeled == set(task_ids[:8])
        # Label Studio's uncertainty sampling serves, from the cluster this annotator labeled least
        # (the 8 labeled tasks counted in their clusters), the lowest prediction score (1 - priority)
        queue = serving_order(
            [(s["task"], s["cluster"], s["priority"]) for s in scores if not s["labeled"]],
            solved=Counter(s["cluster"] for s in scores if s["labeled"]),
        )
        assert ls_client.next_task(pid)["id"] == queue[0]

        # Label Studio's own train button (its API) sends START_TRAINING: one more run, even below the threshold.
        ls_client.post(f"/api/ml/{ml['id']}/train", json={"use_ground_truth": False})
        wait_for(
            lambda: training_status(backend, pid)["runs"] == 2 and training_status(backend, pid)["state"] == "idle", 240, "the second run"
        )
        second = training_status(backend, pid)["last_run"]
        assert second["base_version"] == new and "START_TRAINING" in training_status(backend, pid)["reason"]
    finally:
        stop_backend(backend)
    assert pat not in backend.log()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def redis_server(tmp_path):
    exe = shutil.which("redis-server")
    assert exe, "redis-server is needed for this test: `apt-get install redis-server` (make test installs it)"
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    wait_for(lambda: _pings(redis.Redis.from_url(url)), 120, "redis-server", step=0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_with_redis_url_training_runs_on_an_rq_worker(ls_client, label_studio, pat, detect_weights, tmp_path, redis_server) -> None:
    env = {
        "MODEL_PATH": str(detect_weights),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": pat,
        "RETRAIN_MIN_NEW_LABELS": "0",
        "PROMOTION": "always",
        "REDIS_URL": redis_server,
        **TRAIN_ENV,
    }
    backend = start_backend(tmp_path, env)
    worker = None
    try:
        pid, truth = make_project(ls_client, tmp_path, "e2e rq", 10, seed=41)
        for tid in sorted(truth):
            ls_client.create_annotation(tid, truth[tid])
        r = requests.post(f"{backend.url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}}, timeout=10)
        assert r.status_code == 200 and r.json()["training"] == "queued"
        # No worker yet: the job waits in Redis, and the status says so.
        waiting = wait_for(
            lambda: (s := training_status(backend, pid))["progress"] and s["progress"]["stage"] != "starting" and s,
            30,
            "the job to be enqueued",
        )
        assert waiting["state"] == "training" and waiting["progress"]["stage"] == "waiting for an RQ worker"

        # The worker is another machine in spirit: its own MODEL_DIR, only Redis and Label Studio in common.
        wenv = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "TRAIN_", "PROMOTION"))}
        wenv.update(
            {
                "PYTHONPATH": str(ROOT),
                "REDIS_URL": redis_server,
                "LABEL_STUDIO_URL": label_studio.url,
                "LABEL_STUDIO_API_KEY": pat,
                "MODEL_DIR": str(tmp_path / "worker-state"),
                "DEVICE": "cpu",
                "PYTHONUNBUFFERED": "1",
            }
        )
        wlog = tmp_path / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "ml_backend", "worker"], env=wenv, cwd=ROOT, stdout=open(wlog, "wb"), stderr=subprocess.STDOUT
        )
        done = wait_for(lambda: (s := training_status(backend, pid))["state"] in ("idle", "failed") and s, 240, "the RQ run")
        assert done["state"] == "idle", (done, wlog.read_text(errors="replace")[-3000:])
        assert done["last_run"]["promoted"] is True and done["model_version"] == done["last_run"]["version"]
        versions = requests.get(f"{backend.url}/versions", params={"project": pid}, timeout=30).json()
        assert versions["model_version"] == done["last_run"]["version"] and len(versions["details"]) == 1
        assert "train Label Studio project" in wlog.read_text(errors="replace")  # the worker, not the backend, ran it
        assert not (tmp_path / "state" / "training" / f"project{pid}").exists() or not any(
            (tmp_path / "state" / "training" / f"project{pid}").rglob("dataset")
        )
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        stop_backend(backend)


def _worker(tmp_path: Path, name: str, redis_url: str, label_studio, pat: str, **extra: str) -> tuple[subprocess.Popen, Path]:
    """An RQ worker in a process group of its own (another machine in spirit: its own MODEL_DIR)."""
    wenv = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "TRAIN_", "PROMOTION", "AL_"))}
    wenv.update(
        {
            "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": pat,
            "MODEL_DIR": str(tmp_path / f"{name}-state"), "DEVICE": "cpu", "PYTHONUNBUFFERED": "1", **extra,
        }
    )  # fmt: skip
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_backend", "worker"], env=wenv, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    return proc, log


def _kill_worker(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """``sig`` to an RQ worker's process group and to its work horse, which RQ puts in a session of its own
    (a signal to the worker's group alone leaves the horse training on, an orphan)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().rpartition(")")[2].split()[1] == str(proc.pid):
                children.append(int(entry.name))
        except OSError:
            continue
    for pid in children:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _job(redis_url: str, job_id: str):  # noqa: ANN202 - an rq Job
    import redis
    from rq.job import Job

    return Job.fetch(job_id, connection=redis.Redis.from_url(redis_url))


def _labelled_run_on_a_worker(ls_client, tmp_path, backend, redis_server, title: str, seed: int) -> tuple[int, str]:
    """A project of 10 labelled tasks whose training run a worker has started: (project id, RQ job id)."""
    pid, truth = make_project(ls_client, tmp_path, title, 10, seed=seed)
    for tid in sorted(truth):
        ls_client.create_annotation(tid, truth[tid])
    requests.post(f"{backend.url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}}, timeout=10)
    job_id = wait_for(lambda: training_status(backend, pid)["job"], 120, "the RQ job")
    wait_for(lambda: _job(redis_server, job_id).get_status() == "started", 60, "a worker to start the job")
    return pid, job_id


def test_a_backend_restart_reattaches_to_the_run_on_the_worker(
    ls_client, label_studio, pat, detect_weights, tmp_path, redis_server
) -> None:
    """kill -9 of the backend while its run trains on a worker: the restarted backend waits for that
    same RQ job (no second run) and serves its model."""
    env = {
        "MODEL_PATH": str(detect_weights), "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": pat,
        "RETRAIN_MIN_NEW_LABELS": "0", "PROMOTION": "always", "REDIS_URL": redis_server, **TRAIN_ENV,
    }  # fmt: skip
    backend = start_backend(tmp_path, env, new_session=True)
    worker, wlog = _worker(tmp_path, "worker", redis_server, label_studio, pat, AL_SLOW_TRAIN="20")
    try:
        pid, job_id = _labelled_run_on_a_worker(ls_client, tmp_path, backend, redis_server, "e2e rq reattach", seed=43)
        os.killpg(backend.proc.pid, signal.SIGKILL)
        backend.proc.wait(timeout=30)
        backend = start_backend(tmp_path, env, new_session=True, port=backend.port)
        done = wait_for(lambda: (s := training_status(backend, pid))["state"] in ("idle", "failed") and s, 240, "the reattached run")
        assert done["state"] == "idle" and done["last_run"]["promoted"] is True, (done, wlog.read_text(errors="replace")[-2000:])
        # The killed backend's run was found without its holder (at start, or a little later while the killed
        # gunicorn worker's pid lingers unreaped) and queued again for the same RQ job, which it then waited for.
        assert done["reason"] == f"resumed: the backend stopped during the previous run; reattaching to RQ job {job_id}", done
        assert done["runs"] == 1 and done["job"] is None
        assert wlog.read_text(errors="replace").count(": al-training: train Label Studio project") == 1  # one job, started once
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        stop_backend(backend)


def test_a_worker_killed_mid_run_is_found_and_its_run_retried_once(
    ls_client, label_studio, pat, detect_weights, tmp_path, redis_server
) -> None:
    env = {
        "MODEL_PATH": str(detect_weights), "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": pat,
        "RETRAIN_MIN_NEW_LABELS": "0", "PROMOTION": "always", "REDIS_URL": redis_server, **TRAIN_ENV,
    }  # fmt: skip
    backend = start_backend(tmp_path, env)
    first, _ = _worker(tmp_path, "worker1", redis_server, label_studio, pat, AL_SLOW_TRAIN="600")
    second = None
    try:
        pid, job_id = _labelled_run_on_a_worker(ls_client, tmp_path, backend, redis_server, "e2e rq killed", seed=47)
        _kill_worker(first)  # the worker and its work horse, mid-run
        first.wait(timeout=30)
        second, wlog = _worker(tmp_path, "worker2", redis_server, label_studio, pat)
        done = wait_for(lambda: (s := training_status(backend, pid))["state"] in ("idle", "failed") and s, 420, "the retried run")
        assert done["state"] == "idle" and done["last_run"]["promoted"] is True, (done, wlog.read_text(errors="replace")[-2000:])
        assert done["runs"] == 1  # one run for the backend: RQ retried the same job once
    finally:
        for w in (first, second):
            if w is not None and w.poll() is None:
                _kill_worker(w, signal.SIGTERM)
                w.wait(timeout=30)
        stop_backend(backend)
