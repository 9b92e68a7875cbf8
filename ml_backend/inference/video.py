"""Video predictions: tracked boxes for ``<VideoRectangle>``, frame classes for ``<TimelineLabels>``.

Pure conversions from per-frame model outputs to Label Studio regions, and the Ultralytics calls
that make those outputs (tracking with BoT-SORT or ByteTrack; a classifier over frames). Videos
are predicted, not scored: active learning orders image tasks.

Label Studio numbers video frames from 1. A ``videorectangle`` region is one tracked object: its
``sequence`` holds a keyframe per frame it was seen in (percent of the frame), ``enabled: false``
on the last frame before a gap or the end (Label Studio interpolates between enabled keyframes).
A ``timelinelabels`` region is one run of consecutive frames with the same class. Frames are
numbered at the ``<Video>``'s ``frameRate`` (Label Studio's default 24), whatever the file's rate.

Example:
    >>> from ml_backend.inference.label_config import Target
    >>> t = Target("tl", "video", "video", "timeline", ("walk", "run"), {}, frame_rate=10.0)
    >>> [r["value"] for r in timeline_regions(["walk", "walk", None, "run"], t, iter(["a", "b"]))]
    [{'ranges': [{'start': 1, 'end': 2}], 'timelinelabels': ['walk']}, {'ranges': [{'start': 4, 'end': 4}], 'timelinelabels': ['run']}]
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_backend.inference.images import ImageError
from ml_backend.inference.label_config import Target

TRACKERS = ("botsort", "bytetrack")  # Ultralytics' trackers, as model_tracker names them


@dataclass(frozen=True)
class FrameObjects:
    """The tracked objects of one frame (0-based ``index``), pixels xyxy."""

    index: int
    track_ids: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    boxes_xyxy: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """A decoded video's size, frame rate and frames (those read)."""

    width: int
    height: int
    fps: float
    frames: int


@contextlib.contextmanager
def video_file(data: bytes, suffix: str = ".mp4") -> Iterator[tuple[str, VideoInfo]]:
    """The video's bytes as a temporary file (what Ultralytics reads) and what OpenCV says of it.

    Raises:
        ImageError: OpenCV cannot read it as a video.
    """
    import cv2

    fd, path = tempfile.mkstemp(suffix=suffix, prefix="al-video-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        cap = cv2.VideoCapture(path)
        try:
            ok, frame = cap.read()
            if not cap.isOpened() or not ok or frame is None:
                raise ImageError("the file is not a video OpenCV can read (corrupt, or not a video)")
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            info = VideoInfo(int(frame.shape[1]), int(frame.shape[0]), fps, max(count, 1))
        finally:
            cap.release()
        yield path, info
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def track_regions(
    frames: Sequence[FrameObjects],
    info: VideoInfo,
    target: Target,
    label_map: Mapping[int, str],
    threshold: float,
    ids: Iterator[str],
) -> list[dict]:
    """One ``videorectangle`` region per tracked object whose most frequent class maps to a label.

    Keyframes below ``threshold`` are dropped; the region's score is the mean of its keyframes'.

    Example:
        >>> t = Target("box", "video", "video", "video_rectangle", ("car",), {}, frame_rate=10.0)
        >>> f = [FrameObjects(i, np.array([7]), np.array([0]), np.array([0.9]), np.array([[10., 10., 30., 20.]])) for i in (0, 1, 3)]
        >>> [r] = track_regions(f, VideoInfo(100, 50, 10.0, 4), t, {0: "car"}, 0.5, iter(["t7"]))
        >>> [(k["frame"], k["enabled"], k["x"], k["height"]) for k in r["value"]["sequence"]]
        [(1, True, 10.0, 20.0), (2, False, 10.0, 20.0), (4, False, 10.0, 20.0)]
    """
    seen: dict[int, list[tuple[int, int, float, np.ndarray]]] = {}
    for f in frames:
        for tid, cls, score, box in zip(f.track_ids, f.class_ids, f.scores, f.boxes_xyxy, strict=True):
            if float(score) >= threshold:
                seen.setdefault(int(tid), []).append((f.index, int(cls), float(score), box))
    regions = []
    for _, keyframes in sorted(seen.items()):
        cls = Counter(c for _, c, _, _ in keyframes).most_common(1)[0][0]
        label = label_map.get(cls)
        if label is None:
            continue
        by_frame: dict[int, dict[str, Any]] = {}  # Label Studio's frame -> its keyframe (the first file frame in it)
        for k, (index, _, _, box) in enumerate(keyframes):
            last = k + 1 == len(keyframes) or keyframes[k + 1][0] != index + 1  # the object is not in the next file frame
            frame = ls_frame(index, info.fps, target.frame_rate)
            if frame in by_frame:
                by_frame[frame]["enabled"] = not last
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, x2 = max(0.0, x1) / info.width * 100, min(float(info.width), x2) / info.width * 100
            y1, y2 = max(0.0, y1) / info.height * 100, min(float(info.height), y2) / info.height * 100
            by_frame[frame] = {
                "frame": frame, "enabled": not last, "rotation": 0, "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1,
                "time": index / info.fps,
            }  # fmt: skip
        duration = info.frames / info.fps
        regions.append(
            {
                "id": next(ids),
                "from_name": target.from_name,
                "to_name": target.to_name,
                "type": "videorectangle",
                "origin": "prediction",
                "value": {
                    "framesCount": max(1, round(duration * target.frame_rate)),
                    "duration": duration,
                    "sequence": list(by_frame.values()),
                    "labels": [label],
                },
                "score": float(np.mean([s for _, _, s, _ in keyframes])),
            }
        )
    return regions


def ls_frame(index: int, fps: float, frame_rate: float) -> int:
    """Label Studio's number (from 1, at the ``<Video>``'s ``frame_rate``) of the file's frame ``index`` (from 0, at ``fps``).

    Example:
        >>> ls_frame(0, 30.0, 30.0), ls_frame(29, 30.0, 30.0), ls_frame(30, 30.0, 24.0)
        (1, 30, 25)
    """
    return int(math.floor(index / fps * frame_rate + 1e-6)) + 1


def timeline_regions(frame_labels: Sequence[str | None], target: Target, ids: Iterator[str], fps: float | None = None) -> list[dict]:
    """One ``timelinelabels`` region per run of consecutive frames with the same label (None: no label shown);
    frames numbered as Label Studio numbers them (:func:`ls_frame`; ``fps``: the file's, default the ``<Video>``'s rate)."""
    fps = fps or target.frame_rate
    regions: list[dict] = []
    start = 0
    for i in range(1, len(frame_labels) + 1):
        if i < len(frame_labels) and frame_labels[i] == frame_labels[start]:
            continue
        label = frame_labels[start]
        first = ls_frame(start, fps, target.frame_rate)
        if label is not None:  # up to the frame before the next run's (a slower file's frame spans several)
            regions.append(
                {
                    "id": next(ids),
                    "from_name": target.from_name,
                    "to_name": target.to_name,
                    "type": "timelinelabels",
                    "origin": "prediction",
                    "value": {
                        "ranges": [{"start": first, "end": max(first, ls_frame(i, fps, target.frame_rate) - 1)}],
                        "timelinelabels": [label],
                    },
                }
            )
        start = i
    return regions


def frame_labels(probs: Sequence[np.ndarray], label_map: Mapping[int, str], threshold: float) -> list[str | None]:
    """Each frame's label: its top class that maps to a label, when its probability reaches ``threshold``.

    Example:
        >>> frame_labels([np.array([0.7, 0.3]), np.array([0.4, 0.6]), np.array([0.1, 0.9])], {0: "walk"}, 0.5)
        ['walk', None, None]
    """
    out: list[str | None] = []
    for p in probs:
        order = [int(c) for c in np.argsort(-p, kind="stable") if int(c) in label_map]
        out.append(label_map[order[0]] if order and float(p[order[0]]) >= threshold else None)
    return out


def run_tracker(
    yolo: Any, path: str, tracker: str, conf: float, imgsz: int | None, device: str | None, max_frames: int
) -> list[FrameObjects]:
    """Ultralytics tracking over the video at ``path`` (at most ``max_frames`` frames)."""
    out = []
    stream = yolo.track(
        source=path, stream=True, persist=False, tracker=f"{tracker}.yaml", conf=conf, imgsz=imgsz, device=device, verbose=False
    )
    for i, r in enumerate(stream):
        if i >= max_frames:
            break
        b = r.boxes
        if b is None or b.id is None or not len(b):
            continue
        out.append(
            FrameObjects(
                i,
                b.id.detach().cpu().numpy().astype(int),
                b.cls.detach().cpu().numpy().astype(int),
                b.conf.detach().cpu().numpy().astype(float),
                b.xyxy.detach().cpu().numpy().astype(float),
            )
        )
    return out


def run_classifier(yolo: Any, path: str, imgsz: int | None, device: str | None, max_frames: int) -> list[np.ndarray]:
    """A classifier's class probabilities on each frame of the video at ``path`` (at most ``max_frames``)."""
    out = []
    for i, r in enumerate(yolo.predict(source=path, stream=True, imgsz=imgsz, device=device, verbose=False)):
        if i >= max_frames:
            break
        out.append(r.probs.data.detach().cpu().numpy().astype(float))
    return out
