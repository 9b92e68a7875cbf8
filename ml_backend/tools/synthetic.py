"""Synthetic shape images with exact labels, for the offline demo and the tests.

Nothing here downloads anything. Images are plain backgrounds with filled circles, squares
and triangles; labels are written in the Ultralytics dataset layouts (detect, segment, obb,
classify) so a starter model can be trained from a model yaml without internet.

Example:
    >>> from ml_backend.tools.synthetic import make_shapes_dataset
    >>> info = make_shapes_dataset("/tmp/shapes", n_train=8, n_val=4, imgsz=96, seed=0)
    >>> sorted(info.names.values())
    ['circle', 'square', 'triangle']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ml_backend.training.dataset import write_data_yaml

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
KEYPOINT_NAMES: tuple[str, ...] = ("top", "left", "right")  # pose: each shape's top-most, left-most and right-most points
_COLORS = ((220, 60, 60), (60, 160, 220), (80, 200, 90), (230, 200, 40), (170, 90, 200))


@dataclass(frozen=True)
class Shape:
    """One drawn object: class index, polygon in pixels (n, 2), rotation-free bounding box."""

    cls: int
    polygon: np.ndarray
    angle: float = 0.0

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        xs, ys = self.polygon[:, 0], self.polygon[:, 1]
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())

    @property
    def keypoints(self) -> np.ndarray:
        """(3, 2) pixels: the top-most, left-most and right-most points of the outline (:data:`KEYPOINT_NAMES`)."""
        p = self.polygon
        return np.stack([p[np.argmin(p[:, 1])], p[np.argmin(p[:, 0])], p[np.argmax(p[:, 0])]])


@dataclass(frozen=True)
class SyntheticImage:
    image: Image.Image
    shapes: list[Shape] = field(default_factory=list)


def _polygon_for(cls: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if cls == 0:  # circle
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    elif cls == 1:  # square
        t = np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
    else:  # triangle
        t = np.array([-0.5, 1 / 6, 5 / 6]) * math.pi
    t = t + angle
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def make_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    max_objects: int = 3,
    rotate: bool = False,
) -> SyntheticImage:
    """Draw one image with 1..max_objects non-overlapping shapes."""
    bg = tuple(int(v) for v in rng.integers(0, 60, size=3))
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    shapes: list[Shape] = []
    n = int(rng.integers(1, max_objects + 1))
    lo = max(6.0, min(width, height) * 0.10)
    hi = max(lo + 1, min(width, height) * 0.22)
    for _ in range(n * 10):
        if len(shapes) == n:
            break
        r = float(rng.uniform(lo, hi))
        cx, cy = float(rng.uniform(r, width - r)), float(rng.uniform(r, height - r))
        if any(math.hypot(cx - s.polygon[:, 0].mean(), cy - s.polygon[:, 1].mean()) < 2.2 * r for s in shapes):
            continue
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        angle = float(rng.uniform(0, math.pi / 2)) if rotate and cls == 1 else 0.0
        poly = _polygon_for(cls, cx, cy, r, angle)
        color = _COLORS[int(rng.integers(0, len(_COLORS)))]
        draw.polygon([tuple(p) for p in poly], fill=color)
        shapes.append(Shape(cls=cls, polygon=poly, angle=angle))
    return SyntheticImage(img, shapes)


def ls_box_result(s: SyntheticImage, labels: dict[int, str] | None = None, from_name: str = "label", to_name: str = "image") -> list[dict]:
    """The image's true boxes as a Label Studio ``rectanglelabels`` annotation result (what a
    perfect annotator would save), for tests and simulations.

    Args:
        labels: class id -> Label Studio label (default: the shape names).
    """
    w, h = s.image.size
    labels = labels or dict(enumerate(CLASS_NAMES))
    out = []
    for i, sh in enumerate(s.shapes):
        x1, y1, x2, y2 = sh.xyxy
        out.append(
            {
                "id": f"gt{i}",
                "type": "rectanglelabels",
                "from_name": from_name,
                "to_name": to_name,
                "original_width": w,
                "original_height": h,
                "image_rotation": 0,
                "value": {
                    "x": 100 * x1 / w,
                    "y": 100 * y1 / h,
                    "width": 100 * (x2 - x1) / w,
                    "height": 100 * (y2 - y1) / h,
                    "rotation": 0,
                    "rectanglelabels": [labels[sh.cls]],
                },
            }
        )
    return out


@dataclass(frozen=True)
class DatasetInfo:
    """Where a generated dataset lives and what it holds."""

    root: Path
    yaml_path: Path
    names: dict[int, str]
    images: dict[str, list[Path]]


def _label_lines(s: SyntheticImage, kind: str) -> list[str]:
    w, h = s.image.size
    lines = []
    for sh in s.shapes:
        if kind == "detect":
            x1, y1, x2, y2 = sh.xyxy
            lines.append(f"{sh.cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
        elif kind == "segment":
            pts = " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in sh.polygon)
            lines.append(f"{sh.cls} {pts}")
        elif kind == "obb":
            if sh.cls == 1:
                corners = sh.polygon
            else:
                x1, y1, x2, y2 = sh.xyxy
                corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
            pts = " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in corners)
            lines.append(f"{sh.cls} {pts}")
        elif kind == "pose":
            x1, y1, x2, y2 = sh.xyxy
            pts = " ".join(f"{x / w:.6f} {y / h:.6f} 2" for x, y in sh.keypoints)
            lines.append(f"{sh.cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f} {pts}")
    return lines


def make_shapes_dataset(
    root: str | Path,
    n_train: int = 32,
    n_val: int = 8,
    imgsz: int = 128,
    seed: int = 0,
    kind: str = "detect",
) -> DatasetInfo:
    """Write an Ultralytics dataset of synthetic shapes.

    Args:
        root: folder to write into (created).
        n_train: training images.
        n_val: validation images.
        imgsz: longest image side in pixels; the other side varies so images are not square.
        seed: random seed; the same seed writes the same files.
        kind: ``detect``, ``segment``, ``obb``, ``classify`` or ``pose`` (three keypoints per shape, :data:`KEYPOINT_NAMES`).

    Returns:
        A DatasetInfo whose ``yaml_path`` is what ``YOLO.train(data=...)`` takes (for
        ``classify``, the dataset folder itself).
    """
    if kind not in {"detect", "segment", "obb", "classify", "pose"}:
        raise ValueError(f"kind must be detect, segment, obb, classify or pose, got {kind!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = dict(enumerate(CLASS_NAMES))
    images: dict[str, list[Path]] = {"train": [], "val": []}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            w = imgsz
            h = int(imgsz * rng.uniform(0.7, 1.0))
            if kind == "classify":
                s = make_image(rng, w, h, max_objects=1)
                cls_name = names[s.shapes[0].cls]
                path = root / split / cls_name / f"{split}_{i:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                s.image.save(path, quality=95)
            else:
                s = make_image(rng, w, h, rotate=(kind == "obb"))
                path = root / "images" / split / f"{split}_{i:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                s.image.save(path, quality=95)
                lbl = root / "labels" / split / f"{split}_{i:04d}.txt"
                lbl.parent.mkdir(parents=True, exist_ok=True)
                lbl.write_text("\n".join(_label_lines(s, kind)) + "\n")
            images[split].append(path)
    if kind == "classify":
        for split in ("train", "val"):
            for cls_name in CLASS_NAMES:
                (root / split / cls_name).mkdir(parents=True, exist_ok=True)
        yaml_path = root
    elif kind == "pose":
        yaml_path = write_data_yaml(root, names, keypoints={c: list(KEYPOINT_NAMES) for c in names})
    else:
        yaml_path = write_data_yaml(root, names)
    return DatasetInfo(root=root, yaml_path=yaml_path, names=names, images=images)
