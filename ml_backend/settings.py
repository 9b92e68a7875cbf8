"""Backend settings, read once from the environment into a frozen, typed object.

Every setting is an environment variable; the README's settings table lists them all.
Bad values raise :class:`SettingsError` naming the variable and what to put there.

Example:
    >>> s = Settings.from_env({"SCORE_THRESHOLD": "0.4", "MODEL_DIR": "/tmp/state"})
    >>> s.score_threshold
    0.4
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ml_backend.al.effort import DEFAULT_COSTS, CostTable
from ml_backend.al.strategies import STRATEGY_NAMES
from ml_backend.al.uncertainty import AGGREGATIONS, MEASURES
from ml_backend.state import StatePaths

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class SettingSpec:
    """One environment variable: its default and what it means (rendered in the README)."""

    name: str
    default: str
    help: str


# The single list of settings. ``Settings.from_env`` reads exactly these, and a test checks that
# the README's table names every one.
SPECS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "LABEL_STUDIO_URL",
        "",
        "Base URL of Label Studio as this backend reaches it, e.g. `http://label-studio:8080`. Needed to download uploaded and local-files images and to talk to the API.",
    ),
    SettingSpec(
        "LABEL_STUDIO_API_KEY",
        "",
        "Label Studio personal access token (a JWT refresh token, the 1.23 default) or legacy token. Sent only to `LABEL_STUDIO_URL`; never logged.",
    ),
    SettingSpec(
        "MODEL_PATH",
        "yolo11n.pt",
        "Weights to serve: a local `.pt`/`.onnx` file, or an Ultralytics name such as `yolo11n.pt` (downloads when online).",
    ),
    SettingSpec(
        "MODEL_DIR", "./ml_state", "Where this backend keeps its state: image cache, model versions, databases. Put it on a volume."
    ),
    SettingSpec(
        "SCORE_THRESHOLD",
        "",
        'Minimum confidence of a predicted object (or class, for classifiers) to be sent to Label Studio, 0..1, for every class. Empty: each retrained model shows each class from the confidence that saves annotators the most seconds on its held-out labels (docs/retraining.md, "What a pre-annotation shows"), and 0.25 where nothing was measured.',
    ),
    SettingSpec("DEVICE", "auto", "Inference and training device: `auto` (GPU when present), `cpu`, `cuda`, `cuda:0`, `mps`."),
    SettingSpec(
        "IMGSZ",
        "",
        "Inference image size in pixels (longest side). Empty: the size the served model was trained at (Ultralytics' own default; a retrained model is served at `TRAIN_IMGSZ`).",
    ),
    SettingSpec("PREDICT_BATCH", "16", "Images per batched forward pass in `/predict`."),
    SettingSpec(
        "BASIC_AUTH_USER",
        "",
        "With `BASIC_AUTH_PASS`: require HTTP basic auth on every route but `/health`. Enter the same pair in Label Studio's model connection.",
    ),
    SettingSpec("BASIC_AUTH_PASS", "", "Password for `BASIC_AUTH_USER`."),
    SettingSpec(
        "WEBHOOK_SECRET",
        "",
        "When set, `/webhook` takes only requests carrying it in the `X-Webhook-Secret` header (or, for Label Studio's train button, valid basic auth). `connect` adds the header to Label Studio's webhook.",
    ),
    SettingSpec(
        "ALLOWED_HOSTS",
        "",
        "Comma-separated host names or CIDR ranges this backend may download images from even though they resolve to private, loopback or link-local addresses (the Label Studio host is always allowed).",
    ),
    SettingSpec("IMAGE_TIMEOUT", "15", "Seconds to wait for one image download."),
    SettingSpec("MAX_IMAGE_BYTES", "52428800", "Largest image download accepted, in bytes (default 50 MiB)."),
    SettingSpec("MAX_IMAGE_PIXELS", "100000000", "Largest decoded image accepted, in pixels (decompression-bomb guard)."),
    SettingSpec("LOG_LEVEL", "INFO", "Python logging level: DEBUG, INFO, WARNING, ERROR."),
    SettingSpec(
        "AL_STRATEGY",
        "objects",
        "Queue order: `random`, `uncertainty`, `diversity`, `hybrid` (uncertainty-weighted k-center), `objects` (object-level, "
        "class-conditioned k-center over the most uncertain tasks), `typical` (cold start) or `adaptive` (`typical`, then `objects`). "
        "docs/queue.md describes them; the study chose the default.",
    ),
    SettingSpec(
        "UNCERTAINTY_MEASURE",
        "entropy",
        "Per-object uncertainty: `entropy`, `margin`, `least_confidence` or `existence` (how unsure the model is that the object is there); "
        "`tta`: per image, how much the model disagrees with itself on the mirror image (a second model pass).",
    ),
    SettingSpec(
        "UNCERTAINTY_AGGREGATION",
        "calibrated",
        "Per-image uncertainty from its objects: `max`, `mean`, `sum`, or `calibrated` (the sum of confidence x class difficulty x "
        "uncertainty, class difficulty measured on the labeled tasks).",
    ),
    SettingSpec(
        "CANDIDATE_THRESHOLD",
        "0.05",
        "Lowest confidence of a candidate object counted in uncertainty (below `SCORE_THRESHOLD` it is scored but not shown), 0..1.",
    ),
    SettingSpec("AL_UNCERTAINTY_WEIGHT", "1.0", "Strength of the uncertainty term in `hybrid` (exponent, >= 0)."),
    SettingSpec("AL_DIVERSITY_WEIGHT", "1.0", "Strength of the diversity term in `hybrid` (exponent, >= 0)."),
    SettingSpec("AL_CLASS_BALANCE_WEIGHT", "0.5", "Strength of the rare-class term (exponent, >= 0; 0 turns it off)."),
    SettingSpec(
        "AL_COST_WEIGHT",
        "1",
        "Cost awareness: priority per (expected annotator seconds)^w, the seconds estimated from the pre-annotation with `ANNOTATION_COSTS` "
        "(0 turns it off).",
    ),
    SettingSpec(
        "AL_COST_CAP",
        "1",
        "The top `AL_BATCH` tasks of a scoring round may cost annotators on average at most this multiple of the unlabeled pool's "
        "average expected seconds (what a random batch costs); the cost weight is raised above `AL_COST_WEIGHT` (up to 8) until they "
        "do. Empty turns the cap off.",
    ),
    SettingSpec("AL_PREFILTER", "4", "`objects` runs k-center over the AL_PREFILTER x AL_BATCH most uncertain tasks (>= 1)."),
    SettingSpec(
        "AL_COLD_START_LABELS", "40", "`adaptive` picks typical images (TypiClust) while fewer tasks than this are labeled, then `objects`."
    ),
    SettingSpec(
        "AL_COLD_START_STRATEGY",
        "random",
        "The queue order while the served model cannot predict some of the project's labels (a new project's classes before its "
        "first model of its own, a label added since): `random`, `typical` (the most typical image of each uncovered cluster of "
        "the pretrained features) or `diversity` (k-center). The study found neither coverage order better than random for the "
        "first model (docs/study.md).",
    ),
    SettingSpec("AL_BATCH", "100", "How many tasks k-center orders at the top of the queue per scoring round."),
    SettingSpec(
        "AL_CLUSTERS",
        "8",
        "k-means clusters: each prediction's `cluster` (Label Studio spreads annotators over clusters), also in `/scores`.",
    ),
    SettingSpec(
        "AL_CLUSTER_PUSH_MAX",
        "2000",
        "Label Studio's bulk prediction import drops `cluster`: up to this many predictions are written one request each to keep it (about 25 a second), more go in bulk without it (10,000 in under a minute). 0: always bulk.",
    ),
    SettingSpec(
        "ANNOTATION_COSTS",
        "",
        "Seconds an annotator spends per action on a pre-annotated task, as `name=seconds` pairs overriding the defaults "
        "(`image=2,verify=1.6,draw=7,delete=2,change_class=3,adjust=4`; sources in docs/study.md), e.g. `draw=35,adjust=6` for "
        "classic box drawing. The study counts effort with it.",
    ),
    SettingSpec("AL_SEED", "0", "Seed for every random choice in scoring (same seed, same queue)."),
    SettingSpec(
        "EMBEDDER",
        "",
        "Optional `module:function` that embeds images for diversity instead of the model's own features: it takes a list of RGB arrays (H, W, 3) and returns an (n, d) array.",
    ),
    SettingSpec(
        "RESCORE_MIN_NEW_LABELS",
        "20",
        "Re-score the whole project in the background after this many label events (webhooks), so diversity follows the labels.",
    ),
    SettingSpec(
        "RETRAIN_MIN_NEW_LABELS",
        "50",
        "Retrain in the background after this many new, changed or deleted labels in a project (counted from webhooks, duplicates once). 0 turns automatic retraining off; Label Studio's train button (`START_TRAINING`) still works. A project's own threshold (`connect --retrain-threshold N`) overrides it.",
    ),
    SettingSpec(
        "TRAIN_STEPS",
        "300",
        "Training budget of each fine-tuning run in optimizer steps: the run takes `ceil(TRAIN_STEPS / ceil(training images / TRAIN_BATCH))` epochs, so a small label set is not starved and a large one is not over-trained. The label-savings study uses the same rule (`simulate --steps`).",
    ),
    SettingSpec("TRAIN_EPOCHS", "0", "Fixed epochs per fine-tuning run instead of `TRAIN_STEPS` (0: from `TRAIN_STEPS`)."),
    SettingSpec(
        "TRAIN_TIME_BUDGET",
        "0",
        "Minutes a fine-tuning run may train (0: no limit). From the second epoch on the run measures its pace (leaving out the first, which carries the start-up; a first epoch that alone used the budget up ends the run) and, when the epochs it was given would not end in time, trains only as many as fit, its learning-rate schedule shortened to end with them (never more epochs than `TRAIN_STEPS` or `TRAIN_EPOCHS` give). A run may overrun by at most its second epoch.",
    ),
    SettingSpec(
        "TRAIN_WARMUP_EPOCHS",
        "0",
        "Warm-up epochs of a fine-tuning run (0: none, the study's choice; empty: Ultralytics' default, 3 epochs and at least 100 "
        "optimizer steps, which takes most of a small run's budget).",
    ),
    SettingSpec(
        "TRAIN_LR0",
        "",
        "Learning rate of a fine-tuning run: empty for Ultralytics' automatic choice (for runs under 10,000 steps: AdamW at "
        "0.002 x 5 / (4 + classes), about 0.0009 for 7 classes); a number: the same AdamW at that rate (decaying to 1% of it by the last epoch).",
    ),
    SettingSpec("TRAIN_FREEZE", "0", "Layers of the model kept frozen while fine-tuning (10: YOLO11's backbone; 0: none)."),
    SettingSpec("TRAIN_IMGSZ", "640", "Training and evaluation image size in pixels."),
    SettingSpec("TRAIN_BATCH", "16", "Training batch size (`-1`: Ultralytics picks one that fits the GPU)."),
    SettingSpec(
        "TRAIN_VAL_FRACTION",
        "0.2",
        "Share of labeled tasks held out to compare the old and new model (chosen by task id, so a task never changes sides), 0.05..0.5.",
    ),
    SettingSpec(
        "TRAIN_TIMEOUT",
        "21600",
        "Seconds a training run may take before it is stopped and reported as failed (the served model is untouched).",
    ),
    SettingSpec(
        "PSEUDO_LABELS",
        "off",
        "`on`: retraining also learns from the model's own confident boxes on unlabeled tasks (never written to Label Studio), "
        "per-class confidences calibrated on held-out labels to `PSEUDO_PRECISION`, unsure regions painted out. `off`: human labels only.",
    ),
    SettingSpec("PSEUDO_PRECISION", "0.9", "Precision a class's pseudo-labels must reach on held-out labels, 0.5..1."),
    SettingSpec("PSEUDO_MAX_SHARE", "1.0", "Pseudo-labeled images per human-labeled training image, at most (0..10)."),
    SettingSpec("PSEUDO_MIN_SUPPORT", "5", "Held-out boxes a class needs before it gets pseudo-labels."),
    SettingSpec("PSEUDO_CANDIDATES", "3", "Unlabeled images looked at per pseudo-labeled image kept (the cost of a run grows with it)."),
    SettingSpec(
        "REVIEW_ONLY",
        "off",
        "`on`: tasks whose every pre-annotated box clears the served model's calibrated confidence (right `PSEUDO_PRECISION` of the "
        "time on its held-out labels) are marked `auto-labelled, review only` in the `al_review` column and listed in a Data Manager tab.",
    ),
    SettingSpec(
        "PROMOTION",
        "if_better",
        "`if_better`: serve a retrained model only if the evidence says it is not worse than the current one on the same held-out labels "
        "(detection: a paired bootstrap of mAP50 over the held-out images; other tasks: mAP50-95, top-1 for classifiers). "
        "`always`: serve every successful run.",
    ),
    SettingSpec(
        "PROMOTION_MIN_HELDOUT",
        "30",
        "With fewer held-out images than this, `if_better` serves the retrained model (too few to judge; see docs/retraining.md); "
        "with more, a paired bootstrap judges it.",
    ),
    SettingSpec(
        "PROMOTION_MARGIN", "0.02", "How much lower a retrained model's held-out mAP50 may be and still be served (`if_better`), 0..1."
    ),
    SettingSpec("PROMOTION_CONFIDENCE", "0.9", "One-sided confidence of the promotion bootstrap's interval, 0.5..0.999."),
    SettingSpec(
        "REDIS_URL",
        "",
        "When set (e.g. `redis://redis:6379/0`), training runs as an RQ job on a worker (`python -m ml_backend worker`), which may be another machine. Empty: a local child process.",
    ),
    SettingSpec("TRAIN_QUEUE", "al-training", "Name of the RQ queue training jobs go to (with `REDIS_URL`)."),
)

_SPEC_BY_NAME = {s.name: s for s in SPECS}


def markdown_table() -> str:
    """The README's settings table (``python -c 'from ml_backend.settings import markdown_table; print(markdown_table())'``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {f'`{s.default}`' if s.default else '(empty)'} | {s.help} |" for s in SPECS]
    return "\n".join(rows)


def _parse(env: Mapping[str, str], name: str, convert: Callable[[str], T], what: str) -> T:
    raw = env.get(name, _SPEC_BY_NAME[name].default).strip()
    try:
        return convert(raw)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{name}={raw!r} is not valid: expected {what}. {exc}".strip()) from None


def _optional(convert: Callable[[str], T]) -> Callable[[str], T | None]:
    """``convert``, except that an empty value means unset (``None``)."""
    return lambda raw: convert(raw) if raw else None


def _bounded_float(lo: float, hi: float) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        value = float(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return convert


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _url(raw: str) -> str:
    if not raw:
        return ""
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return raw.rstrip("/")


def _allowed_hosts(raw: str) -> tuple[str, ...]:
    items = tuple(x.strip().lower() for x in raw.split(",") if x.strip())
    for item in items:
        if "/" in item:
            ipaddress.ip_network(item, strict=False)  # raises ValueError with a clear message
    return items


def _import_path(raw: str) -> str:
    if raw and (raw.count(":") != 1 or not all(raw.split(":"))):
        raise ValueError("write it as package.module:function")
    return raw


def _batch(raw: str) -> int:
    value = int(raw)
    if value <= 0 and value != -1:
        raise ValueError("must be greater than 0, or -1 for automatic")
    return value


def _redis_url(raw: str) -> str:
    if raw and not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def _queue_name(raw: str) -> str:
    if not raw or not all(c.isalnum() or c in "-_." for c in raw):
        raise ValueError("letters, digits, '-', '_' and '.' only")
    return raw


def _one_of(*choices: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return value

    return convert


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return level


@dataclass(frozen=True)
class Settings:
    """All backend settings. Build with :meth:`from_env`; never mutated afterwards."""

    label_studio_url: str = ""
    label_studio_api_key: str = field(default="", repr=False)
    model_path: str = "yolo11n.pt"
    model_dir: Path = Path("./ml_state")
    score_threshold: float | None = None
    device: str = "auto"
    imgsz: int | None = None
    predict_batch: int = 16
    basic_auth_user: str = ""
    basic_auth_pass: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    allowed_hosts: tuple[str, ...] = ()
    image_timeout: float = 15.0
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 100_000_000
    log_level: str = "INFO"
    al_strategy: str = "objects"
    uncertainty_measure: str = "entropy"
    uncertainty_aggregation: str = "calibrated"
    candidate_threshold: float = 0.05
    al_uncertainty_weight: float = 1.0
    al_diversity_weight: float = 1.0
    al_class_balance_weight: float = 0.5
    al_cost_weight: float = 1.0
    al_cost_cap: float | None = 1.0
    al_prefilter: float = 4.0
    al_cold_start_labels: int = 40
    al_cold_start_strategy: str = "random"
    al_batch: int = 100
    al_clusters: int = 8
    al_cluster_push_max: int = 2000
    annotation_costs: CostTable = DEFAULT_COSTS
    al_seed: int = 0
    rescore_min_new_labels: int = 20
    embedder: str = ""
    retrain_min_new_labels: int = 50
    train_steps: int = 300
    train_epochs: int = 0
    train_time_budget: float = 0.0
    train_warmup_epochs: float | None = 0.0
    train_lr0: float | None = None
    train_freeze: int = 0
    train_imgsz: int = 640
    train_batch: int = 16
    train_val_fraction: float = 0.2
    train_timeout: float = 21600.0
    promotion: str = "if_better"
    review_only: bool = False
    pseudo_labels: bool = False
    pseudo_precision: float = 0.9
    pseudo_max_share: float = 1.0
    pseudo_min_support: int = 5
    pseudo_candidates: float = 3.0
    promotion_min_heldout: int = 30
    promotion_margin: float = 0.02
    promotion_confidence: float = 0.9
    redis_url: str = field(default="", repr=False)
    train_queue: str = "al-training"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: ``os.environ``).

        Raises:
            SettingsError: a value is malformed; the message names the variable.
        """
        env = os.environ if env is None else env
        user = env.get("BASIC_AUTH_USER", "").strip()
        password = env.get("BASIC_AUTH_PASS", "")
        if bool(user) != bool(password):
            raise SettingsError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together (or both left empty).")
        model_path = env.get("MODEL_PATH", _SPEC_BY_NAME["MODEL_PATH"].default).strip()
        if not model_path:
            raise SettingsError("MODEL_PATH is empty: set it to a .pt/.onnx file or an Ultralytics name such as yolo11n.pt.")
        return cls(
            label_studio_url=_parse(env, "LABEL_STUDIO_URL", _url, "an http(s) URL"),
            label_studio_api_key=env.get("LABEL_STUDIO_API_KEY", "").strip(),
            model_path=model_path,
            model_dir=Path(_parse(env, "MODEL_DIR", str, "a folder path") or "./ml_state").expanduser().absolute(),
            score_threshold=_parse(env, "SCORE_THRESHOLD", _optional(_bounded_float(0.0, 1.0)), "empty or a number between 0 and 1"),
            device=_parse(env, "DEVICE", lambda r: r.lower() or "auto", "a device name"),
            imgsz=_parse(env, "IMGSZ", _optional(_positive_int), "a positive integer, or empty"),
            predict_batch=_parse(env, "PREDICT_BATCH", _positive_int, "a positive integer"),
            basic_auth_user=user,
            basic_auth_pass=password,
            webhook_secret=env.get("WEBHOOK_SECRET", "").strip(),
            allowed_hosts=_parse(env, "ALLOWED_HOSTS", _allowed_hosts, "comma-separated host names or CIDR ranges"),
            image_timeout=_parse(env, "IMAGE_TIMEOUT", _bounded_float(0.1, 600.0), "seconds between 0.1 and 600"),
            max_image_bytes=_parse(env, "MAX_IMAGE_BYTES", _positive_int, "a positive number of bytes"),
            max_image_pixels=_parse(env, "MAX_IMAGE_PIXELS", _positive_int, "a positive number of pixels"),
            log_level=_parse(env, "LOG_LEVEL", _log_level, "a logging level"),
            al_strategy=_parse(env, "AL_STRATEGY", _one_of(*STRATEGY_NAMES), "a strategy name"),
            uncertainty_measure=_parse(env, "UNCERTAINTY_MEASURE", _one_of(*MEASURES, "tta"), "a measure name"),
            uncertainty_aggregation=_parse(env, "UNCERTAINTY_AGGREGATION", _one_of(*AGGREGATIONS, "calibrated"), "an aggregation"),
            candidate_threshold=_parse(env, "CANDIDATE_THRESHOLD", _bounded_float(0.0, 1.0), "a number between 0 and 1"),
            al_uncertainty_weight=_parse(env, "AL_UNCERTAINTY_WEIGHT", _bounded_float(0.0, 100.0), "a number >= 0"),
            al_diversity_weight=_parse(env, "AL_DIVERSITY_WEIGHT", _bounded_float(0.0, 100.0), "a number >= 0"),
            al_class_balance_weight=_parse(env, "AL_CLASS_BALANCE_WEIGHT", _bounded_float(0.0, 100.0), "a number >= 0"),
            al_cost_weight=_parse(env, "AL_COST_WEIGHT", _bounded_float(0.0, 10.0), "a number between 0 and 10"),
            al_cost_cap=_parse(env, "AL_COST_CAP", _optional(_bounded_float(0.01, 100.0)), "empty or a number between 0.01 and 100"),
            al_prefilter=_parse(env, "AL_PREFILTER", _bounded_float(1.0, 100.0), "a number between 1 and 100"),
            al_cold_start_labels=_parse(env, "AL_COLD_START_LABELS", _non_negative_int, "an integer >= 0"),
            al_cold_start_strategy=_parse(env, "AL_COLD_START_STRATEGY", _one_of("random", "typical", "diversity"), "a strategy name"),
            al_batch=_parse(env, "AL_BATCH", _positive_int, "a positive integer"),
            al_clusters=_parse(env, "AL_CLUSTERS", _positive_int, "a positive integer"),
            al_cluster_push_max=_parse(env, "AL_CLUSTER_PUSH_MAX", _non_negative_int, "an integer >= 0"),
            annotation_costs=_parse(env, "ANNOTATION_COSTS", DEFAULT_COSTS.with_overrides, "name=seconds pairs, comma-separated"),
            al_seed=_parse(env, "AL_SEED", int, "an integer"),
            rescore_min_new_labels=_parse(env, "RESCORE_MIN_NEW_LABELS", _positive_int, "a positive integer"),
            embedder=_parse(env, "EMBEDDER", _import_path, "module:function"),
            retrain_min_new_labels=_parse(env, "RETRAIN_MIN_NEW_LABELS", _non_negative_int, "an integer >= 0 (0: off)"),
            train_steps=_parse(env, "TRAIN_STEPS", _positive_int, "a positive number of optimizer steps"),
            train_epochs=_parse(env, "TRAIN_EPOCHS", _non_negative_int, "an integer >= 0 (0: from TRAIN_STEPS)"),
            train_time_budget=_parse(env, "TRAIN_TIME_BUDGET", _bounded_float(0.0, 7 * 24 * 60.0), "minutes, 0 for no limit"),
            train_warmup_epochs=_parse(env, "TRAIN_WARMUP_EPOCHS", _optional(_bounded_float(0.0, 100.0)), "empty or a number of epochs"),
            train_lr0=_parse(env, "TRAIN_LR0", _optional(_bounded_float(1e-6, 1.0)), "empty or a learning rate in 1e-6..1"),
            train_freeze=_parse(env, "TRAIN_FREEZE", _non_negative_int, "an integer >= 0"),
            train_imgsz=_parse(env, "TRAIN_IMGSZ", _positive_int, "a positive integer"),
            train_batch=_parse(env, "TRAIN_BATCH", _batch, "a positive integer or -1"),
            train_val_fraction=_parse(env, "TRAIN_VAL_FRACTION", _bounded_float(0.05, 0.5), "a number between 0.05 and 0.5"),
            train_timeout=_parse(env, "TRAIN_TIMEOUT", _bounded_float(10.0, 7 * 86400.0), "seconds between 10 and 604800"),
            promotion=_parse(env, "PROMOTION", _one_of("if_better", "always"), "if_better or always"),
            review_only=_parse(env, "REVIEW_ONLY", _one_of("on", "off"), "on or off") == "on",
            pseudo_labels=_parse(env, "PSEUDO_LABELS", _one_of("on", "off"), "on or off") == "on",
            pseudo_precision=_parse(env, "PSEUDO_PRECISION", _bounded_float(0.5, 1.0), "a number between 0.5 and 1"),
            pseudo_max_share=_parse(env, "PSEUDO_MAX_SHARE", _bounded_float(0.0, 10.0), "a number between 0 and 10"),
            pseudo_min_support=_parse(env, "PSEUDO_MIN_SUPPORT", _positive_int, "a positive integer"),
            pseudo_candidates=_parse(env, "PSEUDO_CANDIDATES", _bounded_float(1.0, 100.0), "a number between 1 and 100"),
            promotion_min_heldout=_parse(env, "PROMOTION_MIN_HELDOUT", _non_negative_int, "an integer >= 0"),
            promotion_margin=_parse(env, "PROMOTION_MARGIN", _bounded_float(0.0, 1.0), "a number between 0 and 1"),
            promotion_confidence=_parse(env, "PROMOTION_CONFIDENCE", _bounded_float(0.5, 0.999), "a number between 0.5 and 0.999"),
            redis_url=_parse(env, "REDIS_URL", _redis_url, "a redis:// URL"),
            train_queue=_parse(env, "TRAIN_QUEUE", _queue_name, "a queue name"),
        )

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables (``Settings.from_env(s.to_env()) == s``), for a child process."""
        out = {}
        for spec in SPECS:
            value = getattr(self, spec.name.lower())
            if value is None:
                out[spec.name] = ""
            elif isinstance(value, bool):
                out[spec.name] = "on" if value else "off"
            elif isinstance(value, CostTable):
                out[spec.name] = value.to_text()
            else:
                out[spec.name] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out

    @property
    def paths(self) -> StatePaths:
        """Every path under ``MODEL_DIR``."""
        return StatePaths(self.model_dir)

    @property
    def ultralytics_device(self) -> str | None:
        """The device string Ultralytics takes; ``None`` lets it pick (GPU when present)."""
        return None if self.device == "auto" else self.device
