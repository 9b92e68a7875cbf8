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

from typing import Any

QUEUE_VIEW_TITLE = "Active learning queue"
# Task data keys that show the scores as Data Manager columns (sortable, filterable).
SCORE_COLUMNS = {"priority": "al_priority", "uncertainty": "al_uncertainty", "diversity": "al_diversity", "difficulty": "al_difficulty"}
# Columns the queue tab hides so that the score columns fit on screen.
QUEUE_VIEW_HIDDEN = {
    "explore": [
        f"tasks:{c}"
        for c in (
            "inner_id", "annotators", "annotations_results", "annotations_ids", "predictions_results", "predictions_model_versions",
            "file_upload", "storage_filename", "created_at", "updated_at", "updated_by", "avg_lead_time", "draft_exists", "completed_at",
        )
    ],
    "labeling": [],
}


def ensure_queue_view(client: Any, project_id: int) -> dict:
    """Create the queue tab once, then keep it up to date (ordering, hidden columns, number columns).

    Args:
        client: a :class:`integrations.label_studio.LabelStudioClient`.
        project_id: the project.
    """
    return client.ensure_view(
        project_id,
        QUEUE_VIEW_TITLE,
        ordering=["tasks:predictions_score"],
        hidden=QUEUE_VIEW_HIDDEN,
        display_types={f"tasks:data.{SCORE_COLUMNS[k]}": "Number" for k in ("priority", "uncertainty", "diversity")},
    )
