"""The label-savings study: the active-learning loop simulated on a labeled dataset.

The ground truth plays the annotator. For each seed and strategy:

1. a fixed test split (a hash of each image's file name, the same for every strategy and seed)
   is set aside; nothing is ever selected from it;
2. round 0: ``initial`` images drawn at random from the pool (the same draw for every strategy
   of a seed) are labeled and the starting model (``weights``) is fine-tuned on them, once per
   seed, shared by the strategies;
3. each later round: the strategy orders the unlabeled pool exactly as the server orders the
   queue (:func:`ml_backend.scoring.pool.score_tasks` with ``AL_STRATEGY``: the same model pass,
   uncertainty, embeddings and strategy; ``AL_BATCH`` is the step), the top ``step`` images are
   labeled, and the previous round's model is fine-tuned on all labels so far
   (:func:`ml_backend.training.run.fine_tune`, the server's recipe), then evaluated on the test
   split (:func:`ml_backend.training.run.evaluate`).

Datasets are written by the server's own converter (:func:`ml_backend.training.dataset.write_dataset`)
from Label Studio-shaped tasks. The training budget is fixed in optimizer steps per round
(``steps``), not epochs, so small labeled sets are not starved: a round runs
``ceil(steps / ceil(labels / batch))`` epochs. After each round ``results.json`` is rewritten
atomically, so a killed run resumes from its last finished round.

:func:`ml_backend.tools.study.report.summarize` turns the records into the study's table (area
under the learning curve, labels needed to reach random's final score, the gain on the rarest
class at equal budget) and :func:`ml_backend.tools.study.report.plot_curves` into the figure.

Example:
    >>> epochs_for_steps(steps=100, n_train=20, batch=8)
    34
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.al.strategies import REGISTRY, Pool, StrategyParams, get_strategy
from ml_backend.settings import SPECS, Settings
from ml_backend.state import atomic_write, write_json_atomic
from ml_backend.tools.datasets import Dataset, as_task, box_label_config, load_dataset, load_local_image

log = logging.getLogger(__name__)

RESULTS = "results.json"
METRICS = ("map50", "map50_95")
# Fields that define a study: a run with other values cannot resume from the same folder.
STUDY_KEYS = ("data", "format", "initial", "step", "steps", "epochs", "imgsz", "batch", "weights", "test_fraction", "device")


class SimulationError(ValueError):
    """The study cannot run as asked; the message says what to change."""


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
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 100
    epochs: int = 0
    imgsz: int = 320
    batch: int = 8
    test_fraction: float = 0.25
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("initial", "step", "steps", "imgsz", "batch"):
            if getattr(self, name) < 1:
                raise SimulationError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.rounds < 0 or self.epochs < 0:
            raise SimulationError("--rounds and --epochs must be >= 0")
        if not 0.05 <= self.test_fraction <= 0.6:
            raise SimulationError(f"--test-fraction must be in 0.05..0.6, got {self.test_fraction}")
        unknown = [s for s in self.strategies if s not in REGISTRY]
        if unknown or not self.strategies:
            raise SimulationError(f"unknown strategies {unknown}; choose from {', '.join(REGISTRY)}")
        if "random" not in self.strategies:
            raise SimulationError("--strategies must include random: it is the reference every other strategy is compared with")
        if not self.seeds:
            raise SimulationError("--seeds must name at least one seed")

    def study(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in STUDY_KEYS}

    def to_json(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def epochs_for_steps(steps: int, n_train: int, batch: int) -> int:
    """Epochs that give at least ``steps`` optimizer steps on ``n_train`` images."""
    return max(1, math.ceil(steps / max(1, math.ceil(n_train / batch))))


def test_split(ds: Dataset, fraction: float) -> np.ndarray:
    """Indices of the fixed test images: a hash of each file name below ``fraction``."""
    score = [int(hashlib.sha256(f"al-sim-test:{it.path.name}".encode()).hexdigest()[:8], 16) % 10_000 / 10_000 for it in ds.items]
    return np.flatnonzero(np.asarray(score) < fraction)


class LocalImages:
    """Reads task images from local paths with the server's decoder (the simulation's fetcher)."""

    def load(self, uri: str, task_id: int | None = None) -> np.ndarray:
        return load_local_image(uri)


def _settings(cfg: SimConfig, out: Path, strategy: str = "random", seed: int = 0) -> Settings:
    env = {k: v for k, v in os.environ.items() if k in {spec.name for spec in SPECS}}  # the user's thresholds and weights
    env.update(
        {
            "AL_STRATEGY": strategy,
            "AL_BATCH": str(cfg.step),
            "AL_SEED": str(seed),
            "IMGSZ": str(cfg.imgsz),
            "TRAIN_IMGSZ": str(cfg.imgsz),
            "TRAIN_BATCH": str(cfg.batch),
            "DEVICE": cfg.device,
            "MODEL_DIR": str(out / "state"),
            "AL_CLUSTERS": "1",
        }
    )
    return Settings.from_env(env)


class Study:
    """A study's state in its ``out`` folder: config, records and the latest weights of each chain."""

    def __init__(self, cfg: SimConfig, ds: Dataset):
        self.cfg, self.ds = cfg, ds
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "models").mkdir(exist_ok=True)
        self.test = test_split(ds, cfg.test_fraction)
        test = set(self.test.tolist())
        self.pool = np.array([i for i in range(len(ds.items)) if i not in test])
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
            diff = {k: (before.get(k), v) for k, v in cfg.study().items() if before.get(k) != v}
            if diff:
                what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
                raise SimulationError(
                    f"{path} holds a study with other settings ({what}); use another --out, or the same settings to resume"
                )
            self.records = list(old.get("records", []))

    def record(self, strategy: str, seed: int, rnd: int) -> dict | None:
        return next((r for r in self.records if (r["strategy"], r["seed"], r["round"]) == (strategy, seed, rnd)), None)

    def weights(self, strategy: str, seed: int, rnd: int) -> Path:
        return self.out / "models" / (f"seed{seed}-round0.pt" if rnd == 0 else f"{strategy}-seed{seed}-round{rnd}.pt")

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


def _train_round(study: Study, labeled: Sequence[int], base: str | Path, target: Path, seed: int) -> dict:
    """Fine-tune ``base`` on ``labeled``, evaluate on the test split, keep the weights at ``target``."""
    from ml_backend.training.dataset import write_dataset
    from ml_backend.training.run import evaluate, fine_tune

    cfg, ds = study.cfg, study.ds
    work = study.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    settings = _settings(cfg, study.out, seed=seed)
    tasks = [as_task(ds, i, True) for i in list(labeled) + study.test.tolist()]
    splits = {int(i) + 1: "train" for i in labeled} | {int(i) + 1: "val" for i in study.test}
    summary = write_dataset(
        tasks, ds.names, "detect", lambda t: load_local_image(t["data"]["image"]), work / "dataset", from_name="label", splits=splits
    )
    if summary.skipped:
        log.warning("images left out of training: %s", summary.skipped)
    epochs = cfg.epochs or epochs_for_steps(cfg.steps, summary.counts["train"], cfg.batch)
    t0 = time.monotonic()
    trained = fine_tune(base, summary.data, settings, work, epochs)
    train_s = time.monotonic() - t0
    atomic_write(target, lambda f: f.write(Path(trained).read_bytes()))
    t0 = time.monotonic()
    metrics = evaluate(target, summary.data, "detect", settings, work)
    eval_s = time.monotonic() - t0
    per_class = {n: {k: m.get(k, 0.0) for k in ("ap50", "ap50_95", "f1")} for n, m in metrics["per_class"].items()}
    for n in study.ds.object_counts(study.test):
        per_class.setdefault(n, {"ap50": 0.0, "ap50_95": 0.0, "f1": 0.0})  # a class absent from the test split
    return {
        "map50": metrics["map50"],
        "map50_95": metrics["map50_95"],
        "per_class": per_class,
        "epochs": epochs,
        "optimizer_steps": epochs * math.ceil(summary.counts["train"] / cfg.batch),
        "train_s": train_s,
        "eval_s": eval_s,
    }


def _select(study: Study, strategy: str, seed: int, rnd: int, labeled: Sequence[int], weights: Path) -> tuple[list[int], float]:
    """The ``step`` pool images the strategy puts first in the queue, and the seconds it took."""
    from ml_backend.inference.model import ModelHolder
    from ml_backend.inference.predictor import Predictor
    from ml_backend.scoring.pool import score_tasks

    cfg, ds = study.cfg, study.ds
    t0 = time.monotonic()
    taken = set(labeled)
    unlabeled = [int(i) for i in study.pool if int(i) not in taken]
    settings = _settings(cfg, study.out, strategy, seed=1000 * seed + rnd)
    if strategy == "random":  # needs no model pass; the same registered strategy function
        prio = get_strategy("random").rank(Pool(uncertainty=np.zeros(len(unlabeled))), StrategyParams(seed=settings.al_seed))
        by_task = dict(zip(unlabeled, prio))
    else:
        holder = ModelHolder(str(weights), settings.ultralytics_device, study.out / "state" / "weights", version=weights.stem)
        predictor = Predictor(settings, holder, LocalImages())
        try:
            served = predictor.serve(box_label_config(ds.names))
            tasks = [as_task(ds, i, False) for i in unlabeled] + [as_task(ds, i, True) for i in labeled]
            pooled = score_tasks(tasks, served, predictor, settings)
        finally:
            predictor.close()
        by_task = {s.task - 1: s.priority for s in pooled.scores if not s.labeled}
        for tid, err in pooled.errors.items():
            log.warning("image %s not scored (not selectable this round): %s", ds.items[tid - 1].path, err)
    order = sorted(by_task, key=lambda i: (-by_task[i], i))
    return order[: cfg.step], time.monotonic() - t0


def _run_round(study: Study, strategy: str, seed: int, rnd: int, labeled: list[int]) -> dict:
    """One round of one strategy's chain: select (after round 0), fine-tune, evaluate; its record."""
    cfg = study.cfg
    target = study.weights(strategy, seed, rnd)
    t0 = time.monotonic()
    select_s = 0.0
    shared = study.record(cfg.strategies[0], seed, 0) if rnd == 0 and strategy != cfg.strategies[0] else None
    if shared and target.is_file():  # round 0 is one model per seed
        result = {k: v for k, v in shared.items() if k not in ("strategy", "wall_s")}
    elif rnd == 0:
        result = _train_round(study, labeled, cfg.weights, target, seed)
    else:
        previous = study.weights(strategy, seed, rnd - 1)
        if not previous.is_file():
            raise SimulationError(
                f"{previous} is missing, so round {rnd} of {strategy} seed {seed} cannot resume; delete {study.out} to start over"
            )
        chosen, select_s = _select(study, strategy, seed, rnd, labeled, previous)
        labeled = labeled + chosen
        result = _train_round(study, labeled, previous, target, seed)
    return {
        **result,
        "strategy": strategy,
        "seed": seed,
        "round": rnd,
        "labels": len(labeled),
        "labeled_ids": list(map(int, labeled)),
        "objects": objects_in(study.ds, labeled),
        "select_s": select_s,
        "wall_s": time.monotonic() - t0,
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
    total = len(cfg.seeds) * len(cfg.strategies) * (cfg.rounds + 1)
    done = sum(1 for s in cfg.strategies for seed in cfg.seeds for r in range(cfg.rounds + 1) if study.record(s, seed, r))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=done, desc="rounds", unit="round", file=sys.stderr, dynamic_ncols=True)
    try:
        for seed in cfg.seeds:
            initial = sorted(np.random.default_rng(seed).choice(study.pool, cfg.initial, replace=False).tolist())
            for strategy in cfg.strategies:
                labeled = list(initial)
                for rnd in range(cfg.rounds + 1):
                    rec = study.record(strategy, seed, rnd)
                    if rec is not None:  # finished before a restart
                        labeled = list(rec["labeled_ids"])
                        continue
                    if bar is not None:
                        bar.set_postfix_str(f"{strategy} seed {seed} round {rnd} ({len(labeled) + (cfg.step if rnd else 0)} labels)")
                    rec = _run_round(study, strategy, seed, rnd, labeled)
                    labeled = list(rec["labeled_ids"])
                    study.save(rec)
                    if rnd > 1:  # only now that this round is saved: keep each chain's latest weights (and the shared round 0)
                        study.weights(strategy, seed, rnd - 1).unlink(missing_ok=True)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(f"{strategy} seed {seed} round {rnd}: {len(labeled)} labels, mAP50 {rec['map50']:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return json.loads((study.out / RESULTS).read_text())
