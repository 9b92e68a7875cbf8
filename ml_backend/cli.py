"""The runtime's commands: ``python -m ml_backend serve | score | connect | train | assess | worker``.

Each command is a :class:`Command` record (name, help, arguments, what it runs). The tools add
theirs (``demo``, ``bench``, ``simulate``, ``budget-curve``, ``pretrain``, ``make-digits``, ``first-model``: :mod:`ml_backend.tools.cli`);
``python -m ml_backend`` (:mod:`ml_backend.__main__`) joins both lists, so that this module,
like the rest of the runtime, never imports a tool.

Example:
    >>> sorted(c.name for c in COMMANDS)
    ['assess', 'connect', 'score', 'serve', 'train', 'worker']
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from integrations.connect import Access, connect_project, speedup_line
from integrations.label_studio import LabelStudioClient, LabelStudioError
from ml_backend.backend import build_backend, check_model_dir
from ml_backend.inference.label_config import LabelConfigError
from ml_backend.inference.model import ModelUnavailableError
from ml_backend.inference.predictor import label_studio_client
from ml_backend.inference.versions import speedup_of
from ml_backend.log_redaction import setup_logging
from ml_backend.settings import Settings, SettingsError


@dataclass(frozen=True)
class Command:
    """One subcommand of ``python -m ml_backend``.

    Attributes:
        name: what follows ``python -m ml_backend``.
        help: one line for ``--help``.
        arguments: adds the command's arguments to its parser.
        run: runs it with the parsed arguments; returns the exit status.
    """

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _ls_client(settings: Settings, why: str) -> LabelStudioClient | None:
    """A Label Studio client, or None after saying which settings are missing."""
    client = label_studio_client(settings)
    if client is None:
        print(f"error: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY: {why}", file=sys.stderr)
    return client


def _logged_client(why: str) -> tuple[Settings, LabelStudioClient] | None:
    """Settings from the environment, logging set up, and a Label Studio client (None after saying what is missing)."""
    settings = Settings.from_env()
    setup_logging(settings.log_level, settings)
    client = _ls_client(settings, why)
    return None if client is None else (settings, client)


def serve(args: argparse.Namespace) -> int:
    """Run the backend with gunicorn: ``--workers`` processes (each loads the model; training and a
    project's scoring are claimed in ``state.db`` by one of them at a time), ``--threads`` each."""
    from gunicorn.app.base import BaseApplication

    from ml_backend.access import Exposure
    from ml_backend.server import create_app

    settings = Settings.from_env()
    settings = dataclasses.replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    refusal = Exposure.of(settings).refusal()  # here, with a one-line message, not in a worker
    if refusal is not None:
        raise SettingsError(refusal)
    setup_logging(settings.log_level, settings)
    check_model_dir(settings.model_dir)  # fail here, with a one-line message, not in a worker
    host, port, threads, workers = settings.host, settings.port, args.threads, args.workers

    class _App(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 300)
            # A stopping worker closes its training loop (30 s at most) and lets a model load under
            # way finish (60 s at most): give it that before gunicorn kills it.
            self.cfg.set("graceful_timeout", 120)
            self.cfg.set("accesslog", "-")
            self.cfg.set("loglevel", settings.log_level.lower())
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1: one shared socket path otherwise
                self.cfg.set("control_socket_disable", True)

        def load(self):  # noqa: ANN202 - gunicorn's interface; runs in the worker, after the fork
            return create_app(settings)

    _App().run()
    return 0


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default: HOST, else 127.0.0.1); beyond loopback it needs basic auth")
    p.add_argument("--port", type=int, help="port to listen on (default: PORT, else 9090)")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument(
        "--workers", type=int, default=int(os.environ.get("WORKERS", "1")),
        help="gunicorn worker processes (default $WORKERS, else 1): each loads the model once; they share MODEL_DIR",
    )  # fmt: skip


def score(args: argparse.Namespace) -> int:
    """``python -m ml_backend score --project ID``: score every task and order the queue now."""
    from ml_backend.inference.predictor import make_predictor
    from ml_backend.scoring.publish import score_project

    project_id = args.project
    ready = _logged_client("scoring reads the project's tasks from Label Studio")
    if ready is None:
        return 2
    settings, client = ready
    try:
        predictor = make_predictor(settings)
        pooled = score_project(client, project_id, predictor, settings)
    except (LabelStudioError, LabelConfigError, ModelUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    unlabeled = [s for s in pooled.scores if not s.labeled]
    print(
        f"project {project_id}: scored {len(pooled.scores)} tasks ({len(unlabeled)} unlabeled), {len(pooled.errors)} failed; "
        f"queue reordered ({settings.al_strategy})"
    )
    served = predictor.models.current(project_id)
    speedup = speedup_of(served.metrics) if served else None
    if served is not None and speedup is not None and isinstance(speedup.get("speedup"), (int, float)):
        print(f"  {speedup_line(served.version, speedup)}")
    for s in sorted(unlabeled, key=lambda s: -s.priority)[:5]:
        print(
            f"  task {s.task}: priority {s.priority:.3f}  uncertainty {s.uncertainty:.3f}  diversity {s.diversity:.3f}  "
            f"cluster {s.cluster}  {s.difficulty}"
        )
    return 0


def assess(args: argparse.Namespace) -> int:
    """``python -m ml_backend assess --project ID``: what the served model's pre-annotations save on the held-out labels."""
    import json

    from ml_backend.inference.predictor import make_predictor
    from ml_backend.training.assess import assess_project

    ready = _logged_client("assess reads the project's labels from Label Studio")
    if ready is None:
        return 2
    settings, client = ready
    try:
        out = assess_project(client, args.project, make_predictor(settings), settings)
    except (LabelStudioError, LabelConfigError, ModelUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    c = out["counts"]
    print(
        f"project {out['project']}: {out['model_version']} on {out['heldout_tasks']} held-out labeled tasks ({c['gt_boxes']} boxes): "
        f"{c['accepted']} accepted, {c['adjusted']} adjusted, {c['class_changed']} relabeled, {c['drawn']} drawn, {c['deleted']} deleted"
    )
    speed = f"{out['speedup']:.2f}x as fast as" if out["speedup"] else "no faster than"
    print(
        f"  about {out['seconds']:.0f} s of annotation against {out['scratch_seconds']:.0f} s drawing every box: {speed} drawing ({out['costs']})"
    )
    for tid, why in out["failed"].items():
        print(f"  task {tid} left out: {why}")
    return 0


def _assess_arguments(p: argparse.ArgumentParser) -> None:
    _project_argument(p)
    p.add_argument("--json", action="store_true", help="print the counts and seconds as JSON")


def _project_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", type=int, required=True, help="Label Studio project id")


def _non_negative(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (0: only the train button), not {text!r}")
    return int(text)


def connect(args: argparse.Namespace) -> int:
    """``python -m ml_backend connect --project ID [--backend-url URL] [--retrain-threshold N]``."""
    project_id = args.project
    settings = Settings.from_env()
    client = _ls_client(settings, "connect changes the project through Label Studio's API")
    if client is None:
        return 2
    access = Access(settings.basic_auth_user, settings.basic_auth_pass, settings.webhook_secret, settings.retrain_min_new_labels)
    try:
        report = connect_project(client, project_id, args.backend_url, access, retrain_threshold=args.retrain_threshold)
    except (LabelStudioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.actions:
        print(f"  {line}")
    print(
        f"project {project_id}: {'connected' if report.changed else 'already connected, nothing changed'}. "
        f"Order the queue now with: python -m ml_backend score --project {project_id} (new tasks are scored as they are imported)"
    )
    return 0


def _connect_arguments(p: argparse.ArgumentParser) -> None:
    _project_argument(p)
    p.add_argument(
        "--backend-url",
        default=os.environ.get("BACKEND_URL", f"http://127.0.0.1:{os.environ.get('PORT', '9090')}"),
        help="this backend's URL as Label Studio reaches it (default: $BACKEND_URL, else http://127.0.0.1:$PORT; "
        "in docker compose: http://backend.internal:9090)",
    )
    p.add_argument(
        "--retrain-threshold",
        type=_non_negative,
        default=None,
        metavar="N",
        help="retrain this project after every N new, changed or deleted labels (0: only on the train button); "
        "default: keep the project's threshold, else the backend's RETRAIN_MIN_NEW_LABELS",
    )


def train(args: argparse.Namespace) -> int:
    """``python -m ml_backend train --project ID``: one retraining run now, in the foreground.

    The backend the server builds (:func:`ml_backend.backend.build_backend`: a child process, the
    same promotion rule, the same state in ``MODEL_DIR``), so a server using that ``MODEL_DIR``
    serves the new model at once; a promoted model re-scores the project before the command ends.
    It trains this project only and ends when its run does: other projects' queued runs stay
    queued for the server.
    """
    project_id = args.project
    settings = Settings.from_env()
    setup_logging(settings.log_level, settings)
    if _ls_client(settings, "training reads the labels from Label Studio") is None:
        return 2
    backend = build_backend(settings, training_projects=[project_id])
    try:
        backend.training.request(project_id, "command line (python -m ml_backend train)")
        shown = None
        while not backend.training.idle(2.0, project_id):
            prog = backend.training.status(project_id)["progress"]
            if prog and prog != shown:
                shown = prog
                print("  " + ", ".join(f"{k} {v}" for k, v in prog.items() if k not in ("at", "losses")), flush=True)
        status = backend.training.status(project_id)
        if status["last_run"] and status["last_run"].get("promoted"):
            print(f"project {project_id}: re-scoring with {status['model_version']} ...", flush=True)
            backend.scoring.idle(timeout=settings.train_timeout)
            scored = backend.scores.load(project_id) or []
            if scored and {s["model_version"] for s in scored} == {status["model_version"]}:
                print(f"project {project_id}: re-scored {len(scored)} tasks with {status['model_version']}; queue reordered")
            else:
                print(
                    f"project {project_id}: re-scoring did not finish ({backend.scoring.last_error}); the server re-scores it when it starts"
                )
    finally:
        backend.close()
    print(f"project {project_id}: {status['state']}: {status['message']}")
    print(f"served model: {status['model_version']}")
    return 1 if status["state"] == "failed" else 0


def worker(args: argparse.Namespace) -> int:
    """``python -m ml_backend worker [--burst]``: an RQ training worker (needs ``REDIS_URL``)."""
    from ml_backend.jobs.runners import run_worker

    settings = Settings.from_env()
    setup_logging(settings.log_level, settings)
    run_worker(settings, burst=args.burst)
    return 0


def _worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--burst", action="store_true", help="stop when the queue is empty")


COMMANDS: tuple[Command, ...] = (
    Command("serve", "run the ML backend HTTP server", _serve_arguments, serve),
    Command("score", "score every task of a project and reorder its queue in Label Studio", _project_argument, score),
    Command(
        "connect",
        "connect a Label Studio project to this backend: register it, uncertainty-sampling queue, queue tab (idempotent)",
        _connect_arguments,
        connect,
    ),
    Command("train", "retrain a project's model now, from its current labels in Label Studio", _project_argument, train),
    Command(
        "assess",
        "what the served model's pre-annotations save an annotator on the project's held-out labels, against drawing every box",
        _assess_arguments,
        assess,
    ),
    Command(
        "worker",
        "run an RQ training worker (needs REDIS_URL); can run on another (GPU) machine",
        _worker_arguments,
        worker,
    ),
)


def main(argv: Sequence[str] | None = None, extra: Sequence[Command] = ()) -> int:
    """Parse ``argv`` and run the command (the runtime's and ``extra`` ones); returns the exit status.

    A bad setting ends the command with status 2 and a one-line message naming it.
    """
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description="Active-learning YOLO backend for Label Studio")
    sub = parser.add_subparsers(dest="command", required=True)
    by_name = {}
    for command in (*COMMANDS, *extra):
        command.arguments(sub.add_parser(command.name, help=command.help))
        by_name[command.name] = command
    args = parser.parse_args(argv)
    try:
        return by_name[args.command].run(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
