"""The promotion rule on pairs of held-out results with a known difference."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.training.metrics import image_record
from ml_backend.training.promotion import cost_floor, judge, labeled_floor

BOX = np.array([[0, 0, 10, 10]], dtype=float)


def _images(hits: int, total: int, rng: np.random.Generator | None = None) -> list:
    """``total`` one-object images, the model finding the object on ``hits`` of them."""
    out = []
    for i in range(total):
        found = i < hits
        out.append(
            image_record(
                BOX, [0], BOX if found else np.zeros((0, 4)), [0] if found else [], [0.5 + 0.4 * ((i * 7) % 10) / 10] if found else [], 1
            )
        )
    return out


@pytest.mark.parametrize(
    ("old_hits", "new_hits", "n", "promote", "rule"),
    [
        (20, 30, 40, True, "bootstrap"),  # clearly better
        (30, 30, 40, True, "bootstrap"),  # the same: not worse
        (30, 12, 40, False, "bootstrap"),  # clearly worse
        (3, 1, 4, True, "too_few_heldout"),  # 4 images cannot tell: the model trained on more labels is served
        (0, 0, 20, False, "no_evidence"),  # both find nothing: no evidence
    ],
)
def test_promotion_on_known_pairs(old_hits: int, new_hits: int, n: int, promote: bool, rule: str) -> None:
    verdict = judge(_images(old_hits, n), _images(new_hits, n), min_heldout=10, margin=0.02, confidence=0.9)
    assert (verdict.promote, verdict.rule, verdict.heldout) == (promote, rule, n)
    assert verdict.old == pytest.approx(old_hits / n) and verdict.new == pytest.approx(new_hits / n)
    if rule == "bootstrap":
        assert verdict.low <= verdict.new - verdict.old <= verdict.high
    assert ("served" in verdict.reason) is promote and ("kept" in verdict.reason) is (not promote)


def test_a_small_drop_inside_the_interval_on_a_small_set_is_not_proof_of_worse() -> None:
    """One image worse of 12: the interval spans well below the margin, so it is kept; the same drop
    of 1 in 200 is within the margin and served."""
    assert not judge(_images(8, 12), _images(7, 12), min_heldout=10).promote
    assert judge(_images(150, 200), _images(149, 200), min_heldout=10).promote


def test_always_serves_and_the_judgement_travels_as_json() -> None:
    v = judge(_images(30, 40), _images(0, 40), policy="always")
    assert v.promote and v.rule == "always"
    assert set(v.to_json()) >= {"promote", "reason", "rule", "heldout", "old", "new", "low", "high", "confidence", "margin"}


def test_the_same_images_are_required() -> None:
    with pytest.raises(ValueError, match="same held-out images"):
        judge(_images(1, 3), _images(1, 4))


@pytest.mark.parametrize(
    ("held_new", "labeled_old", "labeled_new", "promote", "rule"),
    [
        (0, 0, 6, True, "labeled_floor"),  # a first model: the served one finds nothing anywhere, the new one finds some
        (0, 0, 0, False, "no_evidence"),  # neither finds anything anywhere
        (0, 2, 6, False, "no_evidence"),  # the served model finds something: no floor to stand on
        (1, 0, 6, True, "too_few_heldout"),  # the held-out images judged: the floor is not looked at
    ],
)
def test_the_labeled_images_are_a_floor_when_the_held_out_ones_show_nothing(
    held_new: int, labeled_old: int, labeled_new: int, promote: bool, rule: str
) -> None:
    verdict = labeled_floor(judge(_images(0, 2), _images(held_new, 2), min_heldout=10), _images(labeled_old, 10), _images(labeled_new, 10))
    assert (verdict.promote, verdict.rule, verdict.heldout) == (promote, rule, 2)
    if rule == "labeled_floor":
        assert (verdict.old, verdict.new) == (0.0, pytest.approx(0.6)) and "on all 10 labeled images" in verdict.reason


@pytest.mark.parametrize(
    ("labeled_old", "labeled_new", "promote", "rule"),
    [
        (10, 5, False, "worse_on_labeled"),  # a fine-tune on a handful of labels wrecked a model that was right
        (10, 10, True, "too_few_heldout"),  # as good where it was trained: the newer model is served
        (5, 10, True, "too_few_heldout"),
        (10, 9, False, "worse_on_labeled"),  # 0.9 against 1.0: worse by more than PROMOTION_MARGIN (0.02)
    ],
)
def test_with_too_few_held_out_images_a_model_worse_on_every_labeled_image_is_kept_back(
    labeled_old: int, labeled_new: int, promote: bool, rule: str
) -> None:
    unjudged = judge(_images(2, 2), _images(1, 2), min_heldout=10)
    assert (unjudged.promote, unjudged.rule) == (True, "too_few_heldout")
    verdict = labeled_floor(
        unjudged,
        _images(labeled_old, 10),
        _images(labeled_new, 10),
    )
    assert (verdict.promote, verdict.rule, verdict.heldout) == (promote, rule, 2)
    assert "on all 10 labeled images" in verdict.reason


@pytest.mark.parametrize(
    ("held_old", "held_new", "seconds_old", "seconds_new", "promote", "rule"),
    [
        (2, 2, 10.0, 20.0, False, "costlier_on_heldout"),  # as good by mAP50, costlier to correct: kept back
        (2, 2, 10.0, 10.0, True, "too_few_heldout"),  # as good and as costly: the newer model
        (1, 2, 10.0, 20.0, True, "too_few_heldout"),  # better by mAP50: served whatever the seconds
        (2, 1, 20.0, 10.0, True, "too_few_heldout"),  # worse by mAP50 but cheaper to correct: served (too few to judge)
    ],
)
def test_with_too_few_held_out_images_a_model_no_better_and_costlier_to_correct_is_kept_back(
    held_old: int, held_new: int, seconds_old: float, seconds_new: float, promote: bool, rule: str
) -> None:
    verdict = cost_floor(judge(_images(held_old, 2), _images(held_new, 2), min_heldout=10), seconds_old, seconds_new)
    assert (verdict.promote, verdict.rule) == (promote, rule)
    if rule == "costlier_on_heldout":
        assert f"{seconds_new:.0f} s against the served model's {seconds_old:.0f} s" in verdict.reason
