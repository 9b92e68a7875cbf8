"""How unsure the model is: per-object measures, entropy-based NMS, per-image aggregation.

Pure numpy. An object is described by its class-score vector ``p`` (one score per class, as the
detection head gives them before NMS keeps only the top one). Scores are normalized to a
distribution ``q = p / sum(p)`` where a measure needs one. Every measure lies in ``[0, 1]``,
higher meaning more uncertain:

* least confidence: ``1 - max(p)``;
* margin: ``1 - (q1 - q2)``, with ``q1 >= q2`` the two largest of ``q``;
* entropy: ``-sum(q log q) / log(C)`` for ``C`` classes;
* existence: the binary entropy of ``max(p)``: how unsure the model is that the object is there
  at all (the other measures normalize the scores away and cannot see it).

Per image, :func:`image_uncertainty` aggregates its objects (``max``, ``mean``, ``sum``), and
:func:`calibrated_uncertainty` sums them weighted by each box's confidence and by how hard its
class is for the current model (class-calibrated, after PPAL's difficulty-calibrated
uncertainty), so one faint candidate cannot saturate an image and classes the model does badly on
count more. :func:`tta_disagreement` measures uncertainty another way: how much the model's boxes
on an image and on its mirror image disagree (a second pass).

Example:
    >>> import numpy as np
    >>> P = np.array([[0.9, 0.05, 0.05], [0.4, 0.4, 0.2]])
    >>> least_confidence(P).round(2).tolist(), margin(P).round(2).tolist()
    ([0.1, 0.6], [0.15, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EPS = 1e-12


def _as_2d(P: np.ndarray) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"class scores must be a 2-D array (objects x classes), got shape {P.shape}")
    return np.clip(P, 0.0, 1.0)


def _normalized(P: np.ndarray) -> np.ndarray:
    s = P.sum(axis=1, keepdims=True)
    n = P.shape[1]
    return np.where(s > EPS, P / np.maximum(s, EPS), 1.0 / max(n, 1))


def least_confidence(P: np.ndarray) -> np.ndarray:
    """``1 - max(p)`` per object (rows of ``P``)."""
    P = _as_2d(P)
    return 1.0 - P.max(axis=1) if P.shape[1] else np.ones(len(P))


def margin(P: np.ndarray) -> np.ndarray:
    """``1 - (q1 - q2)`` per object, on normalized scores (1 for a single class: no margin to read)."""
    P = _as_2d(P)
    if P.shape[1] < 2:
        return least_confidence(P)
    q = np.sort(_normalized(P), axis=1)
    return 1.0 - (q[:, -1] - q[:, -2])


def entropy(P: np.ndarray) -> np.ndarray:
    """Normalized Shannon entropy of normalized scores, per object (in ``[0, 1]``)."""
    P = _as_2d(P)
    if P.shape[1] < 2:
        # One class: the only uncertainty is whether the object is there (binary entropy of p).
        p = np.clip(P[:, 0] if P.shape[1] else np.zeros(len(P)), EPS, 1 - EPS)
        return -(p * np.log(p) + (1 - p) * np.log(1 - p)) / np.log(2)
    q = np.clip(_normalized(P), EPS, 1.0)
    return -(q * np.log(q)).sum(axis=1) / np.log(P.shape[1])


def existence(P: np.ndarray) -> np.ndarray:
    """Binary entropy of each object's top score: 1 at 0.5 (is it there?), 0 near 0 or 1.

    Example:
        >>> existence(np.array([[0.5, 0.1], [0.99, 0.0]])).round(2).tolist()
        [1.0, 0.08]
    """
    P = _as_2d(P)
    p = np.clip(P.max(axis=1) if P.shape[1] else np.zeros(len(P)), EPS, 1 - EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p)) / np.log(2)


MEASURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "existence": existence,
}

AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
    "max": lambda u: float(u.max()) if len(u) else 0.0,
    "mean": lambda u: float(u.mean()) if len(u) else 0.0,
    "sum": lambda u: float(u.sum()),
}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes ``a`` (n, 4) and ``b`` (m, 4), xyxy."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, EPS)


def entropy_nms(boxes: np.ndarray, uncertainty: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Indices of objects kept after entropy-based NMS.

    Objects are visited from the most to the least uncertain; an object overlapping an already
    kept one by more than ``iou_threshold`` (whatever its class) is the same thing seen twice and
    is dropped, so near-duplicate boxes do not count twice in the image's score.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    u = np.asarray(uncertainty, dtype=np.float64)
    if len(u) == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(-u, kind="stable")
    iou = box_iou(boxes, boxes)
    kept: list[int] = []
    suppressed = np.zeros(len(u), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(int(i))
        suppressed |= iou[i] > iou_threshold
    return np.array(kept, dtype=int)


def image_uncertainty(
    class_scores: np.ndarray,
    boxes: np.ndarray | None = None,
    measure: str = "entropy",
    aggregate: str = "max",
    nms_iou: float = 0.5,
) -> float:
    """One image's uncertainty from its objects' class scores (and boxes, for entropy-NMS).

    ``class_scores`` should include low-confidence candidates below the display threshold: an
    image where the model sees only faint candidates is uncertain, not certain. An image with no
    candidate at all scores 0.

    Example:
        >>> import numpy as np
        >>> P = np.array([[0.9, 0.1], [0.5, 0.5], [0.48, 0.52]])
        >>> B = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 31]])
        >>> round(image_uncertainty(P, B, "margin", "sum"), 3)  # the last two are one object
        1.2
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; choose from {sorted(MEASURES)}")
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregate!r}; choose from {sorted(AGGREGATIONS)}")
    P = _as_2d(np.asarray(class_scores).reshape(len(class_scores), -1) if len(class_scores) else np.zeros((0, 1)))
    u = MEASURES[measure](P)
    if boxes is not None and len(u) > 1:
        u = u[entropy_nms(boxes, u, nms_iou)]
    return AGGREGATIONS[aggregate](u)


def calibrated_uncertainty(
    class_scores: np.ndarray,
    boxes: np.ndarray | None,
    classes: np.ndarray,
    confidence: np.ndarray,
    class_weights: np.ndarray | None = None,
    measure: str = "entropy",
    nms_iou: float = 0.5,
) -> float:
    """One image's class-calibrated uncertainty: the sum over its objects (after entropy-NMS) of
    confidence x class weight x the object's uncertainty.

    Args:
        class_scores: (n, C) every candidate's score per class.
        boxes: (n, 4) for entropy-NMS, or None.
        classes: (n,) each candidate's predicted class.
        confidence: (n,) each candidate's top score: a faint candidate counts little.
        class_weights: (C,) how hard each class is for the model (default all 1).
        measure: one of :data:`MEASURES`.

    Example:
        >>> P = np.array([[0.5, 0.5], [0.06, 0.04]])  # a confident-but-confused box and a faint one
        >>> round(calibrated_uncertainty(P, None, np.array([0, 0]), np.array([0.5, 0.06]), measure="entropy"), 3)
        0.558
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; choose from {sorted(MEASURES)}")
    if not len(class_scores):
        return 0.0
    P = _as_2d(np.asarray(class_scores).reshape(len(class_scores), -1))
    u = MEASURES[measure](P)
    keep = entropy_nms(boxes, u, nms_iou) if boxes is not None and len(u) > 1 else np.arange(len(u))
    cls = np.asarray(classes, dtype=int)[keep]
    w = np.ones(P.shape[1]) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    weight = w[np.clip(cls, 0, len(w) - 1)]
    return float((np.clip(np.asarray(confidence, dtype=np.float64)[keep], 0, 1) * weight * u[keep]).sum())


def tta_disagreement(
    boxes: np.ndarray,
    classes: np.ndarray,
    confidence: np.ndarray,
    other_boxes: np.ndarray,
    other_classes: np.ndarray,
    other_confidence: np.ndarray,
) -> float:
    """How much two passes over one image disagree (the plain pass and one on its mirror image,
    boxes mapped back), in ``[0, 1]``: ``1 - 2 sum(IoU_ij sqrt(p_i p_j)) / (sum p_i + sum p_j)``
    over same-class pairs matched greedily by IoU. 0: the same boxes, classes and confidences;
    1: nothing in common. An image where neither pass sees anything scores 0.

    Example:
        >>> b = np.array([[0, 0, 10, 10]]); c = np.array([0]); p = np.array([0.8])
        >>> tta_disagreement(b, c, p, b, c, p), tta_disagreement(b, c, p, b, np.array([1]), p)
        (0.0, 1.0)
    """
    pa, pb = np.asarray(confidence, dtype=np.float64), np.asarray(other_confidence, dtype=np.float64)
    total = pa.sum() + pb.sum()
    if total <= 0:
        return 0.0
    if not len(pa) or not len(pb):
        return 1.0
    iou = box_iou(boxes, other_boxes) * (np.asarray(classes)[:, None] == np.asarray(other_classes)[None, :])
    agree = 0.0
    used_a: set[int] = set()
    used_b: set[int] = set()
    for i, j in sorted(np.argwhere(iou > 0).tolist(), key=lambda ij: -iou[ij[0], ij[1]]):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            agree += iou[i, j] * np.sqrt(pa[i] * pb[j])
    return float(np.clip(1.0 - 2.0 * agree / total, 0.0, 1.0))
