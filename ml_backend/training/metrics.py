"""AP50 from per-image detections, fast enough to recompute on thousands of bootstrap resamples.

Each held-out image is reduced once to its detections' (class, score, true positive?) and its true
boxes per class (:func:`image_record`: same-class matching at IoU >= 0.5, highest score first, as
PASCAL VOC and COCO match); :func:`map50` then computes the mean over classes of the all-point
interpolated AP for any multiset of images, such as a bootstrap resample.

Example:
    >>> import numpy as np
    >>> rec = image_record(np.array([[0, 0, 10, 10]]), np.array([0]), np.array([[0, 0, 10, 10]]), np.array([0]), np.array([0.9]), 1)
    >>> map50([rec])
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml_backend.al.uncertainty import box_iou


@dataclass(frozen=True)
class ImageRecord:
    """One image, as AP needs it: its detections' classes, scores and whether each is a true
    positive, and its true boxes per class."""

    classes: np.ndarray
    scores: np.ndarray
    tp: np.ndarray
    gt_per_class: np.ndarray


def image_record(
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    n_classes: int,
    iou: float = 0.5,
) -> ImageRecord:
    """Match an image's detections to its true boxes: each detection, highest score first, takes
    the unmatched true box of its class it overlaps most (IoU >= ``iou``), else it is a false positive."""
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gc = np.asarray(gt_classes, dtype=int).reshape(-1)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    c = np.asarray(classes, dtype=int).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    tp = np.zeros(len(b), dtype=bool)
    if len(gt) and len(b):
        overlap = box_iou(b, gt) * (c[:, None] == gc[None, :])
        taken = np.zeros(len(gt), dtype=bool)
        for i in np.argsort(-s, kind="stable"):
            cand = np.where(taken, -1.0, overlap[i])
            j = int(np.argmax(cand))
            if cand[j] >= iou:
                tp[i] = True
                taken[j] = True
    valid = (gc >= 0) & (gc < n_classes)
    return ImageRecord(c, s, tp, np.bincount(gc[valid], minlength=n_classes))


def average_precision(tp: np.ndarray, n_true: int) -> float:
    """All-point interpolated AP of detections sorted by score (``tp`` in that order)."""
    if n_true == 0:
        return float("nan")
    if not len(tp):
        return 0.0
    hits = np.cumsum(tp)
    recall = hits / n_true
    precision = hits / np.arange(1, len(tp) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((steps * envelope).sum())


def map50(records: Sequence[ImageRecord], counts: np.ndarray | None = None) -> float:
    """Mean AP50 over the classes with true boxes in ``records`` (each image ``counts[i]`` times;
    default once); 0 when there are no true boxes at all."""
    weights = np.ones(len(records), dtype=int) if counts is None else np.asarray(counts, dtype=int)
    used = [(r, int(k)) for r, k in zip(records, weights, strict=True) if k > 0]
    if not used:
        return 0.0
    n_classes = len(used[0][0].gt_per_class)
    true = sum((r.gt_per_class * k for r, k in used), np.zeros(n_classes, dtype=int))
    classes = np.concatenate([np.repeat(r.classes, k) for r, k in used])
    scores = np.concatenate([np.repeat(r.scores, k) for r, k in used])
    tp = np.concatenate([np.repeat(r.tp, k) for r, k in used])
    aps = []
    for c in np.flatnonzero(true > 0):
        mine = classes == c
        order = np.argsort(-scores[mine], kind="stable")
        aps.append(average_precision(tp[mine][order], int(true[c])))
    return float(np.mean(aps)) if aps else 0.0
