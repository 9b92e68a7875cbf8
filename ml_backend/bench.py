"""Benchmarks (a command, not tests): ``python -m ml_backend bench [--only NAME ...]``.

* ``scoring``: our predict with scores (per-class scores, embeddings, uncertainty) against plain
  Ultralytics predict on the same images, same model, same batch: the overhead ratio.
* ``kcenter``: k-center selection of 1,000 out of 100,000 embeddings of dimension 256.
* ``push``: writing 10,000 predictions to a real Label Studio (started here), in bulk and one
  request each (the way that keeps ``cluster``).
* ``training``: a real Label Studio and this backend (a gunicorn process): latency of
  ``/webhook`` (label events), ``/health`` and ``/predict`` while idle and while a retraining run
  (started by ``START_TRAINING``) fine-tunes the model in its child process, and that run's time.

Every figure is the median of ``--repeat`` runs. Results go to a JSON file and a table.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ml_backend.settings import Settings


def _median_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def bench_scoring(workdir: Path, repeat: int, n_images: int = 16, size: int = 640, device: str = "cpu") -> dict:
    from ml_backend.model import load_weights
    from ml_backend.scoring import image_scores
    from ml_backend.starter import train_starter_model
    from ml_backend.synthetic import make_image

    weights = train_starter_model(workdir / "starter", kind="detect", epochs=1, imgsz=64, n_train=8, n_val=4)
    model = load_weights(str(weights))
    settings = Settings.from_env({"SCORE_THRESHOLD": "0.25", "CANDIDATE_THRESHOLD": "0.05"})
    rng = np.random.default_rng(0)
    images = [np.asarray(make_image(rng, size, int(size * 0.75)).image) for _ in range(n_images)]
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
    conf = 0.05

    def plain() -> None:
        model.yolo.predict(bgr, conf=conf, imgsz=size, device=device, verbose=False, batch=n_images)

    def ours() -> None:
        for p in model.predict(images, conf=conf, imgsz=size, device=device, batch=n_images, with_scores=True):
            image_scores(p, settings, len(model.names))

    t_plain, all_plain = _median_time(plain, repeat)
    t_ours, all_ours = _median_time(ours, repeat)
    return {
        "images": n_images, "imgsz": size, "device": device,
        "plain_ultralytics_s": t_plain, "with_scores_s": t_ours, "overhead": t_ours / t_plain - 1,
        "runs_plain_s": all_plain, "runs_ours_s": all_ours, "goal": "overhead <= 15%",
    }


def bench_kcenter(repeat: int, n: int = 100_000, d: int = 256, k: int = 1000) -> dict:
    from ml_backend.diversity import k_center_greedy

    X = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    t, runs = _median_time(lambda: k_center_greedy(X, k, seed=0), repeat, warmup=0)
    return {"n": n, "dim": d, "k": k, "seconds": t, "runs_s": runs, "goal": "<= 10 s"}


def bench_push(workdir: Path, repeat: int, n: int = 10_000, each: bool = False) -> dict:
    from integrations.label_studio import LabelStudioClient
    from integrations.local_label_studio import LocalLabelStudio

    ls = LocalLabelStudio(workdir / "label-studio")
    ls.start()
    try:
        client = LabelStudioClient(ls.url, ls.personal_access_token(), timeout=600)
        cfg = '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image"><Label value="a"/></RectangleLabels></View>'
        pid = client.create_project("bench push", cfg)["id"]
        for start in range(0, n, 2000):
            client.import_tasks(pid, [{"image": f"https://example.com/{i}.jpg"} for i in range(start, min(n, start + 2000))])
        ids = [t["id"] for t in client.list_tasks(pid, fields="task_only")]
        region = {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 640, "original_height": 480,
                  "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0, "rectanglelabels": ["a"]}, "score": 0.5}
        preds = [{"task": t, "result": [region], "score": (i % 97) / 97, "model_version": "bench", "cluster": i % 8} for i, t in enumerate(ids)]

        def bulk() -> None:
            client.delete_model_version(pid, "bench")
            client.import_predictions(pid, preds)

        def one_by_one() -> None:
            client.delete_model_version(pid, "bench")
            client.create_predictions(preds)

        t_bulk, runs_bulk = _median_time(bulk, repeat, warmup=0)
        out = {"predictions": len(preds), "bulk_s": t_bulk, "runs_bulk_s": runs_bulk, "goal": "<= 60 s", "label_studio": "1.23.2, SQLite"}
        if each:
            t_each, runs_each = _median_time(one_by_one, max(1, min(repeat, 2)), warmup=0)
            out.update({"one_request_each_4_workers_s": t_each, "runs_each_s": runs_each})
        return out
    finally:
        ls.stop()


def _latencies(fn: Callable[[], object], seconds: float | None = None, count: int | None = None) -> list[float]:
    out: list[float] = []
    end = time.monotonic() + (seconds or 0)
    while (count is not None and len(out) < count) or (seconds is not None and time.monotonic() < end):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"n": len(xs), "median_ms": 1000 * statistics.median(xs), "p95_ms": 1000 * xs[int(0.95 * (len(xs) - 1))], "max_ms": 1000 * xs[-1]}


def bench_training(workdir: Path, runs: int = 3, n_images: int = 60, epochs: int = 10, imgsz: int = 320) -> dict:
    import requests

    from integrations.label_studio import LabelStudioClient
    from integrations.local_label_studio import LocalLabelStudio, free_port
    from ml_backend.demo import DEMO_CONFIG, _start_backend, _wait_model
    from ml_backend.starter import train_starter_model
    from ml_backend.synthetic import ls_box_result, make_image

    weights = train_starter_model(workdir / "starter", kind="detect", epochs=1, imgsz=64, n_train=8, n_val=4)
    ls = LocalLabelStudio(workdir / "label-studio-training")
    ls.start()
    proc = None
    try:
        token = ls.personal_access_token()
        client = LabelStudioClient(ls.url, token)
        pid = client.create_project("bench training", DEMO_CONFIG)["id"]
        rng = np.random.default_rng(0)
        imgdir = workdir / "training-images"
        imgdir.mkdir(parents=True, exist_ok=True)
        truth = {}
        for i in range(n_images):
            s = make_image(rng, 640, 480)
            s.image.save(imgdir / f"img_{i}.jpg", quality=90)
            truth[f"img_{i}.jpg"] = ls_box_result(s, {0: "Circle", 1: "Square", 2: "Triangle"})
        client.upload_files(pid, [str(imgdir / n) for n in truth])
        tasks = client.list_tasks(pid)
        for t in tasks:
            client.create_annotation(t["id"], next(v for k, v in truth.items() if t["data"]["image"].endswith(k)))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        state = workdir / "training-state"
        import shutil

        shutil.rmtree(state, ignore_errors=True)
        proc = _start_backend(workdir, port, {
            "MODEL_PATH": str(weights), "MODEL_DIR": str(state), "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": token,
            "RETRAIN_MIN_NEW_LABELS": "0", "TRAIN_EPOCHS": str(epochs), "TRAIN_IMGSZ": str(imgsz), "TRAIN_BATCH": "8", "DEVICE": "cpu",
            "IMGSZ": str(imgsz), "LOG_LEVEL": "WARNING",
        })
        _wait_model(url, proc)
        session = requests.Session()
        seq = iter(range(10**9))

        def webhook() -> None:
            i = next(seq)
            ev = {"action": "ANNOTATION_UPDATED", "project": {"id": pid}, "annotation": {"id": 10**6 + i, "updated_at": str(i)}}
            session.post(f"{url}/webhook", json=ev, timeout=1).raise_for_status()

        def health() -> None:
            session.get(f"{url}/health", timeout=1).raise_for_status()

        def predict() -> None:
            session.post(f"{url}/predict", json={"tasks": [tasks[0]], "project": f"{pid}.0", "label_config": DEMO_CONFIG}, timeout=100).raise_for_status()

        predict()  # first call: model load and warm-up, not measured
        idle = {"webhook": _latencies(webhook, count=200), "health": _latencies(health, count=200), "predict": _latencies(predict, count=20)}

        def status() -> dict:
            return session.get(f"{url}/training", params={"project": pid}, timeout=5).json()

        busy: dict[str, list[float]] = {"webhook": [], "health": [], "predict": []}
        walls, results = [], []
        for _ in range(runs):
            session.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}}, timeout=1).raise_for_status()
            while status()["state"] == "queued":
                time.sleep(0.1)
            t0 = time.monotonic()
            while status()["state"] == "training":
                busy["webhook"] += _latencies(webhook, count=20)
                busy["health"] += _latencies(health, count=20)
                busy["predict"] += _latencies(predict, count=1)
                time.sleep(0.2)
            walls.append(time.monotonic() - t0)
            final = status()
            results.append({"state": final["state"], **{k: (final.get("last_run") or {}).get(k) for k in ("status", "promoted", "seconds", "decision")}})
        return {
            "images": n_images, "labels": len(tasks), "epochs": epochs, "imgsz": imgsz, "runs": results,
            "training_wall_s": statistics.median(walls), "training_wall_runs_s": walls,
            "idle": {k: _summary(v) for k, v in idle.items()}, "during_training": {k: _summary(v) for k, v in busy.items() if v},
            "goal": "webhook < 100 ms, /health < 1 s, /predict answered during training",
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        ls.stop()


def run_bench(out: str | Path, only: list[str] | None, repeat: int, workdir: str | Path, device: str = "cpu") -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": __import__("os").cpu_count()},
                    "date": time.strftime("%Y-%m-%d"), "repeat": repeat}
    todo = only or ["scoring", "kcenter", "push", "training"]  # "push-each" (one request per prediction, ~7 min) only when named
    if "scoring" in todo:
        report["scoring"] = bench_scoring(workdir, repeat, device=device)
    if "kcenter" in todo:
        report["kcenter"] = bench_kcenter(repeat)
    if "push" in todo or "push-each" in todo:
        report["push"] = bench_push(workdir, repeat, each="push-each" in todo)
    if "training" in todo:
        report["training"] = bench_training(workdir, runs=min(repeat, 3))
    Path(out).write_text(json.dumps(report, indent=2))
    print("\n| benchmark | median | goal |\n|---|---|---|")
    if "scoring" in report:
        r = report["scoring"]
        print(f"| predict {r['images']} images at {r['imgsz']} px, plain Ultralytics | {r['plain_ultralytics_s']:.3f} s | |")
        print(f"| same, with scores (class scores, embeddings, uncertainty) | {r['with_scores_s']:.3f} s ({r['overhead']:+.1%}) | <= +15% |")
    if "kcenter" in report:
        r = report["kcenter"]
        print(f"| k-center {r['k']:,} of {r['n']:,} x {r['dim']} | {r['seconds']:.2f} s | <= 10 s |")
    if "push" in report:
        r = report["push"]
        print(f"| push {r['predictions']:,} predictions, bulk import | {r['bulk_s']:.1f} s | <= 60 s |")
        if "one_request_each_4_workers_s" in r:
            print(f"| push {r['predictions']:,} predictions, one request each (keeps cluster) | {r['one_request_each_4_workers_s']:.1f} s | <= 60 s |")
    if "training" in report:
        r = report["training"]
        for when in ("idle", "during_training"):
            for name, goal in (("webhook", "< 100 ms"), ("health", "< 1 s"), ("predict", "< 100 s")):
                if name in r[when]:
                    m = r[when][name]
                    print(f"| /{name}, {when.replace('_', ' ')} (n={m['n']}) | {m['median_ms']:.1f} ms (p95 {m['p95_ms']:.1f}, max {m['max_ms']:.1f}) | {goal} |")
        states = ", ".join(f"{x['status'] or x['state']}" for x in r["runs"])
        print(f"| retraining run: {r['labels']} labels, {r['epochs']} epochs at {r['imgsz']} px, {len(r['runs'])} runs ({states}) | {r['training_wall_s']:.1f} s | |")
    print(f"\nwrote {out}")
    return report
