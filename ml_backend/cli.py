"""Command line: ``python -m ml_backend serve | demo | connect | score | train | worker | bench | simulate | pretrain | make-digits``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ml_backend.settings import Settings, SettingsError


def _logging(level: str, settings: Settings | None = None) -> None:
    from ml_backend import log_redaction

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs failed CPU-specific builds at INFO
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError:
            return  # the command reports the bad setting itself
    log_redaction.install(settings)  # no credential in any log line


def serve(host: str, port: int, threads: int = 8) -> None:
    """Run the backend with gunicorn (one worker, so the model is loaded once)."""
    from gunicorn.app.base import BaseApplication

    from ml_backend.server import check_model_dir, create_app

    settings = Settings.from_env()
    _logging(settings.log_level, settings)
    check_model_dir(settings.model_dir)  # fail here, with a one-line message, not in a worker

    class _App(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 300)
            self.cfg.set("accesslog", "-")
            self.cfg.set("loglevel", settings.log_level.lower())
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1: one shared socket path otherwise
                self.cfg.set("control_socket_disable", True)

        def load(self):  # noqa: ANN202 - gunicorn's interface; runs in the worker, after the fork
            return create_app(settings)

    _App().run()


def _ls_client(settings: Settings, why: str):  # noqa: ANN202
    """A Label Studio client, or None after saying which settings are missing."""
    from integrations.label_studio import LabelStudioClient

    if not settings.label_studio_url or not settings.label_studio_api_key:
        print(f"error: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY: {why}", file=sys.stderr)
        return None
    return LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key)


def score(project_id: int) -> int:
    """``python -m ml_backend score --project ID``."""
    from integrations.label_studio import LabelStudioError
    from ml_backend.label_config import LabelConfigError
    from ml_backend.model import ModelUnavailableError
    from ml_backend.predict import make_predictor
    from ml_backend.scoring import score_project

    settings = Settings.from_env()
    _logging(settings.log_level, settings)
    client = _ls_client(settings, "scoring reads the project's tasks from Label Studio")
    if client is None:
        return 2
    try:
        pooled = score_project(client, project_id, make_predictor(settings), settings)
    except (LabelStudioError, LabelConfigError, ModelUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    unlabeled = [s for s in pooled.scores if not s.labeled]
    print(f"project {project_id}: scored {len(pooled.scores)} tasks ({len(unlabeled)} unlabeled), {len(pooled.errors)} failed; queue reordered ({settings.al_strategy})")
    for s in sorted(unlabeled, key=lambda s: -s.priority)[:5]:
        print(f"  task {s.task}: priority {s.priority:.3f}  uncertainty {s.uncertainty:.3f}  diversity {s.diversity:.3f}  cluster {s.cluster}  {s.difficulty}")
    return 0


def _non_negative(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (0: only the train button), not {text!r}")
    return int(text)


def connect(project_id: int, backend_url: str, retrain_threshold: int | None = None) -> int:
    """``python -m ml_backend connect --project ID [--backend-url URL] [--retrain-threshold N]``."""
    from integrations.connect import connect_project
    from integrations.label_studio import LabelStudioError

    settings = Settings.from_env()
    client = _ls_client(settings, "connect changes the project through Label Studio's API")
    if client is None:
        return 2
    try:
        report = connect_project(client, project_id, backend_url, settings, retrain_threshold=retrain_threshold)
    except (LabelStudioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.actions:
        print(f"  {line}")
    print(f"project {project_id}: {'connected' if report.changed else 'already connected, nothing changed'}. "
          f"Order the queue now with: python -m ml_backend score --project {project_id} (new tasks are scored as they are imported)")
    return 0


def train(project_id: int) -> int:
    """``python -m ml_backend train --project ID``: one retraining run now, in the foreground.

    The same loop as the server's (a child process, the same promotion rule, the same state in
    ``MODEL_DIR``), so a server using that ``MODEL_DIR`` serves the new model at once.
    """
    from ml_backend.label_events import LabelEventStore
    from ml_backend.predict import make_predictor
    from ml_backend.scoring import score_project
    from ml_backend.training_jobs import TrainingJobs

    settings = Settings.from_env()
    _logging(settings.log_level, settings)
    client = _ls_client(settings, "training reads the labels from Label Studio")
    if client is None:
        return 2
    predictor = make_predictor(settings)

    def rescore(pid: int, version: str, previous: str | None) -> None:
        pooled = score_project(client, pid, predictor, settings, progress=False, retire=[previous] if previous else [])
        print(f"project {pid}: re-scored {len(pooled.scores)} tasks with {version}; queue reordered")

    jobs = TrainingJobs(settings, predictor.models, LabelEventStore(settings.model_dir / "state.db"), on_promoted=rescore)
    try:
        jobs.request(project_id, "command line (python -m ml_backend train)")
        shown = None
        while not jobs.idle(2.0):
            prog = jobs.status(project_id)["progress"]
            if prog and prog != shown:
                shown = prog
                print("  " + ", ".join(f"{k} {v}" for k, v in prog.items() if k not in ("at", "losses")), flush=True)
        status = jobs.status(project_id)
    finally:
        jobs.close()
    print(f"project {project_id}: {status['state']}: {status['message']}")
    print(f"served model: {status['model_version']}")
    return 1 if status["state"] == "failed" else 0


def simulate(args: argparse.Namespace) -> int:
    """``python -m ml_backend simulate ...``: run or resume the study, then write its summary and figure."""
    from ml_backend.datasets import DatasetError
    from ml_backend.simulation import SimConfig, SimulationError, report, run_study

    _logging("WARNING")
    try:
        try:
            seeds = tuple(range(int(args.seeds))) if args.seeds.isdigit() else tuple(int(x) for x in args.seeds.split(","))
        except ValueError:
            raise SimulationError(f"--seeds must be a count (3) or a comma-separated list of integers (0,5,7), got {args.seeds!r}") from None
        cfg = SimConfig(
            data=str(args.data), format=args.format, out=str(args.out), weights=str(args.weights),
            strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()), initial=args.initial, step=args.step,
            rounds=args.rounds, seeds=seeds, steps=args.steps, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
            test_fraction=args.test_fraction, device=args.device,
        )
        if not args.report:
            run_study(cfg)
        print(report(args.out, args.metric))
    except (SimulationError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"results: {args.out}/results.json, summary: {args.out}/summary.md, figure: {args.out}/learning_curve.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description="Active-learning YOLO backend for Label Studio")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the ML backend HTTP server")
    p_serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    p_serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9090")))
    p_serve.add_argument("--threads", type=int, default=8)
    p_demo = sub.add_parser("demo", help="offline demo: synthetic images, a starter model, a real Label Studio, connected")
    p_demo.add_argument("--dir", default="demo_state", help="where the demo keeps its files")
    p_demo.add_argument("--ls-port", type=int, default=8080)
    p_demo.add_argument("--backend-port", type=int, default=9090)
    p_demo.add_argument("--images", type=int, default=12)
    p_demo.add_argument("--epochs", type=int, default=60, help="starter model training epochs")
    p_demo.add_argument("--no-wait", action="store_true", help="set everything up, print, and stop (no serving)")
    p_score = sub.add_parser("score", help="score every task of a project and reorder its queue in Label Studio")
    p_score.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p_conn = sub.add_parser("connect", help="connect a Label Studio project to this backend: register it, uncertainty-sampling queue, queue tab (idempotent)")
    p_conn.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p_conn.add_argument(
        "--backend-url", default=os.environ.get("BACKEND_URL", f"http://127.0.0.1:{os.environ.get('PORT', '9090')}"),
        help="this backend's URL as Label Studio reaches it (default: $BACKEND_URL, else http://127.0.0.1:$PORT; in docker compose: http://backend:9090)",
    )
    p_conn.add_argument(
        "--retrain-threshold", type=_non_negative, default=None, metavar="N",
        help="retrain this project after every N new, changed or deleted labels (0: only on the train button); "
        "default: keep the project's threshold, else the backend's RETRAIN_MIN_NEW_LABELS",
    )
    p_train = sub.add_parser("train", help="retrain a project's model now, from its current labels in Label Studio")
    p_train.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p_worker = sub.add_parser("worker", help="run an RQ training worker (needs REDIS_URL); can run on another (GPU) machine")
    p_worker.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    p_sim = sub.add_parser("simulate", help="label-savings study: the active-learning loop on a labeled dataset, ground truth as the annotator")
    p_sim.add_argument("--data", required=True, help="dataset folder (or a YOLO yaml / COCO json)")
    p_sim.add_argument("--format", required=True, choices=["voc", "yolo", "coco"])
    p_sim.add_argument("--weights", required=True, help="starting model (.pt): a pretrained one, or one made by `python -m ml_backend pretrain`")
    p_sim.add_argument("--strategies", default="random,uncertainty,diversity,hybrid", help="comma-separated; random is the reference")
    p_sim.add_argument("--initial", type=int, default=20, help="labels of round 0 (a random draw, the same for every strategy)")
    p_sim.add_argument("--step", type=int, default=20, help="labels added per round")
    p_sim.add_argument("--rounds", type=int, default=4, help="rounds after round 0")
    p_sim.add_argument("--seeds", default="3", help="a number of seeds (3 -> 0,1,2) or a comma-separated list")
    p_sim.add_argument("--steps", type=int, default=100, help="training budget per round in optimizer steps (epochs follow from the label count)")
    p_sim.add_argument("--epochs", type=int, default=0, help="a fixed number of epochs per round instead of --steps")
    p_sim.add_argument("--imgsz", type=int, default=320)
    p_sim.add_argument("--batch", type=int, default=8)
    p_sim.add_argument("--test-fraction", type=float, default=0.25, help="share of images in the fixed test split")
    p_sim.add_argument("--device", default="auto")
    p_sim.add_argument("--metric", default="map50", choices=["map50", "map50_95"], help="what the summary compares")
    p_sim.add_argument("--out", required=True, help="results folder; an existing one with the same settings is resumed")
    p_sim.add_argument("--report", action="store_true", help="only rewrite the summary and figure from the results so far")
    p_dig = sub.add_parser("make-digits", help="write the multi-class study dataset: real handwritten digits in synthetic scenes (COCO)")
    p_dig.add_argument("--out", required=True)
    p_dig.add_argument("--images", type=int, default=400)
    p_dig.add_argument("--variant", choices=["target", "source"], default="target", help="target: digits 0,1,4,7 (0 rare); source: 2,3,5,6,9 for pretraining")
    p_dig.add_argument("--seed", type=int, default=0)
    p_pre = sub.add_parser("pretrain", help="train a starting model from the model yaml (offline): on synthetic shapes, or on a dataset")
    p_pre.add_argument("--out", required=True, help="where to write the .pt")
    p_pre.add_argument("--data", help="a dataset folder to pretrain on (default: synthetic shapes)")
    p_pre.add_argument("--format", choices=["voc", "yolo", "coco"])
    p_pre.add_argument("--images", type=int, default=2000, help="synthetic images (without --data)")
    p_pre.add_argument("--epochs", type=int, default=30)
    p_pre.add_argument("--imgsz", type=int, default=320)
    p_pre.add_argument("--batch", type=int, default=16)
    p_pre.add_argument("--model", default="yolov8n.yaml", help="the Ultralytics model yaml")
    p_pre.add_argument("--device", default="auto")
    p_bench = sub.add_parser("bench", help="benchmarks: scoring overhead, /predict latency, re-scoring, k-center, pushing predictions (not tests)")
    p_bench.add_argument(
        "--only", nargs="*", choices=["scoring", "predict", "rescoring", "kcenter", "push", "push-each", "training", "load"], help="run only these"
    )
    p_bench.add_argument("--repeat", type=int, default=5, help="runs per figure (the median is reported); predict: 6x / 2x this many requests")
    p_bench.add_argument("--out", default="bench.json")
    p_bench.add_argument("--dir", default=".cache/bench", help="scratch folder (model, images, Label Studio)")
    p_bench.add_argument("--device", default="cpu", help="DEVICE of every benchmark that runs a model: cpu, cuda, cuda:0, auto, ...")
    p_bench.add_argument("--tasks", type=int, default=1000, help="tasks in the rescoring benchmark's pool")
    p_bench.add_argument("--weights", help="model of scoring, predict and rescoring (default: a shape detector trained once, 50 epochs at 96 px on synthetic images)")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.host, args.port, args.threads)
        elif args.command == "score":
            return score(args.project)
        elif args.command == "connect":
            return connect(args.project, args.backend_url, args.retrain_threshold)
        elif args.command == "train":
            return train(args.project)
        elif args.command == "worker":
            from ml_backend.training_runners import run_worker

            settings = Settings.from_env()
            _logging(settings.log_level, settings)
            run_worker(settings, burst=args.burst)
        elif args.command == "simulate":
            return simulate(args)
        elif args.command == "make-digits":
            from ml_backend.digit_scenes import make_digit_scenes

            print(f"wrote {make_digit_scenes(args.out, args.images, args.variant, seed=args.seed)}")
        elif args.command == "pretrain":
            from ml_backend.starter import pretrain_model

            _logging("INFO")
            path = pretrain_model(
                args.out, data=args.data, fmt=args.format, n_images=args.images, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                model_yaml=args.model, device=args.device,
            )
            print(f"wrote {path}")
        elif args.command == "bench":
            from ml_backend.bench import run_bench

            _logging("WARNING")
            run_bench(args.out, args.only, args.repeat, args.dir, args.device, rescoring_tasks=args.tasks, weights=args.weights)
        elif args.command == "demo":
            from ml_backend.demo import run_demo

            _logging("INFO")
            run_demo(args.dir, ls_port=args.ls_port, backend_port=args.backend_port, n_images=args.images, epochs=args.epochs, wait=not args.no_wait)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
