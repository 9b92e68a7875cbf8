"""``assess``: the served model's pre-annotations priced against what annotators saved."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.inference.model import ModelHolder
from ml_backend.inference.predictor import Predictor
from ml_backend.settings import Settings
from ml_backend.tools.synthetic import ls_box_result, make_image
from ml_backend.training.assess import assess_project, assess_regions
from ml_backend.training.dataset import assign_splits


def box(label: str, x: float, y: float, w: float = 20, h: float = 20) -> dict:
    return {"from_name": "label", "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]}}


def poly(label: str, pts: list[list[float]]) -> dict:
    return {"from_name": "label", "value": {"points": pts, "polygonlabels": [label]}}


@pytest.mark.parametrize(
    ("shown", "saved", "counts"),
    [
        ([box("cat", 10, 10)], [box("cat", 10, 10)], {"accepted": 1}),  # right as shown
        ([box("dog", 10, 10)], [box("cat", 10, 10)], {"accepted": 0, "class_changed": 1}),  # right box, wrong label
        ([box("cat", 12, 12)], [box("cat", 10, 10)], {"adjusted": 1}),  # IoU 0.68: edges to drag
        ([], [box("cat", 10, 10)], {"drawn": 1}),  # nothing shown: drawn
        ([box("cat", 60, 60)], [], {"deleted": 1}),  # shown where nothing is: deleted
        ([box("cat", 10, 10)], [poly("cat", [[10, 10], [30, 10], [30, 30], [10, 30]])], {"accepted": 1}),  # a polygon by its bounds
        ([box("cat", 10, 10, 20, 20) | {"from_name": "other"}], [box("cat", 10, 10)], {"drawn": 1}),  # another control's region
    ],
)
def test_assess_regions_counts_what_an_annotator_does(shown: list, saved: list, counts: dict) -> None:
    out = assess_regions([(shown, saved)], {"cat": 0, "dog": 1}, from_name="label")
    want = {"images": 1, "gt_boxes": len(saved), "accepted": 0, "adjusted": 0, "class_changed": 0, "drawn": 0, "deleted": 0, **counts}
    assert out["counts"] == want
    assert out["scratch_seconds"] == pytest.approx(2.0 + 7.0 * len(saved))


CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels></View>'
)


def test_assess_project_prices_the_served_model_on_the_held_out_labeled_tasks(tmp_path, detect_weights) -> None:
    rng = np.random.default_rng(5)
    images, tasks = {}, []
    for tid in range(1, 21):
        s = make_image(rng, 96, 80)
        images[f"/u/{tid}.jpg"] = np.asarray(s.image)
        labeled = tid <= 16
        ann = [{"id": tid, "result": ls_box_result(s), "was_cancelled": False}] if labeled else []
        tasks.append({"id": tid, "data": {"image": f"/u/{tid}.jpg"}, "annotations": ann, "_boxes": len(s.shapes)})

    class Client:
        def get_project(self, project_id: int) -> dict:
            return {"id": project_id, "label_config": CONFIG}

        def list_tasks(self, project_id: int) -> list[dict]:
            return tasks

    class Images:
        def load(self, uri: str, task_id: object = None) -> np.ndarray:
            return images[uri]

    settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "state"), "IMGSZ": "96", "SCORE_THRESHOLD": "0.3", "DEVICE": "cpu"})
    predictor = Predictor(settings, ModelHolder(str(detect_weights), "cpu"), Images())
    out = assess_project(Client(), 3, predictor, settings)  # type: ignore[arg-type]
    held = [t for t in tasks[:16] if assign_splits(list(range(1, 17)), settings.train_val_fraction)[t["id"]] == "val"]
    assert out["heldout_tasks"] == len(held) > 0 and out["failed"] == {}
    c = out["counts"]
    assert c["images"] == len(held) and c["gt_boxes"] == sum(t["_boxes"] for t in held)
    assert c["accepted"] > 0  # the shape detector finds shapes
    assert out["speedup"] == pytest.approx(out["scratch_seconds"] / out["seconds"], abs=0.01) and out["speedup"] > 1.0


def test_assess_needs_held_out_labels(tmp_path, detect_weights) -> None:
    class Client:
        def get_project(self, project_id: int) -> dict:
            return {"id": project_id, "label_config": CONFIG}

        def list_tasks(self, project_id: int) -> list[dict]:
            return [{"id": 1, "data": {"image": "/u/1.jpg"}, "annotations": []}]

    settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "state")})
    predictor = Predictor(settings, ModelHolder(str(detect_weights), "cpu"), object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no held-out labeled task yet"):
        assess_project(Client(), 3, predictor, settings)  # type: ignore[arg-type]
