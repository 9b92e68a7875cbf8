"""Whether a retrained model should be served instead of the current one.

``PROMOTION=if_better`` (the default) judges on the evidence there is:

* **Enough held-out labels** (at least ``PROMOTION_MIN_HELDOUT`` images held out of training):
  a paired bootstrap over those images. Each resample draws held-out images with replacement and
  computes the mAP50 of both models on the same draw; the new model is served when, with
  ``PROMOTION_CONFIDENCE`` (one-sided), it is not worse than the current one by more than
  ``PROMOTION_MARGIN``: the lower end of the interval of ``new - old`` is at or above
  ``-PROMOTION_MARGIN``. A held-out set of a few images cannot tell two models apart; the
  interval says so instead of a coin flip deciding.
* **Too few held-out labels to judge**: the new model is served unless every labeled image
  (training and held-out) says it is worse (:func:`labeled_floor`). It is the served model
  fine-tuned on strictly more labels, and in the label-savings study such a model beat its parent
  on the test split in most rounds (docs/retraining.md gives the count); waiting for a judge that
  cannot judge would keep a small project on its first model, as users saw. But a fine-tune on a
  handful of labels can also wreck a model that was right: when its mAP50 on all the labeled
  images, even those it was trained on, is lower than the served model's by more than
  ``PROMOTION_MARGIN``, it is kept back (rule ``worse_on_labeled``); and when it is no better on
  the held-out images by mAP50 while correcting its pre-annotations there takes longer than the
  served model's, it is kept back too (rule ``costlier_on_heldout``, :func:`cost_floor`).
* Both models at mAP50 0 on the held-out labels: the held-out images show nothing, so every labeled
  image (training and held-out) is looked at as a floor (:func:`labeled_floor`): a new model that
  finds something right there where the served one finds nothing (a new project's first model,
  against COCO weights that know none of its classes) is served; otherwise kept.

``PROMOTION=always`` serves every run; non-detection models (classification, segmentation,
oriented boxes) are judged on their primary metric as before (:func:`decide`).

Example:
    >>> old = {"metric": "mAP50-95", "primary": 0.50}
    >>> decide(old, {"metric": "mAP50-95", "primary": 0.55}, "if_better")[0]
    True
    >>> decide(old, {"metric": "mAP50-95", "primary": 0.45}, "if_better")[0]
    False
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ml_backend.training.metrics import ImageRecord, map50


def decide(old: Mapping[str, Any], new: Mapping[str, Any], policy: str) -> tuple[bool, str]:
    """Whether the new model should be served, and why, on one primary metric (no interval).

    ``if_better`` serves it when it is not worse on the primary metric (ties go to the new
    model: it has seen more labels; but not a tie at zero, which is no evidence at all);
    ``always`` serves every run.
    """
    name = new.get("metric", "score")
    a, b = float(old.get("primary", 0.0)), float(new.get("primary", 0.0))
    if policy == "always":
        return True, f"PROMOTION=always: served ({name} {b:.4f}, the previous model had {a:.4f})"
    if a <= 0.0 and b <= 0.0:
        return False, f"kept the previous model: both score {name} 0 on the held-out labels, so nothing shows the new one is better"
    if b + 1e-9 >= a:
        return True, f"served: {name} {b:.4f} on the held-out labels, not worse than the previous model's {a:.4f}"
    return False, f"kept the previous model: the new one is worse on the held-out labels ({name} {b:.4f} < {a:.4f})"


@dataclass(frozen=True)
class Judgement:
    """A promotion decision and the evidence behind it (shown in ``/training``).

    Attributes:
        promote: serve the new model.
        reason: one sentence a newcomer understands.
        rule: ``bootstrap``, ``too_few_heldout``, ``always``, ``no_evidence``, ``labeled_floor``, ``worse_on_labeled``
            or ``costlier_on_heldout``.
        heldout: held-out images judged on.
        old, new: mAP50 of each model on them.
        low, high: the interval of ``new - old`` (None without a bootstrap).
        confidence: the interval's one-sided coverage.
        margin: how much worse the new model may be and still be served.
    """

    promote: bool
    reason: str
    rule: str
    heldout: int
    old: float
    new: float
    low: float | None = None
    high: float | None = None
    confidence: float = 0.9
    margin: float = 0.02

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    old: Sequence[ImageRecord],
    new: Sequence[ImageRecord],
    policy: str = "if_better",
    min_heldout: int = 30,
    margin: float = 0.02,
    confidence: float = 0.9,
    resamples: int = 2000,
    seed: int = 0,
) -> Judgement:
    """Decide on the held-out images' records of the old and the new model (the same images, in
    the same order). See the module docstring for the rules.

    Example:
        >>> from ml_backend.training.metrics import image_record
        >>> box = np.array([[0, 0, 10, 10]])
        >>> hit = image_record(box, [0], box, [0], [0.9], 1)
        >>> miss = image_record(box, [0], np.zeros((0, 4)), [], [], 1)
        >>> judge([miss] * 40, [hit] * 40).promote, judge([hit] * 40, [miss] * 40).promote
        (True, False)
    """
    if len(old) != len(new):
        raise ValueError("old and new must be judged on the same held-out images")
    n = len(old)
    a, b = map50(old), map50(new)
    if policy == "always":
        return Judgement(True, f"PROMOTION=always: served (held-out mAP50 {b:.3f}, the previous model had {a:.3f})", "always", n, a, b)
    if n and a <= 0.0 and b <= 0.0:
        return Judgement(
            False, "kept the previous model: both find nothing right on the held-out labels (mAP50 0), so nothing shows the new one is better",
            "no_evidence", n, a, b,
        )  # fmt: skip
    if n < min_heldout:
        return Judgement(
            True,
            f"served: only {n} held-out image{'s' if n != 1 else ''} (fewer than PROMOTION_MIN_HELDOUT={min_heldout}), too few to judge, "
            f"so the model trained on more labels is served (held-out mAP50 {b:.3f} against {a:.3f})",
            "too_few_heldout", n, a, b, margin=margin, confidence=confidence,
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    for k in range(resamples):
        counts = np.bincount(rng.integers(0, n, size=n), minlength=n)
        deltas[k] = map50(new, counts) - map50(old, counts)
    low = float(np.quantile(deltas, 1 - confidence))
    high = float(np.quantile(deltas, confidence))
    promote = low >= -margin
    if promote:
        reason = (
            f"served: on {n} held-out images the new model's mAP50 is {b:.3f} against {a:.3f}; with {confidence:.0%} confidence it is "
            f"at most {margin:.2f} worse (the difference is between {low:+.3f} and {high:+.3f})"
        )
    else:
        reason = (
            f"kept the previous model: on {n} held-out images the new model's mAP50 is {b:.3f} against {a:.3f}, and it may be worse "
            f"by more than {margin:.2f} (the difference is between {low:+.3f} and {high:+.3f} with {confidence:.0%} confidence)"
        )
    return Judgement(promote, reason, "bootstrap", n, a, b, low, high, confidence, margin)


def labeled_floor(verdict: Judgement, old: Sequence[ImageRecord], new: Sequence[ImageRecord]) -> Judgement:
    """Every labeled image (``old``, ``new``: both models' records of the training and held-out
    images) as a floor, where the held-out images cannot judge:

    * ``no_evidence`` (both models at mAP50 0 on the held-out images): a model that finds something
      right where the served one finds nothing at all has learned what the served one lacks, and
      is served (rule ``labeled_floor``);
    * ``too_few_heldout``: a model worse than the served one by more than the margin on every labeled
      image, even those it was trained on, is kept back (rule ``worse_on_labeled``): a fine-tune on
      a handful of labels that wrecked a model which was right.

    Any other verdict is returned as it is. A model is judged on images it was trained on here,
    which flatters it: the floor only catches a model that fails even so, never serves one over a
    served model that finds something.

    Example:
        >>> from ml_backend.training.metrics import image_record
        >>> box = np.array([[0, 0, 10, 10]])
        >>> hit = image_record(box, [0], box, [0], [0.9], 1)
        >>> miss = image_record(box, [0], np.zeros((0, 4)), [], [], 1)
        >>> labeled_floor(judge([miss], [miss]), [miss] * 8, [hit] * 8).rule
        'labeled_floor'
        >>> labeled_floor(judge([hit], [miss]), [hit] * 8, [hit] * 4 + [miss] * 4).rule
        'worse_on_labeled'
    """
    a, b = map50(old), map50(new)
    n = verdict.heldout
    images = f"{n} held-out image{'s' if n != 1 else ''}"
    if verdict.rule == "no_evidence" and a <= 0.0 < b:
        return Judgement(
            True,
            f"served: on the {images} neither model finds anything, but on all {len(new)} labeled images the new model's mAP50 "
            f"is {b:.3f} and the served one finds nothing: it has learned what the served model lacks",
            "labeled_floor", n, a, b, confidence=verdict.confidence, margin=verdict.margin,
        )  # fmt: skip
    if verdict.rule == "too_few_heldout" and verdict.promote:
        if b < a - verdict.margin:
            return Judgement(
                False,
                f"kept the previous model: only {images}, too few to judge, and on all {len(new)} labeled images, even those it was "
                f"trained on, the new model's mAP50 is {b:.3f} against the served one's {a:.3f}",
                "worse_on_labeled", n, verdict.old, verdict.new, confidence=verdict.confidence, margin=verdict.margin,
            )  # fmt: skip
        return dataclasses.replace(
            verdict, reason=f"{verdict.reason}; on all {len(new)} labeled images it is not worse ({b:.3f} against {a:.3f})"
        )
    return verdict


def cost_floor(verdict: Judgement, seconds_old: float, seconds_new: float) -> Judgement:
    """With too few held-out images to judge (``too_few_heldout``), a new model no better there by
    mAP50 whose pre-annotations take the annotator longer to correct there than the served one's
    (estimated seconds, :func:`ml_backend.training.evaluate.annotation_cost`) is kept back (rule
    ``costlier_on_heldout``): the evidence there is says it is worse. Any other verdict is returned
    as it is.

    Example:
        >>> from ml_backend.training.metrics import image_record
        >>> box = np.array([[0, 0, 10, 10]])
        >>> hit = image_record(box, [0], box, [0], [0.9], 1)
        >>> cost_floor(judge([hit], [hit]), seconds_old=3.6, seconds_new=5.6).rule
        'costlier_on_heldout'
        >>> cost_floor(judge([hit], [hit]), seconds_old=3.6, seconds_new=3.6).rule
        'too_few_heldout'
    """
    if verdict.rule != "too_few_heldout" or not verdict.promote or verdict.new > verdict.old or seconds_new <= seconds_old:
        return verdict
    n = verdict.heldout
    return Judgement(
        False,
        f"kept the previous model: only {n} held-out image{'s' if n != 1 else ''}, too few to judge; there its mAP50 is no better "
        f"({verdict.new:.3f} against {verdict.old:.3f}) and correcting its pre-annotations would take an annotator "
        f"{seconds_new:.0f} s against the served model's {seconds_old:.0f} s",
        "costlier_on_heldout", n, verdict.old, verdict.new, confidence=verdict.confidence, margin=verdict.margin,
    )  # fmt: skip
