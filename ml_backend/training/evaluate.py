"""Ultralytics' validation of a model on a dataset's held-out split, as the numbers the loop compares.

Example:
    >>> PRIMARY_METRIC["detect"]
    'mAP50-95'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.al.effort import price
from ml_backend.inference.display import Display, choose_display, corrections_under, cross_fitted_corrections, default_display
from ml_backend.settings import Settings
from ml_backend.training.dataset import dataloader_workers
from ml_backend.training.metrics import ImageRecord, image_record

PRIMARY_METRIC = {"detect": "mAP50-95", "obb": "mAP50-95", "segment": "mask mAP50-95", "classify": "top1", "pose": "pose mAP50-95"}


def evaluate(weights: str | Path, data: str | Path, kind: str, settings: Settings, workdir: Path, split: str = "val") -> dict[str, Any]:
    """Ultralytics' validation of ``weights`` on the ``val`` split of ``data`` (or ``split``).

    Returns:
        ``{"metric": name, "primary": value, ...}``: for detection-like models ``map50_95``,
        ``map50`` and ``per_class`` (class name -> ``ap50_95``, ``ap50``; only classes present
        in the held-out labels; with precision, recall and F1 at the confidence that maximizes the
        mean F1); for segmentation the mask metrics and for pose the keypoint ones (box ones under ``box_*``);
        for classifiers ``top1`` and ``top5``.
    """
    from ml_backend.inference.model import import_yolo

    YOLO = import_yolo()
    model = YOLO(str(weights))
    r = model.val(
        data=str(data),
        split=split,
        imgsz=settings.train_imgsz,
        batch=settings.train_batch if settings.train_batch > 0 else 16,
        device=settings.ultralytics_device,
        workers=dataloader_workers(),
        plots=False,
        verbose=False,
        project=str(workdir / "runs"),
        name="val",
        exist_ok=True,
    )
    if kind == "classify":
        return {"metric": "top1", "primary": float(r.top1), "top1": float(r.top1), "top5": float(r.top5)}
    names = {int(k): str(v) for k, v in dict(r.names).items()}
    part = r.seg if kind == "segment" else r.pose if kind == "pose" else r.box
    per_class = {
        names.get(int(c), str(c)): {
            "ap50_95": float(part.ap[i]),
            "ap50": float(part.ap50[i]),
            "precision": float(part.p[i]),
            "recall": float(part.r[i]),
            "f1": float(part.f1[i]),
        }
        for i, c in enumerate(part.ap_class_index)
    }
    out: dict[str, Any] = {
        "metric": PRIMARY_METRIC[kind],
        "primary": float(part.map),
        "map50_95": float(part.map),
        "map50": float(part.map50),
        "per_class": per_class,
    }
    if kind in ("segment", "pose"):
        out.update(box_map50_95=float(r.box.map), box_map50=float(r.box.map50))
    return out


def nothing_found(kind: str) -> dict[str, Any]:
    """:func:`evaluate`'s answer for a model that predicts none of the dataset's classes.

    Example:
        >>> nothing_found("classify")
        {'metric': 'top1', 'primary': 0.0, 'top1': 0.0, 'top5': 0.0}
    """
    if kind == "classify":
        return {"metric": "top1", "primary": 0.0, "top1": 0.0, "top5": 0.0}
    out: dict[str, Any] = {"metric": PRIMARY_METRIC[kind], "primary": 0.0, "map50_95": 0.0, "map50": 0.0, "per_class": {}}
    if kind in ("segment", "pose"):
        out.update(box_map50_95=0.0, box_map50=0.0)
    return out


def yolo_labels(label_file: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes in pixels xyxy, classes) from an Ultralytics detection label file (missing: none)."""
    rows = []
    if label_file.is_file():
        for line in label_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                c, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:])
                rows.append((c, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return arr[:, 1:], arr[:, 0].astype(int)


def heldout_images(dataset_root: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The held-out split of a written detection dataset as (RGB image, true boxes in pixels, classes)."""
    from PIL import Image

    out = []
    for path in sorted((dataset_root / "images" / "val").glob("*.jpg")):
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        gt, gc = yolo_labels(dataset_root / "labels" / "val" / f"{path.stem}.txt", image.shape[1], image.shape[0])
        out.append((image, gt, gc))
    return out


@dataclass(frozen=True)
class Detections:
    """One labeled image of a written detection dataset and a model's detections on it (pixels, xyxy)."""

    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def record(self, n_classes: int) -> ImageRecord:
        """The image as average precision needs it (:func:`ml_backend.training.metrics.image_record`)."""
        return image_record(self.gt_boxes, self.gt_classes, self.boxes, self.classes, self.scores, n_classes)


def heldout_detections(weights: str | Path, dataset_root: Path, settings: Settings, split: str = "val") -> list[Detections]:
    """``weights``' detections on each held-out image of a written detection dataset (``images/val``;
    ``split="train"``: the training images), confidence >= 0.001 (as mAP is measured), at
    ``TRAIN_IMGSZ``, in file order: one model pass for both mAP and annotation cost."""
    from PIL import Image

    from ml_backend.inference.model import import_yolo

    images = sorted((dataset_root / "images" / split).glob("*.jpg"))
    if not images:
        return []
    model = import_yolo()(str(weights))
    out = []
    for start in range(0, len(images), 16):
        chunk = images[start : start + 16]
        results = model.predict(
            [str(p) for p in chunk], conf=0.001, imgsz=settings.train_imgsz, device=settings.ultralytics_device, verbose=False
        )
        for path, r in zip(chunk, results, strict=True):
            with Image.open(path) as im:
                w, h = im.size
            gt, gc = yolo_labels(dataset_root / "labels" / split / f"{path.stem}.txt", w, h)
            b = r.boxes
            out.append(Detections(gt, gc, b.xyxy.cpu().numpy().astype(np.float64), b.cls.cpu().numpy().astype(int), b.conf.cpu().numpy()))
    return out


def heldout_records(weights: str | Path, dataset_root: Path, n_classes: int, settings: Settings, split: str = "val") -> list[ImageRecord]:
    """Each held-out image (or ``split``'s) as an :class:`ImageRecord` of ``weights``' detections (:func:`heldout_detections`)."""
    return [d.record(n_classes) for d in heldout_detections(weights, dataset_root, settings, split)]


def annotation_cost(detections: list[Detections], settings: Settings, display: Display | None = None) -> dict[str, Any]:
    """Correcting the pre-annotations a model shows on these images (by ``display``, default
    ``SCORE_THRESHOLD``'s: as served) against drawing every box, priced with ``ANNOTATION_COSTS``
    (:func:`ml_backend.al.effort.price`): what the model saves an annotator.

    Example:
        >>> box = np.array([[0.0, 0.0, 10.0, 10.0]])
        >>> d = Detections(box, np.array([0]), box, np.array([0]), np.array([0.9]))
        >>> annotation_cost([d], Settings())["speedup"]  # 2 + 7 s to draw, 2 + 1.6 s to verify
        2.5
    """
    return price(corrections_under(detections, display or default_display(settings)), settings.annotation_costs)


def chosen_display(detections: list[Detections], settings: Settings) -> tuple[Display, dict[str, Any]]:
    """What a trained model will show, and what that saves an annotator, from its held-out detections.

    With ``SCORE_THRESHOLD`` set, that threshold for every class, priced on these images. Empty
    (the default): the per-class rule that costs annotators the fewest seconds on them
    (:func:`ml_backend.inference.display.choose_display`), kept only when it also saves seconds on
    images it was not chosen on: priced cross-fitted (each image under a rule chosen on the others,
    :func:`ml_backend.inference.display.cross_fitted_corrections`), it must cost less than 0.25 for
    every class does; otherwise every class is shown from 0.25. Either way the price is one no
    choice flatters.

    Example:
        >>> box, far = np.array([[0.0, 0, 10, 10]]), np.array([[50.0, 50, 60, 60]])
        >>> wrong = Detections(box, np.array([0]), np.vstack([box, far]), np.array([0, 0]), np.array([0.9, 0.4]))
        >>> chosen_display([wrong] * 6, Settings())[0].thresholds  # the box at 0.4 is always wrong: hidden
        {0: 0.45}
        >>> chosen_display([wrong], Settings())[0].thresholds  # one image: nothing to check a choice on
        {}
    """
    if settings.score_threshold is not None:
        return default_display(settings), annotation_cost(detections, settings)
    table, plain = settings.annotation_costs, default_display(settings)
    learned = choose_display(detections, table, plain.default)
    honest = cross_fitted_corrections(detections, table, plain.default)
    one = corrections_under(detections, plain)
    if learned != plain and table.seconds(honest) < table.seconds(one):
        return learned, price(honest, table)
    return plain, price(one, table)
