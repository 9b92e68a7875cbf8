"""Turn model outputs (pixels) into Label Studio result regions (percent of the image).

Pure functions over :class:`~ml_backend.inference.model.ImagePrediction`; no HTTP, no model.
What is shown of a model's objects is a :class:`~ml_backend.inference.display.Display`.

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

from ml_backend.inference.display import Display
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


POINT_SIZE = 1.0  # a predicted keypoint's size, percent of the image width (Label Studio's value.width)


def brush_rle(points: np.ndarray, width: int, height: int) -> list[int]:
    """A pixel polygon (n, 2) filled as a mask of the image, in Label Studio's brush RLE.

    Example:
        >>> from label_studio_sdk.converter.brush import decode_rle
        >>> rle = brush_rle(np.array([[1., 1.], [6., 1.], [6., 4.], [1., 4.]]), 8, 6)
        >>> int((decode_rle(rle).reshape(6, 8, 4)[:, :, 3] > 0).sum())  # rows 1-4, columns 1-6
        24
    """
    from label_studio_sdk.converter.brush import mask2rle
    from PIL import Image, ImageDraw

    mask = Image.new("L", (int(width), int(height)), 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return [int(v) for v in mask2rle(np.asarray(mask, dtype=np.uint8))]


def _base(target: Target, pred: ImagePrediction) -> dict[str, Any]:
    return {
        "from_name": target.from_name,
        "to_name": target.to_name,
        "type": target.result_type,
        "original_width": pred.width,
        "original_height": pred.height,
        "image_rotation": 0,
    }


def to_ls_results(
    pred: ImagePrediction,
    target: Target,
    label_map: Mapping[int, str],
    display: Display | None = None,
    region_ids: Iterator[str] | None = None,
    keypoint_labels: Mapping[int, str] | None = None,
) -> tuple[list[dict], float]:
    """Label Studio ``result`` regions for one image, and the task-level score.

    Objects whose class maps to no label, or that ``display`` does not show (per-class thresholds,
    boxes of several classes on one object merged: :func:`shown_objects`), are dropped; no
    ``display``: every object of a mapped class. The task score is the mean confidence of the
    regions kept (0 when none).

    Keypoints (``target.kind == "keypoints"``): each shown object's keypoints that
    ``keypoint_labels`` (keypoint index -> label, :func:`~ml_backend.inference.label_config.keypoint_map`)
    names and whose confidence reaches ``target.point_threshold``; with a ``target.parent``, the
    object's box goes there too (labelled by ``label_map``) and its keypoints name it as ``parentID``.
    """
    ids = region_ids or _ids()
    base = _base(target, pred)
    regions: list[dict] = []
    if target.kind == "keypoints":
        return _keypoint_results(pred, target, label_map, keypoint_labels or {}, display, ids)
    if target.kind == "choices":
        if pred.probs is None:
            return [], 0.0
        order = np.argsort(-pred.probs, kind="stable")
        for cls in order:
            label = label_map.get(int(cls))
            if label is None:
                continue
            conf = float(pred.probs[cls])
            if display is not None and conf < display.threshold(int(cls)):
                break
            regions.append({**base, "id": next(ids), "value": {"choices": [label]}, "score": conf})
            break
        return regions, (regions[0]["score"] if regions else 0.0)

    keep = shown_objects(pred, label_map, display)
    for i, cls in enumerate(pred.class_ids):
        label = label_map.get(int(cls))
        conf = float(pred.scores[i])
        if not keep[i]:
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
        elif target.kind == "brush":
            if i >= len(pred.polygons) or len(pred.polygons[i]) < 3:
                continue
            value = {"format": "rle", "rle": brush_rle(pred.polygons[i], pred.width, pred.height)}
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


def _keypoint_results(
    pred: ImagePrediction,
    target: Target,
    label_map: Mapping[int, str],
    keypoint_labels: Mapping[int, str],
    display: Display | None,
    ids: Iterator[str],
) -> tuple[list[dict], float]:
    regions: list[dict] = []
    keep = shown_objects(pred, label_map, display)
    conf = pred.keypoint_conf if pred.keypoint_conf is not None else np.ones(pred.keypoints.shape[:2])
    for i in np.flatnonzero(keep):
        parent_id = None
        if target.parent is not None and i < len(pred.boxes_xyxy):
            box = rect_percent(pred.boxes_xyxy[i], pred.width, pred.height)
            if box["width"] > 0 and box["height"] > 0:
                parent_id = next(ids)
                value = {**box, "rectanglelabels": [label_map[int(pred.class_ids[i])]]}
                regions.append({**_base(target.parent, pred), "id": parent_id, "value": value, "score": float(pred.scores[i])})
        if i >= len(pred.keypoints):
            continue
        for k, label in sorted(keypoint_labels.items()):
            if k >= pred.keypoints.shape[1] or float(conf[i, k]) < target.point_threshold:
                continue
            x, y = (float(v) for v in pred.keypoints[i, k])
            if not (0 <= x <= pred.width and 0 <= y <= pred.height):
                continue
            value = {"x": _clip(x / pred.width * 100), "y": _clip(y / pred.height * 100), "width": POINT_SIZE, "keypointlabels": [label]}
            region = {**_base(target, pred), "id": next(ids), "value": value, "score": float(conf[i, k])}
            if parent_id is not None:
                region["parentID"] = parent_id
            regions.append(region)
    score = float(np.mean([r["score"] for r in regions])) if regions else 0.0
    return regions, score


def object_boxes(pred: ImagePrediction) -> np.ndarray:
    """Each object's axis-aligned pixel box (n, 4): its box, or its oriented box's bounds."""
    if len(pred.boxes_xyxy) == len(pred.scores):
        return np.asarray(pred.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(pred.obb_xywhr) == len(pred.scores):
        return np.array([_obb_bounds(r) for r in pred.obb_xywhr]).reshape(-1, 4)
    return np.zeros((len(pred.scores), 4))


def shown_objects(pred: ImagePrediction, label_map: Mapping[int, str], display: Display | None) -> np.ndarray:
    """Which objects of a detection-like prediction are shown: those of a class with a label that
    ``display`` shows (every one of them with no ``display``).

    Example:
        >>> p = ImagePrediction(10, 10, np.array([0, 1, 2]), np.array([0.3, 0.5, 0.9]), np.zeros((3, 4)))
        >>> shown_objects(p, {0: "a", 1: "b"}, Display(0.4)).tolist()
        [False, True, False]
    """
    classes = np.asarray(pred.class_ids).reshape(-1).astype(int)
    mapped = np.array([int(c) in label_map for c in classes], dtype=bool)
    if display is None or not mapped.any():
        return mapped
    keep = np.zeros(len(classes), dtype=bool)
    idx = np.flatnonzero(mapped)
    keep[idx] = display.shown(object_boxes(pred)[idx], classes[idx], np.asarray(pred.scores).reshape(-1)[idx])
    return keep


def _obb_bounds(xywhr: np.ndarray) -> np.ndarray:
    cx, cy, w, h, theta = (float(v) for v in xywhr)
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    half_w, half_h = (w * c + h * s) / 2, (w * s + h * c) / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])
