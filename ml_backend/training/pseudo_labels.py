"""Pseudo-labels: retraining also learns from the model's own confident boxes on unlabeled images.

They are training data only: never written to Label Studio, never shown as annotations.

1. **Calibration.** Per class, the lowest confidence at which the current model's boxes are right
   at least ``PSEUDO_PRECISION`` of the time, measured on labeled images it was not trained on
   (the held-out split in the server; in the study, the images labeled since its last training).
   A class with fewer than ``PSEUDO_MIN_SUPPORT`` held-out boxes, or that never reaches the
   precision, gets no pseudo-labels at all (:func:`calibrate_thresholds`).
2. **Labeling.** On unlabeled images, a box at or above its class's threshold becomes a label; a
   box between ``CANDIDATE_THRESHOLD`` and its threshold is *unsure*: its region is painted grey in
   the training copy of the image, so the model is taught neither that it is an object nor that it
   is background (:func:`pseudo_boxes`).
3. **Share.** At most ``PSEUDO_MAX_SHARE`` pseudo-labeled images per human-labeled training image,
   the purest first (most confident boxes, fewest unsure ones).

Example:
    >>> rec = lambda s, tp: ImageRecord(np.zeros(len(s), int), np.array(s), np.array(tp), np.array([sum(tp)]))
    >>> calibrate_thresholds([rec([0.9, 0.8, 0.7, 0.4], [True, True, True, False])], 1, 0.9, min_support=3).tolist()
    [0.7]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from ml_backend.settings import Settings
from ml_backend.training.dataset import write_detect_image
from ml_backend.training.metrics import ImageRecord, image_record

K = TypeVar("K")


def calibrate_thresholds(records: Sequence[ImageRecord], n_classes: int, target_precision: float, min_support: int = 5) -> np.ndarray:
    """Per class, the lowest confidence whose boxes at or above it have precision >= ``target_precision``
    on ``records`` (held-out images); ``inf`` for a class with too few held-out boxes or none that precise."""
    out = np.full(n_classes, np.inf)
    if not records:
        return out
    classes = np.concatenate([r.classes for r in records])
    scores = np.concatenate([r.scores for r in records])
    tp = np.concatenate([r.tp for r in records])
    true = sum((r.gt_per_class for r in records), np.zeros(n_classes, dtype=int))
    for c in range(n_classes):
        if true[c] < min_support:
            continue
        mine = classes == c
        order = np.argsort(-scores[mine], kind="stable")
        s, hit = scores[mine][order], tp[mine][order]
        if not len(s):
            continue
        precision = np.cumsum(hit) / np.arange(1, len(s) + 1)
        ok = np.flatnonzero(precision >= target_precision)
        if len(ok):
            out[c] = float(s[ok[-1]])
    return out


@dataclass(frozen=True)
class PseudoImage:
    """One unlabeled image's pseudo-labels: the confident boxes (pixels, xyxy), their classes, and
    the unsure boxes to paint out."""

    key: object
    boxes: np.ndarray
    classes: np.ndarray
    unsure: np.ndarray

    @property
    def purity(self) -> float:
        return len(self.boxes) / max(1, len(self.boxes) + len(self.unsure))


def pseudo_boxes(
    key: object, boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, floor: float
) -> PseudoImage:
    """Split one image's detections into labels (score >= its class's threshold), unsure regions
    (``floor`` <= score < threshold) and background (below ``floor``).

    Example:
        >>> p = pseudo_boxes(1, np.array([[0, 0, 5, 5], [9, 9, 12, 12], [20, 20, 30, 30]]), np.array([0, 0, 1]),
        ...                  np.array([0.95, 0.5, 0.99]), np.array([0.9, np.inf]), 0.1)
        >>> p.classes.tolist(), len(p.unsure)
        ([0], 2)
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    c = np.asarray(classes, dtype=int).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(thresholds, dtype=np.float64)[np.clip(c, 0, len(thresholds) - 1)]
    sure = s >= t
    unsure = ~sure & (s >= floor)
    return PseudoImage(key, b[sure], c[sure], b[unsure])


def choose(candidates: Sequence[PseudoImage], cap: int) -> list[PseudoImage]:
    """At most ``cap`` images that have a pseudo-label, the purest first (then the most labels)."""
    usable = [p for p in candidates if len(p.boxes)]
    return sorted(usable, key=lambda p: (-p.purity, -len(p.boxes)))[: max(0, cap)]


def paint_out(image: np.ndarray, boxes: np.ndarray, value: int = 114) -> np.ndarray:
    """A copy of ``image`` with ``boxes`` (pixels, xyxy) filled with grey (Ultralytics' padding colour).

    Example:
        >>> paint_out(np.zeros((4, 4, 3), np.uint8), np.array([[1, 1, 3, 3]]))[1:3, 1:3, 0].tolist()
        [[114, 114], [114, 114]]
    """
    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        xa, ya = int(np.clip(np.floor(x1), 0, w)), int(np.clip(np.floor(y1), 0, h))
        xb, yb = int(np.clip(np.ceil(x2), 0, w)), int(np.clip(np.ceil(y2), 0, h))
        out[ya:yb, xa:xb] = value
    return out


@dataclass(frozen=True)
class PseudoSummary:
    """What a run added: pseudo-labeled images and boxes, and the thresholds per class (None: none)."""

    images: int
    boxes: int
    thresholds: dict[str, float | None]
    examined: int

    def to_json(self) -> dict[str, object]:
        return {"images": self.images, "boxes": self.boxes, "thresholds": self.thresholds, "examined": self.examined}


def add_pseudo_labels(
    dataset_root: Path,
    base_weights: str | Path,
    names: Mapping[int, str],
    heldout: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    unlabeled: Sequence[K],
    load: Callable[[K], np.ndarray],
    n_train: int,
    settings: Settings,
) -> PseudoSummary:
    """Calibrate on ``heldout`` (RGB image, true boxes in pixels, classes) with ``base_weights``, label
    some of ``unlabeled`` (keys ``load`` turns into RGB images), and add them to the dataset's
    training split (``images/train/pseudo_*.jpg``, unsure regions painted out).

    Looks at no more than ``PSEUDO_CANDIDATES x`` the cap of unlabeled images, in the order given.
    """
    from ml_backend.inference.model import load_weights

    n_classes = len(names)
    model = load_weights(str(base_weights))
    floor = settings.candidate_threshold

    def predict(images: Sequence[np.ndarray]) -> list:  # noqa: ANN202 - ImagePredictions
        return model.predict(list(images), conf=floor, imgsz=settings.train_imgsz, device=settings.ultralytics_device, batch=8)

    records = []
    for start in range(0, len(heldout), 8):
        chunk = heldout[start : start + 8]
        for (_, gt, gc), p in zip(chunk, predict([im for im, _, _ in chunk]), strict=True):
            records.append(image_record(gt, gc, p.boxes_xyxy, p.class_ids, p.scores, n_classes))
    thresholds = calibrate_thresholds(records, n_classes, settings.pseudo_precision, settings.pseudo_min_support)
    named = {str(names[c]): (None if np.isinf(t) else float(t)) for c, t in enumerate(thresholds)}
    cap = int(np.floor(settings.pseudo_max_share * n_train))
    if not np.isfinite(thresholds).any() or cap == 0:
        return PseudoSummary(0, 0, named, 0)
    examine = list(unlabeled)[: int(cap * settings.pseudo_candidates)]
    candidates: list[tuple[K, PseudoImage]] = []
    for start in range(0, len(examine), 8):
        keys = examine[start : start + 8]
        images = []
        ok = []
        for key in keys:
            try:
                images.append(load(key))
                ok.append(key)
            except Exception:  # a broken image is not pseudo-labeled; the run goes on
                continue
        if images:
            for key, p in zip(ok, predict(images), strict=True):
                candidates.append((key, pseudo_boxes(len(candidates), p.boxes_xyxy, p.class_ids, p.scores, thresholds, floor)))
    chosen = choose([c for _, c in candidates], cap)
    written: list[PseudoImage] = []
    for pick in chosen:
        key = candidates[int(pick.key)][0]  # type: ignore[call-overload]
        try:
            image = paint_out(load(key), pick.unsure)
        except Exception:  # read fine a moment ago, not now (the cache was cleared): left out, the run goes on
            continue
        write_detect_image(dataset_root, "train", f"pseudo_{len(written):05d}", image, pick.boxes, pick.classes)
        written.append(pick)
    return PseudoSummary(len(written), int(sum(len(p.boxes) for p in written)), named, len(candidates))
