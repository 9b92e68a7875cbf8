"""Pool scoring: per-task uncertainty, diversity, priority and cluster from one model pass.

One pass of the model over a project's tasks (images come from the disk cache after the first
time) gives, per task, the pre-annotation, the per-class scores of every object and candidate,
and an image embedding. From these:

* ``uncertainty``: :func:`ml_backend.al.uncertainty.image_uncertainty` over objects and
  candidates (confidence >= ``CANDIDATE_THRESHOLD``), ``UNCERTAINTY_MEASURE`` and
  ``UNCERTAINTY_AGGREGATION``; with ``sum`` aggregation divided by the pool's largest, so that it
  stays in ``[0, 1]``;
* ``diversity``: distance to the nearest labeled task's embedding / 2 (1 when none is labeled);
* ``priority``: the ``AL_STRATEGY`` strategy's ``rank`` over the unlabeled tasks (labeled tasks
  get 0), or its ``stream`` function for tasks imported between two full scorings
  (:func:`score_stream`);
* ``cluster``: faiss k-means over all tasks' embeddings (``AL_CLUSTERS``);
* ``difficulty``: ``easy`` / ``medium`` / ``hard`` for uncertainty below 1/3, below 2/3, above.

Each task's prediction (the pre-annotation) carries ``score = 1 - priority``: Label Studio orders
its queue by prediction score, lowest first. Nothing here talks to Label Studio
(:mod:`ml_backend.scoring.publish` does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_backend.al.diversity import diversity_scores, kmeans_clusters, normalize
from ml_backend.al.strategies import Pool, StrategyParams, StrategySpec, resolve
from ml_backend.al.uncertainty import image_uncertainty
from ml_backend.inference.ls_results import to_ls_results
from ml_backend.inference.model import ImagePrediction
from ml_backend.inference.predictor import Predictor, Served
from ml_backend.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskScore:
    """What ``GET /scores`` returns per task."""

    task: int
    uncertainty: float
    diversity: float
    priority: float
    cluster: int
    difficulty: str
    labeled: bool
    model_version: str


def difficulty(u: float) -> str:
    return "easy" if u < 1 / 3 else ("medium" if u < 2 / 3 else "hard")


def _xyxy(pred: ImagePrediction) -> np.ndarray | None:
    if len(pred.boxes_xyxy):
        return pred.boxes_xyxy
    if len(pred.obb_xywhr):
        cx, cy, w, h = (pred.obb_xywhr[:, i] for i in range(4))
        r = np.hypot(w, h) / 2  # bounding square of the rotated box: enough for overlap tests
        return np.stack([cx - r, cy - r, cx + r, cy + r], axis=1)
    return None


def image_scores(pred: ImagePrediction, settings: Settings, n_classes: int) -> tuple[float, np.ndarray]:
    """(uncertainty, predicted objects per model class) of one image."""
    counts = np.zeros(n_classes)
    if pred.probs is not None:
        P = pred.probs[None, :]
        counts[int(np.argmax(pred.probs))] += 1
        return image_uncertainty(P, None, settings.uncertainty_measure, "max"), counts
    P = pred.class_scores if pred.class_scores is not None else pred.scores[:, None]
    keep = pred.scores >= settings.candidate_threshold
    shown = pred.scores >= settings.score_threshold
    np.add.at(counts, pred.class_ids[shown].astype(int), 1)
    boxes = _xyxy(pred)
    u = image_uncertainty(P[keep], None if boxes is None else boxes[keep], settings.uncertainty_measure, settings.uncertainty_aggregation)
    return u, counts


def is_labeled(task: Mapping[str, Any]) -> bool:
    """A task counts as labeled when it has an annotation that was not cancelled (skipped)."""
    return any(not a.get("was_cancelled") for a in task.get("annotations") or [])


def labeled_class_counts(tasks: Sequence[Mapping[str, Any]], served: Served, n_classes: int) -> np.ndarray:
    """Objects per model class in the current annotations (labels mapped back to class ids)."""
    label_to_class: dict[str, int] = {}
    for cls, label in served.label_map.items():
        label_to_class.setdefault(label, cls)
    counts = np.zeros(n_classes)
    key = served.target.result_type
    for t in tasks:
        for a in t.get("annotations") or []:
            if a.get("was_cancelled"):
                continue
            for r in a.get("result") or []:
                for label in (r.get("value") or {}).get(key, []):
                    if label in label_to_class:
                        counts[label_to_class[label]] += 1
    return counts


@dataclass
class ScoredPool:
    scores: list[TaskScore]
    predictions: list[dict]
    errors: dict[int, str]
    embeddings: np.ndarray | None = None  # (n, d), rows in ``scores`` order
    labeled_counts: np.ndarray | None = None  # (C,) labeled objects per model class
    uncertainty_scale: float = 1.0  # what ``sum`` uncertainties were divided by


@dataclass
class Observed:
    """What one pass of the model says about tasks: the rows of the tasks that did not fail."""

    ids: np.ndarray  # (n,) task ids
    uncertainty: np.ndarray  # (n,) as aggregated (not yet normalized for ``sum``)
    class_counts: np.ndarray  # (n, C) shown objects per model class
    embeddings: np.ndarray | None  # (n, d), None when the weights give none
    regions: list[list[dict]]  # Label Studio result per task
    errors: dict[int, str]


def observe(
    tasks: Sequence[Mapping[str, Any]], served: Served, predictor: Predictor, settings: Settings, progress: bool = False
) -> Observed:
    """Run the model over ``tasks`` (scores and embeddings on), one row per task that did not fail."""
    n_classes = len(served.model.names)
    conf = min(settings.candidate_threshold, settings.score_threshold)
    iterator = predictor.run(tasks, served, with_scores=True, conf=conf)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(tasks), desc="scoring", unit="task")
    ids, unc, counts, embs, regions, errors = [], [], [], [], [], {}
    for task, pred in zip(tasks, iterator):
        if isinstance(pred, str):
            errors[int(task["id"])] = pred
            continue
        u, c = image_scores(pred, settings, n_classes)
        ids.append(int(task["id"]))
        unc.append(u)
        counts.append(c)
        embs.append(pred.embedding)
        regions.append(to_ls_results(pred, served.target, served.label_map, settings.score_threshold)[0])
    present = [e for e in embs if e is not None]
    has_emb = bool(embs) and len(present) == len(embs)
    return Observed(
        ids=np.array(ids, dtype=int),
        uncertainty=np.array(unc, dtype=np.float64),
        class_counts=np.stack(counts) if counts else np.zeros((0, n_classes)),
        embeddings=np.stack(present) if has_emb else None,
        regions=regions,
        errors=errors,
    )


def normalized_uncertainty(u: np.ndarray, settings: Settings, scale: float | None = None) -> np.ndarray:
    """Uncertainty in [0, 1]: ``sum`` aggregation is divided by the pool's largest (or ``scale``)."""
    if settings.uncertainty_aggregation == "sum":
        return np.clip(u / max(1.0, scale if scale is not None else float(u.max(initial=0.0))), 0, 1)
    return np.clip(u, 0, 1)


def _prediction(task_id: int, regions: list[dict], priority: float, version: str, cluster: int) -> dict:
    return {"task": int(task_id), "result": regions, "score": float(1.0 - priority), "model_version": version, "cluster": int(cluster)}


def score_tasks(
    tasks: Sequence[Mapping[str, Any]], served: Served, predictor: Predictor, settings: Settings, progress: bool = False
) -> ScoredPool:
    """Run the model over ``tasks`` and compute every score (no Label Studio calls)."""
    obs = observe(tasks, served, predictor, settings, progress)
    if not len(obs.ids):
        return ScoredPool([], [], obs.errors)
    u = normalized_uncertainty(obs.uncertainty, settings)
    labeled_ids = {int(t["id"]) for t in tasks if is_labeled(t)}
    lab = np.array([i in labeled_ids for i in obs.ids])
    E = obs.embeddings
    labeled_counts = labeled_class_counts(tasks, served, len(served.model.names))
    diversity = diversity_scores(E, E[lab] if lab.any() else None) if E is not None else np.ones(len(u))
    priority = np.zeros(len(u))
    pool_idx = np.flatnonzero(~lab)
    if len(pool_idx):
        pool = Pool(
            uncertainty=u[pool_idx],
            embeddings=E[pool_idx] if E is not None else None,
            labeled_embeddings=E[lab] if E is not None and lab.any() else None,
            class_counts=obs.class_counts[pool_idx],
            labeled_class_counts=labeled_counts,
            ids=obs.ids[pool_idx],
        )
        priority[pool_idx] = _strategy(pool, settings).rank(pool, strategy_params(settings))
    clusters = kmeans_clusters(E, settings.al_clusters, seed=settings.al_seed) if E is not None else np.zeros(len(u), dtype=int)
    version = served.model.version
    scores = [
        TaskScore(
            int(t), float(u[j]), float(diversity[j]), float(priority[j]), int(clusters[j]), difficulty(float(u[j])), bool(lab[j]), version
        )
        for j, t in enumerate(obs.ids)
    ]
    predictions = [_prediction(t, obs.regions[j], priority[j], version, clusters[j]) for j, t in enumerate(obs.ids)]
    for p, labeled in zip(predictions, lab):
        if labeled:
            p["score"] = 1.0  # labeled tasks sit at the end of the queue
    scale = max(1.0, float(obs.uncertainty.max())) if settings.uncertainty_aggregation == "sum" else 1.0
    return ScoredPool(scores, predictions, obs.errors, E, labeled_counts, scale)


def strategy_params(settings: Settings) -> StrategyParams:
    """The strategy strengths, k-center batch and seed from ``AL_*`` settings."""
    return StrategyParams(
        uncertainty_weight=settings.al_uncertainty_weight,
        diversity_weight=settings.al_diversity_weight,
        class_balance_weight=settings.al_class_balance_weight,
        batch_size=settings.al_batch,
        seed=settings.al_seed,
    )


def _strategy(pool: Pool, settings: Settings) -> StrategySpec:
    spec = resolve(settings.al_strategy, pool)
    if spec.name != settings.al_strategy:
        log.warning(
            "AL_STRATEGY=%s needs embeddings, which these weights do not give (exported model?): using %s", settings.al_strategy, spec.name
        )
    return spec


def score_stream(
    tasks: Sequence[Mapping[str, Any]], served: Served, predictor: Predictor, settings: Settings, state: Mapping[str, np.ndarray]
) -> ScoredPool:
    """Score tasks imported after the last full scoring against what that scoring kept (``state``:
    :meth:`ml_backend.scoring.store.ScoreStore.load_state`), with the strategy's ``stream`` function.

    The labeled embeddings, labeled class counts, uncertainty scale and cluster centres come from
    ``state``; the rest of the queue is not re-ordered.
    """
    obs = observe(tasks, served, predictor, settings)
    if not len(obs.ids):
        return ScoredPool([], [], obs.errors)
    ids, E = obs.ids, obs.embeddings
    u = normalized_uncertainty(obs.uncertainty, settings, scale=float(state["max_uncertainty"]))
    labeled_emb = state["embeddings"][state["labeled"]] if state["labeled"].any() else None
    d = diversity_scores(E, labeled_emb) if E is not None else np.ones(len(ids))
    pool = Pool(
        uncertainty=u,
        embeddings=E,
        labeled_embeddings=labeled_emb,
        class_counts=obs.class_counts,
        labeled_class_counts=state["labeled_counts"] if len(state["labeled_counts"]) else None,
        ids=ids,
    )
    prio = _strategy(pool, settings).stream(pool, strategy_params(settings))
    clusters = np.zeros(len(ids), dtype=int)
    if E is not None and len(state["centroids"]):
        clusters = np.argmax(normalize(E) @ state["centroids"].T, axis=1)
    version = served.model.version
    scores = [
        TaskScore(int(t), float(u[j]), float(d[j]), float(prio[j]), int(clusters[j]), difficulty(float(u[j])), False, version)
        for j, t in enumerate(ids)
    ]
    predictions = [_prediction(t, obs.regions[j], prio[j], version, clusters[j]) for j, t in enumerate(ids)]
    return ScoredPool(scores, predictions, obs.errors, E)
