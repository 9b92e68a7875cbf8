"""Pool scoring: per-task uncertainty, diversity, priority and cluster, pushed to Label Studio.

One pass of the model over a project's tasks (images come from the disk cache after the first
time) gives, per task, the pre-annotation, the per-class scores of every object and candidate,
and an image embedding. From these:

* ``uncertainty``: :func:`ml_backend.uncertainty.image_uncertainty` over objects and candidates
  (confidence >= ``CANDIDATE_THRESHOLD``), ``UNCERTAINTY_MEASURE`` and ``UNCERTAINTY_AGGREGATION``;
* ``diversity``: distance to the nearest labeled task's embedding / 2 (1 when none is labeled);
* ``priority``: the ``AL_STRATEGY`` strategy over the unlabeled tasks (labeled tasks get 0);
* ``cluster``: faiss k-means over all tasks' embeddings (``AL_CLUSTERS``);
* ``difficulty``: ``easy`` / ``medium`` / ``hard`` for uncertainty below 1/3, below 2/3, above.

Label Studio orders the queue by prediction score, lowest first, so each task's prediction is
written with ``score = 1 - priority`` and its ``cluster``, replacing this model version's
previous predictions (one bulk delete); the project is switched to uncertainty sampling on this
version. The scores are also written into each task's data (``al_priority``, ``al_uncertainty``,
``al_diversity``, ``al_difficulty``), which Label Studio's Data Manager shows as sortable,
filterable columns; only tasks whose values changed are updated, and their own data is kept.
Label Studio 1.23.2's bulk prediction import drops ``cluster``, so up to
``AL_CLUSTER_PUSH_MAX`` predictions are created one request each (four at a time, measured about
25 per second) to keep it; larger pushes go in bulk, 1,000 per request, without it. With ``sum`` aggregation, uncertainty is
divided by the pool's largest so that it stays in ``[0, 1]``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ml_backend.diversity import diversity_scores, kmeans_clusters, normalize
from ml_backend.faults import crash_point
from ml_backend.ls_results import to_ls_results
from ml_backend.model import ImagePrediction
from ml_backend.predict import Predictor, Served
from ml_backend.settings import Settings
from ml_backend.strategies import Pool, StrategyParams, class_rarity, get_strategy
from ml_backend.uncertainty import image_uncertainty

log = logging.getLogger(__name__)

QUEUE_VIEW_TITLE = "Active learning queue"
# Columns the queue tab hides so that the score columns fit on screen.
QUEUE_VIEW_HIDDEN = {
    "explore": [f"tasks:{c}" for c in (
        "inner_id", "annotators", "annotations_results", "annotations_ids", "predictions_results", "predictions_model_versions",
        "file_upload", "storage_filename", "created_at", "updated_at", "updated_by", "avg_lead_time", "draft_exists", "completed_at",
    )],
    "labeling": [],
}
# Task data keys that show the scores as Data Manager columns (sortable, filterable).
DATA_KEYS = {"priority": "al_priority", "uncertainty": "al_uncertainty", "diversity": "al_diversity", "difficulty": "al_difficulty"}


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


def observe(tasks: Sequence[Mapping[str, Any]], served: Served, predictor: Predictor, settings: Settings, progress: bool = False) -> Observed:
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
    has_emb = bool(embs) and all(e is not None for e in embs)
    return Observed(
        ids=np.array(ids, dtype=int),
        uncertainty=np.array(unc, dtype=np.float64),
        class_counts=np.stack(counts) if counts else np.zeros((0, n_classes)),
        embeddings=np.stack(embs) if has_emb else None,
        regions=regions,
        errors=errors,
    )


def _normalized_uncertainty(u: np.ndarray, settings: Settings, scale: float | None = None) -> np.ndarray:
    """Uncertainty in [0, 1]: ``sum`` aggregation is divided by the pool's largest (or ``scale``)."""
    if settings.uncertainty_aggregation == "sum":
        return np.clip(u / max(1.0, scale if scale is not None else float(u.max(initial=0.0))), 0, 1)
    return np.clip(u, 0, 1)


def _prediction(task_id: int, regions: list[dict], priority: float, version: str, cluster: int) -> dict:
    return {"task": int(task_id), "result": regions, "score": float(1.0 - priority), "model_version": version, "cluster": int(cluster)}


def score_tasks(tasks: Sequence[Mapping[str, Any]], served: Served, predictor: Predictor, settings: Settings, progress: bool = False) -> ScoredPool:
    """Run the model over ``tasks`` and compute every score (no Label Studio calls)."""
    obs = observe(tasks, served, predictor, settings, progress)
    if not len(obs.ids):
        return ScoredPool([], [], obs.errors)
    u = _normalized_uncertainty(obs.uncertainty, settings)
    labeled_ids = {int(t["id"]) for t in tasks if is_labeled(t)}
    lab = np.array([i in labeled_ids for i in obs.ids])
    E = obs.embeddings
    labeled_counts = labeled_class_counts(tasks, served, len(served.model.names))
    strategy = settings.al_strategy if E is not None or settings.al_strategy in ("random", "uncertainty") else "uncertainty"
    if strategy != settings.al_strategy:
        log.warning("AL_STRATEGY=%s needs embeddings, which these weights do not give (exported model?): using uncertainty", settings.al_strategy)
    diversity = diversity_scores(E, E[lab] if lab.any() else None) if E is not None else np.ones(len(u))
    priority = np.zeros(len(u))
    pool_idx = np.flatnonzero(~lab)
    if len(pool_idx):
        params = StrategyParams(
            uncertainty_weight=settings.al_uncertainty_weight,
            diversity_weight=settings.al_diversity_weight,
            class_balance_weight=settings.al_class_balance_weight,
            batch_size=settings.al_batch,
            seed=settings.al_seed,
        )
        pool = Pool(
            uncertainty=u[pool_idx],
            embeddings=E[pool_idx] if E is not None else None,
            labeled_embeddings=E[lab] if E is not None and lab.any() else None,
            class_counts=obs.class_counts[pool_idx],
            labeled_class_counts=labeled_counts,
        )
        priority[pool_idx] = get_strategy(strategy)(pool, params)
    clusters = kmeans_clusters(E, settings.al_clusters, seed=settings.al_seed) if E is not None else np.zeros(len(u), dtype=int)
    version = served.model.version
    scores = [
        TaskScore(int(t), float(u[j]), float(diversity[j]), float(priority[j]), int(clusters[j]), difficulty(float(u[j])), bool(lab[j]), version)
        for j, t in enumerate(obs.ids)
    ]
    predictions = [_prediction(t, obs.regions[j], priority[j], version, clusters[j]) for j, t in enumerate(obs.ids)]
    for p, labeled in zip(predictions, lab):
        if labeled:
            p["score"] = 1.0  # labeled tasks sit at the end of the queue
    scale = max(1.0, float(obs.uncertainty.max())) if settings.uncertainty_aggregation == "sum" else 1.0
    return ScoredPool(scores, predictions, obs.errors, E, labeled_counts, scale)


def push_predictions(client: Any, project_id: int, predictions: list[dict], settings: Settings) -> str:
    """Write predictions to Label Studio; returns ``"each"`` or ``"bulk"``.

    Label Studio 1.23's bulk import stores task, result, score and model version but drops
    ``cluster``; up to ``AL_CLUSTER_PUSH_MAX`` predictions (with clusters on) go one request each
    to keep it, more go in bulk.
    """
    if settings.al_clusters > 1 and len(predictions) <= settings.al_cluster_push_max:
        client.create_predictions(predictions)
        return "each"
    client.import_predictions(project_id, predictions)
    return "bulk"


def score_columns(tasks: Sequence[Mapping[str, Any]], scores: Sequence[TaskScore]) -> dict[int, dict]:
    """New ``data`` for each task whose score columns changed (rounded to 3 decimals).

    The task's own data is kept as it is; only the ``al_*`` keys are added or replaced.
    """
    by_id = {int(t["id"]): t for t in tasks}
    out: dict[int, dict] = {}
    for s in scores:
        task = by_id.get(s.task)
        if task is None:
            continue
        data = dict(task.get("data") or {})
        new = {
            DATA_KEYS["priority"]: round(s.priority, 3),
            DATA_KEYS["uncertainty"]: round(s.uncertainty, 3),
            DATA_KEYS["diversity"]: round(s.diversity, 3),
            DATA_KEYS["difficulty"]: s.difficulty,
        }
        if any(data.get(k) != v for k, v in new.items()):
            out[s.task] = {**data, **new}
    return out


def stream_priority(u: np.ndarray, d: np.ndarray, r: np.ndarray, settings: Settings, task_ids: np.ndarray) -> np.ndarray:
    """Priority of tasks arriving between full scorings, from their own scores alone.

    ``uncertainty``: ``u * r^c``, exactly as in a full scoring. ``random``: a seeded draw per task
    id. ``diversity`` / ``hybrid``: ``0.5 * d^(2b) * (eps + u)^a * r^c`` (``a = 0`` for
    diversity; ``d`` the diversity score): the same objective as the k-center step, placed in the
    lower half of the queue, below the batch the last full scoring spread out with k-center; the
    next full scoring places them exactly.
    """
    c = settings.al_class_balance_weight
    if settings.al_strategy == "uncertainty":
        return np.clip(u, 0, 1) * r**c
    if settings.al_strategy == "random":
        return np.array([np.random.default_rng([settings.al_seed, int(t)]).random() for t in task_ids])
    a = settings.al_uncertainty_weight if settings.al_strategy == "hybrid" else 0.0
    value = np.clip(d, 0, 1) ** (2 * settings.al_diversity_weight) * (1e-6 + np.clip(u, 0, 1)) ** a * r**c
    return 0.5 * np.clip(value, 0, 1)


def score_new_tasks(
    client: Any, project_id: int, tasks: Sequence[Mapping[str, Any]], predictor: Predictor, settings: Settings, store: "ScoreStore"
) -> ScoredPool:
    """Score tasks imported after the last full scoring and put them in the queue (no full re-score).

    Uses the embeddings and cluster centres kept by the last full scoring; a project never scored
    gets a full scoring instead.
    """
    state = store.load_state(project_id)
    if state is None:
        return score_project(client, project_id, predictor, settings, progress=False)
    project = client.get_project(project_id)
    served = predictor.serve(project["label_config"], project=project_id)
    obs = observe(tasks, served, predictor, settings)
    if not len(obs.ids):
        return ScoredPool([], [], obs.errors)
    ids, E = obs.ids, obs.embeddings
    u = _normalized_uncertainty(obs.uncertainty, settings, scale=float(state["max_uncertainty"]))
    labeled_emb = state["embeddings"][state["labeled"]] if state["labeled"].any() else None
    d = diversity_scores(E, labeled_emb) if E is not None else np.ones(len(ids))
    rarity = class_rarity(obs.class_counts, state["labeled_counts"] if len(state["labeled_counts"]) else None, len(ids))
    prio = stream_priority(u, d, rarity, settings, ids)
    clusters = np.argmax(normalize(E) @ state["centroids"].T, axis=1) if E is not None and len(state["centroids"]) else np.zeros(len(ids), dtype=int)
    version = served.model.version
    scores = [TaskScore(int(t), float(u[j]), float(d[j]), float(prio[j]), int(clusters[j]), difficulty(float(u[j])), False, version) for j, t in enumerate(ids)]
    predictions = [_prediction(t, obs.regions[j], prio[j], version, clusters[j]) for j, t in enumerate(ids)]
    push_predictions(client, project_id, predictions, settings)
    columns = score_columns(tasks, scores)
    if columns:
        client.update_task_data(columns)
    pooled = ScoredPool(scores, predictions, obs.errors, E)
    store.append(project_id, pooled)
    return pooled


class ScoreStore:
    """Last scores per project, as JSON files under ``MODEL_DIR/scores`` (written atomically)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, project_id: int) -> Path:
        return self.root / f"project-{int(project_id)}.json"

    def state_path(self, project_id: int) -> Path:
        return self.root / f"project-{int(project_id)}.npz"

    def _atomic(self, target: Path, write: Callable[[Any], None], mode: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, target)

    def save(self, project_id: int, scores: Sequence[TaskScore], pooled: "ScoredPool | None" = None, n_clusters: int = 8) -> None:
        """Keep the scores (for ``/scores``) and, with ``pooled``, what stream scoring needs."""
        self._atomic(self.path(project_id), lambda f: json.dump([asdict(s) for s in scores], f), "w")
        if pooled is not None and pooled.embeddings is not None and len(pooled.scores):
            E = normalize(pooled.embeddings)
            clusters = np.array([s.cluster for s in pooled.scores])
            centroids = np.stack([E[clusters == c].mean(axis=0) for c in sorted(set(clusters.tolist()))])
            arrays = {
                "task_ids": np.array([s.task for s in pooled.scores]),
                "embeddings": E,
                "labeled": np.array([s.labeled for s in pooled.scores]),
                "centroids": normalize(centroids),
                "labeled_counts": pooled.labeled_counts if pooled.labeled_counts is not None else np.zeros(0),
                "max_uncertainty": np.array(pooled.uncertainty_scale),
            }
            self._atomic(self.state_path(project_id), lambda f: np.savez(f, **arrays), "wb")

    def projects(self) -> list[int]:
        """The projects with stored scores."""
        ids = (p.stem.removeprefix("project-") for p in self.root.glob("project-*.json"))
        return sorted(int(i) for i in ids if i.isdigit())

    def load(self, project_id: int) -> list[dict] | None:
        p = self.path(project_id)
        return json.loads(p.read_text()) if p.exists() else None

    def load_state(self, project_id: int) -> dict[str, np.ndarray] | None:
        p = self.state_path(project_id)
        if not p.exists():
            return None
        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    def append(self, project_id: int, pooled: "ScoredPool") -> None:
        """Add newly scored tasks to the stored scores and embeddings."""
        old = {s["task"]: s for s in self.load(project_id) or []}
        old.update({s.task: asdict(s) for s in pooled.scores})
        self._atomic(self.path(project_id), lambda f: json.dump(list(old.values()), f), "w")
        state = self.load_state(project_id)
        if state is not None and pooled.embeddings is not None:
            state["task_ids"] = np.concatenate([state["task_ids"], [s.task for s in pooled.scores]])
            state["embeddings"] = np.concatenate([state["embeddings"], normalize(pooled.embeddings)])
            state["labeled"] = np.concatenate([state["labeled"], np.zeros(len(pooled.scores), dtype=bool)])
            self._atomic(self.state_path(project_id), lambda f: np.savez(f, **state), "wb")


def ensure_queue_view(client: Any, project_id: int) -> dict:
    """The "Active learning queue" Data Manager tab: ordered as annotators get tasks (by prediction
    score), with the score columns shown as numbers. Created once, then updated."""
    return client.ensure_view(
        project_id,
        QUEUE_VIEW_TITLE,
        ordering=["tasks:predictions_score"],
        hidden=QUEUE_VIEW_HIDDEN,
        display_types={f"tasks:data.{DATA_KEYS[k]}": "Number" for k in ("priority", "uncertainty", "diversity")},
    )


def score_project(
    client: Any, project_id: int, predictor: Predictor, settings: Settings, progress: bool = True, retire: Sequence[str] = ()
) -> ScoredPool:
    """Score every task of a project and reorder its queue in Label Studio.

    Steps: fetch the project and all its tasks; score them (:func:`score_tasks`) with the
    project's served model; replace this model version's predictions in bulk; switch the project
    to uncertainty sampling on this version; make sure the "Active learning queue" Data Manager
    tab exists; store the scores for ``GET /scores``.

    Args:
        retire: earlier model versions whose predictions are deleted once the new ones are in
            (after a retrained model is promoted), so each task keeps one prediction of ours.
    """
    project = client.get_project(project_id)
    served = predictor.serve(project["label_config"], project=project_id)
    tasks = client.list_tasks(project_id)
    pooled = score_tasks(tasks, served, predictor, settings, progress=progress)
    version = served.model.version
    if pooled.predictions:
        client.delete_model_version(project_id, version)
        push_predictions(client, project_id, pooled.predictions, settings)
        crash_point("scoring:pushed")
        client.use_uncertainty_sampling(project_id, version)
        for old in retire:
            if old and old != version:
                client.delete_model_version(project_id, old)
        ensure_queue_view(client, project_id)
    columns = score_columns(tasks, pooled.scores)
    if columns:
        client.update_task_data(columns)
    ScoreStore(settings.model_dir / "scores").save(project_id, pooled.scores, pooled)
    for tid, err in pooled.errors.items():
        log.warning("task %s not scored: %s", tid, err)
    return pooled
