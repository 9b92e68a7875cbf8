"""A new project from COCO weights, for real: how many labels and how long until Label Studio shows
pre-annotations of every class.

What a new user does, with a labeled dataset playing the annotators: a real Label Studio (its own
virtual environment, loopback), a project with the dataset's classes, its images uploaded, this
backend serving ``--weights`` at the server's defaults (or the settings in the environment),
``connect`` as the README says, the queue ordered, then labels made through Label Studio's API in
the order Label Studio serves the tasks (``/next``: its own rule), each the dataset's true boxes.
Label Studio's webhooks start the retraining at the threshold; the tool waits for the run, and,
when a model is served, for the re-scored predictions in Label Studio, and counts per class the
pre-annotated boxes that match a true box (IoU >= 0.5, the same class) on the tasks not labeled
yet. It labels on, a threshold at a time, until every class is shown or ``max_labels`` is reached.

Run with ``python -m ml_backend first-model --data ../shared/datasets/aquarium --format yolo
--weights yolo11n.pt --out first.json``; the long numbers (training at 640 px on a CPU) are in
docs/study.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from integrations.connect import Access, connect_project
from integrations.label_studio import LabelStudioClient
from integrations.local_label_studio import LocalLabelStudio, free_port
from ml_backend.al.effort import corrections
from ml_backend.settings import SPECS, Settings
from ml_backend.tools.datasets import Dataset, box_label_config, load_dataset, ls_regions
from ml_backend.tools.servers import start_backend, wait_for_model

log = logging.getLogger(__name__)


def pick(ds: Dataset, n: int) -> list[int]:
    """``n`` images of the dataset, fixed by a hash of each file name (all of them when ``n`` is 0)."""
    order = sorted(range(len(ds.items)), key=lambda i: hashlib.sha256(f"al-first:{ds.items[i].path.name}".encode()).hexdigest())
    return sorted(order[:n] if n else order)


def shown_per_class(ds: Dataset, items: dict[int, int], predictions: dict[int, list[dict]]) -> dict[str, dict[str, int]]:
    """Per class, over the given tasks: true boxes, shown boxes, and shown boxes that match a true box of the class."""
    names = ds.names
    out = {n: {"true": 0, "shown": 0, "right": 0} for n in names.values()}
    for tid, i in items.items():
        item = ds.items[i]
        regions = predictions.get(tid, [])
        sx, sy = 100.0 / item.width, 100.0 / item.height
        gt = np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])
        labels = [str((r["value"].get("rectanglelabels") or ["?"])[0]) for r in regions]
        pred = np.array([[r["value"][k] for k in ("x", "y", "width", "height")] for r in regions], dtype=np.float64).reshape(-1, 4)
        pred[:, 2:] += pred[:, :2]
        for c, n in names.items():
            mine = np.array([lab == n for lab in labels], dtype=bool)
            true = np.asarray(item.classes) == c
            out[n]["true"] += int(true.sum())
            out[n]["shown"] += int(mine.sum())
            if mine.any() and true.any():
                got = corrections(gt[true], np.zeros(int(true.sum()), dtype=int), pred[mine], np.zeros(int(mine.sum()), dtype=int))
                out[n]["right"] += got.accepted + got.adjusted
    return out


def run_first_model(
    data: str, fmt: str, weights: str, workdir: str | Path, images: int = 200, max_labels: int = 200, timeout: float = 7200.0
) -> dict[str, Any]:
    """Set the project up, label it as Label Studio serves it, and time the first pre-annotations of every class.

    Returns:
        What happened, run by run, JSON-ready (also written to ``workdir/first_model.json``).
    """
    ds = load_dataset(data, fmt)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = pick(ds, images)
    env = {k: v for k, v in os.environ.items() if k in {s.name for s in SPECS}}  # the user's settings, else the server's defaults
    env.update({"MODEL_PATH": str(Path(weights).resolve()), "MODEL_DIR": str(workdir / "backend-state")})
    ls = LocalLabelStudio(workdir / "label-studio", port=free_port()).start()
    backend = None
    try:
        token = ls.personal_access_token()
        client = LabelStudioClient(ls.url, token)
        pid = client.create_project(f"new project: {Path(data).name}", box_label_config(ds.names))["id"]
        paths = [str(ds.items[i].path) for i in chosen]
        for k in range(0, len(paths), 50):  # Label Studio takes at most 100 files a request (DATA_UPLOAD_MAX_NUMBER_FILES)
            client.upload_files(pid, paths[k : k + 50])
        by_name = {ds.items[i].path.name: i for i in chosen}
        tasks = {int(t["id"]): next(i for n, i in by_name.items() if str(t["data"]["image"]).endswith(n)) for t in client.list_tasks(pid)}
        env.update({"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": token})
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        backend = start_backend(workdir, port, env)
        wait_for_model(url, backend, timeout=300)
        settings = Settings.from_env(env)
        started = time.monotonic()
        report = connect_project(client, pid, url, Access(default_threshold=settings.retrain_min_new_labels))
        for line in report.actions:
            print("connect:", line, flush=True)
        from ml_backend.inference.predictor import make_predictor
        from ml_backend.scoring.publish import score_project

        score_project(client, pid, make_predictor(settings), settings, progress=False)
        print(f"scored {len(tasks)} tasks in {time.monotonic() - started:.0f} s", flush=True)
        status = requests.get(f"{url}/training", params={"project": pid}, timeout=30).json()
        out: dict[str, Any] = {
            "data": str(data), "weights": str(weights), "images": len(tasks), "classes": list(ds.names.values()),
            "threshold": status["retrain_min_new_labels"], "pre_annotations": status.get("pre_annotations"), "runs": [],
        }  # fmt: skip
        labeled: list[int] = []
        deadline = time.monotonic() + timeout
        while len(labeled) < min(max_labels, len(tasks)) and time.monotonic() < deadline:
            t0 = time.monotonic()
            runs_before = status["runs"]
            while status["runs"] == runs_before and len(labeled) < min(max_labels, len(tasks)):
                task = client.next_task(pid)
                client.create_annotation(int(task["id"]), ls_regions(ds.items[tasks[int(task["id"])]], ds.names))
                labeled.append(int(task["id"]))
                time.sleep(0.2)
                status = requests.get(f"{url}/training", params={"project": pid}, timeout=30).json()
                if status["state"] in ("queued", "training"):
                    break
            t_labels = time.monotonic()
            while time.monotonic() < deadline:
                status = requests.get(f"{url}/training", params={"project": pid}, timeout=30).json()
                if status["runs"] > runs_before and status["state"] in ("idle", "failed"):
                    break
                time.sleep(5)
            last = status.get("last_run") or {}
            run: dict[str, Any] = {
                "labels": len(labeled), "labeled_boxes": sum(len(ds.items[tasks[t]].boxes) for t in labeled), "label_s": round(t_labels - t0, 1), "train_wall_s": round(time.monotonic() - t_labels, 1),
                "run_s": last.get("seconds"), "promoted": bool(last.get("promoted")), "decision": last.get("decision"),
                "judgement": last.get("judgement"), "dataset": last.get("dataset"),
            }  # fmt: skip
            if run["promoted"]:
                version = last["version"]
                while time.monotonic() < deadline:
                    preds = {t: [p for p in client.task_predictions(t) if p["model_version"] == version] for t in tasks}
                    if all(preds.values()):
                        break
                    time.sleep(5)
                run["rescored_s"] = round(time.monotonic() - t_labels, 1)
                pending = {t: i for t, i in tasks.items() if t not in labeled}
                run["unlabeled"] = shown_per_class(ds, pending, {t: p[0]["result"] for t, p in preds.items() if p})
                run["every_class_shown"] = all(c["right"] > 0 for c in run["unlabeled"].values() if c["true"] > 0)
            run["since_connect_s"] = round(time.monotonic() - started, 1)
            out["runs"].append(run)
            print(json.dumps(run)[:2000], flush=True)
            (workdir / "first_model.json").write_text(json.dumps(out, indent=2))
            if run.get("every_class_shown"):
                break
        out["project"], out["label_studio"], out["backend"] = pid, ls.url, url
        (workdir / "first_model.json").write_text(json.dumps(out, indent=2))
        return out
    finally:
        if backend is not None and backend.poll() is None:
            backend.terminate()
            backend.wait(timeout=60)
        if not os.environ.get("AL_KEEP_SERVERS"):
            ls.stop()
