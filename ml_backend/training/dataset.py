"""Label Studio annotations -> an Ultralytics dataset on disk (for retraining).

Pure conversion: tasks with their annotations in, label lines out. Geometry comes back from
Label Studio's percent coordinates (rectangles, rotated rectangles, polygons, choices) into
Ultralytics' normalized formats:

* detect: ``cls cx cy w h`` (a rotated rectangle becomes its axis-aligned bounds);
* obb: ``cls x1 y1 x2 y2 x3 y3 x4 y4`` (the four corners, rotation about the top-left corner);
* segment: ``cls x1 y1 x2 y2 ...`` (polygons; rectangles become 4-point polygons);
* classify: the image goes into a folder named after its class.

Skipped (cancelled) annotations are left out; a task's newest remaining annotation is used.
The train/val split is deterministic by task id, so a task never moves between splits as the
project grows.

Example:
    >>> rect = {"type": "rectanglelabels", "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["car"]}}
    >>> region_to_line(rect, {"car": 0}, "detect")
    '0 0.250000 0.400000 0.300000 0.400000'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LABEL_KEYS = ("rectanglelabels", "polygonlabels", "brushlabels", "keypointlabels", "choices", "labels")


def dataloader_workers() -> int:
    """Ultralytics dataloader workers: none on a small machine (a worker per core only slows it down)."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus // 2)


def write_data_yaml(root: Path, names: Mapping[int, str], keypoints: Mapping[int, Sequence[str]] | None = None) -> Path:
    """Ultralytics' ``data.yaml`` for ``images/{train,val}`` under ``root`` (JSON is valid YAML).

    Args:
        keypoints: pose datasets: class id -> its keypoint names, in the label lines' order (every
            class has as many); left/right names swap when an image is flipped.
    """
    path = root / "data.yaml"
    body: dict[str, Any] = {
        "path": str(root.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {int(i): str(n) for i, n in names.items()},
    }
    if keypoints:
        first = list(next(iter(keypoints.values())))
        body["kpt_shape"] = [len(first), 3]
        body["kpt_names"] = {int(c): list(map(str, k)) for c, k in keypoints.items()}
        body["flip_idx"] = flip_index(first)
    path.write_text(json.dumps(body, indent=2))
    return path


def flip_index(names: Sequence[str]) -> list[int]:
    """Each keypoint's index after a horizontal flip: ``left_x`` and ``right_x`` swap, the others stay.

    Example:
        >>> flip_index(["nose", "left_eye", "right_eye", "tail"])
        [0, 2, 1, 3]
    """
    where = {str(n).casefold(): i for i, n in enumerate(names)}
    out = []
    for i, name in enumerate(names):
        n = str(name).casefold()
        for a, b in (("left", "right"), ("right", "left")):
            if a in n and n.replace(a, b) in where:
                out.append(where[n.replace(a, b)])
                break
        else:
            out.append(i)
    return out


def split_score(task_id: int, salt: str = "al-split-v1") -> float:
    """A number in [0, 1) fixed by the task id: below ``val_fraction`` means held out."""
    h = int(hashlib.sha256(f"{salt}:{int(task_id)}".encode()).hexdigest()[:8], 16)
    return (h % 10_000) / 10_000


def split_of(task_id: int, val_fraction: float = 0.2) -> str:
    """``train`` or ``val`` for a task id, the same on every run and every machine."""
    return "val" if split_score(task_id) < val_fraction else "train"


def assign_splits(task_ids: Sequence[int], val_fraction: float = 0.2) -> dict[int, str]:
    """:func:`split_of` for each task, except that two or more tasks always hold out at least one.

    With few labels the hash can put every task in ``train``; then the task with the lowest
    score is held out (it returns to ``train`` once another task's own score holds it out), so
    there is always something to compare the old and new model on.

    Example:
        >>> sorted(assign_splits([1, 2], 0.0).values())
        ['train', 'val']
    """
    splits = {int(t): split_of(t, val_fraction) for t in task_ids}
    if len(splits) >= 2 and "val" not in splits.values():
        splits[min(splits, key=split_score)] = "val"
    return splits


def current_annotation(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The newest annotation of a task that was not cancelled (skipped), or None."""
    kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not kept:
        return None
    return max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a.get("id") or 0)))


def _label_of(value: Mapping[str, Any]) -> str | None:
    for key in LABEL_KEYS:
        labels = value.get(key)
        if labels:
            return str(labels[0])
    return None


def _corners_px(value: Mapping[str, Any], width: float, height: float) -> list[tuple[float, float]]:
    x, y = float(value["x"]) / 100 * width, float(value["y"]) / 100 * height
    w, h = float(value["width"]) / 100 * width, float(value["height"]) / 100 * height
    t = math.radians(float(value.get("rotation") or 0.0))
    c, s = math.cos(t), math.sin(t)
    return [(x + dx * c - dy * s, y + dx * s + dy * c) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


def region_to_line(region: Mapping[str, Any], class_ids: Mapping[str, int], kind: str) -> str | None:
    """One Ultralytics label line for a Label Studio region, or None if it does not apply.

    Args:
        region: a Label Studio result item.
        class_ids: label -> class id.
        kind: ``detect``, ``obb`` or ``segment``.
    """
    value = region.get("value") or {}
    label = _label_of(value)
    if label is None or label not in class_ids:
        return None
    cls = class_ids[label]
    pts = region_points(region)
    if pts is None:
        return None
    if kind == "detect":
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        w, h = max(xs) - min(xs), max(ys) - min(ys)
        if w <= 0 or h <= 0:
            return None
        return f"{cls} {(min(xs) + max(xs)) / 2:.6f} {(min(ys) + max(ys)) / 2:.6f} {w:.6f} {h:.6f}"
    if kind == "obb":
        if len(pts) != 4:
            return None
        return f"{cls} " + " ".join(f"{px:.6f} {py:.6f}" for px, py in pts)
    if kind == "segment":
        return f"{cls} " + " ".join(f"{px:.6f} {py:.6f}" for px, py in pts)
    raise ValueError(f"kind must be detect, obb or segment, got {kind!r}")


def region_points(region: Mapping[str, Any]) -> list[tuple[float, float]] | None:
    """A region's outline in 0-1 image coordinates, clipped to the image: a polygon's points, a brush
    mask's outline, a (rotated) rectangle's four corners; None for anything else.

    Example:
        >>> region_points({"value": {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0}})
        [(0.1, 0.2), (0.4, 0.2), (0.4, 0.6), (0.1, 0.6)]
    """
    value = region.get("value") or {}
    width = float(region.get("original_width") or 100.0)
    height = float(region.get("original_height") or 100.0)
    if "points" in value:
        pts = [(float(px) / 100, float(py) / 100) for px, py in value["points"]]
        if len(pts) < 3:
            return None
    elif value.get("rle"):
        outline = brush_outline(value["rle"], int(width), int(height))
        if outline is None:
            return None
        pts = outline
    elif {"x", "y", "width", "height"} <= set(value):
        pts = [(px / width, py / height) for px, py in _corners_px(value, width, height)]
    else:
        return None
    return [(_clip01(px), _clip01(py)) for px, py in pts]


def brush_outline(rle: Sequence[int], width: int, height: int) -> list[tuple[float, float]] | None:
    """The outline of a Label Studio brush mask (RLE) as a polygon in 0-1 coordinates: its largest
    connected part (None when the mask is empty or does not fit the image's size).

    Example:
        >>> from ml_backend.inference.ls_results import brush_rle
        >>> rle = brush_rle(np.array([[2., 2.], [7., 2.], [7., 5.], [2., 5.]]), 10, 8)
        >>> sorted(brush_outline(rle, 10, 8))
        [(0.2, 0.25), (0.2, 0.625), (0.7, 0.25), (0.7, 0.625)]
    """
    import cv2
    from label_studio_sdk.converter.brush import decode_rle

    try:
        flat = decode_rle(list(rle))
        mask = (np.asarray(flat).reshape(height, width, 4)[:, :, 3] > 0).astype(np.uint8)
    except Exception:  # a damaged RLE or one of another image size: nothing to learn from
        return None
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2)
    if len(largest) < 3:
        return None
    return [(float(x) / width, float(y) / height) for x, y in largest]


@dataclass(frozen=True)
class PoseLayout:
    """How a ``<KeyPointLabels>`` maps onto a pose model: label -> keypoint index, keypoints per
    object, and the ``<RectangleLabels>`` holding the objects' boxes (None: each image one object)."""

    keypoint_ids: Mapping[str, int]
    n_keypoints: int
    box_from_name: str | None = None


def pose_lines(result: Sequence[Mapping[str, Any]], class_ids: Mapping[str, int], layout: PoseLayout, from_name: str) -> list[str]:
    """Ultralytics pose label lines (``cls cx cy w h`` then ``x y v`` per keypoint) of one annotation.

    A keypoint belongs to the box its ``parentID`` names, else to the smallest box holding it;
    keypoints outside every box are left out. Without a boxes control every keypoint is one object
    (class 0) whose box is their extent. Keypoints nobody placed are ``0 0 0`` (not visible).

    Example:
        >>> box = {"id": "b", "from_name": "box", "value": {"x": 10, "y": 10, "width": 40, "height": 40, "rectanglelabels": ["cat"]}}
        >>> nose = {"from_name": "kp", "value": {"x": 20, "y": 30, "keypointlabels": ["nose"]}}
        >>> pose_lines([box, nose], {"cat": 0}, PoseLayout({"nose": 1}, 2, "box"), "kp")
        ['0 0.300000 0.300000 0.400000 0.400000 0 0 0 0.200000 0.300000 2']
    """
    boxes: list[tuple[str, int, tuple[float, float, float, float]]] = []
    points: list[tuple[int, float, float, str | None]] = []
    for region in result:
        value = region.get("value") or {}
        label = _label_of(value)
        if layout.box_from_name and region.get("from_name") == layout.box_from_name and label in class_ids:
            corners = region_points(region)
            xs, ys = [p[0] for p in corners or ()], [p[1] for p in corners or ()]
            if corners and max(xs) > min(xs) and max(ys) > min(ys):
                boxes.append((str(region.get("id")), class_ids[str(label)], (min(xs), min(ys), max(xs), max(ys))))
        elif region.get("from_name") == from_name and label in layout.keypoint_ids and {"x", "y"} <= set(value):
            x, y = _clip01(float(value["x"]) / 100), _clip01(float(value["y"]) / 100)
            points.append((layout.keypoint_ids[str(label)], x, y, region.get("parentID")))
    if not layout.box_from_name:
        if not points:
            return []
        xs, ys = [p[1] for p in points], [p[2] for p in points]
        pad = 0.02
        boxes = [("", 0, (max(0.0, min(xs) - pad), max(0.0, min(ys) - pad), min(1.0, max(xs) + pad), min(1.0, max(ys) + pad)))]
    owned: dict[int, dict[int, tuple[float, float]]] = {i: {} for i in range(len(boxes))}
    for k, x, y, parent in points:
        home = next((i for i, b in enumerate(boxes) if parent and b[0] == parent), None)
        if home is None:
            e = 1e-3  # a point placed on the box's edge is in it
            inside = [i for i, (_, _, (x1, y1, x2, y2)) in enumerate(boxes) if x1 - e <= x <= x2 + e and y1 - e <= y <= y2 + e]
            home = min(inside, key=lambda i: (boxes[i][2][2] - boxes[i][2][0]) * (boxes[i][2][3] - boxes[i][2][1]), default=None)
        if home is not None:
            owned[home].setdefault(k, (x, y))
    lines = []
    for i, (_, cls, (x1, y1, x2, y2)) in enumerate(boxes):
        kps = " ".join(f"{owned[i][k][0]:.6f} {owned[i][k][1]:.6f} 2" if k in owned[i] else "0 0 0" for k in range(layout.n_keypoints))
        lines.append(f"{cls} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f} {kps}")
    return lines


def task_label_lines(
    task: Mapping[str, Any], class_ids: Mapping[str, int], kind: str, from_name: str | None = None, pose: PoseLayout | None = None
) -> list[str] | None:
    """Label lines of a task's current annotation (an empty list is a labeled background image).

    None when the task has no annotation to learn from.
    """
    ann = current_annotation(task)
    if ann is None:
        return None
    if kind == "pose":
        if pose is None or from_name is None:
            raise ValueError("pose label lines need the keypoints' layout and control (pose, from_name)")
        return pose_lines(ann.get("result") or [], class_ids, pose, from_name)
    lines = []
    for region in ann.get("result") or []:
        if from_name and region.get("from_name") != from_name:
            continue
        line = region_to_line(region, class_ids, kind)
        if line is not None:
            lines.append(line)
    return lines


def task_class(task: Mapping[str, Any], from_name: str | None = None) -> str | None:
    """The chosen class of a classification task's current annotation."""
    ann = current_annotation(task)
    if ann is None:
        return None
    for region in ann.get("result") or []:
        if from_name and region.get("from_name") != from_name:
            continue
        choices = (region.get("value") or {}).get("choices")
        if choices:
            return str(choices[0])
    return None


def unknown_labels(tasks: Sequence[Mapping[str, Any]], label_ids: Mapping[str, int], from_name: str | None = None) -> dict[str, int]:
    """Labels used in current annotations that map to no class of the model, with their counts
    (their regions cannot be trained on; the run reports them)."""
    counts: dict[str, int] = {}
    for task in tasks:
        ann = current_annotation(task)
        for region in (ann or {}).get("result") or []:
            if from_name and region.get("from_name") != from_name:
                continue
            value = region.get("value") or {}
            for label in (str(x) for key in LABEL_KEYS for x in value.get(key) or []):
                if label not in label_ids:
                    counts[label] = counts.get(label, 0) + 1
    return counts


def write_detect_image(root: Path, split: str, name: str, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> Path:
    """Add one image and its boxes (pixels, xyxy) to a detection dataset's ``split``; returns the image path."""
    from PIL import Image

    h, w = image.shape[:2]
    lines = []
    for (x1, y1, x2, y2), c in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=int), strict=True):
        x1, x2 = max(0.0, x1) / w, min(float(w), x2) / w
        y1, y2 = max(0.0, y1) / h, min(float(h), y2) / h
        if x2 > x1 and y2 > y1:
            lines.append(f"{int(c)} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
    path = root / "images" / split / f"{name}.jpg"
    label = root / "labels" / split / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, quality=95)
    label.write_text("".join(line + "\n" for line in lines))
    return path


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`write_dataset` wrote."""

    root: Path
    data: Path  # what ``YOLO.train(data=...)`` takes
    counts: dict[str, int]  # images per split
    skipped: dict[int, str]  # task id -> why it was left out


def write_dataset(
    tasks: Sequence[Mapping[str, Any]],
    names: Mapping[int, str],
    kind: str,
    load_image: Callable[[Mapping[str, Any]], np.ndarray],
    out_dir: str | Path,
    from_name: str | None = None,
    val_fraction: float = 0.2,
    label_ids: Mapping[str, int] | None = None,
    splits: Mapping[int, str] | None = None,
    pose: PoseLayout | None = None,
    keypoint_names: Sequence[str] = (),
) -> DatasetSummary:
    """Write the labeled tasks as an Ultralytics dataset.

    Args:
        tasks: Label Studio tasks with their annotations (unlabeled ones are ignored).
        names: class id -> class name, as the model has them (labels are matched by name).
        kind: ``detect``, ``segment``, ``obb`` or ``classify``.
        load_image: task -> RGB image (H, W, 3); an exception leaves that task out.
        out_dir: a new folder (written from scratch).
        from_name: only regions of this control.
        val_fraction: share of tasks in the validation split (by task id, deterministic).
        label_ids: Label Studio label -> class id, when the project's labels are not the model's
            class names (``predicted_values`` mappings); default: matched by name.
        splits: task id -> ``train`` or ``val``, instead of the split by task id (the simulation
            holds out a fixed test set); labeled tasks it does not name are left out.
        pose: ``kind == "pose"``: how the keypoints control maps onto the model (:class:`PoseLayout`).
        keypoint_names: ``kind == "pose"``: the model's keypoint names, in its order (the dataset's ``kpt_names``).
    """
    from PIL import Image

    root = Path(out_dir)
    if root.exists():
        shutil.rmtree(root)
    class_ids = dict(label_ids) if label_ids is not None else {str(n): int(i) for i, n in names.items()}
    counts = {"train": 0, "val": 0}
    skipped: dict[int, str] = {}
    usable: list[tuple[int, Mapping[str, Any], Any]] = []  # (task id, task, class or label lines)
    for task in tasks:
        tid = int(task["id"])
        if kind == "classify":
            cls = task_class(task, from_name)
            if cls is None:
                continue
            if cls not in class_ids:
                skipped[tid] = f"class {cls!r} is not one of the model's classes"
                continue
            usable.append((tid, task, cls))
        else:
            lines = task_label_lines(task, class_ids, kind, from_name, pose)
            if lines is not None:
                usable.append((tid, task, lines))
    if splits is None:
        splits = assign_splits([tid for tid, _, _ in usable], val_fraction)
    else:
        usable = [u for u in usable if u[0] in splits]
    for tid, task, payload in usable:
        cls = lines = payload
        try:
            image = load_image(task)
        except Exception as exc:  # one broken image never sinks the dataset
            skipped[tid] = f"image: {exc}"
            continue
        split = splits[tid]
        if kind == "classify":
            path = root / split / str(names[class_ids[cls]]) / f"task_{tid}.jpg"
        else:
            path = root / "images" / split / f"task_{tid}.jpg"
            label = root / "labels" / split / f"task_{tid}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(line + "\n" for line in lines))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=95)
        counts[split] += 1
    if kind == "classify":
        for split in ("train", "val"):
            for n in names.values():
                (root / split / str(n)).mkdir(parents=True, exist_ok=True)
        data = root
    else:
        for split in ("train", "val"):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
        keypoints = None
        if kind == "pose" and pose is not None:
            kpt = list(keypoint_names) or [f"kpt{i}" for i in range(pose.n_keypoints)]
            keypoints = dict.fromkeys(names, kpt)
        data = write_data_yaml(root, dict(names), keypoints=keypoints)
    return DatasetSummary(root, data, counts, skipped)
