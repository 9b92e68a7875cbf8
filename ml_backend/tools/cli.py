"""The tools' commands: ``python -m ml_backend demo | simulate | budget-curve | bench | pretrain | make-digits | first-model``.

:data:`COMMANDS` are :class:`ml_backend.cli.Command` records that ``python -m ml_backend``
(:mod:`ml_backend.__main__`) adds to the runtime's own.

Example:
    >>> sorted(c.name for c in COMMANDS)
    ['bench', 'budget-curve', 'demo', 'first-model', 'make-digits', 'pretrain', 'simulate']
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ml_backend.cli import Command
from ml_backend.log_redaction import setup_logging

if TYPE_CHECKING:
    from ml_backend.tools.study.loop import SimConfig


def demo(args: argparse.Namespace) -> int:
    from ml_backend.tools.demo import run_demo

    setup_logging("INFO")
    run_demo(
        args.dir, ls_port=args.ls_port, backend_port=args.backend_port, n_images=args.images, epochs=args.epochs, wait=not args.no_wait,
        weights=args.weights,
    )  # fmt: skip
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="demo_state", help="where the demo keeps its files")
    p.add_argument("--ls-port", type=int, default=8080)
    p.add_argument("--backend-port", type=int, default=9090)
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--epochs", type=int, default=60, help="starter model training epochs")
    p.add_argument(
        "--weights",
        help="serve these weights instead of the starter model, e.g. COCO-pretrained yolo11n.pt: they know none of the demo's "
        "classes, so the demo shows a new project learning its own classes from its first five labels",
    )
    p.add_argument("--no-wait", action="store_true", help="set everything up, print, and stop (no serving)")


SIMULATE_DEFAULTS = {
    "seeds": "5", "initial": 20, "step": 20, "rounds": 4, "steps": 100, "imgsz": 320, "batch": 8, "device": "auto", "queue": "top",
    "server_loop": False, "epochs": 0,
}  # fmt: skip


def simulate(args: argparse.Namespace) -> int:
    """Run or resume the study, then write its summary and figures."""
    from ml_backend.al.effort import DEFAULT_COSTS
    from ml_backend.tools.datasets import DatasetError
    from ml_backend.tools.study.loop import SimulationError, run_study
    from ml_backend.tools.study.report import report

    setup_logging("WARNING")
    try:
        try:
            table = DEFAULT_COSTS.with_overrides(os.environ.get("ANNOTATION_COSTS", "")).with_overrides(args.costs or "")
        except ValueError as exc:
            raise SimulationError(f"--costs: {exc}") from None
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        seeds = None
        if not args.report:
            if arms or args.report_to or args.reference != "random":
                raise SimulationError("--arms, --reference and --report-to go with --report only (a run reports every arm against random)")
            missing = [f"--{k}" for k in ("data", "format", "weights") if not getattr(args, k)]
            if missing:
                raise SimulationError(f"{', '.join(missing)}: needed to run a study (only --report goes without)")
            run_study(_study_config(args))
        elif args.seeds is not None:
            seeds = _seeds(str(args.seeds))
        print(report(args.out, args.metric, table=table, arms=arms or None, to=args.report_to, seeds=seeds, reference=args.reference))
    except (SimulationError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    to = args.report_to or args.out
    print(f"results: {args.out}/results.json, summary: {to}/summary.md, figures: {to}/learning_curves.png, {to}/effort_curve.png")
    return 0


def _seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: a count (``5``: seeds 0-4) or a list (``0,5,7``)."""
    from ml_backend.tools.study.loop import SimulationError

    try:
        return tuple(range(int(text))) if text.isdigit() else tuple(int(x) for x in text.split(","))
    except ValueError:
        raise SimulationError(f"--seeds must be a count (5) or a comma-separated list of integers (0,5,7), got {text!r}") from None


def _study_config(args: argparse.Namespace) -> SimConfig:
    """The study's :class:`SimConfig` from the command line: the defaults, the preset, then the flags given."""
    from ml_backend.tools.study.loop import SimConfig, preset

    chosen_preset = preset(args.preset) if args.preset else {}
    given = {k: getattr(args, k) for k in SIMULATE_DEFAULTS if getattr(args, k) is not None}
    chosen = {**SIMULATE_DEFAULTS, **{k: str(v) if k == "seeds" else v for k, v in chosen_preset.items()}, **given}
    seeds = _seeds(str(chosen["seeds"]))
    return SimConfig(
        data=str(args.data), format=args.format, out=str(args.out), weights=str(args.weights),
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()), initial=chosen["initial"], step=chosen["step"],
        rounds=chosen["rounds"], seeds=seeds, steps=chosen["steps"], epochs=chosen["epochs"], imgsz=chosen["imgsz"], batch=chosen["batch"],
        test_fraction=args.test_fraction, pool=args.pool, device=chosen["device"], server_loop=chosen["server_loop"],
        first_labels=args.first_labels, queue=chosen["queue"],
    )  # fmt: skip


def _simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset folder (or a YOLO yaml / COCO json); needed except with --report")
    p.add_argument("--format", choices=["voc", "yolo", "coco"], help="the dataset's format; needed except with --report")
    p.add_argument(
        "--weights", help="starting model (.pt): a COCO-pretrained one (yolo11n.pt), or one made by `pretrain`; needed except with --report"
    )
    p.add_argument(
        "--preset", choices=["cpu", "gpu", "server"],
        help="cpu: 5 seeds, 20 + 4 x 20 labels, 60 steps a round at 320 px, batch 8 (about an hour for 3 arms on 2 cores); "
        "gpu: 5 seeds, 20 + 8 x 20 labels, 300 steps at 640 px, batch 16, --device cuda; server: the server's own loop at its "
        "settings (defaults or environment): 3 seeds, RETRAIN_MIN_NEW_LABELS + 3 x RETRAIN_MIN_NEW_LABELS labels, TRAIN_STEPS, "
        "TRAIN_IMGSZ, TRAIN_BATCH, DEVICE, --queue label-studio, --server-loop (on 2 CPU cores about 25-40 min a training). "
        "Flags given override it",
    )  # fmt: skip
    p.add_argument(
        "--strategies", default="random,uncertainty,diversity,hybrid",
        help="comma-separated arms, random (the reference) among them; an arm is a strategy, or label=strategy:SETTING=value:... "
        "(an ablation, e.g. unc-sum=uncertainty:UNCERTAINTY_AGGREGATION=sum)",
    )  # fmt: skip
    p.add_argument(
        "--initial", type=int,
        help="labels of round 0 (random's: a seeded draw; the other arms': the top of the queue the server orders for a new project; default 20)",
    )  # fmt: skip
    p.add_argument(
        "--first-labels", choices=["server", "random"], default="server",
        help="round 0 of the model-based arms: the server's order for a new project (default), or random's draw for every arm (earlier studies)",
    )  # fmt: skip
    p.add_argument(
        "--queue", choices=["top", "label-studio"],
        help="top: the top --step tasks of one queue are labeled (AL_CLUSTERS=1, AL_BATCH=--step; earlier studies); label-studio: "
        "the server's AL_CLUSTERS and AL_BATCH, tasks taken in the order Label Studio serves them (the top task of the cluster "
        "labeled least), re-scored every RESCORE_MIN_NEW_LABELS labels",
    )  # fmt: skip
    p.add_argument("--step", type=int, help="labels added per round (default 20)")
    p.add_argument("--rounds", type=int, help="rounds after round 0 (default 4)")
    p.add_argument("--seeds", help="a number of seeds (5 -> 0..4, the default) or a comma-separated list; with --report: only these seeds")
    p.add_argument("--steps", type=int, help="training budget per round in optimizer steps (TRAIN_STEPS; default 100)")
    p.add_argument(
        "--epochs", type=int, help="a fixed number of epochs per round instead of --steps (TRAIN_EPOCHS; default 0: from --steps)"
    )
    p.add_argument("--imgsz", type=int, help="image size for training, scoring and evaluation (default 320)")
    p.add_argument("--batch", type=int, help="training batch (default 8)")
    p.add_argument(
        "--test-fraction", type=float, default=0.25, help="share of images in the fixed test split (at least 150 images, or a quarter)"
    )
    p.add_argument("--pool", type=int, default=0, help="at most this many images to select from (0: all but the test split)")
    p.add_argument("--device", help="cpu, cuda, cuda:0, auto (default auto)")
    p.add_argument(
        "--server-loop", action=argparse.BooleanOptionalAction,
        help="each round as the server runs it: labels held out (TRAIN_VAL_FRACTION), the new model judged against the served one "
        "(PROMOTION), the next round continuing from whichever is served; the test split measures the served model",
    )  # fmt: skip
    p.add_argument("--metric", default="map50", choices=["map50", "map50_95"], help="what the summary compares")
    p.add_argument(
        "--costs", default="", help="annotator seconds per action for the summary, name=seconds pairs (default: ANNOTATION_COSTS's table)"
    )
    p.add_argument("--out", required=True, help="results folder; an existing one with the same settings is resumed")
    p.add_argument("--report", action="store_true", help="only rewrite the summary and figures from the results so far")
    p.add_argument("--arms", default="", help="with --report: only these arms (comma-separated labels; the reference always joins)")
    p.add_argument(
        "--reference",
        default="random",
        help="with --report: the arm the others are compared with (default random), e.g. an ablation's baseline",
    )
    p.add_argument("--report-to", default=None, help="with --report: write the summary and figures to this folder instead of --out")


def budget_curve(args: argparse.Namespace) -> int:
    """Train each recipe at each label count, measure it on the test split, write the table and figure."""
    from ml_backend.tools.datasets import DatasetError
    from ml_backend.tools.study.budget import DEFAULT_RECIPES, Recipe, budget_markdown, run_budget_curve
    from ml_backend.tools.study.loop import SimulationError

    setup_logging("WARNING")
    try:
        recipes = [Recipe.parse(r) for r in (args.recipes or ",".join(DEFAULT_RECIPES)).split(",") if r.strip()]
        labels = [int(n) for n in args.labels.split(",")]
        sizes = [int(z) for z in args.serve_sizes.split(",") if z.strip()]
        if any(z < 32 for z in sizes):
            raise ValueError(f"--serve-sizes must be inference sizes of 32 px or more, got {args.serve_sizes}")
        result = run_budget_curve(
            args.data, args.format, args.weights, args.out, recipes, labels, _seeds(args.seeds), args.device, show_progress=True,
            serve_sizes=sizes,
        )  # fmt: skip
    except (SimulationError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(budget_markdown(result["rows"]))
    print(f"results: {args.out}/budget.json, table: {args.out}/budget.md, figure: {args.out}/budget.png")
    return 0


def _labeled_data_arguments(p: argparse.ArgumentParser, data_help: str = "a labeled dataset folder") -> None:
    """``--data``, ``--format`` and ``--weights``: a labeled dataset and where a project starts."""
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--format", required=True, choices=["voc", "yolo", "coco"])
    p.add_argument("--weights", required=True, help="the starting weights, e.g. COCO-pretrained yolo11n.pt")


def _budget_arguments(p: argparse.ArgumentParser) -> None:
    _labeled_data_arguments(p)
    p.add_argument("--out", required=True, help="results folder; an existing one is resumed")
    p.add_argument(
        "--recipes", help="comma-separated IMGSZxSTEPSxBATCH (default: 320x60x8 (the study's cpu preset), 640x60x8, 320x300x16, "
        "640x300x16 (the server's defaults))",
    )  # fmt: skip
    p.add_argument("--labels", default="40,100", help="comma-separated label counts (default 40,100)")
    p.add_argument("--seeds", default="1", help="a number of seeds (1 -> seed 0) or a comma-separated list")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--serve-sizes", default="",
        help="comma-separated inference sizes (IMGSZ) each trained model is also served at, e.g. 480,640 (default: only its training size)",
    )  # fmt: skip


def make_digits(args: argparse.Namespace) -> int:
    from ml_backend.tools.digit_scenes import make_digit_scenes

    print(f"wrote {make_digit_scenes(args.out, args.images, args.variant, seed=args.seed)}")
    return 0


def _digits_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=400)
    p.add_argument(
        "--variant",
        choices=["target", "source"],
        default="target",
        help="target: digits 0,1,4,7 (0 rare); source: 2,3,5,6,9 for pretraining",
    )
    p.add_argument("--seed", type=int, default=0)


def pretrain(args: argparse.Namespace) -> int:
    from ml_backend.tools.starter import pretrain_model

    setup_logging("INFO")
    path = pretrain_model(
        args.out, data=args.data, fmt=args.format, n_images=args.images, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
        model_yaml=args.model, device=args.device,
    )  # fmt: skip
    print(f"wrote {path}")
    return 0


def _pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="where to write the .pt")
    p.add_argument("--data", help="a dataset folder to pretrain on (default: synthetic shapes)")
    p.add_argument("--format", choices=["voc", "yolo", "coco"])
    p.add_argument("--images", type=int, default=2000, help="synthetic images (without --data)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--model", default="yolov8n.yaml", help="the Ultralytics model yaml")
    p.add_argument("--device", default="auto")


def bench(args: argparse.Namespace) -> int:
    from ml_backend.tools.bench import run_bench

    setup_logging("WARNING")
    run_bench(args.out, args.only, args.repeat, args.dir, args.device, rescoring_tasks=args.tasks, weights=args.weights)
    return 0


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--only",
        nargs="*",
        choices=["scoring", "predict", "rescoring", "kcenter", "push", "push-each", "training", "load"],
        help="run only these",
    )
    p.add_argument("--repeat", type=int, default=5, help="runs per figure (the median is reported); predict: 6x / 2x this many requests")
    p.add_argument("--out", default="bench.json")
    p.add_argument("--dir", default=".cache/bench", help="scratch folder (model, images, Label Studio)")
    p.add_argument("--device", default="cpu", help="DEVICE of every benchmark that runs a model: cpu, cuda, cuda:0, auto, ...")
    p.add_argument("--tasks", type=int, default=1000, help="tasks in the rescoring benchmark's pool")
    p.add_argument(
        "--weights",
        help="model of scoring, predict and rescoring (default: a shape detector trained once, 50 epochs at 96 px on synthetic images)",
    )


def first_model(args: argparse.Namespace) -> int:
    from ml_backend.tools.first_model import run_first_model

    setup_logging("WARNING")
    out = run_first_model(args.data, args.format, args.weights, args.dir, images=args.images, max_labels=args.max_labels)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


def _first_model_arguments(p: argparse.ArgumentParser) -> None:
    _labeled_data_arguments(p, "a labeled dataset folder (the annotators' answers)")
    p.add_argument("--images", type=int, default=200, help="images in the project (0: all)")
    p.add_argument("--max-labels", type=int, default=200, help="label at most this many tasks")
    p.add_argument("--dir", default=".cache/first-model", help="scratch folder (Label Studio, backend state)")
    p.add_argument("--out", default="first_model.json")


COMMANDS: tuple[Command, ...] = (
    Command("demo", "offline demo: synthetic images, a starter model, a real Label Studio, connected", _demo_arguments, demo),
    Command(
        "simulate",
        "label-savings study: the active-learning loop on a labeled dataset, ground truth as the annotator",
        _simulate_arguments,
        simulate,
    ),
    Command(
        "budget-curve",
        "the training budget as a curve: test mAP50 and speed-up of a first model against training seconds, per recipe and label count",
        _budget_arguments,
        budget_curve,
    ),
    Command(
        "make-digits",
        "write the multi-class study dataset: real handwritten digits in synthetic scenes (COCO)",
        _digits_arguments,
        make_digits,
    ),
    Command(
        "first-model",
        "a new project from COCO weights in a real Label Studio: labels and time until every class is pre-annotated",
        _first_model_arguments,
        first_model,
    ),
    Command(
        "pretrain",
        "train a starting model from the model yaml (offline): on synthetic shapes, or on a dataset",
        _pretrain_arguments,
        pretrain,
    ),
    Command(
        "bench",
        "benchmarks: scoring overhead, /predict latency, re-scoring, k-center, pushing predictions (not tests)",
        _bench_arguments,
        bench,
    ),
)
