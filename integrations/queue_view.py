"""The "Active learning queue" Data Manager tab and the score columns it shows.

The backend writes each task's scores into the task's own data under the :data:`SCORE_COLUMNS`
keys (``al_priority``, ``al_uncertainty``, ``al_diversity``, ``al_difficulty``), which Label
Studio's Data Manager shows as columns; sorting by them goes through the Data Manager's
order-by button. The tab lists tasks in the order annotators get them (by prediction score,
lowest first) with the numeric columns typed as numbers, so that they sort as numbers.

Example:
    >>> SCORE_COLUMNS["priority"]
    'al_priority'
"""

from __future__ import annotations

from collections.abc import Mapping

from integrations.label_studio import LabelStudioAPI

QUEUE_VIEW_TITLE = "Active learning queue"
# Task data keys that show the scores as Data Manager columns (sortable, filterable).
SCORE_COLUMNS = {
    "priority": "al_priority",
    "uncertainty": "al_uncertainty",
    "diversity": "al_diversity",
    "difficulty": "al_difficulty",
    "review": "al_review",
}
REVIEW_VIEW_TITLE = "Review only (auto-labelled)"
REVIEW_MARK = "auto-labelled, review only"
# Columns the queue tab hides so that the score columns fit on screen.
QUEUE_VIEW_HIDDEN = {
    "explore": [
        f"tasks:{c}"
        for c in (
            "inner_id",
            "annotators",
            "annotations_results",
            "annotations_ids",
            "predictions_results",
            "predictions_model_versions",
            "file_upload",
            "storage_filename",
            "created_at",
            "updated_at",
            "updated_by",
            "avg_lead_time",
            "draft_exists",
            "completed_at",
        )
    ],
    "labeling": [],
}


def ensure_queue_view(client: LabelStudioAPI, project_id: int) -> dict:
    """Create the queue tab once, then keep it up to date (ordering, hidden columns, number columns).

    Args:
        client: Label Studio's API.
        project_id: the project.
    """
    return client.ensure_view(
        project_id,
        QUEUE_VIEW_TITLE,
        ordering=["tasks:predictions_score"],
        hidden=QUEUE_VIEW_HIDDEN,
        display_types={f"tasks:data.{SCORE_COLUMNS[k]}": "Number" for k in ("priority", "uncertainty", "diversity")},
    )


def ensure_review_view(client: LabelStudioAPI, project_id: int) -> dict:
    """A tab listing the tasks marked review-only (``al_review``): every box of their pre-annotation
    is one the model is sure of, so a reviewer can accept them quickly."""
    return client.ensure_view(
        project_id,
        REVIEW_VIEW_TITLE,
        ordering=["tasks:id"],
        hidden=QUEUE_VIEW_HIDDEN,
        filters={
            "conjunction": "and",
            "items": [
                {"filter": f"filter:tasks:data.{SCORE_COLUMNS['review']}", "operator": "equal", "type": "String", "value": REVIEW_MARK}
            ],
        },
    )


def serving_order(tasks: list[tuple[int, int, float]], solved: Mapping[int, int] | None = None) -> list[int]:
    """The order in which Label Studio 1.23's uncertainty sampling serves tasks to one annotator
    who labels each task as it is served.

    Its rule: the next task comes from the cluster this annotator has labeled least, and within
    that, the lowest prediction score (ours is ``1 - priority``) first.

    Args:
        tasks: ``(task id, cluster, priority)`` of the unlabeled tasks.
        solved: tasks the annotator has already labeled, per cluster (default none).

    Example:
        >>> serving_order([(1, 0, 0.9), (2, 0, 0.8), (3, 1, 0.1)])  # task 3 is alone in cluster 1
        [1, 3, 2]
    """
    solved = dict(solved or {})
    todo = list(tasks)
    order = []
    while todo:
        nxt = min(todo, key=lambda t: (solved.get(t[1], 0), 1.0 - t[2], t[0]))
        todo.remove(nxt)
        order.append(nxt[0])
        solved[nxt[1]] = solved.get(nxt[1], 0) + 1
    return order
