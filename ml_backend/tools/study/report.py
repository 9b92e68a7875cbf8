"""The study's summary table and learning-curve figure, from ``results.json``.

Example:
    >>> labels_to_reach(np.array([10, 20, 30]), np.array([0.1, 0.3, 0.5]), 0.4)
    25.0
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.state import write_json_atomic
from ml_backend.tools.datasets import load_dataset
from ml_backend.tools.study.loop import RESULTS, SimulationError, objects_in


def curves(records: Sequence[Mapping[str, Any]], metric: str = "map50") -> dict[str, dict[str, np.ndarray]]:
    """Per strategy: ``rounds``, ``labels`` and the metric's ``mean``, ``min``, ``max`` over seeds.

    Only rounds that every seed of the strategy finished are included.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for strategy in sorted({r["strategy"] for r in records}):
        rs = [r for r in records if r["strategy"] == strategy]
        seeds = sorted({r["seed"] for r in rs})
        rounds = sorted({r["round"] for r in rs})
        rows = []
        for rnd in rounds:
            vals = [r for r in rs if r["round"] == rnd]
            if len(vals) == len(seeds):
                v = np.array([r[metric] for r in vals], dtype=float)
                rows.append((vals[0]["labels"], v.mean(), v.min(), v.max(), rnd))
        if rows:
            a = np.array(rows)
            out[strategy] = {
                "labels": a[:, 0],
                "mean": a[:, 1],
                "min": a[:, 2],
                "max": a[:, 3],
                "rounds": a[:, 4].astype(int),
                "seeds": np.array(seeds),
            }
    return out


def labels_to_reach(labels: np.ndarray, values: np.ndarray, target: float) -> float | None:
    """Labels at which the curve first reaches ``target`` (linear between rounds), or None.

    Example:
        >>> labels_to_reach(np.array([10, 20, 30]), np.array([0.1, 0.3, 0.5]), 0.4)
        25.0
    """
    for k in range(len(labels)):
        if values[k] >= target:
            if k == 0:
                return float(labels[0])
            x0, x1, y0, y1 = labels[k - 1], labels[k], values[k - 1], values[k]
            return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0)) if y1 > y0 else float(x1)
    return None


def rarest_class(result: Mapping[str, Any]) -> str:
    """The class with the fewest objects in the pool."""
    counts = result["dataset"]["objects_pool"]
    return min(counts, key=lambda n: (counts[n], n))


def summarize(result: Mapping[str, Any], metric: str = "map50", reference: str = "random") -> dict[str, Any]:
    """The study's table, per strategy.

    * ``aulc``: area under the mean learning curve divided by the label range (the mean score
      over the budget; higher is better);
    * ``final``: mean score at the last round; ``labels_final``: labels then;
    * ``labels_to_match``: labels the strategy needs to reach the reference's final mean score
      (None: not within the budget); ``savings``: ``1 - labels_to_match / (the reference's own
      labels_to_match)``, so the reference is 0 even when its noisy curve got there early;
    * ``rare_gain``: AP50 of the rarest pool class at the last round minus the reference's;
    * ``objects_final``: boxes in the labeled images at the last round (mean over seeds): the
      annotation work, which images do not show (busy images cost more);
    * ``round_s``: median seconds per round (select, train, evaluate).
    """
    records = result["records"]
    cs = curves(records, metric)
    if reference not in cs:
        raise SimulationError(f"no finished rounds of {reference!r} yet, so nothing to compare with")
    ref = cs[reference]
    target = float(ref["mean"][-1])
    # the reference's own first crossing: a noisy curve can reach its final score before its last round
    ref_labels = labels_to_reach(ref["labels"], ref["mean"], target) or float(ref["labels"][-1])
    rare = rarest_class(result)
    last_round = {s: int(c["rounds"][-1]) for s, c in cs.items()}

    def rare_ap(s: str) -> float:
        vals = [r["per_class"].get(rare, {}).get("ap50", 0.0) for r in records if r["strategy"] == s and r["round"] == last_round[s]]
        return float(np.mean(vals)) if vals else float("nan")

    table = {}
    for s, c in cs.items():
        span = c["labels"][-1] - c["labels"][0]
        aulc = float(np.trapezoid(c["mean"], c["labels"]) / span) if span > 0 else float(c["mean"][0])
        reach = labels_to_reach(c["labels"], c["mean"], target)
        rs = [r for r in records if r["strategy"] == s and r["round"] > 0]
        table[s] = {
            "aulc": aulc,
            "final": float(c["mean"][-1]),
            "final_min": float(c["min"][-1]),
            "final_max": float(c["max"][-1]),
            "labels_final": float(c["labels"][-1]),
            "labels_to_match": reach,
            "savings": None if reach is None else 1.0 - reach / ref_labels,
            "rare_ap50": rare_ap(s),
            "rare_gain": rare_ap(s) - rare_ap(reference),
            "objects_final": float(
                np.mean(
                    [r["objects"] for r in records if r["strategy"] == s and r["round"] == last_round[s] and "objects" in r] or [np.nan]
                )
            ),
            "round_s": float(np.median([r["wall_s"] for r in rs])) if rs else float("nan"),
            "select_s": float(np.median([r["select_s"] for r in rs])) if rs else float("nan"),
            "train_s": float(np.median([r["train_s"] for r in rs])) if rs else float("nan"),
            "seeds": len(c["seeds"]),
        }
    return {"metric": metric, "reference": reference, "target": target, "rarest_class": rare, "strategies": table}


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a markdown table."""
    m = summary["metric"].replace("map", "mAP").replace("_", "-")
    ref = summary["reference"]
    lines = [
        f"| strategy | area under curve ({m}) | final {m} (min-max over seeds) | labels to reach {ref}'s final {summary['target']:.3f} | label savings | AP50 of rarest class ({summary['rarest_class']}) vs {ref} | boxes drawn | s per round (select + train) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, r in summary["strategies"].items():
        reach = "not reached" if r["labels_to_match"] is None else f"{r['labels_to_match']:.0f} of {r['labels_final']:.0f}"
        savings = "-" if r["savings"] is None else f"{r['savings']:+.0%}"
        lines.append(
            f"| {s} | {r['aulc']:.3f} | {r['final']:.3f} ({r['final_min']:.3f}-{r['final_max']:.3f}) | {reach} | {savings} | "
            f"{r['rare_ap50']:.3f} ({r['rare_gain']:+.3f}) | {r['objects_final']:.0f} | {r['round_s']:.0f} ({r['select_s']:.0f} + {r['train_s']:.0f}) |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(result: Mapping[str, Any], path: str | Path, metric: str = "map50", title: str | None = None) -> Path:
    """Learning curves (mean over seeds, band from min to max) with random dashed as the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = curves(result["records"], metric)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for s, c in cs.items():
        style: dict[str, Any] = {"color": "black", "linestyle": "--", "zorder": 3} if s == "random" else {}
        line = ax.plot(
            c["labels"], c["mean"], marker="o", label=f"{s} ({len(c['seeds'])} seed{'s' if len(c['seeds']) > 1 else ''})", **style
        )[0]
        ax.fill_between(c["labels"], c["min"], c["max"], color=line.get_color(), alpha=0.12)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(metric.replace("map", "mAP").replace("_", "-") + " on the test split")
    ax.set_title(title or Path(str(result["config"]["data"])).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def report(out: str | Path, metric: str = "map50") -> str:
    """Write ``summary.json``, ``summary.md`` and ``learning_curve.png`` next to ``results.json``; return the table."""
    out = Path(out)
    result = json.loads((out / RESULTS).read_text())
    if any("objects" not in r for r in result["records"]):  # records written before boxes were counted
        ds = load_dataset(result["config"]["data"], result["config"]["format"])
        for r in result["records"]:
            r.setdefault("objects", objects_in(ds, r["labeled_ids"]))
        write_json_atomic(out / RESULTS, result)
    summary = summarize(result, metric)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = summary_markdown(summary)
    (out / "summary.md").write_text(table)
    plot_curves(result, out / "learning_curve.png", metric)
    return table
