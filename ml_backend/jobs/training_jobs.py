"""The retraining loop: when to train, one run at a time, and what happens after.

Webhook handlers only call :meth:`TrainingJobs.on_label_event` or :meth:`TrainingJobs.request`
(a few SQLite statements); a background thread does the rest:

1. **Trigger.** A project is queued when its label changes since the last training reach its
   threshold (counted durably by :class:`ml_backend.jobs.label_events.LabelEventStore`: a duplicate
   delivery counts once, deletions count), or on ``START_TRAINING``. The threshold is
   ``RETRAIN_MIN_NEW_LABELS``, unless the project sets its own: ``retrain_min_new_labels`` in
   the ML backend's ``extra_params`` in Label Studio (``connect --retrain-threshold N`` writes
   it there; Label Studio hands it over on ``/setup``, and it is kept in the state file).
2. **Run.** One run at a time, in its own process (:mod:`ml_backend.jobs.runners`). Its
   progress is polled into the status; a run over ``TRAIN_TIMEOUT`` is stopped.
3. **Coalesce.** Events during a run set one ``follow_up`` flag: however many arrive, at most
   one more run follows.
4. **Promote.** Every trained model is stored with its metrics and lineage
   (:class:`ml_backend.inference.versions.ModelRegistry`); it is served only if :func:`ml_backend.training.run.decide`
   says so. The pointer switch is atomic and the new weights are loaded before they are served.
   Then ``on_promoted`` re-scores the pool and reorders the queue, and the weights of versions
   never served beyond the ``VERSIONS_KEEP`` newest are deleted (their records stay).

State (idle / queued / training / failed, progress, last outcome) lives in SQLite next to the
label events, so ``GET /training`` survives restarts. A run interrupted by a restart is queued
again; the served model is never touched until a run has finished and won.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from integrations.connection import THRESHOLD_PARAM
from ml_backend.faults import crash_point
from ml_backend.inference.display import default_display
from ml_backend.inference.model import ModelHolder
from ml_backend.inference.served_models import ServedModels
from ml_backend.inference.versions import ModelRegistry, VersionInfo, speedup_of
from ml_backend.jobs.label_events import LabelEventStore
from ml_backend.jobs.owners import owner_alive, owner_id
from ml_backend.jobs.runners import Runner, make_runner
from ml_backend.settings import Settings
from ml_backend.state import open_state_db, transaction
from ml_backend.training.run import TrainingError, TrainOutcome, TrainRequest

log = logging.getLogger(__name__)

CONSUMER = "training"
RETRY_FIRST_S = 60.0  # a run that met an unavailable Label Studio waits this long, doubling, at most RETRY_MAX_S
RETRY_MAX_S = 1800.0
STATES = ("idle", "queued", "training", "failed")


def _encoded(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON for the columns that hold structures (``progress``, ``last``)."""
    return {k: json.dumps(v) if k in ("progress", "last") and v is not None and not isinstance(v, str) else v for k, v in fields.items()}


class TrainingState:
    """One row per project in ``MODEL_DIR/state.db``."""

    def __init__(self, path: str | Path):
        self._db = open_state_db(
            path,
            "CREATE TABLE IF NOT EXISTS training (project INTEGER PRIMARY KEY, state TEXT NOT NULL, reason TEXT, follow_up INTEGER DEFAULT 0,"
            " start_seq INTEGER DEFAULT 0, owner TEXT, queued REAL, started REAL, finished REAL, progress TEXT, message TEXT, last TEXT,"
            " runs INTEGER DEFAULT 0, heartbeat REAL, threshold INTEGER, attempt INTEGER DEFAULT 0, job TEXT)",
        )
        have = [r[1] for r in self._db.execute("PRAGMA table_info(training)")]
        for column, kind in (("threshold", "INTEGER"), ("attempt", "INTEGER DEFAULT 0"), ("job", "TEXT")):
            if column in have:
                continue
            try:  # a state file from an older version
                self._db.execute(f"ALTER TABLE training ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise
        self._lock = threading.Lock()

    def get(self, project_id: int) -> dict[str, Any]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM training WHERE project=?", (int(project_id),))
            row = cur.fetchone()
            cols = [c[0] for c in cur.description]
        if row is None:
            return {
                "project": int(project_id),
                "state": "idle",
                "reason": None,
                "follow_up": 0,
                "start_seq": 0,
                "owner": None,
                "queued": None,
                "started": None,
                "finished": None,
                "progress": None,
                "message": None,
                "last": None,
                "runs": 0,
                "heartbeat": None,
                "threshold": None,
                "attempt": 0,
                "job": None,
            }
        return dict(zip(cols, row))

    def projects(self) -> list[int]:
        with self._lock:
            return [int(r[0]) for r in self._db.execute("SELECT project FROM training ORDER BY project")]

    def update(self, project_id: int, **fields: Any) -> None:
        """Set only these columns (a webhook's flag and the worker's progress never overwrite each other)."""
        fields = _encoded(fields)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO training (project, state) VALUES (?, 'idle')", (int(project_id),))
            if fields:
                self._db.execute(
                    f"UPDATE training SET {', '.join(f'{k}=?' for k in fields)} WHERE project=?", [*fields.values(), int(project_id)]
                )

    def request(self, project_id: int, reason: str) -> str:
        """Atomically: during a run, set its follow-up flag; when idle or failed, queue. Returns the state after."""
        with transaction(self._db, self._lock):
            self._db.execute("INSERT OR IGNORE INTO training (project, state) VALUES (?, 'idle')", (int(project_id),))
            state = self._db.execute("SELECT state FROM training WHERE project=?", (int(project_id),)).fetchone()[0]
            if state == "training":
                self._db.execute("UPDATE training SET follow_up=1 WHERE project=?", (int(project_id),))
            elif state != "queued":
                self._db.execute(
                    "UPDATE training SET state='queued', reason=?, queued=?, follow_up=0, progress=NULL WHERE project=?",
                    (reason, time.time(), int(project_id)),
                )
                state = "queued"
        return state

    def finish(self, project_id: int, **fields: Any) -> bool:
        """Atomically end a run with ``fields`` and clear its follow-up flag; returns whether one was asked for."""
        fields = {**_encoded(fields), "follow_up": 0}
        with transaction(self._db, self._lock):
            follow = self._db.execute("SELECT follow_up FROM training WHERE project=?", (int(project_id),)).fetchone()
            self._db.execute(
                f"UPDATE training SET {', '.join(f'{k}=?' for k in fields)} WHERE project=?", [*fields.values(), int(project_id)]
            )
        return bool(follow and follow[0])

    def claim(self, owner: str, latest_seq: Callable[[int], int], projects: Collection[int] | None = None) -> int | None:
        """Atomically take the oldest queued project (None when nothing is queued), of ``projects``
        only when given.

        The run's ``start_seq`` (the newest label event now) is set in the same step, so a
        webhook that sees ``training`` never counts against the previous run's start. A run that
        reattaches to an RQ job (``job`` set) keeps the ``start_seq`` of when that job started: the
        labels that came in since are not the job's, and still count afterwards.
        """
        with self._lock:
            only = [] if projects is None else [int(p) for p in projects]
            where = "" if projects is None else f" AND project IN ({','.join('?' * len(only))})"
            row = self._db.execute(
                f"SELECT project FROM training WHERE state='queued' AND queued<=?{where} ORDER BY queued LIMIT 1", (time.time(), *only)
            ).fetchone()  # a run waiting out an unavailable Label Studio is queued in the future
            if row is None:
                return None
            now = time.time()
            cur = self._db.execute(
                "UPDATE training SET state='training', owner=?, started=?, heartbeat=?,"
                " start_seq=CASE WHEN job IS NULL THEN ? ELSE start_seq END, progress=?, message=NULL"
                " WHERE project=? AND state='queued'",
                (owner, now, now, latest_seq(int(row[0])), json.dumps({"stage": "starting"}), row[0]),
            )
            return int(row[0]) if cur.rowcount == 1 else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


def shown_run(last: Any) -> Any:
    """A run's outcome as ``/training`` shows it (``last_run``): one held-out mAP50 per model.

    A detector is judged on the held-out images' mAP50 as :mod:`ml_backend.training.promotion`
    computes it; Ultralytics' validation gives another mAP50 of the same images (``metrics_new``'s
    and ``metrics_previous``'s ``map50``), which is left out here (the version's stored metrics
    keep it: ``/versions``). ``heldout_map50`` holds the judged one: ``new``, ``previous`` and
    ``images``. Other runs are shown as they are.

    Example:
        >>> last = {"metrics_new": {"map50": 0.52, "primary": 0.31}, "metrics_previous": {"map50": 0.4},
        ...         "judgement": {"rule": "bootstrap", "new": 0.48, "old": 0.35, "heldout": 40}}
        >>> shown = shown_run(last)
        >>> shown["heldout_map50"], shown["metrics_new"], shown["metrics_previous"]
        ({'new': 0.48, 'previous': 0.35, 'images': 40}, {'primary': 0.31}, {})
    """
    judged = last.get("judgement") if isinstance(last, dict) else None
    if not isinstance(judged, dict) or "new" not in judged:
        return last
    shown = dict(last)
    for key in ("metrics_new", "metrics_previous"):
        if isinstance(shown.get(key), dict):
            shown[key] = {name: value for name, value in shown[key].items() if name != "map50"}
    # labeled_floor judges on every labeled image, for a run where both models scored 0 on the held-out ones
    on_labeled = judged.get("rule") == "labeled_floor"
    shown["heldout_map50"] = {
        "new": 0.0 if on_labeled else judged["new"],
        "previous": 0.0 if on_labeled else judged.get("old"),
        "images": judged.get("heldout"),
    }
    return shown


class TrainingJobs:
    """Trigger, run and promote retraining in the background of the server.

    Args:
        settings: backend settings.
        models: the served models (per project).
        events: the label event store (shared with scoring).
        on_promoted: called as ``on_promoted(project_id, new_version, old_version)`` after a
            promotion (the server re-scores the project's pool there).
        runner: where runs execute (default: :func:`ml_backend.jobs.runners.make_runner`).
        poll_s: how often a run's progress is read.
        projects: run only these projects' queued runs (``python -m ml_backend train --project ID``);
            the others stay queued for the server. None: every project's.
    """

    def __init__(
        self,
        settings: Settings,
        models: ServedModels,
        events: LabelEventStore,
        on_promoted: Callable[[int, str, str | None], None] | None = None,
        runner: Runner | None = None,
        poll_s: float = 1.0,
        projects: Collection[int] | None = None,
    ):
        self.settings = settings
        self.models = models
        self.events = events
        self.on_promoted = on_promoted
        self.runner = runner or make_runner(settings)
        self.poll_s = poll_s
        self.projects = None if projects is None else frozenset(int(p) for p in projects)
        self.state = TrainingState(settings.paths.state_db)
        self.owner = owner_id()
        self._wake = threading.Event()
        self._busy = False
        self._stop = threading.Event()
        self._recover(startup=True)
        self._thread = threading.Thread(target=self._loop, name="training-jobs", daemon=True)
        self._thread.start()

    # --- called from request handlers (fast) ---

    def threshold(self, project_id: int, row: dict[str, Any] | None = None) -> tuple[int, str]:
        """The project's retraining threshold and where it comes from."""
        own = (row or self.state.get(project_id))["threshold"]
        if own is not None:
            return int(own), f"the project's extra_params.{THRESHOLD_PARAM} in Label Studio"
        return self.settings.retrain_min_new_labels, "RETRAIN_MIN_NEW_LABELS"

    def set_threshold(self, project_id: int, value: int | None) -> None:
        """The project's own threshold (None: back to ``RETRAIN_MIN_NEW_LABELS``); kept across restarts.

        Lowering it below the labels already counted queues a run at once.
        """
        row = self.state.get(project_id)
        if row["threshold"] == value:
            return
        self.state.update(project_id, threshold=value)
        log.info("project %s: retraining threshold %s", project_id, "RETRAIN_MIN_NEW_LABELS" if value is None else value)
        self.on_label_event(project_id)

    def on_label_event(self, project_id: int) -> dict[str, Any]:
        """Count a project's new label changes and queue a run (or a follow-up) at the threshold."""
        row = self.state.get(project_id)
        threshold, source = self.threshold(project_id, row)
        pending = self.events.pending(project_id, CONSUMER)
        state = row["state"]
        if threshold > 0 and state != "queued":
            # During a run, only the labels that arrived since it started count towards a follow-up;
            # after a failed run, only those since it started (no retry storm on a lasting failure).
            count = self.events.count_since(project_id, row["start_seq"] or 0) if state in ("training", "failed") else pending
            if count >= threshold and not (state == "training" and row["follow_up"]):
                label = "RETRAIN_MIN_NEW_LABELS" if source == "RETRAIN_MIN_NEW_LABELS" else THRESHOLD_PARAM
                state = self.request(project_id, f"{count} new or changed labels ({label}={threshold})")
        return {"training": state, "labels_since_training": pending}

    def request(self, project_id: int, reason: str) -> str:
        """Queue a run now (``START_TRAINING``); during a run, one follow-up. Returns the state."""
        state = self.state.request(project_id, reason)
        if state == "queued":
            log.info("project %s: training queued (%s)", project_id, reason)
            self._wake.set()
        return state

    def status(self, project_id: int) -> dict[str, Any]:
        """What ``GET /training?project=ID`` returns."""
        row = self.state.get(project_id)
        threshold, source = self.threshold(project_id, row)
        current, speedup, display = None, None, default_display(self.settings).to_json({})
        try:
            info = self.models.current(project_id)
            current = info.version if info else self.models.base.version
            speedup = speedup_of(info.metrics) if info else None
            stored = (info.metrics.get("new") or {}).get("display") if info else None
            if stored and self.settings.score_threshold is None:
                display = stored
        except Exception:  # a damaged registry must not break the status route
            pass
        out = {
            "project": int(project_id),
            "state": row["state"],
            "reason": row["reason"],
            "progress": _loads(row["progress"]) if row["state"] == "training" else None,
            "message": row["message"],
            "follow_up": bool(row["follow_up"]),
            "queued_at": row["queued"],
            "started_at": row["started"],
            "finished_at": row["finished"],
            "runs": row["runs"],
            "labels_since_training": self.events.pending(project_id, CONSUMER),
            "retrain_min_new_labels": threshold,
            "retrain_threshold_from": source,
            "model_version": current,
            "speedup": speedup,  # the served version's pre-annotations against drawing, on its held-out tasks
            "display": display,  # what they show: per-class thresholds (ml_backend.inference.display)
            "job": row["job"],  # the RQ job of a run on a worker
            "last_run": shown_run(_loads(row["last"])),
        }
        return out

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status(p) for p in self.state.projects()]

    def idle(self, timeout: float = 0.0, project_id: int | None = None) -> bool:
        """True when no run is queued or running (waits up to ``timeout`` seconds).

        Args:
            timeout: seconds to wait at most.
            project_id: only this project's runs count (wherever they run); None: any project's, and
                this process's run.
        """
        deadline = time.monotonic() + timeout
        while True:
            projects = self.state.projects() if project_id is None else [project_id]
            busy = any(self.state.get(p)["state"] in ("queued", "training") for p in projects) or (self._busy and project_id is None)
            if not busy or time.monotonic() >= deadline:
                return not busy
            time.sleep(0.1)

    def close(self) -> None:
        """Stop the worker thread. A run in a child process is stopped and queued again for the next
        start; a run on an RQ worker goes on, and the next start waits for it."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    # --- the worker thread ---

    def _recover(self, startup: bool = False) -> None:
        for pid in self.state.projects():
            row = self.state.get(pid)
            if row["state"] != "training" or (row["owner"] == self.owner and not startup):
                continue
            if not owner_alive(row["owner"], row["heartbeat"]):
                why = f"reattaching to RQ job {row['job']}" if row["job"] else "the run is queued again"
                self.state.update(
                    pid,
                    state="queued",
                    reason=f"resumed: the backend stopped during the previous run; {why}",
                    queued=time.time(),
                    owner=None,
                )
                log.warning("project %s: a training run was interrupted by a restart; it is queued again", pid)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            project_id = self.state.claim(self.owner, self.events.latest, self.projects)
            if project_id is None:
                self._wake.wait(timeout=5.0)  # also polls: another process may have queued a run
                self._recover()  # a run whose owner died (another process, another container)
                continue
            self._busy = True
            try:
                self._run(project_id)
            except Exception:  # never let the thread die
                log.exception("project %s: training bookkeeping failed", project_id)
                self.state.update(
                    project_id, state="failed", message="internal error in the training loop; see the backend log", finished=time.time()
                )
            finally:
                self._busy = False

    def _run(self, project_id: int) -> None:
        row = self.state.get(project_id)
        start_seq = int(row["start_seq"] or 0)
        runs_dir = self.settings.paths.training_runs(project_id)
        shutil.rmtree(runs_dir, ignore_errors=True)  # a failed run's folder is kept until the next run
        workdir = runs_dir / time.strftime("run-%Y%m%d-%H%M%S")
        try:
            holder = self.models.holder(project_id)
            model = holder.get()
            base_weights = Path(str(model.path))
            if not base_weights.is_file():
                raise TrainingError(f"the served model {model.version} has no local weights file to fine-tune")
            info = self.models.current(project_id)
            shown = (info.metrics.get("new") or {}).get("display") if info is not None and info.version == model.version else None
            req = TrainRequest(
                project_id, str(base_weights), model.version, str(workdir), row["reason"] or "", dict(shown or {}),
                self.models.control_versions(project_id),
            )  # fmt: skip
            attached = self.runner.attach(row["job"], req) if row["job"] else None
            handle = attached or self.runner.start(req)  # a run still going on a worker is not started twice
            self.state.update(project_id, job=handle.job_id)
            deadline = time.monotonic() + self.settings.train_timeout
            while not handle.done():
                if self._stop.wait(self.poll_s):
                    if handle.job_id:  # it runs on a worker: leave it; the next start reattaches
                        reason = f"resumed: the backend stopped while RQ job {handle.job_id} ran; reattaching to it"
                    else:
                        handle.cancel()
                        reason = "resumed: the backend stopped during the previous run"
                    self.state.update(project_id, state="queued", reason=reason, queued=time.time(), owner=None)
                    return
                if time.monotonic() > deadline:
                    handle.cancel()
                    raise TrainingError(
                        f"stopped after TRAIN_TIMEOUT={self.settings.train_timeout:.0f} s; raise it, or lower TRAIN_STEPS/TRAIN_IMGSZ"
                    )
                prog = handle.progress()
                self.state.update(project_id, heartbeat=time.time(), **({"progress": prog} if prog else {}))
            try:
                outcome = handle.outcome()
            finally:
                self.state.update(project_id, job=None)
            last = self._finish(project_id, outcome)
            self.events.mark(project_id, CONSUMER, start_seq)  # only after a run that finished
            shutil.rmtree(runs_dir, ignore_errors=True)
            state, message = "idle", last["decision"]
        except Exception as exc:
            if isinstance(exc, TrainingError) and exc.transient:
                attempt = int(self.state.get(project_id)["attempt"] or 0) + 1
                wait = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1))
                log.warning("project %s: Label Studio unavailable during training (%s); trying again in %.0f s", project_id, exc, wait)
                self.state.update(
                    project_id, state="queued", queued=time.time() + wait, attempt=attempt, owner=None, progress=None,
                    reason=f"retry {attempt}: Label Studio was unavailable ({exc}); the labels stay counted",
                )  # fmt: skip
                return
            if not isinstance(exc, (TrainingError, ValueError)):
                log.exception("project %s: training failed", project_id)
            message = str(exc) or type(exc).__name__
            log.error("project %s: training failed: %s", project_id, message)
            state, last = "failed", {"status": "failed", "decision": message, "finished_at": time.time()}
        self.state.update(project_id, attempt=0)
        runs = (self.state.get(project_id)["runs"] or 0) + 1
        follow_up = self.state.finish(
            project_id, state=state, message=message, last=last, finished=time.time(), owner=None, progress=None, runs=runs
        )
        threshold, _ = self.threshold(project_id)
        if not follow_up and state == "idle" and threshold > 0 and self.events.pending(project_id, CONSUMER) >= threshold:
            follow_up = True  # labels that came in as the run ended (the flag's race): they count too
        if follow_up:
            self.request(project_id, "follow-up: new labels or a train request arrived during the previous run")

    def _finish(self, project_id: int, outcome: TrainOutcome) -> dict[str, Any]:
        """Store the trained models (the project's, each own-model control's), promote those that won, and say what happened."""
        controls = {}
        for name, run in outcome.controls.items():
            try:
                controls[name] = self._finish_control(project_id, name, run)
            except Exception as exc:  # one control's storage never costs the project's model
                log.exception("project %s: control %s: its trained model could not be stored", project_id, name)
                controls[name] = {"status": "failed", "decision": f"not stored: {type(exc).__name__}: {exc}", "promoted": False}
        last = self._finish_project_model(project_id, outcome)  # its promotion's re-score sees the controls' new models
        if controls:
            last["controls"] = controls
            if not last["promoted"] and any(c.get("promoted") for c in controls.values()) and self.on_promoted is not None:
                current = self.models.current(project_id)  # the project's model is unchanged: its predictions are refreshed
                self.on_promoted(project_id, current.version if current else outcome.base_version, None)
        return last

    def _finish_control(self, project_id: int, name: str, run: dict[str, Any]) -> dict[str, Any]:
        """Store a control's own retrained model and serve it if it won (its next predictions use it)."""
        said = {k: run.get(k) for k in ("status", "decision", "base_version", "model_path")}
        said.update(version=None, promoted=False)
        if run.get("status") != "trained" or not run.get("weights"):
            log.info("project %s: control %s not trained: %s", project_id, name, run.get("decision"))
            return said
        registry = self.models.control_registry(project_id, name)
        metrics = {
            "new": run.get("metrics_new") or {}, "previous": run.get("metrics_old") or {}, "model_path": run.get("model_path"), "control": name
        }  # fmt: skip
        info = registry.add(run["weights"], parent=run.get("base_version"), metrics=metrics, note=str(run.get("decision") or ""))
        said.update(version=info.version, metrics_new=metrics["new"], metrics_previous=metrics["previous"])
        if run.get("promote"):
            unloadable = self._unloadable(info)
            if unloadable is not None:
                said["decision"] = unloadable
                return said
            registry.promote(info.version)
            said["promoted"] = True
            log.info("project %s: control %s: %s promoted (%s)", project_id, name, info.version, run.get("decision"))
        self._prune_versions(registry, f"project {project_id}: control {name}")
        return said

    def _unloadable(self, info: VersionInfo) -> str | None:
        """Why a stored version's weights cannot be served here (they do not load), or None: they load."""
        try:
            ModelHolder(str(info.weights), self.models.base.device, version=info.version).get()
        except Exception as exc:
            return f"not served: the trained weights could not be loaded here ({exc})"
        return None

    def _finish_project_model(self, project_id: int, outcome: TrainOutcome) -> dict[str, Any]:
        """Store the project's trained model, promote it if it won, and say what happened."""
        last: dict[str, Any] = {
            "status": outcome.status,
            "decision": outcome.decision,
            "base_version": outcome.base_version,
            "dataset": outcome.dataset,
            "seconds": round(outcome.seconds, 1),
            "finished_at": time.time(),
            "version": None,
            "promoted": False,
        }
        if outcome.status != "trained" or not outcome.weights:
            log.info("project %s: training skipped: %s", project_id, outcome.decision)
            return last
        registry = self.models.registry(project_id)
        info = registry.add(
            outcome.weights,
            parent=outcome.base_version,
            metrics={"new": outcome.metrics_new, "previous": outcome.metrics_old, "dataset": outcome.dataset, "epochs": outcome.epochs},
            note=outcome.decision,
        )
        last.update(
            version=info.version, metrics_new=outcome.metrics_new, metrics_previous=outcome.metrics_old, judgement=outcome.judgement
        )
        cost = speedup_of(info.metrics)
        if cost is not None:
            last["speedup"] = cost
        crash_point("promotion:stored")
        unloadable = self._unloadable(info) if outcome.promote else None  # loads, or no promotion
        if unloadable is not None:
            outcome.promote = False
            outcome.decision = last["decision"] = unloadable
        if outcome.promote:
            registry.promote(info.version)
            crash_point("promotion:switched")
            self.models.preload(project_id)  # loaded before any request is served with it
            last["promoted"] = True
            log.info("project %s: %s promoted (%s)", project_id, info.version, outcome.decision)
            if self.on_promoted is not None:
                self.on_promoted(project_id, info.version, outcome.base_version)
        else:
            log.info("project %s: %s stored, not served (%s)", project_id, info.version, outcome.decision)
        self._prune_versions(registry, f"project {project_id}")
        return last

    def _prune_versions(self, registry: ModelRegistry, whose: str) -> None:
        """Delete the weights of ``registry``'s versions never served beyond the ``VERSIONS_KEEP`` newest
        (:meth:`ml_backend.inference.versions.ModelRegistry.prune`); a failure is logged, never fails the run."""
        try:
            pruned = registry.prune(self.settings.versions_keep)
        except OSError as exc:
            log.warning("%s: could not prune old model versions: %s", whose, exc)
            return
        if pruned:
            log.info(
                "%s: deleted the weights of %d never-served version(s) (VERSIONS_KEEP=%s): %s",
                whose, len(pruned), self.settings.versions_keep, ", ".join(pruned),
            )  # fmt: skip
