"""A starter model trained offline from an Ultralytics model yaml on synthetic shapes.

Used by the demo (so it works with no internet and no weights) and by the tests (tiny weights
made once per test session). Users with real weights never need this.

Example:
    >>> from ml_backend.starter import train_starter_model
    >>> path = train_starter_model("/tmp/starter", kind="detect", epochs=1, imgsz=64)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ml_backend.synthetic import make_shapes_dataset

log = logging.getLogger(__name__)

MODEL_YAMLS = {
    "detect": "yolov8n.yaml",
    "segment": "yolov8n-seg.yaml",
    "obb": "yolov8n-obb.yaml",
    "classify": "yolov8n-cls.yaml",
}


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
        kind: ``detect``, ``segment``, ``obb`` or ``classify``.
        epochs: training epochs.
        imgsz: training image size.
        n_train: synthetic training images.
        n_val: synthetic validation images.
        seed: seed for the images and for training.
        batch: batch size.

    Returns:
        Path to ``<workdir>/<kind>.pt``. An existing file is reused, not retrained.
    """
    from ml_backend.model import import_yolo

    YOLO = import_yolo()  # heavy import only when training is asked for

    workdir = Path(workdir)
    out = workdir / f"{kind}.pt"
    if out.exists():
        return out
    data = make_shapes_dataset(workdir / f"data-{kind}", n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed, kind=kind)
    model = YOLO(MODEL_YAMLS[kind])
    model.train(
        data=str(data.yaml_path),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        seed=seed,
        deterministic=True,
        workers=0,
        device="cpu",
        plots=False,
        amp=False,
        val=True,
        verbose=False,
        project=str((workdir / "runs").resolve()),
        name=kind,
        exist_ok=True,
        pretrained=False,
    )
    best = Path(model.trainer.best)
    if not best.exists():
        best = Path(model.trainer.last)
    tmp = out.with_suffix(".tmp")
    shutil.copyfile(best, tmp)
    tmp.replace(out)
    log.info("starter %s model written to %s", kind, out)
    return out
