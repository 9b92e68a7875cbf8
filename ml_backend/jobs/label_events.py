"""A durable record of Label Studio's label events (SQLite under ``MODEL_DIR``).

Webhooks can arrive twice, out of order, or in bulk. Each label change is stored once under a
key made of what changed (the annotation id and its update time, or the deletion), so the same
event delivered twice counts once, and deletions count as changes. Consumers ("scoring", and
later "training") each keep a mark: the number of new changes is the count of events recorded
after their mark. A restart loses nothing.

Example:
    >>> store = LabelEventStore(":memory:")
    >>> ev = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 7, "updated_at": "t1"}}
    >>> store.record(ev), store.record(ev), store.pending(1, "scoring")
    (1, 0, 1)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml_backend.state import open_state_db

LABEL_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"}


def event_keys(event: Mapping[str, Any]) -> list[str]:
    """One key per label change in a webhook payload (empty for other events)."""
    action = event.get("action")
    if action not in LABEL_ACTIONS:
        return []
    if action == "ANNOTATIONS_DELETED":
        return [f"deleted:{a.get('id')}" for a in _list(event.get("annotations")) if isinstance(a, Mapping)]
    items = _list(event.get("annotations")) if action == "ANNOTATIONS_CREATED" else [event.get("annotation")]
    keys = []
    for a in items:
        if not isinstance(a, Mapping) or a.get("id") is None:
            continue
        stamp = a.get("updated_at") or a.get("created_at") or json.dumps(a.get("result"), sort_keys=True, default=str)
        keys.append(f"saved:{a['id']}:{stamp}")
    return keys


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


MAX_ID = 2**63 - 1  # SQLite's largest integer


def as_id(value: Any) -> int | None:
    """A Label Studio object id from an int or a string of ASCII digits; ``None`` for anything
    else (bools, floats, Unicode digits, values SQLite cannot store)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
        return value
    return None


def event_tasks(event: Mapping[str, Any]) -> list[int]:
    """The task ids a label webhook is about (the event's ``task``, and each annotation's ``task``).

    Example:
        >>> event_tasks({"action": "ANNOTATION_CREATED", "task": {"id": 5}, "annotation": {"id": 7, "task": 5}})
        [5]
    """
    if event.get("action") not in LABEL_ACTIONS:
        return []
    found: list[Any] = []
    task = event.get("task")
    found.append(task.get("id") if isinstance(task, Mapping) else task)
    for a in [event.get("annotation"), *_list(event.get("annotations"))]:
        if isinstance(a, Mapping):
            t = a.get("task")
            found.append(t.get("id") if isinstance(t, Mapping) else t)
    ids = (as_id(t) for t in found)
    return sorted({t for t in ids if t is not None})


def event_project(event: Mapping[str, Any]) -> int | None:
    project = event.get("project")
    return as_id(project.get("id") if isinstance(project, Mapping) else project)


class LabelEventStore:
    """Label changes per project, deduplicated, with per-consumer marks.

    Args:
        path: SQLite file (``":memory:"`` for tests).
    """

    def __init__(self, path: str | Path):
        self._db = open_state_db(
            path,
            "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, project INTEGER NOT NULL,"
            " key TEXT NOT NULL, action TEXT NOT NULL, received REAL NOT NULL, UNIQUE(project, key))",
            "CREATE TABLE IF NOT EXISTS marks (project INTEGER, consumer TEXT, seq INTEGER, PRIMARY KEY(project, consumer))",
        )
        self._lock = threading.Lock()

    def record(self, event: Mapping[str, Any]) -> int:
        """Store a webhook payload's label changes; returns how many were new."""
        pid = event_project(event)
        keys = event_keys(event)
        if pid is None or not keys:
            return 0
        now = time.time()
        with self._lock:
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO events (project, key, action, received) VALUES (?, ?, ?, ?)",
                [(pid, k, str(event.get("action")), now) for k in keys],
            )
            return self._db.total_changes - before

    def pending(self, project_id: int, consumer: str) -> int:
        """Label changes recorded for a project since ``consumer``'s mark."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM marks WHERE project=? AND consumer=?", (int(project_id), consumer)).fetchone()
            mark = row[0] if row else 0
            return int(self._db.execute("SELECT COUNT(*) FROM events WHERE project=? AND seq>?", (int(project_id), mark)).fetchone()[0])

    def count_since(self, project_id: int, seq: int) -> int:
        """Label changes recorded for a project after sequence number ``seq``."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events WHERE project=? AND seq>?", (int(project_id), int(seq))).fetchone()[0])

    def latest(self, project_id: int) -> int:
        """Sequence number of a project's newest event (0 if none)."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE project=?", (int(project_id),)).fetchone()[0])

    def mark(self, project_id: int, consumer: str, seq: int | None = None) -> int:
        """Move ``consumer``'s mark to ``seq`` (default: the latest event); returns it.

        Take ``latest()`` before a long job and mark with it after success: events that came in
        during the job stay pending, and a failed job leaves its events pending too.
        """
        seq = self.latest(project_id) if seq is None else int(seq)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO marks (project, consumer, seq) VALUES (?, ?, ?)", (int(project_id), consumer, seq))
        return seq

    def close(self) -> None:
        with self._lock:
            self._db.close()
