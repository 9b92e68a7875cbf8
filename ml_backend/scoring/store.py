"""The last scores of each project, kept under ``MODEL_DIR/scores`` (for ``GET /scores`` and for
scoring newly imported tasks without a full pass).

Two files per project (:class:`ml_backend.state.StatePaths`), each replaced atomically and
fsynced: the scores as JSON, and the arrays that scoring new tasks needs (normalized embeddings,
which tasks are labeled, cluster centres, labeled objects per class, the uncertainty scale) as
``.npz``.

Example:
    >>> import tempfile
    >>> store = ScoreStore(StatePaths(tempfile.mkdtemp()))
    >>> store.load(3) is None
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ml_backend.al.diversity import diversity_scores, normalize
from ml_backend.scoring.pool import ScoredPool, TaskScore
from ml_backend.state import StatePaths, atomic_write


class ScoreStore:
    """Last scores per project.

    Args:
        paths: the ``MODEL_DIR`` layout.
    """

    def __init__(self, paths: StatePaths):
        self.paths = paths

    def save(self, project_id: int, scores: Sequence[TaskScore], pooled: ScoredPool | None = None) -> None:
        """Keep the scores (for ``/scores``) and, with ``pooled``, what stream scoring needs."""
        atomic_write(self.paths.score_file(project_id), json.dumps([asdict(s) for s in scores]))
        if pooled is not None and pooled.embeddings is not None and len(pooled.scores):
            E = normalize(pooled.embeddings)
            clusters = np.array([s.cluster for s in pooled.scores])
            centroids = np.stack([E[clusters == c].mean(axis=0) for c in sorted(set(clusters.tolist()))])
            arrays: dict[str, Any] = {
                "task_ids": np.array([s.task for s in pooled.scores]),
                "embeddings": E,
                "labeled": np.array([s.labeled for s in pooled.scores]),
                "centroids": normalize(centroids),
                "labeled_counts": pooled.labeled_counts if pooled.labeled_counts is not None else np.zeros(0),
                "max_uncertainty": np.array(pooled.uncertainty_scale),
                "class_weights": pooled.class_weights if pooled.class_weights is not None else np.zeros(0),
            }
            atomic_write(self.paths.score_state(project_id), lambda f: np.savez(f, **arrays))

    def projects(self) -> list[int]:
        """The projects with stored scores."""
        return self.paths.scored_projects()

    def load(self, project_id: int) -> list[dict] | None:
        p = self.paths.score_file(project_id)
        return json.loads(p.read_text()) if p.exists() else None

    def load_state(self, project_id: int) -> dict[str, np.ndarray] | None:
        p = self.paths.score_state(project_id)
        if not p.exists():
            return None
        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    def mark_labeled(self, project_id: int, labeled: dict[int, bool]) -> list[dict]:
        """Record which tasks are labeled now: their ``labeled`` flag (a labeled task's priority is
        0), and every task's diversity recomputed from the kept embeddings against the labeled ones
        (no model pass). Returns the stored scores of the tasks in ``labeled`` (empty when the
        project was never scored)."""
        scores = self.load(project_id)
        if scores is None:
            return []
        state = self.load_state(project_id)
        for s in scores:
            flag = labeled.get(int(s["task"]))
            if flag is not None:
                s["labeled"] = flag
                if flag:
                    s["priority"] = 0.0
        if state is not None and len(state["task_ids"]):
            ids = state["task_ids"].astype(int)
            flags = state["labeled"].astype(bool)
            for k, t in enumerate(ids):
                if int(t) in labeled:
                    flags[k] = labeled[int(t)]
            state["labeled"] = flags
            E = state["embeddings"]
            D = diversity_scores(E, E[flags] if flags.any() else None)
            by_task = dict(zip(ids.tolist(), D.tolist(), strict=True))
            for s in scores:
                if int(s["task"]) in by_task:
                    s["diversity"] = float(by_task[int(s["task"])])
            arrays: dict[str, Any] = state
            atomic_write(self.paths.score_state(project_id), lambda f: np.savez(f, **arrays))
        atomic_write(self.paths.score_file(project_id), json.dumps(scores))
        return [s for s in scores if int(s["task"]) in labeled]

    def append(self, project_id: int, pooled: ScoredPool) -> None:
        """Add newly scored tasks to the stored scores and embeddings."""
        old = {s["task"]: s for s in self.load(project_id) or []}
        old.update({s.task: asdict(s) for s in pooled.scores})
        atomic_write(self.paths.score_file(project_id), json.dumps(list(old.values())))
        state = self.load_state(project_id)
        if state is not None and pooled.embeddings is not None:
            state["task_ids"] = np.concatenate([state["task_ids"], [s.task for s in pooled.scores]])
            state["embeddings"] = np.concatenate([state["embeddings"], normalize(pooled.embeddings)])
            state["labeled"] = np.concatenate([state["labeled"], np.zeros(len(pooled.scores), dtype=bool)])
            arrays: dict[str, Any] = state
            atomic_write(self.paths.score_state(project_id), lambda f: np.savez(f, **arrays))
