"""Where a training run executes: a child process of the server (default) or an RQ worker.

Both runners take a :class:`ml_backend.training.run.TrainRequest` and hand back a handle that the
server polls (``progress``, ``done``, ``outcome``, ``cancel``); neither blocks a request.

* :class:`LocalRunner`: ``python -m ml_backend.jobs.runners <request.json>`` with the
  server's settings in its environment, at a lower CPU priority so serving stays responsive.
  Progress and the outcome come back as small JSON files in the run's folder.
* :class:`RQRunner` (``REDIS_URL`` set): an RQ job on the ``TRAIN_QUEUE`` queue. The base
  weights travel in the job and the new weights come back in its result, so the worker (the
  GPU box, ``python -m ml_backend worker``) needs no shared disk with the server: only Redis
  and Label Studio. Every setting travels with the job (:meth:`Settings.run_env`) except the
  machine's own (``local`` in :mod:`ml_backend.settings`: ``DEVICE``, ``LABEL_STUDIO_URL``/
  ``LABEL_STUDIO_API_KEY``, ``MODEL_DIR`` (its image cache), credentials, image limits), which
  come from the worker's own environment.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from integrations.label_studio import LabelStudioError
from ml_backend.settings import Settings
from ml_backend.state import write_json_atomic
from ml_backend.training.run import TrainingError, TrainOutcome, TrainRequest, train_project

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding ml_backend/


class RunHandle(Protocol):
    """A training run under way.

    ``job_id`` names a run that outlives the backend (an RQ job on another machine): a backend that
    stops leaves it running and reattaches to it when it starts again. None for a child process,
    which stops with the backend.
    """

    job_id: str | None

    def progress(self) -> dict[str, Any] | None: ...

    def done(self) -> bool: ...

    def outcome(self) -> TrainOutcome:
        """The result of a finished run. Raises :class:`TrainingError` with the reason it failed."""
        ...

    def cancel(self) -> None: ...


class Runner(Protocol):
    def start(self, req: TrainRequest) -> RunHandle: ...

    def attach(self, job_id: str, req: TrainRequest) -> RunHandle | None:
        """The run ``job_id`` if it is still there to wait for (queued, running or finished), else None."""
        ...


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_request(req: TrainRequest, settings: Settings, progress: Any) -> TrainOutcome:
    """Train with a Label Studio client and image fetcher made from ``settings``."""
    from ml_backend.inference.predictor import label_studio_client, make_fetcher

    client = label_studio_client(settings)
    if client is None:
        raise TrainingError("training reads the labels from Label Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    fetcher = make_fetcher(settings, settings.label_studio_url, settings.label_studio_api_key)
    return train_project(req, settings, client, fetcher.load, progress)


def _lower_priority() -> None:
    try:
        os.nice(10)
    except (AttributeError, OSError):
        pass


# --- a child process ------------------------------------------------------------------------


class LocalHandle:
    job_id: str | None = None  # a child process does not outlive the backend

    def __init__(self, proc: subprocess.Popen, workdir: Path):
        self.proc = proc
        self.workdir = workdir

    def progress(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.workdir / "progress.json").read_text())
        except (OSError, ValueError):
            return None

    def done(self) -> bool:
        return self.proc.poll() is not None

    def outcome(self) -> TrainOutcome:
        code = self.proc.wait()
        try:
            return TrainOutcome.from_json(json.loads((self.workdir / "outcome.json").read_text()))
        except (OSError, ValueError, TypeError):
            pass
        transient = False
        try:
            data = json.loads((self.workdir / "error.json").read_text())
            error, transient = data["error"], bool(data.get("transient"))
        except (OSError, ValueError, KeyError):
            tail = ""
            try:
                tail = _last_line((self.workdir / "train.log").read_text(errors="replace"))
            except OSError:
                pass
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            error = f"the training process {how}" + (f": {tail}" if tail else "") + f" (log: {self.workdir / 'train.log'})"
        raise TrainingError(error, transient=transient)

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def child_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a training child process: ``environ`` (default ``os.environ``) with every setting of the server."""
    return {**(os.environ if environ is None else environ), **settings.to_env()}


def worker_settings(run_env: Mapping[str, str], environ: Mapping[str, str] | None = None) -> Settings:
    """What an RQ worker trains with: the job's settings (:meth:`Settings.run_env`) over its own environment."""
    return Settings.from_env({**(os.environ if environ is None else environ), **run_env})


class LocalRunner:
    """Runs each training in a child process with ``settings`` in its environment."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def start(self, req: TrainRequest) -> LocalHandle:
        workdir = Path(req.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(workdir / "request.json", req.to_json())
        env = child_environment(self.settings)
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        env.setdefault("YOLO_AUTOINSTALL", "false")
        with open(workdir / "train.log", "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ml_backend.jobs.runners", str(workdir / "request.json")],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=os.getcwd(),  # relative MODEL_DIR stays valid
            )
        log.info("project %s: training started in process %d (%s)", req.project_id, proc.pid, workdir)
        return LocalHandle(proc, workdir)

    def attach(self, job_id: str, req: TrainRequest) -> LocalHandle | None:
        return None  # a child process stops with the backend that started it


def _exit_with_parent() -> None:
    """Stop this run when the server that started it is gone (killed, crashed): no orphan keeps training."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def child_main(request_path: str) -> int:
    """Entry point of the child process: train, then write ``outcome.json`` or ``error.json``."""
    _lower_priority()
    _exit_with_parent()
    workdir = Path(request_path).parent
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        req = TrainRequest.from_json(json.loads(Path(request_path).read_text()))
        settings = Settings.from_env()

        def progress(stage: str, **fields: Any) -> None:
            write_json_atomic(workdir / "progress.json", {"stage": stage, **fields, "at": time.time()})

        outcome = run_request(req, settings, progress)
        write_json_atomic(workdir / "outcome.json", outcome.to_json())
        return 0
    except Exception as exc:
        traceback.print_exc()
        write_json_atomic(workdir / "error.json", _error_json(exc))
        return 1


def _error_json(exc: Exception) -> dict[str, Any]:
    """A failed run's reason, and whether it was Label Studio being unavailable (tried again later)."""
    transient = isinstance(exc, LabelStudioError) and exc.transient or isinstance(exc, TrainingError) and exc.transient
    return {"error": str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}", "transient": transient}


# --- an RQ worker ---------------------------------------------------------------------------


def rq_train(
    request: Mapping[str, Any], base_weights: bytes, policy_env: Mapping[str, str], control_weights: Mapping[str, bytes] | None = None
) -> dict[str, Any]:
    """The RQ job (runs in the worker's work horse process): returns the outcome and new weights.

    ``control_weights``: the served versions of the project's controls' own models (``request["controls"]``),
    as bytes like ``base_weights``; a control's file under ``MODEL_ROOT`` comes from the worker's own ``MODEL_ROOT``."""
    import shutil

    from rq import get_current_job

    _lower_priority()
    job = get_current_job()
    settings = worker_settings(policy_env)
    workdir = settings.paths.worker_run(str(job.id if job else int(time.time())))
    workdir.mkdir(parents=True, exist_ok=True)
    base = workdir / "base.pt"
    base.write_bytes(base_weights)
    controls = {name: dict(c) for name, c in (request.get("controls") or {}).items() if name in (control_weights or {})}
    for i, (name, data) in enumerate((control_weights or {}).items()):
        if name in controls:
            path = workdir / f"control-base{i}.pt"
            path.write_bytes(data)
            controls[name]["weights"] = str(path)
    req = TrainRequest.from_json({**request, "base_weights": str(base), "workdir": str(workdir), "controls": controls})

    def progress(stage: str, **fields: Any) -> None:
        if job is not None:
            job.meta["progress"] = {"stage": stage, **fields, "at": time.time()}
            job.save_meta()

    try:
        try:
            outcome = run_request(req, settings, progress)
        except (LabelStudioError, TrainingError) as exc:
            return _error_json(exc)  # a reason, not a crashed job: the backend decides whether to try again
        weights = Path(outcome.weights).read_bytes() if outcome.weights else None
        trained = {name: Path(c["weights"]).read_bytes() for name, c in outcome.controls.items() if c.get("weights")}
        return {"outcome": outcome.to_json(), "weights": weights, "controls": trained}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the image cache lives elsewhere and stays


class RQHandle:
    def __init__(self, job: Any, workdir: Path, timeout: float):
        self.job = job
        self.job_id: str | None = str(job.id)
        self.workdir = workdir
        self.deadline = time.monotonic() + timeout + 60

    def _reap_abandoned(self) -> None:
        """Let RQ find a job whose worker died mid-run (its heartbeat expired): it is retried once
        (the job's ``Retry(max=1)``), then failed."""
        try:
            from rq import Queue
            from rq.registry import StartedJobRegistry

            StartedJobRegistry(queue=Queue(self.job.origin, connection=self.job.connection)).cleanup()
        except Exception as exc:  # Redis away: the next poll tries again
            log.debug("training job %s: could not look for abandoned jobs (%s)", self.job.id, exc)

    def _status(self) -> str:
        try:
            return str(getattr(self.job.get_status(refresh=True), "value", self.job.get_status()))
        except Exception as exc:  # Redis went away, or the job expired
            log.warning("training job %s: cannot read its status (%s)", self.job.id, exc)
            return "unknown"

    def progress(self) -> dict[str, Any] | None:
        try:
            self.job.refresh()
        except Exception:
            return None
        status = self._status()
        prog = dict(self.job.meta.get("progress") or {})
        if status == "queued":
            return {"stage": "waiting for an RQ worker"}
        return prog or None

    def done(self) -> bool:
        self._reap_abandoned()
        return self._status() in ("finished", "failed", "stopped", "canceled", "unknown") or time.monotonic() > self.deadline

    def outcome(self) -> TrainOutcome:
        status = self._status()
        if status == "finished":
            result = self.job.return_value(refresh=True) or {}
            if "error" in result:
                raise TrainingError(str(result["error"]), transient=bool(result.get("transient")))
            outcome = TrainOutcome.from_json(result["outcome"])
            if result.get("weights"):
                self.workdir.mkdir(parents=True, exist_ok=True)
                path = self.workdir / f"project{outcome.project_id}.pt"
                path.write_bytes(result["weights"])
                outcome.weights = str(path)
            for i, (name, data) in enumerate((result.get("controls") or {}).items()):  # each control's new weights
                self.workdir.mkdir(parents=True, exist_ok=True)
                path = self.workdir / f"control{i}.pt"
                path.write_bytes(data)
                outcome.controls[name]["weights"] = str(path)
            try:
                self.job.delete()  # the weights it carries need not stay in Redis
            except Exception:
                pass
            return outcome
        if status in ("queued", "started", "deferred", "scheduled"):
            raise TrainingError(
                f"RQ job {self.job.id} did not finish within TRAIN_TIMEOUT; is a worker running (python -m ml_backend worker)?"
            )
        detail = ""
        try:
            res = self.job.latest_result()
            detail = _last_line(getattr(res, "exc_string", "") or "")
        except Exception:
            pass
        raise TrainingError(f"RQ job {self.job.id} {status}" + (f": {detail}" if detail else ""))

    def cancel(self) -> None:
        try:
            if self._status() == "started":  # cancel() alone does not stop a running job
                from rq.command import send_stop_job_command

                send_stop_job_command(self.job.connection, self.job.id)
            else:
                self.job.cancel()
        except Exception as exc:
            log.warning("could not cancel RQ job %s: %s", self.job.id, exc)


class RQRunner:
    """Enqueues each training as an RQ job on ``TRAIN_QUEUE`` at ``REDIS_URL``."""

    def __init__(self, settings: Settings):
        from redis import Redis
        from rq import Queue

        self.settings = settings
        self.redis = Redis.from_url(settings.redis_url)
        self.queue = Queue(settings.train_queue, connection=self.redis)

    def start(self, req: TrainRequest) -> RQHandle:
        policy = self.settings.run_env()  # every setting but the machine's own
        request = {k: v for k, v in req.to_json().items() if k not in ("base_weights", "workdir")}
        request.update(base_weights="", workdir="")
        controls = {name: Path(c["weights"]).read_bytes() for name, c in req.controls.items() if Path(c.get("weights", "")).is_file()}
        from rq import Retry

        job = self.queue.enqueue(
            rq_train,
            request,
            Path(req.base_weights).read_bytes(),
            policy,
            *((controls,) if controls else ()),  # a worker not yet upgraded takes jobs without controls
            retry=Retry(max=1),  # a worker killed mid-run: RQ runs it once more
            job_timeout=int(self.settings.train_timeout),
            result_ttl=7 * 86400,
            failure_ttl=7 * 86400,
            description=f"train Label Studio project {req.project_id}",
        )
        log.info("project %s: training enqueued as RQ job %s on %s", req.project_id, job.id, self.settings.train_queue)
        return RQHandle(job, Path(req.workdir), self.settings.train_timeout)

    def attach(self, job_id: str, req: TrainRequest) -> RQHandle | None:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            job = Job.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            return None
        handle = RQHandle(job, Path(req.workdir), self.settings.train_timeout)
        if handle._status() in ("queued", "started", "deferred", "scheduled", "finished"):
            log.info("project %s: reattached to RQ job %s (%s)", req.project_id, job_id, handle._status())
            return handle
        return None


def make_runner(settings: Settings) -> Runner:
    """:class:`RQRunner` when ``REDIS_URL`` is set, else :class:`LocalRunner`."""
    return RQRunner(settings) if settings.redis_url else LocalRunner(settings)


def run_worker(settings: Settings, burst: bool = False) -> None:
    """Run an RQ worker for ``TRAIN_QUEUE`` (``python -m ml_backend worker``)."""
    from redis import Redis
    from rq import Queue, Worker

    if not settings.redis_url:
        raise SystemExit("set REDIS_URL (e.g. redis://localhost:6379/0) to run a training worker")
    redis = Redis.from_url(settings.redis_url)
    # A 10 s job heartbeat: a worker killed mid-run is found about 70 s later, and its job retried.
    Worker([Queue(settings.train_queue, connection=redis)], connection=redis, job_monitoring_interval=10).work(burst=burst)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
