"""``python -m ml_backend first-model`` for real: its own Label Studio, this backend, labels made in
Label Studio's order until a model of the project's classes is served, its boxes counted per class."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.tools.datasets import load_dataset
from ml_backend.tools.first_model import run_first_model, shown_per_class

pytestmark = pytest.mark.e2e


def test_first_model_labels_in_label_studios_order_until_the_classes_are_shown(
    tmp_path, own_classes_voc, detect_weights, monkeypatch
) -> None:
    root = own_classes_voc  # classes of its own: the weights know circle, square, triangle
    env = {
        "RETRAIN_MIN_NEW_LABELS": "10", "TRAIN_STEPS": "160", "TRAIN_BATCH": "8", "TRAIN_IMGSZ": "96", "IMGSZ": "96",
        "SCORE_THRESHOLD": "0.3", "TRAIN_VAL_FRACTION": "0.3", "DEVICE": "cpu", "AL_CLUSTERS": "1",
    }  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = run_first_model(str(root), "voc", str(detect_weights), tmp_path / "work", images=0, max_labels=20)
    assert out["images"] == 40 and out["threshold"] == 10 and out["classes"] == ["box", "ring", "wedge"]
    assert out["pre_annotations"].startswith("no model for box, ring, wedge yet: the first one trains after 10 labeled tasks")
    first = out["runs"][0]
    assert 10 <= first["labels"] <= 12 and first["dataset"]["classes"]["new"] == ["box", "ring", "wedge"]
    served = [r for r in out["runs"] if r["promoted"]]
    assert served, out["runs"]
    shown = served[0]["unlabeled"]
    ds = load_dataset(root, "voc")
    assert sum(c["true"] for c in shown.values()) + served[0]["labeled_boxes"] == sum(len(it.boxes) for it in ds.items)
    assert all(0 <= c["right"] <= min(c["shown"], c["true"]) for c in shown.values())
    assert sum(c["right"] for c in shown.values()) > 0  # the project's own model shows some of its classes right


def test_shown_per_class_counts_right_boxes_of_the_same_class_only() -> None:
    class Item:
        width, height = 100, 100
        boxes = np.array([[0, 0, 10, 10], [50, 50, 70, 70]], dtype=float)
        classes = np.array([0, 1])

    class Ds:
        names = {0: "fish", 1: "shark"}
        items = [Item()]

    def box(label: str, x: float, y: float, w: float) -> dict:
        return {"value": {"x": x, "y": y, "width": w, "height": w, "rectanglelabels": [label]}}

    regions = [box("fish", 0, 0, 10), box("fish", 50, 50, 20), box("shark", 80, 80, 5)]
    counts = shown_per_class(Ds(), {7: 0}, {7: regions})  # type: ignore[arg-type]
    assert counts == {"fish": {"true": 1, "shown": 2, "right": 1}, "shark": {"true": 1, "shown": 1, "right": 0}}
