"""What a trained detector will show, and what that is worth, from its held-out detections."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.inference.display import Display
from ml_backend.settings import Settings
from ml_backend.training.evaluate import Detections, annotation_cost, chosen_display


def over_confident(n: int = 10) -> list[Detections]:
    """Each image: one true box found at 0.9, and a wrong box at 0.4 (the model is sure of too much)."""
    right, wrong = np.array([[0.0, 0, 10, 10]]), np.array([[50.0, 50, 60, 60]])
    return [Detections(right, np.array([0]), np.vstack([right, wrong]), np.array([0, 0]), np.array([0.9, 0.4])) for _ in range(n)]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, Display(0.25, {0: 0.45})),  # learned: the wrong boxes at 0.4 are hidden
        ({"SCORE_THRESHOLD": "0.3"}, Display(0.3)),  # set: that threshold for every class, as before
    ],
)
def test_the_display_is_learned_unless_score_threshold_is_set(env: dict[str, str], expected: Display) -> None:
    settings = Settings.from_env(env)
    images = over_confident()
    display, cost = chosen_display(images, settings)
    assert display == expected
    assert cost == annotation_cost(images, settings, display)  # every image alike: cross-fitted = in-sample
    assert display != Display(0.25) or env  # learned, and kept: it saves seconds on images it was not chosen on
    assert cost["counts"]["deleted"] == (0 if not env else 10)


def test_a_rule_that_does_not_hold_on_other_images_is_not_kept() -> None:
    """Two kinds of images: on one the 0.4 box is wrong, on the other right. No per-class rule saves
    seconds over 0.25 on images it was not chosen on, so every class is shown from 0.25."""
    box, far = np.array([[0.0, 0, 10, 10]]), np.array([[50.0, 50, 60, 60]])
    wrong = Detections(box, np.array([0]), np.vstack([box, far]), np.array([0, 0]), np.array([0.9, 0.4]))
    right = Detections(np.vstack([box, far]), np.array([0, 0]), np.vstack([box, far]), np.array([0, 0]), np.array([0.9, 0.4]))
    display, cost = chosen_display([wrong, right] * 3, Settings())
    assert display == Display(0.25) and cost == annotation_cost([wrong, right] * 3, Settings())
