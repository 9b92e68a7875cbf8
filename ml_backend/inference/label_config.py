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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

# Control tag -> the geometry kind it holds, per model task, in order of preference.
_CONTROLS_FOR_TASK: dict[str, tuple[tuple[str, str], ...]] = {
    "detect": (("RectangleLabels", "rectangle"),),
    "segment": (("PolygonLabels", "polygon"), ("RectangleLabels", "rectangle")),
    "obb": (("RectangleLabels", "obb"),),
    "classify": (("Choices", "choices"),),
}

RESULT_TYPES = {"rectangle": "rectanglelabels", "obb": "rectanglelabels", "polygon": "polygonlabels", "choices": "choices"}


class LabelConfigError(ValueError):
    """The labeling config cannot be served by this model; the message says what to change."""


@dataclass(frozen=True)
class Target:
    """The control this backend writes predictions into."""

    from_name: str
    to_name: str
    value_key: str  # key in task["data"] that holds the image URL
    kind: str  # rectangle | obb | polygon | choices
    labels: tuple[str, ...]
    predicted_values: Mapping[str, tuple[str, ...]]  # label -> model class names
    score_threshold: float | None = None  # the control's model_score_threshold: shown from this confidence on
    warnings: tuple[str, ...] = ()  # the config's model_* attributes this backend does not apply, and why

    @property
    def result_type(self) -> str:
        return RESULT_TYPES[self.kind]


def select_target(label_config: str, model_task: str) -> Target:
    """Find the control of ``label_config`` that a ``model_task`` model can fill.

    Raises:
        LabelConfigError: the config is not XML, has no ``<Image>``, or no control that fits.
    """
    if model_task not in _CONTROLS_FOR_TASK:
        raise LabelConfigError(f"Model task {model_task!r} is not supported; use a detect, segment, obb or classify YOLO model.")
    if not label_config or not label_config.strip():
        raise LabelConfigError("The project has no labeling config.")
    try:
        li = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises several exception types on bad XML
        raise LabelConfigError(f"The labeling config could not be parsed: {exc}") from None

    images = {o.name: o for o in li.objects if o.tag == "Image"}
    if not images:
        found = sorted({o.tag for o in li.objects}) or ["no data tags"]
        raise LabelConfigError(f"This backend labels images: the labeling config needs an <Image> tag (it has {', '.join(found)}).")
    wanted = _CONTROLS_FOR_TASK[model_task]
    warnings = _attribute_warnings(li.controls)
    skipped = []
    for tag, kind in wanted:
        for control in li.controls:
            if control.tag != tag:
                continue
            if _is_true(control.attr.get("model_skip")):
                skipped.append(control.name)
                continue
            to = [n for n in control.to_name if n in images]
            if not to:
                continue
            if kind == "obb" and str(control.attr.get("canRotate", "true")).lower() == "false":
                raise LabelConfigError(
                    f'<RectangleLabels name="{control.name}"> has canRotate="false", but an oriented-box (OBB) '
                    'model predicts rotated boxes: remove canRotate="false" or serve a detect model.'
                )
            labels = tuple(control.labels)
            if not labels:
                raise LabelConfigError(f'<{tag} name="{control.name}"> has no labels: add <Label>/<Choice> values.')
            predicted = {}
            for value, label_tag in (control.labels_attrs or {}).items():
                raw = label_tag.attr.get("predicted_values") or ""
                names = tuple(x.strip() for x in raw.split(",") if x.strip())
                if names:
                    predicted[value] = names
            image = images[to[0]]
            unfilled = tuple(
                f'<{c.tag} name="{c.name}">: not filled; {_UNFILLED.get(c.tag, "one control is filled, the first the model fits (model_skip on the others picks it)")}'
                for c in li.controls
                if c is not control and c.tag in _FILLABLE and not _is_true(c.attr.get("model_skip"))
            )
            return Target(
                from_name=control.name,
                to_name=image.name,
                value_key=image.value_name,
                kind=kind,
                labels=labels,
                predicted_values=predicted,
                score_threshold=_score_threshold(control),
                warnings=warnings + unfilled,
            )
    if skipped:
        raise LabelConfigError(
            f'Every control a YOLO {model_task} model can fill has model_skip="true" ({", ".join(skipped)}): '
            "remove it from the one to pre-annotate, or disconnect the model."
        )
    have = sorted({c.tag for c in li.controls}) or ["no controls"]
    need = " or ".join(f"<{t}>" for t, _ in wanted)
    raise LabelConfigError(
        f"A YOLO {model_task} model needs {need} on an <Image> in the labeling config; it has {', '.join(have)}. "
        "Change the labeling config or MODEL_PATH."
    )


# The per-control attributes of Label Studio's own YOLO example backend, and what this backend does with each.
_APPLIED = ("model_score_threshold", "model_skip")
_NOT_YET = {
    "model_path": "a model per control is not supported yet: the project's served model (MODEL_PATH, then its retrained "
    "versions) fills this control",
    "model_obb": "the served model's own task decides oriented boxes (an OBB model fills <RectangleLabels> with rotation)",
}


# Controls a model of Label Studio's YOLO example backend fills; the ones this backend never fills, and why.
_UNFILLED = {
    "KeyPointLabels": "keypoints (pose models) are not supported yet",
    "BrushLabels": "brush masks are not supported yet (a segment model fills <PolygonLabels>)",
    "VideoRectangle": "video is not supported yet",
    "TimelineLabels": "video is not supported yet",
}
_FILLABLE = {"RectangleLabels", "PolygonLabels", "Choices", *_UNFILLED}


def _is_true(value: object) -> bool:
    return str(value or "").strip().lower() in ("true", "1", "yes")


def _score_threshold(control: Any) -> float | None:
    raw = control.attr.get("model_score_threshold")
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise LabelConfigError(
            f'<{control.tag} name="{control.name}"> has model_score_threshold="{raw}": use a confidence between 0 and 1, e.g. 0.5.'
        )
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


def coverage(model_names: Mapping[int, str], target: Target) -> Coverage:
    """Which of ``target``'s labels the model with ``model_names`` can predict."""
    mapped = set(build_label_map(model_names, target).values())
    return Coverage(tuple(target.labels), tuple(label for label in target.labels if label in mapped))
