"""Labeled detection datasets on disk (Pascal VOC, YOLO, COCO) -> images with ground-truth boxes.

Used by the label-savings simulation (the ground truth plays the annotator) and by
``pretrain``. Each reader returns the same :class:`Dataset`: class names and, per image, its
path, size and boxes in pixels. Layouts:

* ``voc``: ``Annotations/*.xml`` + ``JPEGImages/``, or ``annotations/*.xml`` + ``images/``
  (the image is found by the XML's ``<filename>``, else by the XML's stem);
* ``yolo``: an Ultralytics dataset: a ``*.yaml`` with ``names`` and image folders (``train``,
  ``val``, ``test``), labels in the parallel ``labels/`` folders (``cls cx cy w h``, or a
  polygon, whose bounds are taken);
* ``coco``: a COCO instances JSON (``annotations/*.json`` or ``*.json`` in the folder, or the
  file itself); ``file_name`` is looked up under ``images/`` and next to the JSON. Crowd
  annotations are left out.

Every image found is kept, also one without objects (a background image). Problems that would
silently change the study (a box outside the image, a label file for no image, an unknown class
id) raise :class:`DatasetError` naming the file.

Example:
    >>> ds = Dataset(names={0: "cat"}, items=[Item(Path("a.jpg"), 100, 50, np.array([[10, 10, 60, 40]]), np.array([0]))])
    >>> ls_regions(ds.items[0], ds.names)[0]["value"]["rectanglelabels"]
    ['cat']
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
FORMATS = ("voc", "yolo", "coco")


class DatasetError(ValueError):
    """The dataset cannot be read as asked; the message names the file and what to fix."""


@dataclass(frozen=True)
class Item:
    """One image and its ground truth.

    Attributes:
        path: the image file.
        width, height: its size in pixels.
        boxes: (n, 4) ``x1 y1 x2 y2`` in pixels.
        classes: (n,) class ids.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class Dataset:
    names: dict[int, str]
    items: list[Item]

    def object_counts(self, indices: Any = None) -> dict[str, int]:
        """Objects per class name (over ``indices`` of ``items``, default all)."""
        idx = range(len(self.items)) if indices is None else indices
        counts = {n: 0 for n in self.names.values()}
        for i in idx:
            for c in self.items[i].classes:
                counts[self.names[int(c)]] += 1
        return counts


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from None


def _boxes(rows: list[list[float]], classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=int)


def _check_box(box: list[float], w: int, h: int, where: str) -> list[float] | None:
    """The box clipped to the image; None (and a warning) for a box of no area, which marks no object.

    Raises:
        DatasetError: the box lies outside the image.
    """
    x1, y1, x2, y2 = box
    tol = 2.0  # VOC is 1-based and some tools write w or h + 1
    if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol or x1 > w or y1 > h or x2 < 0 or y2 < 0:
        raise DatasetError(f"{where}: box {box} is outside the {w}x{h} image; fix or remove it")
    if x2 <= x1 or y2 <= y1:
        log.warning("%s: box %s has no area, left out", where, box)
        return None
    return [max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)]


def _kept(pairs: list[tuple[list[float] | None, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and classes of the boxes that have an area."""
    kept = [(box, c) for box, c in pairs if box is not None]
    return _boxes([b for b, _ in kept], [c for _, c in kept])


def read_voc(root: Path) -> Dataset:
    for ann_dir, img_dir in (("Annotations", "JPEGImages"), ("annotations", "images")):  # noqa: B007 - used after the loop
        if (root / ann_dir).is_dir():
            break
    else:
        raise DatasetError(f"{root}: a VOC dataset needs Annotations/ + JPEGImages/ or annotations/ + images/")
    xmls = sorted((root / ann_dir).glob("*.xml"))
    if not xmls:
        raise DatasetError(f"{root / ann_dir}: no .xml annotation files")
    parsed = []
    for xml in xmls:
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise DatasetError(f"{xml}: not valid XML ({exc})") from None
        fname = (tree.findtext("filename") or "").strip()
        candidates = [root / img_dir / fname] if fname else []
        candidates += [root / img_dir / (xml.stem + s) for s in IMAGE_SUFFIXES]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DatasetError(f"{xml}: its image {fname or xml.stem} is not in {root / img_dir}")
        objs = []
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if not name or bb is None:
                raise DatasetError(f"{xml}: an <object> without <name> or <bndbox>")
            try:
                box = [float(bb.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                raise DatasetError(f"{xml}: a <bndbox> without numeric xmin, ymin, xmax, ymax") from None
            objs.append((name, box))
        parsed.append((xml, path, objs))
    names = sorted({n for _, _, objs in parsed for n, _ in objs})
    ids = {n: i for i, n in enumerate(names)}
    items = []
    for xml, path, objs in parsed:
        w, h = _image_size(path)
        items.append(Item(path, w, h, *_kept([(_check_box([b[0] - 1, b[1] - 1, b[2], b[3]], w, h, str(xml)), ids[n]) for n, b in objs])))
    return Dataset(dict(enumerate(names)), items)


def _yaml_names(raw: Any, where: Path) -> dict[int, str]:
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {i: str(v) for i, v in enumerate(raw)}
    raise DatasetError(f"{where}: 'names' must be a list or a mapping of class id -> name")


def read_yolo(root: Path) -> Dataset:
    import yaml

    if root.is_file():
        cfg_path = root
    else:
        found = sorted(p for p in root.glob("*.yaml") if p.is_file()) + sorted(p for p in root.glob("*.yml") if p.is_file())
        if not found:
            raise DatasetError(f"{root}: a YOLO dataset needs a data .yaml (with names and train/val image folders)")
        preferred = [p for p in found if p.name in ("data.yaml", "data.yml")]
        if len(found) > 1 and not preferred:
            raise DatasetError(f"{root}: several .yaml files ({', '.join(p.name for p in found)}); pass --data the one to use")
        cfg_path = (preferred or found)[0]
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    if "names" not in cfg:
        raise DatasetError(f"{cfg_path}: no 'names'")
    names = _yaml_names(cfg["names"], cfg_path)
    base = Path(cfg["path"]) if cfg.get("path") else Path(".")
    if not base.is_absolute():  # relative to the yaml's folder, as Ultralytics reads it
        base = (cfg_path.parent / base).resolve()
    images: list[Path] = []
    for split in ("train", "val", "test"):
        for entry in [cfg[split]] if isinstance(cfg.get(split), str) else cfg.get(split) or []:
            p = (base / entry) if not Path(entry).is_absolute() else Path(entry)
            if p.is_dir():
                images += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
            elif p.suffix == ".txt" and p.is_file():  # a list of image paths
                images += [(base / line.strip()) for line in p.read_text().splitlines() if line.strip()]
            else:
                raise DatasetError(f"{cfg_path}: {split} folder {p} does not exist")
    if not images:
        raise DatasetError(f"{cfg_path}: no images under its train/val/test folders")
    items = []
    for img in dict.fromkeys(images):
        parts = list(img.parts)
        if "images" not in parts:
            raise DatasetError(f"{img}: YOLO images must sit under an 'images' folder (labels under the parallel 'labels' folder)")
        k = len(parts) - 1 - parts[::-1].index("images")
        label = Path(*parts[:k], "labels", *parts[k + 1 :]).with_suffix(".txt")
        w, h = _image_size(img)
        pairs: list[tuple[list[float] | None, int]] = []
        if label.is_file():
            for n, line in enumerate(label.read_text().splitlines(), 1):
                vals = line.split()
                if not vals:
                    continue
                try:
                    cls, coords = int(vals[0]), [float(v) for v in vals[1:]]
                except ValueError:
                    raise DatasetError(f"{label}:{n}: not numbers: {line!r}") from None
                if cls not in names:
                    raise DatasetError(f"{label}:{n}: class {cls} is not in names {names}")
                if len(coords) == 4:
                    cx, cy, bw, bh = coords
                    box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
                elif len(coords) >= 6 and len(coords) % 2 == 0:
                    xs, ys = coords[0::2], coords[1::2]
                    box = [min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h]
                else:
                    raise DatasetError(f"{label}:{n}: expected 'cls cx cy w h' or a polygon, got {line!r}")
                pairs.append((_check_box(box, w, h, f"{label}:{n}"), cls))
        items.append(Item(img, w, h, *_kept(pairs)))
    return Dataset(names, items)


def read_coco(root: Path) -> Dataset:
    if root.is_file():
        ann = root
        base = root.parent.parent if root.parent.name == "annotations" else root.parent
    else:
        found = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
        found = found or sorted(root.glob("*.json"))
        if not found:
            raise DatasetError(f"{root}: a COCO dataset needs an instances .json (in annotations/ or the folder itself)")
        if len(found) > 1:
            raise DatasetError(f"{root}: several .json files ({', '.join(p.name for p in found)}); pass --data the one to use")
        ann, base = found[0], root
    try:
        coco = json.loads(ann.read_text())
        cats = sorted(coco["categories"], key=lambda c: int(c["id"]))
        images = coco["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{ann}: not a COCO instances file ({type(exc).__name__}: {exc})") from None
    cat_to_cls = {int(c["id"]): i for i, c in enumerate(cats)}
    per_image: dict[int, list[dict]] = {}
    for a in coco.get("annotations") or []:
        if not a.get("iscrowd"):
            per_image.setdefault(int(a["image_id"]), []).append(a)
    items = []
    for im in sorted(images, key=lambda im: str(im["file_name"])):
        fname = str(im["file_name"])
        path = next((p for p in (base / "images" / fname, base / fname, ann.parent / fname) if p.is_file()), None)
        if path is None:
            raise DatasetError(f"{ann}: image {fname} is in neither {base / 'images'} nor {base}")
        w, h = int(im.get("width") or 0), int(im.get("height") or 0)
        if not (w and h):
            w, h = _image_size(path)
        pairs: list[tuple[list[float] | None, int]] = []
        for a in per_image.get(int(im["id"]), []):
            if int(a["category_id"]) not in cat_to_cls:
                raise DatasetError(f"{ann}: annotation {a.get('id')} has category {a['category_id']}, which is not in 'categories'")
            x, y, bw, bh = (float(v) for v in a["bbox"])
            pairs.append((_check_box([x, y, x + bw, y + bh], w, h, f"{ann} (annotation {a.get('id')})"), cat_to_cls[int(a["category_id"])]))
        items.append(Item(path, w, h, *_kept(pairs)))
    return Dataset({i: str(c["name"]) for i, c in enumerate(cats)}, items)


def load_dataset(path: str | Path, fmt: str) -> Dataset:
    """Read a detection dataset.

    Args:
        path: the dataset folder (or, for yolo and coco, the yaml or json file).
        fmt: ``voc``, ``yolo`` or ``coco``.

    Raises:
        DatasetError: unknown format, missing files, or labels that do not fit the images.
    """
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root} does not exist")
    readers = {"voc": read_voc, "yolo": read_yolo, "coco": read_coco}
    if fmt not in readers:
        raise DatasetError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ds = readers[fmt](root)
    if not ds.items:
        raise DatasetError(f"{root}: no images")
    if not ds.names:
        raise DatasetError(f"{root}: no classes (no labeled objects)")
    return ds


def ls_regions(item: Item, names: dict[int, str], from_name: str = "label", to_name: str = "image") -> list[dict]:
    """An item's boxes as a Label Studio ``rectanglelabels`` result (percent coordinates)."""
    out = []
    for (x1, y1, x2, y2), c in zip(item.boxes, item.classes):
        out.append(
            {
                "from_name": from_name,
                "to_name": to_name,
                "type": "rectanglelabels",
                "original_width": item.width,
                "original_height": item.height,
                "image_rotation": 0,
                "value": {
                    "x": 100 * x1 / item.width,
                    "y": 100 * y1 / item.height,
                    "width": 100 * (x2 - x1) / item.width,
                    "height": 100 * (y2 - y1) / item.height,
                    "rotation": 0,
                    "rectanglelabels": [names[int(c)]],
                },
            }
        )
    return out


def as_task(ds: Dataset, i: int, labeled: bool = True) -> dict:
    """Image ``i`` as a Label Studio task (id ``i + 1``); labeled ones carry the ground truth as their annotation."""
    task: dict[str, Any] = {"id": int(i) + 1, "data": {"image": str(ds.items[i].path)}, "annotations": []}
    if labeled:
        task["annotations"] = [{"id": int(i) + 1, "result": ls_regions(ds.items[i], ds.names), "was_cancelled": False}]
    return task


def load_local_image(path: str | Path) -> np.ndarray:
    """A local image file as RGB, through the server's decoder (EXIF orientation, size guards)."""
    from ml_backend.inference.images import decode_image

    return decode_image(Path(path).read_bytes())


def box_label_config(names: dict[int, str]) -> str:
    """A Label Studio labeling config with one rectangle label per class."""
    labels = "".join(f"<Label value={quoteattr(n)}/>" for _, n in sorted(names.items()))
    return f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">{labels}</RectangleLabels></View>'
