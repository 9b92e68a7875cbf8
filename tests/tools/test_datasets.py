"""Dataset readers: the same images and boxes written as VOC, YOLO and COCO read back the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml_backend.inference.label_config import select_target
from ml_backend.tools.datasets import DatasetError, box_label_config, load_dataset, ls_regions
from ml_backend.tools.synthetic import CLASS_NAMES, make_image
from ml_backend.training.dataset import region_to_line

W, H = 96, 64


def _truth(n: int = 4) -> list[tuple[str, list[tuple[int, tuple[float, float, float, float]]], object]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        s = make_image(rng, W, H)
        out.append((f"img_{i}.jpg", [(sh.cls, tuple(round(v) for v in sh.xyxy)) for sh in s.shapes], s.image))
    out.append(("empty.jpg", [], make_image(rng, W, H).image))  # a background image: no objects
    return out


def write_voc(root: Path, truth: list) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for name, objs, img in truth:
        img.save(root / "JPEGImages" / name)
        xml = "".join(
            f"<object><name>{CLASS_NAMES[c]}</name><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for c, (x1, y1, x2, y2) in objs
        )
        (root / "Annotations" / (Path(name).stem + ".xml")).write_text(
            f"<annotation><filename>{name}</filename><size><width>{W}</width><height>{H}</height></size>{xml}</annotation>"
        )
    return root


def write_yolo(root: Path, truth: list) -> Path:
    for split, part in (("train", truth[:3]), ("val", truth[3:])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name, objs, img in part:
            img.save(root / "images" / split / name)
            lines = [f"{c} {(x1 + x2) / 2 / W} {(y1 + y2) / 2 / H} {(x2 - x1) / W} {(y2 - y1) / H}" for c, (x1, y1, x2, y2) in objs]
            (root / "labels" / split / (Path(name).stem + ".txt")).write_text("\n".join(lines))
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASS_NAMES))
    )
    return root


def write_coco(root: Path, truth: list) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i, (name, objs, img) in enumerate(truth):
        img.save(root / "images" / name)
        images.append({"id": 100 + i, "file_name": name, "width": W, "height": H})
        for c, (x1, y1, x2, y2) in objs:
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 10 + c, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    anns.append({"id": 999, "image_id": 100, "category_id": 10, "bbox": [0, 0, 5, 5], "iscrowd": 1})  # crowd: left out
    cats = [{"id": 10 + i, "name": n} for i, n in enumerate(CLASS_NAMES)]
    (root / "annotations" / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


WRITERS = {"voc": write_voc, "yolo": write_yolo, "coco": write_coco}


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco"])
def test_every_format_reads_back_the_same_boxes(tmp_path: Path, fmt: str) -> None:
    truth = _truth()
    ds = load_dataset(WRITERS[fmt](tmp_path / fmt, truth), fmt)
    got = {it.path.name: it for it in ds.items}
    assert set(got) == {name for name, _, _ in truth}
    for name, objs, _ in truth:
        it = got[name]
        assert (it.width, it.height) == (W, H)
        want = sorted((CLASS_NAMES[c], box) for c, box in objs)
        have = sorted((ds.names[int(c)], tuple(b)) for c, b in zip(it.classes, it.boxes))
        assert [n for n, _ in have] == [n for n, _ in want]
        np.testing.assert_allclose([b for _, b in have] or np.zeros((0, 4)), [b for _, b in want] or np.zeros((0, 4)), atol=1e-6)


def test_voc_names_are_the_sorted_labels_and_counts_add_up(tmp_path: Path) -> None:
    truth = _truth()
    ds = load_dataset(write_voc(tmp_path / "v", truth), "voc")
    present = sorted({CLASS_NAMES[c] for _, objs, _ in truth for c, _ in objs})
    assert list(ds.names.values()) == present
    assert sum(ds.object_counts().values()) == sum(len(objs) for _, objs, _ in truth)


def _break_voc_box(root: Path) -> None:
    xml = root / "Annotations" / "img_0.xml"
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9999", 1))


def _remove_voc_image(root: Path) -> None:
    (root / "JPEGImages" / "img_1.jpg").unlink()


def _bad_yolo_class(root: Path) -> None:
    (root / "labels" / "train" / "img_0.txt").write_text("7 0.5 0.5 0.1 0.1\n")


def _yolo_garbage(root: Path) -> None:
    (root / "labels" / "train" / "img_0.txt").write_text("0 a b c d\n")


def _second_yolo_yaml(root: Path) -> None:
    for name in list(root.glob("*.yaml")):
        name.rename(root / "mine.yaml")
    (root / "other.yaml").write_text("names: [a]\n")


def _second_coco_json(root: Path) -> None:
    (root / "annotations" / "other.json").write_text("{}")


def _coco_unknown_category(root: Path) -> None:
    p = root / "annotations" / "instances.json"
    d = json.loads(p.read_text())
    d["annotations"][0]["category_id"] = 77
    p.write_text(json.dumps(d))


@pytest.mark.parametrize(
    ("fmt", "damage", "message"),
    [
        ("voc", _break_voc_box, "outside the 96x64 image"),
        ("voc", _remove_voc_image, "is not in"),
        ("yolo", _bad_yolo_class, "class 7 is not in names"),
        ("yolo", _yolo_garbage, "not numbers"),
        ("yolo", _second_yolo_yaml, "several .yaml files"),
        ("coco", _second_coco_json, "several .json files"),
        ("coco", _coco_unknown_category, "category 77"),
    ],
)
def test_broken_datasets_say_which_file_and_what_is_wrong(tmp_path: Path, fmt: str, damage, message: str) -> None:
    root = WRITERS[fmt](tmp_path / fmt, _truth())
    damage(root)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root, fmt)


def test_a_box_of_no_area_is_left_out_not_fatal(tmp_path: Path) -> None:
    """Real exports hold the odd zero-size box (aquarium has two); it marks no object."""
    root = write_yolo(tmp_path / "yolo", _truth())
    label = next((root / "labels").rglob("*.txt"))
    before = sum(len(i.boxes) for i in load_dataset(root, "yolo").items)
    label.write_text(label.read_text() + "0 0.5 0.5 0.0 0.0\n")
    assert sum(len(i.boxes) for i in load_dataset(root, "yolo").items) == before


def test_a_yolo_folder_with_an_exporters_extra_yaml_reads_data_yaml(tmp_path: Path) -> None:
    """Roboflow exports keep their own yaml beside data.yaml (as the aquarium set does)."""
    root = write_yolo(tmp_path / "yolo", _truth())
    (root / "data.roboflow.yaml").write_text("train: ../elsewhere/images\nnames: [x]\n")
    assert len(load_dataset(root, "yolo").items) == len(_truth())


@pytest.mark.parametrize(
    ("path", "fmt", "message"), [("missing", "voc", "does not exist"), (".", "pascal", "unknown format"), (".", "voc", "needs Annotations")]
)
def test_wrong_path_or_format(tmp_path: Path, path: str, fmt: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / path, fmt)


def test_regions_convert_back_to_the_same_yolo_line_the_server_trains_on(tmp_path: Path) -> None:
    ds = load_dataset(write_voc(tmp_path / "v", _truth()), "voc")
    it = next(i for i in ds.items if len(i.boxes))
    ids = {n: i for i, n in ds.names.items()}
    for region, box, c in zip(ls_regions(it, ds.names), it.boxes, it.classes):
        x1, y1, x2, y2 = box
        cls, cx, cy, w, h = region_to_line(region, ids, "detect").split()
        assert int(cls) == int(c)
        np.testing.assert_allclose(
            [float(cx), float(cy), float(w), float(h)], [(x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H], atol=1e-5
        )


def test_label_config_escapes_odd_class_names() -> None:
    names = {0: 'a "quoted" & <odd> name', 1: "plain"}
    target = select_target(box_label_config(names), "detect")
    assert set(target.labels) == set(names.values())
