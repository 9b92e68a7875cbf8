"""The offline demo: synthetic images, a starter model, a real Label Studio, this backend, connected.

Everything is made here (no downloads besides the Label Studio package itself): images of
circles, squares and triangles; a YOLO detector trained on similar images from its yaml; a Label
Studio project holding the images; this backend serving the detector, connected to the project;
pre-annotations fetched for every task; and every task scored (uncertainty, diversity, priority)
with the annotation queue ordered by priority. Open the printed URL and log in to see them.
Label five tasks and the backend retrains in the background (``RETRAIN_MIN_NEW_LABELS=5`` here),
serves the new model if it is not worse on held-out labels, and reorders the queue.

With ``--weights`` (for instance COCO-pretrained ``yolo11n.pt``) the backend serves those weights
instead, which know none of the demo's classes: the demo then shows where most projects start.
Label Studio accepts the connection, nothing is pre-annotated yet, the queue is ordered for
coverage, and the first eight labels train a model of the project's own classes (a new head on the
given weights, :mod:`ml_backend.training.heads`) whose boxes then appear.

Run it with ``python -m ml_backend demo`` (or ``make demo``).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from integrations.label_studio import LabelStudioClient
from integrations.local_label_studio import LocalLabelStudio, free_port
from integrations.queue_view import serving_order
from ml_backend.tools.servers import start_backend, wait_for_model
from ml_backend.tools.starter import train_starter_model
from ml_backend.tools.synthetic import SyntheticImage, ls_box_result, make_image

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]  # the folder holding ml_backend/

DEMO_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Circle" background="#e6194b"/>
    <Label value="Square" background="#3cb44b"/>
    <Label value="Triangle" background="#4363d8"/>
  </RectangleLabels>
</View>"""
DEMO_TITLE = "Active learning demo (shapes)"


@dataclass
class DemoResult:
    label_studio_url: str
    backend_url: str
    project_id: int
    tasks: int
    predicted: int
    regions: int
    model_version: str
    token: str
    queue: list[int]


@dataclass
class Demo:
    """A running demo: both servers, the project, and each task's true boxes (what a perfect
    annotator saves), until :meth:`stop`."""

    result: DemoResult
    client: LabelStudioClient
    label_studio: LocalLabelStudio
    backend: subprocess.Popen
    truth: dict[int, list[dict]]

    def stop(self) -> None:
        if self.backend.poll() is None:
            self.backend.terminate()
            self.backend.wait(timeout=20)
        self.label_studio.stop()

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_demo(
    workdir: str | Path = "demo_state",
    ls_port: int = 8080,
    backend_port: int = 9090,
    n_images: int = 12,
    epochs: int = 60,
    wait: bool = True,
    weights: str | Path | None = None,
) -> DemoResult:
    """Set the demo up (idempotent: a second run reuses the model, the project and the tasks).

    Args:
        workdir: where everything is kept.
        ls_port: Label Studio port (0 picks a free one).
        backend_port: backend port (0 picks a free one).
        n_images: synthetic images to label.
        epochs: starter model training epochs (about 2 s each on 2 CPU cores).
        wait: keep both servers running until Ctrl-C.
        weights: serve these weights instead of the starter model (e.g. COCO-pretrained YOLO):
            the new-class path.
    """
    demo = start_demo(workdir, ls_port, backend_port, n_images, epochs, weights)
    try:
        if wait:
            print("Press Ctrl-C to stop both servers.", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            try:
                while demo.backend.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return demo.result
    finally:
        demo.stop()


def start_demo(
    workdir: str | Path = "demo_state",
    ls_port: int = 8080,
    backend_port: int = 9090,
    n_images: int = 12,
    epochs: int = 60,
    weights: str | Path | None = None,
) -> Demo:
    """Set the demo up and leave both servers running (:func:`run_demo`'s arguments); the caller stops them."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if weights is None:
        print("1/6 training the starter model (first run only) ...", flush=True)
        weights = train_starter_model(workdir / "starter", kind="detect", epochs=epochs, imgsz=128, n_train=160, n_val=40)
        training = {"TRAIN_EPOCHS": "10"}
    else:
        weights = Path(weights).resolve()
        if not weights.is_file():
            raise FileNotFoundError(f"--weights {weights} is not a file: pass a .pt model, e.g. COCO-pretrained yolo11n.pt")
        print(f"1/6 serving {weights.name} (no starter model) ...", flush=True)
        n_images = max(n_images, 20)  # eight to label, the rest to see the first model's boxes on
        # New classes: a new head needs more steps, and more than one held-out image to be judged on,
        # than a fine-tune of the starter model (measured: 8 labels, 200 steps at 320 px, about a minute on 2 cores).
        training = {"RETRAIN_MIN_NEW_LABELS": "8", "TRAIN_STEPS": "200", "TRAIN_BATCH": "4", "TRAIN_IMGSZ": "320", "IMGSZ": "320"}

    print("2/6 starting Label Studio (installs it on first run) ...", flush=True)
    ls = LocalLabelStudio(workdir / "label-studio", port=ls_port or free_port())
    ls.start()
    backend_proc = None
    try:
        token = ls.personal_access_token()
        client = LabelStudioClient(ls.url, token)

        print("3/6 creating the project and its images ...", flush=True)
        existing = [p for p in client.get("/api/projects", params={"page_size": 100})["results"] if p["title"] == DEMO_TITLE]
        if existing:
            pid = existing[0]["id"]
        else:
            pid = client.create_project(DEMO_TITLE, DEMO_CONFIG, description="Pre-annotated by the YOLO active-learning backend")["id"]
            img_dir = workdir / "images"
            img_dir.mkdir(exist_ok=True)
            paths = []
            for i, s in enumerate(_scenes(n_images)):
                p = img_dir / f"shapes_{i:03d}.jpg"
                s.image.save(p, quality=92)
                paths.append(str(p))
            client.upload_files(pid, paths)
        scenes = {f"shapes_{i:03d}.jpg": s for i, s in enumerate(_scenes(n_images))}
        truth = {
            int(t["id"]): ls_box_result(scene, LABELS)
            for t in client.list_tasks(pid)
            for name, scene in scenes.items()
            if str(t["data"].get("image", "")).endswith(name)  # Label Studio prefixes uploads with a hash
        }

        print("4/6 starting this backend and connecting it ...", flush=True)
        b_port = backend_port or free_port()
        backend_url = f"http://127.0.0.1:{b_port}"
        backend_env = {
            "MODEL_PATH": str(weights),
            "MODEL_DIR": str(workdir / "backend-state"),
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": token,
            "IMGSZ": "128",
            "SCORE_THRESHOLD": "0.35",
            "RETRAIN_MIN_NEW_LABELS": "5",
            "TRAIN_IMGSZ": "128",
            "TRAIN_VAL_FRACTION": "0.3",
            "AL_CLUSTERS": "3",
            **training,
        }
        backend_proc = start_backend(workdir, b_port, backend_env)
        health = wait_for_model(backend_url, backend_proc)
        for b in client.list_ml_backends(pid):  # a previous run's backend may have had another port
            if b["url"].rstrip("/") != backend_url:
                client.request("DELETE", f"/api/ml/{b['id']}")
        client.add_ml_backend(pid, backend_url, title="YOLO active learning (demo)")
        setup = requests.post(f"{backend_url}/setup", json={"project": str(pid), "schema": DEMO_CONFIG}, timeout=30).json()
        print(f"    the backend says: {setup.get('pre_annotations', '')}", flush=True)

        print("5/6 asking Label Studio for pre-annotations ...", flush=True)
        client.retrieve_predictions(pid)
        # Show this version's predictions to annotators (the project's "use predictions" setting).
        # The project's served version: the base model's, or the one a retraining in an earlier run promoted.
        version = str(setup.get("model_version") or health["model_version"])
        client.patch(f"/api/projects/{pid}", json={"model_version": version, "show_collab_predictions": True})
        print("6/6 scoring every task and ordering the annotation queue ...", flush=True)
        from ml_backend.inference.predictor import make_predictor
        from ml_backend.scoring.publish import score_project
        from ml_backend.settings import Settings

        score_settings = Settings.from_env(backend_env)
        pooled = score_project(client, pid, make_predictor(score_settings), score_settings, progress=False)
        tasks = client.list_tasks(pid)
        ours = [[p for p in t.get("predictions", []) if p.get("model_version") == version] for t in tasks]
        result = DemoResult(
            label_studio_url=ls.url,
            backend_url=backend_url,
            project_id=pid,
            tasks=len(tasks),
            predicted=sum(1 for o in ours if o),
            regions=sum(len(o[0]["result"]) for o in ours if o),
            model_version=version,
            token=token,
            queue=serving_order([(sc.task, sc.cluster, sc.priority) for sc in pooled.scores if not sc.labeled]),
        )
        print(
            f"\nDemo ready: {result.predicted}/{result.tasks} tasks pre-annotated ({result.regions} boxes) by {version}.\n"
            f"  Classes:      {setup.get('pre_annotations', '')}\n"
            f"  Label Studio: {ls.url}/projects/{pid}/data  (log in as {ls.username} / {ls.password})\n"
            f"  Queue:        the Data Manager tab 'Active learning queue'; Label (the button) serves one annotator tasks {result.queue[:5]} first\n"
            f"                (the cluster labeled least first, then the highest priority: docs/queue.md)\n"
            f"  Scores:       {backend_url}/scores?project={pid}\n"
            f"  Retraining:   label {backend_env['RETRAIN_MIN_NEW_LABELS']} tasks and it starts by itself: {backend_url}/training?project={pid}\n"
            f"  Backend:      {backend_url}/health\n"
            f"  API token:    {workdir / 'label-studio' / 'personal-access-token'}\n",
            flush=True,
        )
        return Demo(result, client, ls, backend_proc, truth)
    except BaseException:
        if backend_proc is not None and backend_proc.poll() is None:
            backend_proc.terminate()
            backend_proc.wait(timeout=20)
        ls.stop()
        raise


LABELS = {0: "Circle", 1: "Square", 2: "Triangle"}


def _scenes(n: int) -> list[SyntheticImage]:
    """The demo's images, the same every time (seeded)."""
    rng = np.random.default_rng(2024)
    return [make_image(rng, 320, int(320 * rng.uniform(0.7, 1.0))) for _ in range(n)]
