"""The served YOLO model: lazy loading, a version that follows the weights, batched inference.

Importing this module loads nothing. :class:`ModelHolder` loads the weights on first use (or
when ``warm_up`` is called at server start) and reloads them when the file changes, so
``model_version`` always names the weights actually served.

Example:
    >>> holder = ModelHolder("does-not-exist.pt", device="cpu")
    >>> holder.status()["loaded"]
    False
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.faults import slow_load

log = logging.getLogger(__name__)


def import_yolo():  # noqa: ANN201 - returns the ultralytics.YOLO class
    """Import Ultralytics' ``YOLO`` lazily, with run-time ``pip install`` turned off.

    Ultralytics otherwise tries to pip-install missing optional packages while serving.
    """
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    from ultralytics import YOLO

    return YOLO


class ModelUnavailableError(RuntimeError):
    """The weights could not be had; the message says which and what to do."""


class ModelNotReadyError(ModelUnavailableError):
    """The weights are still loading; asking again in a few seconds will work."""


@dataclass
class ImagePrediction:
    """What the model said about one image, in pixels of the (EXIF-corrected) image.

    Detection-like models fill ``boxes_xyxy``, ``class_ids`` and ``scores`` (one row per object);
    segmentation adds ``polygons``; pose adds ``keypoints`` and ``keypoint_conf``; oriented boxes fill ``obb_xywhr`` (centre, size, radians);
    classifiers fill ``probs`` (one per class). With scoring on, ``class_scores`` holds every
    kept object's score for each class (n, C), read from the head's output before NMS kept only
    the top class, ``embedding`` a pooled feature vector of the image, and ``object_embeddings``
    one vector per kept object (n, d): the neck's feature maps averaged inside the object's box on
    each level the head reads, each level L2-normalized: all from the same pass.
    """

    width: int
    height: int
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=float))
    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=float))
    polygons: list[np.ndarray] = field(default_factory=list)
    obb_xywhr: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), dtype=float))
    probs: np.ndarray | None = None
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2), dtype=float))  # pose: (n, k, 2) pixels
    keypoint_conf: np.ndarray | None = None  # pose: (n, k) each keypoint's confidence (visibility)
    class_scores: np.ndarray | None = None
    embedding: np.ndarray | None = None
    object_embeddings: np.ndarray | None = None
    tta_disagreement: float | None = None


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _looks_like_hub_name(path: str) -> bool:
    return os.sep not in path and "/" not in path and path.endswith((".pt", ".onnx", ".yaml"))


class LoadedModel:
    """Ultralytics weights plus what the backend needs to know about them."""

    def __init__(self, yolo: Any, path: Path | str, version: str):
        self.yolo = yolo
        self.path = path
        self.version = version
        self.task: str = yolo.task
        self.names: dict[int, str] = {int(k): str(v) for k, v in dict(yolo.names).items()}
        overrides = getattr(yolo, "overrides", None) or {}
        size = overrides.get("imgsz") if isinstance(overrides, dict) else None
        self.imgsz: int = int(size[0] if isinstance(size, (list, tuple)) else size) if size else 640  # the size it was trained at
        # pose: each class's keypoint names in the model's order (weights trained by Ultralytics 8.4 carry them), keypoints per object
        self.kpt_names, self.n_keypoints = pose_layout(yolo)
        self._lock = threading.Lock()
        self._capture = _HeadCapture(yolo)
        self._video: Any = None
        self._video_lock = threading.Lock()

    def on_video(self) -> tuple[Any, threading.Lock]:
        """A second Ultralytics model of the same weights for videos, and the lock to hold while using it.

        Tracking registers callbacks on the model it runs on; a model of their own keeps them away
        from image predictions. Loaded on first use.
        """
        with self._video_lock:
            if self._video is None:
                self._video = import_yolo()(str(self.path), task=self.task)
        return self._video, self._video_lock

    def predict(
        self,
        images: Sequence[np.ndarray],
        conf: float,
        imgsz: int | None,
        device: str | None,
        batch: int = 16,
        with_scores: bool = False,
        agnostic: bool = False,
    ) -> list[ImagePrediction]:
        """Run the model on RGB images, ``batch`` at a time, and return one result per image.

        Args:
            imgsz: the network input size (None: the size the weights were trained at).
            with_scores: also return per-class scores of the kept objects and an image
                embedding, captured from the same forward pass (PyTorch weights only; exported
                weights return neither).
            agnostic: non-maximum suppression across classes (two classes' boxes on one object
                are one box: class-agnostic proposals).
        """
        out: list[ImagePrediction] = []
        with self._lock:  # Ultralytics predictors are not thread-safe
            capture = self._capture if self._capture.active else None
            kw_pred = {"predictor": capture.predictor_class} if capture is not None else {}
            if capture is not None and with_scores:
                capture.attach()
            try:
                for start in range(0, len(images), batch):
                    chunk = [np.ascontiguousarray(img[:, :, ::-1]) for img in images[start : start + batch]]  # RGB -> BGR
                    if capture is not None:
                        capture.clear()
                    results = self.yolo.predict(
                        chunk, conf=conf, imgsz=imgsz or self.imgsz, device=device, verbose=False, batch=len(chunk),
                        agnostic_nms=agnostic, **kw_pred,
                    )  # fmt: skip
                    if capture is not None and with_scores:
                        extra = capture.finish(len(chunk), len(self.names))
                    else:
                        extra = [(None, None, None)] * len(chunk)
                    for r, (scores, emb, objects) in zip(results, extra, strict=True):
                        pred = _to_prediction(r)
                        pred.embedding = emb
                        if pred.probs is not None:
                            pred.class_scores = pred.probs[None, :]
                        elif scores is not None and len(scores) == len(pred.class_ids):
                            pred.class_scores = scores
                            pred.object_embeddings = objects if objects is not None and len(objects) == len(pred.class_ids) else None
                        out.append(pred)
            finally:
                if capture is not None:
                    capture.detach()
        return out


def pose_layout(yolo: Any) -> tuple[dict[int, list[str]], int]:
    """A pose model's keypoint names per class (empty when its weights do not carry them) and its keypoints per object (0: not pose)."""
    inner = getattr(yolo, "model", None)
    kpt_names = getattr(inner, "kpt_names", None)
    names = {int(k): [str(n) for n in v] for k, v in kpt_names.items()} if isinstance(kpt_names, dict) else {}
    layers: Any = getattr(inner, "model", None)
    head = layers[-1] if hasattr(layers, "__getitem__") else None
    shape: Any = getattr(head, "kpt_shape", None) or (getattr(inner, "yaml", None) or {}).get("kpt_shape")
    return names, int(shape[0]) if shape else 0


class _HeadCapture:
    """Hooks on the model's head that capture, during a scoring ``predict``, the feature maps it
    reads, its raw (pre-NMS) output, and the indices NMS keeps: per-class scores and embeddings
    from the very forward pass that made the predictions.

    One per model, with one predictor class, so Ultralytics builds its predictor once and reuses
    it for plain and scoring calls alike; with the hooks detached it behaves as the plain one.
    """

    def __init__(self, yolo: Any):
        self.yolo = yolo
        self.feats: list[Any] = []
        self.raw: list[Any] = []
        self.idxs: list[Any] = []
        self.recording = False
        self.warned = False
        layers: Any = getattr(getattr(yolo, "model", None), "model", None)
        # channels of the decoded output besides 4 box + nc class rows: mask coefficients, angle, keypoints
        head = layers[-1] if hasattr(layers, "__getitem__") else None
        self.extra = sum(int(getattr(head, a, 0) or 0) for a in ("nm", "ne", "nk"))
        self.active = hasattr(layers, "__getitem__") and hasattr(layers[-1], "register_forward_hook")
        self.predictor_class = self._predictor_class() if self.active else None
        if self.active:
            # Registered once, before Ultralytics copies the model into its predictor (the copy
            # keeps the hooks); they record only while a scoring call runs.
            # Plain closures, not bound methods: deepcopy shares functions but would copy ``self``.
            capture = self

            def on_input(module: Any, inp: Any) -> None:
                if capture.recording:
                    capture.feats.append(inp[0])

            def on_output(module: Any, inp: Any, out: Any) -> None:
                if capture.recording:
                    capture.raw.append(_first_tensor(out))

            layers[-1].register_forward_pre_hook(on_input)
            layers[-1].register_forward_hook(on_output)

    def attach(self) -> None:
        self.recording = True

    def detach(self) -> None:
        self.recording = False
        self.clear()

    def clear(self) -> None:
        self.feats.clear()
        self.raw.clear()
        self.idxs.clear()

    def _predictor_class(self) -> type:
        yolo, capture = self.yolo, self
        base = yolo._smart_load("predictor")

        class ScoringPredictor(base):  # type: ignore[misc, valid-type]
            def postprocess(self, preds, img, orig_imgs, **kwargs):  # noqa: ANN001, ANN202
                # Feature maps captured -> NMS returns kept indices; none (plain call) -> plain NMS.
                self._feats = list(capture.feats[-1]) if capture.feats and yolo.task != "classify" else None
                return super().postprocess(preds, img, orig_imgs, **kwargs)

            def get_obj_feats(self, feat_maps, idxs):  # noqa: ANN001, ANN202
                capture.idxs.append(idxs)
                return super().get_obj_feats(feat_maps, idxs)

        return ScoringPredictor

    def finish(self, n: int, nc: int) -> list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]]:
        """Per image: the kept objects' per-class scores, the image embedding, the object embeddings."""
        out: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]] = []
        strides = getattr(getattr(self.yolo, "model", None), "stride", None)
        for b in range(n):
            emb = _pooled(self.feats[-1], b) if self.feats else None
            scores = objects = None
            raw = self.raw[-1] if self.raw else None
            idx = self.idxs[-1][b].long().reshape(-1) if self.idxs and b < len(self.idxs[-1]) else None
            if raw is not None and idx is not None and _per_class_layout(raw, 4 + nc + self.extra, idx):
                scores = raw[b, 4 : 4 + nc, :][:, idx].T.detach().float().cpu().numpy().astype(np.float64)
                maps = self.feats[-1] if self.feats else None
                if maps is not None and strides is not None and isinstance(maps, (list, tuple)) and len(maps) == len(strides):
                    objects = _box_pooled(maps, b, raw[b, :4, :][:, idx].T, [float(x) for x in strides])
            elif raw is not None and getattr(self.yolo, "task", None) != "classify" and not self.warned:
                # e.g. a head in end-to-end (NMS-free) mode: (batch, max_det, 6) boxes, no per-class scores
                self.warned = True
                log.warning(
                    "this model's head returns %s, not per-class scores (batch, 4 + %d classes, anchors) with the objects "
                    "NMS kept: uncertainty uses each object's confidence alone, and objects get no features for diversity",
                    tuple(raw.shape),
                    nc,
                )
            out.append((scores, emb, objects))
        return out


def _per_class_layout(raw: Any, channels: int, idx: Any) -> bool:
    """``raw`` is a head's decoded pre-NMS output, (batch, channels = 4 + nc + extra, anchors), that the kept
    indices ``idx`` index (an end-to-end head's (batch, max_det, 6) boxes are not)."""
    if raw.ndim != 3 or raw.shape[1] != channels:
        return False
    return not idx.numel() or int(idx.max()) < raw.shape[2]


def _first_tensor(out: Any) -> Any:
    while isinstance(out, (list, tuple)):
        out = out[0]
    return out


def _pooled(feats: Any, b: int) -> np.ndarray:
    maps = feats if isinstance(feats, (list, tuple)) else [feats]
    vecs = [m[b].float().mean(dim=(-2, -1)) if m.ndim == 4 else m[b].float().reshape(-1) for m in maps]
    import torch

    return torch.cat(vecs).detach().cpu().numpy().astype(np.float32)


def _box_pooled(maps: Sequence[Any], b: int, xywh: Any, strides: Sequence[float]) -> np.ndarray:
    """Each box's mean feature inside it on every level (from summed-area tables: one pass per
    level, whatever the number of boxes), reduced to the narrowest level's width by averaging
    channel groups (as Ultralytics reduces its object features), L2-normalized per level, concatenated.

    Args:
        maps: the head's input feature maps, (B, C_l, H_l, W_l) each.
        b: the image in the batch.
        xywh: (n, 4) boxes in the network input's pixels (centre, size).
        strides: each level's stride in pixels.
    """
    import torch

    width = min(int(m.shape[1]) for m in maps)
    boxes = xywh.float()
    parts = []
    for m, stride in zip(maps, strides, strict=True):
        fm = m[b].float()  # (C, H, W)
        c, h, w = fm.shape
        table = torch.nn.functional.pad(fm.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (C, H + 1, W + 1), zero first row/col
        x1 = ((boxes[:, 0] - boxes[:, 2] / 2) / stride).floor().clamp(0, w - 1).long()
        y1 = ((boxes[:, 1] - boxes[:, 3] / 2) / stride).floor().clamp(0, h - 1).long()
        x2 = torch.maximum(((boxes[:, 0] + boxes[:, 2] / 2) / stride).ceil().clamp(1, w).long(), x1 + 1)
        y2 = torch.maximum(((boxes[:, 1] + boxes[:, 3] / 2) / stride).ceil().clamp(1, h).long(), y1 + 1)
        total = table[:, y2, x2] - table[:, y1, x2] - table[:, y2, x1] + table[:, y1, x1]  # (C, n)
        mean = (total / ((y2 - y1) * (x2 - x1)).float()).T  # (n, C)
        mean = mean.reshape(len(boxes), width, c // width).mean(-1)
        parts.append(torch.nn.functional.normalize(mean, dim=1))
    return torch.cat(parts, dim=1).detach().cpu().numpy().astype(np.float32)


def _to_prediction(r: Any) -> ImagePrediction:
    h, w = r.orig_shape[:2]
    pred = ImagePrediction(width=int(w), height=int(h))
    if r.probs is not None:
        pred.probs = r.probs.data.detach().cpu().numpy().astype(float)
        return pred
    if getattr(r, "obb", None) is not None and len(r.obb):
        pred.obb_xywhr = r.obb.xywhr.detach().cpu().numpy().astype(float)
        pred.class_ids = r.obb.cls.detach().cpu().numpy().astype(int)
        pred.scores = r.obb.conf.detach().cpu().numpy().astype(float)
        return pred
    if r.boxes is not None and len(r.boxes):
        pred.boxes_xyxy = r.boxes.xyxy.detach().cpu().numpy().astype(float)
        pred.class_ids = r.boxes.cls.detach().cpu().numpy().astype(int)
        pred.scores = r.boxes.conf.detach().cpu().numpy().astype(float)
    if r.masks is not None:
        pred.polygons = [np.asarray(p, dtype=float) for p in r.masks.xy]
    keypoints = getattr(r, "keypoints", None)
    if keypoints is not None and len(pred.scores):
        pred.keypoints = keypoints.xy.detach().cpu().numpy().astype(float)
        conf = keypoints.conf
        pred.keypoint_conf = conf.detach().cpu().numpy().astype(float) if conf is not None else np.ones(pred.keypoints.shape[:2])
    return pred


@dataclass(frozen=True)
class ModelMeta:
    """What ``/setup`` needs of a model, known without loading it: its version, task and classes."""

    version: str
    task: str
    names: dict[int, str]


class _Stub:
    """Anything in a checkpoint's pickle that is not plain data: kept as its state, never run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub(*args)

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


_PLAIN = {
    ("builtins", n)
    for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bytearray", "bool", "slice", "complex")
} | {("collections", "OrderedDict"), ("copyreg", "_reconstructor"), ("_codecs", "encode")}


def read_checkpoint_meta(path: str | Path, digest: bool = True) -> ModelMeta | None:
    """The classes, task and version of an Ultralytics ``.pt`` checkpoint, read from its pickle without
    torch and without running anything in it (every object but plain data becomes an inert stub).

    Milliseconds, where loading the model takes seconds: ``/setup`` answers within Label Studio's
    3 s while the model is still loading. None when the file is not such a checkpoint.

    Example:
        >>> read_checkpoint_meta("not-a-checkpoint.pt") is None
        True
    """
    import pickle
    import zipfile

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return super().find_class(module, name) if (module, name) in _PLAIN else _Stub

        def persistent_load(self, pid: Any) -> None:  # tensor storages: not read
            return None

    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            member = next(n for n in z.namelist() if n.endswith("data.pkl"))
            ckpt = Unpickler(z.open(member)).load()
        model = ckpt.get("model") or ckpt.get("ema")
        state = model.__dict__.get("_state") if isinstance(model, _Stub) else None
        names = state.get("names") if isinstance(state, dict) else None
        task = (ckpt.get("train_args") or {}).get("task") or "detect"
        if not isinstance(names, dict) or not names:
            return None
        version = f"{p.stem}-{file_digest(p)[:12]}" if digest else p.stem  # digest=False: no read of the whole file
        return ModelMeta(version, str(task), {int(k): str(v) for k, v in names.items()})
    except Exception:  # not a zip, not a checkpoint, an odd pickle: the model load will say what is wrong
        return None


def load_weights(model_path: str, cache_dir: Path | None = None) -> LoadedModel:
    """Load ``model_path`` with Ultralytics.

    A local file is loaded as is. A bare name such as ``yolo11n.pt`` that is not a local file is
    handed to Ultralytics, which downloads it when online.

    Raises:
        ModelUnavailableError: the file is missing, unreadable, or the download failed.
    """
    YOLO = import_yolo()  # heavy: imported only when a model is really loaded

    path = Path(model_path).expanduser()
    if path.is_file():
        try:
            yolo = YOLO(str(path), task=None)
            _ = yolo.names
        except Exception as exc:
            raise ModelUnavailableError(f"MODEL_PATH={model_path} exists but could not be loaded as YOLO weights: {exc}") from None
        digest = file_digest(path)
        return LoadedModel(yolo, path, f"{path.stem}-{digest[:12]}")
    if not _looks_like_hub_name(model_path):
        raise ModelUnavailableError(
            f"MODEL_PATH={model_path} does not exist. Mount your weights there, or set MODEL_PATH to an Ultralytics "
            "model name such as yolo11n.pt (needs internet on first start)."
        )
    target = (cache_dir or Path.cwd()) / model_path
    if target.is_file():
        return load_weights(str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    try:
        os.chdir(target.parent)  # Ultralytics downloads bare names into the working directory
        yolo = YOLO(model_path)
        _ = yolo.names
    except Exception as exc:
        raise ModelUnavailableError(
            f"Could not get weights {model_path!r}: the download failed ({type(exc).__name__}: {exc}). "
            "This machine may be offline: put a .pt file on disk and set MODEL_PATH to its path."
        ) from None
    finally:
        os.chdir(cwd)
    if target.is_file():
        return LoadedModel(yolo, target, f"{target.stem}-{file_digest(target)[:12]}")
    return LoadedModel(yolo, model_path, Path(model_path).stem)


class ModelHolder:
    """Thread-safe, lazily loaded model that reloads when its weights file changes.

    Args:
        model_path: as ``MODEL_PATH``.
        device: Ultralytics device string, or ``None`` for auto.
        cache_dir: where downloaded hub weights are kept.
        version: the name to serve the weights under (default: file stem and content hash).
    """

    def __init__(self, model_path: str, device: str | None = None, cache_dir: Path | None = None, version: str | None = None):
        self.model_path = model_path
        self.device = device
        self.cache_dir = cache_dir
        self.fixed_version = version
        self._lock = threading.Lock()
        self._loader_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._model: LoadedModel | None = None
        self._stat: tuple[int, int] | None = None
        self._failed_stat: tuple[int, int] | None = None
        self._error: str | None = None
        self._closing = threading.Event()

    def _file_stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.model_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _fresh(self) -> LoadedModel | None:
        """The loaded model if its file has not changed since (or failed to load since)."""
        model = self._model
        if model is None:
            return None
        stat = self._file_stat()
        return model if stat is None or stat in (self._stat, self._failed_stat) else None

    def get(self, wait: float | None = None) -> LoadedModel:
        """Return the loaded model, loading or reloading it if needed.

        Args:
            wait: at most this many seconds to wait for loading (``None``: as long as it takes).
                Label Studio gives ``/setup`` 3 s; a load cut short goes on in the background.

        Raises:
            ModelNotReadyError: still loading after ``wait`` seconds.
            ModelUnavailableError: the weights cannot be had.
        """
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        if wait is None:
            return self._load()
        loader = self._start_loader()
        loader.join(wait)
        return self._after(loader)

    def _after(self, loader: threading.Thread) -> LoadedModel:
        """The model once ``loader`` was waited for: fresh, the one still served, or why there is none."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        if self._model is not None:
            return self._model  # a reload is under way or failed: keep serving the current weights
        if loader.is_alive():
            raise ModelNotReadyError(f"the model ({self.model_path}) is still loading; try again in a few seconds")
        raise ModelUnavailableError(self._error or f"could not load {self.model_path}")

    def _load(self) -> LoadedModel:
        with self._lock:
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            stat = self._file_stat()
            slow_load(self._closing)  # AL_SLOW_LOAD: the tests' busy machine (cut short by a shutdown)
            if self._closing.is_set():  # shutting down: do not start importing torch now
                raise ModelUnavailableError("the backend is shutting down: no model import started")
            try:
                loaded = load_weights(self.model_path, self.cache_dir)
            except ModelUnavailableError as exc:
                self._error = str(exc)
                if self._model is not None:  # keep serving what we have until the file changes again
                    self._failed_stat = stat
                    log.error("reload failed, still serving %s: %s", self._model.version, exc)
                    return self._model
                raise
            if self.fixed_version:
                loaded.version = self.fixed_version
            if self._model is not None and loaded.version != self._model.version:
                log.info("weights changed: %s -> %s", self._model.version, loaded.version)
            self._model, self._stat, self._failed_stat, self._error = loaded, stat, None, None
            return loaded

    def _start_loader(self) -> threading.Thread:
        with self._loader_lock:
            if self._loader is None or not self._loader.is_alive():
                self._loader = threading.Thread(target=self.warm_up, name="model-loader", daemon=True)
                self._loader.start()
            return self._loader

    def warm_up(self) -> None:
        """Load now and log a clear error if the weights cannot be had (never raises)."""
        try:
            m = self._load()
            log.info("model %s loaded (task=%s, %d classes)", m.version, m.task, len(m.names))
        except ModelUnavailableError as exc:
            log.error("%s", exc)

    def describe(self, wait: float | None = None) -> LoadedModel | ModelMeta:
        """The model, or, while it is still loading, what its checkpoint says it is (version, task,
        classes: enough to check a labeling config); waits up to ``wait`` for anything else.

        Raises:
            ModelNotReadyError, ModelUnavailableError: as :meth:`get`.
        """
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        loader = self._start_loader()
        # Only while a first load is under way: after a failed one, Label Studio must hear the error.
        if self._model is None and self._error is None and str(self.model_path).endswith(".pt") and os.path.isfile(self.model_path):
            meta = read_checkpoint_meta(self.model_path)
            if meta is not None:
                if self.fixed_version:
                    meta = ModelMeta(self.fixed_version, meta.task, meta.names)
                return meta
        loader.join(wait)
        return self._after(loader)

    def close(self, timeout: float = 60.0) -> None:
        """Let no new load start, and wait for one under way to finish (a process that exits in the
        middle of importing torch can abort), at most ``timeout`` seconds."""
        self._closing.set()
        loader = self._loader
        if loader is not None and loader.is_alive():
            loader.join(timeout)

    def warm_up_in_background(self) -> threading.Thread:
        """Start loading in a background thread (at most one at a time)."""
        return self._start_loader()

    @property
    def version(self) -> str | None:
        return self._model.version if self._model else None

    def status(self) -> dict[str, Any]:
        """A cheap snapshot for ``/health``: never loads anything."""
        m = self._model
        return {
            "loaded": m is not None,
            "model_version": m.version if m else None,
            "model_task": m.task if m else None,
            "model_path": str(self.model_path),
            "model_error": self._error,
        }
