"""A re-score after labels alone runs no model: the model's outputs are kept per task and version."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ml_backend.inference.display import Display
from ml_backend.inference.images import ImageError
from ml_backend.inference.label_config import select_target
from ml_backend.inference.model import ImagePrediction
from ml_backend.inference.output_cache import OutputCache, prediction_bytes
from ml_backend.inference.predictor import Predictor, Served
from ml_backend.scoring.pool import score_tasks
from tests.scoring.test_pool import CFG, det, settings


class CountingImages:
    """Images by task id (a task whose URI says "missing" has none); counts the loads."""

    def __init__(self):
        self.loads: list[str] = []

    def load(self, uri, task_id=None):
        self.loads.append(uri)
        if "missing" in uri:
            raise ImageError("image not found (404)")
        rng = np.random.default_rng(abs(hash(uri)) % 2**32)
        return rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)


class FakeModel:
    """Outputs that follow the image; counts the images it is run on."""

    task = "detect"
    names = {0: "a", 1: "b"}

    def __init__(self, version: str = "fake-1"):
        self.version = version
        self.images = 0

    def predict(self, images, conf=0.25, imgsz=None, device=None, batch=16, with_scores=False, agnostic=False):
        self.images += len(images)
        out = []
        for im in images:
            p = float(im.mean()) / 255
            out.append(det([[p, 1 - p]], [[0, 0, 10, 10]], [p, 1 - p, float(im[0, 0, 0]) / 255]))
        return out


def tasks(n: int = 12, labeled: tuple[int, ...] = (), uris: dict[int, str] | None = None) -> list[dict]:
    return [
        {
            "id": i,
            "data": {"image": (uris or {}).get(i, f"/data/upload/1/{i}.jpg")},
            "annotations": [{"result": [], "was_cancelled": False}] if i in labeled else [],
        }
        for i in range(1, n + 1)
    ]


def no_ids(predictions: list[dict]) -> list[dict]:
    """Predictions without their region ids (drawn at random each time regions are written)."""
    return [{**p, "result": [{k: v for k, v in r.items() if k != "id"} for r in p["result"]]} for p in predictions]


def fake_setup(max_bytes: int | None = None) -> tuple[Predictor, Served, CountingImages]:
    images = CountingImages()
    kw = {"output_cache_bytes": max_bytes} if max_bytes is not None else {}
    predictor = Predictor(settings(AL_STRATEGY="hybrid"), None, images, **kw)  # type: ignore[arg-type]
    served = Served(FakeModel(), select_target(CFG, "detect"), {0: "a", 1: "b"}, display=Display(0.5))  # type: ignore[arg-type]
    return predictor, served, images


def test_a_rescore_after_labels_alone_runs_no_model_and_gives_what_a_full_pass_gives(tiny_weights) -> None:
    from ml_backend.inference.predictor import make_fetcher, make_holder
    from ml_backend.settings import Settings

    s = Settings.from_env({"MODEL_PATH": str(tiny_weights("detect")), "IMGSZ": "64", "AL_STRATEGY": "hybrid", "AL_CLUSTERS": "3"})
    predictor = Predictor(s, make_holder(s), make_fetcher(s, "", ""))
    images = CountingImages()
    predictor._load = lambda task, target, fetcher: images.load(task["data"]["image"], task["id"])  # type: ignore[method-assign]
    served = predictor.serve(CFG.replace('"a"', '"circle"').replace('"b"', '"square"'))
    model_images = []
    real_predict = served.model.predict

    def counting_predict(imgs, **kw):  # noqa: ANN001, ANN003, ANN202
        model_images.append(len(imgs))
        return real_predict(imgs, **kw)

    served.model.predict = counting_predict  # type: ignore[method-assign]
    first = score_tasks(tasks(20, labeled=(1,)), served, predictor, s)
    assert sum(model_images) == 20 and len(images.loads) == 20 and len(predictor.outputs) == 20
    model_images.clear()
    images.loads.clear()

    relabeled = tasks(20, labeled=(1, 2, 3))
    again = score_tasks(relabeled, served, predictor, s)
    assert model_images == [] and images.loads == []  # labels alone: no image read, no model run
    assert [p["task"] for p in again.predictions] == [p["task"] for p in first.predictions]
    assert {sc.task for sc in again.scores if sc.labeled} == {1, 2, 3}  # the strategy did rerun

    predictor.outputs.clear()
    full = score_tasks(relabeled, served, predictor, s)
    assert sum(model_images) == 20
    assert again.scores == full.scores and no_ids(again.predictions) == no_ids(full.predictions)
    assert np.array_equal(again.embeddings, full.embeddings)


def test_the_same_tasks_again_are_served_from_the_cache_with_identical_scores() -> None:
    predictor, served, images = fake_setup()
    s = predictor.settings
    first = score_tasks(tasks(), served, predictor, s)  # type: ignore[arg-type]
    assert served.model.images == 12 and len(images.loads) == 12
    again = score_tasks(tasks(), served, predictor, s)  # type: ignore[arg-type]
    assert served.model.images == 12 and len(images.loads) == 12  # nothing new
    assert again.scores == first.scores and no_ids(again.predictions) == no_ids(first.predictions)


def test_a_changed_image_a_new_model_version_or_another_conf_is_a_miss() -> None:
    predictor, served, images = fake_setup()
    s = predictor.settings
    score_tasks(tasks(), served, predictor, s)  # type: ignore[arg-type]
    assert served.model.images == 12

    score_tasks(tasks(uris={3: "/data/upload/1/3-new.jpg"}), served, predictor, s)  # type: ignore[arg-type]
    assert served.model.images == 13 and images.loads[-1] == "/data/upload/1/3-new.jpg"

    promoted = dataclasses.replace(served, model=FakeModel("fake-2"))
    score_tasks(tasks(), promoted, predictor, s)  # type: ignore[arg-type]
    assert promoted.model.images == 12  # never another version's outputs

    list(predictor.run(tasks(), served, with_scores=True, conf=0.2, cache=True))
    assert served.model.images == 13 + 12
    list(predictor.run(tasks(), served, with_scores=True, conf=0.2, cache=True))
    assert served.model.images == 13 + 12  # now kept under conf 0.2 as well
    list(predictor.run(tasks(), served, with_scores=True, conf=0.2, tta=True, cache=True))
    assert served.model.images == 13 + 12 + 2 * 12  # tta: both passes, a miss
    list(predictor.run(tasks(), served, with_scores=True, conf=0.2))
    assert served.model.images == 13 + 12 + 3 * 12  # /predict and the tools: no cache unless asked


def test_failed_tasks_are_not_kept() -> None:
    predictor, served, images = fake_setup()
    s = predictor.settings
    pool = tasks(uris={2: "/data/upload/1/missing.jpg"})
    first = score_tasks(pool, served, predictor, s)  # type: ignore[arg-type]
    assert set(first.errors) == {2} and len(predictor.outputs) == 11
    images.loads.clear()
    again = score_tasks(pool, served, predictor, s)  # type: ignore[arg-type]
    assert images.loads == ["/data/upload/1/missing.jpg"] and set(again.errors) == {2}
    assert served.model.images == 11
    assert again.scores == first.scores


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    pred = det([[0.9, 0.1]], [[0, 0, 10, 10]], [1, 0, 0])
    size = prediction_bytes(pred)
    cache = OutputCache(max_bytes=3 * size)
    for k in "abc":
        cache.put(k, pred)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", pred)
    assert cache.get("b") is None and all(cache.get(k) is not None for k in "acd")
    assert len(cache) == 3 and cache.nbytes == 3 * size
    cache.put("huge", dataclasses.replace(pred, embedding=np.zeros(4 * size, np.uint8)))
    assert cache.get("huge") is None and len(cache) == 3  # larger than the whole cache: not kept, nothing evicted


def test_a_kept_output_is_not_changed_through_what_get_returns() -> None:
    cache = OutputCache()
    cache.put("a", ImagePrediction(10, 10, tta_disagreement=0.5))
    got = cache.get("a")
    assert got is not None
    got.tta_disagreement = 0.9
    assert cache.get("a").tta_disagreement == 0.5  # type: ignore[union-attr]


@pytest.mark.parametrize("n_kept", [0, 5])
def test_a_pool_larger_than_the_cache_reruns_only_what_was_evicted(n_kept) -> None:
    one = prediction_bytes(FakeModel().predict([np.zeros((2, 2, 3), np.uint8)])[0])
    predictor, served, images = fake_setup(max_bytes=max(1, n_kept * one))
    s = predictor.settings
    score_tasks(tasks(), served, predictor, s)  # type: ignore[arg-type]
    assert len(predictor.outputs) == n_kept
    images.loads.clear()
    score_tasks(tasks()[-n_kept:] if n_kept else tasks(), served, predictor, s)  # type: ignore[arg-type]
    assert len(images.loads) == (0 if n_kept else 12)
