"""The label-savings study: the active-learning loop simulated on a labeled dataset.

The ground truth plays the annotator. For each seed and arm (a strategy, perhaps with settings of
its own: ``unc-sum=uncertainty:UNCERTAINTY_AGGREGATION=sum``):

1. a fixed test split (the images whose file-name hash is lowest, ``ceil(test_fraction x n)`` of
   them, the same for every arm and seed) is set aside; nothing is ever selected from it;
2. round 0: the first ``initial`` images are labeled: for ``random`` a seeded draw from the pool,
   for every other arm the top of the queue the server orders for a new project from the
   starting model (``weights``), which is the coverage order while that model knows none of the
   dataset's classes (:func:`ml_backend.scoring.pool.strategy_name`); the starting model is
   fine-tuned on them as the server's first retraining does (a head for the dataset's classes:
   :func:`ml_backend.training.run.project_start`); arms that label the same images share the model;
3. each later round: the arm's strategy orders the unlabeled pool exactly as the server orders
   the queue (:func:`ml_backend.scoring.pool.score_tasks` with ``AL_STRATEGY``: the same model
   pass, uncertainty, embeddings and strategy; ``AL_BATCH`` is the step), the top ``step`` images
   are labeled, and the previous round's model is fine-tuned on all labels so far
   (:func:`ml_backend.training.run.fine_tune`, the server's recipe and its budget rule,
   :func:`ml_backend.training.run.training_epochs`), then evaluated on the test split
   (:func:`ml_backend.training.evaluate.evaluate`).

**Effort.** Every labeled image is counted as an annotator would meet it: with the
pre-annotation the served model of that round shows (the model that selected it; in round 0 the
starting model, whose boxes of classes that map onto the dataset's are shown), converted exactly as
the server converts it (``SCORE_THRESHOLD``, :func:`ml_backend.inference.ls_results.to_ls_results`), and
matched to the ground truth (:func:`ml_backend.al.effort.corrections`: accepted, adjusted,
class changed, drawn, deleted). Each record keeps the raw counts, per task and summed, so another
cost table can be applied later without running anything again. Round 0 also counts what the same
images would have cost with class-agnostic proposals (``effort_proposals``): every box of the
starting model, whatever its class, shown with the dataset's label when its class maps to one and
with the first label otherwise (:func:`preannotations`), the question being whether boxes from a
model that does not know the classes save an annotator time.

Datasets are written by the server's own converter (:func:`ml_backend.training.dataset.write_dataset`)
from Label Studio-shaped tasks. After each round ``results.json`` is rewritten atomically, so a
killed run resumes from its last finished round. :mod:`ml_backend.tools.study.report` turns the
records into the study's tables, intervals and figures.

Example:
    >>> parse_arm("unc-sum=uncertainty:UNCERTAINTY_AGGREGATION=sum")
    Arm(label='unc-sum', strategy='uncertainty', overrides=(('UNCERTAINTY_AGGREGATION', 'sum'),))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.al.effort import ACCEPT_IOU, Corrections, corrections
from ml_backend.al.strategies import REGISTRY, Pool, StrategyParams, get_strategy
from ml_backend.inference.display import Display, default_display
from ml_backend.settings import SPECS, Settings, SettingsError
from ml_backend.state import atomic_write, write_json_atomic
from ml_backend.tools.datasets import Dataset, Item, as_task, box_label_config, load_dataset, load_local_image

log = logging.getLogger(__name__)

RESULTS = "results.json"
METRICS = ("map50", "map50_95")
# Fields that define a study: a run with other values cannot resume from the same folder.
STUDY_KEYS = (
    "data", "format", "initial", "step", "steps", "epochs", "imgsz", "batch", "weights", "test_fraction", "pool", "device", "server_loop",
    "first_labels", "queue",
)  # fmt: skip
# What a study made before a key existed did (its default may say otherwise).
LEGACY = {"first_labels": "random", "queue": "top"}
QUEUES = ("top", "label-studio")
MIN_TEST = 150  # test images at least (or a quarter of a smaller set)
# Presets: an hour-scale CPU study and the full GPU one, both a variant of the server's loop (one
# queue, 20 labels a retraining; the cpu one a fifth of the server's steps at half its image size).
# ``server`` (:func:`preset`) is the server itself. Explicit flags override a preset.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"seeds": 5, "initial": 20, "step": 20, "rounds": 4, "steps": 60, "imgsz": 320, "batch": 8, "device": "cpu"},
    "gpu": {"seeds": 5, "initial": 20, "step": 20, "rounds": 8, "steps": 300, "imgsz": 640, "batch": 16, "device": "cuda"},
}
SERVER_PRESET_ROUNDS = 3  # retrainings after the first model: labels up to 4 x RETRAIN_MIN_NEW_LABELS


def preset(name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The study's values for a preset: ``cpu``, ``gpu``, or ``server``.

    ``server`` is the loop the server runs at its settings (its defaults, or the environment's, as
    a deployment sets them): the first model and every retraining after
    ``RETRAIN_MIN_NEW_LABELS`` labels, ``TRAIN_STEPS`` steps (or ``TRAIN_EPOCHS``) of
    ``TRAIN_BATCH`` images (``-1``, Ultralytics' automatic batch, as 16, as the budget rule
    counts it) at ``TRAIN_IMGSZ`` on ``DEVICE``, tasks taken as Label Studio serves the server's queue
    (``--queue label-studio``: ``AL_CLUSTERS``, ``AL_BATCH``), each retrained model judged
    before it is served (``--server-loop``); 3 seeds.

    Raises:
        SimulationError: an unknown preset, a setting that does not parse, or retraining turned
            off (``RETRAIN_MIN_NEW_LABELS=0``: there is no loop to replay).

    Example:
        >>> p = preset("server", {})
        >>> p["initial"], p["step"], p["steps"], p["imgsz"], p["batch"], p["queue"], p["server_loop"]
        (50, 50, 300, 640, 16, 'label-studio', True)
    """
    if name in PRESETS:
        return dict(PRESETS[name])
    if name != "server":
        raise SimulationError(f"--preset must be one of {', '.join([*PRESETS, 'server'])}, not {name!r}")
    names = {spec.name for spec in SPECS}
    try:
        s = Settings.from_env({k: v for k, v in (os.environ if env is None else env).items() if k in names})
    except SettingsError as exc:
        raise SimulationError(f"--preset server reads the server's settings: {exc}") from None
    if s.retrain_min_new_labels < 1:
        raise SimulationError(
            "--preset server replays the server's retraining every RETRAIN_MIN_NEW_LABELS labels, which is 0 (off) here: "
            "set RETRAIN_MIN_NEW_LABELS to the labels per retraining to replay"
        )
    n = s.retrain_min_new_labels
    return {
        "seeds": 3, "initial": n, "step": n, "rounds": SERVER_PRESET_ROUNDS, "steps": s.train_steps, "epochs": s.train_epochs,
        "imgsz": s.train_imgsz,
        "batch": s.train_batch if s.train_batch > 0 else 16, "device": s.device, "queue": "label-studio", "server_loop": True,
    }  # fmt: skip


class SimulationError(ValueError):
    """The study cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Arm:
    """One arm of the study: a label, the strategy, and settings of its own (an ablation).

    Attributes:
        label: how the arm is named in the results (letters, digits, ``-`` and ``_``).
        strategy: the registered strategy (``AL_STRATEGY``).
        overrides: ``(SETTING, value)`` pairs applied to this arm's selection and training.
    """

    label: str
    strategy: str
    overrides: tuple[tuple[str, str], ...] = ()


def parse_arm(spec: str) -> Arm:
    """An arm from ``strategy`` or ``label=strategy[:SETTING=value[:SETTING=value ...]]``.

    Raises:
        SimulationError: an unknown strategy or setting, or a malformed spec.
    """
    label, sep, rest = spec.partition("=")
    if not sep:
        label, rest = spec, spec
    strategy, *pairs = rest.split(":")
    label, strategy = label.strip(), strategy.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]+", label):
        raise SimulationError(f"arm {spec!r}: its label must be letters, digits, '-' and '_'")
    if strategy not in REGISTRY:
        raise SimulationError(f"arm {spec!r}: unknown strategy {strategy!r}; choose from {', '.join(REGISTRY)}")
    known = {s.name for s in SPECS}
    overrides = []
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or name.strip() not in known:
            raise SimulationError(f"arm {spec!r}: {pair!r} is not SETTING=value with a known setting (see docs/settings.md)")
        overrides.append((name.strip(), value.strip()))
    return Arm(label, strategy, tuple(overrides))


@dataclass(frozen=True)
class SimConfig:
    """One study. ``steps`` (optimizer steps per round) is the budget unless ``epochs`` is set.

    Raises:
        SimulationError: a value out of range (on construction).
    """

    data: str
    format: str
    out: str
    weights: str
    strategies: tuple[str, ...] = ("random", "uncertainty", "diversity", "hybrid")
    initial: int = 20
    step: int = 20
    rounds: int = 4
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 100
    epochs: int = 0
    imgsz: int = 320
    batch: int = 8
    test_fraction: float = 0.25
    pool: int = 0
    device: str = "auto"
    server_loop: bool = False
    first_labels: str = "server"
    queue: str = "top"

    def __post_init__(self) -> None:
        for name in ("initial", "step", "steps", "imgsz", "batch"):
            if getattr(self, name) < 1:
                raise SimulationError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.rounds < 0 or self.epochs < 0:
            raise SimulationError("--rounds and --epochs must be >= 0")
        if not 0.05 <= self.test_fraction <= 0.6:
            raise SimulationError(f"--test-fraction must be in 0.05..0.6, got {self.test_fraction}")
        if not self.strategies:
            raise SimulationError(f"--strategies must name at least one; choose from {', '.join(REGISTRY)}")
        labels = [a.label for a in self.arms]
        if len(set(labels)) != len(labels):
            raise SimulationError(f"--strategies names an arm twice: {labels}")
        if "random" not in labels:
            raise SimulationError("--strategies must include random: it is the reference every other strategy is compared with")
        if not self.seeds:
            raise SimulationError("--seeds must name at least one seed")
        if self.pool < 0:
            raise SimulationError("--pool must be >= 0 (0: every image not in the test split)")
        if self.queue not in QUEUES:
            raise SimulationError(f"--queue must be one of {', '.join(QUEUES)}, not {self.queue!r}")
        if self.first_labels not in ("server", "random"):
            raise SimulationError(f"--first-labels must be server or random, not {self.first_labels!r}")

    @property
    def arms(self) -> tuple[Arm, ...]:
        return tuple(parse_arm(s) for s in self.strategies)

    def study(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in STUDY_KEYS}

    def to_json(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def test_split(ds: Dataset, fraction: float) -> np.ndarray:
    """Indices of the fixed test images: the ``ceil(fraction x n)`` images whose file-name hash is lowest.

    Raises:
        SimulationError: fewer than 150 test images, or than a quarter of a smaller set.
    """
    score = [hashlib.sha256(f"al-sim-test:{it.path.name}".encode()).hexdigest() for it in ds.items]
    n_test = math.ceil(fraction * len(ds.items))
    need = min(MIN_TEST, math.ceil(len(ds.items) / 4))
    if n_test < need:
        raise SimulationError(
            f"--test-fraction {fraction} gives {n_test} test images of {len(ds.items)}; the study needs at least {need} "
            f"({MIN_TEST}, or a quarter of a smaller set) for its figures to mean anything: raise it"
        )
    return np.sort(np.argsort(score, kind="stable")[:n_test])


class LocalImages:
    """Reads task images from local paths with the server's decoder (the simulation's fetcher)."""

    def load(self, uri: str, task_id: int | None = None) -> np.ndarray:
        return load_local_image(uri)


def arm_settings(cfg: SimConfig, out: Path, arm: Arm | None = None, seed: int = 0, batch: int | None = None) -> Settings:
    """The server's settings for one arm: the user's own (thresholds, cost table) from the
    environment, the study's budget and sizes, then the arm's overrides. With ``--queue top`` one
    queue (``AL_CLUSTERS=1``) ordered ``step`` (or ``batch``) tasks at a time (``AL_BATCH``); with
    ``--queue label-studio`` both stay the server's (its defaults, or the environment's)."""
    env = {k: v for k, v in os.environ.items() if k in {spec.name for spec in SPECS}}  # the user's thresholds and weights
    if cfg.queue == "top":
        env.update({"AL_BATCH": str(batch or cfg.step), "AL_CLUSTERS": "1"})
    env.update(
        {
            "AL_STRATEGY": arm.strategy if arm else "random",
            "AL_SEED": str(seed),
            "IMGSZ": str(cfg.imgsz),
            "TRAIN_IMGSZ": str(cfg.imgsz),
            "TRAIN_BATCH": str(cfg.batch),
            "TRAIN_STEPS": str(cfg.steps),
            "TRAIN_EPOCHS": str(cfg.epochs),
            "DEVICE": cfg.device,
            "MODEL_DIR": str(out / "state"),
        }
    )
    env.update(dict(arm.overrides) if arm else {})
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        raise SimulationError(f"arm {arm.label if arm else 'base'}: {exc}") from None


class Study:
    """A study's state in its ``out`` folder: config, records and the latest weights of each chain."""

    def __init__(self, cfg: SimConfig, ds: Dataset):
        self.cfg, self.ds = cfg, ds
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "models").mkdir(exist_ok=True)
        self.test = test_split(ds, cfg.test_fraction)
        test = set(self.test.tolist())
        pool = [i for i in range(len(ds.items)) if i not in test]
        if cfg.pool and cfg.pool < len(pool):  # a smaller pool (a preset's): fixed by a hash of each file name too
            rank = sorted(pool, key=lambda i: hashlib.sha256(f"al-sim-pool:{ds.items[i].path.name}".encode()).hexdigest())
            pool = sorted(rank[: cfg.pool])
        self.pool = np.array(pool)
        need = cfg.initial + cfg.rounds * cfg.step
        if need > len(self.pool):
            raise SimulationError(
                f"--initial {cfg.initial} + --rounds {cfg.rounds} x --step {cfg.step} = {need} labels, but the pool has only "
                f"{len(self.pool)} images ({len(self.test)} of {len(ds.items)} are the test split): ask for fewer"
            )
        if len(self.test) == 0:
            raise SimulationError("the test split is empty: raise --test-fraction or use a larger dataset")
        self.records: list[dict] = []
        path = self.out / RESULTS
        if path.exists():
            old = json.loads(path.read_text())
            before = old.get("config", {})
            defaults = {f.name: f.default for f in fields(SimConfig)} | LEGACY  # a key an older study did not write
            diff = {k: (before.get(k, defaults[k]), v) for k, v in cfg.study().items() if before.get(k, defaults[k]) != v}
            if diff:
                what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
                raise SimulationError(
                    f"{path} holds a study with other settings ({what}); use another --out, or the same settings to resume"
                )
            self.records = list(old.get("records", []))

    def record(self, strategy: str, seed: int, rnd: int) -> dict | None:
        return next((r for r in self.records if (r["strategy"], r["seed"], r["round"]) == (strategy, seed, rnd)), None)

    def weights(self, strategy: str, seed: int, rnd: int) -> Path:
        if rnd == 0 and self.cfg.first_labels == "random":  # one round 0 per seed, shared by every arm
            return self.out / "models" / f"seed{seed}-round0.pt"
        return self.out / "models" / f"{strategy}-seed{seed}-round{rnd}.pt"

    def save(self, rec: dict) -> None:
        self.records = [r for r in self.records if (r["strategy"], r["seed"], r["round"]) != (rec["strategy"], rec["seed"], rec["round"])]
        self.records.append(rec)
        ds = self.ds
        write_json_atomic(
            self.out / RESULTS,
            {
                "config": self.cfg.to_json(),
                "dataset": {
                    "names": ds.names,
                    "images": len(ds.items),
                    "test": len(self.test),
                    "pool": len(self.pool),
                    "objects_pool": ds.object_counts(self.pool),
                    "objects_test": ds.object_counts(self.test),
                },
                "records": sorted(self.records, key=lambda r: (r["strategy"], r["seed"], r["round"])),
            },
        )


def _train_round(
    study: Study,
    labeled: Sequence[int],
    base: str | Path,
    target: Path,
    settings: Settings,
    new: Sequence[int] = (),
    shown: Mapping | None = None,
) -> dict:
    """Fine-tune ``base`` on ``labeled``, evaluate on the test split, keep the weights at ``target``.

    In the server's loop the record's ``display`` is what the served model shows from then on (as
    the server stores it: :func:`ml_backend.training.run.judge_detector`): the new model's rule
    when it is served, ``shown`` (the previous one's) when it is not.

    With ``PSEUDO_LABELS=on`` the round also learns from ``base``'s confident boxes on the unlabeled
    pool (never the test split), calibrated on ``new``: the images labeled this round, which ``base``
    was not trained on (as the server calibrates on its held-out split).
    """
    from ml_backend.inference.label_config import select_target
    from ml_backend.training.dataset import write_dataset
    from ml_backend.training.evaluate import evaluate
    from ml_backend.training.run import fine_tune, project_start, steps_per_epoch, training_epochs

    ds = study.ds
    work = study.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # As the server's retraining: a head for the dataset's classes when the model has other ones
    # (the starting COCO model), judged against the served model in the same classes.
    start, previous, _ = project_start(base, _names(base), select_target(box_label_config(ds.names), "detect"), "detect", work)
    loop = study.cfg.server_loop  # the server's own loop: labels held out, the new model judged against the served one
    if loop:  # hold labels out as the server does, to judge the new model against the served one
        from ml_backend.training.dataset import assign_splits

        side = assign_splits([int(i) + 1 for i in labeled], settings.train_val_fraction)
        held = [int(i) for i in labeled if side[int(i) + 1] == "val"]
        splits = {int(i) + 1: side[int(i) + 1] for i in labeled}
        tasks = [as_task(ds, i, True) for i in labeled]
    else:
        held = []
        splits = {int(i) + 1: "train" for i in labeled} | {int(i) + 1: "val" for i in study.test}
        tasks = [as_task(ds, i, True) for i in list(labeled) + study.test.tolist()]
    summary = write_dataset(
        tasks, ds.names, "detect", lambda t: load_local_image(t["data"]["image"]), work / "dataset", from_name="label", splits=splits
    )
    if summary.skipped:
        log.warning("images left out of training: %s", summary.skipped)
    n_train, pseudo = summary.counts["train"], None
    calibrate_on = held if loop else list(new)
    if settings.pseudo_labels and calibrate_on and _names(base) == dict(ds.names):
        from ml_backend.training.pseudo_labels import add_pseudo_labels

        taken = set(map(int, labeled))
        unlabeled = sorted(
            (int(i) for i in study.pool if int(i) not in taken), key=lambda i: hashlib.sha256(f"al-pseudo:{i}".encode()).hexdigest()
        )
        heldout = [(load_local_image(ds.items[i].path), ds.items[i].boxes, ds.items[i].classes) for i in calibrate_on]
        added = add_pseudo_labels(
            summary.root, base, ds.names, heldout, unlabeled, lambda i: load_local_image(ds.items[i].path), n_train, settings
        )
        pseudo = added.to_json()
        n_train += added.images
    epochs = training_epochs(n_train, settings)
    t0 = time.monotonic()
    trained = fine_tune(start, summary.data, settings, work, epochs)
    train_s = time.monotonic() - t0
    judgement = display = None
    served = measured = Path(trained)
    if loop:
        from ml_backend.training.run import judge_detector

        judged = judge_detector(previous, trained, summary.root, len(ds.names), settings)
        verdict = judged.verdict
        judgement = verdict.to_json()
        display = judged.display.to_json(ds.names)
        if not verdict.promote:  # the served model stays; measured in the dataset's classes
            served, measured = Path(base), Path(previous)
            display = dict(shown) if shown else default_display(settings).to_json(ds.names)
    atomic_write(target, lambda f: f.write(served.read_bytes()))
    t0 = time.monotonic()
    metrics = evaluate(measured, _test_data(study) if loop else summary.data, "detect", settings, work)
    eval_s = time.monotonic() - t0
    per_class = {n: {k: m.get(k, 0.0) for k in ("ap50", "ap50_95", "f1")} for n, m in metrics["per_class"].items()}
    for n in study.ds.object_counts(study.test):
        per_class.setdefault(n, {"ap50": 0.0, "ap50_95": 0.0, "f1": 0.0})  # a class absent from the test split
    return {
        "map50": metrics["map50"],
        "map50_95": metrics["map50_95"],
        "per_class": per_class,
        "epochs": epochs,
        "optimizer_steps": epochs * steps_per_epoch(n_train, settings),
        "pseudo": pseudo,
        "judgement": judgement,
        "display": display,
        "train_s": train_s,
        "eval_s": eval_s,
    }


def _test_data(study: Study) -> Path:
    """A dataset whose held-out split is the test split (written once): where the server loop's served model is measured."""
    from ml_backend.training.dataset import write_dataset

    root = study.out / "testset"
    if not (root / "data.yaml").is_file():
        tasks = [as_task(study.ds, i, True) for i in study.test.tolist()]
        write_dataset(
            tasks, study.ds.names, "detect", lambda t: load_local_image(t["data"]["image"]), root, from_name="label",
            splits={int(i) + 1: "val" for i in study.test},
        )  # fmt: skip
    return root / "data.yaml"


def _names(weights: str | Path) -> dict[int, str]:
    """The classes of ``weights`` (the starting COCO model's are not the dataset's)."""
    from ml_backend.inference.model import load_weights

    return load_weights(str(weights)).names


def _predictor(study: Study, weights: Path, settings: Settings) -> Any:
    from ml_backend.inference.model import ModelHolder
    from ml_backend.inference.predictor import Predictor

    holder = ModelHolder(str(weights), settings.ultralytics_device, study.out / "state" / "weights", version=weights.stem)
    return Predictor(settings, holder, LocalImages())


def served_display(study: Study, record: Mapping | None, settings: Settings) -> Display:
    """What the served model shows after the round of ``record``, as the server would show it: the
    rule stored with it (the server's loop), or ``SCORE_THRESHOLD``'s when it is set or none was chosen."""
    stored = (record or {}).get("display")
    if not stored or settings.score_threshold is not None:
        return default_display(settings)
    return Display.from_json(stored, study.ds.names)


def preannotations(
    study: Study, weights: str | Path, ids: Sequence[int], settings: Settings, agnostic: bool = False, display: Display | None = None
) -> dict[int, list[dict]]:
    """What the served model ``weights`` shows on images ``ids`` (Label Studio regions, as the server
    converts them: nothing of the classes it does not know; shown by ``display``, default
    ``SCORE_THRESHOLD``'s). With ``agnostic``, class-agnostic
    proposals: every box the model finds, suppressed across classes, shown with its class's label
    if it maps to one and the first label otherwise (what the server shows a one-label project:
    :func:`ml_backend.inference.label_config.proposal_label`)."""
    from ml_backend.inference.predictor import Served
    from ml_backend.scoring.pool import observe

    predictor = _predictor(study, Path(weights), settings)
    try:
        served = predictor.serve(box_label_config(study.ds.names))
        if display is not None:
            served = dataclasses.replace(served, display=display)
        if agnostic:
            fallback = served.target.labels[0]
            served = Served(served.model, served.target, {c: served.label_map.get(c, fallback) for c in served.model.names}, True)
        obs = observe([as_task(study.ds, i, False) for i in ids], served, predictor, settings)
    finally:
        predictor.close()
    out: dict[int, list[dict]] = {int(i): [] for i in ids}
    out.update({int(t) - 1: regions for t, regions in zip(obs.ids, obs.regions, strict=True)})
    return out


def shown_boxes(item: Item, names: Mapping[int, str], regions: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The pre-annotation ``regions`` (Label Studio ``rectanglelabels`` in percent) as pixel boxes
    of ``item`` and class ids (-1 for a label the dataset lacks)."""
    class_of = {n: i for i, n in names.items()}
    pred, pred_cls = [], []
    for r in regions:
        v = r.get("value") or {}
        labels = v.get("rectanglelabels") or []
        x, y, w, h = (float(v.get(k, 0.0)) for k in ("x", "y", "width", "height"))
        pred.append([x, y, x + w, y + h])
        pred_cls.append(class_of.get(str(labels[0]), -1) if labels else -1)
    scale = np.array([item.width, item.height, item.width, item.height]) / 100.0
    return np.array(pred, dtype=np.float64).reshape(-1, 4) * scale, np.array(pred_cls, dtype=int)


def task_effort(item: Item, names: Mapping[int, str], regions: Sequence[Mapping[str, Any]], accept_iou: float = ACCEPT_IOU) -> Corrections:
    """The annotator's actions on one image: its true boxes against the pre-annotation ``regions``
    (regions of labels the dataset lacks count as wrong boxes; a matched box is kept as it is from
    ``accept_iou`` on)."""
    pred, pred_cls = shown_boxes(item, names, regions)
    gt = np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4)
    return corrections(gt, item.classes, pred, pred_cls, accept_iou=accept_iou)


def effort_of(
    study: Study, ids: Sequence[int], regions: Mapping[int, Sequence[Mapping[str, Any]]], accept_iou: float = ACCEPT_IOU
) -> tuple[list[dict], Corrections]:
    """Per image and summed: the annotator's actions on images ``ids`` shown ``regions`` (:func:`task_effort`)."""
    per_task, total = [], Corrections()
    for i in ids:
        c = task_effort(study.ds.items[int(i)], study.ds.names, regions.get(int(i), []), accept_iou)
        per_task.append({"id": int(i), **c.to_json()})
        total = total + c
    return per_task, total


def _select(
    study: Study,
    arm: Arm,
    settings: Settings,
    labeled: Sequence[int],
    weights: str | Path,
    count: int | None = None,
    display: Display | None = None,
) -> tuple[list[int], dict[int, list[dict]], float]:
    """The ``count`` (default ``step``) pool images the arm puts first in the queue, their
    pre-annotations (shown by ``display``, default ``SCORE_THRESHOLD``'s), and the seconds it took."""
    from ml_backend.scoring.pool import score_tasks

    cfg, ds = study.cfg, study.ds
    t0 = time.monotonic()
    taken = set(labeled)
    unlabeled = [int(i) for i in study.pool if int(i) not in taken]
    if arm.strategy == "random":  # needs no model pass to choose; the same registered strategy function
        prio = get_strategy("random").rank(Pool(uncertainty=np.zeros(len(unlabeled))), StrategyParams(seed=settings.al_seed))
        drawn = dict(zip(unlabeled, prio, strict=True))
        first = sorted(drawn, key=lambda i: (-drawn[i], i))[: count or cfg.step]
        return first, preannotations(study, weights, first, settings, display=display), time.monotonic() - t0
    want = count or cfg.step
    chosen: list[int] = []
    shown: dict[int, list[dict]] = {}
    predictor = _predictor(study, Path(weights), settings)
    try:
        served = predictor.serve(box_label_config(ds.names))
        if display is not None:
            served = dataclasses.replace(served, display=display)
        while len(chosen) < want:  # --queue label-studio: re-scored every RESCORE_MIN_NEW_LABELS labels, as the server does
            done = [*labeled, *chosen]
            taken_now = set(chosen)
            left = [i for i in unlabeled if i not in taken_now]
            if not left:
                break
            tasks = [as_task(ds, i, False) for i in left] + [as_task(ds, i, True) for i in done]
            pooled = score_tasks(tasks, served, predictor, settings)
            for tid, err in pooled.errors.items():
                log.warning("image %s not scored (not selectable this round): %s", ds.items[tid - 1].path, err)
            shown |= {int(p["task"]) - 1: p["result"] for p in pooled.predictions}
            if cfg.queue == "top":
                by_task = {s.task - 1: s.priority for s in pooled.scores if not s.labeled}
                chosen = sorted(by_task, key=lambda i: (-by_task[i], i))[:want]
                break
            chosen += served_next(pooled.scores, min(settings.rescore_min_new_labels or want, want - len(chosen)))
    finally:
        predictor.close()
    return chosen, {i: shown.get(i, []) for i in chosen}, time.monotonic() - t0


def served_next(scores: Sequence[Any], count: int) -> list[int]:
    """The next ``count`` dataset indices Label Studio serves one annotator from a scoring's
    ``TaskScore`` rows (task id = index + 1): the top task of the cluster the annotator has labeled
    least (labeled tasks counted in their clusters), as :func:`integrations.queue_view.serving_order`.

    Example:
        >>> from types import SimpleNamespace as T
        >>> rows = [T(task=1, cluster=0, priority=0.9, labeled=False), T(task=2, cluster=0, priority=0.8, labeled=False),
        ...         T(task=3, cluster=1, priority=0.1, labeled=False), T(task=4, cluster=1, priority=0.0, labeled=True)]
        >>> served_next(rows, 2)  # cluster 1 already has a label: both from cluster 0 first
        [0, 1]
    """
    from integrations.queue_view import serving_order

    solved: dict[int, int] = {}
    for s in scores:
        if s.labeled:
            solved[s.cluster] = solved.get(s.cluster, 0) + 1
    order = serving_order([(s.task, s.cluster, s.priority) for s in scores if not s.labeled], solved=solved)
    return [t - 1 for t in order[:count]]


def _run_round(study: Study, arm: Arm, seed: int, rnd: int, labeled: list[int]) -> dict:
    """One round of one arm's chain: select (after round 0), count the effort, fine-tune, evaluate; its record."""
    cfg = study.cfg
    target = study.weights(arm.label, seed, rnd)
    t0 = time.monotonic()
    select_s = 0.0
    extra: dict[str, Any] = {}
    first = cfg.arms[0].label
    shared = study.record(first, seed, 0) if rnd == 0 and arm.label != first and cfg.first_labels == "random" else None
    if shared and target.is_file():  # round 0 is one model per seed
        return {**shared, "strategy": arm.label, "wall_s": time.monotonic() - t0}
    if rnd == 0:
        # legacy (--first-labels random): one round 0 per seed, the arms' own settings not applied
        base = arm_settings(cfg, study.out, seed=seed) if cfg.first_labels == "random" else arm_settings(cfg, study.out, arm, seed=seed)
        if cfg.first_labels == "server" and arm.strategy != "random":  # the top of a new project's queue, as the server orders it
            # AL_BATCH: what is labeled before the next scoring, here before the first model (the server's default is 100)
            opening = arm_settings(cfg, study.out, arm, seed=1000 * seed, batch=cfg.initial)
            labeled, shown, select_s = _select(study, arm, opening, [], cfg.weights, cfg.initial)
        else:
            shown = preannotations(study, cfg.weights, labeled, base)
        overrides = {a.label: a.overrides for a in cfg.arms}
        twin = next(
            (r for r in study.records if (r["seed"], r["round"]) == (seed, 0) and r["strategy"] != arm.label
             and overrides.get(r["strategy"]) == arm.overrides and set(r["labeled_ids"]) == set(labeled)
             and study.weights(r["strategy"], seed, 0).is_file()),
            None,
        )  # fmt: skip
        if twin is not None:  # another arm labeled the same first images: the same first model
            atomic_write(target, lambda f: f.write(study.weights(twin["strategy"], seed, 0).read_bytes()))
            return {**twin, "strategy": arm.label, "select_s": select_s, "wall_s": time.monotonic() - t0}
        per_task, effort = effort_of(study, labeled, shown)
        extra["effort_proposals"] = effort_of(study, labeled, preannotations(study, cfg.weights, labeled, base, agnostic=True))[1].to_json()
        result = _train_round(study, labeled, cfg.weights, target, base)
        total = effort
    else:
        previous = study.weights(arm.label, seed, rnd - 1)
        if not previous.is_file():
            raise SimulationError(
                f"{previous} is missing, so round {rnd} of {arm.label} seed {seed} cannot resume; delete {study.out} to start over"
            )
        settings = arm_settings(cfg, study.out, arm, seed=1000 * seed + rnd)
        before = study.record(arm.label, seed, rnd - 1)
        display = served_display(study, before, settings)
        chosen, shown, select_s = _select(study, arm, settings, labeled, previous, display=display)
        per_task, effort = effort_of(study, chosen, shown)
        if display != default_display(settings):  # the same images shown at one threshold for every class, to compare
            extra["effort_one_threshold"] = effort_of(study, chosen, preannotations(study, previous, chosen, settings))[1].to_json()
        labeled = labeled + chosen
        result = _train_round(
            study, labeled, previous, target, arm_settings(cfg, study.out, arm, seed=seed), new=chosen, shown=(before or {}).get("display")
        )
        total = Corrections.from_json(before["effort_total"]) + effort if before else effort
    return {
        **result,
        "strategy": arm.label,
        "seed": seed,
        "round": rnd,
        "labels": len(labeled),
        "labeled_ids": list(map(int, labeled)),
        "objects": objects_in(study.ds, labeled),
        "selected": per_task,
        "effort": effort.to_json(),
        "effort_total": total.to_json(),
        "select_s": select_s,
        "wall_s": time.monotonic() - t0,
        **extra,
    }


def objects_in(ds: Dataset, labeled: Sequence[int]) -> int:
    """Boxes in the labeled images: what the annotators drew (images with many objects cost more)."""
    return int(sum(len(ds.items[int(i)].boxes) for i in labeled))


def run_study(cfg: SimConfig, show_progress: bool = True) -> dict:
    """Run (or resume) the study; returns the contents of ``results.json``.

    Raises:
        SimulationError, DatasetError: bad settings or data (before any training).
    """
    ds = load_dataset(cfg.data, cfg.format)
    if not Path(cfg.weights).is_file():
        raise SimulationError(f"--weights {cfg.weights} is not a file: pass a .pt model (see `python -m ml_backend pretrain`)")
    study = Study(cfg, ds)
    arms = cfg.arms
    total = len(cfg.seeds) * len(arms) * (cfg.rounds + 1)
    done = sum(1 for a in arms for seed in cfg.seeds for r in range(cfg.rounds + 1) if study.record(a.label, seed, r))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=done, desc="rounds", unit="round", file=sys.stderr, dynamic_ncols=True)
    try:
        for seed in cfg.seeds:
            initial = sorted(np.random.default_rng(seed).choice(study.pool, cfg.initial, replace=False).tolist())
            for arm in arms:
                labeled = list(initial)
                for rnd in range(cfg.rounds + 1):
                    rec = study.record(arm.label, seed, rnd)
                    if rec is not None:  # finished before a restart
                        labeled = list(rec["labeled_ids"])
                        continue
                    if bar is not None:
                        bar.set_postfix_str(f"{arm.label} seed {seed} round {rnd} ({len(labeled) + (cfg.step if rnd else 0)} labels)")
                    rec = _run_round(study, arm, seed, rnd, labeled)
                    labeled = list(rec["labeled_ids"])
                    study.save(rec)
                    if rnd > 1:  # only now that this round is saved: keep each chain's latest weights (and the shared round 0)
                        study.weights(arm.label, seed, rnd - 1).unlink(missing_ok=True)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(f"{arm.label} seed {seed} round {rnd}: {len(labeled)} labels, mAP50 {rec['map50']:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return json.loads((study.out / RESULTS).read_text())
