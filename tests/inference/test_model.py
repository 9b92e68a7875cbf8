"""Per-class scores and embeddings captured from the same forward pass as the predictions."""

import numpy as np
import pytest

from ml_backend.inference.model import load_weights
from ml_backend.tools.synthetic import make_image


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [np.asarray(make_image(rng, 96, 80).image) for _ in range(3)] + [np.zeros((80, 96, 3), np.uint8)]


@pytest.mark.parametrize("kind", ["detect", "segment", "obb", "classify"])
def test_scores_come_from_the_same_pass_and_change_nothing(tiny_weights, images, kind) -> None:
    model = load_weights(str(tiny_weights(kind)))
    plain = model.predict(images, conf=0.001, imgsz=64, device="cpu", batch=2)
    scored = model.predict(images, conf=0.001, imgsz=64, device="cpu", batch=2, with_scores=True)
    again = model.predict(images, conf=0.001, imgsz=64, device="cpu", batch=2)
    for p, s, a in zip(plain, scored, again):
        np.testing.assert_allclose(s.scores, p.scores, atol=1e-5)
        np.testing.assert_allclose(a.scores, p.scores, atol=1e-5)  # hooks removed afterwards
        assert p.embedding is None
        assert (p.class_scores is None) == (kind != "classify")  # a classifier's probabilities are always its class scores
        assert s.embedding is not None and s.embedding.ndim == 1 and np.isfinite(s.embedding).all()
        if kind == "classify":
            np.testing.assert_allclose(s.class_scores[0], s.probs)
        else:
            assert s.class_scores.shape == (len(s.class_ids), len(model.names))
            # the kept class is the top of each object's class-score vector
            np.testing.assert_allclose(s.class_scores.max(axis=1), s.scores, atol=1e-4)
            assert (s.class_scores.argmax(axis=1) == s.class_ids).all()
            # one unit-norm feature per level (three) for each kept object
            assert s.object_embeddings is not None and s.object_embeddings.shape[0] == len(s.class_ids)
            if len(s.class_ids):
                np.testing.assert_allclose(np.linalg.norm(s.object_embeddings, axis=1), np.sqrt(3), rtol=1e-4)
    assert len({s.embedding.shape for s in scored}) == 1


def test_exported_weights_predict_without_scores(tmp_path, tiny_weights, images) -> None:
    from ml_backend.inference.model import import_yolo

    onnx = import_yolo()(str(tiny_weights("detect"))).export(format="onnx", imgsz=64, verbose=False)
    model = load_weights(onnx)
    out = model.predict(images[:2], conf=0.001, imgsz=64, device="cpu", with_scores=True)
    assert len(out) == 2 and all(p.class_scores is None and p.embedding is None for p in out)


def test_object_features_are_the_feature_maps_averaged_inside_each_box() -> None:
    """Known maps: channels 0 and 2 hold the cell's column number, channels 1 and 3 hold 1, so the
    direction of a box's (unit-norm) feature says which columns it averaged."""
    import torch

    from ml_backend.inference.model import _box_pooled

    col = torch.arange(8, dtype=torch.float32).reshape(1, 8).expand(8, 8)
    one = torch.ones(8, 8)
    level0 = torch.stack([col, one, col, one])[None]  # (1, 4, 8, 8), stride 8: a 64 x 64 input
    level1 = torch.ones(1, 4, 4, 4)  # stride 16, uniform

    def expected(mean_col: float) -> np.ndarray:
        v = np.array([mean_col, 1, mean_col, 1])
        return v / np.linalg.norm(v)

    boxes = torch.tensor([[32.0, 8.0, 16.0, 16.0], [8.0, 8.0, 16.0, 16.0]])  # x 24-40 px: columns 3-4; x 0-16 px: columns 0-1
    out = _box_pooled([level0, level1], 0, boxes, [8.0, 16.0])
    assert out.shape == (2, 8)
    np.testing.assert_allclose(out[0, :4], expected(3.5), rtol=1e-5)
    np.testing.assert_allclose(out[1, :4], expected(0.5), rtol=1e-5)
    np.testing.assert_allclose(out[:, 4:], np.full((2, 4), 0.5), rtol=1e-5)


@pytest.mark.parametrize(
    "model_yaml",
    ["yolov8n.yaml", "yolo11n.yaml", "yolo11n-seg.yaml", "yolo11n-obb.yaml", "yolo11n-cls.yaml"]
    + ["yolo26n.yaml", "yolo26n-seg.yaml", "yolo26n-obb.yaml", "yolo26n-cls.yaml"],
)
def test_every_current_model_family_serves_and_scores(tmp_path, images, model_yaml, caplog) -> None:
    """Models built from Ultralytics' own yaml files (random weights: the code path is what counts): per-class
    scores of the kept objects and object features, never silently empty; YOLO26 (NMS-free head) included."""
    from ultralytics import YOLO

    path = tmp_path / model_yaml.replace(".yaml", ".pt")
    YOLO(model_yaml).save(str(path))
    model = load_weights(str(path))
    nc = len(model.names)
    preds = model.predict(images, conf=0.0001, imgsz=96, device="cpu", with_scores=True)
    for p in preds:
        assert p.embedding is not None
        if model.task == "classify":
            assert p.class_scores is not None and p.class_scores.shape == (1, nc)
            continue
        assert p.class_scores is not None and p.class_scores.shape == (len(p.class_ids), nc)
        assert np.all((p.class_scores >= 0) & (p.class_scores <= 1))
        assert p.object_embeddings is not None and len(p.object_embeddings) == len(p.class_ids)
    assert model.task == "classify" or any(len(p.class_ids) for p in preds)
    assert "not per-class scores" not in caplog.text


def test_a_head_without_per_class_scores_is_said_not_read_as_scores(caplog) -> None:
    """An end-to-end head's (batch, 300, 6) boxes in the raw output's place: no scores made of them, and a warning."""
    import types

    import torch

    from ml_backend.inference.model import _HeadCapture

    capture = _HeadCapture(types.SimpleNamespace(task="detect"))
    for _ in range(2):
        capture.raw, capture.idxs, capture.feats = [torch.rand(1, 300, 6)], [[torch.arange(3)]], []
        assert capture.finish(1, 80) == [(None, None, None)]
    assert caplog.text.count("not per-class scores") == 1
