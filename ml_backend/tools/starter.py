"""A starter model trained offline from an Ultralytics model yaml on synthetic shapes.

Used by the demo (so it works with no internet and no weights) and by the tests (tiny weights
made once per test session). Users with real weights never need this.

Example:
    >>> from ml_backend.tools.starter import train_starter_model
    >>> path = train_starter_model("/tmp/starter", kind="detect", epochs=1, imgsz=64)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ml_backend.tools.synthetic import make_shapes_dataset

log = logging.getLogger(__name__)

MODEL_YAMLS = {
    "detect": "yolov8n.yaml",
    "segment": "yolov8n-seg.yaml",
    "obb": "yolov8n-obb.yaml",
    "classify": "yolov8n-cls.yaml",
    "pose": "yolov8n-pose.yaml",
}


def train_from_yaml(
    model_yaml: str, data: str | Path, out: Path, runs: Path, name: str, epochs: int, imgsz: int, batch: int, seed: int, device: str | None
) -> Path:
    """Train a model from its yaml (no pretrained weights) on ``data``; its best epoch goes to ``out`` (atomically)."""
    from ml_backend.inference.model import import_yolo

    model = import_yolo()(model_yaml)  # heavy import only when training is asked for
    model.train(
        data=str(data),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        seed=seed,
        deterministic=True,
        workers=0,
        device=device,
        plots=False,
        amp=False,
        val=True,
        verbose=False,
        project=str(Path(runs).resolve()),
        name=name,
        exist_ok=True,
        pretrained=False,
    )
    best = Path(model.trainer.best)
    if not best.exists():
        best = Path(model.trainer.last)
    tmp = out.with_suffix(".tmp")
    shutil.copyfile(best, tmp)
    tmp.replace(out)
    return out


def train_starter_model(
    workdir: str | Path,
    kind: str = "detect",
    epochs: int = 30,
    imgsz: int = 128,
    n_train: int = 64,
    n_val: int = 16,
    seed: int = 0,
    batch: int = 16,
) -> Path:
    """Train a small YOLO from its yaml on synthetic shapes and return the weights path.

    Args:
        workdir: folder for the dataset, the Ultralytics run and the final ``<kind>.pt``.
        kind: ``detect``, ``segment``, ``obb``, ``classify`` or ``pose``.
        epochs: training epochs.
        imgsz: training image size.
        n_train: synthetic training images.
        n_val: synthetic validation images.
        seed: seed for the images and for training.
        batch: batch size.

    Returns:
        Path to ``<workdir>/<kind>.pt``. An existing file is reused, not retrained.
    """
    workdir = Path(workdir)
    out = workdir / f"{kind}.pt"
    if out.exists():
        return out
    data = make_shapes_dataset(workdir / f"data-{kind}", n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed, kind=kind)
    train_from_yaml(
        MODEL_YAMLS[kind], data.yaml_path, out, workdir / "runs", kind, epochs=epochs, imgsz=imgsz, batch=batch, seed=seed, device="cpu"
    )
    log.info("starter %s model written to %s", kind, out)
    return out


def pretrain_model(
    out: str | Path,
    data: str | Path | None = None,
    fmt: str | None = None,
    n_images: int = 2000,
    epochs: int = 30,
    imgsz: int = 320,
    batch: int = 16,
    model_yaml: str = "yolov8n.yaml",
    device: str = "auto",
    seed: int = 0,
) -> Path:
    """Train a starting model from a model yaml, offline: on synthetic shapes or on a dataset.

    Users who are online pass a pretrained model instead (``yolo11n.pt``); this is what the
    label-savings study starts from when none can be had. With ``data``, every image of that
    dataset (read by :mod:`ml_backend.tools.datasets`) is used, a tenth held out for Ultralytics'
    validation, and the best epoch's weights are kept.

    Returns:
        ``out`` (written atomically).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".pretrain-{out.stem}"
    if data is None:
        shapes = make_shapes_dataset(work / "data", n_train=n_images, n_val=max(8, n_images // 10), imgsz=imgsz, seed=seed)
        yaml_path = shapes.yaml_path
    else:
        from ml_backend.tools.datasets import as_task, load_dataset, load_local_image
        from ml_backend.training.dataset import assign_splits, write_dataset

        if fmt is None:
            raise ValueError("pretraining on a dataset needs its format (voc, yolo or coco)")
        ds = load_dataset(data, fmt)
        tasks = [as_task(ds, i) for i in range(len(ds.items))]
        summary = write_dataset(
            tasks,
            ds.names,
            "detect",
            lambda t: load_local_image(t["data"]["image"]),
            work / "data",
            from_name="label",
            splits=assign_splits([t["id"] for t in tasks], 0.1),
        )
        yaml_path = summary.data
    train_from_yaml(model_yaml, yaml_path, out, work / "runs", "pretrain", epochs, imgsz, batch, seed, None if device == "auto" else device)
    log.info("pretrained %s (%s, %d epochs at %d px) written to %s", model_yaml, data or f"{n_images} synthetic images", epochs, imgsz, out)
    return out
