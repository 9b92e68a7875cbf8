"""Predictions for a batch of Label Studio tasks: images in, Label Studio regions out.

One bad task never sinks the batch: each task whose image cannot be fetched or decoded gets
its own error entry (``{"task": id, "error": "..."}``, no ``result``: Label Studio skips it and
asks again next time) while the others are predicted in one batched forward pass.

Example:
    >>> from ml_backend.inference.predictor import task_image_uri
    >>> task_image_uri({"id": 1, "data": {"image": "/data/upload/1/a.jpg"}}, "image")
    '/data/upload/1/a.jpg'
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from integrations.label_studio import LabelStudioAuth, LabelStudioClient, api_session
from ml_backend.al.uncertainty import tta_disagreement
from ml_backend.inference.display import Display, default_display
from ml_backend.inference.images import ImageError, ImageFetcher, UrlPolicy
from ml_backend.inference.label_config import (
    Coverage,
    LabelConfigError,
    Plan,
    Target,
    build_label_map,
    coverage,
    keypoint_map,
    plan_targets,
    proposal_label,
)
from ml_backend.inference.ls_results import to_ls_results
from ml_backend.inference.model import (
    ImagePrediction,
    LoadedModel,
    ModelHolder,
    ModelMeta,
    ModelNotReadyError,
    ModelUnavailableError,
    read_checkpoint_meta,
)
from ml_backend.inference.output_cache import OutputCache
from ml_backend.inference.served_models import ServedModels, control_weights
from ml_backend.inference.video import frame_labels, run_classifier, run_tracker, timeline_regions, track_regions, video_file
from ml_backend.settings import Settings

log = logging.getLogger(__name__)


class ImageSource(Protocol):
    """Where the predictor gets a task's image: the server's :class:`ImageFetcher`, or local files in the study."""

    def load(self, uri: str, task_id: Any = None) -> np.ndarray: ...


class BadRequest(ValueError):
    """The request itself is wrong (HTTP 400); the message says how."""


def task_image_uri(task: Mapping[str, Any], value_key: str) -> str:
    """The image URL of ``task`` under ``data[value_key]``.

    Raises:
        ImageError: the task has no such field.
    """
    data = task.get("data") if isinstance(task, Mapping) else None
    if not isinstance(data, Mapping):
        raise ImageError("the task has no 'data' object")
    uri = data.get(value_key)
    if not isinstance(uri, str) or not uri.strip():
        keys = ", ".join(sorted(map(str, data))) or "none"
        raise ImageError(f"the task has no image under data.{value_key} (its data keys: {keys})")
    return uri


@lru_cache(maxsize=64)
def _plan_for(label_config: str, model_task: str) -> Plan:
    return plan_targets(label_config, model_task)


def _object_labels(model: LoadedModel | ModelMeta, target: Target) -> dict[int, str]:
    """Class id -> label of the objects a model shows in ``target`` (keypoints: their parent box's labels,
    or every class when there is no parent box)."""
    if target.kind == "keypoints":
        return build_label_map(model.names, target.parent) if target.parent is not None else dict(model.names)
    return build_label_map(model.names, target)


def _keypoint_labels(model: LoadedModel | ModelMeta, target: Target) -> dict[int, str]:
    if target.kind != "keypoints":
        return {}
    return keypoint_map(getattr(model, "kpt_names", {}), getattr(model, "n_keypoints", 0), target)


@dataclass(frozen=True)
class Fill:
    """A further control of the project's labeling config, filled in the same prediction: by the
    project's model (another control of the primary's tag) or by the model its ``model_path`` names."""

    model: LoadedModel
    target: Target
    label_map: dict[int, str]
    display: Display
    keypoint_labels: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Served:
    """A model paired with the config target and label map it serves a project with."""

    model: LoadedModel
    target: Target
    label_map: dict[int, str]
    proposals: bool = False  # every class maps to the project's one label, boxes suppressed across classes
    display: Display = field(default_factory=Display)  # what is shown of the model's objects
    project: int | None = None  # the Label Studio project it serves (its images may come from its own Label Studio)
    keypoint_labels: dict[int, str] = field(default_factory=dict)  # pose: keypoint index -> label of target
    extras: tuple[Fill, ...] = ()  # the config's other controls, filled in the same prediction

    @property
    def coverage(self) -> Coverage:
        """Which of the project's labels the model predicts (the others wait for the project's own model)."""
        if self.proposals:
            return Coverage(self.target.labels, ())
        known = set(self.keypoint_labels.values()) if self.target.kind == "keypoints" else set(self.label_map.values())
        return Coverage(self.target.labels, tuple(label for label in self.target.labels if label in known))

    def regions(self, pred: ImagePrediction, others: Sequence[ImagePrediction] = ()) -> list[dict]:
        """Label Studio regions of a task: ``pred`` in the primary control, ``others`` (one per :attr:`image_extras`) in theirs."""
        out = to_ls_results(pred, self.target, self.label_map, self.display, keypoint_labels=self.keypoint_labels)[0]
        for fill, other in zip(self.image_extras, others, strict=True):
            out += to_ls_results(other, fill.target, fill.label_map, fill.display, keypoint_labels=fill.keypoint_labels)[0]
        return out

    @property
    def image_extras(self) -> tuple[Fill, ...]:
        """The other controls on images (scored with the task; video controls are predicted only)."""
        return tuple(f for f in self.extras if not f.target.video)

    def fill_served(self, fill: Fill) -> Served:
        """``fill`` as a :class:`Served` of its own (its model, control, labels; this project)."""
        return Served(
            fill.model, fill.target, fill.label_map, display=fill.display, project=self.project, keypoint_labels=fill.keypoint_labels
        )


@dataclass(frozen=True)
class Check:
    """What ``/setup`` says of a project: the model serving it, its labels the model predicts, and
    whether that model is the project's own (trained on its labels) or the base model."""

    version: str
    coverage: Coverage
    own_model: bool
    proposals: bool = False
    warnings: tuple[str, ...] = ()  # model_* attributes of the config not applied (label_config.Target.warnings)

    keypoints: bool = False  # the project's model fills a <KeyPointLabels>: its labels are the model's keypoints

    def plan(self, threshold: int, order: str) -> str:
        """:meth:`Coverage.plan` for this project, whose queue is in ``order`` until its model knows every label.

        Keypoints are the model's own: a label that names none of them is never predicted nor learned.

        Example:
            >>> Check("v1", Coverage(("nose", "tail"), ("nose",)), False, keypoints=True).plan(50, "random")
            'keypoints tail match none of the keypoints of the model: not predicted nor learned (name them with model_index="N" or as the model names them); nose predicted'
        """
        if self.keypoints and not self.coverage.complete:
            known = f"; {', '.join(self.coverage.known)} predicted" if self.coverage.known else ""
            return (
                f"keypoints {', '.join(self.coverage.missing)} match none of the keypoints of the model: not predicted nor learned "
                f'(name them with model_index="N" or as the model names them){known}'
            )
        return self.coverage.plan(threshold, self.own_model, self.proposals, order)


class Predictor:
    """Glue between tasks, images and the model. Holds no per-request state.

    Args:
        settings: backend settings.
        holder: the base model (``MODEL_PATH``).
        fetcher: where images come from (an :class:`ImageFetcher`, or anything with its ``load``).
        models: per-project models (default: the base model for every project).
        output_cache_bytes: memory for the model outputs kept between scorings (:meth:`run` with ``cache``);
            default ``OUTPUT_CACHE_MB``.
    """

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        fetcher: ImageSource,
        models: ServedModels | None = None,
        output_cache_bytes: int | None = None,
    ):
        self.settings = settings
        self.holder = holder
        self.models = models or ServedModels(holder)
        self.fetcher = fetcher
        self.project_fetchers: dict[int, ImageSource] = {}  # a project whose Label Studio told /setup where it is
        self.embedder = load_embedder(settings.embedder) if settings.embedder else None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="image-fetch")
        limit = settings.output_cache_mb * 2**20 if output_cache_bytes is None else output_cache_bytes
        self.outputs = OutputCache(limit)  # the model's outputs of earlier scorings
        self.control_models: dict[Path, ModelHolder] = {}  # a control's own weights (model_path), by file
        self._control_users: dict[tuple[int | None, str | None], Path] = {}  # (project, control) -> the file it is served
        self._control_tasks: dict[tuple[Path, int, int], str] = {}  # a checkpoint's task, by file and its stat
        self._control_broken: set[Path] = set()  # retrained control versions that did not load (each version is a new file)
        self._control_lock = threading.Lock()

    def control_model(
        self, model_path: str, wait: float | None = None, describe: bool = False, project: int | None = None, control: str | None = None
    ) -> LoadedModel | ModelMeta:
        """The weights a control's ``model_path`` names, under ``MODEL_ROOT`` (loaded once, reloaded when
        the file changes); for ``project``'s ``control``, its promoted version trained on that control's labels.

        Args:
            describe: what the checkpoint says it is will do (``/setup``: no need to wait for the load).

        Raises:
            LabelConfigError: the path leaves ``MODEL_ROOT``, or no such file, or it is not YOLO weights.
        """
        base = control_weights(self.settings.control_models_root, model_path)
        path, version = base, None
        if project is not None and control is not None:
            info = self.models.control_current(project, control, model_path)
            if info is not None and Path(info.weights) not in self._control_broken:
                path, version = Path(info.weights), info.version
        holder = self._control_holder(path, version, (project, control))
        try:
            return holder.describe(wait) if describe else holder.get(wait)
        except ModelNotReadyError:
            raise
        except ModelUnavailableError as exc:
            if path != base:  # a retrained version that does not load: the file it was trained from serves
                log.error("project %s: control %s: its model %s could not be loaded (%s); serving %s", project, control, path, exc, base)
                with self._control_lock:
                    self._control_broken.add(path)
                return self.control_model(model_path, wait, describe, project, control)
            raise LabelConfigError(f'model_path="{model_path}": {exc}') from None

    def _control_holder(self, path: Path, version: str | None, user: tuple[int | None, str | None]) -> ModelHolder:
        """The holder of ``path``, made once; a holder no control serves any more (its project's control now
        serves a newer version) is dropped, so its model can be freed."""
        with self._control_lock:
            if user[0] is not None:
                old = self._control_users.get(user)
                self._control_users[user] = path
                if old is not None and old != path and old not in self._control_users.values():
                    self.control_models.pop(old, None)
            holder = self.control_models.get(path)
            if holder is None:
                holder = self.control_models[path] = ModelHolder(str(path), self.settings.ultralytics_device, version=version)
            return holder

    def control_task(self, model_path: str, wait: float | None = None) -> str:
        """The task of the weights a control's ``model_path`` names, read from the checkpoint (nothing
        loaded, no hash of the file) when it is a ``.pt``; else from the loaded model.

        Raises:
            LabelConfigError: as :meth:`control_model`.
        """
        path = control_weights(self.settings.control_models_root, model_path)
        if path.suffix == ".pt":
            st = path.stat()
            key = (path, st.st_mtime_ns, st.st_size)
            task = self._control_tasks.get(key)
            if task is None:
                meta = read_checkpoint_meta(path, digest=False)
                if meta is not None:
                    task = self._control_tasks[key] = meta.task
            if task is not None:
                return task
        return self.control_model(model_path, wait).task

    def plan(self, label_config: str, model_task: str, wait: float | None = None, describe: bool = False) -> Plan:
        """Which controls of ``label_config`` get predictions, and from which model (:func:`plan_targets`)."""
        plan = _plan_for(label_config, model_task)
        if "model_path" not in label_config:
            return plan
        return plan_targets(label_config, model_task, task_of=lambda path: self.control_task(path, wait))

    def _fill(self, target: Target, model: LoadedModel, display: Display, wait: float | None, project: int | None) -> Fill:
        if target.model_path is not None:
            model = self.control_model(target.model_path, wait, project=project, control=target.from_name)  # type: ignore[assignment]
            display = default_display(self.settings)
        if target.score_threshold is not None:
            display = Display(target.score_threshold)
        return Fill(model, target, _object_labels(model, target), display, _keypoint_labels(model, target))

    def serve(self, label_config: str, wait: float | None = None, project: int | None = None) -> Served:
        """Check that the model can serve ``label_config``.

        Args:
            label_config: the project's labeling config.
            wait: at most this many seconds to wait for the model to load.
            project: Label Studio project id: its own retrained model, if it has one.

        Labels no class of the model maps to are accepted: they are not predicted until the
        project's own model learns them (:attr:`Served.coverage`).

        Raises:
            ModelUnavailableError: no weights.
            LabelConfigError: the config has no control this kind of model can fill.
        """
        model = self.models.get(project, wait)
        plan = self.plan(label_config, model.task, wait)
        target = plan.primary
        own_display = self.display_for(project, model)
        extras = tuple(self._fill(t, model, own_display, wait, project) for t in plan.others)
        label = proposal_label(model.names, target, model.task)
        if label is not None:  # class-agnostic proposals, for one-label projects the model does not know
            return Served(
                model,
                target,
                dict.fromkeys(model.names, label),
                proposals=True,
                display=default_display(self.settings),
                project=project,
                extras=extras,
            )
        display = Display(target.score_threshold) if target.score_threshold is not None else own_display
        return Served(
            model, target, _object_labels(model, target), display=display, project=project,
            keypoint_labels=_keypoint_labels(model, target), extras=extras,
        )  # fmt: skip

    def display_for(self, project: int | None, model: LoadedModel) -> Display:
        """What ``model`` shows for ``project``: ``SCORE_THRESHOLD`` for every class when it is set;
        otherwise the rule measured on the held-out labels when this version was trained
        (:mod:`ml_backend.inference.display`), and 0.25 for a model without one (the base model)."""
        if self.settings.score_threshold is not None:
            return default_display(self.settings)
        info = self.models.current(project)
        stored = (info.metrics.get("new") or {}).get("display") if info is not None and info.version == model.version else None
        return Display.from_json(stored, model.names) if stored else default_display(self.settings)

    def check(self, label_config: str, wait: float | None = None, project: int | None = None) -> Check:
        """Check that the project's model can serve ``label_config``, without waiting for it to load
        when its checkpoint already says what it is (``/setup``: Label Studio waits 3 s).

        Raises:
            ModelUnavailableError: no weights (or still loading, and nothing to read them from).
            LabelConfigError: the config has no control this kind of model can fill.
        """
        model = self.models.describe(project, wait)
        plan = self.plan(label_config, model.task, wait, describe=True)
        target = plan.primary
        own = project is not None and self.models.model_dir is not None and self.models.current(project) is not None
        return Check(
            model.version,
            coverage(model.names, target, _keypoint_labels(model, target)),
            own,
            proposal_label(model.names, target, model.task) is not None,
            target.warnings,
            keypoints=target.kind == "keypoints",
        )

    def fetcher_for(self, project: int | None) -> ImageSource:
        """Where ``project``'s images come from: the Label Studio its ``/setup`` named, else ``LABEL_STUDIO_URL``'s fetcher."""
        return self.project_fetchers.get(project, self.fetcher) if project is not None else self.fetcher

    def _load(self, task: Mapping[str, Any], target: Target, fetcher: ImageSource) -> np.ndarray:
        uri = task_image_uri(task, target.value_key)
        return fetcher.load(uri, task.get("id"))

    def predict(self, tasks: Sequence[Mapping[str, Any]], label_config: str, project: int | None = None) -> list[dict]:
        """One Label Studio prediction (or error entry) per task, in task order."""
        if not isinstance(tasks, Sequence) or isinstance(tasks, (str, bytes)) or not tasks:
            raise BadRequest("'tasks' must be a non-empty list of Label Studio tasks")
        served = self.serve(label_config, project=project)
        if served.target.video or any(f.target.video for f in served.extras):
            return [self._predict_one(task, served) for task in tasks]
        fills = self.fill_outputs(tasks, served)
        out: list[dict] = []
        for task, pred, more in zip(tasks, self.run(tasks, served), fills, strict=True):
            if isinstance(pred, str) or isinstance(more, str):
                out.append(self._error(task, pred if isinstance(pred, str) else str(more), served.model.version))
                continue
            regions = served.regions(pred, more)
            score = float(np.mean([r["score"] for r in regions])) if regions else 0.0
            out.append({"result": regions, "score": score, "model_version": served.model.version})
        return out

    def _predict_one(self, task: Mapping[str, Any], served: Served) -> dict:
        """One task's prediction, control by control (a config with a video: frame by frame, not batched)."""
        fetcher = self.fetcher_for(served.project)
        ids = iter(lambda: secrets.token_hex(5), None)
        own = Fill(served.model, served.target, served.label_map, served.display, served.keypoint_labels)
        regions: list[dict] = []
        try:
            for fill in (own, *served.extras):
                if fill.target.video:
                    regions += self._video_regions(task, fill, fetcher, ids)
                    continue
                image = self._load(task, fill.target, fetcher)
                pred = fill.model.predict(
                    [image], conf=fill.display.lowest, imgsz=self.settings.imgsz, device=self.settings.ultralytics_device
                )[0]
                regions += to_ls_results(pred, fill.target, fill.label_map, fill.display, ids, fill.keypoint_labels)[0]
        except ImageError as exc:
            return self._error(task, str(exc), served.model.version)
        except Exception as exc:  # a bug or an odd library error: still only this task fails
            log.exception("task %s: unexpected error while predicting", _task_id(task))
            return self._error(task, f"unexpected error while predicting: {type(exc).__name__}", served.model.version)
        scored = [r["score"] for r in regions if "score" in r]
        return {"result": regions, "score": float(np.mean(scored)) if scored else 0.0, "model_version": served.model.version}

    def _video_regions(self, task: Mapping[str, Any], fill: Fill, fetcher: ImageSource, ids: Iterator[str]) -> list[dict]:
        uri = task_image_uri(task, fill.target.value_key)
        fetch = getattr(fetcher, "fetch_bytes", None)
        if fetch is None:
            raise ImageError("videos cannot be read from this image source")
        settings = self.settings
        with video_file(fetch(uri, task.get("id"))) as (path, info):
            if fill.target.frame_rate_key is not None:  # frameRate="$fps": the task's own (else the file's)
                fill = replace(fill, target=replace(fill.target, frame_rate=_task_rate(task, fill.target.frame_rate_key, info.fps)))
            yolo, lock = fill.model.on_video()
            with lock:
                if fill.target.kind == "video_rectangle":
                    frames = run_tracker(
                        yolo,
                        path,
                        fill.target.tracker,
                        fill.display.lowest,
                        settings.imgsz,
                        settings.ultralytics_device,
                        settings.video_max_frames,
                    )
                    return track_regions(frames, info, fill.target, fill.label_map, fill.display.lowest, ids)
                probs = run_classifier(yolo, path, settings.imgsz, settings.ultralytics_device, settings.video_max_frames)
        return timeline_regions(frame_labels(probs, fill.label_map, fill.display.lowest), fill.target, ids, info.fps)

    def fill_outputs(self, tasks: Sequence[Mapping[str, Any]], served: Served) -> list[list[ImagePrediction] | str]:
        """Per task: the model outputs of ``served.image_extras`` (the other controls on images), in order
        (an empty list when there are none), or why the task fails (an image of another control could not be had)."""
        out: list[list[ImagePrediction] | str] = [[] for _ in tasks]
        for fill in served.image_extras:
            for i, pred in enumerate(self.run(tasks, served.fill_served(fill), with_scores=True)):
                current = out[i]
                if isinstance(current, str):
                    continue
                if isinstance(pred, str):
                    out[i] = f"{fill.target.to_name}: {pred}"
                else:
                    current.append(pred)
        return out

    def run(
        self,
        tasks: Sequence[Mapping[str, Any]],
        served: Served,
        with_scores: bool = False,
        conf: float | None = None,
        tta: bool = False,
        cache: bool = False,
    ) -> Iterator[ImagePrediction | str]:
        """Model output (or an error message) per task, in task order.

        Tasks go through in chunks of ``PREDICT_BATCH``: the images of the next chunk download
        while the model runs on the current one, and no more than two chunks of decoded images
        are held in memory, however many tasks there are.

        Args:
            with_scores: also capture per-class scores and embeddings (for active learning).
            conf: lowest confidence kept (default: the lowest that ``served.display`` shows).
            tta: also run the model on each image's mirror image and set ``tta_disagreement``
                (:func:`ml_backend.al.uncertainty.tta_disagreement`): a second pass.
            cache: reuse the outputs kept in :attr:`outputs` by an earlier call with the same
                model version, task id, image URI, ``conf``, ``tta`` and ``IMGSZ`` (no image is
                read, no model runs for those tasks), and keep the new ones (not the failures).
        """
        conf = served.display.lowest if conf is None else conf
        if not cache:
            yield from self._run(tasks, served, with_scores, conf, tta)
            return
        keys = [self._output_key(task, served, with_scores, conf, tta) for task in tasks]
        hits = [self.outputs.get(key) if key is not None else None for key in keys]  # taken now: later puts may evict
        missed = self._run([task for task, hit in zip(tasks, hits) if hit is None], served, with_scores, conf, tta)
        for key, hit in zip(keys, hits):
            if hit is not None:
                yield hit
                continue
            pred = next(missed)
            if key is not None and not isinstance(pred, str):
                self.outputs.put(key, pred)
            yield pred

    def _output_key(self, task: Mapping[str, Any], served: Served, with_scores: bool, conf: float, tta: bool) -> tuple | None:
        """What decides the model's output for ``task`` (None: a task without an id or image, not kept)."""
        task_id = _task_id(task)
        try:
            uri = task_image_uri(task, served.target.value_key)
        except ImageError:
            return None
        if task_id is None:
            return None
        model = served.model
        return (model.version, served.project, served.proposals, task_id, uri, float(conf), tta, with_scores, self.settings.imgsz)

    def _run(
        self, tasks: Sequence[Mapping[str, Any]], served: Served, with_scores: bool, conf: float, tta: bool
    ) -> Iterator[ImagePrediction | str]:
        size = self.settings.predict_batch
        chunks = [list(range(i, min(i + size, len(tasks)))) for i in range(0, len(tasks), size)]
        fetcher = self.fetcher_for(served.project)
        pending = [self._pool.submit(self._load, tasks[i], served.target, fetcher) for i in chunks[0]] if chunks else []
        for k, idx in enumerate(chunks):
            current = pending
            if k + 1 < len(chunks):  # prefetch the next chunk's images
                pending = [self._pool.submit(self._load, tasks[i], served.target, fetcher) for i in chunks[k + 1]]
            results: dict[int, ImagePrediction | str] = {}
            images, where = [], []
            for i, fut in zip(idx, current):
                try:
                    images.append(fut.result())
                    where.append(i)
                except ImageError as exc:
                    results[i] = str(exc)
                except Exception as exc:  # a bug or an odd library error: still only this task fails
                    log.exception("task %s: unexpected error while loading its image", _task_id(tasks[i]))
                    results[i] = f"unexpected error while loading the image: {type(exc).__name__}"
            if images:
                preds = served.model.predict(
                    images,
                    conf=conf,
                    imgsz=self.settings.imgsz,
                    device=self.settings.ultralytics_device,
                    batch=size,
                    with_scores=with_scores,
                    agnostic=served.proposals,
                )
                if with_scores and self.embedder is not None:
                    embeddings = np.asarray(self.embedder(images), dtype=np.float32)
                    if embeddings.shape[0] != len(images) or embeddings.ndim != 2:
                        raise ValueError(f"EMBEDDER returned shape {embeddings.shape} for {len(images)} images; expected (n, d)")
                    for pred, emb in zip(preds, embeddings):
                        pred.embedding = emb
                if tta:
                    mirrored = served.model.predict(
                        [img[:, ::-1] for img in images],
                        conf=conf,
                        imgsz=self.settings.imgsz,
                        device=self.settings.ultralytics_device,
                        batch=size,
                    )
                    for pred, other in zip(preds, mirrored, strict=True):
                        pred.tta_disagreement = _mirror_disagreement(pred, other)
                results.update(zip(where, preds, strict=True))
            for i in idx:
                yield results[i]

    def close(self) -> None:
        """Stop the image download threads (a predictor used for one job, not a server's)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _error(self, task: Mapping[str, Any], message: str, version: str | None) -> dict:
        task_id = _task_id(task)
        log.warning("task %s: %s", task_id, message)
        return {"task": task_id, "error": message, "model_version": version}


def _task_rate(task: Mapping[str, Any], key: str, default: float) -> float:
    """The frame rate a task's data holds under ``key`` (``<Video frameRate="$key">``), else ``default``."""
    data = task.get("data")
    try:
        rate = float(data.get(key) or 0.0) if isinstance(data, Mapping) else 0.0
    except (TypeError, ValueError):
        rate = 0.0
    return rate if rate > 0 else default


def _mirror_disagreement(pred: ImagePrediction, mirrored: ImagePrediction) -> float:
    """How much the boxes on an image and on its mirror image (mapped back) disagree."""
    if pred.probs is not None and mirrored.probs is not None:  # a classifier: total variation of the two distributions
        return float(0.5 * np.abs(pred.probs - mirrored.probs).sum())
    back = mirrored.boxes_xyxy.copy()
    back[:, [0, 2]] = pred.width - mirrored.boxes_xyxy[:, [2, 0]]
    return tta_disagreement(pred.boxes_xyxy, pred.class_ids, pred.scores, back, mirrored.class_ids, mirrored.scores)


def load_embedder(path: str) -> Callable[[list[np.ndarray]], np.ndarray]:
    """The ``module:function`` named by ``EMBEDDER``.

    Raises:
        ValueError: it cannot be imported or is not callable.
    """
    import importlib

    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"EMBEDDER={path!r} could not be loaded: {exc}") from None
    if not callable(fn):
        raise ValueError(f"EMBEDDER={path!r} is not a function")
    return fn


def label_studio_client(settings: Settings) -> LabelStudioClient | None:
    """A Label Studio client for ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (None when either is missing)."""
    if not settings.label_studio_url or not settings.label_studio_api_key:
        return None
    return LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key, ca_bundle=settings.label_studio_ca_bundle)


def make_fetcher(settings: Settings, ls_url: str, api_key: str) -> ImageFetcher:
    """An image fetcher that authenticates to ``ls_url`` (only) with ``api_key``."""
    ca_bundle = settings.label_studio_ca_bundle
    auth = LabelStudioAuth(ls_url, api_key, session=api_session(ls_url, ca_bundle)) if ls_url and api_key else None
    return ImageFetcher(
        UrlPolicy(label_studio_url=ls_url, allowed_hosts=settings.allowed_hosts),
        cache_dir=settings.paths.image_cache,
        auth_headers=auth.headers if auth else None,
        timeout=settings.image_timeout,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        ca_bundle=ca_bundle,
        cache_max_bytes=settings.image_cache_max_mb * 2**20,
    )


def make_holder(settings: Settings) -> ModelHolder:
    return ModelHolder(settings.model_path, settings.ultralytics_device, settings.paths.hub_weights)


def make_predictor(settings: Settings, holder: ModelHolder | None = None) -> Predictor:
    """A predictor for ``settings``, fetching images from ``LABEL_STUDIO_URL``, serving each
    project its promoted model from ``MODEL_DIR`` (else ``MODEL_PATH``)."""
    holder = holder or make_holder(settings)
    fetcher = make_fetcher(settings, settings.label_studio_url, settings.label_studio_api_key)
    return Predictor(settings, holder, fetcher, ServedModels(holder, settings.model_dir))


def _task_id(task: Any) -> Any:
    return task.get("id") if isinstance(task, Mapping) else None


__all__ = [
    "BadRequest",
    "Check",
    "LabelConfigError",
    "Predictor",
    "label_studio_client",
    "make_fetcher",
    "make_holder",
    "make_predictor",
    "task_image_uri",
]
