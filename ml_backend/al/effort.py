"""What a task costs an annotator who corrects our pre-annotation into the true labels.

An annotator in Label Studio does not draw every box: our pre-annotation is already on the
image, and the work is to accept what is right, fix what is nearly right, delete what is wrong
and draw what is missing. :func:`corrections` counts those actions for one image by matching the
true boxes to the shown ones, and :class:`CostTable` turns the counts into estimated seconds.

Matching (one-to-one, greedy by IoU, highest first, ties to the earlier box):

1. true and predicted boxes **of the same class** with IoU >= 0.5;
2. then, among the boxes left, pairs **of any class** with IoU >= 0.5: the box is there but
   labeled wrong.

Counts:

* ``accepted``: same class, IoU >= 0.85 (the box is kept as it is: verified);
* ``adjusted``: a matched box with IoU < 0.85 (its edges must be dragged);
* ``class_changed``: matched to a box of another class (its label must be changed; with
  IoU < 0.85 it is also ``adjusted``);
* ``drawn``: true boxes left unmatched (drawn from scratch);
* ``deleted``: predicted boxes left unmatched (deleted);
* ``images`` (1) and ``gt_boxes``: the task itself and the objects it holds.

The cost table's defaults are published measurements where there are any, and estimates,
marked as such, where there are none (see :data:`DEFAULT_COSTS`). A table tuned to your team
is a setting (``ANNOTATION_COSTS``), not code.

Example:
    >>> import numpy as np
    >>> gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]]); pred = np.array([[0, 0, 10, 10]])
    >>> c = corrections(gt, np.array([0, 1]), pred, np.array([0]))
    >>> (c.accepted, c.drawn, c.deleted)
    (1, 1, 0)
    >>> round(DEFAULT_COSTS.seconds(c), 1)
    10.6
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from ml_backend.al.uncertainty import box_iou

MATCH_IOU = 0.5
ACCEPT_IOU = 0.85
COUNTS = ("images", "gt_boxes", "accepted", "adjusted", "class_changed", "drawn", "deleted")


@dataclass(frozen=True)
class Corrections:
    """The annotator's actions on one task (or a sum over tasks)."""

    images: int = 0
    gt_boxes: int = 0
    accepted: int = 0
    adjusted: int = 0
    class_changed: int = 0
    drawn: int = 0
    deleted: int = 0

    def __add__(self, other: Corrections) -> Corrections:
        return Corrections(*(getattr(self, f) + getattr(other, f) for f in COUNTS))

    @property
    def edits(self) -> int:
        """Every change the annotator makes (what was not accepted as it was)."""
        return self.adjusted + self.class_changed + self.drawn + self.deleted

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, int]) -> Corrections:
        return cls(**{f: int(data.get(f, 0)) for f in COUNTS})


@dataclass(frozen=True)
class CostTable:
    """Seconds per annotator action.

    Attributes:
        image: opening a task, looking it over for anything missed, and submitting.
        verify: checking a correct box and keeping it.
        draw: drawing a missing box and choosing its label.
        delete: removing a wrong box.
        change_class: giving a box another label.
        adjust: dragging a box's edges to fit.
    """

    image: float
    verify: float
    draw: float
    delete: float
    change_class: float
    adjust: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0 <= value <= 3600:
                raise ValueError(f"annotation cost {f.name}={value} must be between 0 and 3600 seconds")

    def seconds(self, c: Corrections) -> float:
        """Estimated annotator seconds for the actions ``c``."""
        return (
            c.images * self.image
            + c.accepted * self.verify
            + c.adjusted * self.adjust
            + c.class_changed * self.change_class
            + c.drawn * self.draw
            + c.deleted * self.delete
        )

    def to_text(self) -> str:
        """The table as ``name=seconds`` pairs, as :meth:`with_overrides` reads them.

        Example:
            >>> CostTable(1, 2, 3, 4, 5, 6).to_text()
            'image=1,verify=2,draw=3,delete=4,change_class=5,adjust=6'
        """
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))

    def with_overrides(self, text: str) -> CostTable:
        """This table with ``name=seconds`` pairs from ``text`` (comma-separated) replaced.

        Raises:
            ValueError: an unknown name or a value that is not a number of seconds.

        Example:
            >>> DEFAULT_COSTS.with_overrides("draw=30, image=5").draw
            30.0
        """
        names = {f.name for f in fields(self)}
        values = asdict(self)
        for item in filter(None, (x.strip() for x in text.split(","))):
            name, sep, raw = item.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise ValueError(f"{item!r}: write name=seconds with name one of {', '.join(sorted(names))}")
            try:
                values[name] = float(raw)
            except ValueError:
                raise ValueError(f"{item!r}: {raw.strip()!r} is not a number of seconds") from None
        return CostTable(**values)


# Published figures where they exist; the rest are this project's estimates, to be replaced by a
# team's own timings (ANNOTATION_COSTS).
#   draw 7.0 s: drawing a box by extreme clicking, Papadopoulos et al., "Extreme clicking for
#       efficient object annotation", ICCV 2017 (the cheapest published way: the classic
#       two-corner drag of the ILSVRC protocol took about 35 s per box, Su et al., "Crowdsourcing
#       annotations for visual object detection", AAAI workshops 2012; see CLASSIC_COSTS). Taking the
#       cheapest drawing cost keeps the value of a correct pre-annotation from being overstated.
#   verify 1.6 s: verifying a box proposed by a detector, Papadopoulos et al., "We don't need no
#       bounding-boxes: training object class detectors using only human verification", CVPR 2016.
#   delete 2.0 s, change_class 3.0 s, adjust 4.0 s, image 2.0 s: estimates (a verification plus one
#       click, a label pick, dragging one or two edges, opening and submitting a task); no
#       published measurement for Label Studio's editor was found.
DEFAULT_COSTS = CostTable(image=2.0, verify=1.6, draw=7.0, delete=2.0, change_class=3.0, adjust=4.0)
CLASSIC_COSTS = CostTable(image=2.0, verify=1.6, draw=35.0, delete=2.0, change_class=3.0, adjust=6.0)


def _greedy(iou: np.ndarray, allowed: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one pairs (row, col) with ``iou >= threshold`` where ``allowed``, highest IoU first."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    candidates = np.argwhere(allowed & (iou >= threshold))
    order = sorted(candidates.tolist(), key=lambda rc: (-iou[rc[0], rc[1]], rc[0], rc[1]))
    used_r: set[int] = set()
    used_c: set[int] = set()
    for r, c in order:
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


def corrections(
    gt_boxes: np.ndarray, gt_classes: np.ndarray, pred_boxes: np.ndarray, pred_classes: np.ndarray, accept_iou: float = ACCEPT_IOU
) -> Corrections:
    """The actions that turn the shown boxes (``pred_*``) into the true ones (``gt_*``) on one image.

    Args:
        gt_boxes: (n, 4) true boxes, xyxy (any unit, the same as ``pred_boxes``).
        gt_classes: (n,) their class ids.
        pred_boxes: (m, 4) the pre-annotation shown to the annotator.
        pred_classes: (m,) their class ids (in the same id space as ``gt_classes``).
        accept_iou: a same-class match at or above this IoU is accepted as it is.
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pr = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    gc = np.asarray(gt_classes).reshape(-1)
    pc = np.asarray(pred_classes).reshape(-1)
    iou = box_iou(gt, pr) if len(gt) and len(pr) else np.zeros((len(gt), len(pr)))
    same = gc[:, None] == pc[None, :] if len(gt) and len(pr) else np.zeros((len(gt), len(pr)), dtype=bool)
    first = _greedy(iou, same, MATCH_IOU)
    taken_r = {r for r, _ in first}
    taken_c = {c for _, c in first}
    free = np.ones_like(same)
    if free.size:
        free[list(taken_r), :] = False
        free[:, list(taken_c)] = False
    second = _greedy(iou, free, MATCH_IOU)
    accepted = sum(1 for r, c in first if iou[r, c] >= accept_iou)
    adjusted = sum(1 for r, c in first + second if iou[r, c] < accept_iou)
    matched = len(first) + len(second)
    return Corrections(
        images=1,
        gt_boxes=len(gt),
        accepted=accepted,
        adjusted=adjusted,
        class_changed=len(second),
        drawn=len(gt) - matched,
        deleted=len(pr) - matched,
    )


def matched_pairs(
    gt_boxes: np.ndarray, gt_classes: np.ndarray, pred_boxes: np.ndarray, pred_classes: np.ndarray
) -> list[tuple[int, int, float]]:
    """The same-class matches :func:`corrections` makes first (IoU >= 0.5, greedy): ``(true, shown, IoU)``.

    How tight the matched boxes are (whether they are kept as they are or dragged) is the IoU of these.

    Example:
        >>> matched_pairs(np.array([[0, 0, 10, 10]]), np.array([0]), np.array([[0, 0, 10, 8], [0, 0, 10, 10]]), np.array([0, 1]))
        [(0, 0, 0.8)]
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pr = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    if not len(gt) or not len(pr):
        return []
    iou = box_iou(gt, pr)
    same = np.asarray(gt_classes).reshape(-1)[:, None] == np.asarray(pred_classes).reshape(-1)[None, :]
    return [(r, c, round(float(iou[r, c]), 6)) for r, c in _greedy(iou, same, MATCH_IOU)]


def class_recall(
    gt_boxes: np.ndarray, gt_classes: np.ndarray, pred_boxes: np.ndarray, pred_classes: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, (true boxes found by a same-class shown box at IoU >= 0.5, true boxes) on one image.

    Summed over the labeled images, ``found / true`` is the model's recall per class there; the
    class-calibrated uncertainty weighs classes by how much of it is missing.

    Example:
        >>> found, total = class_recall(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 1]),
        ...                             np.array([[0, 0, 10, 10]]), np.array([0]), 2)
        >>> found.tolist(), total.tolist()
        ([1, 0], [1, 1])
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pr = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    gc = np.asarray(gt_classes, dtype=int).reshape(-1)
    pc = np.asarray(pred_classes, dtype=int).reshape(-1)
    total = np.bincount(gc[(gc >= 0) & (gc < n_classes)], minlength=n_classes)
    found = np.zeros(n_classes, dtype=int)
    if len(gt) and len(pr):
        iou = box_iou(gt, pr)
        for r, _ in _greedy(iou, gc[:, None] == pc[None, :], MATCH_IOU):
            if 0 <= gc[r] < n_classes:
                found[gc[r]] += 1
    return found, total


def class_difficulty(found: np.ndarray, total: np.ndarray) -> np.ndarray:
    """How hard each class is for the model: the share of its labeled boxes it misses, with one
    found and one missed box of prior (a class with few labels counts as half missed: rare classes
    count more until the model shows it has them).

    Example:
        >>> class_difficulty(np.array([9, 0, 0]), np.array([10, 2, 0])).round(2).tolist()
        [0.17, 0.75, 0.5]
    """
    found = np.asarray(found, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    return (total - found + 1.0) / (total + 2.0)


def expected_seconds(shown: np.ndarray, hidden: np.ndarray, table: CostTable = DEFAULT_COSTS) -> float:
    """What a pre-annotated image is expected to cost an annotator, from the model's own confidences.

    Each shown box is right with its confidence ``p`` (verified) or wrong (deleted); each candidate
    below the display threshold is an object the annotator must draw with its confidence.

    Args:
        shown: confidences of the boxes shown (at or above ``SCORE_THRESHOLD``).
        hidden: confidences of the candidates below it (down to ``CANDIDATE_THRESHOLD``).
        table: the cost table.

    Example:
        >>> round(expected_seconds(np.array([1.0, 0.5]), np.array([0.2])), 2)  # 2 + 1.6 + (0.8 + 1.0) + 1.4
        6.8
    """
    p = np.clip(np.asarray(shown, dtype=np.float64), 0, 1)
    q = np.clip(np.asarray(hidden, dtype=np.float64), 0, 1)
    return float(table.image + (p * table.verify + (1 - p) * table.delete).sum() + (q * table.draw).sum())


def from_scratch(c: Corrections) -> Corrections:
    """The same images with nothing shown: every true box drawn (labeling without pre-annotations)."""
    return Corrections(images=c.images, gt_boxes=c.gt_boxes, drawn=c.gt_boxes)


def price(c: Corrections, table: CostTable = DEFAULT_COSTS) -> dict[str, object]:
    """Correcting pre-annotations (the actions ``c``) against drawing every box from scratch, in
    estimated annotator seconds: the counts, both sums and the speed-up (scratch / correcting; 1.0
    means the pre-annotations save nothing, below 1 they cost time). JSON-ready.

    Example:
        >>> p = price(Corrections(images=2, gt_boxes=4, accepted=3, drawn=1, deleted=1))
        >>> p["seconds"], p["scratch_seconds"], p["speedup"]
        (17.8, 32.0, 1.798)
    """
    seconds, scratch = table.seconds(c), table.seconds(from_scratch(c))
    return {
        "counts": c.to_json(),
        "seconds": round(seconds, 1),
        "scratch_seconds": round(scratch, 1),
        "speedup": round(scratch / seconds, 3) if seconds > 0 else None,
        "costs": table.to_text(),
    }
