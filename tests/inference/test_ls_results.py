import math

import numpy as np
import pytest

from ml_backend.inference.display import Display
from ml_backend.inference.label_config import Target
from ml_backend.inference.ls_results import obb_percent, polygon_percent, rect_percent, to_ls_results
from ml_backend.inference.model import ImagePrediction


def target(kind: str, labels=("a", "b")) -> Target:
    return Target("ctl", "image", "image", kind, tuple(labels), {})


@pytest.mark.parametrize(
    ("xyxy", "size", "expected"),
    [
        ((0, 0, 100, 50), (100, 50), {"x": 0.0, "y": 0.0, "width": 100.0, "height": 100.0}),
        ((25, 10, 75, 40), (100, 50), {"x": 25.0, "y": 20.0, "width": 50.0, "height": 60.0}),
        ((-10, -5, 50, 60), (100, 50), {"x": 0.0, "y": 0.0, "width": 50.0, "height": 100.0}),  # clipped
    ],
)
def test_rect_percent(xyxy, size, expected) -> None:
    got = rect_percent(np.array(xyxy, dtype=float), *size)
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    assert got["rotation"] == 0.0


def _ls_corners(v: dict, w: int, h: int) -> np.ndarray:
    """Corners of a Label Studio rotated rectangle, in pixels (rotation about the top-left corner)."""
    x, y = v["x"] / 100 * w, v["y"] / 100 * h
    bw, bh = v["width"] / 100 * w, v["height"] / 100 * h
    t = math.radians(v["rotation"])
    c, s = math.cos(t), math.sin(t)
    local = np.array([[0, 0], [bw, 0], [bw, bh], [0, bh]], dtype=float)
    return np.stack([x + local[:, 0] * c - local[:, 1] * s, y + local[:, 0] * s + local[:, 1] * c], axis=1)


def _obb_corners(cx, cy, w, h, t) -> np.ndarray:
    c, s = math.cos(t), math.sin(t)
    local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return np.stack([cx + local[:, 0] * c - local[:, 1] * s, cy + local[:, 0] * s + local[:, 1] * c], axis=1)


@pytest.mark.parametrize("theta", [0.0, 0.3, math.pi / 4, 1.2, math.pi / 2 - 0.01])
@pytest.mark.parametrize("size", [(640, 480), (300, 900)])
def test_obb_round_trips_through_label_studio_geometry(theta: float, size: tuple[int, int]) -> None:
    w, h = size
    box = (w * 0.5, h * 0.45, w * 0.3, h * 0.1, theta)
    v = obb_percent(np.array(box), w, h)
    np.testing.assert_allclose(_ls_corners(v, w, h), _obb_corners(*box), atol=1e-6)


def test_unrotated_obb_equals_plain_rectangle() -> None:
    v = obb_percent(np.array([50.0, 25.0, 20.0, 10.0, 0.0]), 100, 50)
    assert v == pytest.approx({"x": 40.0, "y": 40.0, "width": 20.0, "height": 20.0, "rotation": 0.0})


def test_polygon_percent() -> None:
    pts = polygon_percent(np.array([[0, 0], [50, 25], [100, 60]], dtype=float), 100, 50)
    assert pts == [[0.0, 0.0], [50.0, 50.0], [100.0, 100.0]]


def _det(**kw) -> ImagePrediction:
    base = dict(
        width=200,
        height=100,
        class_ids=np.array([0, 1, 2]),
        scores=np.array([0.9, 0.5, 0.8]),
        boxes_xyxy=np.array([[0, 0, 20, 10], [10, 10, 30, 30], [50, 50, 60, 60]], dtype=float),
    )
    base.update(kw)
    return ImagePrediction(**base)


def test_detections_become_rectanglelabels_with_mapped_labels_only() -> None:
    regions, score = to_ls_results(_det(), target("rectangle"), {0: "a", 1: "b"}, region_ids=iter("xyz"))
    assert [r["value"]["rectanglelabels"] for r in regions] == [["a"], ["b"]]  # class 2 unmapped: dropped
    assert [r["id"] for r in regions] == ["x", "y"]
    assert all(r["type"] == "rectanglelabels" and r["from_name"] == "ctl" and r["to_name"] == "image" for r in regions)
    assert (regions[0]["original_width"], regions[0]["original_height"]) == (200, 100)
    assert score == pytest.approx((0.9 + 0.5) / 2)


def test_threshold_drops_low_confidence_objects() -> None:
    regions, score = to_ls_results(_det(), target("rectangle"), {0: "a", 1: "b", 2: "a"}, Display(0.6))
    assert [r["score"] for r in regions] == [0.9, 0.8]
    assert score == pytest.approx(0.85)


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        (Display(0.6, {1: 0.4}), [0.9, 0.5, 0.8]),  # class 1 shown from 0.4
        (Display(0.1, {0: 0.95}), [0.5, 0.8]),  # class 0 only above 0.95
        (Display(0.1, {}, merge_classes=True), [0.9, 0.8]),  # class 1's box lies on class 0's: one object
    ],
)
def test_each_class_is_shown_by_its_own_threshold_and_labels_on_one_object_merge(display: Display, expected: list[float]) -> None:
    pred = _det(boxes_xyxy=np.array([[0, 0, 100, 50], [0, 0, 100, 50], [150, 50, 200, 100]], dtype=float))
    regions, _ = to_ls_results(pred, target("rectangle"), {0: "a", 1: "b", 2: "a"}, display)
    assert [r["score"] for r in regions] == expected


def test_no_objects_gives_empty_result_and_zero_score() -> None:
    regions, score = to_ls_results(ImagePrediction(width=10, height=10), target("rectangle"), {0: "a"})
    assert (regions, score) == ([], 0.0)


def test_polygons() -> None:
    poly = [np.array([[0, 0], [100, 0], [100, 50]], dtype=float), np.array([[0, 0], [1, 1]], dtype=float)]
    pred = _det(class_ids=np.array([0, 1]), scores=np.array([0.7, 0.6]), boxes_xyxy=np.zeros((2, 4)), polygons=poly)
    regions, _ = to_ls_results(pred, target("polygon"), {0: "a", 1: "b"})
    assert len(regions) == 1  # the 2-point outline is not a polygon
    assert regions[0]["value"] == {"points": [[0.0, 0.0], [50.0, 0.0], [50.0, 50.0]], "closed": True, "polygonlabels": ["a"]}


def test_obb_results_carry_rotation() -> None:
    pred = ImagePrediction(
        width=100, height=100, class_ids=np.array([1]), scores=np.array([0.6]), obb_xywhr=np.array([[50, 50, 20, 10, math.pi / 6]])
    )
    regions, _ = to_ls_results(pred, target("obb"), {1: "b"})
    assert regions[0]["type"] == "rectanglelabels"
    assert regions[0]["value"]["rotation"] == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("probs", "label_map", "threshold", "expected"),
    [
        ([0.1, 0.7, 0.2], {0: "a", 1: "b", 2: "c"}, 0.0, (["b"], 0.7)),
        ([0.1, 0.7, 0.2], {0: "a", 2: "c"}, 0.0, (["c"], 0.2)),  # top class unmapped: best mapped one
        ([0.1, 0.7, 0.2], {0: "a", 1: "b"}, 0.8, (None, 0.0)),  # under threshold: nothing
    ],
)
def test_classification_top_choice(probs, label_map, threshold, expected) -> None:
    pred = ImagePrediction(width=10, height=10, probs=np.array(probs))
    regions, score = to_ls_results(pred, target("choices", ("a", "b", "c")), label_map, Display(threshold))
    assert (regions[0]["value"]["choices"] if regions else None, score) == (expected[0], pytest.approx(expected[1]))
