"""Shared fixtures: tiny YOLO weights trained in-session, a local image server, settings."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_OFFLINE", "true")


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per-session folder for tiny weights; ``AL_TEST_WEIGHTS_CACHE`` keeps them across runs (local use)."""
    cached = os.environ.get("AL_TEST_WEIGHTS_CACHE")
    if cached:
        Path(cached).mkdir(parents=True, exist_ok=True)
        return Path(cached)
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def tiny_weights(weights_dir: Path):
    """``kind -> path`` of tiny YOLO weights, trained from model yamls on synthetic shapes once per session."""
    from ml_backend.tools.starter import train_starter_model

    @functools.cache
    def get(kind: str) -> Path:
        return train_starter_model(weights_dir, kind=kind, epochs=1, imgsz=64, n_train=8, n_val=4, batch=8)

    return get


@pytest.fixture(scope="session")
def detect_weights(weights_dir: Path) -> Path:
    """A small detector that really finds the shapes (trained longer than the other tiny models)."""
    from ml_backend.tools.starter import train_starter_model

    return train_starter_model(weights_dir / "good", kind="detect", epochs=50, imgsz=96, n_train=128, n_val=16, batch=16)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def image_server(tmp_path_factory: pytest.TempPathFactory):
    """A static file server on 127.0.0.1; yields (root folder, base URL)."""
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def shapes_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic shape images with their boxes, as a Pascal VOC dataset (classes circle, square, triangle)."""
    import numpy as np

    from ml_backend.tools.synthetic import make_image
    from tests.tools.test_datasets import write_voc

    rng = np.random.default_rng(0)
    truth = []
    for i in range(40):
        s = make_image(rng, 96, 64)
        truth.append((f"img_{i:02d}.jpg", [(sh.cls, tuple(round(v) for v in sh.xyxy)) for sh in s.shapes], s.image))
    return write_voc(tmp_path_factory.mktemp("voc") / "shapes", truth)


@pytest.fixture(scope="session")
def own_classes_voc(shapes_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same images with classes of their own (ring, box, wedge): none of them the tiny weights' (circle, square, triangle)."""
    import shutil

    root = tmp_path_factory.mktemp("voc-own") / "shapes"
    shutil.copytree(shapes_voc, root)
    for xml in (root / "Annotations").glob("*.xml"):
        text = xml.read_text()
        for old, new in (("circle", "ring"), ("square", "box"), ("triangle", "wedge")):
            text = text.replace(f"<name>{old}</name>", f"<name>{new}</name>")
        xml.write_text(text)
    return root
