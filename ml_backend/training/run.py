"""One training run: a project's labels from Label Studio -> a fine-tuned model, judged against the current one.

This is the work itself, run in a process of its own (a child of the server, or an RQ worker:
see :mod:`ml_backend.jobs.runners`); it never touches the served model. Steps:

1. all current annotations of the project come from Label Studio's API (not webhook payloads);
2. they become an Ultralytics dataset (:func:`ml_backend.training.dataset.write_dataset`): boxes,
   polygons, oriented boxes or classes, skipped annotations left out, a train/val split by
   task id, images from the backend's image cache;
3. Ultralytics fine-tunes the current model (``TRAIN_STEPS`` or ``TRAIN_EPOCHS``, ``TRAIN_IMGSZ``, ``TRAIN_BATCH``,
   ``DEVICE``); nothing of its training loop is rewritten;
4. the old and the new model are evaluated on the same held-out tasks
   (:func:`ml_backend.training.evaluate.evaluate`: mAP50-95, mAP50 and AP per class; top-1 and
   top-5 for classifiers), and :func:`ml_backend.training.promotion.decide` says whether the new
   one should be served (``PROMOTION``).

The caller stores and promotes the new weights (:mod:`ml_backend.jobs.training_jobs`).

Example:
    >>> req = TrainRequest(12, "/models/base.pt", "base-1a2b", "/tmp/run", "20 new labels")
    >>> TrainRequest.from_json(req.to_json()) == req
    True
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from integrations.label_studio import LabelStudioAPI
from ml_backend.faults import slow_train
from ml_backend.inference.display import Display
from ml_backend.inference.label_config import LabelConfigError, Target, keypoint_map, plan_targets, select_target
from ml_backend.inference.model import file_digest, pose_layout
from ml_backend.inference.predictor import task_image_uri
from ml_backend.settings import Settings
from ml_backend.training.dataset import PoseLayout, current_annotation, dataloader_workers, split_score, unknown_labels, write_dataset
from ml_backend.training.evaluate import (
    annotation_cost,
    chosen_display,
    evaluate,
    heldout_detections,
    heldout_images,
    heldout_records,
    nothing_found,
)
from ml_backend.training.heads import ClassPlan, HeadError, plan_classes, write_with_classes
from ml_backend.training.metrics import ImageRecord
from ml_backend.training.promotion import Judgement, cost_floor, decide, judge, labeled_floor
from ml_backend.training.pseudo_labels import add_pseudo_labels, calibrate_thresholds

log = logging.getLogger(__name__)

Progress = Callable[..., None]


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to do.

    Attributes:
        transient: Label Studio was unavailable: the run is tried again later, by itself.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class TrainRequest:
    """What one run needs; plain data, so it can cross a process or a Redis queue.

    Args:
        project_id: Label Studio project.
        base_weights: the weights to fine-tune (the project's served model), a local path.
        base_version: their model version.
        workdir: a folder for this run (dataset, Ultralytics run, new weights).
        reason: why the run was started (shown in the status).
        base_display: what the served model shows (:meth:`ml_backend.inference.display.Display.to_json`;
            empty: ``SCORE_THRESHOLD``'s default), to price its pre-annotations as served.
        controls: the project's served versions of its controls' own models (``model_path``), each
            ``{"weights", "version", "model_path"}``: a control's run starts from and is judged against it.
    """

    project_id: int
    base_weights: str
    base_version: str
    workdir: str
    reason: str = ""
    base_display: dict[str, Any] = field(default_factory=dict)
    controls: dict[str, dict[str, str]] = field(default_factory=dict)  # control -> its served version: weights, version, model_path

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainRequest:
        return cls(
            int(data["project_id"]), str(data["base_weights"]), str(data["base_version"]), str(data["workdir"]),
            str(data.get("reason", "")), dict(data.get("base_display") or {}),
            {str(k): dict(v) for k, v in (data.get("controls") or {}).items()},
        )  # fmt: skip


@dataclass
class TrainOutcome:
    """What a run produced.

    ``status`` is ``trained`` (new weights in ``weights``, judged in ``promote``/``decision``) or
    ``skipped`` (not enough labels to train or to judge; ``decision`` says what is missing).
    """

    project_id: int
    status: str
    base_version: str
    decision: str
    promote: bool = False
    weights: str | None = None
    metrics_new: dict[str, Any] = field(default_factory=dict)
    metrics_old: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0
    judgement: dict[str, Any] = field(default_factory=dict)
    controls: dict[str, dict[str, Any]] = field(default_factory=dict)  # each own-model control's run (:func:`train_controls`)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainOutcome:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def training_epochs(n_train: int, settings: Settings) -> int:
    """Epochs of a fine-tuning run on ``n_train`` images: ``TRAIN_EPOCHS`` when set, else enough
    for ``TRAIN_STEPS`` optimizer steps at ``TRAIN_BATCH``. The server's retraining and the study
    both call this, so the study measures the budget users get.

    Example:
        >>> training_epochs(20, Settings(train_steps=100, train_batch=8))
        34
        >>> training_epochs(20, Settings(train_steps=100, train_epochs=5))
        5
    """
    if settings.train_epochs:
        return settings.train_epochs
    return max(1, math.ceil(settings.train_steps / steps_per_epoch(n_train, settings)))


def steps_per_epoch(n_train: int, settings: Settings) -> int:
    """Optimizer steps in one epoch over ``n_train`` images at ``TRAIN_BATCH`` (``-1``, Ultralytics'
    automatic batch, counts as its default of 16)."""
    batch = settings.train_batch if settings.train_batch > 0 else 16
    return max(1, math.ceil(n_train / batch))


def recipe(settings: Settings) -> dict[str, Any]:
    """The fine-tuning recipe's arguments to Ultralytics' ``train`` from ``TRAIN_FREEZE``,
    ``TRAIN_WARMUP_EPOCHS`` and ``TRAIN_LR0``; what is left out keeps Ultralytics' default.

    Example:
        >>> recipe(Settings.from_env({"TRAIN_LR0": "0.002", "TRAIN_FREEZE": "10"}))
        {'freeze': 10, 'warmup_epochs': 0.0, 'optimizer': 'AdamW', 'lr0': 0.002, 'momentum': 0.9, 'warmup_bias_lr': 0.0}
    """
    out: dict[str, Any] = {"freeze": settings.train_freeze or None}
    if settings.train_warmup_epochs is not None:
        out["warmup_epochs"] = settings.train_warmup_epochs
    if settings.train_lr0 is not None:
        # Ultralytics ignores lr0 under optimizer=auto; name its short-run choice (AdamW, beta1 0.9,
        # bias warm-up from 0) so that only the rate differs from it.
        out.update(optimizer="AdamW", lr0=settings.train_lr0, momentum=0.9, warmup_bias_lr=0.0)
    return out


def fine_tune(model: Any, data: str | Path, settings: Settings, workdir: Path, epochs: int, progress: Progress | None = None) -> Path:
    """Ultralytics' training of ``model`` (a ``YOLO`` or a weights path) on ``data``: the one recipe.

    The server's retraining and the label-savings simulation both train through here:
    ``TRAIN_IMGSZ``, ``TRAIN_BATCH``, ``DEVICE`` and ``AL_SEED`` from ``settings``, Ultralytics'
    defaults for everything else, no validation during training (``val=False``: old and new are
    compared on held-out labels afterwards). A model whose classes differ from ``data``'s gets
    a new head (Ultralytics transfers every other layer).

    Returns:
        The trained weights (``last.pt`` of the run under ``workdir/runs/train``).

    Raises:
        TrainingError: Ultralytics finished without writing weights.
    """
    from ml_backend.inference.model import import_yolo

    report = progress or (lambda stage, **kw: None)
    if not hasattr(model, "train"):
        model = import_yolo()(str(model))

    def on_epoch_end(trainer: Any) -> None:
        losses = {}
        try:
            losses = {k.split("/")[-1]: round(float(v), 5) for k, v in trainer.label_loss_items(trainer.tloss).items()}
        except Exception:  # losses are a nicety for the status; never fail a run over them
            pass
        report("training", epoch=int(trainer.epoch) + 1, epochs=epochs, losses=losses)

    report("training", epoch=0, epochs=epochs)
    model.add_callback("on_train_epoch_end", on_epoch_end)
    if settings.train_time_budget > 0:
        model.add_callback("on_fit_epoch_end", time_budget(settings.train_time_budget * 60))
    model.train(
        **recipe(settings),
        data=str(data),
        epochs=epochs,
        imgsz=settings.train_imgsz,
        batch=settings.train_batch,
        device=settings.ultralytics_device,
        workers=dataloader_workers(),
        seed=settings.al_seed,
        deterministic=True,
        plots=False,
        val=False,  # no model selection on the held-out split: the caller judges old against new
        verbose=False,
        project=str((Path(workdir) / "runs").resolve()),
        name="train",
        exist_ok=True,
    )
    trained = Path(model.trainer.last)
    if not trained.is_file():
        raise TrainingError(f"Ultralytics finished without writing {trained}")
    return trained


def time_budget(seconds: float, clock: Callable[[], float] = time.time) -> Callable[[Any], None]:
    """An Ultralytics ``on_fit_epoch_end`` callback that ends a run in ``seconds`` (``TRAIN_TIME_BUDGET``).

    The first epoch carries the data loaders' start-up, so it decides nothing unless it alone used
    the budget up (then the run ends with it). From the second epoch on, the pace is the mean time
    of the epochs after the first, and the run is given the epochs done plus as many more as fit in
    the time left, never more than were planned, nor more once Ultralytics has begun what it took
    for the last epoch (validated and saved as final). Each change sets up the learning-rate
    schedule again to end with the new last epoch, as Ultralytics' own ``time`` mode does (which
    instead stretches a run to fill the time: here the budget only ever shortens one). A run may
    overrun its budget by at most its second epoch.
    """
    first: dict[str, float] = {}

    def check(trainer: Any) -> None:
        done = int(trainer.epoch) - int(trainer.start_epoch) + 1
        if done > int(trainer.epochs):  # Ultralytics' final evaluation calls back once more after the last epoch
            return
        elapsed = clock() - float(trainer.train_time_start)
        planned = int(first.setdefault("planned", int(trainer.epochs)))
        if done == 1:
            first["seconds"] = elapsed
            if elapsed < seconds:
                return
        later = done - 1 if "seconds" in first else 0
        pace = (elapsed - first["seconds"]) / later if later > 0 else elapsed / done
        fit = min(planned, done + int(max(seconds - elapsed, 0.0) // max(pace, 1e-9)))
        if done >= trainer.epochs:
            fit = min(fit, int(trainer.epochs))  # the last epoch is under way as the last: never lengthened now
        if fit == trainer.epochs:
            return
        log.info("TRAIN_TIME_BUDGET: %.0f s allow %d of the %d epochs planned (%.1f s an epoch)", seconds, fit, planned, pace)
        trainer.epochs = trainer.args.epochs = fit
        trainer._setup_scheduler()  # the schedule ends with the new last epoch (Ultralytics' time mode does the same)
        trainer.scheduler.last_epoch = trainer.epoch
        if done >= fit:
            trainer.stop = True

    return check


def project_start(weights: str | Path, names: dict[int, str], target: Any, kind: str, workdir: Path) -> tuple[Path, Path, ClassPlan]:
    """Where a project's run starts: (weights to fine-tune, the served model to judge against, the classes).

    When the served weights already have exactly the project's labels as classes, both are those
    weights. Otherwise (a new project from COCO weights, a label added or removed) the run starts
    from a model with a head for the project's labels (:func:`ml_backend.training.heads.write_with_classes`)
    and is judged against the served model expressed in the same labels, the ones it does not
    know never predicted: old and new are compared on the same classes.

    Raises:
        TrainingError: the weights cannot be given a head for the project's labels.
    """
    plan = plan_classes(target, names, kind)
    if plan.unchanged:
        return Path(weights), Path(weights), plan
    try:
        start = write_with_classes(weights, plan, workdir / "start.pt", fresh="learn")
        previous = write_with_classes(weights, plan, workdir / "previous.pt", fresh="never")
    except HeadError as exc:
        raise TrainingError(str(exc)) from None
    learned = ", ".join(plan.new) or "none"
    log.info("project classes %s (new: %s), starting from %s with a new head", ", ".join(plan.labels), learned, Path(weights).name)
    return start, previous, plan


@dataclass(frozen=True)
class Judged:
    """A trained detector judged against the served one on the held-out images.

    Attributes:
        verdict: whether to serve it, and why.
        records: the trained model's records of the held-out images (for calibrations).
        display: what the trained model will show (:func:`ml_backend.training.evaluate.chosen_display`).
        cost_new, cost_served: correcting each model's pre-annotations on those images (the trained
            one's by ``display``, cross-fitted; the served one's as it is served) against drawing
            every box (:func:`ml_backend.training.evaluate.annotation_cost`).
    """

    verdict: Judgement
    records: list[ImageRecord]
    display: Display
    cost_new: dict[str, Any]
    cost_served: dict[str, Any]


def judge_detector(
    served: str | Path, trained: str | Path, root: Path, n_classes: int, settings: Settings, served_display: Display | None = None
) -> Judged:
    """Whether the ``trained`` detector should be served instead of ``served`` (both in the dataset's
    classes), judged on the held-out images of the dataset at ``root`` (:func:`ml_backend.training.promotion.judge`),
    with every labeled image as a floor when those cannot judge (:func:`ml_backend.training.promotion.labeled_floor`),
    what the trained one will show, and what each model's pre-annotations save an annotator there
    (the served one's shown by ``served_display``, default ``SCORE_THRESHOLD``'s). The server's
    retraining and the study's server loop both judge here.
    """
    new = heldout_detections(trained, root, settings)
    old = heldout_detections(served, root, settings)
    new_records, old_records = [d.record(n_classes) for d in new], [d.record(n_classes) for d in old]
    verdict = judge(
        old_records, new_records, settings.promotion, settings.promotion_min_heldout, settings.promotion_margin,
        settings.promotion_confidence, seed=settings.al_seed,
    )  # fmt: skip
    if verdict.rule in ("no_evidence", "too_few_heldout"):  # the held-out images cannot judge: every labeled image as a floor
        verdict = labeled_floor(
            verdict,
            old_records + heldout_records(served, root, n_classes, settings, split="train"),
            new_records + heldout_records(trained, root, n_classes, settings, split="train"),
        )
    display, cost_new = chosen_display(new, settings)
    cost_served = annotation_cost(old, settings, served_display)
    verdict = cost_floor(verdict, float(cost_served["seconds"]), float(cost_new["seconds"]))
    return Judged(verdict, new_records, display, cost_new, cost_served)


def train_project(
    req: TrainRequest,
    settings: Settings,
    client: LabelStudioAPI,
    load_image: Callable[[str, int | None], Any],
    progress: Progress | None = None,
) -> TrainOutcome:
    """Fine-tune ``req.base_weights`` on the project's current labels and judge the result.

    Args:
        req: what to train.
        settings: training settings (``TRAIN_*``, ``DEVICE``, ``PROMOTION``).
        client: a Label Studio client (:class:`integrations.label_studio.LabelStudioClient`).
        load_image: ``(uri, task_id) -> RGB array``, e.g. an :class:`ml_backend.inference.images.ImageFetcher`'s ``load``.
        progress: called as ``progress(stage, **fields)`` as the run goes.

    Raises:
        TrainingError: the weights cannot be fine-tuned or the project does not fit the model.
    """
    from ml_backend.inference.model import import_yolo

    started = time.monotonic()
    report = progress or (lambda stage, **kw: None)
    slow_train()  # AL_SLOW_TRAIN: the tests' way to be mid-run
    workdir = Path(req.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not str(req.base_weights).endswith(".pt"):
        raise TrainingError(
            f"the served weights {req.base_weights} are not PyTorch (.pt) weights; exported models cannot be fine-tuned: set MODEL_PATH to a .pt file"
        )
    YOLO = import_yolo()
    model = YOLO(req.base_weights)
    report("fetching labels")
    project = client.get_project(req.project_id)
    target = select_target(project["label_config"], model.task)
    tasks = client.list_tasks(req.project_id)
    outcome = train_target(req, settings, model, target, tasks, load_image, report, started)
    # The controls' own models next, while TRAIN_TIMEOUT leaves time for one more run as long as this one.
    deadline = started + 0.9 * settings.train_timeout
    outcome.controls = train_controls(req, settings, project["label_config"], model.task, tasks, load_image, report, deadline, started)
    return outcome


def train_target(
    req: TrainRequest,
    settings: Settings,
    model: Any,
    target: Target,
    tasks: Sequence[Mapping[str, Any]],
    load_image: Callable[[str, int | None], Any],
    report: Progress,
    started: float,
) -> TrainOutcome:
    """Fine-tune ``model`` (Ultralytics, loaded from ``req.base_weights``) on ``target``'s labels in ``tasks`` and judge it."""
    workdir = Path(req.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kind, served_names = model.task, {int(k): str(v) for k, v in dict(model.names).items()}
    if target.video:
        why = "the project's model fills a video control: video tasks get predictions, the model is not retrained on them"
        return TrainOutcome(req.project_id, "skipped", req.base_version, why, seconds=time.monotonic() - started)
    pose: PoseLayout | None = None
    keypoint_names: list[str] = []
    classes = target
    if kind == "pose":  # the objects' classes are their boxes' labels (every class of the model without a boxes control)
        kpt_names, n_keypoints = pose_layout(model)
        ids = {label: k for k, label in keypoint_map(kpt_names, n_keypoints, target).items()}
        pose = PoseLayout(ids, n_keypoints, target.parent.from_name if target.parent else None)
        keypoint_names = next(iter(kpt_names.values()), []) or [f"kpt{k}" for k in range(n_keypoints)]
        classes = target.parent or replace(target, labels=tuple(served_names.values()), predicted_values={})
    start, previous, plan = project_start(req.base_weights, served_names, classes, kind, workdir)
    names = plan.names
    label_ids = {label: cid for cid, label in names.items()}

    report("writing dataset")
    summary = write_dataset(
        tasks,
        names,
        kind,
        lambda t: load_image(task_image_uri(t, target.value_key), t.get("id")),
        workdir / "dataset",
        from_name=target.from_name,
        val_fraction=settings.train_val_fraction,
        label_ids=label_ids,
        pose=pose,
        keypoint_names=keypoint_names,
    )
    unknown = unknown_labels(tasks, pose.keypoint_ids if pose else label_ids, target.from_name)
    dataset = {
        "train": summary.counts["train"],
        "val": summary.counts["val"],
        "skipped": {str(k): v for k, v in summary.skipped.items()},
        "classes": plan.to_json(),
    }
    if unknown:
        dataset["unknown_labels"] = unknown
        log.warning("training: regions with labels that are not in the labeling config were left out: %s", unknown)
    for tid, why in summary.skipped.items():
        log.warning("training: task %s left out: %s", tid, why)

    def skipped(why: str) -> TrainOutcome:
        return TrainOutcome(req.project_id, "skipped", req.base_version, why, dataset=dataset, seconds=time.monotonic() - started)

    if summary.counts["train"] == 0:
        return skipped("no labeled tasks to train on yet: label some tasks first")
    if summary.counts["val"] == 0:
        return skipped(
            f"no held-out labels yet: all {summary.counts['train']} labeled tasks fell in the training split "
            f"(TRAIN_VAL_FRACTION={settings.train_val_fraction}); the next run, with more labels, will have some"
        )

    n_train = summary.counts["train"]
    if settings.pseudo_labels and kind == "detect":
        report("pseudo-labeling")
        unlabeled = sorted((t for t in tasks if current_annotation(t) is None), key=lambda t: split_score(int(t["id"]), "al-pseudo-v1"))
        pseudo = add_pseudo_labels(
            summary.root, previous, names, heldout_images(summary.root), unlabeled,
            lambda t: load_image(task_image_uri(t, target.value_key), t.get("id")), n_train, settings,
        )  # fmt: skip
        dataset["pseudo"] = pseudo.to_json()
        n_train += pseudo.images
    epochs = training_epochs(n_train, settings)
    new_weights = workdir / f"project{req.project_id}.pt"
    shutil.copyfile(fine_tune(start, summary.data, settings, workdir, epochs, report), new_weights)

    report("evaluating")
    # A served model that knows none of the project's labels finds nothing of them (a classifier
    # would otherwise be scored at chance, all its classes equally silenced).
    metrics_old = evaluate(previous, summary.data, kind, settings, workdir) if plan.known else nothing_found(kind)
    metrics_new = evaluate(new_weights, summary.data, kind, settings, workdir)
    judgement: dict[str, Any] = {}
    if kind == "detect":  # a paired bootstrap over the held-out images (training.promotion)
        n_classes = len(names)
        served_display = Display.from_json(req.base_display, names) if req.base_display and settings.score_threshold is None else None
        judged = judge_detector(previous, new_weights, summary.root, n_classes, settings, served_display)
        new_records = judged.records
        promote, why, judgement = judged.verdict.promote, judged.verdict.reason, judged.verdict.to_json()
        # What the new model shows, and what each model's pre-annotations save an annotator on the
        # held-out tasks against drawing every box.
        metrics_new["display"] = judged.display.to_json(names)
        metrics_new["annotation"], metrics_old["annotation"] = judged.cost_new, judged.cost_served
        # The new model's own confidence per class that is right PSEUDO_PRECISION of the time on the
        # held-out labels: scoring marks tasks whose every box clears it as review-only (REVIEW_ONLY).
        sure = calibrate_thresholds(new_records, n_classes, settings.pseudo_precision, settings.pseudo_min_support)
        metrics_new["review_thresholds"] = {str(names[c]): (None if np.isinf(t) else float(t)) for c, t in enumerate(sure)}
    else:
        promote, why = decide(metrics_old, metrics_new, settings.promotion)
        if not promote and max(metrics_old["primary"], metrics_new["primary"]) <= 0.0:  # the held-out images show nothing
            on_old = evaluate(previous, summary.data, kind, settings, workdir, split="train") if plan.known else nothing_found(kind)
            on_new = evaluate(new_weights, summary.data, kind, settings, workdir, split="train")
            if on_old["primary"] <= 0.0 < on_new["primary"]:
                promote, why = (
                    True,
                    (
                        f"served: neither model scores on the held-out labels, but on the training labels the new model's "
                        f"{on_new['metric']} is {on_new['primary']:.4f} and the served one's 0: it has learned what the served model lacks"
                    ),
                )
    return TrainOutcome(
        req.project_id,
        "trained",
        req.base_version,
        why,
        promote,
        str(new_weights),
        metrics_new,
        metrics_old,
        dataset,
        epochs,
        time.monotonic() - started,
        judgement,
    )


def train_controls(
    req: TrainRequest,
    settings: Settings,
    label_config: str,
    model_task: str,
    tasks: Sequence[Mapping[str, Any]],
    load_image: Callable[[str, int | None], Any],
    report: Progress,
    deadline: float | None = None,
    started_all: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Fine-tune each control's own model (``model_path``) on that control's labels, as the project's
    model is on its control's: from the control's served version for this project (``req.controls``;
    else the file under ``MODEL_ROOT``), judged on the same held-out tasks. A control that cannot be
    trained says why and never fails the run; one that would likely end past ``deadline`` (a
    ``time.monotonic()``, judged by the longest run so far) is left for the next run.

    Returns:
        control name -> :meth:`TrainOutcome.to_json` of its run, with the ``model_path`` it was trained from.
    """
    from ml_backend.inference.model import import_yolo, read_checkpoint_meta
    from ml_backend.inference.served_models import control_weights

    root = settings.control_models_root

    why_not: dict[str, str] = {}

    def task_of(model_path: str) -> str | None:
        served = next((Path(c["weights"]) for c in req.controls.values() if c.get("model_path") == model_path and c.get("weights")), None)
        try:
            meta = read_checkpoint_meta(served if served is not None else control_weights(root, model_path), digest=False)
        except LabelConfigError as exc:
            why_not[model_path] = str(exc)
            return None
        if meta is None:
            why_not[model_path] = f'model_path="{model_path}" is not an Ultralytics .pt checkpoint: it cannot be fine-tuned'
        return meta.task if meta is not None else None

    try:
        plan = plan_targets(label_config, model_task, task_of)
    except LabelConfigError as exc:
        log.warning("training: the controls with a model of their own are not trained: %s", exc)
        return {}
    out: dict[str, dict[str, Any]] = {
        name: {"status": "failed", "decision": why_not.get(path, "its model cannot be read"), "promote": False, "model_path": path}
        for name, path in plan.unavailable
    }
    others = plan.others
    longest = time.monotonic() - started_all if started_all is not None else 0.0
    for target in others:
        if target.model_path is None or target.video:
            continue
        started = time.monotonic()
        if deadline is not None and started + longest > deadline:
            out[target.from_name] = {
                "status": "skipped", "promote": False, "model_path": target.model_path,
                "decision": "not trained in this run: TRAIN_TIMEOUT leaves too little time after the models trained before it",
            }  # fmt: skip
            continue
        try:
            served = req.controls.get(target.from_name) or {}
            if served.get("model_path") == target.model_path and served.get("weights"):
                base, version = Path(served["weights"]), str(served["version"])
            else:
                base = control_weights(root, target.model_path)
                version = f"{base.stem}-{file_digest(base)[:12]}"
            safe = settings.paths.control_models(req.project_id, target.from_name).name
            sub = replace(
                req, base_weights=str(base), base_version=version, workdir=str(Path(req.workdir) / "controls" / safe), base_display={}
            )
            report("training control", control=target.from_name)
            outcome = train_target(sub, settings, import_yolo()(str(base)), target, tasks, load_image, report, started)
            out[target.from_name] = {**outcome.to_json(), "model_path": target.model_path}
            longest = max(longest, time.monotonic() - started)
        except Exception as exc:  # one control's failure never sinks the run (nor the project's model)
            log.exception("training: control %s could not be trained", target.from_name)
            why = str(exc) if isinstance(exc, (TrainingError, LabelConfigError)) else f"{type(exc).__name__}: {exc}"
            out[target.from_name] = {"status": "failed", "decision": why, "promote": False, "model_path": target.model_path}
    return out
