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
  (:func:`score_stream`); while the served model cannot predict some of the project's labels,
  the coverage order instead (:func:`strategy_name`);
* ``cluster``: faiss k-means over all tasks' embeddings (``AL_CLUSTERS``);
* ``difficulty``: ``easy`` / ``medium`` / ``hard`` for uncertainty below 1/3, below 2/3, above.

Each task's prediction (the pre-annotation) carries ``score = 1 - priority``: Label Studio orders
its queue by prediction score, lowest first. Nothing here talks to Label Studio
(:mod:`ml_backend.scoring.publish` does).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_backend.al.diversity import ObjectSet, diversity_scores, kmeans_clusters, normalize
from ml_backend.al.effort import class_difficulty, class_recall, expected_seconds
from ml_backend.al.strategies import Pool, StrategyParams, StrategySpec, capped_rank, resolve
from ml_backend.al.uncertainty import AGGREGATIONS, MEASURES, entropy_nms, existence, image_uncertainty
from ml_backend.inference.display import default_display
from ml_backend.inference.ls_results import shown_objects
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


@dataclass(frozen=True)
class Candidates:
    """One image's candidate objects (confidence >= ``CANDIDATE_THRESHOLD``) after entropy-NMS, as
    the class-calibrated uncertainty needs them: each one's uncertainty, confidence and class."""

    uncertainty: np.ndarray
    confidence: np.ndarray
    classes: np.ndarray

    def calibrated(self, class_weights: np.ndarray | None) -> float:
        """Sum of confidence x class weight x uncertainty (:func:`ml_backend.al.uncertainty.calibrated_uncertainty`)."""
        w = np.ones(int(self.classes.max(initial=0)) + 1) if class_weights is None else class_weights
        return float((self.confidence * w[np.clip(self.classes, 0, len(w) - 1)] * self.uncertainty).sum())


def image_scores(pred: ImagePrediction, settings: Settings, n_classes: int) -> tuple[float, np.ndarray]:
    """(uncertainty, predicted objects per model class) of one image (``calibrated`` with every class weighing 1)."""
    counts = np.zeros(n_classes)
    if pred.probs is not None:
        counts[int(np.argmax(pred.probs))] += 1
    else:
        np.add.at(counts, pred.class_ids[default_display(settings).shown(pred.boxes_xyxy, pred.class_ids, pred.scores)].astype(int), 1)
    return _uncertainty(pred, settings)[0], counts


def _uncertainty(pred: ImagePrediction, settings: Settings) -> tuple[float, Candidates | None]:
    """The image's aggregated uncertainty and, for detection, its candidates after entropy-NMS."""
    measure = "entropy" if settings.uncertainty_measure == "tta" else settings.uncertainty_measure
    if pred.probs is not None:
        return image_uncertainty(pred.probs[None, :], None, measure, "max"), None
    P = pred.class_scores if pred.class_scores is not None else pred.scores[:, None]
    keep = pred.scores >= settings.candidate_threshold
    boxes = _xyxy(pred)
    P_kept = P[keep]
    u = MEASURES[measure](P_kept) if len(P_kept) else np.zeros(0)
    if pred.keypoint_conf is not None and len(pred.keypoint_conf) == len(keep) and len(u):
        # pose: an object is as uncertain as the mean of its class's and its keypoints' (is each one there?)
        points = existence(pred.keypoint_conf[keep].reshape(-1, 1)).reshape(len(u), -1)
        u = (u + points.mean(axis=1)) / 2 if points.shape[1] else u
    nms = entropy_nms(boxes[keep], u) if boxes is not None and len(u) > 1 else np.arange(len(u))
    cands = Candidates(u[nms], pred.scores[keep][nms].astype(np.float64), pred.class_ids[keep][nms].astype(int))
    if settings.uncertainty_measure == "tta":
        return float(pred.tta_disagreement or 0.0), cands
    if settings.uncertainty_aggregation == "calibrated":
        return cands.calibrated(None), cands
    return AGGREGATIONS[settings.uncertainty_aggregation](cands.uncertainty), cands


def _fill_outputs(
    tasks: Sequence[Mapping[str, Any]], served: Served, predictor: Predictor, chunk: int = 256
) -> Iterator[list[ImagePrediction] | str]:
    """The other image controls' outputs per task (:meth:`Predictor.fill_outputs`), ``chunk`` tasks at a time."""
    for start in range(0, len(tasks), chunk):
        if served.image_extras:
            yield from predictor.fill_outputs(tasks[start : start + chunk], served)
        else:
            yield from ([] for _ in tasks[start : start + chunk])


def control_uncertainty(pred: ImagePrediction, settings: Settings) -> float:
    """One other control's uncertainty on an image, in [0, 1]: its most uncertain object (or its
    classifier's), by ``UNCERTAINTY_MEASURE`` after entropy-NMS (keypoints averaged in as for the primary)."""
    if settings.uncertainty_measure == "tta" or settings.uncertainty_aggregation != "max":
        settings = dataclasses.replace(
            settings,
            uncertainty_measure="entropy" if settings.uncertainty_measure == "tta" else settings.uncertainty_measure,
            uncertainty_aggregation="max",
        )
    return float(np.clip(_uncertainty(pred, settings)[0], 0.0, 1.0))


def is_labeled(task: Mapping[str, Any]) -> bool:
    """A task counts as labeled when it has an annotation that was not cancelled (skipped)."""
    return any(not a.get("was_cancelled") for a in task.get("annotations") or [])


def _label_ids(served: Served) -> dict[str, int]:
    label_to_class: dict[str, int] = {}
    for cls, label in served.label_map.items():
        label_to_class.setdefault(label, cls)
    return label_to_class


def _current_regions(task: Mapping[str, Any]) -> list[dict]:
    kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not kept:
        return []
    newest = max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a.get("id") or 0)))
    return list(newest.get("result") or [])


def _region_boxes(regions: Sequence[Mapping[str, Any]], key: str, label_ids: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(boxes in percent, class ids) of Label Studio rectangle-like regions (-1 for labels no class maps to)."""
    boxes, classes = [], []
    for r in regions:
        v = r.get("value") or {}
        labels = v.get(key) or []
        if not labels or not {"x", "y", "width", "height"} <= set(v):
            continue
        x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
        boxes.append([x, y, x + w, y + h])
        classes.append(label_ids.get(str(labels[0]), -1))
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(classes, dtype=int)


def labeled_class_counts(tasks: Sequence[Mapping[str, Any]], served: Served, n_classes: int) -> np.ndarray:
    """Objects per model class in the current annotations (labels mapped back to class ids)."""
    label_to_class = _label_ids(served)
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
    uncertainty_scale: float = 1.0  # what ``sum`` and ``calibrated`` uncertainties were divided by
    class_weights: np.ndarray | None = None  # (C,) class difficulty the calibrated uncertainty used


@dataclass
class Observed:
    """What one pass of the model says about tasks: the rows of the tasks that did not fail."""

    ids: np.ndarray  # (n,) task ids
    uncertainty: np.ndarray  # (n,) as aggregated (not yet normalized for ``sum``; ``calibrated``: every class weighing 1)
    class_counts: np.ndarray  # (n, C) shown objects per model class
    embeddings: np.ndarray | None  # (n, d), None when the weights give none
    regions: list[list[dict]]  # Label Studio result per task
    errors: dict[int, str]
    candidates: list[Candidates | None] = field(default_factory=list)  # per task, for the calibrated uncertainty
    objects: ObjectSet | None = None  # the shown objects' features, None when the weights give none
    expected_cost: np.ndarray | None = None  # (n,) expected annotator seconds (ANNOTATION_COSTS)
    other_controls: np.ndarray | None = None  # (n,) the largest uncertainty of the config's other controls, in [0, 1]

    def combined(self, normalized: np.ndarray) -> np.ndarray:
        """A task's uncertainty: the largest of its controls' (the primary's ``normalized``, each other's in [0, 1])."""
        return normalized if self.other_controls is None else np.maximum(normalized, self.other_controls)

    def uncertainty_with(self, class_weights: np.ndarray | None, settings: Settings) -> np.ndarray:
        """The per-task uncertainty, class-calibrated with ``class_weights`` when that is the aggregation."""
        if settings.uncertainty_aggregation != "calibrated" or settings.uncertainty_measure == "tta":
            return self.uncertainty
        return np.array(
            [c.calibrated(class_weights) if c is not None else u for c, u in zip(self.candidates, self.uncertainty, strict=True)]
        )


def observe(
    tasks: Sequence[Mapping[str, Any]], served: Served, predictor: Predictor, settings: Settings, progress: bool = False
) -> Observed:
    """Run the model over ``tasks`` (scores and embeddings on), one row per task that did not fail.

    The model's outputs are kept by the predictor (:class:`ml_backend.inference.output_cache.OutputCache`):
    tasks the same model version already saw with the same image are not run again."""
    n_classes = len(served.model.names)
    if served.target.video:  # videos are predicted (``/predict``), not scored: nothing to order
        log.info("the project's model fills a video control: its tasks are predicted, not scored")
        return Observed(np.zeros(0, dtype=int), np.zeros(0), np.zeros((0, n_classes)), None, [], {})
    conf = min(settings.candidate_threshold, served.display.lowest)
    iterator = predictor.run(tasks, served, with_scores=True, conf=conf, tta=settings.uncertainty_measure == "tta", cache=True)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(tasks), desc="scoring", unit="task")
    ids, unc, counts, embs, regions, cands, costs, errors = [], [], [], [], [], [], [], {}
    objs: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    fills = _fill_outputs(tasks, served, predictor)
    others: list[float] = []
    for task, pred, more in zip(tasks, iterator, fills, strict=True):
        if isinstance(pred, str) or isinstance(more, str):
            errors[int(task["id"])] = pred if isinstance(pred, str) else str(more)
            continue
        u, cand = _uncertainty(pred, settings)
        c = np.zeros(n_classes)
        shown = shown_objects(pred, served.label_map, served.display) if pred.probs is None else np.zeros(0, dtype=bool)
        if pred.probs is not None:
            c[int(np.argmax(pred.probs))] += 1
        else:
            np.add.at(c, pred.class_ids[shown].astype(int), 1)
        ids.append(int(task["id"]))
        unc.append(u)
        counts.append(c)
        embs.append(pred.embedding)
        cands.append(cand)
        regions.append(served.regions(pred, more))
        others.append(max((control_uncertainty(other, settings) for other in more), default=0.0))
        hidden = (pred.scores >= settings.candidate_threshold) & ~shown
        costs.append(expected_seconds(pred.scores[shown], pred.scores[hidden], settings.annotation_costs))
        if pred.object_embeddings is not None:
            objs.append((pred.object_embeddings[shown], pred.class_ids[shown], pred.scores[shown]))
        else:
            objs.append(None)
    present = [e for e in embs if e is not None]
    has_emb = bool(embs) and len(present) == len(embs)
    has_objs = bool(objs) and all(o is not None for o in objs)
    return Observed(
        ids=np.array(ids, dtype=int),
        uncertainty=np.array(unc, dtype=np.float64),
        class_counts=np.stack(counts) if counts else np.zeros((0, n_classes)),
        embeddings=np.stack(present) if has_emb else None,
        regions=regions,
        errors=errors,
        candidates=cands,
        objects=ObjectSet.from_items([o for o in objs if o is not None]) if has_objs else None,
        expected_cost=np.array(costs, dtype=np.float64),
        other_controls=np.array(others, dtype=np.float64) if served.image_extras else None,
    )


def class_weights_from_labels(tasks: Sequence[Mapping[str, Any]], obs: Observed, served: Served) -> np.ndarray:
    """How hard each class is for the model, from the labeled tasks of this pass: the share of
    their true boxes of the class that the shown pre-annotation misses, with a prior of one found
    and one missed (:func:`ml_backend.al.effort.class_difficulty`). Measured on images the model was
    trained on, so it flatters the model; it ranks the classes, which is what the weights are for."""
    n_classes = len(served.model.names)
    label_ids = _label_ids(served)
    key = served.target.result_type
    by_id = {int(t["id"]): t for t in tasks if is_labeled(t)}
    found = np.zeros(n_classes)
    total = np.zeros(n_classes)
    for tid, shown in zip(obs.ids, obs.regions, strict=True):
        task = by_id.get(int(tid))
        if task is None:
            continue
        gt, gt_cls = _region_boxes(_current_regions(task), key, label_ids)
        pred, pred_cls = _region_boxes(shown, key, label_ids)
        f, t = class_recall(gt, gt_cls, pred, pred_cls, n_classes)
        found += f
        total += t
    return class_difficulty(found, total)


def normalized_uncertainty(u: np.ndarray, settings: Settings, scale: float | None = None) -> np.ndarray:
    """Uncertainty in [0, 1]: ``sum`` and ``calibrated`` are divided by the pool's largest (or ``scale``)."""
    if settings.uncertainty_aggregation in ("sum", "calibrated") and settings.uncertainty_measure != "tta":
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
    weights = class_weights_from_labels(tasks, obs, served) if settings.uncertainty_aggregation == "calibrated" else None
    raw = obs.uncertainty_with(weights, settings)
    u = obs.combined(normalized_uncertainty(raw, settings))
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
            objects=obs.objects.subset(pool_idx) if obs.objects is not None else None,
            labeled_objects=obs.objects.subset(np.flatnonzero(lab)) if obs.objects is not None and lab.any() else None,
            expected_cost=obs.expected_cost[pool_idx] if obs.expected_cost is not None else None,
            n_labeled=int(lab.sum()),
        )
        priority[pool_idx] = capped_rank(_strategy(pool, settings, served).rank, pool, strategy_params(settings))
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
    scale = max(1.0, float(raw.max())) if settings.uncertainty_aggregation in ("sum", "calibrated") else 1.0
    return ScoredPool(scores, predictions, obs.errors, E, labeled_counts, scale, weights)


def strategy_params(settings: Settings) -> StrategyParams:
    """The strategy strengths, k-center batch and seed from ``AL_*`` settings."""
    return StrategyParams(
        uncertainty_weight=settings.al_uncertainty_weight,
        diversity_weight=settings.al_diversity_weight,
        class_balance_weight=settings.al_class_balance_weight,
        batch_size=settings.al_batch,
        seed=settings.al_seed,
        cost_weight=settings.al_cost_weight,
        cost_cap=settings.al_cost_cap,
        prefilter=settings.al_prefilter,
        cold_start_labels=settings.al_cold_start_labels,
    )


def strategy_name(settings: Settings, served: Served) -> str:
    """The strategy that orders the project's queue: ``AL_STRATEGY``, except that while the served
    model cannot predict some of the project's labels (a new project's classes, before its own
    model is trained; a label added since) the queue is ordered by ``AL_COLD_START_STRATEGY``
    (by default ``typical``: the most typical image of each uncovered cluster of the pretrained
    features), since uncertainty about other classes says nothing of them. ``random`` stays random.

    Example:
        >>> from ml_backend.inference.label_config import Target
        >>> target = Target("b", "i", "image", "rectangle", ("fish",), {})
        >>> strategy_name(Settings(al_cold_start_strategy="typical"), Served(None, target, {}))  # type: ignore[arg-type]
        'typical'
    """
    return settings.al_strategy if served.coverage.complete else cold_start_order(settings)


def cold_start_order(settings: Settings) -> str:
    """The queue's order while the served model cannot predict some of a project's labels.

    Example:
        >>> cold_start_order(Settings(al_cold_start_strategy="typical")), cold_start_order(Settings(al_strategy="random", al_cold_start_strategy="typical"))
        ('typical', 'random')
    """
    return "random" if settings.al_strategy == "random" else settings.al_cold_start_strategy


def _strategy(pool: Pool, settings: Settings, served: Served) -> StrategySpec:
    name = strategy_name(settings, served)
    spec = resolve(name, pool)
    if spec.name != name:
        log.warning("the %s strategy needs embeddings, which these weights do not give (exported model?): using %s", name, spec.name)
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
    weights = state["class_weights"] if "class_weights" in state and len(state["class_weights"]) else None
    u = obs.combined(normalized_uncertainty(obs.uncertainty_with(weights, settings), settings, scale=float(state["max_uncertainty"])))
    labeled_emb = state["embeddings"][state["labeled"]] if state["labeled"].any() else None
    d = diversity_scores(E, labeled_emb) if E is not None else np.ones(len(ids))
    pool = Pool(
        uncertainty=u,
        embeddings=E,
        labeled_embeddings=labeled_emb,
        class_counts=obs.class_counts,
        labeled_class_counts=state["labeled_counts"] if len(state["labeled_counts"]) else None,
        ids=ids,
        objects=obs.objects,
        expected_cost=obs.expected_cost,
        n_labeled=int(state["labeled"].sum()),
    )
    prio = _strategy(pool, settings, served).stream(pool, strategy_params(settings))
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
