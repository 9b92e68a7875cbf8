"""Scoring with a fake model whose outputs are fixed: every number is known in advance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml_backend.al.strategies import REGISTRY
from ml_backend.inference.display import Display
from ml_backend.inference.label_config import select_target
from ml_backend.inference.model import ImagePrediction
from ml_backend.inference.predictor import Served
from ml_backend.scoring.pool import difficulty, image_scores, is_labeled, labeled_class_counts, score_tasks
from ml_backend.scoring.publish import score_columns
from ml_backend.scoring.store import ScoreStore
from ml_backend.settings import Settings
from ml_backend.state import StatePaths

CFG = '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image"><Label value="a"/><Label value="b"/></RectangleLabels></View>'


class FakeModel:
    task = "detect"
    names = {0: "a", 1: "b"}
    version = "fake-1"


class FakePredictor:
    """Returns a fixed ImagePrediction (or error) per task id."""

    def __init__(self, outputs: dict[int, ImagePrediction | str]):
        self.outputs = outputs
        self.calls = []

    def run(self, tasks, served, with_scores=False, conf=None, tta=False, cache=False):
        self.calls.append((with_scores, conf))
        for t in tasks:
            yield self.outputs[t["id"]]


def det(scores_by_class: list[list[float]], boxes: list[list[float]], emb: list[float]) -> ImagePrediction:
    P = np.array(scores_by_class, dtype=float).reshape(len(scores_by_class), 2)
    return ImagePrediction(
        width=100,
        height=100,
        class_ids=P.argmax(1) if len(P) else np.zeros(0, dtype=int),
        scores=P.max(1) if len(P) else np.zeros(0),
        boxes_xyxy=np.array(boxes, dtype=float).reshape(-1, 4),
        class_scores=P,
        embedding=np.array(emb, dtype=np.float32),
    )


SERVED = Served(FakeModel(), select_target(CFG, "detect"), {0: "a", 1: "b"}, display=Display(0.5))  # type: ignore[arg-type]  # shown from 0.5


def settings(**env) -> Settings:
    base = {
        "SCORE_THRESHOLD": "0.5",
        "CANDIDATE_THRESHOLD": "0.1",
        "UNCERTAINTY_MEASURE": "least_confidence",
        "UNCERTAINTY_AGGREGATION": "max",
        "AL_COST_WEIGHT": "0",
        "AL_STRATEGY": "uncertainty",
        "AL_CLASS_BALANCE_WEIGHT": "0",
        "AL_CLUSTERS": "2",
    }
    base.update(env)
    return Settings.from_env(base)


@pytest.mark.parametrize(
    ("u", "bucket"), [(0.0, "easy"), (0.33, "easy"), (0.34, "medium"), (0.66, "medium"), (0.67, "hard"), (1.0, "hard")]
)
def test_difficulty(u, bucket) -> None:
    assert difficulty(u) == bucket


@pytest.mark.parametrize(
    ("scores", "expected_u", "expected_counts"),
    [
        ([[0.9, 0.1]], 0.1, [1, 0]),  # one sure object
        ([[0.9, 0.1], [0.05, 0.3]], 0.7, [1, 0]),  # a faint candidate (0.3 < SCORE_THRESHOLD) counts in uncertainty, not in counts
        ([[0.9, 0.1], [0.02, 0.05]], 0.1, [1, 0]),  # below CANDIDATE_THRESHOLD: ignored
        ([], 0.0, [0, 0]),  # nothing at all
    ],
)
def test_image_scores(scores, expected_u, expected_counts) -> None:
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(len(scores))]
    u, counts = image_scores(det(scores, boxes, [1, 0]), settings(), 2)
    assert u == pytest.approx(expected_u)
    assert counts.tolist() == expected_counts


def test_classification_image_scores() -> None:
    pred = ImagePrediction(width=10, height=10, probs=np.array([0.2, 0.8]))
    u, counts = image_scores(pred, settings(UNCERTAINTY_MEASURE="margin"), 2)
    assert u == pytest.approx(1 - 0.6) and counts.tolist() == [0, 1]


def test_labeled_tasks_and_their_class_counts() -> None:
    tasks = [
        {
            "id": 1,
            "annotations": [
                {"was_cancelled": False, "result": [{"value": {"rectanglelabels": ["b"]}}, {"value": {"rectanglelabels": ["b"]}}]}
            ],
        },
        {"id": 2, "annotations": [{"was_cancelled": True, "result": [{"value": {"rectanglelabels": ["a"]}}]}]},
        {"id": 3, "annotations": []},
    ]
    assert [is_labeled(t) for t in tasks] == [True, False, False]
    assert labeled_class_counts(tasks, SERVED, 2).tolist() == [0, 2]


def _pool() -> tuple[list[dict], FakePredictor]:
    outputs = {
        1: det([[0.95, 0.05]], [[0, 0, 10, 10]], [1, 0, 0]),  # labeled
        2: det([[0.6, 0.4]], [[0, 0, 10, 10]], [1, 0.05, 0]),  # unsure, close to the labeled one
        3: det([[0.8, 0.2]], [[0, 0, 10, 10]], [0, 0, 1]),  # fairly sure, far away
        4: "image not found (404)",
        5: det([[0.7, 0.3]], [[0, 0, 10, 10]], [0, 1, 0]),
    }
    tasks = [{"id": i, "data": {"image": f"/data/upload/{i}.jpg"}, "annotations": [{"result": []}] if i == 1 else []} for i in outputs]
    return tasks, FakePredictor(outputs)


def test_score_tasks_with_a_fake_model() -> None:
    tasks, predictor = _pool()
    pooled = score_tasks(tasks, SERVED, predictor, settings())  # type: ignore[arg-type]
    assert predictor.calls == [(True, 0.1)]  # scores on, candidates down to CANDIDATE_THRESHOLD
    assert pooled.errors == {4: "image not found (404)"}
    by = {s.task: s for s in pooled.scores}
    assert set(by) == {1, 2, 3, 5}
    assert by[1].labeled and by[1].priority == 0.0
    assert [by[t].uncertainty for t in (2, 3, 5)] == pytest.approx([0.4, 0.2, 0.3])
    assert [by[t].priority for t in (2, 3, 5)] == pytest.approx([0.4, 0.2, 0.3])  # uncertainty strategy, no class term
    assert by[1].diversity == pytest.approx(0.0)
    assert by[3].diversity == pytest.approx(np.sqrt(2) / 2, abs=1e-5)
    assert by[2].diversity < by[5].diversity
    preds = {p["task"]: p for p in pooled.predictions}
    assert preds[2]["score"] == pytest.approx(0.6) and preds[1]["score"] == 1.0
    assert all(p["model_version"] == "fake-1" and p["cluster"] in (0, 1) for p in preds.values())
    assert preds[2]["result"][0]["value"]["rectanglelabels"] == ["a"]  # the pre-annotation rides along
    assert preds[3]["result"][0]["value"]["rectanglelabels"] == ["a"]


@pytest.mark.parametrize("strategy", sorted(REGISTRY))
def test_every_strategy_scores_the_pool_deterministically(strategy) -> None:
    tasks, _ = _pool()
    runs = [score_tasks(tasks, SERVED, _pool()[1], settings(AL_STRATEGY=strategy)) for _ in range(2)]  # type: ignore[arg-type]
    assert [s.priority for s in runs[0].scores] == [s.priority for s in runs[1].scores]
    assert all(0 <= s.priority <= 1 for s in runs[0].scores)


def _box(label: str, x: float, w: float = 10.0) -> dict:
    return {"type": "rectanglelabels", "value": {"x": x, "y": 0.0, "width": w, "height": 10.0, "rotation": 0, "rectanglelabels": [label]}}


def test_calibrated_uncertainty_weighs_classes_by_what_the_model_misses_on_labeled_tasks() -> None:
    """Labeled task 1 holds an 'a' the model finds and a 'b' it misses: class b is harder (0.67 against 0.33,
    one found and one missed of prior), so an unlabeled task unsure about a 'b' outranks one equally
    unsure about an 'a'."""
    outputs = {
        1: det([[0.95, 0.05]], [[0, 0, 10, 10]], [1, 0, 0]),  # finds the 'a' at 0-10 %, not the 'b' at 50 %
        2: det([[0.6, 0.55]], [[0, 0, 10, 10]], [0, 1, 0]),  # top class a
        3: det([[0.55, 0.6]], [[0, 0, 10, 10]], [0, 0, 1]),  # top class b, the same uncertainty
    }
    tasks = [
        {"id": 1, "data": {}, "annotations": [{"id": 1, "result": [_box("a", 0.0), _box("b", 50.0)]}]},
        {"id": 2, "data": {}, "annotations": []},
        {"id": 3, "data": {}, "annotations": []},
    ]
    s = settings(UNCERTAINTY_AGGREGATION="calibrated", UNCERTAINTY_MEASURE="margin")
    pooled = score_tasks(tasks, SERVED, FakePredictor(outputs), s)  # type: ignore[arg-type]
    assert pooled.class_weights.tolist() == pytest.approx([1 / 3, 2 / 3])
    by = {x.task: x for x in pooled.scores}
    margin = 1 - (0.6 - 0.55) / 1.15
    # confidence x class weight x margin (under 1 here, so nothing to divide by)
    assert by[3].uncertainty == pytest.approx(0.6 * (2 / 3) * margin) and by[2].uncertainty == pytest.approx(0.6 * (1 / 3) * margin)
    assert pooled.uncertainty_scale == 1.0
    assert by[3].priority > by[2].priority


def test_the_pool_carries_object_features_and_expected_annotator_seconds(monkeypatch) -> None:
    """What the strategies get: the shown objects' features (per task, in task order) and each task's
    expected seconds from its own pre-annotation (ANNOTATION_COSTS)."""
    import ml_backend.scoring.pool as pool_mod

    outputs = {
        1: det([[0.95, 0.05]], [[0, 0, 10, 10]], [1, 0, 0]),
        2: det([[0.9, 0.1], [0.2, 0.3]], [[0, 0, 10, 10], [50, 50, 60, 60]], [0, 1, 0]),  # one shown box, one hidden candidate
    }
    for i, out in outputs.items():
        out.object_embeddings = np.eye(3, dtype=np.float32)[: len(out.class_ids)] * i
    seen = {}
    real = pool_mod._strategy

    def spy(pool, settings, served):  # noqa: ANN001, ANN202
        seen["pool"] = pool
        return real(pool, settings, served)

    monkeypatch.setattr(pool_mod, "_strategy", spy)
    tasks = [{"id": 1, "data": {}, "annotations": [{"result": []}]}, {"id": 2, "data": {}, "annotations": []}]
    score_tasks(tasks, SERVED, FakePredictor(outputs), settings(AL_STRATEGY="objects"))  # type: ignore[arg-type]
    pool = seen["pool"]
    assert pool.n_labeled == 1 and len(pool) == 1
    assert pool.objects.n == 1 and pool.objects.classes.tolist() == [0]  # task 2's shown object only (the 0.3 candidate is hidden)
    assert pool.labeled_objects.n == 1 and pool.labeled_objects.classes.tolist() == [0]
    # 2 s to open + 0.9 x 1.6 s verify + 0.1 x 2 s delete for the shown box + 0.3 x 7 s to draw what the hidden candidate may be
    assert pool.expected_cost.tolist() == pytest.approx([2 + 0.9 * 1.6 + 0.1 * 2 + 0.3 * 7])


@pytest.mark.parametrize(
    ("labels", "label_map", "strategy", "used"),
    [
        (("a", "b"), {0: "a", 1: "b"}, "uncertainty", "uncertainty"),  # every label known: AL_STRATEGY
        (("a", "b", "fish"), {0: "a", 1: "b"}, "uncertainty", "typical"),  # a label the model does not know: AL_COLD_START_STRATEGY
        (("fish", "starfish"), {}, "objects", "typical"),  # a new project's classes from COCO weights
        (("fish", "starfish"), {}, "random", "random"),  # random stays random
    ],
)
def test_until_the_model_knows_every_label_the_cold_start_order_is_used(monkeypatch, labels, label_map, strategy, used) -> None:
    import ml_backend.scoring.pool as pool_mod

    cfg = CFG.replace('<Label value="a"/><Label value="b"/>', "".join(f'<Label value="{x}"/>' for x in labels))
    served = Served(FakeModel(), select_target(cfg, "detect"), label_map)  # type: ignore[arg-type]
    chosen = []
    real = pool_mod._strategy
    monkeypatch.setattr(pool_mod, "_strategy", lambda pool, s, sv: chosen.append(real(pool, s, sv).name) or real(pool, s, sv))
    outputs = {i: det([[0.6, 0.4]], [[0, 0, 10, 10]], [float(i), 1.0, 0.0]) for i in range(1, 6)}
    tasks = [{"id": i, "data": {}, "annotations": []} for i in outputs]
    pooled = score_tasks(tasks, served, FakePredictor(outputs), settings(AL_STRATEGY=strategy, AL_COLD_START_STRATEGY="typical"))  # type: ignore[arg-type]
    assert chosen == [used] and len(pooled.scores) == 5
    assert all(p["result"] == [] for p in pooled.predictions) == (not label_map)  # nothing known: nothing shown


def test_tta_uncertainty_is_the_disagreement_the_predictor_measured() -> None:
    outputs = {1: det([[0.9, 0.1]], [[0, 0, 10, 10]], [1, 0, 0]), 2: det([[0.9, 0.1]], [[0, 0, 10, 10]], [0, 1, 0])}
    outputs[1].tta_disagreement, outputs[2].tta_disagreement = 0.25, 0.75
    predictor = FakePredictor(outputs)
    tasks = [{"id": i, "data": {}, "annotations": []} for i in outputs]
    pooled = score_tasks(tasks, SERVED, predictor, settings(UNCERTAINTY_MEASURE="tta"))  # type: ignore[arg-type]
    assert [x.uncertainty for x in pooled.scores] == pytest.approx([0.25, 0.75])


def test_score_columns_keep_the_task_data_and_skip_unchanged() -> None:
    tasks, predictor = _pool()
    pooled = score_tasks(tasks, SERVED, predictor, settings())  # type: ignore[arg-type]
    cols = score_columns(tasks, pooled.scores)
    assert set(cols) == {1, 2, 3, 5}
    assert cols[2] == {
        "image": "/data/upload/2.jpg",
        "al_priority": 0.4,
        "al_uncertainty": 0.4,
        "al_diversity": cols[2]["al_diversity"],
        "al_difficulty": "medium",
    }
    tasks_after = [dict(t, data=cols.get(t["id"], t["data"])) for t in tasks]
    assert score_columns(tasks_after, pooled.scores) == {}


def test_score_store_round_trip(tmp_path) -> None:
    tasks, predictor = _pool()
    pooled = score_tasks(tasks, SERVED, predictor, settings())  # type: ignore[arg-type]
    store = ScoreStore(StatePaths(tmp_path))
    assert store.load(7) is None
    store.save(7, pooled.scores)
    assert store.load(7) == json.loads(json.dumps([s.__dict__ for s in pooled.scores]))
    assert not list((tmp_path / "scores").glob(".tmp-*"))


def mean_color_embedder(images):
    """A stand-in user embedder: mean colour per image."""
    return np.stack([im.reshape(-1, 3).mean(axis=0) for im in images])


def test_a_pluggable_embedder_replaces_the_model_features(tmp_path, tiny_weights) -> None:
    from ml_backend.inference.predictor import Predictor, make_fetcher, make_holder

    s = Settings.from_env(
        {
            "MODEL_PATH": str(tiny_weights("detect")),
            "MODEL_DIR": str(tmp_path),
            "EMBEDDER": "tests.scoring.test_pool:mean_color_embedder",
            "IMGSZ": "64",
        }
    )
    predictor = Predictor(s, make_holder(s), make_fetcher(s, "", ""))
    red = np.zeros((40, 50, 3), np.uint8)
    red[..., 0] = 200
    predictor._load = lambda task, target, fetcher: red  # type: ignore[method-assign]
    served = predictor.serve(CFG.replace('"a"', '"circle"').replace('"b"', '"square"'))
    out = list(predictor.run([{"id": 1}], served, with_scores=True))
    assert out[0].embedding.tolist() == [200.0, 0.0, 0.0]
    plain = list(predictor.run([{"id": 1}], served))
    assert plain[0].embedding is None


@pytest.mark.parametrize(
    ("value", "fragment"), [("nocolon", "module:function"), ("tests.nope:f", "could not be loaded"), ("json:__name__", "not a function")]
)
def test_bad_embedder(tmp_path, value, fragment) -> None:
    from ml_backend.inference.predictor import load_embedder
    from ml_backend.settings import SettingsError

    if ":" not in value:
        with pytest.raises(SettingsError, match=fragment):
            Settings.from_env({"EMBEDDER": value})
    else:
        with pytest.raises(ValueError, match=fragment):
            load_embedder(value)


class RecordingClient:
    def __init__(self):
        self.calls = []

    def create_predictions(self, preds):
        self.calls.append(("each", len(preds)))

    def import_predictions(self, pid, preds):
        self.calls.append(("bulk", len(preds)))


@pytest.mark.parametrize(
    ("clusters", "push_max", "n", "expected"),
    [("8", "2000", 10, "each"), ("8", "2000", 2001, "bulk"), ("1", "2000", 10, "bulk"), ("8", "0", 1, "bulk")],
)
def test_push_keeps_clusters_only_where_affordable(clusters, push_max, n, expected) -> None:
    from ml_backend.scoring.publish import push_predictions

    client = RecordingClient()
    s = Settings.from_env({"AL_CLUSTERS": clusters, "AL_CLUSTER_PUSH_MAX": push_max})
    assert push_predictions(client, 1, [{}] * n, s) == expected
    assert client.calls == [(expected, n)]


def test_marking_tasks_labeled_updates_scores_and_diversity_without_a_model_pass(tmp_path) -> None:
    tasks, predictor = _pool()
    pooled = score_tasks(tasks, SERVED, predictor, settings())  # type: ignore[arg-type]
    store = ScoreStore(StatePaths(tmp_path))
    store.save(7, pooled.scores, pooled)
    before = {s["task"]: s for s in store.load(7)}
    assert not before[2]["labeled"] and before[2]["diversity"] > 0
    changed = store.mark_labeled(7, {2: True})
    after = {s["task"]: s for s in store.load(7)}
    assert [c["task"] for c in changed] == [2]
    assert after[2]["labeled"] and after[2]["priority"] == 0.0 and after[2]["diversity"] == pytest.approx(0.0)
    # task 5's embedding is nearer task 2's than task 1's: its distance to the labeled set shrank
    assert after[5]["diversity"] < before[5]["diversity"]
    assert after[1]["diversity"] == pytest.approx(0.0) and store.load_state(7)["labeled"].sum() == 2


def test_refresh_labels_reads_the_tasks_back_and_rewrites_their_columns(tmp_path) -> None:
    from ml_backend.scoring.publish import refresh_labels

    tasks, predictor = _pool()
    pooled = score_tasks(tasks, SERVED, predictor, settings())  # type: ignore[arg-type]
    store = ScoreStore(StatePaths(tmp_path))
    store.save(7, pooled.scores, pooled)

    class Client:
        updates: dict = {}

        def tasks_as_stored(self, project_id, task_ids):  # noqa: ANN001, ANN202
            return {
                t: {"id": t, "data": {"image": f"s3://bucket/{t}.jpg"}, "annotations": [{"result": []}] if t == 3 else []}
                for t in task_ids
                if project_id in (7, 8)
            }

        def update_task_data(self, updates, workers=4):  # noqa: ANN001, ANN202
            self.updates = updates

    client = Client()
    assert refresh_labels(client, 7, [3], store) == 1  # type: ignore[arg-type]
    assert client.updates[3]["al_priority"] == 0.0 and client.updates[3]["image"] == "s3://bucket/3.jpg"
    assert {s["task"]: s["labeled"] for s in store.load(7)}[3] is True
    assert refresh_labels(client, 8, [3], store) == 0  # a project never scored: nothing to follow yet


@pytest.mark.parametrize(
    ("keypoint_conf", "expected"),
    [
        ([[1.0, 1.0]], (0.1 + 0.0) / 2),  # sure of every keypoint: half the class's uncertainty
        ([[0.5, 0.5]], (0.1 + 1.0) / 2),  # is any keypoint there? as unsure as can be
        ([[0.5, 1.0]], (0.1 + 0.5) / 2),
    ],
)
def test_a_pose_objects_uncertainty_averages_its_class_and_its_keypoints(keypoint_conf, expected) -> None:
    pred = det([[0.9, 0.1]], [[0, 0, 10, 10]], [1, 0])
    pred.keypoint_conf = np.array(keypoint_conf)
    assert image_scores(pred, settings(), 2)[0] == pytest.approx(expected, abs=1e-6)


class Fill:
    """What :class:`ml_backend.inference.predictor.Fill` holds that scoring reads: a second control, its classifier."""

    def __init__(self):
        cfg = '<View><Image name="image" value="$image"/><Choices name="scene" toName="image"><Choice value="x"/><Choice value="y"/></Choices></View>'
        self.model = FakeModel()
        self.target = select_target(cfg, "classify")
        self.label_map = {0: "x", 1: "y"}
        self.display = Display(0.0)
        self.keypoint_labels = {}


def test_a_task_is_as_uncertain_as_its_most_uncertain_control() -> None:
    """Task 2's boxes are sure, its classifier is torn: the task ranks first; both controls' regions are published."""
    outputs = {1: det([[0.6, 0.4]], [[0, 0, 10, 10]], [1, 0]), 2: det([[0.95, 0.05]], [[0, 0, 10, 10]], [0, 1])}
    choices = {1: np.array([0.9, 0.1]), 2: np.array([0.55, 0.45])}

    class WithFills(FakePredictor):
        def fill_outputs(self, tasks, served):
            return [[ImagePrediction(10, 10, probs=choices[t["id"]])] for t in tasks]

    served = Served(FakeModel(), SERVED.target, SERVED.label_map, display=Display(0.5), extras=(Fill(),))  # type: ignore[arg-type]
    tasks = [{"id": i, "data": {"image": f"/u/{i}.jpg"}, "annotations": []} for i in outputs]
    pooled = score_tasks(tasks, served, WithFills(outputs), settings())  # type: ignore[arg-type]
    by = {s.task: s.uncertainty for s in pooled.scores}
    assert by == pytest.approx({1: max(0.4, 0.1), 2: max(0.05, 0.45)})  # least confidence of each control, the larger
    assert [s.task for s in sorted(pooled.scores, key=lambda s: -s.priority)] == [2, 1]
    for p in pooled.predictions:
        assert [r["from_name"] for r in p["result"]] == ["label", "scene"]
