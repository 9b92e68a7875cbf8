"""Turn model outputs (pixels) into Label Studio result regions (percent of the image).

Pure functions over :class:`~ml_backend.inference.model.ImagePrediction`; no HTTP, no model.

Label Studio stores a rectangle as its top-left corner ``x, y`` and ``width, height`` in percent
of the original image, with ``rotation`` in degrees (clockwise) about that corner. An oriented
box ``(cx, cy, w, h, theta)`` therefore becomes the corner reached from the centre by rotating
``(-w/2, -h/2)`` by ``theta``.

Example:
    >>> import numpy as np
    >>> from ml_backend.inference.model import ImagePrediction
    >>> from ml_backend.inference.label_config import Target
    >>> t = Target("label", "image", "image", "rectangle", ("cat",), {})
    >>> p = ImagePrediction(width=200, height=100, class_ids=np.array([0]),
    ...                     scores=np.array([0.9]), boxes_xyxy=np.array([[20., 10., 120., 60.]]))
    >>> regions, score = to_ls_results(p, t, {0: "cat"}, region_ids=iter(["r1"]))
    >>> regions[0]["value"]
    {'x': 10.0, 'y': 10.0, 'width': 50.0, 'height': 50.0, 'rotation': 0.0, 'rectanglelabels': ['cat']}
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ml_backend.inference.label_config import Target
from ml_backend.inference.model import ImagePrediction


def _ids() -> Iterator[str]:
    while True:
        yield secrets.token_hex(5)


def _clip(v: float) -> float:
    return float(min(100.0, max(0.0, v)))


def rect_percent(xyxy: np.ndarray, width: int, height: int) -> dict[str, float]:
    """Axis-aligned pixel box -> Label Studio percent rectangle, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    x1, x2 = _clip(x1 / width * 100), _clip(x2 / width * 100)
    y1, y2 = _clip(y1 / height * 100), _clip(y2 / height * 100)
    return {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1, "rotation": 0.0}


def obb_percent(xywhr: np.ndarray, width: int, height: int) -> dict[str, float]:
    """Oriented pixel box (centre, size, radians clockwise) -> rotated percent rectangle."""
    cx, cy, w, h, theta = (float(v) for v in xywhr)
    c, s = math.cos(theta), math.sin(theta)
    x = cx + (-w / 2) * c - (-h / 2) * s
    y = cy + (-w / 2) * s + (-h / 2) * c
    return {
        "x": x / width * 100,
        "y": y / height * 100,
        "width": w / width * 100,
        "height": h / height * 100,
        "rotation": math.degrees(theta) % 360.0,
    }


def polygon_percent(points: np.ndarray, width: int, height: int) -> list[list[float]]:
    """Pixel polygon (n, 2) -> list of ``[x%, y%]`` points, clipped to the image."""
    return [[_clip(float(x) / width * 100), _clip(float(y) / height * 100)] for x, y in points]


def to_ls_results(
    pred: ImagePrediction,
    target: Target,
    label_map: Mapping[int, str],
    score_threshold: float = 0.0,
    region_ids: Iterator[str] | None = None,
) -> tuple[list[dict], float]:
    """Label Studio ``result`` regions for one image, and the task-level score.

    Objects whose class maps to no label, or whose confidence is under ``score_threshold``,
    are dropped. The task score is the mean confidence of the regions kept (0 when none).
    """
    ids = region_ids or _ids()
    base = {
        "from_name": target.from_name,
        "to_name": target.to_name,
        "type": target.result_type,
        "original_width": pred.width,
        "original_height": pred.height,
        "image_rotation": 0,
    }
    regions: list[dict] = []
    if target.kind == "choices":
        if pred.probs is None:
            return [], 0.0
        order = np.argsort(-pred.probs, kind="stable")
        for cls in order:
            label = label_map.get(int(cls))
            if label is None:
                continue
            conf = float(pred.probs[cls])
            if conf < score_threshold:
                break
            regions.append({**base, "id": next(ids), "value": {"choices": [label]}, "score": conf})
            break
        return regions, (regions[0]["score"] if regions else 0.0)

    for i, cls in enumerate(pred.class_ids):
        label = label_map.get(int(cls))
        conf = float(pred.scores[i])
        if label is None or conf < score_threshold:
            continue
        value: dict[str, Any]
        if target.kind == "obb":
            if len(pred.obb_xywhr) > i:
                value = obb_percent(pred.obb_xywhr[i], pred.width, pred.height)
            else:
                value = rect_percent(pred.boxes_xyxy[i], pred.width, pred.height)
        elif target.kind == "polygon":
            if i >= len(pred.polygons) or len(pred.polygons[i]) < 3:
                continue  # a mask too small to outline
            value = {"points": polygon_percent(pred.polygons[i], pred.width, pred.height), "closed": True}
        else:
            if len(pred.boxes_xyxy) > i:
                xyxy = pred.boxes_xyxy[i]
            else:  # an OBB model served into an axis-aligned config: its bounding rectangle
                xyxy = _obb_bounds(pred.obb_xywhr[i])
            value = rect_percent(xyxy, pred.width, pred.height)
            if value["width"] <= 0 or value["height"] <= 0:
                continue
        regions.append({**base, "id": next(ids), "value": {**value, target.result_type: [label]}, "score": conf})
    score = float(np.mean([r["score"] for r in regions])) if regions else 0.0
    return regions, score


def _obb_bounds(xywhr: np.ndarray) -> np.ndarray:
    cx, cy, w, h, theta = (float(v) for v in xywhr)
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    half_w, half_h = (w * c + h * s) / 2, (w * s + h * c) / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])
