"""Scores into Label Studio: predictions that order the queue, score columns, the queue tab.

* :func:`score_project` scores every task of a project (:func:`ml_backend.scoring.pool.score_tasks`)
  and replaces this model version's predictions in bulk (:func:`replace_predictions`: new ones in
  before old ones go), switches the project to uncertainty sampling on this version, makes sure
  the queue tab exists and stores the scores.
* :func:`score_new_tasks` scores tasks imported since the last full scoring
  (:func:`ml_backend.scoring.pool.score_stream`) and puts them in the queue without re-ordering
  the rest.

The scores are also written into each task's data (``al_priority``, ``al_uncertainty``,
``al_diversity``, ``al_difficulty``: :data:`integrations.queue_view.SCORE_COLUMNS`), which the
Data Manager shows as columns; only tasks whose values changed are updated, and their own data
is kept (:func:`write_score_columns`). Label Studio 1.23.2's bulk prediction import drops ``cluster``, so up to
``AL_CLUSTER_PUSH_MAX`` predictions are created one request each (four at a time, measured about
25 per second) to keep it; larger pushes go in bulk, 1,000 per request, without it.

Re-scoring in place: no task is ever without a prediction of the project's current version.
Label Studio 1.23.2 orders the queue (uncertainty sampling) on the predictions whose
``model_version`` is the project's ``model_version``
(``projects/functions/next_task.py:_try_uncertainty_sampling``), and shows only those in the
labeling screen; it deletes predictions in bulk only by model version
(``DELETE /api/projects/<id>/model-versions/``, one request) or by task (the Data Manager action,
every version of those tasks), by id only one request each (``DELETE /api/predictions/<id>``). So
a re-score of the version the project already uses goes through a staging name
(:data:`STAGING_SUFFIX`): push the new predictions as ``<version>~staged``, switch the project to
it, delete ``<version>``, push them again as ``<version>``, switch back, delete the staging name.
At every moment the project's version has exactly one prediction per task. A re-score with a
version the project does not use yet (after a retraining, the first scoring) needs no staging:
push, switch, then retire the old versions. Compared with deleting first, a re-score in place
costs one more push (bulk: one request per 1,000 tasks) and three more one-request calls; it is
chosen over alternating two names (half the pushes) because the project's ``model_version`` and
every prediction's keep naming the served weights, which the tools, tests and users read.
Crash safety: whatever step a crash interrupts, the project's version still has a prediction on
every task; the leftovers are predictions of a version the project does not use, which the next
scoring deletes before it pushes (never the version in use), so duplicates never stay.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from integrations.connect import show_speedup
from integrations.label_studio import LabelStudioAPI
from integrations.queue_view import REVIEW_MARK, SCORE_COLUMNS, ensure_queue_view, ensure_review_view
from ml_backend.faults import crash_point
from ml_backend.inference.predictor import Predictor
from ml_backend.inference.versions import speedup_of
from ml_backend.scoring.pool import ScoredPool, TaskScore, is_labeled, score_stream, score_tasks
from ml_backend.scoring.store import ScoreStore
from ml_backend.settings import Settings

log = logging.getLogger(__name__)


def push_predictions(client: LabelStudioAPI, project_id: int, predictions: list[dict], settings: Settings) -> str:
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


STAGING_SUFFIX = "~staged"
"""Appended to the served version for the predictions that hold the queue while a re-score
replaces the version's own (:func:`replace_predictions`)."""


def staging_name(version: str) -> str:
    """The staging model version of ``version``.

    Example:
        >>> staging_name("best-1a2b3c")
        'best-1a2b3c~staged'
    """
    return f"{version}{STAGING_SUFFIX}"


def published_name(published: str | None, version: str) -> str:
    """The name under which ``version``'s predictions go now: its staging name while the project
    uses it (a re-score in place was interrupted), else the version itself.

    Example:
        >>> published_name("v1~staged", "v1"), published_name("v0", "v1"), published_name(None, "v1")
        ('v1~staged', 'v1', 'v1')
    """
    return published if published == staging_name(version) else version


def _named(predictions: Sequence[Mapping[str, Any]], name: str) -> list[dict]:
    return [{**p, "model_version": name} for p in predictions]


def replace_predictions(
    client: LabelStudioAPI,
    project_id: int,
    predictions: list[dict],
    version: str,
    settings: Settings,
    published: str | None,
    retire: Sequence[str] = (),
) -> list[str]:
    """Put ``predictions`` (of model ``version``) in Label Studio as the project's queue order so
    that no task is ever without a prediction of the project's current ``model_version``; returns
    the model versions pushed, in order (the staging one first, for a re-score in place).

    ``published`` is the project's ``model_version`` before (what Label Studio orders the queue
    on now). Only versions the project does not use are ever deleted: first the leftovers of an
    interrupted scoring under the name about to be pushed (so that no task gets two), then, once
    the project uses the new predictions, the previous ones, the staging name and ``retire``.
    """
    stage = staging_name(version)
    pushed: list[str] = []
    if published == version:  # re-score in place: hold the queue with a staged copy
        client.delete_model_version(project_id, stage)
        client.import_predictions(project_id, _named(predictions, stage))
        pushed.append(stage)
        crash_point("scoring:pushed")
        client.use_uncertainty_sampling(project_id, stage)
        client.delete_model_version(project_id, version)
        push_predictions(client, project_id, predictions, settings)
        pushed.append(version)
    else:
        client.delete_model_version(project_id, version)  # not in use: leftovers of an interrupted scoring
        push_predictions(client, project_id, predictions, settings)
        pushed.append(version)
        crash_point("scoring:pushed")
    client.use_uncertainty_sampling(project_id, version)
    stale = [stage] if stage in pushed or published == stage else []
    for old in retire:
        if old and old != version:
            stale += [old, staging_name(old)]  # its staged copy too: a crash may have left one
    for name in dict.fromkeys(stale):
        client.delete_model_version(project_id, name)
    return pushed


def earlier_predictions(tasks: Sequence[Mapping[str, Any]], task_ids: Sequence[int], version: str) -> list[dict]:
    """The prediction of ``version`` (or of its staged copy) each of ``task_ids`` carries in
    ``tasks`` (as listed, with their predictions), to push again: a task whose image failed in a
    re-score of the version in use keeps its place in the queue instead of losing its only
    prediction of the project's version. No request: the listing has them.

    Example:
        >>> held = [{"id": 3, "predictions": [{"model_version": "v1~staged", "result": [], "score": 0.4, "cluster": 2}]}]
        >>> earlier_predictions(held, [3], "v1")
        [{'task': 3, 'result': [], 'score': 0.4, 'model_version': 'v1', 'cluster': 2}]
    """
    names = {version, staging_name(version)}
    wanted = {int(t) for t in task_ids}
    out: list[dict] = []
    for task in tasks:
        if int(task["id"]) not in wanted:
            continue
        for p in task.get("predictions") or []:
            if isinstance(p, Mapping) and p.get("model_version") in names:
                kept = {"task": int(task["id"]), "result": p.get("result") or [], "score": p.get("score"), "model_version": version}
                if p.get("cluster") is not None:
                    kept["cluster"] = p["cluster"]
                out.append(kept)
                break
    return out


COLUMN_CHUNK = 16  # tasks read in one request before their writes (4 a worker): the window an edit can be lost in


def write_score_columns(
    client: LabelStudioAPI, project_id: int, columns: Mapping[int, Mapping[str, Any]], workers: int = 4, chunk: int = COLUMN_CHUNK
) -> int:
    """Write the score columns of ``columns`` (``{task: new data}``, as :func:`score_columns`
    gives) without overwriting a concurrent edit of the rest of the task's data; returns how many
    tasks were written.

    Label Studio 1.23.2's ``PATCH /api/tasks/<id>`` replaces ``data`` whole (its
    ``TaskSimpleSerializer`` is a plain model serializer, with no merge and no conditional write),
    so the tasks are read back ``chunk`` at a time, just before their writes, as Label Studio
    stores them (storage URIs unresolved: :meth:`~integrations.label_studio.LabelStudioClient.tasks_as_stored`),
    and only the ``al_*`` keys are merged into that; a task deleted meanwhile is skipped, one
    already up to date is not written. An edit of a task's data that lands between the chunk's
    read and that task's write (about four rounds of writes of the ``workers``; longer when Label Studio is slow or a
    write is retried) is still lost: Label Studio offers no
    narrower write.
    """
    ours = set(SCORE_COLUMNS.values())
    items = sorted((int(t), {k: v for k, v in d.items() if k in ours}) for t, d in columns.items())
    step = max(1, chunk)
    written = 0
    for at in range(0, len(items), step):
        part = items[at : at + step]
        stored = client.tasks_as_stored(project_id, [t for t, _ in part])
        updates = {}
        for tid, new in part:
            task = stored.get(tid)
            if task is None:  # deleted since it was listed
                continue
            current = dict(task.get("data") or {})
            if any(current.get(k) != v for k, v in new.items()):
                updates[tid] = {**current, **new}
        if updates:
            client.update_task_data(updates, workers=workers)
            written += len(updates)
    return written


def score_columns(tasks: Sequence[Mapping[str, Any]], scores: Sequence[TaskScore], review: set[int] | None = None) -> dict[int, dict]:
    """New ``data`` for each task whose score columns changed (rounded to 3 decimals).

    The task's own data is kept as it is; only the ``al_*`` keys are added or replaced. With
    ``review`` (the tasks ``REVIEW_ONLY`` marks; empty when it is off), the ``al_review`` column
    marks those tasks and is cleared on the others that carry it; with None (not decided here:
    a label change), only labeled tasks lose their mark. A labeled task is never marked.

    Example:
        >>> s = TaskScore(1, 0.5, 0.5, 0.5, 0, "medium", True, "v1")
        >>> score_columns([{"id": 1, "data": {"al_review": REVIEW_MARK}}], [s])[1]["al_review"]
        ''
    """
    by_id = {int(t["id"]): t for t in tasks}
    out: dict[int, dict] = {}
    for s in scores:
        task = by_id.get(s.task)
        if task is None:
            continue
        data = dict(task.get("data") or {})
        new = {
            SCORE_COLUMNS["priority"]: round(s.priority, 3),
            SCORE_COLUMNS["uncertainty"]: round(s.uncertainty, 3),
            SCORE_COLUMNS["diversity"]: round(s.diversity, 3),
            SCORE_COLUMNS["difficulty"]: s.difficulty,
        }
        key = SCORE_COLUMNS["review"]
        mark = REVIEW_MARK if review is not None and s.task in review and not s.labeled else ""
        if mark or (data.get(key) and (review is not None or s.labeled)):
            new[key] = mark
        if any(data.get(k) != v for k, v in new.items()):
            out[s.task] = {**data, **new}
    return out


def score_new_tasks(
    client: LabelStudioAPI, project_id: int, tasks: Sequence[Mapping[str, Any]], predictor: Predictor, settings: Settings, store: ScoreStore
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
    pooled = score_stream(tasks, served, predictor, settings, state)
    if not pooled.scores:
        return pooled
    name = published_name(project.get("model_version"), served.model.version)
    push_predictions(client, project_id, _named(pooled.predictions, name) if name != served.model.version else pooled.predictions, settings)
    columns = score_columns(tasks, pooled.scores)
    if columns:
        write_score_columns(client, project_id, columns)
    store.append(project_id, pooled)
    return pooled


def show_served_speedup(client: LabelStudioAPI, project_id: int, predictor: Predictor, settings: Settings, version: str) -> bool:
    """Show the served version's measured speed-up on this backend's registration in Label Studio
    (:func:`integrations.connect.show_speedup`), found by the URL Label Studio reaches it at (kept
    from its requests). Never fails the scoring: a problem is logged. True when shown."""
    try:
        path = settings.paths.backend_url(project_id)
        info = predictor.models.current(project_id)
        speed = speedup_of(info.metrics) if info is not None and info.version == version else None
        if not path.is_file() or not speed or not isinstance(speed.get("speedup"), (int, float)):
            return False
        return show_speedup(client, project_id, path.read_text().strip(), version, speed)
    except Exception as exc:
        log.warning("project %s: could not show the speed-up on the ML backend's title in Label Studio: %s", project_id, exc)
        return False


def served_thresholds(predictor: Predictor, project_id: int) -> dict[str, float | None]:
    """The served model's per-class confidence that is right ``PSEUDO_PRECISION`` of the time on its
    held-out labels (measured when it was trained; none for a model never retrained)."""
    info = predictor.models.current(project_id)
    return dict((info.metrics.get("new") or {}).get("review_thresholds") or {}) if info else {}


def review_only_tasks(pooled: ScoredPool, thresholds: Mapping[str, float | None]) -> set[int]:
    """Tasks whose pre-annotation has boxes and every box clears its class's threshold: a reviewer
    can accept them quickly (``REVIEW_ONLY``). A class without a threshold never clears it.

    Example:
        >>> pool = ScoredPool([], [{"task": 1, "result": [{"score": 0.97, "value": {"rectanglelabels": ["cat"]}}]}], {})
        >>> review_only_tasks(pool, {"cat": 0.9}), review_only_tasks(pool, {"cat": None})
        ({1}, set())
    """
    out = set()
    for p in pooled.predictions:
        regions = p.get("result") or []
        ok = bool(regions)
        for r in regions:
            labels = [x for key in ("rectanglelabels", "polygonlabels", "labels", "choices") for x in (r.get("value") or {}).get(key, [])]
            limit = thresholds.get(str(labels[0])) if labels else None
            if limit is None or float(r.get("score", 0.0)) < limit:
                ok = False
                break
        if ok:
            out.add(int(p["task"]))
    return out


def refresh_labels(client: LabelStudioAPI, project_id: int, task_ids: Sequence[int], store: ScoreStore) -> int:
    """Make the stored scores follow label changes now: each task is read back from Label Studio
    (labeled or not after the change), marked in ``/scores`` (a labeled task's priority is 0), every
    diversity recomputed from the kept embeddings (no model pass), and the changed tasks' score
    columns rewritten in the Data Manager. Returns how many tasks were updated (0 for a project
    never scored: its first scoring reads the labels anyway)."""
    if store.load(project_id) is None:
        return 0
    tasks = client.tasks_as_stored(project_id, task_ids)  # a deleted task has nothing left to update
    updated = store.mark_labeled(project_id, {tid: is_labeled(t) for tid, t in tasks.items()})
    columns = score_columns(list(tasks.values()), [TaskScore(**s) for s in updated])  # merged into the data just read, as stored
    if columns:
        client.update_task_data(columns)
    return len(updated)


def score_project(
    client: LabelStudioAPI, project_id: int, predictor: Predictor, settings: Settings, progress: bool = True, retire: Sequence[str] = ()
) -> ScoredPool:
    """Score every task of a project and reorder its queue in Label Studio.

    Steps: fetch the project and all its tasks; score them (:func:`score_tasks`) with the
    project's served model; replace this model version's predictions in bulk, new ones in before
    old ones go (:func:`replace_predictions`); switch the project to uncertainty sampling on this
    version; make sure the "Active learning queue" Data Manager
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
        predictions = pooled.predictions
        if pooled.errors and project.get("model_version") in (version, staging_name(version)):
            predictions = predictions + earlier_predictions(tasks, sorted(pooled.errors), version)
        replace_predictions(client, project_id, predictions, version, settings, project.get("model_version"), retire)
        ensure_queue_view(client, project_id)
        if settings.review_only:
            ensure_review_view(client, project_id)
        show_served_speedup(client, project_id, predictor, settings, version)
    review = review_only_tasks(pooled, served_thresholds(predictor, project_id)) if settings.review_only else set()
    columns = score_columns(tasks, pooled.scores, review)
    if columns:
        write_score_columns(client, project_id, columns)
    ScoreStore(settings.paths).save(project_id, pooled.scores, pooled)
    for tid, err in pooled.errors.items():
        log.warning("task %s not scored: %s", tid, err)
    return pooled
