"""Pseudo-labels: calibration on known score distributions, the split into labels and unsure
regions, the share, and a real run that adds them to a dataset."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.training.metrics import ImageRecord
from ml_backend.training.pseudo_labels import PseudoImage, calibrate_thresholds, choose, paint_out, pseudo_boxes


def records(cls: int, scores: list[float], tp: list[bool], n_classes: int = 2, extra_true: int = 0) -> ImageRecord:
    gt = np.zeros(n_classes, dtype=int)
    gt[cls] = sum(tp) + extra_true
    return ImageRecord(np.full(len(scores), cls), np.array(scores), np.array(tp), gt)


@pytest.mark.parametrize(
    ("scores", "tp", "target", "expected"),
    [
        # right above 0.6, wrong below: the threshold is the lowest score still 90% precise
        ([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [True, True, True, True, True, False, False], 0.9, 0.6),
        # one wrong box at the top: precision 1/2, 2/3, 3/4, 4/5 ... reaches 0.8 only at the fifth
        ([0.99, 0.9, 0.8, 0.7, 0.6], [False, True, True, True, True], 0.8, 0.6),
        ([0.99, 0.9, 0.8, 0.7, 0.6], [False, True, True, True, True], 0.9, float("inf")),  # never 90% precise
        # every box right: the lowest score
        ([0.9, 0.3, 0.2, 0.15, 0.11], [True] * 5, 0.9, 0.11),
    ],
)
def test_calibration_on_known_score_distributions(scores, tp, target: float, expected: float) -> None:
    got = calibrate_thresholds([records(0, scores, tp)], 2, target, min_support=3)
    assert got[0] == pytest.approx(expected) and np.isinf(got[1])  # class 1 has no held-out boxes


def test_a_class_with_too_few_held_out_boxes_gets_no_pseudo_labels() -> None:
    assert np.isinf(calibrate_thresholds([records(0, [0.9, 0.8], [True, True])], 2, 0.9, min_support=5)[0])
    # missed true boxes do not lower precision (they lower recall): the threshold stands
    assert calibrate_thresholds([records(0, [0.9, 0.8], [True, True], extra_true=10)], 2, 0.9, min_support=5)[0] == pytest.approx(0.8)


def test_labels_unsure_regions_and_background() -> None:
    p = pseudo_boxes(
        "k", np.array([[0, 0, 5, 5], [10, 10, 20, 20], [30, 30, 40, 40], [50, 50, 60, 60]]), np.array([0, 0, 1, 0]),
        np.array([0.95, 0.6, 0.99, 0.02]), np.array([0.9, np.inf]), floor=0.1,
    )  # fmt: skip
    assert p.classes.tolist() == [0] and p.boxes.tolist() == [[0, 0, 5, 5]]
    assert p.unsure.tolist() == [[10, 10, 20, 20], [30, 30, 40, 40]]  # class 1 has no threshold: unsure, whatever its score
    assert p.purity == pytest.approx(1 / 3)


def test_the_share_is_capped_and_the_purest_come_first() -> None:
    def img(k: int, sure: int, unsure: int) -> PseudoImage:
        return PseudoImage(k, np.zeros((sure, 4)), np.zeros(sure, dtype=int), np.zeros((unsure, 4)))

    picked = choose([img(1, 1, 3), img(2, 2, 0), img(3, 0, 0), img(4, 1, 0)], cap=2)
    assert [p.key for p in picked] == [2, 4]  # pure ones first, more labels first; an image without labels never
    assert choose([img(1, 1, 0)], cap=0) == []


def test_unsure_regions_are_painted_out() -> None:
    image = np.full((10, 10, 3), 7, np.uint8)
    out = paint_out(image, np.array([[2.5, 2.5, 4.2, 4.0]]))
    assert (out[2:4, 2:5] == 114).all() and out[5, 5, 0] == 7 and image[3, 3, 0] == 7  # a copy


def test_a_run_adds_pseudo_labeled_images_to_the_training_split(tmp_path, detect_weights) -> None:
    """The shapes detector, calibrated on held-out shapes, labels unlabeled shapes it is sure of."""
    from ml_backend.settings import Settings
    from ml_backend.tools.synthetic import CLASS_NAMES, make_image
    from ml_backend.training.pseudo_labels import add_pseudo_labels

    rng = np.random.default_rng(3)
    scenes = [make_image(rng, 96, 96) for _ in range(30)]
    heldout = [(np.asarray(s.image), np.array([sh.xyxy for sh in s.shapes]), np.array([sh.cls for sh in s.shapes])) for s in scenes[:20]]
    settings = Settings.from_env({"TRAIN_IMGSZ": "96", "DEVICE": "cpu", "PSEUDO_PRECISION": "0.8", "PSEUDO_MIN_SUPPORT": "3"})
    root = tmp_path / "dataset"
    summary = add_pseudo_labels(
        root, detect_weights, dict(enumerate(CLASS_NAMES)), heldout, list(range(20, 30)), lambda i: np.asarray(scenes[i].image), 4, settings
    )
    assert summary.examined == min(10, 4 * 3) and 0 < summary.images <= 4  # at most one pseudo image per labeled one
    assert any(t is not None for t in summary.thresholds.values())
    written = sorted((root / "images" / "train").glob("pseudo_*.jpg"))
    labels = sorted((root / "labels" / "train").glob("pseudo_*.txt"))
    assert len(written) == len(labels) == summary.images
    assert sum(len(p.read_text().splitlines()) for p in labels) == summary.boxes > 0
