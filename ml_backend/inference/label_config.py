"""Which part of a Label Studio labeling config this backend fills, and with which labels.

The config is parsed with label-studio-sdk's ``LabelInterface``. A model's task picks the
control it needs: ``detect`` -> ``<RectangleLabels>``, ``segment`` -> ``<PolygonLabels>``
(or boxes when the config only has rectangles), ``classify`` -> ``<Choices>``, ``obb`` ->
``<RectangleLabels>`` with rotation. Model class names map to config labels by the
``predicted_values`` attribute of ``<Label>``, then by exact name, then case-insensitively;
classes that map to no label are dropped, and labels no class maps to are not predicted until the
project's own model learns them (:class:`Coverage`, :mod:`ml_backend.training.heads`).

Example:
    >>> cfg = '''<View><Image name="img" value="$image"/>
    ...   <RectangleLabels name="box" toName="img">
    ...     <Label value="Car" predicted_values="car,truck"/><Label value="person"/>
    ...   </RectangleLabels></View>'''
    >>> target = select_target(cfg, "detect")
    >>> (target.from_name, target.to_name, target.value_key, target.kind)
    ('box', 'img', 'image', 'rectangle')
    >>> build_label_map({0: "person", 1: "car", 2: "truck", 3: "dog"}, target)
    {0: 'person', 1: 'Car', 2: 'Car'}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

# Control tag -> the geometry kind it holds, per model task, in order of preference.
_CONTROLS_FOR_TASK: dict[str, tuple[tuple[str, str], ...]] = {
    "detect": (("RectangleLabels", "rectangle"), ("VideoRectangle", "video_rectangle")),
    "segment": (("PolygonLabels", "polygon"), ("BrushLabels", "brush"), ("RectangleLabels", "rectangle")),
    "obb": (("RectangleLabels", "obb"),),
    "classify": (("Choices", "choices"), ("TimelineLabels", "timeline")),
    "pose": (("KeyPointLabels", "keypoints"),),
}

RESULT_TYPES = {
    "rectangle": "rectanglelabels",
    "obb": "rectanglelabels",
    "polygon": "polygonlabels",
    "choices": "choices",
    "brush": "brushlabels",
    "keypoints": "keypointlabels",
    "video_rectangle": "videorectangle",
    "timeline": "timelinelabels",
}
VIDEO_KINDS = frozenset({"video_rectangle", "timeline"})  # predicted on a <Video>, frame by frame
_VIDEO_CONTROLS = {"VideoRectangle", "TimelineLabels"}

DEFAULT_POINT_THRESHOLD = 0.5  # a keypoint is shown from this confidence on (its model_point_threshold overrides it)


class LabelConfigError(ValueError):
    """The labeling config cannot be served by this model; the message says what to change."""


@dataclass(frozen=True)
class Target:
    """A control this backend writes predictions into."""

    from_name: str
    to_name: str
    value_key: str  # key in task["data"] that holds the image URL
    kind: str  # rectangle | obb | polygon | choices | brush | keypoints | video_rectangle | timeline
    labels: tuple[str, ...]
    predicted_values: Mapping[str, tuple[str, ...]]  # label -> model class names
    score_threshold: float | None = None  # the control's model_score_threshold: shown from this confidence on
    warnings: tuple[str, ...] = ()  # the config's model_* attributes this backend does not apply, and why
    model_path: str | None = None  # the control's own weights (model_path, under MODEL_ROOT); None: the project's model
    label_indexes: Mapping[str, int] = field(default_factory=dict)  # keypoints: label -> the model's keypoint index (model_index)
    parent: Target | None = None  # keypoints: the <RectangleLabels> of the same image that holds each object's box
    point_threshold: float = DEFAULT_POINT_THRESHOLD  # keypoints: shown from this confidence on (model_point_threshold)
    tracker: str = "botsort"  # video_rectangle: Ultralytics' tracker (model_tracker: botsort or bytetrack)
    frame_rate: float = 24.0  # video: the <Video>'s frameRate, which Label Studio numbers frames by (its default 24)
    frame_rate_key: str | None = None  # video: frameRate="$fps" names the task's data field holding it

    @property
    def video(self) -> bool:
        """Predicted on a ``<Video>`` (:data:`VIDEO_KINDS`), not on an image."""
        return self.kind in VIDEO_KINDS

    @property
    def result_type(self) -> str:
        return RESULT_TYPES[self.kind]


@dataclass(frozen=True)
class Plan:
    """Every control a labeling config gets predictions for, and from which model.

    ``primary`` is filled by the project's model (``MODEL_PATH``, then its retrained versions),
    which is trained on that control's labels; ``others`` are filled in the same prediction: the
    project's model fills every other control its task fits (a second image's boxes, a video's
    tracks), a control with ``model_path`` is filled by that model (trained on its own labels).
    """

    primary: Target
    others: tuple[Target, ...] = ()
    unavailable: tuple[tuple[str, str], ...] = ()  # (control, model_path) whose model ``task_of`` could not tell

    @property
    def targets(self) -> tuple[Target, ...]:
        return (self.primary, *self.others)


def select_target(label_config: str, model_task: str) -> Target:
    """Find the control of ``label_config`` that a ``model_task`` model fills first (:attr:`Plan.primary`).

    Raises:
        LabelConfigError: the config is not XML, has no ``<Image>``, or no control that fits.
    """
    return plan_targets(label_config, model_task).primary


def plan_targets(label_config: str, model_task: str, task_of: Callable[[str], str | None] | None = None) -> Plan:
    """Every control of ``label_config`` that gets predictions, the project's model being a ``model_task`` one.

    Args:
        label_config: the project's labeling config.
        model_task: the project's model's Ultralytics task.
        task_of: a control's ``model_path`` -> that model's task (it raises a ``LabelConfigError``
            when the weights cannot be had, or returns None: the control is left out, named in
            :attr:`Plan.unavailable`). None: controls with ``model_path`` are left out of
            :attr:`Plan.others` (what the project's model fills is all that is asked).

    Example:
        >>> cfg = \'\'\'<View><Image name="img" value="$image"/>
        ...   <RectangleLabels name="box" toName="img"><Label value="cat"/></RectangleLabels>
        ...   <Choices name="scene" toName="img" model_path="scenes.pt"><Choice value="indoor"/></Choices></View>\'\'\'
        >>> p = plan_targets(cfg, "detect", task_of=lambda path: "classify")
        >>> [(t.from_name, t.kind, t.model_path) for t in p.targets]
        [('box', 'rectangle', None), ('scene', 'choices', 'scenes.pt')]

    Raises:
        LabelConfigError: as :func:`select_target`; or a ``model_path`` model that cannot fill its control.
    """
    if model_task not in _CONTROLS_FOR_TASK:
        raise LabelConfigError(f"Model task {model_task!r} is not supported; use a detect, segment, obb, classify or pose YOLO model.")
    if not label_config or not label_config.strip():
        raise LabelConfigError("The project has no labeling config.")
    try:
        li = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises several exception types on bad XML
        raise LabelConfigError(f"The labeling config could not be parsed: {exc}") from None

    images = {o.name: o for o in li.objects if o.tag in ("Image", "Video")}
    if not images:
        tags = sorted({o.tag for o in li.objects}) or ["no data tags"]
        raise LabelConfigError(
            f"This backend labels images (and videos): the labeling config needs an <Image> tag (it has {', '.join(tags)})."
        )
    wanted = _CONTROLS_FOR_TASK[model_task]
    controls = [c for c in li.controls if not _is_true(c.attr.get("model_skip"))]

    def target(control: Any, kind: str, model_path: str | None = None, **extra: Any) -> Target:
        # A <VideoRectangle> holds no labels: they are those of the <Labels> on the same video.
        labels = next((o for o in li.controls if o.tag == "Labels" and o.to_name == control.to_name), None)
        return _target(control, images, kind, model_path, labels if control.tag == "VideoRectangle" else None, **extra)

    skipped = [c.name for c in li.controls if _is_true(c.attr.get("model_skip")) and c.tag in dict(wanted)]
    found: tuple[Any, str] | None = next(
        ((c, kind) for tag, kind in wanted for c in controls if c.tag == tag and not _model_path(c) and _image_of(c, images)), None
    )
    if found is None:
        if skipped:
            raise LabelConfigError(
                f'Every control a YOLO {model_task} model can fill has model_skip="true" ({", ".join(skipped)}): '
                "remove it from the one to pre-annotate, or disconnect the model."
            )
        own = [c.name for tag, _ in wanted for c in controls if c.tag == tag and _model_path(c) and _image_of(c, images)]
        if own:
            raise LabelConfigError(
                f"Every control a YOLO {model_task} model can fill names a model of its own (model_path on {', '.join(own)}), "
                "but the project's model (MODEL_PATH, then its versions retrained on the project's labels) must fill one: "
                "remove model_path from that control and set MODEL_PATH to its weights."
            )
        have = sorted({c.tag for c in li.controls}) or ["no controls"]
        on_images = " or ".join(f"<{t}>" for t, _ in wanted if t not in _VIDEO_CONTROLS)
        on_videos = " or ".join(f"<{t}>" for t, _ in wanted if t in _VIDEO_CONTROLS)
        need = f"{on_images} on an <Image>" + (f" (or {on_videos} on a <Video>)" if on_videos else "")
        raise LabelConfigError(
            f"A YOLO {model_task} model needs {need} in the labeling config; it has {', '.join(have)}. "
            "Change the labeling config or MODEL_PATH."
        )
    primary, kind = found
    used = {primary.name}
    parent = None
    if kind == "keypoints":  # each object's box goes to a <RectangleLabels> of the same image, the keypoints' parent
        box = next(
            (
                c
                for c in controls
                if c.tag == "RectangleLabels" and not _model_path(c) and _image_of(c, images) == _image_of(primary, images)
            ),
            None,
        )
        if box is not None:
            parent = target(box, "rectangle")
            used.add(box.name)
    others, unavailable = [], []
    for control in controls:
        if control.name in used or not _image_of(control, images):
            continue
        path = _model_path(control)
        if path is None and control.tag in dict(wanted):  # the project's model fills every control its task fits
            others.append(target(control, dict(wanted)[control.tag]))
        elif path is not None and task_of is not None:
            task = task_of(path)
            if task is None:
                unavailable.append((control.name, path))
                used.add(control.name)
                continue
            fits = [k for t, k in _CONTROLS_FOR_TASK.get(task, ()) if t == control.tag]
            if not fits:
                raise LabelConfigError(
                    f'<{control.tag} name="{control.name}"> has model_path="{path}", a YOLO {task} model, which cannot fill '
                    f"<{control.tag}>: name a {' or '.join(_TASKS_FOR_TAG.get(control.tag, ('supported',)))} model there."
                )
            others.append(target(control, fits[0], path))
        else:
            continue
        used.add(control.name)
    unfilled = tuple(
        f'<{c.tag} name="{c.name}">: not filled; {_UNFILLED.get(c.tag) or _unfilled_reason(c.tag, model_task)}'
        for c in controls
        if c.name not in used and c.tag in _FILLABLE and not (task_of is None and _model_path(c))
    )
    main = target(primary, kind, warnings=_attribute_warnings(li.controls) + unfilled, parent=parent)
    return Plan(main, tuple(others), tuple(unavailable))


def _model_path(control: Any) -> str | None:
    raw = str(control.attr.get("model_path") or "").strip()
    return raw or None


def _image_of(control: Any, images: Mapping[str, Any]) -> str | None:
    """The control's ``<Image>`` (``<Video>`` for the video controls), or None."""
    tag = "Video" if control.tag in _VIDEO_CONTROLS else "Image"
    return next((n for n in control.to_name if n in images and images[n].tag == tag), None)


def _target(
    control: Any, images: Mapping[str, Any], kind: str, model_path: str | None = None, labels_from: Any = None, **extra: Any
) -> Target:
    if kind == "obb" and str(control.attr.get("canRotate", "true")).lower() == "false":
        raise LabelConfigError(
            f'<RectangleLabels name="{control.name}"> has canRotate="false", but an oriented-box (OBB) '
            'model predicts rotated boxes: remove canRotate="false" or serve a detect model.'
        )
    source = labels_from if labels_from is not None else control
    labels = tuple(source.labels)
    if not labels:
        if control.tag == "VideoRectangle":
            raise LabelConfigError(
                f'<VideoRectangle name="{control.name}"> takes its labels from a <Labels toName="{control.to_name[0]}"> '
                "on the same video: add one with a <Label> per class."
            )
        raise LabelConfigError(f'<{control.tag} name="{control.name}"> has no labels: add <Label>/<Choice> values.')
    tracker = str(control.attr.get("model_tracker") or "botsort").strip().lower()
    if control.tag == "VideoRectangle" and tracker not in ("botsort", "bytetrack"):
        raise LabelConfigError(f'<VideoRectangle name="{control.name}"> has model_tracker="{tracker}": use botsort or bytetrack.')
    predicted, indexes = {}, {}
    for value, label_tag in (source.labels_attrs or {}).items():
        raw = label_tag.attr.get("predicted_values") or ""
        names = tuple(x.strip() for x in raw.split(",") if x.strip())
        if names:
            predicted[value] = names
        index = str(label_tag.attr.get("model_index") or "").strip()
        if index:
            if not index.isdigit():
                raise LabelConfigError(
                    f'<Label value="{value}"> of <{control.tag} name="{control.name}"> has model_index="{index}": '
                    "use the keypoint's index in the model's output (0, 1, ...)."
                )
            indexes[value] = int(index)
    image = images[str(_image_of(control, images))]
    point = _threshold(control, "model_point_threshold")
    rate_attr = next((v for k, v in image.attr.items() if str(k).lower() == "framerate"), None) if image.tag == "Video" else None
    rate_key = str(rate_attr).strip()[1:] if str(rate_attr or "").strip().startswith("$") else None  # frameRate="$fps": per task
    try:
        frame_rate = float(rate_attr) if rate_attr not in (None, "") and rate_key is None else 24.0
    except ValueError:
        frame_rate = -1.0
    if not frame_rate > 0:
        raise LabelConfigError(f'<Video name="{image.name}"> has frameRate="{rate_attr}": use the video\'s frames per second, e.g. 25.')
    return Target(
        from_name=control.name,
        to_name=image.name,
        value_key=image.value_name,
        kind=kind,
        labels=labels,
        predicted_values=predicted,
        score_threshold=_threshold(control, "model_score_threshold"),
        model_path=model_path,
        label_indexes=indexes,
        point_threshold=DEFAULT_POINT_THRESHOLD if point is None else point,
        tracker=tracker,
        frame_rate=frame_rate,
        frame_rate_key=rate_key,
        **extra,
    )


# The per-control attributes of Label Studio's own YOLO example backend, and what this backend does with each.
_APPLIED = ("model_score_threshold", "model_skip", "model_path", "model_point_threshold", "model_tracker")
_NOT_YET = {
    "model_obb": "the model's own task decides oriented boxes (an OBB model fills <RectangleLabels> with rotation)",
}

# The model tasks that fill each control (for messages).
_TASKS_FOR_TAG = {
    "RectangleLabels": ("detect", "obb", "segment"),
    "PolygonLabels": ("segment",),
    "BrushLabels": ("segment",),
    "Choices": ("classify",),
    "KeyPointLabels": ("pose",),
    "VideoRectangle": ("detect",),
    "TimelineLabels": ("classify",),
}

# Controls of Label Studio's YOLO example backend that this backend never fills, and why.
_UNFILLED: dict[str, str] = {}
_FILLABLE = {"RectangleLabels", "PolygonLabels", "Choices", "KeyPointLabels", "BrushLabels", *_VIDEO_CONTROLS}


def _unfilled_reason(tag: str, model_task: str) -> str:
    tasks = " or ".join(_TASKS_FOR_TAG.get(tag, ()))
    return f'the project\'s model is a {model_task} model; a {tasks} model fills it: name one in its model_path="..." (under MODEL_ROOT)'


def _is_true(value: object) -> bool:
    return str(value or "").strip().lower() in ("true", "1", "yes")


def _threshold(control: Any, key: str) -> float | None:
    raw = control.attr.get(key)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise LabelConfigError(f'<{control.tag} name="{control.name}"> has {key}="{raw}": use a confidence between 0 and 1, e.g. 0.5.')
    return value


def _attribute_warnings(controls: Iterable[Any]) -> tuple[str, ...]:
    """What the config asks of a model through ``model_*`` attributes that this backend does not apply."""
    out = []
    for control in controls:
        for key in sorted(k for k in control.attr if str(k).startswith("model_")):
            where = f'<{control.tag} name="{control.name}"> {key}'
            if key in _NOT_YET:
                out.append(f"{where}: not applied; {_NOT_YET[key]}")
            elif key not in _APPLIED:
                out.append(f"{where}: unknown, ignored (this backend reads {', '.join(_APPLIED)})")
    return tuple(out)


def build_label_map(model_names: Mapping[int, str], target: Target) -> dict[int, str]:
    """Map model class ids to config labels (explicit, then exact, then case-insensitive).

    Classes that match no label are left out, so their predictions are dropped.
    """
    explicit: dict[str, str] = {}
    for label, names in target.predicted_values.items():
        for name in names:
            explicit.setdefault(name, label)
    exact = {label: label for label in target.labels}
    folded: dict[str, str] = {}
    for label in target.labels:
        folded.setdefault(label.casefold(), label)
    mapping: dict[int, str] = {}
    for cls_id, name in model_names.items():
        found = explicit.get(name) or exact.get(name) or folded.get(str(name).casefold())
        if found is not None:
            mapping[int(cls_id)] = found
    return mapping


@dataclass(frozen=True)
class Coverage:
    """Which labels of a control a model can predict (some class of it maps to the label).

    Example:
        >>> c = coverage({0: "person", 1: "car"}, Target("b", "i", "image", "rectangle", ("person", "fish"), {}))
        >>> c.known, c.missing, c.complete
        (('person',), ('fish',), False)
    """

    labels: tuple[str, ...]
    known: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """The labels no class of the model maps to: nothing of them is pre-annotated yet."""
        return tuple(label for label in self.labels if label not in self.known)

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_json(self) -> dict[str, list[str]]:
        return {"known": list(self.known), "learning": list(self.missing)}

    def plan(self, threshold: int, own_model: bool, proposals: bool = False, order: str = "random") -> str:
        """One sentence for the project's people: what is pre-annotated now and when the rest will be.

        Args:
            threshold: the project's retraining threshold (0: only Label Studio's train button).
            own_model: the project is served a model of its own (trained on its labels).
            proposals: every object the model finds is shown with the project's one label (:func:`proposal_label`).
            order: the queue's order until then (``AL_COLD_START_STRATEGY``).

        Example:
            >>> Coverage(("fish", "person"), ("person",)).plan(50, own_model=False)
            'no model for fish yet: the first one trains after 50 labeled tasks; until then tasks come in random order (person is pre-annotated now)'
        """
        if self.complete:
            return f"the served model predicts every label ({', '.join(self.labels)})"
        when = (
            f"after {threshold} labeled tasks"
            if threshold > 0
            else "when Label Studio's train button is pressed (automatic retraining is off)"
        )
        what = f"it is learned at the next retraining, {when}" if own_model else f"the first one trains {when}"
        queue = "come in random order" if order == "random" else f"are ordered for coverage ({order})"
        text = f"no model for {', '.join(self.missing)} yet: {what}; until then tasks {queue}"
        if proposals:
            text += f", and every object the pretrained model finds is shown as {self.missing[0]} to correct"
        return text + (f" ({', '.join(self.known)} {'is' if len(self.known) == 1 else 'are'} pre-annotated now)" if self.known else "")


def proposal_label(model_names: Mapping[int, str], target: Target, model_task: str) -> str | None:
    """The label every box of the model is shown as, or None (the usual: only classes that map to a label).

    A project with one label that the model does not know (``raccoon`` from COCO weights) is shown
    every object the model finds, whatever its class, as that label: class-agnostic proposals for
    the annotator to correct. Measured on the first 50 images of a new project from COCO-pretrained
    YOLO11n (docs/study.md): a third fewer annotator seconds on one-class raccoon, about none with
    several labels (aquarium, microcontroller boards: a proposal would carry the wrong label), so
    only one-label projects get them.

    Example:
        >>> proposal_label({0: "dog", 1: "cat"}, Target("b", "i", "image", "rectangle", ("raccoon",), {}), "detect")
        'raccoon'
        >>> proposal_label({0: "dog"}, Target("b", "i", "image", "rectangle", ("fish", "shark"), {}), "detect") is None
        True
    """
    if model_task == "classify" or len(target.labels) != 1 or build_label_map(model_names, target):
        return None
    return target.labels[0]


def keypoint_map(kpt_names: Mapping[int, Sequence[str]], n_keypoints: int, target: Target) -> dict[int, str]:
    """Map a pose model's keypoint indexes to a ``<KeyPointLabels>``'s labels: by the label's
    ``model_index``, then by the model's keypoint names (exact, then case-insensitive).

    Example:
        >>> t = Target("kp", "image", "image", "keypoints", ("Nose", "tail", "fin"), {}, label_indexes={"fin": 4})
        >>> keypoint_map({0: ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]}, 5, t)
        {4: 'fin', 0: 'Nose'}
    """
    names = [str(n) for n in next(iter(kpt_names.values()), [])] if kpt_names else []
    exact = {n: i for i, n in reversed(list(enumerate(names)))}
    folded = {n.casefold(): i for i, n in reversed(list(enumerate(names)))}
    out: dict[int, str] = {}
    for label, given in target.label_indexes.items():
        if 0 <= given < n_keypoints:
            out.setdefault(given, label)
    for label in target.labels:
        if label in target.label_indexes:
            continue
        index: int | None = exact.get(label, folded.get(label.casefold()))
        if index is not None and index < n_keypoints:
            out.setdefault(index, label)
    return out


def coverage(model_names: Mapping[int, str], target: Target, keypoints: Mapping[int, str] | None = None) -> Coverage:
    """Which of ``target``'s labels the model with ``model_names`` can predict (for keypoints: ``keypoints``, from :func:`keypoint_map`)."""
    if target.kind == "keypoints":
        known = set((keypoints or {}).values())
        return Coverage(tuple(target.labels), tuple(label for label in target.labels if label in known))
    mapped = set(build_label_map(model_names, target).values())
    return Coverage(tuple(target.labels), tuple(label for label in target.labels if label in mapped))
