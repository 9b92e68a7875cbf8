"""What scoring writes into Label Studio: score columns, review-only marks, the tabs."""

from __future__ import annotations

import pytest

from integrations.queue_view import REVIEW_MARK, REVIEW_VIEW_TITLE, ensure_review_view
from ml_backend.scoring.pool import ScoredPool, TaskScore
from ml_backend.scoring.publish import review_only_tasks, score_columns


def region(label: str, score: float) -> dict:
    return {"score": score, "value": {"rectanglelabels": [label]}}


@pytest.mark.parametrize(
    ("regions", "review"),
    [
        ([region("fish", 0.95), region("shark", 0.9)], True),  # every box clears its class's threshold
        ([region("fish", 0.95), region("shark", 0.5)], False),  # one unsure box: a human must look
        ([region("starfish", 0.99)], False),  # a class without a threshold (too few held-out labels) never clears it
        ([], False),  # nothing shown: nothing to review, maybe everything to draw
    ],
)
def test_review_only_needs_every_box_sure(regions, review: bool) -> None:
    pool = ScoredPool([], [{"task": 4, "result": regions}], {})
    assert (4 in review_only_tasks(pool, {"fish": 0.9, "shark": 0.8, "starfish": None})) is review


@pytest.mark.parametrize(
    ("existing", "labeled", "review", "expected"),
    [
        (None, False, None, None),  # never marked, not decided here: the column is not written
        (None, False, set(), None),  # REVIEW_ONLY off, never marked: nothing written
        (None, False, {4}, REVIEW_MARK),  # marked
        (None, True, {4}, None),  # a labeled task is never marked
        (REVIEW_MARK, False, set(), ""),  # REVIEW_ONLY turned off (or the task no longer sure): cleared
        (REVIEW_MARK, False, None, REVIEW_MARK),  # a label change elsewhere: the mark stays
        (REVIEW_MARK, True, None, ""),  # the task was just labeled: its mark goes at once
        (REVIEW_MARK, False, {4}, REVIEW_MARK),  # still marked: unchanged
    ],
)
def test_the_review_column(existing, labeled: bool, review, expected) -> None:
    score = TaskScore(4, 0.1, 0.2, 0.3, 0, "easy", labeled, "v1")
    data = {"image": "a.jpg", "al_priority": 0.3, "al_uncertainty": 0.1, "al_diversity": 0.2, "al_difficulty": "easy"}
    if existing is not None:
        data["al_review"] = existing
    columns = score_columns([{"id": 4, "data": data}], [score], review)
    written = columns.get(4, data)
    assert written.get("al_review") == expected


def test_the_review_tab_filters_on_the_column() -> None:
    class Client:
        def ensure_view(self, project_id, title, ordering, hidden=None, display_types=None, filters=None):  # noqa: ANN001, ANN202
            self.seen = (project_id, title, filters)
            return {}

    c = Client()
    ensure_review_view(c, 3)  # type: ignore[arg-type]
    project, title, filters = c.seen
    assert (project, title) == (3, REVIEW_VIEW_TITLE)
    assert filters["items"] == [{"filter": "filter:tasks:data.al_review", "operator": "equal", "type": "String", "value": REVIEW_MARK}]
