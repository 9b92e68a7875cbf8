"""One training run with real Ultralytics on tiny weights; Label Studio's API is a fixed fake here
(the end-to-end tests use the real one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ml_backend.al.effort import DEFAULT_COSTS, price
from ml_backend.inference.display import GRID, Display, choose_display, corrections_under, cross_fitted_corrections
from ml_backend.settings import Settings
from ml_backend.tools.synthetic import ls_box_result, make_image
from ml_backend.training.dataset import split_of
from ml_backend.training.evaluate import heldout_detections
from ml_backend.training.promotion import decide
from ml_backend.training.run import TrainingError, TrainRequest, recipe, time_budget, train_project, training_epochs

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="Round" predicted_values="circle"/><Label value="square"/><Label value="triangle"/>'
    "</RectangleLabels></View>"
)
LABELS = {0: "Round", 1: "square", 2: "triangle"}


@pytest.mark.parametrize(
    ("old", "new", "policy", "served"),
    [
        (0.50, 0.55, "if_better", True),
        (0.50, 0.50, "if_better", True),  # not worse: the new model has seen more labels
        (0.50, 0.49, "if_better", False),
        (0.50, 0.10, "always", True),
        (0.0, 0.0, "if_better", False),  # a tie at zero shows nothing
        (0.0, 0.01, "if_better", True),
    ],
)
def test_decide(old: float, new: float, policy: str, served: bool) -> None:
    ok, why = decide({"metric": "mAP50-95", "primary": old}, {"metric": "mAP50-95", "primary": new}, policy)
    assert ok is served
    assert (f"{new:.4f}" in why and f"{old:.4f}" in why) or "both score" in why


class FakeClient:
    """Label Studio's two read calls a run makes, answered from memory."""

    def __init__(self, tasks: list[dict]):
        self.tasks = tasks

    def get_project(self, project_id: int) -> dict:
        return {"id": project_id, "label_config": CONFIG}

    def list_tasks(self, project_id: int) -> list[dict]:
        return self.tasks


def labeled_tasks(ids: list[int], size: int = 64) -> tuple[list[dict], dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    tasks, images = [], {}
    for tid in ids:
        s = make_image(rng, size, size)
        uri = f"/data/upload/1/{tid}.jpg"
        images[uri] = np.asarray(s.image)
        ann = {"id": tid * 10, "result": ls_box_result(s, LABELS), "was_cancelled": False, "updated_at": "2026-11-21T10:00:00Z"}
        tasks.append({"id": tid, "data": {"image": uri}, "annotations": [ann]})
    return tasks, images


def settings_for(tmp_path, **env) -> Settings:
    return Settings.from_env(
        {
            "MODEL_DIR": str(tmp_path / "state"),
            "TRAIN_EPOCHS": "2",
            "TRAIN_IMGSZ": "64",
            "TRAIN_BATCH": "8",
            "DEVICE": "cpu",
            "TRAIN_VAL_FRACTION": "0.25",
            **env,
        }
    )


def test_a_run_fine_tunes_the_model_and_judges_it_on_held_out_labels(tmp_path, tiny_weights) -> None:
    tasks, images = labeled_tasks(list(range(1, 25)))
    tasks[0]["annotations"][0]["was_cancelled"] = True  # a skipped task is left out
    tasks.append({"id": 99, "data": {"image": "/data/upload/1/99.jpg"}, "annotations": []})  # unlabeled
    tasks.append({"id": 98, "data": {"image": "/broken.jpg"}, "annotations": tasks[1]["annotations"]})
    extra = dict(tasks[2]["annotations"][0]["result"][0])
    extra["value"] = {**extra["value"], "rectanglelabels": ["Hexagon"]}  # a label the model has no class for
    tasks[2]["annotations"][0]["result"].append(extra)

    def load(uri, task_id):
        if uri not in images:
            raise ValueError(f"cannot decode {uri}")
        return images[uri]

    stages = []
    req = TrainRequest(5, str(tiny_weights("detect")), "detect-base", str(tmp_path / "run"), "test")
    out = train_project(req, settings_for(tmp_path), FakeClient(tasks), load, lambda stage, **kw: stages.append((stage, kw)))

    assert out.status == "trained" and out.project_id == 5 and out.base_version == "detect-base"
    labeled = [t for t in range(2, 25)]  # task 1 was skipped, 98 has a broken image, 99 no labels
    expected_val = sum(split_of(t, 0.25) == "val" for t in labeled)
    assert out.dataset["val"] == expected_val > 0
    assert out.dataset["train"] == len(labeled) - expected_val
    assert "98" in out.dataset["skipped"] and "cannot decode" in out.dataset["skipped"]["98"]
    assert out.dataset["unknown_labels"] == {"Hexagon": 1}
    for metrics in (out.metrics_old, out.metrics_new):
        assert metrics["metric"] == "mAP50-95" and 0.0 <= metrics["primary"] <= 1.0
        assert metrics["primary"] == metrics["map50_95"] and 0.0 <= metrics["map50"] <= 1.0
        assert set(metrics["per_class"]) <= {"Round", "square", "triangle"}
        # correcting this model's pre-annotations on the held-out tasks, against drawing their every box
        cost = metrics["annotation"]
        counts = cost["counts"]
        assert counts["images"] == expected_val and counts["gt_boxes"] > 0
        matched = counts["gt_boxes"] - counts["drawn"]  # every true box is drawn or matched to a shown one
        assert counts["accepted"] + counts["class_changed"] <= matched <= counts["accepted"] + counts["class_changed"] + counts["adjusted"]
        assert cost["scratch_seconds"] == pytest.approx(2.0 * counts["images"] + 7.0 * counts["gt_boxes"], abs=0.05)
        assert cost["speedup"] == pytest.approx(cost["scratch_seconds"] / cost["seconds"], abs=0.01)
    assert out.promote == (out.judgement["rule"] in ("too_few_heldout", "bootstrap", "labeled_floor") and out.judgement["promote"])
    # What the new model will show (SCORE_THRESHOLD empty): per class, chosen on the held-out tasks,
    # its speed-up priced cross-fitted (each held-out task under a rule chosen on the others).
    shown = out.metrics_new["display"]
    assert shown["default"] == 0.25 and set(shown["thresholds"]) <= {"Round", "square", "triangle"}
    assert all(t in GRID for t in shown["thresholds"].values()) and isinstance(shown["merge_classes"], bool)
    # Kept only when it saves seconds on held-out tasks it was not chosen on; else 0.25 for every class.
    detections = heldout_detections(out.weights, tmp_path / "run" / "dataset", settings_for(tmp_path))
    learned, honest = choose_display(detections, DEFAULT_COSTS), cross_fitted_corrections(detections, DEFAULT_COSTS)
    one = corrections_under(detections, Display())
    kept = learned != Display() and DEFAULT_COSTS.seconds(honest) < DEFAULT_COSTS.seconds(one)
    assert shown == (learned if kept else Display()).to_json(dict(enumerate(["Round", "square", "triangle"])))
    assert out.metrics_new["annotation"] == price(honest if kept else one, DEFAULT_COSTS)
    from ultralytics import YOLO

    trained = YOLO(out.weights)
    assert dict(trained.names) == {0: "Round", 1: "square", 2: "triangle"}  # the project's labels are its classes
    assert out.dataset["classes"] == {
        "classes": ["Round", "square", "triangle"], "new": [],
        "from_starting_model": {"Round": "circle", "square": "square", "triangle": "triangle"},
    }  # fmt: skip
    assert [s for s, _ in stages][:2] == ["fetching labels", "writing dataset"]
    epochs = [kw["epoch"] for s, kw in stages if s == "training"]
    assert epochs == [0, 1, 2] and stages[-1][0] == "evaluating"
    # Label lines: "Round" (its head row from "circle", through predicted_values) is class 0.
    label_text = "".join(p.read_text() for p in (tmp_path / "run" / "dataset" / "labels").rglob("*.txt"))
    assert {line.split()[0] for line in label_text.splitlines()} <= {"0", "1", "2"}
    assert any(line.startswith("0 ") for line in label_text.splitlines())


def test_without_held_out_labels_the_run_is_skipped_and_says_why(tmp_path, tiny_weights) -> None:
    ids = [t for t in range(1, 200) if split_of(t, 0.25) == "train"][:1]  # one labeled task: nothing to hold out
    tasks, images = labeled_tasks(ids)
    req = TrainRequest(5, str(tiny_weights("detect")), "v0", str(tmp_path / "run"))
    out = train_project(req, settings_for(tmp_path), FakeClient(tasks), lambda uri, tid: images[uri])
    assert out.status == "skipped" and out.weights is None and not out.promote
    assert "no held-out labels" in out.decision and "TRAIN_VAL_FRACTION" in out.decision


def test_nothing_labeled_is_skipped(tmp_path, tiny_weights) -> None:
    req = TrainRequest(5, str(tiny_weights("detect")), "v0", str(tmp_path / "run"))
    out = train_project(req, settings_for(tmp_path), FakeClient([{"id": 1, "data": {"image": "x"}, "annotations": []}]), lambda u, t: None)
    assert out.status == "skipped" and "label some tasks" in out.decision


def test_exported_weights_cannot_be_fine_tuned(tmp_path) -> None:
    req = TrainRequest(5, str(tmp_path / "model.onnx"), "v0", str(tmp_path / "run"))
    with pytest.raises(TrainingError, match="exported models cannot be fine-tuned"):
        train_project(req, settings_for(tmp_path), FakeClient([]), lambda u, t: None)


def _region(kind: str, s, sh, rename: dict[str, str]) -> dict:
    w, h = s.image.size
    name = rename[("circle", "square", "triangle")[sh.cls]]
    base = {"from_name": "label", "to_name": "image", "original_width": w, "original_height": h}
    if kind == "segment":
        pts = [[100 * x / w, 100 * y / h] for x, y in sh.polygon]
        return {**base, "type": "polygonlabels", "value": {"points": pts, "polygonlabels": [name]}}
    x1, y1, x2, y2 = sh.xyxy
    value = {"x": 100 * x1 / w, "y": 100 * y1 / h, "width": 100 * (x2 - x1) / w, "height": 100 * (y2 - y1) / h, "rotation": 0}
    return {**base, "type": "rectanglelabels", "value": {**value, "rectanglelabels": [name]}}


KIND_CONFIGS = {
    "segment": (
        '<View><Image name="image" value="$image"/><PolygonLabels name="label" toName="image">'
        '<Label value="circle"/><Label value="square"/><Label value="triangle"/></PolygonLabels></View>'
    ),
    "obb": (
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
        '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels></View>'
    ),
    "classify": (
        '<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
        '<Choice value="circle"/><Choice value="square"/><Choice value="triangle"/></Choices></View>'
    ),
}


METRICS = {"detect": "mAP50-95", "segment": "mask mAP50-95", "obb": "mAP50-95", "classify": "top1"}
NEW_NAMES = {"circle": "ring", "square": "box", "triangle": "wedge"}  # a project's own classes, none of them the model's


@pytest.mark.parametrize(("kind", "renamed"), [("segment", False), ("obb", False), ("classify", False)] + [(k, True) for k in METRICS])
def test_every_model_task_fine_tunes_and_is_judged(tmp_path, tiny_weights, kind, renamed) -> None:
    """Each model task trains on labels the model knows, and on a project's own labels (a new head)."""
    rename = NEW_NAMES if renamed else {n: n for n in NEW_NAMES}
    rng = np.random.default_rng(9)
    tasks, images = [], {}
    for tid in range(1, 17):
        s = make_image(rng, 64, 64, max_objects=1 if kind == "classify" else 3)
        uri = f"/data/upload/1/{tid}.jpg"
        images[uri] = np.asarray(s.image)
        if kind == "classify":
            result = [
                {
                    "from_name": "label",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [rename[("circle", "square", "triangle")[s.shapes[0].cls]]]},
                }
            ]
        else:
            result = [_region(kind, s, sh, rename) for sh in s.shapes]
        tasks.append({"id": tid, "data": {"image": uri}, "annotations": [{"id": tid, "result": result, "was_cancelled": False}]})
    config = KIND_CONFIGS.get(kind, CONFIG.replace('<Label value="Round" predicted_values="circle"/>', '<Label value="circle"/>'))
    for old, new in rename.items():
        config = config.replace(f'value="{old}"', f'value="{new}"')

    class Client(FakeClient):
        def get_project(self, project_id: int) -> dict:
            return {"id": project_id, "label_config": config}

    req = TrainRequest(2, str(tiny_weights(kind)), "v0", str(tmp_path / "run"))
    out = train_project(req, settings_for(tmp_path, TRAIN_EPOCHS="1"), Client(tasks), lambda uri, tid: images[uri])
    assert out.status == "trained" and out.dataset["train"] + out.dataset["val"] == 16 and out.dataset["val"] > 0
    labels = sorted(rename.values()) if kind == "classify" else list(rename.values())
    assert out.dataset["classes"]["classes"] == labels and out.dataset["classes"]["new"] == (labels if renamed else [])
    for metrics in (out.metrics_old, out.metrics_new):
        assert metrics["metric"] == METRICS[kind] and 0.0 <= metrics["primary"] <= 1.0
        if kind == "classify":
            assert metrics["primary"] == metrics["top1"] and 0.0 <= metrics["top5"] <= 1.0
        else:
            assert metrics["primary"] == metrics["map50_95"] and set(metrics["per_class"]) <= set(labels)
        if kind == "segment":
            assert 0.0 <= metrics["box_map50_95"] <= 1.0
    if renamed:  # the served model knows none of these labels: it finds nothing of them
        assert out.metrics_old["primary"] == 0.0
    from ultralytics import YOLO

    trained = YOLO(out.weights)
    assert trained.task == kind and dict(trained.names) == dict(enumerate(labels))


@pytest.mark.parametrize(
    ("steps", "epochs", "batch", "n_train", "expected"),
    [
        (100, 0, 8, 20, 34),
        (100, 0, 8, 200, 4),
        (10, 0, 8, 8, 10),
        (1, 0, 16, 500, 1),
        (64, 0, 16, 16, 64),
        (300, 0, -1, 40, 100),
        (100, 7, 8, 20, 7),
    ],
)
def test_the_budget_rule_gives_small_label_sets_more_epochs(steps: int, epochs: int, batch: int, n_train: int, expected: int) -> None:
    """TRAIN_STEPS optimizer steps (TRAIN_EPOCHS, when set, wins); the server and the study both train by this rule."""
    assert training_epochs(n_train, Settings(train_steps=steps, train_epochs=epochs, train_batch=batch)) == expected


def test_the_server_trains_with_the_budget_rule(tmp_path, tiny_weights, monkeypatch) -> None:
    """A retraining run takes its epochs from training_epochs (the study's test checks its side)."""
    import ml_backend.training.run as run

    seen: list[int] = []
    real = run.training_epochs
    monkeypatch.setattr(run, "training_epochs", lambda n, s: seen.append(n) or real(n, s))
    tasks, images = labeled_tasks(list(range(1, 13)))
    settings = settings_for(tmp_path, TRAIN_EPOCHS="0", TRAIN_STEPS="3", TRAIN_BATCH="8")
    req = TrainRequest(1, str(tiny_weights("detect")), "v0", str(tmp_path / "run"))
    out = train_project(req, settings, FakeClient(tasks), lambda uri, tid: images[uri])
    assert seen == [out.dataset["train"]] and out.epochs == real(out.dataset["train"], settings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"freeze": None, "warmup_epochs": 0.0}),
        ({"TRAIN_WARMUP_EPOCHS": ""}, {"freeze": None}),  # Ultralytics' own warm-up
        ({"TRAIN_FREEZE": "10", "TRAIN_WARMUP_EPOCHS": "1"}, {"freeze": 10, "warmup_epochs": 1.0}),
        (
            {"TRAIN_LR0": "0.002"},
            {"freeze": None, "warmup_epochs": 0.0, "optimizer": "AdamW", "lr0": 0.002, "momentum": 0.9, "warmup_bias_lr": 0.0},
        ),  # Ultralytics' own short-run choice, only the rate changed
    ],
)
def test_the_recipe_passes_only_what_is_set(env: dict[str, str], expected: dict) -> None:
    """Empty settings leave Ultralytics' defaults; a learning rate comes with an optimizer (auto ignores lr0)."""
    assert recipe(Settings.from_env(env)) == expected


@pytest.mark.parametrize("bad", ["0", "fast", "2"])
def test_a_bad_learning_rate_says_what_to_fix(bad: str) -> None:
    from ml_backend.settings import SettingsError

    with pytest.raises(SettingsError, match="TRAIN_LR0.*empty or a learning rate"):
        Settings.from_env({"TRAIN_LR0": bad})


def test_the_run_trains_with_the_recipe(tmp_path, tiny_weights) -> None:
    """The weights a run writes were trained with the recipe's optimizer, learning rate and frozen layers."""
    import torch

    tasks, images = labeled_tasks(list(range(1, 13)))
    settings = settings_for(tmp_path, TRAIN_EPOCHS="1", TRAIN_LR0="0.005", TRAIN_FREEZE="2")
    req = TrainRequest(1, str(tiny_weights("detect")), "v0", str(tmp_path / "run"))
    out = train_project(req, settings, FakeClient(tasks), lambda uri, tid: images[uri])
    args = torch.load(out.weights, map_location="cpu", weights_only=False)["train_args"]
    assert (args["optimizer"], args["lr0"], args["momentum"], args["freeze"], args["warmup_epochs"]) == ("AdamW", 0.005, 0.9, 2, 0.0)


def test_a_first_model_the_held_out_images_cannot_judge_is_judged_on_every_labeled_image(tmp_path, tiny_weights, monkeypatch) -> None:
    """A new project's first model, where the held-out images show nothing for either model: the
    labeled images decide (here, made so: the new model finds every object on the training images)."""
    from pathlib import Path

    import ml_backend.training.evaluate as evaluate_mod
    import ml_backend.training.run as run_mod
    from ml_backend.training.evaluate import Detections

    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    none = np.zeros((0, 4))
    hit = Detections(box, np.array([0]), box, np.array([0]), np.array([0.9]))
    miss = Detections(box, np.array([0]), none, np.zeros(0, dtype=int), np.zeros(0))
    looked: list[tuple[str, str]] = []

    def detections(weights, root, settings, split="val"):  # noqa: ANN001, ANN202
        looked.append((Path(weights).name, split))
        found = split == "train" and Path(weights).name == "project5.pt"
        return [hit if found else miss] * len(list((root / "images" / split).glob("*.jpg")))

    monkeypatch.setattr(run_mod, "heldout_detections", detections)
    monkeypatch.setattr(evaluate_mod, "heldout_detections", detections)
    own = {0: "ring", 1: "box", 2: "wedge"}
    rng = np.random.default_rng(3)
    tasks, images = [], {}
    for tid in range(1, 13):
        s = make_image(rng, 64, 64)
        images[f"/u/{tid}.jpg"] = np.asarray(s.image)
        tasks.append({"id": tid, "data": {"image": f"/u/{tid}.jpg"}, "annotations": [{"id": tid, "result": ls_box_result(s, own)}]})
    config = CONFIG.replace('<Label value="Round" predicted_values="circle"/><Label value="square"/><Label value="triangle"/>', "")
    config = config.replace("</RectangleLabels>", '<Label value="ring"/><Label value="box"/><Label value="wedge"/></RectangleLabels>')

    class Client(FakeClient):
        def get_project(self, project_id: int) -> dict:
            return {"id": project_id, "label_config": config}

    req = TrainRequest(5, str(tiny_weights("detect")), "v0", str(tmp_path / "run"))
    out = train_project(req, settings_for(tmp_path), Client(tasks), lambda uri, tid: images[uri])
    assert out.promote and out.judgement["rule"] == "labeled_floor" and out.judgement["new"] == pytest.approx(8 / 12), out.judgement
    assert sorted(looked) == sorted(
        [("project5.pt", "val"), ("previous.pt", "val"), ("previous.pt", "train"), ("project5.pt", "train")]
    )  # the served model is judged in the project's classes (previous.pt), the training images only once the held-out ones showed nothing
    # on the held-out tasks neither model shows anything: correcting costs what drawing costs
    assert out.metrics_new["annotation"]["speedup"] == out.metrics_old["annotation"]["speedup"] == 1.0
    assert out.metrics_new["annotation"]["counts"] == {**out.metrics_old["annotation"]["counts"], "images": 4, "gt_boxes": 4, "drawn": 4}


class _Trainer:
    """What the time-budget callback reads and sets on Ultralytics' trainer."""

    def __init__(self, epoch: int, elapsed: float, epochs: int):
        from types import SimpleNamespace

        self.epoch, self.start_epoch, self.epochs = epoch, 0, epochs
        self.train_time_start = 1000.0 - elapsed  # the clock reads 1000
        self.args = SimpleNamespace(epochs=epochs)
        self.scheduler = SimpleNamespace(last_epoch=-1)
        self.stop = False
        self.schedules = 0

    def _setup_scheduler(self) -> None:
        self.schedules += 1


@pytest.mark.parametrize(
    ("epoch", "elapsed", "planned", "budget", "epochs", "stop"),
    [
        (0, 10.0, 30, 100.0, 30, False),  # the first epoch (start-up and all) decides nothing
        (0, 120.0, 30, 100.0, 1, True),  # unless it used the budget up: the run ends with it
        (2, 30.0, 5, 100.0, 5, False),  # the planned 5 fit: untouched (the budget never lengthens a run)
        (4, 50.0, 30, 40.0, 5, True),  # already past the budget: stop after the epochs done
        (1, 30.0, 30, 100.0, 6, False),  # 15 s an epoch so far: 6 fit
    ],
)
def test_a_time_budget_gives_a_run_only_the_epochs_that_fit(epoch, elapsed, planned, budget, epochs, stop) -> None:
    trainer = _Trainer(epoch, elapsed, planned)
    time_budget(budget, clock=lambda: 1000.0)(trainer)
    assert (trainer.epochs, trainer.args.epochs, trainer.stop) == (epochs, epochs, stop)
    assert trainer.schedules == (epochs != planned) and (epochs == planned or trainer.scheduler.last_epoch == epoch)


def test_a_time_budget_judges_the_pace_without_the_first_epochs_start_up() -> None:
    """The first epoch (40 s) carries the data loaders' start-up, the later ones take 20 s: a 600 s
    budget gives the 29 epochs that end at 600 s (judged on the first alone: 15)."""
    trainer, now = _Trainer(0, 40.0, 50), [1000.0]
    check = time_budget(600.0, clock=lambda: now[0])
    seen = []
    for epoch in range(4):
        trainer.epoch, now[0] = epoch, 1000.0 + 20.0 * epoch
        check(trainer)
        seen.append((trainer.epochs, trainer.stop))
    assert seen == [(50, False), (29, False), (29, False), (29, False)]
    assert trainer.scheduler.last_epoch == 1 and trainer.schedules == 1  # set up again only when the epochs change


def test_a_time_budget_never_lengthens_a_last_epoch_nor_acts_on_the_final_evaluation() -> None:
    trainer, now = _Trainer(0, 10.0, 50), [1000.0]
    check = time_budget(100.0, clock=lambda: now[0])
    for epoch, at in [(0, 1000.0), (1, 1030.0), (2, 1060.0)]:  # epochs of 30 s after the first: 4 fit
        trainer.epoch, now[0] = epoch, at
        check(trainer)
    assert (trainer.epochs, trainer.stop, trainer.schedules) == (4, False, 1)
    trainer.epoch, now[0] = 3, 1065.0  # the last epoch took 5 s: a fifth would fit, but this one ran as the last
    check(trainer)
    assert (trainer.epochs, trainer.schedules) == (4, 1)
    trainer.epoch, now[0] = 4, 1090.0  # Ultralytics' final evaluation calls back with epoch + 1
    check(trainer)
    assert (trainer.epochs, trainer.args.epochs, trainer.schedules) == (4, 4, 1)


def test_a_run_with_a_tiny_time_budget_ends_after_its_first_epoch(tmp_path, tiny_weights) -> None:
    from ml_backend.training.run import fine_tune

    tasks, images = labeled_tasks(list(range(1, 9)))
    from ml_backend.training.dataset import write_dataset

    summary = write_dataset(
        tasks, {0: "Round", 1: "square", 2: "triangle"}, "detect", lambda t: images[t["data"]["image"]], tmp_path / "ds"
    )
    stages = []
    settings = settings_for(tmp_path, TRAIN_TIME_BUDGET="0.0001")  # 6 ms
    fine_tune(tiny_weights("detect"), summary.data, settings, tmp_path, 4, lambda stage, **kw: stages.append(kw.get("epoch")))
    assert stages == [0, 1]  # one epoch of the four planned


POSE_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels>'
    '<KeyPointLabels name="kp" toName="image"><Label value="top"/><Label value="left"/><Label value="right"/></KeyPointLabels></View>'
)
BRUSH_CONFIG = (
    '<View><Image name="image" value="$image"/><BrushLabels name="mask" toName="image">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></BrushLabels></View>'
)


def _shape_tasks(n: int, regions) -> tuple[list[dict], dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    tasks, images = [], {}
    for tid in range(1, n + 1):
        s = make_image(rng, 64, 64)
        uri = f"/data/upload/1/{tid}.jpg"
        images[uri] = np.asarray(s.image)
        tasks.append({"id": tid, "data": {"image": uri}, "annotations": [{"id": tid, "result": regions(tid, s), "was_cancelled": False}]})
    return tasks, images


def test_a_pose_run_learns_keypoints_grouped_under_their_boxes(tmp_path, tiny_weights) -> None:
    names = ("circle", "square", "triangle")

    def regions(tid, s):
        out = []
        for i, (sh, box) in enumerate(zip(s.shapes, ls_box_result(s, dict(enumerate(names)), "box"), strict=True)):
            box["id"] = f"b{i}"
            out.append(box)
            for label, (x, y) in zip(("top", "left", "right"), sh.keypoints, strict=True):
                point = {
                    "from_name": "kp",
                    "to_name": "image",
                    "type": "keypointlabels",
                    "value": {"x": x / 64 * 100, "y": y / 64 * 100, "width": 1, "keypointlabels": [label]},
                }
                if tid % 2:
                    point["parentID"] = f"b{i}"  # accepted from a prediction; the others by their box
                out.append(point)
        return out

    tasks, images = _shape_tasks(16, regions)
    client = FakeClient(tasks)
    client.get_project = lambda project_id: {"id": project_id, "label_config": POSE_CONFIG}  # type: ignore[method-assign]
    req = TrainRequest(5, str(tiny_weights("pose")), "pose-base", str(tmp_path / "run"))
    out = train_project(req, settings_for(tmp_path, TRAIN_EPOCHS="1"), client, lambda uri, tid: images[uri])
    assert out.status == "trained" and out.metrics_new["metric"] == "pose mAP50-95" and "box_map50_95" in out.metrics_new
    lines = [line.split() for p in (tmp_path / "run" / "dataset" / "labels").rglob("*.txt") for line in p.read_text().splitlines()]
    assert len(lines) == sum(len(t["annotations"][0]["result"]) // 4 for t in tasks)  # every object, with its three keypoints
    assert all(len(line) == 5 + 3 * 3 and line[7] == line[10] == line[13] == "2" for line in lines)
    from ultralytics import YOLO

    from ml_backend.inference.model import pose_layout

    assert pose_layout(YOLO(out.weights)) == ({c: ["top", "left", "right"] for c in range(3)}, 3)


def test_a_segment_run_learns_from_brush_masks(tmp_path, tiny_weights) -> None:
    from ml_backend.inference.ls_results import brush_rle

    def regions(tid, s):
        return [
            {"from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": 64, "original_height": 64,
             "value": {"format": "rle", "rle": brush_rle(sh.polygon, 64, 64), "brushlabels": [("circle", "square", "triangle")[sh.cls]]}}
            for sh in s.shapes
        ]  # fmt: skip

    tasks, images = _shape_tasks(12, regions)
    client = FakeClient(tasks)
    client.get_project = lambda project_id: {"id": project_id, "label_config": BRUSH_CONFIG}  # type: ignore[method-assign]
    req = TrainRequest(5, str(tiny_weights("segment")), "seg-base", str(tmp_path / "run"))
    out = train_project(req, settings_for(tmp_path, TRAIN_EPOCHS="1"), client, lambda uri, tid: images[uri])
    assert out.status == "trained" and out.metrics_new["metric"] == "mask mAP50-95"
    lines = [line.split() for p in (tmp_path / "run" / "dataset" / "labels").rglob("*.txt") for line in p.read_text().splitlines()]
    assert len(lines) == sum(len(t["annotations"][0]["result"]) for t in tasks)
    assert all(len(line) >= 1 + 2 * 3 and len(line) % 2 == 1 for line in lines)  # a class and at least three points


def test_a_control_with_a_model_of_its_own_is_trained_on_its_own_labels(tmp_path, tiny_weights) -> None:
    """Boxes train the project's model, the image-level choice trains the classifier its model_path names."""
    import shutil

    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_weights("classify"), root / "scenes.pt")
    config = CONFIG.replace(
        "</View>",
        '<Choices name="scene" toName="image" model_path="scenes.pt"><Choice value="circle"/><Choice value="square"/>'
        '<Choice value="triangle"/></Choices><Choices name="broken" toName="image" model_path="gone.pt"><Choice value="x"/></Choices></View>',
    )
    tasks, images = labeled_tasks(list(range(1, 17)))
    for t in tasks:  # the shape of the first box, as the image's class
        first = t["annotations"][0]["result"][0]["value"]["rectanglelabels"][0]
        t["annotations"][0]["result"].append(
            {"from_name": "scene", "to_name": "image", "type": "choices", "value": {"choices": [first.replace("Round", "circle")]}}
        )
    client = FakeClient(tasks)
    client.get_project = lambda project_id: {"id": project_id, "label_config": config}  # type: ignore[method-assign]
    req = TrainRequest(5, str(tiny_weights("detect")), "detect-base", str(tmp_path / "run"))
    out = train_project(req, settings_for(tmp_path, TRAIN_EPOCHS="1", MODEL_ROOT=str(root)), client, lambda uri, tid: images[uri])
    assert out.status == "trained" and out.metrics_new["metric"] == "mAP50-95"  # the project's model, on the boxes
    scene = out.controls["scene"]
    assert scene["status"] == "trained" and scene["model_path"] == "scenes.pt" and scene["metrics_new"]["metric"] == "top1"
    assert scene["base_version"].startswith("scenes-") and scene["weights"].endswith(".pt") and isinstance(scene["promote"], bool)
    assert scene["dataset"]["train"] + scene["dataset"]["val"] == 16
    class_dirs = sorted(p.name for p in (tmp_path / "run" / "controls").glob("*/dataset/*/*") if any(p.iterdir()))
    assert set(class_dirs) <= {"circle", "square", "triangle"} and class_dirs
    # The next run starts the control from its served version, whatever MODEL_ROOT holds (a worker's may differ).
    served = {"scene": {"weights": scene["weights"], "version": "scene-v7", "model_path": "scenes.pt"}}
    again = train_project(
        dataclasses.replace(req, workdir=str(tmp_path / "run2"), controls=served),
        settings_for(tmp_path, TRAIN_EPOCHS="1", MODEL_ROOT=str(tmp_path / "elsewhere")), client, lambda uri, tid: images[uri],
    )  # fmt: skip
    assert again.controls["scene"]["base_version"] == "scene-v7" and again.controls["scene"]["status"] == "trained"
    # Too little of TRAIN_TIMEOUT left after the project's model: the control waits for the next run.
    import time

    from ml_backend.training.run import train_controls

    late = train_controls(
        req,
        settings_for(tmp_path, MODEL_ROOT=str(root)),
        config,
        "detect",
        tasks,
        lambda u, t: images[u],
        lambda *a, **k: None,
        time.monotonic() - 1,
    )
    assert late["scene"]["status"] == "skipped" and "TRAIN_TIMEOUT" in late["scene"]["decision"]
    # A control whose weights are gone says so; the run and the other control are not affected.
    assert out.controls["broken"]["status"] == "failed" and 'model_path="gone.pt"' in out.controls["broken"]["decision"]
