"""What a pre-annotation shows: the boxes worth an annotator's time, chosen from held-out labels.

Every box we show costs the annotator something: a right one is verified (cheap), a wrong one is
deleted, and an object we leave out is drawn. One global confidence threshold treats every class
alike, although a rare class's boxes may be right at 0.15 and a frequent one's wrong at 0.5. A
:class:`Display` is the rule a served model shows its objects with: a threshold per class, and
whether boxes of different classes on one object are merged (class-agnostic NMS: the most
confident one is shown). :func:`choose_display` picks the rule that minimises the annotator's
seconds (:mod:`ml_backend.al.effort`'s matching and cost table) on held-out labeled images;
:func:`cross_fitted_corrections` prices a choice honestly, each image under a rule chosen on the
others. Uncertainty scoring is not affected: it sees every candidate down to ``CANDIDATE_THRESHOLD``.

Example:
    >>> import numpy as np
    >>> d = Display(default=0.25, thresholds={1: 0.6}, merge_classes=False)
    >>> d.shown(np.array([[0, 0, 9, 9], [20, 20, 29, 29]]), np.array([0, 1]), np.array([0.3, 0.5])).tolist()
    [True, False]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ml_backend.al.effort import Corrections, CostTable, corrections
from ml_backend.settings import Settings

DEFAULT_THRESHOLD = 0.25  # what is shown where nothing was measured (the base model, a class without evidence)
MERGE_IOU = 0.7  # Ultralytics' NMS IoU: boxes of two classes overlapping this much are one object
HIDDEN = 1.01  # a threshold no confidence reaches: the class is not shown
GRID = (*(round(0.05 * i, 2) for i in range(1, 20)), HIDDEN)  # candidate thresholds: 0.05 .. 0.95, and hidden
MIN_EVIDENCE = 5  # true boxes plus boxes shown at the default, below which a class keeps the default
FOLDS = 5  # cross-fitting folds (fewer when there are fewer images)


class LabeledDetections(Protocol):
    """One held-out image: its true boxes and a model's detections on it (pixels, xyxy)."""

    @property
    def gt_boxes(self) -> np.ndarray: ...
    @property
    def gt_classes(self) -> np.ndarray: ...
    @property
    def boxes(self) -> np.ndarray: ...
    @property
    def classes(self) -> np.ndarray: ...
    @property
    def scores(self) -> np.ndarray: ...


def merge_across_classes(boxes: np.ndarray, scores: np.ndarray, iou: float = MERGE_IOU) -> np.ndarray:
    """Which boxes survive class-agnostic NMS (torchvision's): of boxes overlapping at ``iou`` or
    more, whatever their class, only the most confident is kept.

    Example:
        >>> b = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
        >>> merge_across_classes(b, np.array([0.4, 0.9, 0.3])).tolist()
        [False, True, True]
    """
    keep = np.zeros(len(scores), dtype=bool)
    if len(scores) == 0:
        return keep
    import torch
    from torchvision.ops import nms

    kept = nms(torch.as_tensor(np.asarray(boxes, dtype=np.float32)), torch.as_tensor(np.asarray(scores, dtype=np.float32)), iou)
    keep[kept.numpy()] = True
    return keep


@dataclass(frozen=True)
class Display:
    """The rule a model's objects are shown with.

    Attributes:
        default: the threshold of every class without its own.
        thresholds: model class id -> its threshold.
        merge_classes: boxes of different classes on one object are merged (the most confident kept).
    """

    default: float = DEFAULT_THRESHOLD
    thresholds: Mapping[int, float] = field(default_factory=dict)
    merge_classes: bool = False

    def threshold(self, cls: int) -> float:
        """The lowest confidence of class ``cls`` shown."""
        return float(self.thresholds.get(int(cls), self.default))

    @property
    def lowest(self) -> float:
        """The lowest threshold of any class: the model must keep objects down to it.

        Example:
            >>> Display(0.25, {3: 0.1}).lowest
            0.1
        """
        return float(min([self.default, *self.thresholds.values()]))

    def shown(self, boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Which of these objects are shown (a boolean mask)."""
        classes = np.asarray(classes).reshape(-1).astype(int)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if not len(scores):
            return np.zeros(0, dtype=bool)
        bar = np.array([self.threshold(c) for c in classes]) if self.thresholds else np.full(len(scores), self.default)
        keep = scores >= bar
        if self.merge_classes and keep.sum() > 1:
            idx = np.flatnonzero(keep)
            keep[idx[~merge_across_classes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[idx], scores[idx])]] = False
        return keep

    def to_json(self, names: Mapping[int, str]) -> dict[str, Any]:
        """JSON-ready, classes by name (stored with a model version)."""
        return {
            "default": self.default,
            "thresholds": {str(names[c]): t for c, t in sorted(self.thresholds.items()) if c in names},
            "merge_classes": self.merge_classes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], names: Mapping[int, str]) -> Display:
        """The stored rule for a model whose classes are ``names`` (classes it does not know are dropped).

        Example:
            >>> Display.from_json({"default": 0.25, "thresholds": {"cat": 0.4, "gone": 0.1}, "merge_classes": True}, {0: "dog", 1: "cat"})
            Display(default=0.25, thresholds={1: 0.4}, merge_classes=True)
        """
        ids = {str(n): int(c) for c, n in names.items()}
        thresholds = {ids[n]: float(t) for n, t in (data.get("thresholds") or {}).items() if n in ids}
        return cls(float(data.get("default", DEFAULT_THRESHOLD)), thresholds, bool(data.get("merge_classes", False)))


def default_display(settings: Settings) -> Display:
    """What a model with no measured rule shows (the base model; any model with ``SCORE_THRESHOLD``
    set): every class from ``SCORE_THRESHOLD``, 0.25 when it is empty.

    Example:
        >>> default_display(Settings()), default_display(Settings(score_threshold=0.4))
        (Display(default=0.25, thresholds={}, merge_classes=False), Display(default=0.4, thresholds={}, merge_classes=False))
    """
    return Display(DEFAULT_THRESHOLD if settings.score_threshold is None else settings.score_threshold)


def corrections_under(images: Sequence[LabeledDetections], display: Display) -> Corrections:
    """The annotator's actions on ``images`` when their detections are shown by ``display``."""
    total = Corrections()
    for im in images:
        total = total + _image_corrections(im, display)
    return total


def _image_corrections(im: LabeledDetections, display: Display) -> Corrections:
    keep = display.shown(im.boxes, im.classes, im.scores)
    return corrections(im.gt_boxes, im.gt_classes, np.asarray(im.boxes).reshape(-1, 4)[keep], np.asarray(im.classes).reshape(-1)[keep])


def _evidence(images: Sequence[LabeledDetections], default: float) -> dict[int, int]:
    """Per class: its true boxes plus its boxes shown at ``default`` on these images."""
    out: dict[int, int] = {}
    for im in images:
        for c in np.asarray(im.gt_classes).reshape(-1).astype(int):
            out[int(c)] = out.get(int(c), 0) + 1
        scores = np.asarray(im.scores).reshape(-1)
        for c in np.asarray(im.classes).reshape(-1).astype(int)[scores >= default]:
            out[int(c)] = out.get(int(c), 0) + 1
    return out


def _fit(
    images: Sequence[LabeledDetections], table: CostTable, default: float, merge: bool, grid: Sequence[float], min_evidence: int
) -> tuple[Display, float]:
    """Coordinate descent over the classes with evidence (two sweeps): each class's threshold is set
    to the grid value that minimises the total seconds with the others held (ties: nearest the default)."""
    display = Display(default, {}, merge)
    per_image = [table.seconds(_image_corrections(im, display)) for im in images]
    classes = sorted(c for c, n in _evidence(images, default).items() if n >= min_evidence)
    # The images a class's threshold can change: those where the model finds that class at all.
    touches = {
        c: [
            i
            for i, im in enumerate(images)
            if np.any((np.asarray(im.classes).reshape(-1) == c) & (np.asarray(im.scores).reshape(-1) >= min(grid)))
        ]
        for c in classes
    }
    for _ in range(2):
        for c in classes:
            idx = touches[c]
            if not idx:
                continue
            base = sum(per_image[i] for i in idx)
            best = (base, abs(display.threshold(c) - default), display.threshold(c), [per_image[i] for i in idx])
            for t in grid:
                trial = Display(default, {**display.thresholds, c: t}, merge)
                costs = [table.seconds(_image_corrections(images[i], trial)) for i in idx]
                key = (sum(costs), abs(t - default), t, costs)
                if key[:3] < best[:3]:
                    best = key
            display = Display(default, {**display.thresholds, c: best[2]}, merge)
            for i, s in zip(idx, best[3]):
                per_image[i] = s
    return display, float(sum(per_image))


def choose_display(
    images: Sequence[LabeledDetections],
    table: CostTable,
    default: float = DEFAULT_THRESHOLD,
    grid: Sequence[float] = GRID,
    min_evidence: int = MIN_EVIDENCE,
) -> Display:
    """The display rule that costs an annotator the fewest seconds on these labeled images.

    Each class with at least ``min_evidence`` true or shown boxes gets the threshold from ``grid``
    that minimises the seconds to correct every image into its true boxes (verify, adjust, relabel,
    draw, delete: ``table``), :data:`HIDDEN` when its boxes cost more than they save at every
    confidence (ties go to the threshold nearest ``default``); the others keep ``default``. Merging boxes of different classes on one
    object is chosen only when it saves seconds. Nothing to learn from (no images): ``default``.

    Example:
        >>> import numpy as np
        >>> from ml_backend.al.effort import DEFAULT_COSTS
        >>> class Im:  # one true box; the model's right box at 0.2, a wrong one at 0.3
        ...     gt_boxes = np.array([[0.0, 0, 10, 10]]); gt_classes = np.array([0])
        ...     boxes = np.array([[0.0, 0, 10, 10], [50, 50, 60, 60]]); classes = np.array([0, 0]); scores = np.array([0.2, 0.3])
        >>> choose_display([Im()] * 5, DEFAULT_COSTS)  # at 0.2 both are shown: the right one is worth the wrong one's deletion
        Display(default=0.25, thresholds={0: 0.2}, merge_classes=False)
    """
    if not images:
        return Display(default)
    plain, plain_s = _fit(images, table, default, False, grid, min_evidence)
    merged, merged_s = _fit(images, table, default, True, grid, min_evidence)
    return merged if merged_s < plain_s else plain


def cross_fitted_corrections(
    images: Sequence[LabeledDetections], table: CostTable, default: float = DEFAULT_THRESHOLD, folds: int = FOLDS
) -> Corrections:
    """The annotator's actions on ``images`` under a rule chosen without them: the images in
    ``folds`` interleaved folds, each shown by :func:`choose_display` fitted on the other folds (one
    image alone: ``default``). An honest estimate of what the chosen rule saves on new images.
    """
    k = max(1, min(folds, len(images)))
    total = Corrections()
    for f in range(k):
        held = [im for i, im in enumerate(images) if i % k == f]
        rest = [im for i, im in enumerate(images) if i % k != f]
        total = total + corrections_under(held, choose_display(rest, table, default) if rest else Display(default))
    return total
