"""A model for a project's own labels: which row each class starts from, and the transplant itself
on real (tiny) Ultralytics models of every task, checked tensor by tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml_backend.inference.label_config import Target
from ml_backend.training.heads import NEVER_LOGIT, ClassPlan, HeadError, plan_classes, with_classes, write_with_classes

COCO_LIKE = {0: "person", 1: "bicycle", 2: "car", 7: "truck", 14: "bird"}


def target(labels: tuple[str, ...], predicted: dict | None = None) -> Target:
    return Target("label", "image", "image", "rectangle", labels, predicted or {})


@pytest.mark.parametrize(
    ("labels", "predicted", "kind", "classes", "sources"),
    [
        (("fish", "starfish", "jellyfish"), {}, "detect", ("fish", "starfish", "jellyfish"), (None, None, None)),  # a new project
        (("fish", "Person"), {}, "detect", ("fish", "Person"), (None, 0)),  # a COCO class kept, by name in any case
        (("Vehicle",), {"Vehicle": ("truck", "car")}, "detect", ("Vehicle",), (7,)),  # predicted_values: the first named
        (("car",), {"car": ("truck", "car")}, "detect", ("car",), (2,)),  # the class of the label's own name first
        (("penguin",), {"penguin": ("bird",)}, "detect", ("penguin",), (14,)),  # a new name, a known look
        (("zebra", "bird", "ant"), {}, "classify", ("ant", "bird", "zebra"), (None, 14, None)),  # classifier: alphabetical
        (("fish", "fish", "eel"), {}, "detect", ("fish", "eel"), (None, None)),  # a label twice counts once
    ],
)
def test_plan_classes(labels, predicted, kind, classes, sources) -> None:
    plan = plan_classes(target(labels, predicted), COCO_LIKE, kind)
    assert plan.labels == classes and plan.sources == sources
    assert plan.new == tuple(c for c, s in zip(classes, sources, strict=True) if s is None)
    assert not plan.unchanged


@pytest.mark.parametrize(
    ("names", "labels", "unchanged"),
    [
        ({0: "a", 1: "b"}, ("a", "b"), True),  # the project's own model, labels as trained
        ({0: "a", 1: "b"}, ("b", "a"), False),  # same labels, another order: rows move
        ({0: "a", 1: "b"}, ("a", "b", "c"), False),  # a label added: the head grows
        ({0: "a", 1: "b", 2: "c"}, ("a", "c"), False),  # a label removed: its row goes
    ],
)
def test_a_model_with_exactly_the_labels_needs_no_new_head(names, labels, unchanged) -> None:
    assert plan_classes(target(labels), names, "detect").unchanged is unchanged


def test_the_plan_says_which_classes_start_from_the_starting_model() -> None:
    plan = plan_classes(target(("fish", "Person")), COCO_LIKE, "detect")
    assert plan.to_json() == {"classes": ["fish", "Person"], "new": ["fish"], "from_starting_model": {"Person": "person"}}


def _rows(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    head = model.model[-1]
    layers = [b[-1] for b in head.cv3] if hasattr(head, "cv3") else [head.linear]
    return [(layer.weight.detach().float().clone(), layer.bias.detach().float().clone()) for layer in layers]


@pytest.mark.parametrize("kind", ["detect", "segment", "obb", "classify"])
def test_with_classes_copies_the_rows_of_known_classes_and_silences_or_frees_the_others(tiny_weights, kind) -> None:
    from ultralytics import YOLO

    base = YOLO(str(tiny_weights(kind))).model.float()
    names = dict(base.names)  # circle, square, triangle
    plan = ClassPlan(("blob", "Square", "tri"), (None, 1, 2), tuple(sorted(names.items())))
    before = _rows(base)
    learn = with_classes(base, plan, "learn")
    never = with_classes(base, plan, "never")
    assert learn.names == never.names == {0: "blob", 1: "Square", 2: "tri"}
    for (w, b), (lw, lb), (nw, nb) in zip(before, _rows(learn), _rows(never), strict=True):
        for i, src in enumerate(plan.sources):
            if src is None:
                assert torch.count_nonzero(nw[i]) == 0 and nb[i] == NEVER_LOGIT
                assert torch.count_nonzero(lw[i]) > 0 and lb[i] > NEVER_LOGIT  # a fresh row to learn
            else:
                assert torch.equal(lw[i], w[src]) and torch.equal(nw[i], w[src]) and lb[i] == b[src] == nb[i]
    # every other layer transferred as it was
    old_state, new_state = base.state_dict(), learn.state_dict()
    body = [k for k in old_state if ".cv3." not in k and "linear" not in k]
    assert body and all(torch.equal(old_state[k].float(), new_state[k].float()) for k in body)


def test_a_silenced_class_is_never_predicted_and_the_checkpoint_serves(tiny_weights, tmp_path) -> None:
    from ultralytics import YOLO

    weights = tiny_weights("detect")
    plan = ClassPlan(("fish", "square"), (None, 1), ((0, "circle"), (1, "square"), (2, "triangle")))
    out = write_with_classes(weights, plan, tmp_path / "never.pt", fresh="never")
    model = YOLO(str(out))
    assert model.task == "detect" and dict(model.names) == {0: "fish", 1: "square"}
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(4)]
    classes = {int(c) for r in model.predict(images, conf=0.0001, verbose=False) for c in r.boxes.cls}
    assert classes <= {1}  # "fish" never, whatever the image


def test_open_vocabulary_models_are_refused() -> None:
    class World(torch.nn.Module):
        yaml = {"nc": 80}

        def set_classes(self, names) -> None:  # what YOLO-World and YOLOE models have
            pass

    with pytest.raises(HeadError, match="cannot be given a head"):
        with_classes(World(), ClassPlan(("a",), (None,)), "learn")
