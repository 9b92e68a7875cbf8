"""Where most users start, against a real Label Studio: a project whose labels the served weights do
not know. It is connected, its first labels train a model for its own classes, which is served to
it alone; a label added later is learned on the next run without losing the others; a second
project, whose labels the weights know, is served the base model side by side.

The weights are the session's tiny shape detector (classes circle, square, triangle); the new
project calls its circles ``ring`` and its squares ``box``, then adds ``wedge`` for triangles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests

from integrations.connect import Access, connect_project
from ml_backend.tools.synthetic import ls_box_result, make_image

from .conftest import ROOT, start_backend, stop_backend
from .test_retraining import training_status, wait_for

pytestmark = pytest.mark.e2e


def config(*labels: str) -> str:
    inner = "".join(f'<Label value="{label}"/>' for label in labels)
    return f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">{inner}</RectangleLabels></View>'


OWN = {0: "ring", 1: "box", 2: "wedge"}  # the new project's names for the shapes
KNOWN = {0: "circle", 1: "square", 2: "triangle"}  # the weights' own class names
THRESHOLD = 16
ENV = {
    "IMGSZ": "96",
    # SCORE_THRESHOLD empty (the default): each trained model shows each class from the threshold chosen on its held-out tasks
    "TRAIN_IMGSZ": "96",
    "TRAIN_STEPS": "200",
    "TRAIN_BATCH": "8",
    "DEVICE": "cpu",
    "TRAIN_VAL_FRACTION": "0.3",
    "RESCORE_MIN_NEW_LABELS": "1000",
    "AL_CLUSTERS": "1",
}


def make_project(ls_client, tmp_path, title: str, labels: tuple[str, ...], n: int, seed: int) -> tuple[int, dict[int, object]]:
    """A project of ``n`` uploaded shape images; returns its id and each task's scene."""
    rng = np.random.default_rng(seed)
    scenes, paths = {}, []
    for i in range(n):
        s = make_image(rng, 96, 80)
        p = tmp_path / f"{title.replace(' ', '_')}_{i}.jpg"
        s.image.save(p, quality=95)
        paths.append(str(p))
        scenes[p.name] = s
    pid = ls_client.create_project(title, config(*labels))["id"]
    ls_client.upload_files(pid, paths)
    return pid, {t["id"]: next(s for k, s in scenes.items() if t["data"]["image"].endswith(k)) for t in ls_client.list_tasks(pid)}


def truth(scene, names: dict[int, str], keep: set[str]) -> list[dict]:
    """What an annotator draws with the project's labels: boxes of classes it has no label for are not drawn."""
    return [r for r in ls_box_result(scene, names) if r["value"]["rectanglelabels"][0] in keep]


def our_labels(ls_client, task_ids, version: str | None = None) -> list[str]:
    """The labels of our predictions on these tasks (only ``version``'s when given)."""
    return [
        r["value"]["rectanglelabels"][0]
        for t in task_ids
        for p in ls_client.task_predictions(t)
        if version is None or p["model_version"] == version
        for r in p["result"]
    ]


def speedup_counts(last_run: dict) -> dict:
    """The counts behind a run's speed-up: what correcting its model's boxes on the held-out tasks takes."""
    return last_run["metrics_new"]["annotation"]["counts"]


def rescored(ls_client, pid: int, task_ids, version: str) -> bool:
    return ls_client.get_project(pid)["model_version"] == version and all(
        [p["model_version"] for p in ls_client.task_predictions(t)] == [version] for t in task_ids
    )


def test_a_project_of_new_classes_learns_them_from_its_first_labels(ls_client, label_studio, pat, detect_weights, tmp_path) -> None:
    env = {"MODEL_PATH": str(detect_weights), "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": pat, **ENV}
    backend = start_backend(tmp_path, env)
    try:
        base = requests.get(f"{backend.url}/health", timeout=10).json()["model_version"]
        pid, scenes = make_project(ls_client, tmp_path, "new classes", ("ring", "box"), 24, seed=5)
        other, other_scenes = make_project(ls_client, tmp_path, "known classes", ("circle", "triangle"), 6, seed=6)
        ids = sorted(scenes)

        # Connecting is accepted (Label Studio checks /setup), and says what will happen.
        report = connect_project(ls_client, pid, backend.url, Access(), retrain_threshold=THRESHOLD)
        said = "\n".join(report.actions)
        assert (
            f"pre-annotations: no model for ring, box yet: the first one trains after {THRESHOLD} labeled tasks; "
            "until then tasks come in random order"
        ) in said, said
        ls_client.add_ml_backend(other, backend.url)
        health = requests.get(f"{backend.url}/health", timeout=10).json()
        assert health["projects"][str(other)] == "the served model predicts every label (circle, triangle)"

        # Before a model of its own, nothing is shown for ring and box; the other project gets the base model's boxes.
        ls_client.retrieve_predictions(pid)
        ls_client.retrieve_predictions(other)
        assert all(ls_client.task_predictions(t) for t in ids) and our_labels(ls_client, ids) == []
        known_before = our_labels(ls_client, sorted(other_scenes))
        assert known_before and set(known_before) <= {"circle", "triangle"}

        # Annotators label with the project's own classes (triangles have no label yet: not drawn).
        annotations = {}
        for tid in ids[:THRESHOLD]:
            annotations[tid] = ls_client.create_annotation(tid, truth(scenes[tid], OWN, {"ring", "box"}))["id"]
        first = wait_for(
            lambda: (s := training_status(backend, pid))["runs"] == 1 and s["state"] in ("idle", "failed") and s, 900, "the first run"
        )
        last = first["last_run"]
        assert first["state"] == "idle" and last["promoted"] is True, first
        assert last["dataset"]["classes"] == {"classes": ["ring", "box"], "new": ["ring", "box"], "from_starting_model": {}}
        assert last["judgement"]["old"] == 0.0 < last["judgement"]["new"]  # the base model finds no ring or box
        own = last["version"]
        assert first["model_version"] == own and first["pre_annotations"] == "the served model predicts every label (ring, box)"

        # The project's tasks are re-scored with its own model: pre-annotations of its own classes.
        wait_for(lambda: rescored(ls_client, pid, ids, own), 600, "the project's own model's predictions on every task")
        assert our_labels(ls_client, ids[THRESHOLD:], own), "nothing shown on the tasks not labeled yet"
        shown = our_labels(ls_client, ids, own)
        assert set(shown) == {"ring", "box"}, shown  # both classes, on the project's tasks (a tiny model: not always on the 8 unlabeled)

        # What the first model saves an annotator, measured on its held-out tasks, shown where people look.
        speedup = first["speedup"]
        assert speedup["heldout_images"] == last["dataset"]["val"] and speedup["previous"] == 1.0 and speedup["speedup"] > 0
        versions = requests.get(f"{backend.url}/versions", params={"project": pid}, timeout=30).json()
        assert versions["details"][0]["speedup"] == speedup
        # What it shows: the rule chosen on its held-out tasks, stored with the version, on the status page, and applied.
        display = last["metrics_new"]["display"]
        assert first["display"] == display == versions["details"][0]["metrics"]["new"]["display"]
        assert display["default"] == 0.25 and set(display["thresholds"]) <= {"ring", "box"}
        for tid in ids:
            for r in (r for p in ls_client.task_predictions(tid) if p["model_version"] == own for r in p["result"]):
                assert r["score"] >= display["thresholds"].get(r["value"]["rectanglelabels"][0], display["default"]) - 1e-6, (r, display)
        # ... and in Label Studio, where the project's leads look: this backend's registration on the project (Settings, Model)
        registered = wait_for(
            lambda: next((b for b in ls_client.list_ml_backends(pid) if "as fast as drawing" in (b.get("title") or "")), None),
            120, "the speed-up on the ML backend's title",
        )  # fmt: skip
        assert registered["title"].endswith(f"· pre-annotations {speedup['speedup']:.1f}x as fast as drawing"), registered
        assert registered["description"].startswith(f"correcting the pre-annotations of {own} is"), registered
        again = "\n".join(connect_project(ls_client, pid, backend.url, Access(), retrain_threshold=THRESHOLD).actions)
        assert f"correcting the pre-annotations of {own} is {speedup['speedup']:.1f}x as fast as drawing every box" in again, again
        # ... and on request, for the model served today (`assess`), on the same held-out tasks
        assessed = json.loads(
            subprocess.run(
                [sys.executable, "-m", "ml_backend", "assess", "--project", str(pid), "--json"],
                env={**os.environ, **env, "MODEL_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)},
                cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
            ).stdout
        )  # fmt: skip
        assert assessed["model_version"] == own and assessed["heldout_tasks"] == last["dataset"]["val"]
        assert assessed["counts"]["gt_boxes"] == speedup_counts(last)["gt_boxes"]

        # Side by side: the other project is still served the base model, with its classes.
        versions = requests.get(f"{backend.url}/versions", params={"project": other}, timeout=30).json()
        assert versions["model_version"] == base and versions["details"] == []
        ls_client.retrieve_predictions(other)
        assert set(our_labels(ls_client, sorted(other_scenes), base)) <= {"circle", "triangle"}

        # A label added to the config: said at once, learned on the next run, the others kept.
        ls_client.patch(f"/api/projects/{pid}", json={"label_config": config("ring", "box", "wedge")})
        ls_client.retrieve_predictions(pid, ids[-1:])  # Label Studio sends the new config with its request
        status = training_status(backend, pid)
        assert status["classes"] == {"known": ["ring", "box"], "learning": ["wedge"]}, status
        assert status["pre_annotations"].startswith("no model for wedge yet: it is learned at the next retraining")
        for tid in ids[:THRESHOLD]:  # the annotators add the wedges to what they labeled
            ls_client.patch(f"/api/annotations/{annotations[tid]}", json={"result": truth(scenes[tid], OWN, set(OWN.values()))})
        second = wait_for(
            lambda: (s := training_status(backend, pid))["runs"] == 2 and s["state"] in ("idle", "failed") and s, 900, "the second run"
        )
        last = second["last_run"]
        assert second["state"] == "idle" and last["promoted"] is True and last["base_version"] == own, second
        assert last["dataset"]["classes"] == {
            "classes": ["ring", "box", "wedge"], "new": ["wedge"], "from_starting_model": {"ring": "ring", "box": "box"},
        }  # fmt: skip
        grown = last["version"]
        judged = set(last["metrics_new"]["per_class"])  # the classes present among the held-out tasks (a few images)
        assert judged and judged <= {"ring", "box", "wedge"}, judged
        wait_for(lambda: rescored(ls_client, pid, ids, grown), 600, "the grown model's predictions on every task")
        assert our_labels(ls_client, ids[THRESHOLD:], grown), "nothing shown on the tasks not labeled yet"
        shown = our_labels(ls_client, ids, grown)
        assert set(shown) == {"ring", "box", "wedge"}, shown  # the new class learned, the others kept
        assert requests.get(f"{backend.url}/versions", params={"project": other}, timeout=30).json()["model_version"] == base
    finally:
        stop_backend(backend)
