"""Scoring in the background of the server: webhook handlers only enqueue, one thread works.

``TASKS_CREATED`` events add tasks to a per-project pending set; the worker scores them
against the last full scoring (stream-based selection, :func:`ml_backend.scoring.score_new_tasks`)
and puts them in the queue. Label events (annotations created, updated or deleted) are counted
per project in a durable store (:class:`ml_backend.label_events.LabelEventStore`: duplicates
count once, a restart loses nothing); every ``RESCORE_MIN_NEW_LABELS`` of them the whole project
is re-scored, so the diversity of the rest follows the labels. The count is reset only when a
re-score succeeds. Events that arrive while the worker is busy coalesce: each project's pending
work goes in one run. Nothing here blocks a request.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping

from ml_backend.label_events import LabelEventStore, event_project
from ml_backend.predict import Predictor
from ml_backend.scoring import ScoreStore, score_new_tasks, score_project
from ml_backend.settings import Settings

log = logging.getLogger(__name__)


class ScoringJobs:
    """A single background worker with per-project coalescing.

    Args:
        settings: backend settings.
        predictor: the served model.
        client_factory: returns a Label Studio client (``None`` when not configured).
    """

    def __init__(self, settings: Settings, predictor: Predictor, client_factory: Callable[[], Any]):
        self.settings = settings
        self.predictor = predictor
        self.client_factory = client_factory
        self.store = ScoreStore(settings.model_dir / "scores")
        self._pending: dict[int, dict[int, Mapping[str, Any]]] = {}
        self._full: set[int] = set()
        self._retire: dict[int, set[str]] = {}
        self.events = LabelEventStore(settings.model_dir / "state.db")
        self._cond = threading.Condition()
        self._busy = False
        self.runs = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="scoring-jobs", daemon=True)
        self._thread.start()

    def add_tasks(self, project_id: int, tasks: list[Mapping[str, Any]]) -> int:
        """Queue new tasks of a project for stream scoring; returns how many are pending."""
        with self._cond:
            pending = self._pending.setdefault(int(project_id), {})
            for t in tasks:
                if isinstance(t, Mapping) and "id" in t:
                    pending[int(t["id"])] = t
            self._cond.notify()
            return len(pending)

    def add_label_event(self, event: Mapping[str, Any]) -> int:
        """Record a label webhook; at ``RESCORE_MIN_NEW_LABELS`` pending changes a full re-score is
        queued. Returns the changes pending for the project's next re-score."""
        self.events.record(event)
        project_id = event_project(event)
        if project_id is None:
            return 0
        n = self.events.pending(project_id, "scoring")
        if n >= self.settings.rescore_min_new_labels:
            with self._cond:
                self._full.add(project_id)
                self._cond.notify()
        return n

    def request_full(self, project_id: int, retire: list[str] | tuple[str, ...] = ()) -> None:
        """Queue a full re-score of a project (after a new model is promoted).

        Args:
            retire: older model versions whose predictions are removed once the new ones are in.
        """
        with self._cond:
            self._full.add(int(project_id))
            self._retire.setdefault(int(project_id), set()).update(v for v in retire if v)
            self._cond.notify()

    def idle(self, timeout: float = 0.0) -> bool:
        """True when nothing is pending or running (waits up to ``timeout`` seconds)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._full and not self._busy, timeout=timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending or self._full))
                if self._full:
                    project_id, full = self._full.pop(), True
                    tasks = self._pending.pop(project_id, {})  # a full scoring covers new tasks too
                    retire = sorted(self._retire.pop(project_id, set()))
                else:
                    (project_id, tasks), full = self._pending.popitem(), False
                self._busy = True
            try:
                client = self.client_factory()
                if client is None:
                    log.warning("scoring for project %s skipped: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY", project_id)
                elif full:
                    seq = self.events.latest(project_id)
                    pooled = score_project(client, project_id, self.predictor, self.settings, progress=False, retire=retire)
                    self.events.mark(project_id, "scoring", seq)  # only after success
                    log.info("project %s re-scored after new labels: %d tasks", project_id, len(pooled.scores))
                else:
                    pooled = score_new_tasks(client, project_id, list(tasks.values()), self.predictor, self.settings, self.store)
                    log.info("project %s: %d new tasks scored and queued", project_id, len(pooled.scores))
                self.last_error = None
            except Exception as exc:  # keep the worker alive; the next event retries
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scoring of project %s failed", project_id)
            finally:
                with self._cond:
                    self.runs += 1
                    self._busy = False
                    self._cond.notify_all()
