"""A model for a project's own label set: the starting weights with a head for the project's classes.

Most projects label classes the starting weights (COCO-pretrained YOLO) do not know. Their first
retraining therefore builds a model whose classes are exactly the project's labels: every layer
of the starting model is transferred (Ultralytics' own ``load``), and each class's row of the
class-logit layers starts from the starting model's class that maps to the label (by
``predicted_values``, then name, then name in any case: :func:`ml_backend.inference.label_config.build_label_map`),
so what COCO knows of ``person`` is kept; a label no class maps to starts fresh. Later runs
start from the project's own model: a label added to the config gets a fresh row, the learned
classes keep theirs, a label removed from the config loses its row.

The same transplant with ``fresh="never"`` expresses the starting model in the project's classes
(a label it does not know is never predicted): the model a new one is judged against.

Example:
    >>> from ml_backend.inference.label_config import Target
    >>> target = Target("label", "image", "image", "rectangle", ("fish", "Person"), {})
    >>> plan = plan_classes(target, {0: "person", 1: "car"}, "detect")
    >>> plan.labels, plan.sources, plan.new
    (('fish', 'Person'), (None, 0), ('fish',))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_backend.inference.label_config import Target, build_label_map

log = logging.getLogger(__name__)

NEVER_LOGIT = -100.0  # a class-logit bias no image overcomes: the class is never predicted


class HeadError(ValueError):
    """These weights cannot be given a head for the project's classes; the message says why."""


@dataclass(frozen=True)
class ClassPlan:
    """The classes of a project's model and where each class's head row comes from.

    Attributes:
        labels: the model's classes, by class id: the control's labels (sorted for a classifier,
            whose class ids Ultralytics takes from the alphabetical order of its folders).
        sources: per class, the starting model's class id whose row it starts from (None: a
            fresh row).
        starting: the starting model's classes.
    """

    labels: tuple[str, ...]
    sources: tuple[int | None, ...]
    starting: tuple[tuple[int, str], ...] = ()

    @property
    def names(self) -> dict[int, str]:
        """Class id -> name, as Ultralytics holds them."""
        return dict(enumerate(self.labels))

    @property
    def new(self) -> tuple[str, ...]:
        """The labels the starting model has no class for (learned from the project's labels alone)."""
        return tuple(label for label, src in zip(self.labels, self.sources, strict=True) if src is None)

    @property
    def known(self) -> tuple[str, ...]:
        """The labels whose rows start from a class of the starting model."""
        return tuple(label for label, src in zip(self.labels, self.sources, strict=True) if src is not None)

    @property
    def unchanged(self) -> bool:
        """The starting model already has exactly these classes, in this order: no new head."""
        return dict(self.starting) == self.names and self.sources == tuple(range(len(self.labels)))

    def to_json(self) -> dict[str, Any]:
        names = dict(self.starting)
        return {
            "classes": list(self.labels),
            "new": list(self.new),
            "from_starting_model": {lab: names[s] for lab, s in zip(self.labels, self.sources, strict=True) if s is not None},
        }


def plan_classes(target: Target, model_names: Mapping[int, str], kind: str) -> ClassPlan:
    """The classes a project's model should have for ``target`` and the starting row of each.

    A label that several classes map to (``predicted_values="car,truck"``) starts from the class
    of the same name if there is one, else from the first one named.

    Example:
        >>> t = Target("box", "img", "image", "rectangle", ("Car", "fish"), {"Car": ("car", "truck")})
        >>> plan_classes(t, {2: "car", 7: "truck"}, "detect").sources
        (2, None)
    """
    labels = tuple(dict.fromkeys(sorted(target.labels) if kind == "classify" else target.labels))
    mapped = build_label_map(model_names, target)  # class id -> label
    name_of = {int(k): str(v) for k, v in model_names.items()}
    sources: list[int | None] = []
    for label in labels:
        ids = [cid for cid, lab in mapped.items() if lab == label]
        if not ids:
            sources.append(None)
            continue
        named = list(target.predicted_values.get(label, ()))
        exact = [cid for cid in ids if name_of[cid] == label]
        order = exact or sorted(ids, key=lambda cid: (named.index(name_of[cid]) if name_of[cid] in named else len(named), cid))
        sources.append(order[0])
    return ClassPlan(labels, tuple(sources), tuple(sorted(name_of.items())))


def _class_layers(model: Any) -> list[Any]:
    """The layers whose output rows are the classes: each class-logit conv of a detection head
    (both branches of an end-to-end head), or a classifier's final linear layer."""
    head = model.model[-1]
    layers = []
    for attr in ("cv3", "one2one_cv3"):
        for branch in getattr(head, attr, None) or ():
            layers.append(branch[-1])
    if not layers and hasattr(head, "linear"):
        layers.append(head.linear)
    return layers


def with_classes(model: Any, plan: ClassPlan, fresh: str = "learn") -> Any:
    """A copy of an Ultralytics model (``DetectionModel``, ``SegmentationModel``, ``OBBModel``,
    ``ClassificationModel``) with one output per class of ``plan``.

    Every layer is transferred; class rows are copied from their sources. A class without a
    source gets Ultralytics' fresh initialisation (``fresh="learn"``: it is to be trained) or is
    silenced (``fresh="never"``: zero weights and a bias of -100, so the model never predicts it).

    Raises:
        HeadError: the model has no class-logit layer this knows (open-vocabulary models, say).
    """
    import torch

    if fresh not in ("learn", "never"):
        raise ValueError(f"fresh must be 'learn' or 'never', not {fresh!r}")
    if hasattr(model, "set_classes") or not isinstance(getattr(model, "yaml", None), dict):
        raise HeadError(
            f"{type(model).__name__} models cannot be given a head for new classes here: serve a YOLO detect, segment, obb or classify model"
        )
    old_layers = _class_layers(model)
    if not old_layers:
        raise HeadError(f"no class-logit layer found in {type(model).__name__}'s head")
    cfg = deepcopy(model.yaml)
    nc = len(plan.labels)
    cfg["nc"] = nc
    new = type(model)(cfg=cfg, nc=nc, verbose=False)
    new.names = plan.names
    new.load(model, verbose=False)  # every layer that fits; rebuilds the class branch at the source's width
    new_layers = _class_layers(new)
    if len(new_layers) != len(old_layers):
        raise HeadError("the new head does not have the starting model's shape")
    with torch.no_grad():
        for old, dst in zip(old_layers, new_layers, strict=True):
            if old.weight.shape[1:] != dst.weight.shape[1:]:
                log.warning("class rows not transferred: %s has inputs of another width (%s)", dst, tuple(old.weight.shape))
                continue
            for i, src in enumerate(plan.sources):
                if src is not None:
                    dst.weight[i] = old.weight[src].to(dst.weight.dtype)
                    dst.bias[i] = old.bias[src].to(dst.bias.dtype)
                elif fresh == "never":
                    dst.weight[i] = 0.0
                    dst.bias[i] = NEVER_LOGIT
    new.args = getattr(model, "args", {})
    return new.eval()


def write_with_classes(weights: str | Path, plan: ClassPlan, out: str | Path, fresh: str = "learn") -> Path:
    """:func:`with_classes` of the checkpoint ``weights``, saved as an Ultralytics checkpoint at ``out``
    (its training arguments kept, so it is served and trained at the same size).

    Raises:
        HeadError: as :func:`with_classes`.
    """
    import torch

    ckpt = torch.load(str(weights), map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt.get("model")
    if model is None:
        raise HeadError(f"{weights} holds no model")
    new = with_classes(model.float(), plan, fresh)
    keep = {k: v for k, v in ckpt.items() if k in ("date", "version", "license", "docs", "train_args")}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**keep, "epoch": -1, "best_fitness": None, "model": new.half(), "ema": None, "updates": None, "optimizer": None}, out)
    return out
