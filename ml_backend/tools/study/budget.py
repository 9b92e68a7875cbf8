"""The training budget as a measured curve: what a retraining recipe buys, against its seconds.

For each training recipe (image size, optimizer steps, batch: ``TRAIN_IMGSZ``, ``TRAIN_STEPS``,
``TRAIN_BATCH``) and each number of labels, the project's first model is trained as the server
trains it (the study's round 0 in the server's loop: a seeded random draw of the pool labeled, a
head for the dataset's classes on the starting weights, labels held out, the display rule chosen
on them) and measured on the study's test split, which it never saw:

* ``map50``: test mAP50;
* ``speedup``: drawing every test box from scratch against correcting the served pre-annotations
  (shown as the server would show them), in annotator seconds (``ANNOTATION_COSTS``), with the
  ``ceiling`` (every true box only verified) and the counts;
* ``speedup_by_accept_iou``: the same at other bars for "kept as it is" (IoU 0.7 and 0.9 beside
  the study's 0.85: how much the figure rests on that choice);
* ``tightness``: how tight the shown boxes that match a true one are (point 5 of the question why
  matched boxes must be dragged): the median IoU, the share at or above the accept bar, and the
  median edge error in network-input pixels, overall and by object size (COCO's small, medium,
  large: below 32, 32 to 96, above 96 pixels, the square root of the true box's area);
* ``train_s``: the seconds the training took on this machine (``time_budget_min``: the run's
  ``TRAIN_TIME_BUDGET``, taken from the environment; a run under a budget belongs in an ``out``
  of its own, as the trained models are resumed whatever the budget);
* ``served_at`` (with ``serve_sizes``): the same model served at other inference sizes (``IMGSZ``;
  the server's default serves at the training size): speed-up, counts and tightness at each, the
  question being whether a larger inference size than the training one tightens the boxes.

Each (labels, recipe) is a study folder of its own under ``out`` (``simulate`` resumes it);
``budget.json`` and ``budget.md`` collect the rows, ``budget.png`` plots them.

Example:
    >>> Recipe.parse("640x300x16")
    Recipe(imgsz=640, steps=300, batch=16)
    >>> Recipe.parse("640x300x16").slug
    '640px-300steps-16batch'
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.al.effort import ACCEPT_IOU, Corrections, matched_pairs, price
from ml_backend.settings import Settings
from ml_backend.state import write_json_atomic
from ml_backend.tools.datasets import load_dataset
from ml_backend.tools.study.loop import (
    SimConfig,
    SimulationError,
    Study,
    arm_settings,
    effort_of,
    preannotations,
    run_study,
    served_display,
    shown_boxes,
)

RESULTS = "budget.json"
# The study's cpu preset, its image size at the server's compute, and the server's defaults.
DEFAULT_RECIPES = ("320x60x8", "640x60x8", "320x300x16", "640x300x16")
ACCEPT_BARS = (0.7, 0.85, 0.9)


@dataclass(frozen=True)
class Recipe:
    """One retraining recipe: ``TRAIN_IMGSZ`` x ``TRAIN_STEPS`` x ``TRAIN_BATCH``."""

    imgsz: int
    steps: int
    batch: int

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """``IMGSZxSTEPSxBATCH``, e.g. ``640x300x16``.

        Raises:
            SimulationError: not three positive integers joined by ``x``.
        """
        m = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", text)
        if not m or min(int(g) for g in m.groups()) < 1:
            raise SimulationError(f"recipe {text!r}: write IMGSZxSTEPSxBATCH with positive integers, e.g. 640x300x16")
        return cls(*(int(g) for g in m.groups()))

    @property
    def slug(self) -> str:
        return f"{self.imgsz}px-{self.steps}steps-{self.batch}batch"

    @property
    def images_seen(self) -> int:
        """Training compute in image passes at its own size (steps x batch)."""
        return self.steps * self.batch


def run_budget_curve(
    data: str,
    fmt: str,
    weights: str,
    out: str | Path,
    recipes: Sequence[Recipe],
    labels: Sequence[int] = (40, 100),
    seeds: Sequence[int] = (0,),
    device: str = "cpu",
    show_progress: bool = True,
    serve_sizes: Sequence[int] = (),
) -> dict[str, Any]:
    """Train and measure every (labels, recipe, seed) not measured yet, each also served at
    ``serve_sizes`` (``served_at``); returns ``budget.json``'s contents.

    Raises:
        SimulationError, DatasetError: bad settings or data (before any training).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    rows: list[dict[str, Any]] = json.loads(path.read_text())["rows"] if path.is_file() else []
    ds = load_dataset(data, fmt)
    for n in labels:
        for recipe in recipes:
            cfg = SimConfig(
                data=str(data), format=fmt, out=str(out / f"{n}-labels-{recipe.slug}"), weights=str(weights), strategies=("random",),
                initial=n, rounds=0, seeds=tuple(seeds), steps=recipe.steps, imgsz=recipe.imgsz, batch=recipe.batch, device=device,
                server_loop=True,
            )  # fmt: skip
            if not any(_unmeasured(_row(rows, n, recipe.slug, s), serve_sizes) for s in seeds):
                continue
            run_study(cfg, show_progress=show_progress)
            study = Study(cfg, ds)
            for seed in seeds:
                row = _row(rows, n, recipe.slug, seed)
                if row is None:
                    row = _measure(study, cfg, recipe, seed)
                    rows.append(row)
                for size in serve_sizes:
                    if str(size) in row.setdefault("served_at", {}):
                        continue
                    row["served_at"][str(size)] = (
                        {"speedup": row["speedup"], "counts": row["counts"], "tightness": row["tightness"]["all"]}
                        if size == recipe.imgsz  # served as measured: no second model pass
                        else _served_at(study, cfg, recipe, seed, size)
                    )
                write_json_atomic(path, {"data": str(data), "weights": str(weights), "device": device, "rows": rows})
    result = {"data": str(data), "weights": str(weights), "device": device, "rows": rows}
    write_json_atomic(path, result)
    (out / "budget.md").write_text(budget_markdown(rows) + "\n")
    plot_budget(rows, out / "budget.png")
    return result


def _measure(study: Study, cfg: SimConfig, recipe: Recipe, seed: int) -> dict[str, Any]:
    """One first model on the test split: mAP50 (the study's record) and the speed-up of its pre-annotations."""
    rec, settings, test, shown = _shown(study, cfg, seed)
    _, total = effort_of(study, test, shown)
    priced = price(total, settings.annotation_costs)
    by_bar = {str(a): price(effort_of(study, test, shown, a)[1], settings.annotation_costs)["speedup"] for a in ACCEPT_BARS}
    tight = tightness(study, test, shown, recipe.imgsz)
    best = settings.annotation_costs.seconds(Corrections(images=total.images, gt_boxes=total.gt_boxes, accepted=total.gt_boxes))
    return {
        "labels": cfg.initial,
        "recipe": recipe.slug,
        "imgsz": recipe.imgsz,
        "steps": recipe.steps,
        "batch": recipe.batch,
        "seed": seed,
        "train_s": round(float(rec["train_s"]), 1),
        "time_budget_min": settings.train_time_budget,  # TRAIN_TIME_BUDGET of the run (0: none)
        "map50": round(float(rec["map50"]), 4),
        "speedup": priced["speedup"],
        "ceiling": round(float(priced["scratch_seconds"]) / best, 3) if best > 0 else None,  # type: ignore[arg-type]
        "seconds": priced["seconds"],
        "scratch_seconds": priced["scratch_seconds"],
        "counts": priced["counts"],
        "speedup_by_accept_iou": by_bar,
        "tightness": tight,
        "display": rec.get("display"),
    }


def _shown(
    study: Study, cfg: SimConfig, seed: int, imgsz: int | None = None
) -> tuple[dict[str, Any], Settings, list[int], dict[int, list[dict]]]:
    """Seed ``seed``'s first model shown on the test split as the server shows it (served at
    ``imgsz``, default its training size): its record, the settings, the test ids, the regions."""
    rec = study.record("random", seed, 0)
    if rec is None:
        raise SimulationError(f"{cfg.out}: no round 0 for seed {seed}")
    settings = arm_settings(cfg, study.out, seed=seed)
    if imgsz is not None:
        settings = dataclasses.replace(settings, imgsz=imgsz)
    test = [int(i) for i in study.test.tolist()]
    shown = preannotations(study, study.weights("random", seed, 0), test, settings, display=served_display(study, rec, settings))
    return rec, settings, test, shown


def _row(rows: Sequence[dict[str, Any]], labels: int, slug: str, seed: int) -> dict[str, Any] | None:
    return next((r for r in rows if (r["labels"], r["recipe"], r["seed"]) == (labels, slug, seed)), None)


def _unmeasured(row: Mapping[str, Any] | None, serve_sizes: Sequence[int]) -> bool:
    return row is None or any(str(z) not in row.get("served_at", {}) for z in serve_sizes)


def _served_at(study: Study, cfg: SimConfig, recipe: Recipe, seed: int, imgsz: int) -> dict[str, Any]:
    """One first model served at inference size ``imgsz``: the speed-up, counts and tightness (edge
    errors still in the training size's network pixels, so sizes compare)."""
    _, settings, test, shown = _shown(study, cfg, seed, imgsz)
    priced = price(effort_of(study, test, shown)[1], settings.annotation_costs)
    return {"speedup": priced["speedup"], "counts": priced["counts"], "tightness": tightness(study, test, shown, recipe.imgsz)["all"]}


SIZES = (("small", 0.0, 32.0), ("medium", 32.0, 96.0), ("large", 96.0, float("inf")))


def tightness(study: Study, ids: Sequence[int], shown: Mapping[int, Sequence[Mapping[str, Any]]], imgsz: int) -> dict[str, Any]:
    """Median IoU, share kept as it is (IoU >= the accept bar) and median edge error in network-input
    pixels of the same-class matches on images ``ids``, overall and per object size."""
    ious, sizes, edges = [], [], []
    for i in ids:
        item = study.ds.items[int(i)]
        pred, pred_cls = shown_boxes(item, study.ds.names, shown.get(int(i), []))
        gt = np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4)
        to_network = imgsz / max(item.width, item.height)
        for g, p, iou in matched_pairs(gt, item.classes, pred, pred_cls):
            ious.append(iou)
            sizes.append(float(np.sqrt(max((gt[g, 2] - gt[g, 0]) * (gt[g, 3] - gt[g, 1]), 0.0))))
            edges.append(float(np.abs(gt[g] - pred[p]).mean() * to_network))
    iou_a, size_a, edge_a = np.array(ious), np.array(sizes), np.array(edges)

    def summary(k: np.ndarray) -> dict[str, Any]:
        if not k.any():
            return {"matched": 0}
        return {
            "matched": int(k.sum()),
            "median_iou": round(float(np.median(iou_a[k])), 3),
            "kept_share": round(float((iou_a[k] >= ACCEPT_IOU).mean()), 3),
            "median_edge_error_px": round(float(np.median(edge_a[k])), 2),
        }

    everything = np.ones(len(iou_a), dtype=bool)
    return {"all": summary(everything)} | {name: summary((size_a >= lo) & (size_a < hi)) for name, lo, hi in SIZES}


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        budget = float(r.get("time_budget_min") or 0)
        groups.setdefault((int(r["labels"]), str(r["recipe"]) + (f" (at most {budget:g} min)" if budget else "")), []).append(r)
    return groups


def _summed_counts(counts: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {k: sum(int(c.get(k, 0)) for c in counts) for k in ("accepted", "adjusted", "drawn", "deleted")}


def budget_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One line per (labels, recipe): training seconds, mAP50, speed-up (means over seeds, with the seeds' range).

    Example:
        >>> row = {"labels": 40, "recipe": "320px-60steps-8batch", "seed": 0, "train_s": 40.0, "map50": 0.2, "speedup": 1.1,
        ...        "ceiling": 3.9, "counts": {"accepted": 3, "adjusted": 5, "drawn": 9, "deleted": 2}}
        >>> print(budget_markdown([row]).splitlines()[2])
        | 40 | 320px-60steps-8batch | 1 | 40 | 0.200 | 1.10x (1.10-1.10) | 3.9x | 3 / 5 / 9 / 2 | nan | nan |
    """
    lines = [
        "| labels | recipe | seeds | training s | test mAP50 | speed-up (seeds' range) | ceiling | accepted / adjusted / drawn / deleted "
        "| matched IoU (median) | edge error, network px |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (n, slug), rs in sorted(_groups(rows).items(), key=lambda kv: (kv[0][0], _mean(kv[1], "train_s"))):
        sp = [float(r["speedup"]) for r in rs if r.get("speedup") is not None]
        counts = _summed_counts([r["counts"] for r in rs])
        lines.append(
            f"| {n} | {slug} | {len(rs)} | {_mean(rs, 'train_s'):.0f} | {_mean(rs, 'map50'):.3f} | "
            f"{np.mean(sp):.2f}x ({min(sp):.2f}-{max(sp):.2f}) | {_mean(rs, 'ceiling'):.1f}x | "
            f"{counts['accepted']} / {counts['adjusted']} / {counts['drawn']} / {counts['deleted']} | "
            f"{_mean([r.get('tightness', {}).get('all', {}) for r in rs], 'median_iou'):.2f} | "
            f"{_mean([r.get('tightness', {}).get('all', {}) for r in rs], 'median_edge_error_px'):.1f} |"
        )
    served = [
        (n, slug, int(z), rs)
        for (n, slug), rs in _groups(rows).items()
        for z in sorted({z for r in rs for z in r.get("served_at", {})}, key=int)
    ]
    if served:
        lines += [
            "",
            "| labels | recipe | served at px | seeds | speed-up (seeds' range) | accepted / adjusted / drawn / deleted | matched IoU (median) "
            "| edge error, training network px |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for n, slug, z, rs in sorted(served, key=lambda t: (t[0], t[1], t[2])):
            at = [r["served_at"][str(z)] for r in rs if str(z) in r.get("served_at", {})]
            sp = [float(a["speedup"]) for a in at]
            c = _summed_counts([a["counts"] for a in at])
            lines.append(
                f"| {n} | {slug} | {z} | {len(at)} | {np.mean(sp):.2f}x ({min(sp):.2f}-{max(sp):.2f}) | "
                f"{c['accepted']} / {c['adjusted']} / {c['drawn']} / {c['deleted']} | {_mean([a['tightness'] for a in at], 'median_iou'):.2f} | "
                f"{_mean([a['tightness'] for a in at], 'median_edge_error_px'):.1f} |"
            )
    return "\n".join(lines)


def plot_budget(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Speed-up and test mAP50 against training seconds (log scale), one line per label count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    by_labels: dict[int, list[tuple[float, float, float, str]]] = {}
    for (n, slug), rs in _groups(rows).items():
        by_labels.setdefault(n, []).append((_mean(rs, "train_s"), _mean(rs, "speedup"), _mean(rs, "map50"), slug))
    for n, pts in sorted(by_labels.items()):
        pts.sort()
        x = [p[0] for p in pts]
        for ax, k in zip(axes, (1, 2), strict=True):
            ax.plot(x, [p[k] for p in pts], marker="o", label=f"{n} labels")
            for p in pts:
                ax.annotate(p[3].replace("steps-", "x").replace("px-", "px ").replace("batch", ""), (p[0], p[k]), fontsize=7)
    for ax, name in zip(axes, ("speed-up over drawing from scratch", "test mAP50"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("training seconds (this machine)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
