"""Scoring in the background of the server: webhook handlers only enqueue, one thread works.

``TASKS_CREATED`` events add tasks to a per-project pending set; the worker scores them
against the last full scoring (stream-based selection, :func:`ml_backend.scoring.publish.score_new_tasks`)
and puts them in the queue. Label events (annotations created, updated or deleted) are counted
per project in a durable store (:class:`ml_backend.jobs.label_events.LabelEventStore`: duplicates
count once, a restart loses nothing); every ``RESCORE_MIN_NEW_LABELS`` of them the whole project
is re-scored, so the diversity of the rest follows the labels. The count is reset only when a
re-score succeeds. Events that arrive while the worker is busy coalesce: each project's pending
work goes in one run. Nothing here blocks a request.

The pending work itself (new tasks, full re-scores and the model versions to retire after a
promotion) is kept in ``MODEL_DIR/state.db`` (:class:`ScoringQueue`) and removed only when its
run has succeeded: a crash or ``kill -9`` mid-run loses nothing, the next start runs it again
(re-scoring replaces a model version's predictions, so a run done twice leaves one prediction
per task). A failed run stays queued and is retried after a back-off (30 s, doubling, at most
10 minutes), or at once when new work arrives for the project. At start, a project whose stored
scores come from another model than the one it serves (a crash between a promotion and its
re-score) is re-scored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integrations.label_studio import LabelStudioAPI
from ml_backend.inference.predictor import Predictor
from ml_backend.jobs.label_events import LabelEventStore, as_id, event_project, event_tasks
from ml_backend.jobs.owners import owner_alive, owner_id
from ml_backend.scoring.publish import refresh_labels, score_new_tasks, score_project
from ml_backend.scoring.store import ScoreStore
from ml_backend.settings import Settings
from ml_backend.state import open_state_db, transaction

log = logging.getLogger(__name__)

FULL = -1  # the task column's value for "re-score the whole project"
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 600.0
CLAIM_POLL_S = 30.0  # how often a worker looks again at work another process claimed


class NotConfigured(RuntimeError):
    """Label Studio's address or token is missing."""


@dataclass
class Work:
    """One project's pending scoring, as taken by the worker."""

    project_id: int
    full: bool
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    retire: list[str] = field(default_factory=list)
    taken_seq: int = 0
    labels: set[int] = field(default_factory=set)  # tasks whose labels changed: their scores follow at once
    labels_seq: int = 0


class ScoringQueue:
    """Pending scoring work in SQLite: one row per (project, task), ``task = -1`` for a full re-score.

    Example:
        >>> q = ScoringQueue(":memory:")
        >>> q.add_tasks(3, [{"id": 1}, {"id": 2}])
        2
        >>> q.request_full(3, ["v1"])
        >>> w = q.take()
        >>> (w.project_id, w.full, sorted(w.tasks), w.retire)
        (3, True, [1, 2], ['v1'])
    """

    def __init__(self, path: str | Path):
        self._db = open_state_db(
            path,
            "CREATE TABLE IF NOT EXISTS scoring_queue (project INTEGER NOT NULL, task INTEGER NOT NULL, payload TEXT, retire TEXT,"
            " seq INTEGER NOT NULL, queued REAL NOT NULL, PRIMARY KEY (project, task))",
            "CREATE TABLE IF NOT EXISTS label_marks (project INTEGER NOT NULL, task INTEGER NOT NULL, seq INTEGER NOT NULL,"
            " queued REAL NOT NULL, PRIMARY KEY (project, task))",
            "CREATE TABLE IF NOT EXISTS scoring_claims (project INTEGER PRIMARY KEY, owner TEXT NOT NULL, at REAL NOT NULL)",
            # failed work waits here until ``at`` in every process, not only in the one it failed in
            "CREATE TABLE IF NOT EXISTS scoring_retry (project INTEGER PRIMARY KEY, at REAL NOT NULL)",
        )
        self._lock = threading.Lock()
        self.owner = owner_id()

    def _write(self, project_id: int, rows: list[tuple[int, str | None]], merge_retire: list[str] | None = None) -> None:
        """Upsert ``(task, payload)`` rows in one transaction under a new sequence number."""
        with transaction(self._db, self._lock):
            # Above every row still queued, those of work under way included: done() never removes it.
            seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM scoring_queue").fetchone()[0]) + 1
            retire = None
            if merge_retire is not None:
                row = self._db.execute("SELECT retire FROM scoring_queue WHERE project=? AND task=?", (int(project_id), FULL)).fetchone()
                retire = json.dumps(sorted(set(json.loads(row[0]) if row and row[0] else []) | {v for v in merge_retire if v}))
            now = time.time()
            self._db.executemany(
                "INSERT OR REPLACE INTO scoring_queue (project, task, payload, retire, seq, queued) VALUES (?, ?, ?, ?, ?, ?)",
                [(int(project_id), task, payload, retire if task == FULL else None, seq, now) for task, payload in rows],
            )
            self._db.execute("DELETE FROM scoring_retry WHERE project=?", (int(project_id),))  # new work: try now

    def add_tasks(self, project_id: int, tasks: list[Mapping[str, Any]]) -> int:
        """Queue new tasks (a task queued again replaces its older copy); returns the project's pending tasks."""
        rows: list[tuple[int, str | None]] = [
            (int(t["id"]), json.dumps(dict(t), default=str))
            for t in tasks
            if isinstance(t, Mapping) and isinstance(t.get("id"), int) and as_id(t["id"]) is not None
        ]
        if rows:
            self._write(project_id, rows)
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM scoring_queue WHERE project=? AND task>=0", (int(project_id),)).fetchone()[0])

    def request_full(self, project_id: int, retire: list[str] | tuple[str, ...] = ()) -> None:
        """Queue a full re-score; versions to retire add up with an earlier request's."""
        self._write(project_id, [(FULL, None)], merge_retire=list(retire))

    def mark_labels(self, project_id: int, task_ids: Iterable[int]) -> None:
        """Queue tasks whose labels changed, so their scores follow without waiting for a re-score."""
        ids = sorted({int(t) for t in task_ids})
        if not ids:
            return
        with transaction(self._db, self._lock):
            seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM label_marks").fetchone()[0]) + 1
            now = time.time()
            self._db.executemany(
                "INSERT OR REPLACE INTO label_marks (project, task, seq, queued) VALUES (?, ?, ?, ?)",
                [(int(project_id), t, seq, now) for t in ids],
            )

    def take(self, skip: set[int] = frozenset()) -> Work | None:  # type: ignore[assignment]
        """The next project's work (a full re-score first, then the oldest new tasks), claimed for this
        process: another process (a second gunicorn worker on the same ``MODEL_DIR``) does not take
        the same project until :meth:`done` or :meth:`release`, or until this process is gone. It
        stays queued until :meth:`done`."""
        with transaction(self._db, self._lock):
            busy = {
                int(p) for p, owner, at in self._db.execute("SELECT project, owner, at FROM scoring_claims")
                if owner != self.owner and owner_alive(owner, at)
            }  # fmt: skip
            waiting = {int(p) for (p,) in self._db.execute("SELECT project FROM scoring_retry WHERE at>?", (time.time(),))}
            skip = set(skip) | busy | waiting
            rows = self._db.execute(
                "SELECT project, MAX(full), MIN(queued) FROM (SELECT project, task = ? AS full, queued FROM scoring_queue"
                " UNION ALL SELECT project, 0, queued FROM label_marks) GROUP BY project",
                (FULL,),
            ).fetchall()
            rows = [r for r in rows if r[0] not in skip]
            if not rows:
                return None
            project_id = min(rows, key=lambda r: (-int(r[1]), r[2]))[0]
            self._db.execute(
                "INSERT OR REPLACE INTO scoring_claims (project, owner, at) VALUES (?, ?, ?)", (project_id, self.owner, time.time())
            )
            work = Work(int(project_id), False)
            for task, seq in self._db.execute("SELECT task, seq FROM label_marks WHERE project=?", (project_id,)):
                work.labels.add(int(task))
                work.labels_seq = max(work.labels_seq, int(seq))
            for task, payload, retire, seq in self._db.execute(
                "SELECT task, payload, retire, seq FROM scoring_queue WHERE project=?", (project_id,)
            ):
                work.taken_seq = max(work.taken_seq, int(seq))
                if task == FULL:
                    work.full, work.retire = True, json.loads(retire) if retire else []
                else:
                    work.tasks[int(task)] = json.loads(payload)
            return work

    def done(self, work: Work) -> None:
        """Remove what ``work`` covered (anything queued again since it was taken stays) and release the project."""
        with transaction(self._db, self._lock):
            self._db.execute("DELETE FROM scoring_queue WHERE project=? AND seq<=?", (work.project_id, work.taken_seq))
            self._db.execute("DELETE FROM label_marks WHERE project=? AND seq<=?", (work.project_id, work.labels_seq))
            self._db.execute("DELETE FROM scoring_claims WHERE project=? AND owner=?", (work.project_id, self.owner))
            self._db.execute("DELETE FROM scoring_retry WHERE project=?", (work.project_id,))

    def release(self, work: Work, retry_at: float | None = None) -> None:
        """Give a project back without finishing its work (it failed); with ``retry_at``, no process
        takes it again before then (unless new work for it arrives)."""
        with transaction(self._db, self._lock):
            self._db.execute("DELETE FROM scoring_claims WHERE project=? AND owner=?", (work.project_id, self.owner))
            if retry_at is not None:
                self._db.execute("INSERT OR REPLACE INTO scoring_retry (project, at) VALUES (?, ?)", (work.project_id, retry_at))

    def retrying(self) -> set[int]:
        """Projects whose failed work waits for its retry time."""
        with self._lock:
            return {int(r[0]) for r in self._db.execute("SELECT project FROM scoring_retry WHERE at>?", (time.time(),))}

    def projects(self) -> set[int]:
        with self._lock:
            return {int(r[0]) for r in self._db.execute("SELECT project FROM scoring_queue UNION SELECT project FROM label_marks")}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ScoringJobs:
    """A single background worker with per-project coalescing and a durable queue.

    Args:
        settings: backend settings.
        predictor: the served model.
        client_factory: returns a Label Studio client (``None`` when not configured).
    """

    def __init__(self, settings: Settings, predictor: Predictor, client_factory: Callable[[], LabelStudioAPI | None]):
        self.settings = settings
        self.predictor = predictor
        self.client_factory = client_factory
        self.store = ScoreStore(settings.paths)
        self.queue = ScoringQueue(settings.paths.state_db)
        self.events = LabelEventStore(settings.paths.state_db)
        self._cond = threading.Condition()
        self._busy = False
        self._retry_at: dict[int, float] = {}  # projects whose last run failed -> when to try again
        self._failures: dict[int, int] = {}
        self.runs = 0
        self.last_error: str | None = None
        resumed = self.queue.projects()
        if resumed:
            log.info("scoring work left from the previous run resumes for projects %s", sorted(resumed))
        self._thread = threading.Thread(target=self._loop, name="scoring-jobs", daemon=True)
        self._thread.start()

    def add_tasks(self, project_id: int, tasks: list[Mapping[str, Any]]) -> int:
        """Queue new tasks of a project for stream scoring; returns how many are pending."""
        n = self.queue.add_tasks(project_id, tasks)
        self._wake(project_id)
        return n

    def add_label_event(self, event: Mapping[str, Any]) -> int:
        """Record a label webhook; at ``RESCORE_MIN_NEW_LABELS`` pending changes a full re-score is
        queued. Returns the changes pending for the project's next re-score."""
        self.events.record(event)
        project_id = event_project(event)
        if project_id is None:
            return 0
        changed = event_tasks(event)
        if changed:  # the labeled tasks leave the queue and diversity follows now, not at the next re-score
            self.queue.mark_labels(project_id, changed)
            self._wake(project_id)
        n = self.events.pending(project_id, "scoring")
        if n >= self.settings.rescore_min_new_labels:
            self.queue.request_full(project_id)
            self._wake(project_id)
        return n

    def request_full(self, project_id: int, retire: list[str] | tuple[str, ...] = ()) -> None:
        """Queue a full re-score of a project (after a new model is promoted).

        Args:
            retire: older model versions whose predictions are removed once the new ones are in.
        """
        self.queue.request_full(int(project_id), retire)
        self._wake(int(project_id))

    def check_served_versions(self, served_version: Callable[[int], str | None], projects: Iterable[int] = ()) -> list[int]:
        """Queue a re-score for every project (with stored scores, or in ``projects``) whose
        scores are missing or from another model than ``served_version(project)`` (None: no
        promoted model, nothing to check); returns them."""
        stale = []
        for pid in sorted(set(self.store.projects()) | set(projects)):
            want = served_version(pid)
            scored = {s.get("model_version") for s in (self.store.load(pid) or [])}
            if want and scored != {want}:  # no scores at all: the re-score after the promotion never finished
                self.request_full(pid, retire=sorted(v for v in scored if v and v != want))
                stale.append(pid)
        if stale:
            log.warning("projects %s were scored with an older model than they serve (interrupted after a promotion): re-scoring", stale)
        return stale

    def idle(self, timeout: float = 0.0) -> bool:
        """True when nothing is running and nothing is pending but work waiting to be retried after a failure."""

        def quiet() -> bool:
            return not self._busy and not (self.queue.projects() - set(self._retry_at) - self.queue.retrying())

        with self._cond:
            return self._cond.wait_for(quiet, timeout=timeout)

    def _wake(self, project_id: int) -> None:
        with self._cond:
            self._retry_at.pop(int(project_id), None)  # new work: retry the project's failed work now too
            self._cond.notify_all()

    def _next(self) -> Work:
        with self._cond:
            while True:
                now = time.time()
                self._retry_at = {pid: at for pid, at in self._retry_at.items() if at > now}
                work = self.queue.take(set(self._retry_at))
                if work is not None:
                    self._busy = True
                    return work
                soonest = min(self._retry_at.values(), default=None)
                if self.queue.projects() - set(self._retry_at):  # work another process holds: look again, it may die
                    soonest = min(soonest or now + CLAIM_POLL_S, now + CLAIM_POLL_S)
                self._cond.wait(timeout=None if soonest is None else max(0.05, soonest - now))

    def _loop(self) -> None:
        while True:
            work = self._next()
            project_id = work.project_id
            ok = False
            try:
                client = self.client_factory()
                if client is None:
                    raise NotConfigured("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
                if work.full:
                    seq = self.events.latest(project_id)
                    pooled = score_project(client, project_id, self.predictor, self.settings, progress=False, retire=work.retire)
                    self.events.mark(project_id, "scoring", seq)  # only after success
                    log.info("project %s re-scored: %d tasks", project_id, len(pooled.scores))
                else:
                    if work.tasks:
                        pooled = score_new_tasks(client, project_id, list(work.tasks.values()), self.predictor, self.settings, self.store)
                        log.info("project %s: %d new tasks scored and queued", project_id, len(pooled.scores))
                    if work.labels:
                        n = refresh_labels(client, project_id, sorted(work.labels), self.store)
                        log.info("project %s: scores of %d labeled or unlabeled tasks updated", project_id, n)
                self.queue.done(work)
                self.last_error, ok = None, True
            except Exception as exc:  # keep the worker alive; the work stays queued and is retried
                with self._cond:
                    failures = self._failures.get(project_id, 0) + 1
                self.queue.release(work, retry_at=time.time() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1)))
                self.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, NotConfigured):
                    log.warning("scoring of project %s cannot run: %s; it stays queued", project_id, exc)
                else:
                    log.exception("scoring of project %s failed; it stays queued and is retried", project_id)
            finally:
                with self._cond:
                    if ok:
                        self._failures.pop(project_id, None)
                    else:
                        failures = self._failures[project_id] = self._failures.get(project_id, 0) + 1
                        self._retry_at[project_id] = time.time() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
                    self.runs += 1
                    self._busy = False
                    self._cond.notify_all()
