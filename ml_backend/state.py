"""Everything the backend keeps on disk: the ``MODEL_DIR`` layout, atomic writes, the SQLite file.

One object, :class:`StatePaths`, names every path under ``MODEL_DIR``; no other module spells
out the layout. Files that must never be seen half-written go through :func:`atomic_write`
(a temporary file in the same folder, flushed and fsynced, then ``os.replace``d over the target
and the folder fsynced), and read-then-write steps on the SQLite state file go through
:func:`transaction` (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error).

Layout::

    MODEL_DIR/
      state.db                          label events, scoring queue, training state (SQLite, WAL)
      scores/project-<id>.json          the last scores of a project (GET /scores)
      scores/project-<id>.npz           what scoring newly imported tasks needs (embeddings, ...)
      projects/<id>/models/             the project's model versions and served pointer
      training/project<id>/run-.../     a training run's dataset, Ultralytics run and logs
      training/rq-<job>/                a run on an RQ worker (removed when it ends)
      cache/images/                     downloaded images, by URL hash
      weights/                          hub weights (``MODEL_PATH=yolo11n.pt``) once downloaded

Example:
    >>> paths = StatePaths("/srv/state")
    >>> str(paths.project_models(12))
    '/srv/state/projects/12/models'
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class StatePaths:
    """The ``MODEL_DIR`` layout (see the module docstring)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    def score_file(self, project_id: int) -> Path:
        return self.scores_dir / f"project-{int(project_id)}.json"

    def score_state(self, project_id: int) -> Path:
        return self.scores_dir / f"project-{int(project_id)}.npz"

    def scored_projects(self) -> list[int]:
        """The projects with a score file."""
        ids = (p.stem.removeprefix("project-") for p in self.scores_dir.glob("project-*.json"))
        return sorted(int(i) for i in ids if i.isdigit())

    @property
    def projects_dir(self) -> Path:
        return self.root / "projects"

    def project_models(self, project_id: int) -> Path:
        return self.projects_dir / str(int(project_id)) / "models"

    def project_controls(self, project_id: int) -> Path:
        """The folder of the project's controls' own models (one :meth:`control_models` each)."""
        return self.projects_dir / str(int(project_id)) / "controls"

    def control_models(self, project_id: int, control: str) -> Path:
        """The versions of a control's own model (``model_path``) trained on the project's labels of that control."""
        import hashlib

        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in control)[:40]
        return self.project_controls(project_id) / f"{safe}-{hashlib.sha256(control.encode()).hexdigest()[:8]}"

    def backend_url(self, project_id: int) -> Path:
        """The URL Label Studio reaches this backend at for the project (from its requests)."""
        return self.projects_dir / str(int(project_id)) / "backend_url"

    def training_runs(self, project_id: int) -> Path:
        return self.root / "training" / f"project{int(project_id)}"

    def worker_run(self, name: str) -> Path:
        return self.root / "training" / f"rq-{name}"

    @property
    def image_cache(self) -> Path:
        return self.root / "cache" / "images"

    @property
    def hub_weights(self) -> Path:
        return self.root / "weights"


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str | Callable[[IO[Any]], Any], *, fsync: bool = True) -> Path:
    """Replace ``path`` with new content so that a reader (or a crash) never sees half a file.

    Args:
        path: the target; its folder is created.
        data: the bytes or text to write, or a function that writes to the open (binary)
            file, e.g. ``lambda f: np.savez(f, **arrays)``.
        fsync: flush the file and the folder to disk (off only for caches, which can be
            fetched again).

    Example:
        >>> import tempfile, pathlib
        >>> p = atomic_write(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "hello")
        >>> p.read_text()
        'hello'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(target.parent)
    return target


def write_json_atomic(path: str | Path, data: Any, indent: int | None = None) -> Path:
    """:func:`atomic_write` of ``data`` as JSON (values JSON does not know are written with ``str``)."""
    return atomic_write(path, json.dumps(data, default=str, indent=indent))


def open_state_db(path: str | Path, *schema: str) -> sqlite3.Connection:
    """The backend's SQLite state file, shared by threads and processes.

    Autocommit (a read-then-write that must be atomic goes through :func:`transaction`), WAL,
    a 30 s busy timeout; each ``schema`` statement is run once.
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a committed change survives a power cut, not only a crash
    for statement in schema:
        db.execute(statement)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, lock: threading.Lock | None = None) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on ``db`` (under ``lock`` when given); rolled back on any error.

    ``IMMEDIATE`` takes the write lock at the start, so another process cannot change what this
    transaction read before it writes.

    Example:
        >>> db = open_state_db(":memory:", "CREATE TABLE t (x INTEGER)")
        >>> with transaction(db):
        ...     _ = db.execute("INSERT INTO t VALUES (1)")
        >>> db.execute("SELECT COUNT(*) FROM t").fetchone()[0]
        1
    """
    with lock if lock is not None else contextlib.nullcontext():
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
