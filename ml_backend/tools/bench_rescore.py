"""A re-score after labels, end to end against a real Label Studio (a command, not a test).

``python -m ml_backend.tools.bench_rescore --tasks 2000 --weights ../shared/weights/yolo11n_coco_from_int8onnx.pt``

Starts a Label Studio 1.23.2 (SQLite, :class:`~integrations.local_label_studio.LocalLabelStudio`),
uploads ``--tasks`` synthetic 320x240 JPEGs into a project whose labels the weights know, scores
it with the server's own :func:`~ml_backend.scoring.publish.score_project` at the default
settings, labels 20 tasks through Label Studio's API and scores it again: the time of each scoring
and the HTTP requests it made to Label Studio, by kind. ``--repo`` runs the code of another
checkout instead (a ``git worktree`` of an older commit): the same measurement before and after a
change. Results go to ``--out`` (JSON) and standard output.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LABELS = ("person", "car", "dog", "sports ball")  # COCO classes: the starter weights serve them
LABELED = 20  # tasks labeled between the two scorings


def request_kind(method: str, url: str) -> str:
    """What a request to Label Studio is, for counting: images apart, task ids folded.

    Example:
        >>> request_kind("PATCH", "http://ls:8080/api/tasks/17")
        'PATCH /api/tasks/<id>'
        >>> request_kind("GET", "http://ls:8080/data/upload/1/a.jpg?x=1")
        'image'
        >>> request_kind("post", "http://ls:8080/api/projects/1/import/predictions?commit_to_project=true")
        'POST /api/projects/1/import/predictions'
    """
    path = urlsplit(url).path.rstrip("/")
    if path.startswith("/data/"):
        return "image"
    if path.startswith("/api/tasks/") and path.count("/") == 3:
        path = "/api/tasks/<id>"
    return f"{method.upper()} {path}"


@contextmanager
def counting_requests() -> Iterator[Counter]:
    """Count every request made through :mod:`requests` sessions while inside, by :func:`request_kind`."""
    import requests

    counts: Counter = Counter()
    real = requests.Session.request

    def counted(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        counts[request_kind(method, url)] += 1
        return real(self, method, url, *args, **kwargs)

    requests.Session.request = counted  # type: ignore[method-assign, assignment]
    try:
        yield counts
    finally:
        requests.Session.request = real  # type: ignore[method-assign]


def measure(n_tasks: int, weights: str, work: Path) -> dict:
    """The two scorings of ``n_tasks`` tasks (see the module docstring) with whatever code
    ``ml_backend`` and ``integrations`` resolve to on ``sys.path``."""
    import numpy as np

    LabelStudioClient = importlib.import_module("integrations.label_studio").LabelStudioClient
    LocalLabelStudio = importlib.import_module("integrations.local_label_studio").LocalLabelStudio
    make_predictor = importlib.import_module("ml_backend.inference.predictor").make_predictor
    score_project = importlib.import_module("ml_backend.scoring.publish").score_project
    Settings = importlib.import_module("ml_backend.settings").Settings
    make_image = importlib.import_module("ml_backend.tools.synthetic").make_image

    ls = LocalLabelStudio(work / "label-studio")
    ls.start()
    try:
        pat = ls.personal_access_token()
        client = LabelStudioClient(ls.url, pat, timeout=600)
        labels = "".join(f'<Label value="{name}"/>' for name in LABELS)
        config = f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">{labels}</RectangleLabels></View>'
        pid = client.create_project("re-score benchmark", config)["id"]
        rng = np.random.default_rng(0)
        (work / "images").mkdir(exist_ok=True)
        paths = []
        for i in range(n_tasks):
            path = work / "images" / f"t{i:05d}.jpg"
            make_image(rng, 320, 240).image.save(path, quality=90)
            paths.append(str(path))
        for at in range(0, n_tasks, 100):
            client.upload_files(pid, paths[at : at + 100])
        settings = Settings.from_env(
            {"MODEL_PATH": weights, "MODEL_DIR": str(work / "state"), "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": pat}
        )
        predictor = make_predictor(settings)
        out: dict[str, Any] = {"tasks": n_tasks, "label_studio": ls.url}
        with counting_requests() as counts:
            t0 = time.perf_counter()
            pooled = score_project(client, pid, predictor, settings, progress=False)
            out["first_scoring_s"] = round(time.perf_counter() - t0, 1)
            out["first_scoring_requests"] = dict(counts)
            out["scored"] = len(pooled.scores)
            box = {"x": 10, "y": 10, "width": 30, "height": 30, "rotation": 0, "rectanglelabels": [LABELS[0]]}
            region = {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "value": box}
            for task in sorted(client.list_tasks(pid), key=lambda t: t["id"])[:LABELED]:
                client.create_annotation(task["id"], [{**region, "original_width": 320, "original_height": 240}])
            counts.clear()
            t0 = time.perf_counter()
            score_project(client, pid, predictor, settings, progress=False)
            out["rescore_s"] = round(time.perf_counter() - t0, 1)
            out["rescore_requests"] = dict(counts)
            out["rescore_requests_total"] = sum(counts.values())
        out["tasks_keeping_their_image"] = sum(
            1 for t in client.list_tasks(pid) if str(t["data"].get("image", "")).startswith("/data/upload/")
        )
        return out
    finally:
        ls.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ml_backend.tools.bench_rescore", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--weights", default="yolo11n.pt", help="weights whose classes include " + ", ".join(LABELS))
    p.add_argument("--repo", help="run the code of this checkout (its ml_backend and integrations) instead of this one")
    p.add_argument("--out", default="rescore-bench.json")
    args = p.parse_args(argv)
    if args.repo:
        sys.path.insert(0, str(Path(args.repo).resolve()))
        for name in [m for m in sys.modules if m.split(".")[0] in ("ml_backend", "integrations")]:
            if name != __name__:
                del sys.modules[name]
    with tempfile.TemporaryDirectory(prefix="rescore-bench-") as tmp:
        out = {"repo": args.repo or str(Path(__file__).resolve().parents[2]), **measure(args.tasks, args.weights, Path(tmp))}
    text = json.dumps(out, indent=1)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
