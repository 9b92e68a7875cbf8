"""Benchmarks (a command, not tests): ``python -m ml_backend bench [--only NAME ...] [--device DEV]``.

* ``scoring``: our predict with scores (per-class scores, embeddings, uncertainty) against plain
  Ultralytics predict on the same images, same model, same batch: the overhead ratio.
* ``predict``: ``POST /predict`` latency (median, p95) of this backend as Label Studio talks to it
  (a real gunicorn process, ``python -m ml_backend serve``, over HTTP on 127.0.0.1), for requests
  of 1 task and of 16 tasks, against ``model.yolo.predict`` called directly on the same decoded
  images (same model, imgsz, device, conf), and the ratio ours / plain. Images are JPEGs at
  Label Studio upload URLs (``/data/upload/1/...``), served by a local stand-in for Label Studio
  (``LABEL_STUDIO_URL``): measured with the images in the backend's disk cache (the usual case:
  scoring fetched them when the tasks were imported) and downloaded in the request (a URL it has
  not seen). The backend caches no predictions; every request has new task ids anyway.
* ``rescoring``: :func:`ml_backend.scoring.pool.score_tasks` (the server's full re-score without the
  Label Studio reads and writes) over 1,000 synthetic 640x480 tasks, 10% labeled: the first
  scoring (images downloaded from the stand-in, then cached) and re-scoring (images from the disk
  cache, the stand-in stopped): seconds, seconds per 1,000 tasks, images per second. The write
  side (predictions into Label Studio) is the ``push`` benchmark.
* ``kcenter``: k-center selection of 1,000 out of 100,000 embeddings of dimension 256.
* ``push``: writing 10,000 predictions to a real Label Studio (started here), in bulk and one
  request each (the way that keeps ``cluster``).
* ``training``: a real Label Studio and this backend (a gunicorn process): latency of
  ``/webhook`` (label events), ``/health`` and ``/predict`` while idle and while a retraining run
  (started by ``START_TRAINING``) fine-tunes the model in its child process, and that run's time.

The model of ``scoring``, ``predict`` and ``rescoring`` is YOLOv8n trained once, 50 epochs at 96 px
on 128 synthetic shape images (kept in ``--dir``), so that it finds objects and the per-box work
is in the figures; ``--weights`` sets another. ``--device`` (``cpu``, ``cuda``, ``cuda:0``, ``auto``, ...) is the ``DEVICE`` setting of every
benchmark that runs a model; the JSON's ``machine`` section records it (and the GPU's name when
CUDA is used). Every figure is the median of ``--repeat`` runs (``predict``: ``6 x --repeat``
requests of 1 task and ``2 x --repeat`` of 16 tasks; ``rescoring``: at most 3 re-scorings).
Results go to a JSON file (with the raw runs) and a markdown table.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import itertools
import json
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.settings import Settings
from ml_backend.tools.loadtest import latency_summary as _summary


def _median_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _detector(workdir: Path) -> Path:
    """The inference benchmarks' detector: YOLOv8n trained 50 epochs at 96 px on 128 synthetic shape
    images (as the tests' ``detect_weights``), so it finds objects and per-box work is measured."""
    from ml_backend.tools.starter import train_starter_model

    return train_starter_model(workdir / "detector", kind="detect", epochs=50, imgsz=96, n_train=128, n_val=16, batch=16)


def _starter(workdir: Path) -> Path:
    """The benchmarks' detector: YOLOv8n trained 1 epoch on synthetic shapes (made once, then reused)."""
    from ml_backend.tools.starter import train_starter_model

    return train_starter_model(workdir / "starter", kind="detect", epochs=1, imgsz=64, n_train=8, n_val=4)


def _ultralytics_device(device: str) -> str | None:
    """``device`` as Ultralytics takes it, read exactly as the ``DEVICE`` setting (``auto``: None)."""
    return Settings.from_env({"DEVICE": device}).ultralytics_device


def device_info(device: str) -> dict:
    """The device the benchmarks ran on: ``{"device": ...}``, plus the GPU's name when CUDA is used.

    Args:
        device: the ``--device`` value (``DEVICE`` setting).
    """
    out: dict = {"device": device}
    name = (device or "auto").lower()
    if name == "cpu" or name.startswith("mps"):
        return out
    import torch

    if torch.cuda.is_available():
        index = 0
        if name.startswith("cuda:"):
            index = int(name[5:].split(",")[0])
        elif name[:1].isdigit():  # Ultralytics' "0" or "0,1"
            index = int(name.split(",")[0])
        out["cuda_device_name"] = torch.cuda.get_device_name(index)
    return out


def bench_scoring(
    workdir: Path, repeat: int, n_images: int = 16, size: int = 640, device: str = "cpu", weights: str | Path | None = None
) -> dict:
    """Our predict with scores against plain Ultralytics predict, in-process, on the same batch.

    Args:
        device: the device of both (``DEVICE`` spelling).
        weights: the model (default: the benchmarks' starter detector).
    """
    from ml_backend.inference.model import load_weights
    from ml_backend.scoring.pool import image_scores
    from ml_backend.tools.synthetic import make_image

    model = load_weights(str(weights or _detector(workdir)))
    udev = _ultralytics_device(device)
    settings = Settings.from_env({"SCORE_THRESHOLD": "0.25", "CANDIDATE_THRESHOLD": "0.05"})
    rng = np.random.default_rng(0)
    images = [np.asarray(make_image(rng, size, int(size * 0.75)).image) for _ in range(n_images)]
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
    conf = 0.05

    def plain() -> None:
        model.yolo.predict(bgr, conf=conf, imgsz=size, device=udev, verbose=False, batch=n_images)

    def ours() -> None:
        for p in model.predict(images, conf=conf, imgsz=size, device=udev, batch=n_images, with_scores=True):
            image_scores(p, settings, len(model.names))

    t_plain, all_plain = _median_time(plain, repeat)
    t_ours, all_ours = _median_time(ours, repeat)
    return {
        "images": n_images,
        "imgsz": size,
        "device": device,
        "plain_ultralytics_s": t_plain,
        "with_scores_s": t_ours,
        "overhead": t_ours / t_plain - 1,
        "runs_plain_s": all_plain,
        "runs_ours_s": all_ours,
        "goal": "overhead <= 15%",
    }


def bench_kcenter(repeat: int, n: int = 100_000, d: int = 256, k: int = 1000) -> dict:
    from ml_backend.al.diversity import k_center_greedy

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
        region = {
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 640,
            "original_height": 480,
            "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0, "rectanglelabels": ["a"]},
            "score": 0.5,
        }
        preds = [
            {"task": t, "result": [region], "score": (i % 97) / 97, "model_version": "bench", "cluster": i % 8} for i, t in enumerate(ids)
        ]

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


# -- predict and rescoring: images at Label Studio upload URLs -----------------------------------

UPLOAD_DIR = "data/upload/1"  # where Label Studio keeps a project's uploaded files (URL = path)
STAND_IN_NOTE = (
    "JPEGs at Label Studio upload URLs (/data/upload/1/...), served over HTTP by a local stand-in for Label Studio "
    "(Python's http.server, no auth) set as LABEL_STUDIO_URL; the backend fetches them as from Label Studio"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _StandInServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops the backend's 8 parallel downloads' SYNs: 1 s retries


@contextlib.contextmanager
def label_studio_stand_in(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1, as Label Studio serves its uploads; yields the base URL.

    Args:
        root: the folder that ``/data/upload/...`` URLs are read from.
    """
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = _StandInServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_upload_images(root: Path, n: int, width: int, height: int, seed: int = 0) -> tuple[list[str], list]:
    """Write ``n`` synthetic JPEGs under ``root/data/upload/1`` (kept when already there).

    Returns:
        (their Label Studio URLs ``/data/upload/1/img_<i>.jpg``, their :class:`SyntheticImage`).
    """
    from ml_backend.tools.synthetic import make_image

    folder = root / UPLOAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    uris, synth = [], []
    for i in range(n):
        s = make_image(rng, width, height)
        name = f"img_{width}x{height}_{seed}_{i}.jpg"
        if not (folder / name).exists():
            s.image.save(folder / name, quality=90)
        uris.append(f"/{UPLOAD_DIR}/{name}")
        synth.append(s)
    return uris, synth


def _decoded_bgr(root: Path, uris: Sequence[str]) -> list[np.ndarray]:
    """The images behind ``uris`` decoded as the backend decodes them, in Ultralytics' BGR order."""
    from ml_backend.inference.images import decode_image

    return [np.ascontiguousarray(decode_image((root / u.lstrip("/")).read_bytes())[:, :, ::-1]) for u in uris]


def _rotating(items: Sequence, n: int) -> Callable[[], list]:
    """A function returning the next ``n`` of ``items`` each call, going round."""
    cycle = itertools.cycle(items)
    return lambda: [next(cycle) for _ in range(n)]


def _plain_predict_latencies(
    yolo: Any, images: Sequence[np.ndarray], n: int, count: int, warmup: int, conf: float, imgsz: int, device: str | None
) -> list[float]:
    """Seconds per ``yolo.predict`` call on ``n`` of ``images`` at a time (outputs read to the CPU)."""
    batch = _rotating(images, n)

    def call() -> None:
        for r in yolo.predict(batch(), conf=conf, imgsz=imgsz, device=device, verbose=False, batch=n):
            r.cpu()

    for _ in range(warmup):
        call()
    return _latencies(call, count=count)


class _PredictClient:
    """Posts ``/predict`` requests as Label Studio does, with new task ids every request."""

    def __init__(self, url: str, uris: Sequence[str], label_config: str):
        import requests

        self.url, self.uris, self.label_config = url, list(uris), label_config
        self.session = requests.Session()
        self.ids = itertools.count(1)
        self.regions = 0
        self.tasks = 0

    def post(self, n: int, download: bool = False) -> None:
        """One request of ``n`` tasks; ``download``: URLs the backend has not cached (a fresh query string).

        Raises:
            RuntimeError: the request failed or a task got an error entry instead of a prediction.
        """
        tasks = []
        for _ in range(n):
            tid = next(self.ids)
            uri = self.uris[tid % len(self.uris)]
            tasks.append({"id": tid, "data": {"image": f"{uri}?r={tid}" if download else uri}})
        resp = self.session.post(
            f"{self.url}/predict", json={"tasks": tasks, "project": "1.0", "label_config": self.label_config}, timeout=600
        )
        if resp.status_code != 200:
            raise RuntimeError(f"/predict answered {resp.status_code}: {resp.text[:300]}")
        results = resp.json()["results"]
        failed = [r["error"] for r in results if "error" in r]
        if len(results) != n or failed:
            raise RuntimeError(f"/predict returned {len(results)} results for {n} tasks; errors: {failed[:3]}")
        self.regions += sum(len(r["result"]) for r in results)
        self.tasks += n

    def latencies(self, n: int, count: int, warmup: int, download: bool) -> list[float]:
        for _ in range(warmup):
            self.post(n, download)
        return _latencies(lambda: self.post(n, download), count=count)


def _backend_env(weights: Path, state: Path, ls_url: str, device: str, imgsz: int, conf: float) -> dict[str, str]:
    """Settings of the benchmarked backend process (the caller's BASIC_AUTH_* etc. switched off)."""
    return {
        "MODEL_PATH": str(weights),
        "MODEL_DIR": str(state),
        "LABEL_STUDIO_URL": ls_url,
        "LABEL_STUDIO_API_KEY": "",
        "BASIC_AUTH_USER": "",
        "BASIC_AUTH_PASS": "",
        "REDIS_URL": "",
        "EMBEDDER": "",
        "RETRAIN_MIN_NEW_LABELS": "0",
        "DEVICE": device,
        "IMGSZ": str(imgsz),
        "SCORE_THRESHOLD": str(conf),
        "PREDICT_BATCH": "16",
        "LOG_LEVEL": "WARNING",
    }


def _measure_backend(
    workdir: Path, root: Path, uris: list[str], env: dict[str, str], sizes: Sequence[int], counts: Sequence[int], warmup: int
) -> tuple[dict, float]:
    """``/predict`` latencies of a gunicorn backend, per request size and image path.

    Returns:
        (``{n: {"cached": [...], "download": [...]}}`` in seconds, mean regions per task).
    """
    from integrations.local_label_studio import free_port
    from ml_backend.tools.demo import DEMO_CONFIG
    from ml_backend.tools.servers import start_backend, wait_for_model

    port = free_port()
    proc = start_backend(workdir, port, env)
    try:
        wait_for_model(f"http://127.0.0.1:{port}", proc)
        client = _PredictClient(f"http://127.0.0.1:{port}", uris, DEMO_CONFIG)
        for start in range(0, len(uris), 16):  # every image into the disk cache, and the model warmed up
            client.post(min(16, len(uris) - start))
        client.regions = client.tasks = 0
        runs = {n: {"cached": client.latencies(n, count, warmup, download=False)} for n, count in zip(sizes, counts)}
        regions_per_task = client.regions / max(1, client.tasks)
        for n, count in zip(sizes, counts):
            runs[n]["download"] = client.latencies(n, count, warmup, download=True)
        return runs, regions_per_task
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _predict_row(n: int, count: int, plain: list[float], ours: dict[str, list[float]]) -> dict:
    """One request size's figures: summaries, ratios ours / plain (medians), raw runs."""
    p = _summary(plain)
    row: dict = {"tasks": n, "requests": count, "plain_ultralytics": p, "runs_plain_s": plain}
    for mode, xs in ours.items():
        s = _summary(xs)
        row[f"ours_{mode}"] = s
        row[f"ratio_{mode}"] = s["median_ms"] / p["median_ms"]
        row[f"runs_ours_{mode}_s"] = xs
    return row


def bench_predict(
    workdir: Path,
    device: str = "cpu",
    sizes: Sequence[int] = (1, 16),
    counts: Sequence[int] = (30, 10),
    imgsz: int = 640,
    image_size: tuple[int, int] = (640, 480),
    conf: float = 0.25,
    warmup: int = 2,
    weights: str | Path | None = None,
) -> dict:
    """``/predict`` latency of a real backend process against Ultralytics called directly.

    Args:
        workdir: scratch folder (images, backend state and log).
        device: ``DEVICE`` of the backend and the device of the plain calls.
        sizes: tasks per request (and images per plain call).
        counts: measured requests per size, after ``warmup`` unmeasured ones.
        imgsz: ``IMGSZ`` and the plain calls' ``imgsz``.
        image_size: (width, height) of the JPEGs.
        conf: ``SCORE_THRESHOLD`` and the plain calls' ``conf``.
        weights: the model (default: the benchmarks' starter detector).

    Returns:
        The report section: settings, and per size the median / p95 of ours (images from the disk
        cache, and downloaded) and of plain Ultralytics, the ratios and the raw runs.
    """
    from ml_backend.inference.model import load_weights

    weights = Path(weights or _detector(workdir)).resolve()
    root = workdir / "predict-images"
    uris, _ = write_upload_images(root, max(sizes), *image_size)
    state = workdir / "predict-state"
    shutil.rmtree(state, ignore_errors=True)
    with label_studio_stand_in(root) as ls_url:
        env = _backend_env(weights, state.resolve(), ls_url, device, imgsz, conf)
        ours, regions = _measure_backend(workdir, root, uris, env, sizes, counts, warmup)
    yolo = load_weights(str(weights)).yolo
    images = _decoded_bgr(root, uris)
    udev = _ultralytics_device(device)
    rows = [
        _predict_row(n, c, _plain_predict_latencies(yolo, images, n, c, warmup, conf, imgsz, udev), ours[n]) for n, c in zip(sizes, counts)
    ]
    return {
        "server": "gunicorn (python -m ml_backend serve: 1 worker, gthread, 8 threads) over HTTP on 127.0.0.1, one keep-alive session",
        "images": f"{len(uris)} {STAND_IN_NOTE}",
        "image_modes": {
            "cached": "the images are in the backend's disk cache (fetched once before measuring): read, decoded, predicted",
            "download": "each task's URL is new to the backend (a fresh query string): downloaded from the stand-in, cached, decoded, predicted",
        },
        "prediction_cache": "none: /predict runs the model on every request; each request also has new task ids",
        "plain": "model.yolo.predict on the same images decoded in memory (BGR), same weights, imgsz, device and conf; results moved to the CPU",
        "ratio": "median ours / median plain",
        "device": device,
        "imgsz": imgsz,
        "image_size": list(image_size),
        "conf": conf,
        "warmup": warmup,
        "weights": str(weights),
        "regions_per_task": regions,
        "by_tasks": rows,
    }


def _pool_tasks(uris: Sequence[str], synth: Sequence, labeled_every: int = 10) -> list[dict]:
    """Label Studio tasks for ``uris``; every ``labeled_every``-th has its true boxes as an annotation."""
    from ml_backend.tools.synthetic import ls_box_result

    labels = {0: "Circle", 1: "Square", 2: "Triangle"}
    tasks = []
    for i, (uri, s) in enumerate(zip(uris, synth)):
        annotations = [{"id": i + 1, "result": ls_box_result(s, labels), "was_cancelled": False}] if i % labeled_every == 0 else []
        tasks.append({"id": i + 1, "data": {"image": uri}, "annotations": annotations})
    return tasks


def _rate(seconds: float, n: int) -> dict:
    return {"seconds": seconds, "per_1000_tasks_s": 1000 * seconds / n, "images_per_s": n / seconds}


def _warm_up(served: Any, settings: Settings, width: int, height: int) -> None:
    """One unmeasured scoring pass on blank images (model load and first-call costs)."""
    blank = [np.zeros((height, width, 3), dtype=np.uint8)] * min(settings.predict_batch, 4)
    served.model.predict(blank, conf=0.05, imgsz=settings.imgsz, device=settings.ultralytics_device, batch=len(blank), with_scores=True)


def bench_rescoring(
    workdir: Path,
    device: str = "cpu",
    repeat: int = 3,
    n_tasks: int = 1000,
    image_size: tuple[int, int] = (640, 480),
    imgsz: int = 640,
    weights: str | Path | None = None,
) -> dict:
    """Pool (re-)scoring time: :func:`ml_backend.scoring.pool.score_tasks` over ``n_tasks`` tasks.

    The first scoring downloads every image from a Label Studio stand-in (and caches it), as a
    project's first scoring does; the stand-in is then stopped and the re-scorings (as after a
    retrained model is promoted) read every image from the disk cache (the model outputs kept by
    the predictor are dropped before each, as a new version's would not be found). The re-scorings
    after labels alone (the same model) take the model outputs kept by the last one.

    Args:
        workdir: scratch folder (images, backend state).
        device: ``DEVICE``.
        repeat: re-scorings measured (the median is reported).
        n_tasks: tasks in the pool (one 10th labeled).
        image_size: (width, height) of the JPEGs.
        imgsz: ``IMGSZ``.
        weights: the model (default: the benchmarks' starter detector).
    """
    from ml_backend.inference.predictor import make_predictor
    from ml_backend.scoring.pool import score_tasks
    from ml_backend.tools.demo import DEMO_CONFIG

    weights = Path(weights or _detector(workdir)).resolve()
    root = workdir / "rescoring-images"
    uris, synth = write_upload_images(root, n_tasks, *image_size, seed=1)
    tasks = _pool_tasks(uris, synth)
    state = workdir / "rescoring-state"
    shutil.rmtree(state, ignore_errors=True)
    with label_studio_stand_in(root) as ls_url:
        settings = Settings.from_env(
            {
                "MODEL_PATH": str(weights),
                "MODEL_DIR": str(state.resolve()),
                "LABEL_STUDIO_URL": ls_url,
                "DEVICE": device,
                "IMGSZ": str(imgsz),
            }
        )
        predictor = make_predictor(settings)
        served = predictor.serve(DEMO_CONFIG, wait=120)
        _warm_up(served, settings, *image_size)
        t0 = time.perf_counter()
        first = score_tasks(tasks, served, predictor, settings)
        t_first = time.perf_counter() - t0
    if first.errors:
        raise RuntimeError(f"{len(first.errors)} tasks failed in the first scoring, e.g. {next(iter(first.errors.values()))}")
    pooled = []

    def rescore_new_version() -> None:
        predictor.outputs.clear()
        pooled.append(score_tasks(tasks, served, predictor, settings))

    t_re, runs = _median_time(rescore_new_version, repeat, warmup=0)
    t_labels, label_runs = _median_time(lambda: pooled.append(score_tasks(tasks, served, predictor, settings)), repeat, warmup=0)
    last = pooled[-1]
    return {
        "function": "ml_backend.scoring.pool.score_tasks (model pass with scores and embeddings, uncertainty, diversity, AL_STRATEGY, k-means); no Label Studio I/O",
        "write_side": "pushing the predictions to Label Studio is the push benchmark",
        "images": f"{n_tasks} {STAND_IN_NOTE}",
        "tasks": n_tasks,
        "labeled": sum(1 for t in tasks if t["annotations"]),
        "image_size": list(image_size),
        "imgsz": imgsz,
        "device": device,
        "predict_batch": settings.predict_batch,
        "strategy": settings.al_strategy,
        "clusters": settings.al_clusters,
        "weights": str(weights),
        "first_scoring": {**_rate(t_first, n_tasks), "images": "downloaded from the stand-in, then cached"},
        "rescoring": {**_rate(t_re, n_tasks), "images": "the disk cache (stand-in stopped)", "runs_s": runs},
        "rescoring_after_labels": {**_rate(t_labels, n_tasks), "images": "none: the kept model outputs", "runs_s": label_runs},
        "scored": len(last.scores),
        "errors": len(last.errors),
    }


def bench_training(workdir: Path, runs: int = 3, n_images: int = 60, epochs: int = 10, imgsz: int = 320, device: str = "cpu") -> dict:
    import requests

    from integrations.label_studio import LabelStudioClient
    from integrations.local_label_studio import LocalLabelStudio, free_port
    from ml_backend.tools.demo import DEMO_CONFIG
    from ml_backend.tools.servers import start_backend, wait_for_model
    from ml_backend.tools.synthetic import ls_box_result, make_image

    weights = _starter(workdir)
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
        proc = start_backend(
            workdir,
            port,
            {
                "MODEL_PATH": str(weights),
                "MODEL_DIR": str(state),
                "LABEL_STUDIO_URL": ls.url,
                "LABEL_STUDIO_API_KEY": token,
                "RETRAIN_MIN_NEW_LABELS": "0",
                "TRAIN_EPOCHS": str(epochs),
                "TRAIN_IMGSZ": str(imgsz),
                "TRAIN_BATCH": "8",
                "DEVICE": device,
                "IMGSZ": str(imgsz),
                "LOG_LEVEL": "WARNING",
            },
        )
        wait_for_model(url, proc)
        session = requests.Session()
        seq = iter(range(10**9))

        def webhook() -> None:
            i = next(seq)
            ev = {"action": "ANNOTATION_UPDATED", "project": {"id": pid}, "annotation": {"id": 10**6 + i, "updated_at": str(i)}}
            session.post(f"{url}/webhook", json=ev, timeout=1).raise_for_status()

        def health() -> None:
            session.get(f"{url}/health", timeout=1).raise_for_status()

        def predict() -> None:
            session.post(
                f"{url}/predict", json={"tasks": [tasks[0]], "project": f"{pid}.0", "label_config": DEMO_CONFIG}, timeout=100
            ).raise_for_status()

        predict()  # first call: model load and warm-up, not measured
        idle = {
            "webhook": _latencies(webhook, count=200),
            "health": _latencies(health, count=200),
            "predict": _latencies(predict, count=20),
        }

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
            results.append(
                {
                    "state": final["state"],
                    **{k: (final.get("last_run") or {}).get(k) for k in ("status", "promoted", "seconds", "decision")},
                }
            )
        return {
            "images": n_images,
            "labels": len(tasks),
            "epochs": epochs,
            "imgsz": imgsz,
            "runs": results,
            "training_wall_s": statistics.median(walls),
            "training_wall_runs_s": walls,
            "idle": {k: _summary(v) for k, v in idle.items()},
            "during_training": {k: _summary(v) for k, v in busy.items() if v},
            "goal": "webhook < 100 ms, /health < 1 s, /predict answered during training",
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        ls.stop()


DEFAULT_TODO = ["scoring", "predict", "rescoring", "kcenter", "push", "training"]  # "push-each" (~7 min) and "load" only when named


def _predict_rows(r: dict) -> list[str]:
    where = {"cached": "image in the disk cache", "download": "image downloaded"}
    rows = []
    for row in r["by_tasks"]:
        n, p = row["tasks"], row["plain_ultralytics"]
        rows.append(
            f"| plain Ultralytics predict, {n} image{'s' * (n > 1)} at {r['imgsz']} px (n={p['n']}) | {p['median_ms']:.1f} ms (p95 {p['p95_ms']:.1f}) | |"
        )
        for mode in ("cached", "download"):
            if f"ours_{mode}" in row:
                m = row[f"ours_{mode}"]
                rows.append(
                    f"| `/predict`, {n} task{'s' * (n > 1)}, {where[mode]} (n={m['n']}) | {m['median_ms']:.1f} ms (p95 {m['p95_ms']:.1f}), {row[f'ratio_{mode}']:.2f}x plain | |"
                )
    return rows


def _rescoring_rows(r: dict) -> list[str]:
    n, first, re = r["tasks"], r["first_scoring"], r["rescoring"]
    what = f"{n:,} tasks at {r['image_size'][0]}x{r['image_size'][1]}, imgsz {r['imgsz']}"
    rows = [
        f"| first scoring, {what}, images downloaded | {first['seconds']:.1f} s ({first['per_1000_tasks_s']:.1f} s per 1,000, {first['images_per_s']:.1f} images/s) | |",
        f"| re-scoring, {what}, images from the disk cache | {re['seconds']:.1f} s ({re['per_1000_tasks_s']:.1f} s per 1,000, {re['images_per_s']:.1f} images/s) | |",
    ]
    lab = r.get("rescoring_after_labels")  # absent in reports from before the model outputs were kept
    if lab is not None:
        rows.append(
            f"| re-scoring after labels alone, {what}, kept model outputs | {lab['seconds']:.2f} s ({lab['per_1000_tasks_s']:.2f} s per 1,000) | |"
        )
    return rows


def _training_rows(r: dict) -> list[str]:
    rows = []
    for when in ("idle", "during_training"):
        for name, goal in (("webhook", "< 100 ms"), ("health", "< 1 s"), ("predict", "< 100 s")):
            if name in r[when]:
                m = r[when][name]
                rows.append(
                    f"| /{name}, {when.replace('_', ' ')} (n={m['n']}) | {m['median_ms']:.1f} ms (p95 {m['p95_ms']:.1f}, max {m['max_ms']:.1f}) | {goal} |"
                )
    states = ", ".join(f"{x['status'] or x['state']}" for x in r["runs"])
    rows.append(
        f"| retraining run: {r['labels']} labels, {r['epochs']} epochs at {r['imgsz']} px, {len(r['runs'])} runs ({states}) | {r['training_wall_s']:.1f} s | |"
    )
    return rows


def markdown_table(report: dict) -> list[str]:
    """The report's figures as markdown table lines (header first)."""
    rows = ["| benchmark | median | goal |", "|---|---|---|"]
    if "scoring" in report:
        r = report["scoring"]
        rows.append(f"| predict {r['images']} images at {r['imgsz']} px, plain Ultralytics | {r['plain_ultralytics_s']:.3f} s | |")
        rows.append(
            f"| same, with scores (class scores, embeddings, uncertainty) | {r['with_scores_s']:.3f} s ({r['overhead']:+.1%}) | <= +15% |"
        )
    if "predict" in report:
        rows += _predict_rows(report["predict"])
    if "rescoring" in report:
        rows += _rescoring_rows(report["rescoring"])
    if "kcenter" in report:
        r = report["kcenter"]
        rows.append(f"| k-center {r['k']:,} of {r['n']:,} x {r['dim']} | {r['seconds']:.2f} s | <= 10 s |")
    if "push" in report:
        r = report["push"]
        rows.append(f"| push {r['predictions']:,} predictions, bulk import | {r['bulk_s']:.1f} s | <= 60 s |")
        if "one_request_each_4_workers_s" in r:
            rows.append(
                f"| push {r['predictions']:,} predictions, one request each (keeps cluster) | {r['one_request_each_4_workers_s']:.1f} s | <= 60 s |"
            )
    if "training" in report:
        rows += _training_rows(report["training"])
    if "load" in report:
        r = report["load"]
        rows.append(
            f"| {r['events']:,} webhooks from {r['clients']} clients in {r['seconds']:.0f} s: latency p50 / p95 / max "
            f"| {r['burst_p50_ms']:.0f} / {r['burst_p95_ms']:.0f} / {r['burst_max_ms']:.0f} ms; 5xx: {r['burst_5xx']}; "
            f"labels counted exactly: {'yes' if r['burst_exact'] else 'NO'} | no 5xx, exact counts |"
        )
        rows.append(
            f"| `/predict` (1 task) from {r['predict_clients']} clients during a training run: p50 / p95 / max "
            f"| {r['predict_p50_ms']:.0f} / {r['predict_p95_ms']:.0f} / {r.get('predict_max_ms', float('nan')):.0f} ms "
            f"({r['predict_requests']:.0f} requests a round; "
            f"non-200: {r['predict_non_200']}) | all answered |"
        )
    return rows


def run_bench(
    out: str | Path,
    only: list[str] | None,
    repeat: int,
    workdir: str | Path,
    device: str = "cpu",
    rescoring_tasks: int = 1000,
    weights: str | Path | None = None,
) -> dict:
    """Run the benchmarks, write the JSON report to ``out`` and print the table.

    Args:
        out: JSON report path.
        only: benchmarks to run (default :data:`DEFAULT_TODO`).
        repeat: runs per figure (``predict``: 6x and 2x this many requests of 1 and 16 tasks).
        workdir: scratch folder (model, images, Label Studio).
        device: ``DEVICE`` of every benchmark that runs a model.
        rescoring_tasks: tasks in the ``rescoring`` pool.
        weights: the model of ``scoring``, ``predict`` and ``rescoring`` (default: the starter
            detector, YOLOv8n after 1 epoch on shapes, which finds few objects at conf 0.25).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), **device_info(device)}
    report: dict = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "repeat": repeat}
    todo = only or DEFAULT_TODO
    if "scoring" in todo:
        report["scoring"] = bench_scoring(workdir, repeat, device=device, weights=weights)
    if "predict" in todo:
        report["predict"] = bench_predict(workdir, device=device, counts=(6 * repeat, 2 * repeat), weights=weights)
    if "rescoring" in todo:
        report["rescoring"] = bench_rescoring(workdir, device=device, repeat=min(repeat, 3), n_tasks=rescoring_tasks, weights=weights)
    if "kcenter" in todo:
        report["kcenter"] = bench_kcenter(repeat)
    if "push" in todo or "push-each" in todo:
        report["push"] = bench_push(workdir, repeat, each="push-each" in todo)
    if "training" in todo:
        report["training"] = bench_training(workdir, runs=min(repeat, 3), device=device)
    if "load" in todo:
        from ml_backend.tools.loadtest import run_load

        report["load"] = run_load(workdir / "load", repeat=min(repeat, 3), device=device)
    Path(out).write_text(json.dumps(report, indent=2))
    print("\n" + "\n".join(markdown_table(report)))
    print(f"\nwrote {out}")
    return report
