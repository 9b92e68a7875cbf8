"""Backend settings, read once from the environment into a frozen, typed object.

Every setting is an environment variable, declared once, as a field of :class:`Settings` made with
:func:`setting`: its default (as the environment would write it), how it is parsed, what it means
and whether it belongs to the machine (``local``) or to the training run. The parsing
(:meth:`Settings.from_env`), the typed defaults, :data:`SPECS`, the README's table, the docker
``.env.example`` and what travels with a training job to an RQ worker
(:meth:`Settings.run_env`) are all derived from those fields.
Bad values raise :class:`SettingsError` naming the variable and what to put there.

Example:
    >>> s = Settings.from_env({"SCORE_THRESHOLD": "0.4", "MODEL_DIR": "/tmp/state"})
    >>> s.score_threshold
    0.4
    >>> "DEVICE" in s.run_env(), "TRAIN_STEPS" in s.run_env()
    (False, True)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ml_backend.al.effort import DEFAULT_COSTS, CostTable
from ml_backend.al.strategies import STRATEGY_NAMES
from ml_backend.al.uncertainty import AGGREGATIONS, MEASURES
from ml_backend.state import StatePaths

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class SettingSpec:
    """One environment variable: its default, how it is read and what it means (rendered in the README).

    Attributes:
        name: the environment variable.
        default: its default, as the environment would write it.
        help: what it means (the README's settings table, docker/.env.example).
        parse: text -> typed value; raises ``ValueError``/``TypeError`` on bad input.
        expected: what a valid value looks like, for the error message.
        local: the machine's own (addresses, credentials, paths, device): an RQ worker keeps its
            own; every other setting travels with a training job (:meth:`Settings.run_env`).
        secret: never shown in ``repr`` or logs.
        strip: surrounding whitespace is dropped before parsing (not for passwords).
    """

    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = str
    expected: str = "text"
    local: bool = False
    secret: bool = False
    strip: bool = True

    @property
    def attr(self) -> str:
        """The :class:`Settings` attribute: the variable's name in lower case."""
        return self.name.lower()

    def read(self, env: Mapping[str, str]) -> Any:
        """The typed value of this variable in ``env`` (its default when absent).

        Raises:
            SettingsError: the value is malformed; the message names the variable and what to put there.
        """
        raw = env.get(self.name, self.default)
        raw = raw.strip() if self.strip else raw
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{self.name}={raw!r} is not valid: expected {self.expected}. {exc}".strip()) from None


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


def _host(raw: str) -> str:
    if not raw or any(c.isspace() or c in "/@" for c in raw):
        raise ValueError("an address such as 127.0.0.1 or 0.0.0.0")
    return raw


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _ca_bundle(raw: str) -> str:
    if raw and not Path(raw).expanduser().is_file():
        raise ValueError("no such file: give the path of a PEM file holding the certificate authorities")
    return str(Path(raw).expanduser()) if raw else ""


def _model_path(raw: str) -> str:
    if not raw:
        raise ValueError("it is empty: set it to a .pt/.onnx file or an Ultralytics name such as yolo11n.pt")
    return raw


def _folder(raw: str) -> Path:
    """A folder, made absolute when read: a later ``chdir`` changes nothing."""
    return Path(raw or "./ml_state").expanduser().absolute()


def _on_off(raw: str) -> bool:
    return _one_of("on", "off")(raw) == "on"


def _device(raw: str) -> str:
    return raw.lower() or "auto"


def setting(default: str, parse: Callable[[str], Any], expected: str, help: str, **flags: bool) -> Any:
    """A field of :class:`Settings`: the one declaration of an environment variable.

    The field's name in upper case is the variable; its typed default is ``parse(default)``.

    Args:
        default: the default as the environment would write it.
        parse: text -> typed value.
        expected: what a valid value looks like (for the error message).
        help: what it means.
        **flags: ``local``, ``secret``, ``strip`` (see :class:`SettingSpec`).
    """
    spec = SettingSpec("", default, help, parse, expected, **flags)
    value = parse(default.strip() if spec.strip else default)
    return dataclasses.field(default=value, repr=not spec.secret, metadata={"spec": spec})


@dataclass(frozen=True)
class Settings:
    """All backend settings. Build with :meth:`from_env`; never mutated afterwards."""

    label_studio_url: str = setting(
        "",
        _url,
        "an http(s) URL",
        "Base URL of Label Studio as this backend reaches it, e.g. `http://label-studio:8080`. Needed to download uploaded and local-files images and to talk to the API.",
        local=True,
    )
    label_studio_api_key: str = setting(
        "",
        str,
        "a token",
        "Label Studio personal access token (a JWT refresh token, the 1.23 default) or legacy token. Sent only to `LABEL_STUDIO_URL`; never logged.",
        local=True,
        secret=True,
    )
    label_studio_ca_bundle: str = setting(
        "",
        _ca_bundle,
        "empty or the path of a PEM file",
        "A PEM file of the certificate authorities that sign `LABEL_STUDIO_URL`'s certificate (a private CA or a self-signed "
        "Label Studio), for its API and its images. Empty: the system's (or `REQUESTS_CA_BUNDLE`'s). API calls also honour "
        "`HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`; image downloads never go through a proxy (docs/connecting.md).",
        local=True,
    )
    model_path: str = setting(
        "yolo11n.pt",
        _model_path,
        "a .pt/.onnx file or an Ultralytics name such as yolo11n.pt",
        "Weights to serve: a local `.pt`/`.onnx` file, or an Ultralytics name such as `yolo11n.pt` (downloads when online).",
        local=True,
    )
    model_root: Path | None = setting(
        "",
        lambda raw: Path(raw).expanduser().absolute() if raw else None,
        "a folder path, or empty",
        'The folder a labeling config\'s `model_path="..."` attributes name weights in (a control filled by a model of its own, docs/official-yolo-backend.md); a path outside it is refused. Empty: the folder of `MODEL_PATH`.',
        local=True,
    )
    model_dir: Path = setting(
        "./ml_state",
        _folder,
        "a folder path",
        "Where this backend keeps its state: image cache, model versions, databases. Put it on a volume.",
        local=True,
    )
    score_threshold: float | None = setting(
        "",
        _optional(_bounded_float(0.0, 1.0)),
        "empty or a number between 0 and 1",
        'Minimum confidence of a predicted object (or class, for classifiers) to be sent to Label Studio, 0..1, for every class. Empty: each retrained model shows each class from the confidence that saves annotators the most seconds on its held-out labels (docs/retraining.md, "What a pre-annotation shows"), and 0.25 where nothing was measured.',
    )
    device: str = setting(
        "auto",
        _device,
        "a device name",
        "Inference and training device: `auto` (GPU when present), `cpu`, `cuda`, `cuda:0`, `mps`.",
        local=True,
    )
    imgsz: int | None = setting(
        "",
        _optional(_positive_int),
        "a positive integer, or empty",
        "Inference image size in pixels (longest side). Empty: the size the served model was trained at (Ultralytics' own default; a retrained model is served at `TRAIN_IMGSZ`).",
    )
    predict_batch: int = setting(
        "16",
        _positive_int,
        "a positive integer",
        "Images per batched forward pass in `/predict`.",
        local=True,
    )
    basic_auth_user: str = setting(
        "",
        str,
        "a user name",
        "With `BASIC_AUTH_PASS`: require HTTP basic auth on every route but `/health`. Enter the same pair in Label Studio's model connection.",
        local=True,
    )
    basic_auth_pass: str = setting(
        "",
        str,
        "a password",
        "Password for `BASIC_AUTH_USER`.",
        local=True,
        secret=True,
        strip=False,
    )
    webhook_secret: str = setting(
        "",
        str,
        "a shared secret",
        "When set, `/webhook` takes only requests carrying it in the `X-Webhook-Secret` header (or, for Label Studio's train button, valid basic auth). `connect` adds the header to Label Studio's webhook.",
        local=True,
        secret=True,
    )
    host: str = setting(
        "127.0.0.1",
        _host,
        "an IP address or host name",
        "Address `serve` listens on. Beyond loopback (e.g. `0.0.0.0`, as in the docker image) it needs `BASIC_AUTH_USER`/`BASIC_AUTH_PASS` "
        "(or `ALLOW_UNAUTHENTICATED=on`): anyone who reaches the port could otherwise start training and change a project's settings.",
        local=True,
    )
    port: int = setting("9090", _port, "a TCP port, 1..65535", "Port `serve` listens on.", local=True)
    allow_unauthenticated: bool = setting(
        "off",
        _on_off,
        "on or off",
        "`on`: serve beyond loopback without basic auth, on a network where only Label Studio can reach this backend (the docker "
        "compose network, its ports published on 127.0.0.1). A warning says so at every start; `/setup` then never changes where "
        "images are fetched from.",
        local=True,
    )
    allowed_hosts: tuple[str, ...] = setting(
        "",
        _allowed_hosts,
        "comma-separated host names or CIDR ranges",
        "Comma-separated host names or CIDR ranges this backend may download images from even though they resolve to private, loopback or link-local addresses (the Label Studio host is always allowed).",
        local=True,
    )
    image_timeout: float = setting(
        "15",
        _bounded_float(0.1, 600.0),
        "seconds between 0.1 and 600",
        "Seconds to wait for one image download.",
        local=True,
    )
    video_max_frames: int = setting(
        "1800",
        _positive_int,
        "a positive integer",
        "Video tasks (`<VideoRectangle>`, `<TimelineLabels>`): predictions cover at most this many frames from the start (1800: a minute at 30 fps). A video is downloaded whole, up to `MAX_IMAGE_BYTES`.",
    )
    max_image_bytes: int = setting(
        "52428800",
        _positive_int,
        "a positive number of bytes",
        "Largest image download accepted, in bytes (default 50 MiB).",
        local=True,
    )
    max_image_pixels: int = setting(
        "100000000",
        _positive_int,
        "a positive number of pixels",
        "Largest decoded image accepted, in pixels (decompression-bomb guard).",
        local=True,
    )
    image_cache_max_mb: int = setting(
        "10240",
        _non_negative_int,
        "an integer >= 0 (0: no limit)",
        "Most MiB the image cache (`MODEL_DIR/cache/images`) may hold (default 10 GiB); past it the least recently used images "
        "are deleted, down to 90% of it (they are downloaded again when needed). Scoring and training read every image of a "
        "project, so a cache smaller than your projects' images downloads them again each round. 0: no limit (docs/images.md).",
        local=True,
    )
    output_cache_mb: int = setting(
        "256",
        _non_negative_int,
        "an integer >= 0 (0: nothing kept)",
        "Most MiB of memory the model's per-task outputs may take between scorings (least recently used dropped first), so a "
        "re-score after label changes alone reruns only the queue order, not the model (docs/queue.md). 0: every re-score runs the model.",
        local=True,
    )
    versions_keep: int | None = setting(
        "3",
        _optional(_non_negative_int),
        "an integer >= 0, or empty to keep all",
        "How many trained model versions that were never served (promotion kept them back) keep their weights, per project: "
        "the newest ones. After each training run the weights of older ones are deleted; their record and metrics stay in "
        "`/versions`. Versions ever served, among them the served one and the one before it, always keep theirs. Empty: keep "
        "every version's weights (docs/retraining.md).",
        local=True,
    )
    log_level: str = setting(
        "INFO",
        _log_level,
        "a logging level",
        "Python logging level: DEBUG, INFO, WARNING, ERROR.",
        local=True,
    )
    al_strategy: str = setting(
        "objects",
        _one_of(*STRATEGY_NAMES),
        "a strategy name",
        "Queue order: `random`, `uncertainty`, `diversity`, `hybrid` (uncertainty-weighted k-center), `objects` (object-level, class-conditioned k-center over the most uncertain tasks), `typical` (cold start) or `adaptive` (`typical`, then `objects`). docs/queue.md describes them; the study chose the default.",
    )
    uncertainty_measure: str = setting(
        "entropy",
        _one_of(*MEASURES, "tta"),
        "a measure name",
        "Per-object uncertainty: `entropy`, `margin`, `least_confidence` or `existence` (how unsure the model is that the object is there); `tta`: per image, how much the model disagrees with itself on the mirror image (a second model pass).",
    )
    uncertainty_aggregation: str = setting(
        "calibrated",
        _one_of(*AGGREGATIONS, "calibrated"),
        "an aggregation",
        "Per-image uncertainty from its objects: `max`, `mean`, `sum`, or `calibrated` (the sum of confidence x class difficulty x uncertainty, class difficulty measured on the labeled tasks).",
    )
    candidate_threshold: float = setting(
        "0.05",
        _bounded_float(0.0, 1.0),
        "a number between 0 and 1",
        "Lowest confidence of a candidate object counted in uncertainty (below `SCORE_THRESHOLD` it is scored but not shown), 0..1.",
    )
    al_uncertainty_weight: float = setting(
        "1.0",
        _bounded_float(0.0, 100.0),
        "a number >= 0",
        "Strength of the uncertainty term in `hybrid` (exponent, >= 0).",
    )
    al_diversity_weight: float = setting(
        "1.0",
        _bounded_float(0.0, 100.0),
        "a number >= 0",
        "Strength of the diversity term in `hybrid` (exponent, >= 0).",
    )
    al_class_balance_weight: float = setting(
        "0.5",
        _bounded_float(0.0, 100.0),
        "a number >= 0",
        "Strength of the rare-class term (exponent, >= 0; 0 turns it off).",
    )
    al_cost_weight: float = setting(
        "1",
        _bounded_float(0.0, 10.0),
        "a number between 0 and 10",
        "Cost awareness: priority per (expected annotator seconds)^w, the seconds estimated from the pre-annotation with `ANNOTATION_COSTS` (0 turns it off).",
    )
    al_cost_cap: float | None = setting(
        "1",
        _optional(_bounded_float(0.01, 100.0)),
        "empty or a number between 0.01 and 100",
        "The top `AL_BATCH` tasks of a scoring round may cost annotators on average at most this multiple of the unlabeled pool's average expected seconds (what a random batch costs); the cost weight is raised above `AL_COST_WEIGHT` (up to 8) until they do. Empty turns the cap off.",
    )
    al_prefilter: float = setting(
        "4",
        _bounded_float(1.0, 100.0),
        "a number between 1 and 100",
        "`objects` runs k-center over the AL_PREFILTER x AL_BATCH most uncertain tasks (>= 1).",
    )
    al_cold_start_labels: int = setting(
        "40",
        _non_negative_int,
        "an integer >= 0",
        "`adaptive` picks typical images (TypiClust) while fewer tasks than this are labeled, then `objects`.",
    )
    al_cold_start_strategy: str = setting(
        "random",
        _one_of("random", "typical", "diversity"),
        "a strategy name",
        "The queue order while the served model cannot predict some of the project's labels (a new project's classes before its first model of its own, a label added since): `random`, `typical` (the most typical image of each uncovered cluster of the pretrained features) or `diversity` (k-center). The study found neither coverage order better than random for the first model (docs/study.md).",
    )
    al_batch: int = setting(
        "100",
        _positive_int,
        "a positive integer",
        "How many tasks k-center orders at the top of the queue per scoring round.",
    )
    al_clusters: int = setting(
        "8",
        _positive_int,
        "a positive integer",
        "k-means clusters: each prediction's `cluster` (Label Studio spreads annotators over clusters), also in `/scores`.",
    )
    al_cluster_push_max: int = setting(
        "2000",
        _non_negative_int,
        "an integer >= 0",
        "Label Studio's bulk prediction import drops `cluster`: up to this many predictions are written one request each to keep it (about 25 a second), more go in bulk without it (10,000 in under a minute). 0: always bulk.",
    )
    annotation_costs: CostTable = setting(
        "",
        DEFAULT_COSTS.with_overrides,
        "name=seconds pairs, comma-separated",
        "Seconds an annotator spends per action on a pre-annotated task, as `name=seconds` pairs overriding the defaults (`image=2,verify=1.6,draw=7,delete=2,change_class=3,adjust=4`; sources in docs/study.md), e.g. `draw=35,adjust=6` for classic box drawing. The study counts effort with it.",
    )
    al_seed: int = setting(
        "0",
        int,
        "an integer",
        "Seed for every random choice in scoring (same seed, same queue).",
    )
    embedder: str = setting(
        "",
        _import_path,
        "module:function",
        "Optional `module:function` that embeds images for diversity instead of the model's own features: it takes a list of RGB arrays (H, W, 3) and returns an (n, d) array.",
        local=True,
    )
    rescore_min_new_labels: int = setting(
        "20",
        _positive_int,
        "a positive integer",
        "Re-score the whole project in the background after this many label events (webhooks), so diversity follows the labels.",
    )
    retrain_min_new_labels: int = setting(
        "50",
        _non_negative_int,
        "an integer >= 0 (0: off)",
        "Retrain in the background after this many new, changed or deleted labels in a project (counted from webhooks, duplicates once). 0 turns automatic retraining off; Label Studio's train button (`START_TRAINING`) still works. A project's own threshold (`connect --retrain-threshold N`) overrides it.",
    )
    train_steps: int = setting(
        "300",
        _positive_int,
        "a positive number of optimizer steps",
        "Training budget of each fine-tuning run in optimizer steps: the run takes `ceil(TRAIN_STEPS / ceil(training images / TRAIN_BATCH))` epochs, so a small label set is not starved and a large one is not over-trained. The label-savings study uses the same rule (`simulate --steps`).",
    )
    train_epochs: int = setting(
        "0",
        _non_negative_int,
        "an integer >= 0 (0: from TRAIN_STEPS)",
        "Fixed epochs per fine-tuning run instead of `TRAIN_STEPS` (0: from `TRAIN_STEPS`).",
    )
    train_time_budget: float = setting(
        "0",
        _bounded_float(0.0, 7 * 24 * 60.0),
        "minutes, 0 for no limit",
        "Minutes a fine-tuning run may train (0: no limit). From the second epoch on the run measures its pace (leaving out the first, which carries the start-up; a first epoch that alone used the budget up ends the run) and, when the epochs it was given would not end in time, trains only as many as fit, its learning-rate schedule shortened to end with them (never more epochs than `TRAIN_STEPS` or `TRAIN_EPOCHS` give). A run may overrun by at most its second epoch.",
    )
    train_warmup_epochs: float | None = setting(
        "0",
        _optional(_bounded_float(0.0, 100.0)),
        "empty or a number of epochs",
        "Warm-up epochs of a fine-tuning run (0: none, the study's choice; empty: Ultralytics' default, 3 epochs and at least 100 optimizer steps, which takes most of a small run's budget).",
    )
    train_lr0: float | None = setting(
        "",
        _optional(_bounded_float(1e-6, 1.0)),
        "empty or a learning rate in 1e-6..1",
        "Learning rate of a fine-tuning run: empty for Ultralytics' automatic choice (for runs under 10,000 steps: AdamW at 0.002 x 5 / (4 + classes), about 0.0009 for 7 classes); a number: the same AdamW at that rate (decaying to 1% of it by the last epoch).",
    )
    train_freeze: int = setting(
        "0",
        _non_negative_int,
        "an integer >= 0",
        "Layers of the model kept frozen while fine-tuning (10: YOLO11's backbone; 0: none).",
    )
    train_imgsz: int = setting(
        "640",
        _positive_int,
        "a positive integer",
        "Training and evaluation image size in pixels.",
    )
    train_batch: int = setting(
        "16",
        _batch,
        "a positive integer or -1",
        "Training batch size (`-1`: Ultralytics picks one that fits the GPU).",
    )
    train_val_fraction: float = setting(
        "0.2",
        _bounded_float(0.05, 0.5),
        "a number between 0.05 and 0.5",
        "Share of labeled tasks held out to compare the old and new model (chosen by task id, so a task never changes sides), 0.05..0.5.",
    )
    train_timeout: float = setting(
        "21600",
        _bounded_float(10.0, 7 * 86400.0),
        "seconds between 10 and 604800",
        "Seconds a training run may take before it is stopped and reported as failed (the served model is untouched).",
    )
    pseudo_labels: bool = setting(
        "off",
        _on_off,
        "on or off",
        "`on`: retraining also learns from the model's own confident boxes on unlabeled tasks (never written to Label Studio), per-class confidences calibrated on held-out labels to `PSEUDO_PRECISION`, unsure regions painted out. `off`: human labels only.",
    )
    pseudo_precision: float = setting(
        "0.9",
        _bounded_float(0.5, 1.0),
        "a number between 0.5 and 1",
        "Precision a class's pseudo-labels must reach on held-out labels, 0.5..1.",
    )
    pseudo_max_share: float = setting(
        "1.0",
        _bounded_float(0.0, 10.0),
        "a number between 0 and 10",
        "Pseudo-labeled images per human-labeled training image, at most (0..10).",
    )
    pseudo_min_support: int = setting(
        "5",
        _positive_int,
        "a positive integer",
        "Held-out boxes a class needs before it gets pseudo-labels.",
    )
    pseudo_candidates: float = setting(
        "3",
        _bounded_float(1.0, 100.0),
        "a number between 1 and 100",
        "Unlabeled images looked at per pseudo-labeled image kept (the cost of a run grows with it).",
    )
    review_only: bool = setting(
        "off",
        _on_off,
        "on or off",
        "`on`: tasks whose every pre-annotated box clears the served model's calibrated confidence (right `PSEUDO_PRECISION` of the time on its held-out labels) are marked `auto-labelled, review only` in the `al_review` column and listed in a Data Manager tab.",
    )
    promotion: str = setting(
        "if_better",
        _one_of("if_better", "always"),
        "if_better or always",
        "`if_better`: serve a retrained model only if the evidence says it is not worse than the current one on the same held-out labels (detection: a paired bootstrap of mAP50 over the held-out images; other tasks: mAP50-95, top-1 for classifiers). `always`: serve every successful run.",
    )
    promotion_min_heldout: int = setting(
        "30",
        _non_negative_int,
        "an integer >= 0",
        "With fewer held-out images than this (too few to judge alone), `if_better` serves the retrained model unless it is more than "
        "`PROMOTION_MARGIN` worse on every labeled image, or no better on the held-out ones and slower to correct there; with at least "
        "this many, a paired bootstrap of their mAP50 judges it (docs/retraining.md).",
    )
    promotion_margin: float = setting(
        "0.02",
        _bounded_float(0.0, 1.0),
        "a number between 0 and 1",
        "How much lower a retrained model's held-out mAP50 may be and still be served (`if_better`), 0..1.",
    )
    promotion_confidence: float = setting(
        "0.9",
        _bounded_float(0.5, 0.999),
        "a number between 0.5 and 0.999",
        "One-sided confidence of the promotion bootstrap's interval, 0.5..0.999.",
    )
    redis_url: str = setting(
        "",
        _redis_url,
        "a redis:// URL",
        "When set (e.g. `redis://redis:6379/0`), training runs as an RQ job on a worker (`python -m ml_backend worker`), which may be another machine. Empty: a local child process.",
        local=True,
        secret=True,
    )
    train_queue: str = setting(
        "al-training",
        _queue_name,
        "a queue name",
        "Name of the RQ queue training jobs go to (with `REDIS_URL`).",
        local=True,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: ``os.environ``).

        Raises:
            SettingsError: a value is malformed; the message names the variable.
        """
        env = os.environ if env is None else env
        values = {spec.attr: spec.read(env) for spec in SPECS}
        if bool(values["basic_auth_user"]) != bool(values["basic_auth_pass"]):
            raise SettingsError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together (or both left empty).")
        return cls(**values)

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

    def run_env(self) -> dict[str, str]:
        """The settings that travel with a training job to an RQ worker: all but the machine's own (``local``).

        A worker reads ``Settings.from_env({**its_environment, **run_env})``, so it trains exactly as
        this server would, with its own device, paths, addresses and credentials.
        """
        env = self.to_env()
        return {spec.name: env[spec.name] for spec in SPECS if not spec.local}

    @property
    def paths(self) -> StatePaths:
        """Every path under ``MODEL_DIR``."""
        return StatePaths(self.model_dir)

    @property
    def control_models_root(self) -> Path:
        """Where ``model_path`` attributes point into: ``MODEL_ROOT``, else the folder of ``MODEL_PATH``."""
        return self.model_root or Path(self.model_path).expanduser().absolute().parent

    @property
    def ultralytics_device(self) -> str | None:
        """The device string Ultralytics takes; ``None`` lets it pick (GPU when present)."""
        return None if self.device == "auto" else self.device


def _specs() -> tuple[SettingSpec, ...]:
    return tuple(dataclasses.replace(f.metadata["spec"], name=f.name.upper()) for f in dataclasses.fields(Settings))


# Every setting, in declaration order: the README's table, docker/.env.example and the worker hand-over come from it.
SPECS: tuple[SettingSpec, ...] = _specs()
_SPEC_BY_NAME = {s.name: s for s in SPECS}


def markdown_table() -> str:
    """The README's settings table (``python -c 'from ml_backend.settings import markdown_table; print(markdown_table())'``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {f'`{s.default}`' if s.default else '(empty)'} | {s.help} |" for s in SPECS]
    return "\n".join(rows)
