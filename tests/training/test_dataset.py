import math

import numpy as np
import pytest

from ml_backend.inference.ls_results import obb_percent, polygon_percent, rect_percent
from ml_backend.training.dataset import (
    assign_splits,
    current_annotation,
    region_to_line,
    split_of,
    split_score,
    task_class,
    task_label_lines,
)

W, H = 640, 480
IDS = {"car": 0, "person": 1}


def region(value: dict, rtype: str = "rectanglelabels", label: str = "car", from_name: str = "label") -> dict:
    return {
        "from_name": from_name,
        "to_name": "image",
        "type": rtype,
        "original_width": W,
        "original_height": H,
        "value": {**value, rtype: [label]},
    }


def floats(line: str) -> list[float]:
    return [float(v) for v in line.split()[1:]]


def test_rectangle_round_trips_to_yolo_detect() -> None:
    v = rect_percent(np.array([64.0, 48.0, 320.0, 240.0]), W, H)
    line = region_to_line(region(v), IDS, "detect")
    assert line.split()[0] == "0"
    assert floats(line) == pytest.approx([(64 + 320) / 2 / W, (48 + 240) / 2 / H, 256 / W, 192 / H], abs=1e-6)


@pytest.mark.parametrize("theta", [0.0, 0.4, math.pi / 3])
def test_rotated_rectangle_round_trips_to_obb_corners(theta: float) -> None:
    cx, cy, w, h = 300.0, 200.0, 120.0, 60.0
    v = obb_percent(np.array([cx, cy, w, h, theta]), W, H)
    pts = np.array(floats(region_to_line(region(v), IDS, "obb"))).reshape(4, 2) * [W, H]
    c, s = math.cos(theta), math.sin(theta)
    expected = [
        (cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    ]
    np.testing.assert_allclose(pts, expected, atol=1e-3)


def test_rotated_rectangle_for_a_detector_is_its_bounding_box() -> None:
    v = obb_percent(np.array([320.0, 240.0, 100.0, 100.0, math.pi / 4]), W, H)
    cx, cy, w, h = floats(region_to_line(region(v), IDS, "detect"))
    assert (cx * W, cy * H) == pytest.approx((320, 240), abs=1e-3)
    assert (w * W, h * H) == pytest.approx((100 * math.sqrt(2), 100 * math.sqrt(2)), abs=1e-3)


def test_polygon_to_segment_and_to_box() -> None:
    pts = np.array([[64.0, 48.0], [320.0, 48.0], [192.0, 240.0]])
    v = {"points": polygon_percent(pts, W, H), "closed": True}
    seg = floats(region_to_line(region(v, "polygonlabels", "person"), IDS, "segment"))
    assert seg == pytest.approx((pts / [W, H]).ravel().tolist(), abs=1e-6)
    box = floats(region_to_line(region(v, "polygonlabels", "person"), IDS, "detect"))
    assert box == pytest.approx([192 / W, 144 / H, 256 / W, 192 / H], abs=1e-6)


@pytest.mark.parametrize(
    ("reg", "kind"),
    [
        (region({"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 0}, label="boat"), "detect"),  # unknown label
        (region({"x": 1, "y": 1, "width": 0, "height": 5, "rotation": 0}), "detect"),  # degenerate
        (region({"points": [[1, 1], [2, 2]]}, "polygonlabels"), "segment"),  # not a polygon
        ({"type": "textarea", "value": {"text": ["hi"]}}, "detect"),
    ],
)
def test_regions_that_cannot_train_are_dropped(reg, kind) -> None:
    assert region_to_line(reg, IDS, kind) is None


def test_current_annotation_skips_cancelled_and_takes_the_newest() -> None:
    task = {
        "annotations": [
            {"id": 1, "updated_at": "2026-01-01T00:00:00Z", "result": []},
            {"id": 2, "updated_at": "2026-03-01T00:00:00Z", "result": [], "was_cancelled": True},
            {"id": 3, "updated_at": "2026-02-01T00:00:00Z", "result": []},
        ]
    }
    assert current_annotation(task)["id"] == 3
    assert current_annotation({"annotations": [{"id": 9, "was_cancelled": True}]}) is None


def test_task_lines_and_classes() -> None:
    v = rect_percent(np.array([0.0, 0.0, 64.0, 48.0]), W, H)
    task = {"annotations": [{"id": 1, "result": [region(v), region(v, label="person", from_name="other")]}]}
    assert len(task_label_lines(task, IDS, "detect")) == 2
    assert len(task_label_lines(task, IDS, "detect", from_name="label")) == 1
    assert task_label_lines({"annotations": [{"id": 1, "result": []}]}, IDS, "detect") == []  # a labeled empty image
    assert task_label_lines({"annotations": []}, IDS, "detect") is None
    cls_task = {"annotations": [{"id": 1, "result": [{"from_name": "c", "type": "choices", "value": {"choices": ["cat"]}}]}]}
    assert task_class(cls_task) == "cat"


def test_split_is_deterministic_and_near_the_fraction() -> None:
    splits = [split_of(i, 0.2) for i in range(5000)]
    assert splits == [split_of(i, 0.2) for i in range(5000)]
    assert 0.17 < splits.count("val") / 5000 < 0.23
    assert split_of(123, 0.0) == "train" and split_of(123, 1.0) == "val"


def _tasks() -> list[dict]:
    v = rect_percent(np.array([64.0, 48.0, 320.0, 240.0]), W, H)
    tasks = [{"id": i, "data": {"image": f"/data/upload/{i}.jpg"}, "annotations": [{"id": i, "result": [region(v)]}]} for i in range(1, 21)]
    tasks.append({"id": 50, "data": {}, "annotations": []})  # unlabeled: ignored
    tasks.append({"id": 51, "data": {}, "annotations": [{"id": 99, "was_cancelled": True, "result": [region(v)]}]})  # skipped: ignored
    tasks.append({"id": 52, "data": {"image": "broken"}, "annotations": [{"id": 98, "result": [region(v)]}]})
    return tasks


def _load(task):
    if task["data"].get("image") == "broken":
        raise ValueError("the image is corrupt")
    return np.full((H, W, 3), 128, np.uint8)


def test_write_dataset_trains_with_ultralytics_layout(tmp_path) -> None:
    from ml_backend.training.dataset import write_dataset

    summary = write_dataset(_tasks(), {0: "car", 1: "person"}, "detect", _load, tmp_path / "ds")
    assert summary.counts["train"] + summary.counts["val"] == 20
    assert summary.counts["val"] == sum(split_of(i) == "val" for i in range(1, 21))
    assert summary.skipped == {52: "image: the image is corrupt"}
    label = next((tmp_path / "ds" / "labels").rglob("*.txt")).read_text().split()
    assert label[0] == "0" and [float(x) for x in label[1:]] == pytest.approx([0.3, 0.3, 0.4, 0.4])
    import json

    assert json.loads(summary.data.read_text())["names"] == {"0": "car", "1": "person"}
    again = write_dataset(_tasks()[:3], {0: "car"}, "detect", _load, tmp_path / "ds")  # rewritten from scratch
    assert again.counts["train"] + again.counts["val"] == 3


def test_write_classification_dataset(tmp_path) -> None:
    from ml_backend.training.dataset import write_dataset

    tasks = [
        {
            "id": i,
            "data": {},
            "annotations": [
                {"id": i, "result": [{"from_name": "c", "type": "choices", "value": {"choices": ["cat" if i % 2 else "dog"]}}]}
            ],
        }
        for i in range(1, 9)
    ]
    tasks.append(
        {
            "id": 99,
            "data": {},
            "annotations": [{"id": 99, "result": [{"from_name": "c", "type": "choices", "value": {"choices": ["bird"]}}]}],
        }
    )
    summary = write_dataset(tasks, {0: "cat", 1: "dog"}, "classify", _load, tmp_path / "cls")
    assert summary.data == tmp_path / "cls"
    assert sum(summary.counts.values()) == 8 and 99 in summary.skipped
    assert len(list((tmp_path / "cls").rglob("*.jpg"))) == 8


@pytest.mark.parametrize(
    ("ids", "fraction", "n_val"),
    [
        ([], 0.2, 0),
        ([7], 0.0, 0),  # a single task is never held out: nothing would be left to train on
        ([7, 8], 0.0, 1),  # two or more tasks always hold one out
        (list(range(1, 6)), 0.0, 1),
        (list(range(1, 501)), 0.2, None),  # enough tasks: exactly the hash split
    ],
)
def test_assign_splits_always_holds_something_out(ids, fraction, n_val) -> None:
    splits = assign_splits(ids, fraction)
    assert set(splits) == set(ids)
    if n_val is None:
        assert splits == {t: split_of(t, fraction) for t in ids}
    else:
        assert list(splits.values()).count("val") == n_val
    if n_val == 1 and len(ids) > 1:
        assert splits[min(ids, key=split_score)] == "val"  # the same task every time
