"""The study's multi-class dataset: real digit scans in synthetic scenes, readable as COCO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml_backend.tools.datasets import load_dataset
from ml_backend.tools.digit_scenes import VARIANTS, make_digit_scenes


@pytest.mark.parametrize(
    ("variant", "names"),
    [("target", ["digit-0", "digit-1", "digit-4", "digit-7"]), ("source", ["digit-2", "digit-3", "digit-5", "digit-6", "digit-9"])],
)
def test_scenes_read_back_as_coco_with_the_variant_classes(tmp_path: Path, variant: str, names: list[str]) -> None:
    ds = load_dataset(make_digit_scenes(tmp_path / variant, n_images=30, variant=variant), "coco")
    assert list(ds.names.values()) == names
    assert len(ds.items) == 30 and all((it.width, it.height) == (320, 320) for it in ds.items)
    for it in ds.items:
        assert 1 <= len(it.boxes) <= 6
        w, h = it.boxes[:, 2] - it.boxes[:, 0], it.boxes[:, 3] - it.boxes[:, 1]
        assert (w > 2).all() and (h > 8).all() and (h <= 61).all()
    assert "CC BY 4.0" in (tmp_path / variant / "LICENSE.txt").read_text()


def test_target_has_a_rare_class(tmp_path: Path) -> None:
    counts = load_dataset(make_digit_scenes(tmp_path / "t", n_images=120, variant="target"), "coco").object_counts()
    share = {k: v / sum(counts.values()) for k, v in counts.items()}
    assert min(share, key=share.get) == "digit-0"
    assert share["digit-0"] == pytest.approx(VARIANTS["target"][0], abs=0.05)


def test_same_seed_same_images(tmp_path: Path) -> None:
    a = make_digit_scenes(tmp_path / "a", n_images=3)
    b = make_digit_scenes(tmp_path / "b", n_images=3)
    for name in ("target_00000.jpg", "target_00002.jpg"):
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes()
    assert np.array_equal(load_dataset(a, "coco").items[1].boxes, load_dataset(b, "coco").items[1].boxes)
