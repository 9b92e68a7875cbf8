"""Scores and queue order against a real Label Studio: its /next follows our priority."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from integrations.queue_view import QUEUE_VIEW_TITLE
from ml_backend.inference.predictor import make_predictor
from ml_backend.scoring.pool import TaskScore
from ml_backend.scoring.publish import score_columns, score_project, write_score_columns
from ml_backend.server import create_app
from ml_backend.settings import Settings
from ml_backend.tools.synthetic import make_image

from .conftest import ROOT
from .test_label_studio import CONFIG

pytestmark = pytest.mark.e2e


def make_queue_project(ls_client, tmp_path) -> int:
    rng = np.random.default_rng(11)
    paths = []
    for i in range(7):
        p = tmp_path / f"q_{i}.jpg"
        make_image(rng, 96, 80).image.save(p, quality=95)
        paths.append(str(p))
    blank = tmp_path / "q_blank.jpg"
    Image.new("RGB", (96, 80), (20, 20, 20)).save(blank)
    paths.append(str(blank))
    pid = ls_client.create_project("e2e queue", CONFIG)["id"]
    ls_client.upload_files(pid, paths)
    return pid


@pytest.fixture()
def queue_project(ls_client, tmp_path) -> int:
    return make_queue_project(ls_client, tmp_path)


def settings_for(label_studio, pat, detect_weights, state) -> Settings:
    return Settings.from_env(
        {
            "MODEL_PATH": str(detect_weights),
            "MODEL_DIR": str(state),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
            "IMGSZ": "96",
            "SCORE_THRESHOLD": "0.3",
            "AL_STRATEGY": "hybrid",
            "AL_CLUSTERS": "3",
        }
    )


def expected_next(scores: list[dict], solved_clusters: dict[int, int]) -> int:
    """Label Studio's rule: least-solved cluster first, then lowest prediction score (1 - priority)."""
    todo = [s for s in scores if not s["labeled"]]
    return min(todo, key=lambda s: (solved_clusters.get(s["cluster"], 0), 1 - s["priority"]))["task"]


def test_queue_follows_our_priority(on_db, detect_weights, tmp_path) -> None:
    ls_client, label_studio, pat = on_db.client, on_db.server, on_db.pat
    pid = make_queue_project(ls_client, tmp_path)
    settings = settings_for(label_studio, pat, detect_weights, tmp_path / "state")
    pooled = score_project(ls_client, pid, make_predictor(settings), settings, progress=False)
    assert len(pooled.scores) == 8 and not pooled.errors
    scores = [s.__dict__ for s in pooled.scores]
    for s in scores:
        assert 0 <= s["uncertainty"] <= 1 and 0 <= s["diversity"] <= 1 and 0 <= s["priority"] <= 1
        assert s["difficulty"] in {"easy", "medium", "hard"}

    project = ls_client.get_project(pid)
    assert project["sampling"] == "Uncertainty sampling"
    assert project["model_version"] == pooled.scores[0].model_version
    views = [v for v in ls_client.get("/api/dm/views", params={"project": pid}) if v["data"].get("title") == QUEUE_VIEW_TITLE]
    assert len(views) == 1 and views[0]["data"]["ordering"] == ["tasks:predictions_score"]
    assert views[0]["data"]["columnsDisplayType"]["tasks:data.al_priority"] == "Number"  # sorts and filters as a number

    # Every task: exactly one prediction of our version, score = 1 - priority, our cluster.
    by_task = {s["task"]: s for s in scores}
    for tid, s in by_task.items():
        preds = [p for p in ls_client.task_predictions(tid) if p["model_version"] == s["model_version"]]
        assert len(preds) == 1
        assert preds[0]["score"] == pytest.approx(1 - s["priority"], abs=1e-6)
        assert preds[0]["cluster"] == s["cluster"]

    # The scores are Data Manager columns: task data, next to the task's own image.
    for t in ls_client.list_tasks(pid):
        s = by_task[t["id"]]
        assert t["data"]["image"].startswith("/data/upload/")
        assert (t["data"]["al_priority"], t["data"]["al_difficulty"]) == (round(s["priority"], 3), s["difficulty"])

    first = ls_client.next_task(pid)
    assert first["id"] == expected_next(scores, {}) == max(scores, key=lambda s: s["priority"])["task"]

    ls_client.create_annotation(first["id"], [])  # the annotator submits it
    second = ls_client.next_task(pid)
    scores_after = [dict(s, labeled=s["labeled"] or s["task"] == first["id"]) for s in scores]
    assert second["id"] == expected_next(scores_after, {by_task[first["id"]]["cluster"]: 1})
    assert second["id"] != first["id"]

    # Re-scoring replaces our predictions (no duplicates) and sees the new label.
    pooled2 = score_project(ls_client, pid, make_predictor(settings), settings, progress=False)
    assert {s.task for s in pooled2.scores if s.labeled} == {first["id"]}
    assert next(s for s in pooled2.scores if s.task == first["id"]).priority == 0.0
    for tid in by_task:
        assert len([p for p in ls_client.task_predictions(tid) if p["model_version"] == pooled2.scores[0].model_version]) == 1


def test_score_command_and_scores_route(ls_client, label_studio, pat, detect_weights, queue_project, tmp_path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "MODEL_PATH": str(detect_weights),
        "MODEL_DIR": str(tmp_path / "state"),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": pat,
        "IMGSZ": "96",
        "AL_STRATEGY": "uncertainty",
        "AL_CLASS_BALANCE_WEIGHT": "0",
        "AL_COST_WEIGHT": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ml_backend", "score", "--project", str(queue_project)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"project {queue_project}: scored 8 tasks (8 unlabeled), 0 failed" in proc.stdout
    assert pat not in proc.stdout + proc.stderr
    client = create_app(Settings.from_env({k: v for k, v in env.items() if k not in ("PATH", "PYTHONPATH")}), warm_up=False).test_client()
    body = client.get(f"/scores?project={queue_project}").get_json()
    assert len(body["scores"]) == 8
    assert set(body["scores"][0]) == {"task", "uncertainty", "diversity", "priority", "cluster", "difficulty", "labeled", "model_version"}
    ranked = sorted(body["scores"], key=lambda s: -s["priority"])
    assert ls_client.next_task(queue_project)["id"] == ranked[0]["task"]
    assert all(s["priority"] == pytest.approx(s["uncertainty"]) for s in body["scores"])  # uncertainty strategy, no class or cost term
    assert client.get("/scores?project=999").status_code == 404
    assert client.get("/scores").status_code == 400


def _wait(predicate, timeout: float = 120.0, step: float = 1.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def test_imported_tasks_are_scored_as_they_arrive(ls_client, backend, tmp_path) -> None:
    import requests

    rng = np.random.default_rng(21)

    def images(prefix: str, n: int) -> list[str]:
        out = []
        for i in range(n):
            p = tmp_path / f"{prefix}_{i}.jpg"
            make_image(rng, 96, 80).image.save(p, quality=95)
            out.append(str(p))
        return out

    pid = ls_client.create_project("e2e stream", CONFIG)["id"]
    ls_client.add_ml_backend(pid, backend.url, title="stream")
    version = requests.get(f"{backend.url}/health", timeout=10).json()["model_version"]

    def scored_ids() -> set[int]:
        r = requests.get(f"{backend.url}/scores", params={"project": pid}, timeout=30)
        return {s["task"] for s in r.json()["scores"]} if r.status_code == 200 else set()

    ls_client.upload_files(pid, images("first", 4))  # never scored: the first event scores the whole project
    first_ids = {t["id"] for t in ls_client.list_tasks(pid)}
    _wait(lambda: first_ids <= scored_ids())
    ls_client.upload_files(pid, images("later", 2))  # stream-based: only the new tasks
    all_ids = {t["id"] for t in ls_client.list_tasks(pid)}
    _wait(lambda: all_ids <= scored_ids())
    for t in ls_client.list_tasks(pid):
        ours = [p for p in ls_client.task_predictions(t["id"]) if p["model_version"] == version]
        assert len(ours) == 1 and ours[0]["cluster"] is not None
        assert 0.0 <= t["data"]["al_priority"] <= 1.0
    assert ls_client.get_project(pid)["sampling"] == "Uncertainty sampling"
    assert ls_client.next_task(pid)["id"] in all_ids


def test_a_rescore_keeps_a_prediction_on_every_task_throughout(
    ls_client, label_studio, pat, detect_weights, queue_project, tmp_path
) -> None:
    """Re-scoring the version the project already uses: Label Studio, polled from another thread
    the whole time, always shows each task exactly one prediction of the project's version."""
    import threading
    import time

    from ml_backend.scoring.publish import staging_name

    settings = settings_for(label_studio, pat, detect_weights, tmp_path / "state")
    predictor = make_predictor(settings)
    version = score_project(ls_client, queue_project, predictor, settings, progress=False).scores[0].model_version
    tasks = [int(t["id"]) for t in ls_client.list_tasks(queue_project)]
    ls_client.patch(f"/api/tasks/{tasks[0]}", json={"data": {**ls_client.get_task(tasks[0])["data"], "note": "kept"}})

    class SlowPushes:  # a push of 2,000 tasks takes a while: make each one last long enough to be seen
        def __init__(self, client) -> None:  # noqa: ANN001
            self.client = client

        def __getattr__(self, name: str):  # noqa: ANN204
            real = getattr(self.client, name)
            if name not in ("import_predictions", "create_predictions"):
                return real

            def slow(*a, **k):  # noqa: ANN002, ANN003, ANN202
                time.sleep(1.5)
                return real(*a, **k)

            return slow

    done = threading.Event()
    problems: list[str] = []
    seen: set[str] = set()
    polls = 0

    def poll() -> None:
        nonlocal polls
        while not done.is_set():
            before = ls_client.get_project(queue_project)["model_version"]
            preds = ls_client.get("/api/predictions", params={"project": queue_project})
            after = ls_client.get_project(queue_project)["model_version"]
            polls += 1
            seen.add(before)
            for t in tasks:
                ours = [p["model_version"] for p in preds if p["task"] == t and p["model_version"] in (version, staging_name(version))]
                if not ours:
                    problems.append(f"task {t} without a prediction of ours: {ours} (project on {before})")
                if before == after and ours.count(before) != 1:
                    problems.append(f"task {t}: {ours.count(before)} predictions of the project's version {before}")

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        score_project(SlowPushes(ls_client), queue_project, predictor, settings, progress=False)  # type: ignore[arg-type]
        time.sleep(0.5)
    finally:
        done.set()
        poller.join(30)
    assert polls >= 5 and not problems, (polls, problems[:5])
    assert staging_name(version) in seen  # the queue was held by the staged copy while the version's own were replaced
    assert ls_client.get_project(queue_project)["model_version"] == version
    assert all([p["model_version"] for p in ls_client.task_predictions(t)] == [version] for t in tasks)
    first = ls_client.get_task(tasks[0])["data"]
    assert first["note"] == "kept" and "al_priority" in first


class _AnyBucket(BaseHTTPRequestHandler):
    """A stand-in S3 endpoint that answers every request 200: Label Studio checks its S3 storage
    with ``HeadBucket`` when it is added, and needs nothing more to resolve ``s3://`` URIs."""

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_score_columns_keep_a_cloud_storage_tasks_own_uris(ls_client) -> None:
    """Label Studio returns a cloud storage task's ``s3://`` URI resolved (``/tasks/N/resolve/...``):
    the score columns are merged into the data as Label Studio stores it, so the task keeps its URI."""
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), _AnyBucket)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    pid = ls_client.create_project("e2e cloud storage", CONFIG)["id"]
    try:
        ls_client.post(
            "/api/storages/s3",
            json={
                "project": pid,
                "bucket": "bucket",
                "s3_endpoint": f"http://127.0.0.1:{endpoint.server_port}",
                "aws_access_key_id": "key",
                "aws_secret_access_key": "secret",
                "presign": True,
            },
        )
    finally:
        endpoint.shutdown()
    ls_client.import_tasks(pid, [{"image": f"s3://bucket/{i}.jpg", "note": f"n{i}"} for i in range(3)])
    tasks = ls_client.list_tasks(pid)
    uris = {t["id"]: f"s3://bucket/{i}.jpg" for i, t in enumerate(sorted(tasks, key=lambda t: t["id"]))}
    assert all(t["data"]["image"].startswith("/tasks/") for t in tasks)  # what Label Studio hands out: resolved

    columns = score_columns(tasks, [TaskScore(t["id"], 0.2, 0.3, 0.4, 0, "easy", False, "v1") for t in tasks])
    assert write_score_columns(ls_client, pid, columns, chunk=2) == 3
    stored = ls_client.tasks_as_stored(pid, uris)
    assert {tid: t["data"]["image"] for tid, t in stored.items()} == uris
    assert all(t["data"]["al_priority"] == 0.4 and t["data"]["note"] for t in stored.values())
    assert write_score_columns(ls_client, pid, columns) == 0  # up to date: nothing written
    first, second = sorted(uris)[:2]
    ls_client.create_annotation(first, [])
    picked = ls_client.tasks_as_stored(pid, [first, second], per_request=1)  # the Data Manager's selection filters
    assert set(picked) == {first, second} and ls_client.tasks_as_stored(pid, [second]).keys() == {second}
    assert [len(picked[t]["annotations"]) for t in (first, second)] == [1, 0]  # what a label change's refresh reads
