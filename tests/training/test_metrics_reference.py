"""Our mAP50 (:mod:`ml_backend.training.metrics`) against Ultralytics' own, on the same detections.

Reference: Ultralytics' detection validation, without a model or a dataset: per image,
``DetectionValidator._process_batch`` (``ultralytics.utils.metrics.box_iou``, then
``match_predictions``: detections in descending confidence, as NMS hands them over, each takes the
unclaimed true box of its class it overlaps most at IoU >= 0.5), then ``DetMetrics.process``
(``ap_per_class`` over all images, per class) and ``DetMetrics.box.map50`` (the mean over the
classes with true boxes). pycocotools is not installed, so it is not the reference.

Both sides match boxes the same way (score-greedy, one to one, per class, as COCO) and build the
same precision envelope from the same recall and precision points; they integrate it
differently. Ours sums the all-point step function exactly; Ultralytics' ``compute_ap`` joins the
envelope's points with straight lines (``np.interp``) and integrates them by the trapezoidal
rule on 101 recall points (0, 0.01, ..., 1). Where recall rises from one detection to the next,
the envelope is flat (a true positive never has a lower precision than the detection before it),
so the joined points are our step function, and the two differ only by the quadrature: for a
non-increasing function the trapezoidal rule with step h errs by at most ``h / 2`` times the
function's total drop, here from 1 at recall 0 to 0 after the last recall, so at most 0.005 per
class and for their mean. Hence:

* ``exact``: ``ap_per_class`` with ``compute_ap``'s own envelope (``mrec``, ``mpre``) integrated
  as a step function instead of on 101 points (everything else Ultralytics') equals ours to 1e-9.
* ``101-point``: Ultralytics' mAP50 as it reports it is within 0.005 of ours (the bound above; it
  is reached: Ultralytics gives a perfect detector 0.995).

IoU: Ultralytics computes it in float32 with an epsilon in the denominator, ours in float64, so
detections whose IoU with a true box is within 1e-3 of 0.5 are left out of the random cases (the
two could decide them differently); the fixed cases have none. Scores are distinct within a class
(``ap_per_class`` sorts them with an unstable sort).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from ml_backend.al.uncertainty import box_iou
from ml_backend.training.evaluate import Detections
from ml_backend.training.metrics import image_record, map50

# h / 2 with h = 0.01, times the envelope's total drop (at most 1), plus float rounding. The bound
# is reached when the drops fall on grid points: a perfect detector scores 0.995 there (at recall 1,
# np.interp takes the value after the drop to 0).
TOLERANCE_101_POINTS = 0.005 + 1e-9


def image(gt: list, gc: list, boxes: list, classes: list, scores: list) -> Detections:
    """A :class:`~ml_backend.training.evaluate.Detections` from plain lists (boxes xyxy)."""
    return Detections(
        np.array(gt, dtype=float).reshape(-1, 4),
        np.array(gc, dtype=int),
        np.array(boxes, dtype=float).reshape(-1, 4),
        np.array(classes, dtype=int),
        np.array(scores, dtype=float),
    )


def ours(images: list[Detections], n_classes: int, counts: np.ndarray | None = None) -> float:
    """Our mAP50 of ``images``: :func:`image_record` per image, then :func:`map50` (``counts``: draws per image)."""
    records = [image_record(im.gt_boxes, im.gt_classes, im.boxes, im.classes, im.scores, n_classes) for im in images]
    return map50(records, counts)


def ultralytics_map50(images: list[Detections], save_dir: Path, quadrature: str = "101-point") -> float:
    """Ultralytics' mAP50 of ``images`` through its detection validator's matching and metrics.

    Args:
        quadrature: ``101-point`` (as Ultralytics reports it) or ``exact`` (its own precision
            envelope integrated as a step function).
    """
    import torch
    import ultralytics.utils.metrics as um
    from ultralytics.models.yolo.detect.val import DetectionValidator

    def step_area(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        _, mpre, mrec = original(recall, precision)
        return float(np.sum(np.diff(mrec) * mpre[1:])), mpre, mrec

    original = um.compute_ap
    validator = DetectionValidator(save_dir=save_dir)
    patch = mock.patch.object(um, "compute_ap", step_area) if quadrature == "exact" else nullcontext()
    with patch:
        for i, im in enumerate(images):
            order = np.argsort(-im.scores, kind="stable")  # NMS output order: descending confidence
            preds = {
                "bboxes": torch.tensor(im.boxes[order], dtype=torch.float32),
                "cls": torch.tensor(im.classes[order], dtype=torch.float32),
            }
            batch = {"bboxes": torch.tensor(im.gt_boxes, dtype=torch.float32), "cls": torch.tensor(im.gt_classes, dtype=torch.float32)}
            validator.metrics.update_stats(
                {
                    **validator._process_batch(preds, batch),
                    "target_cls": im.gt_classes.astype(float),
                    "target_img": np.unique(im.gt_classes),
                    "conf": im.scores[order],
                    "pred_cls": im.classes[order].astype(float),
                    "im_name": f"{i}.jpg",
                }
            )
        validator.metrics.process()
    return float(validator.metrics.box.map50)


A, B, C = [0, 0, 100, 100], [200, 0, 300, 100], [0, 200, 100, 300]
NEAR_A = [5, 5, 100, 100]  # IoU 0.9025 with A
ROUGH_A = [20, 20, 110, 110]  # IoU 0.547 with A: a hit, but a worse one than NEAR_A
FAR = [400, 400, 450, 450]

FIXED = {
    "perfect": ([image([A, B], [0, 1], [A, B], [0, 1], [0.9, 0.8]), image([C], [0], [C], [0], [0.7])], 2, 1.0),
    # the highest score is wrong: precision 1/2 at full recall
    "false positive first": ([image([A], [0], [FAR, A], [0, 0], [0.95, 0.6])], 1, 0.5),
    # a true box never found: recall stops at 1/2
    "missed box": ([image([A, B], [0, 0], [A], [0], [0.9])], 1, 0.5),
    # class 0 found at once (AP 1), class 1 after a false positive of its own (AP 1/2); a wrong-class
    # box on class 0's place is class 1's false positive, not class 0's hit
    "two classes": ([image([A], [0], [A, A], [0, 1], [0.9, 0.8]), image([B], [1], [B], [1], [0.7])], 2, 0.75),
    # a second box on A is a false positive between the two hits: precision 1, then 2/3 at recall 1
    "duplicate": ([image([A, B], [0, 0], [A, NEAR_A, B], [0, 0, 0], [0.9, 0.8, 0.7])], 1, 0.5 + 0.5 * 2 / 3),
    # the higher score takes A although the lower one overlaps it more (score-greedy, as COCO and
    # Ultralytics match): the better-placed box is the duplicate. Matching by highest IoU first
    # would make the first detection a false positive, AP 1/2.
    "duplicate, the better box scored lower": ([image([A], [0], [ROUGH_A, NEAR_A], [0, 0], [0.9, 0.8])], 1, 1.0),
    # a class only predicted (no true box) does not count in the mean; an image with nothing found
    "class only predicted, image with no detection": (
        [image([A], [0], [A, FAR], [0, 2], [0.9, 0.8]), image([B], [0], [], [], [])],
        3,
        0.5,
    ),
}


@pytest.mark.parametrize(("images", "n_classes", "expected"), list(FIXED.values()), ids=list(FIXED))
def test_fixed_cases_agree_with_ultralytics(images: list[Detections], n_classes: int, expected: float, tmp_path: Path) -> None:
    got = ours(images, n_classes)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(ultralytics_map50(images, tmp_path, "exact"), abs=1e-9)
    assert abs(got - ultralytics_map50(images, tmp_path)) <= TOLERANCE_101_POINTS


def random_images(seed: int, n_images: int = 30, n_classes: int = 3) -> list[Detections]:
    """Scenes of up to 5 true boxes; each box missed, found once or found twice (a duplicate), with
    jittered placement and sometimes the wrong class, plus background false positives; uniform scores.
    Detections within 1e-3 of IoU 0.5 with any true box are left out (module docstring)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        k = int(rng.integers(0, 6))
        xy, wh = rng.uniform(0, 500, (k, 2)), rng.uniform(20, 150, (k, 2))
        gt, gc = np.hstack([xy, xy + wh]), rng.integers(0, n_classes, k)
        boxes, classes = [], []
        for b, c in zip(gt, gc):
            size = b[2:] - b[:2]
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                centre = (b[:2] + b[2:]) / 2 + rng.normal(0, 0.15, 2) * size
                half = size * np.exp(rng.normal(0, 0.2, 2)) / 2
                boxes.append(np.r_[centre - half, centre + half])
                classes.append(int(c) if rng.random() > 0.1 else int(rng.integers(0, n_classes)))
        for _ in range(int(rng.integers(0, 3))):
            xy, wh = rng.uniform(0, 500, 2), rng.uniform(20, 150, 2)
            boxes.append(np.r_[xy, xy + wh])
            classes.append(int(rng.integers(0, n_classes)))
        boxes_a, classes_a = np.array(boxes, dtype=float).reshape(-1, 4), np.array(classes, dtype=int)
        clear = np.all(np.abs(box_iou(boxes_a, gt) - 0.5) > 1e-3, axis=1) if k else np.ones(len(boxes_a), dtype=bool)
        boxes_a, classes_a = boxes_a[clear], classes_a[clear]
        images.append(Detections(gt, gc, boxes_a, classes_a, rng.uniform(0.01, 1.0, len(boxes_a))))
    return images


@pytest.mark.parametrize("seed", range(5))
def test_random_detections_agree_with_ultralytics(seed: int, tmp_path: Path) -> None:
    images = random_images(seed)
    got = ours(images, 3)
    assert 0.2 < got < 0.95  # neither trivial nor perfect: hits, misses, duplicates and false positives
    assert got == pytest.approx(ultralytics_map50(images, tmp_path, "exact"), abs=1e-9)
    assert abs(got - ultralytics_map50(images, tmp_path)) <= TOLERANCE_101_POINTS


def test_a_bootstrap_resample_is_the_images_repeated(tmp_path: Path) -> None:
    """``counts`` (how often each image is drawn) gives the mAP50 of the images listed that often."""
    images = random_images(7, n_images=12)
    counts = np.random.default_rng(7).integers(0, 4, len(images))
    drawn = [im for im, k in zip(images, counts) for _ in range(k)]
    got = ours(images, 3, counts)
    assert got == pytest.approx(ultralytics_map50(drawn, tmp_path, "exact"), abs=1e-9)
    assert abs(got - ultralytics_map50(drawn, tmp_path)) <= TOLERANCE_101_POINTS
