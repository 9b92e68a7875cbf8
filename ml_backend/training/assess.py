"""What the served model's pre-annotations save an annotator, measured on a project's own labels.

``python -m ml_backend assess --project N``: the project's held-out labeled tasks (the tasks its
retraining holds out, by task id: :func:`ml_backend.training.dataset.assign_splits`), each
pre-annotated by the model that serves the project now, exactly as served (thresholds, label
mapping), and matched to the annotation an annotator saved: what they would accept, adjust,
relabel, draw and delete, priced with ``ANNOTATION_COSTS`` against drawing every box from scratch
(:func:`ml_backend.al.effort.price`). The same figure each retraining stores with its version, on
request, for the model served today.

Example:
    >>> box = {"value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["cat"]}}
    >>> assess_regions([([box], [box])], {"cat": 0})["speedup"]  # 2 + 7 s to draw, 2 + 1.6 s to accept
    2.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from integrations.label_studio import LabelStudioAPI
from ml_backend.al.effort import Corrections, corrections, price
from ml_backend.inference.ls_results import to_ls_results
from ml_backend.inference.predictor import Predictor
from ml_backend.settings import Settings
from ml_backend.training.dataset import assign_splits, current_annotation

BOX_KEYS = ("rectanglelabels", "polygonlabels", "labels")


def _boxes(
    regions: Sequence[Mapping[str, Any]], class_ids: Mapping[str, int], from_name: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(xyxy in percent, class ids) of the box-like regions (a polygon by its bounds; -1: a label of no class)."""
    boxes, classes = [], []
    for r in regions:
        if from_name and r.get("from_name") not in (None, from_name):
            continue
        v = r.get("value") or {}
        label = next((str(v[k][0]) for k in BOX_KEYS if v.get(k)), None)
        if label is None:
            continue
        if "points" in v and v["points"]:
            xs, ys = [float(p[0]) for p in v["points"]], [float(p[1]) for p in v["points"]]
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
        elif {"x", "y", "width", "height"} <= set(v):
            x, y = float(v["x"]), float(v["y"])
            boxes.append([x, y, x + float(v["width"]), y + float(v["height"])])
        else:
            continue
        classes.append(class_ids.get(label, -1))
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(classes, dtype=int)


def assess_regions(
    pairs: Sequence[tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]],
    class_ids: Mapping[str, int],
    settings: Settings | None = None,
    from_name: str | None = None,
) -> dict[str, Any]:
    """Price ``(shown regions, saved regions)`` per task: correcting what was shown against drawing the saved boxes."""
    settings = settings or Settings()
    total = Corrections()
    for shown, saved in pairs:
        gt, gc = _boxes(saved, class_ids, from_name)
        pr, pc = _boxes(shown, class_ids, from_name)
        total = total + corrections(gt, gc, pr, pc)
    return price(total, settings.annotation_costs)


def assess_project(client: LabelStudioAPI, project_id: int, predictor: Predictor, settings: Settings) -> dict[str, Any]:
    """What the project's served model saves on its held-out labeled tasks (see the module docstring).

    Raises:
        ValueError: the project has no held-out labeled task yet, or its control holds no boxes.
    """
    project = client.get_project(project_id)
    served = predictor.serve(project["label_config"], project=project_id)
    if served.target.kind == "choices":
        raise ValueError("assess prices boxes and polygons; this project's labeling config holds image classes (<Choices>)")
    labeled = [t for t in client.list_tasks(project_id) if current_annotation(t) is not None]
    splits = assign_splits([int(t["id"]) for t in labeled], settings.train_val_fraction)
    heldout = [t for t in labeled if splits[int(t["id"])] == "val"]
    if not heldout:
        raise ValueError(f"project {project_id} has no held-out labeled task yet: label a few more tasks")
    pairs, failed = [], {}
    for task, pred in zip(heldout, predictor.run(heldout, served), strict=True):
        if isinstance(pred, str):
            failed[int(task["id"])] = pred
            continue
        shown, _ = to_ls_results(pred, served.target, served.label_map, served.display)
        pairs.append((shown, (current_annotation(task) or {}).get("result") or []))
    class_ids = {label: i for i, label in enumerate(served.target.labels)}
    out = assess_regions(pairs, class_ids, settings, served.target.from_name)
    out.update(project=int(project_id), model_version=served.model.version, heldout_tasks=len(heldout), failed=failed)
    return out
