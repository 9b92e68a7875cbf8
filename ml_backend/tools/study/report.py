"""The study's summary, tables and figures, from ``results.json``: every figure on every cost axis,
with a paired bootstrap interval over seeds.

Cost axes (cumulative, round 0 included):

* ``images``: labeled images;
* ``boxes``: true boxes in them (what drawing everything from scratch would cost);
* ``corrections``: the annotator's edits to our pre-annotations (adjusted, class changed, drawn,
  deleted: :class:`ml_backend.al.effort.Corrections`);
* ``seconds``: estimated annotator seconds, the counts priced with a cost table
  (:class:`ml_backend.al.effort.CostTable`; the records keep the counts, so another table gives
  other seconds without running anything again).

Per arm and axis the summary gives the cost at which the mean learning curve reaches the
reference's (random's) final mean score, the saving against the reference's own cost to get there,
and a 95% interval for that saving; per arm the final score's difference from the reference and
the rarest class's AP50 at the same budget, with intervals. :mod:`ml_backend.tools.study.stats`
computes the intervals.

Example:
    >>> AXES
    ('images', 'boxes', 'corrections', 'seconds')
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.al.effort import DEFAULT_COSTS, Corrections, CostTable
from ml_backend.state import write_json_atomic
from ml_backend.tools.study.loop import RESULTS, SimulationError
from ml_backend.tools.study.stats import Interval, bootstrap, reach, saving

AXES = ("images", "boxes", "corrections", "seconds")
AXIS_TITLES = {
    "images": "labeled images",
    "boxes": "true boxes in them",
    "corrections": "edits to the pre-annotations",
    "seconds": "estimated annotator seconds",
}


def axis_value(record: Mapping[str, Any], axis: str, table: CostTable = DEFAULT_COSTS) -> float:
    """A record's cumulative cost on ``axis``."""
    if axis == "images":
        return float(record["labels"])
    if "effort_total" not in record:
        raise SimulationError("these results carry no effort counts (made by an older version): run the study again")
    c = Corrections.from_json(record["effort_total"])
    if axis == "boxes":
        return float(c.gt_boxes)
    if axis == "corrections":
        return float(c.edits)
    if axis == "seconds":
        return table.seconds(c)
    raise ValueError(f"unknown axis {axis!r}; choose from {', '.join(AXES)}")


class Curves:
    """One arm's learning curves as arrays: ``[seed, round]`` for every round every seed finished.

    Attributes:
        seeds: the seeds, in order.
        rounds: the rounds kept.
        score: ``[seed, round]`` the metric on the test split.
        cost: axis -> ``[seed, round]`` cumulative cost.
        rare: ``[seed, round]`` AP50 of the rarest pool class.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], metric: str, table: CostTable, rare_class: str):
        seeds = sorted({int(r["seed"]) for r in records})
        by = {(int(r["seed"]), int(r["round"])): r for r in records}
        rounds = sorted({int(r["round"]) for r in records})
        self.rounds = [k for k in rounds if all((s, k) in by for s in seeds)]
        self.seeds = seeds
        grid = [[by[(s, k)] for k in self.rounds] for s in seeds]
        self.score = np.array([[r[metric] for r in row] for row in grid], dtype=np.float64)
        self.rare = np.array([[r["per_class"].get(rare_class, {}).get("ap50", 0.0) for r in row] for row in grid], dtype=np.float64)
        self.cost = {a: np.array([[axis_value(r, a, table) for r in row] for row in grid], dtype=np.float64) for a in AXES}
        self.records = grid

    def mean(self, axis: str, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean cost, mean score) per round over the seeds ``idx`` (default all)."""
        idx = np.arange(len(self.seeds)) if idx is None else idx
        return self.cost[axis][idx].mean(axis=0), self.score[idx].mean(axis=0)


def curves(result: Mapping[str, Any], metric: str = "map50", table: CostTable = DEFAULT_COSTS) -> dict[str, Curves]:
    """Per arm, its :class:`Curves` (arms whose seeds have finished no round left out)."""
    rare = rarest_class(result)
    out = {}
    for arm in dict.fromkeys(r["strategy"] for r in result["records"]):
        c = Curves([r for r in result["records"] if r["strategy"] == arm], metric, table, rare)
        if c.rounds:
            out[arm] = c
    return out


def rarest_class(result: Mapping[str, Any]) -> str:
    """The class with the fewest objects in the pool."""
    counts = result["dataset"]["objects_pool"]
    return min(counts, key=lambda n: (counts[n], n))


def _paired(ref: Curves, other: Curves) -> tuple[np.ndarray, np.ndarray, int]:
    """Row indices of the seeds both arms ran, and the number of rounds both finished."""
    common = [s for s in ref.seeds if s in other.seeds]
    return (
        np.array([ref.seeds.index(s) for s in common], dtype=int),
        np.array([other.seeds.index(s) for s in common], dtype=int),
        min(len(ref.rounds), len(other.rounds)),
    )


def compare(ref: Curves, other: Curves, axis: str, resamples: int = 10_000) -> Interval:
    """The saving of ``other`` against ``ref`` on ``axis`` (cost to reach ``ref``'s final mean score), with its interval."""
    ri, oi, k = _paired(ref, other)

    def stat(draw: np.ndarray) -> float:
        rc, rs = ref.cost[axis][ri[draw], :k].mean(axis=0), ref.score[ri[draw], :k].mean(axis=0)
        oc, os_ = other.cost[axis][oi[draw], :k].mean(axis=0), other.score[oi[draw], :k].mean(axis=0)
        return saving(rc, rs, oc, os_)

    return bootstrap(stat, len(ri), resamples=resamples)


def final_difference(ref: Curves, other: Curves, values: str = "score", resamples: int = 10_000) -> Interval:
    """Mean over seeds of ``other - ref`` at the last round both finished (paired by seed), with its interval."""
    ri, oi, k = _paired(ref, other)
    diff = getattr(other, values)[oi, k - 1] - getattr(ref, values)[ri, k - 1]
    return bootstrap(lambda draw: float(diff[draw].mean()), len(diff), resamples=resamples)


def summarize(
    result: Mapping[str, Any], metric: str = "map50", reference: str = "random", table: CostTable = DEFAULT_COSTS, resamples: int = 10_000
) -> dict[str, Any]:
    """The study's figures per arm (see the module docstring); JSON-ready.

    Raises:
        SimulationError: the reference has no finished round yet.
    """
    cs = curves(result, metric, table)
    if reference not in cs:
        raise SimulationError(f"no finished rounds of {reference!r} yet, so nothing to compare with")
    ref = cs[reference]
    rare = rarest_class(result)
    arms: dict[str, Any] = {}
    for name, c in cs.items():
        k = len(c.rounds)
        row: dict[str, Any] = {
            "seeds": len(c.seeds),
            "rounds": k - 1,
            "final": float(c.score[:, -1].mean()),
            "final_min": float(c.score[:, -1].min()),
            "final_max": float(c.score[:, -1].max()),
            "rare_ap50": float(c.rare[:, -1].mean()),
            "totals": {a: float(c.cost[a][:, -1].mean()) for a in AXES},
            "round_s": _median(c, "wall_s"),
            "select_s": _median(c, "select_s"),
            "train_s": _median(c, "train_s"),
            "eval_s": _median(c, "eval_s"),
        }
        if name != reference:
            row["final_diff"] = final_difference(ref, c, "score", resamples).to_json()
            row["rare_diff"] = final_difference(ref, c, "rare", resamples).to_json()
            row["savings"] = {a: compare(ref, c, a, resamples).to_json() for a in AXES}
        target = float(ref.score[:, -1].mean())
        row["reach"] = {a: _finite(reach(*c.mean(a), target)) for a in AXES}
        first = first_round(c, table, resamples)
        if first is not None:
            row["first_round"] = first
        row["speedups"] = speedups(c, table, resamples)
        arms[name] = row
    return {
        "metric": metric,
        "reference": reference,
        "target": float(ref.score[:, -1].mean()),
        "rarest_class": rare,
        "costs": table.to_text(),
        "resamples": resamples,
        "arms": arms,
    }


def first_round(c: Curves, table: CostTable = DEFAULT_COSTS, resamples: int = 10_000) -> dict[str, Any] | None:
    """Round 0 (before the project has a model of its own): the first model's score, and the annotator
    seconds of its images drawn from scratch, as they were shown, and with class-agnostic proposals
    (the records' ``effort_proposals``), with each one's saving against drawing from scratch
    (``1 - seconds / scratch``) and its interval over seeds. None for records without proposal
    counts (older studies).

    Example:
        >>> rec = lambda s, shown, prop: {"seed": s, "round": 0, "labels": 1, "map50": 0.5, "per_class": {},
        ...     "effort_total": {"images": 1, "gt_boxes": 2, "drawn": shown}, "effort_proposals": {"images": 1, "gt_boxes": 2, "accepted": prop}}
        >>> f = first_round(Curves([rec(0, 2, 2), rec(1, 2, 1)], "map50", DEFAULT_COSTS, "x"), resamples=100)
        >>> f["seconds_scratch"], f["seconds_shown"], f["seconds_proposals"]
        (16.0, 16.0, 4.4)
    """
    if c.rounds[0] != 0 or not all("effort_proposals" in row[0] for row in c.records):
        return None

    def seconds(key: str) -> np.ndarray:
        return np.array([table.seconds(Corrections.from_json(row[0][key])) for row in c.records])

    scratch = np.array(
        [
            table.seconds(Corrections(images=r["images"], gt_boxes=r["gt_boxes"], drawn=r["gt_boxes"]))
            for r in (row[0]["effort_total"] for row in c.records)
        ]
    )
    shown, proposed = seconds("effort_total"), seconds("effort_proposals")

    def saving(x: np.ndarray) -> dict[str, Any]:
        return bootstrap(lambda d: float(1 - x[d].sum() / scratch[d].sum()), len(x), resamples=resamples).to_json()

    return {
        "map50": float(c.score[:, 0].mean()),
        "seconds_scratch": float(scratch.mean()),
        "seconds_shown": float(shown.mean()),
        "seconds_proposals": float(proposed.mean()),
        "shown_saving": saving(shown),
        "proposals_saving": saving(proposed),
    }


def _saving(x: np.ndarray, y: np.ndarray, resamples: int) -> dict[str, Any]:
    """``1 - sum(x) / sum(y)`` over seeds, with its bootstrap interval (paired: the same seeds drawn)."""
    return bootstrap(lambda d: float(1 - x[d].sum() / y[d].sum()), len(x), resamples=resamples).to_json()


def speedups(c: Curves, table: CostTable = DEFAULT_COSTS, resamples: int = 10_000) -> list[dict[str, Any]]:
    """Per round: how much faster correcting the pre-annotations of the round's images was than
    drawing every box (the records' ``effort``: the images selected that round, shown by the model
    trained on the labels before them; round 0: the starting model on the first labels).

    Per round, over seeds (ratios of sums, 95% bootstrap intervals, the seeds' own range beside):
    ``speedup`` (scratch seconds / seconds), the ``ceiling`` (every true box only verified),
    ``captured`` (the share of the possible saving that was saved: (scratch - seconds) /
    (scratch - ceiling seconds)), and ``one_threshold``: the speed-up the same images would have
    had shown at one threshold for every class (the records' ``effort_one_threshold``, where the
    served model had a per-class rule; the record's own ``effort`` where it had not), with
    ``rule_saving``: the share of those seconds the per-class rule saved (paired over seeds).

    Example:
        >>> rec = lambda s, drawn, ok: {"seed": s, "round": 1, "labels": 2, "map50": 0.5, "per_class": {},
        ...     "effort_total": {}, "effort": {"images": 2, "gt_boxes": 4, "drawn": drawn, "accepted": ok}}
        >>> row = speedups(Curves([rec(0, 0, 4), rec(1, 4, 0)], "map50", DEFAULT_COSTS, "x"), resamples=100)[0]
        >>> round(row["speedup"]["estimate"], 2), round(row["ceiling"], 2), row["seeds_range"]
        (1.51, 3.08, [1.0, 3.08])
    """
    out = []
    for k, rnd in enumerate(c.rounds):
        rows = [row[k] for row in c.records]
        if not all("effort" in r for r in rows):
            continue
        done = [Corrections.from_json(r["effort"]) for r in rows]
        seconds = np.array([table.seconds(e) for e in done])
        scratch = np.array([table.seconds(Corrections(images=e.images, gt_boxes=e.gt_boxes, drawn=e.gt_boxes)) for e in done])
        best = np.array([table.seconds(Corrections(images=e.images, gt_boxes=e.gt_boxes, accepted=e.gt_boxes)) for e in done])

        def ratio(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
            return bootstrap(
                lambda d: float(x[d].sum() / y[d].sum()) if y[d].sum() > 0 else float("nan"), len(x), resamples=resamples
            ).to_json()

        row: dict[str, Any] = {
            "round": int(rnd),
            "labels": int(rows[0]["labels"]),
            "speedup": ratio(scratch, seconds),
            "seeds_range": [round(float(v), 2) for v in (min(scratch / seconds), max(scratch / seconds))],
            "ceiling": float(scratch.sum() / best.sum()),
            "captured": ratio(scratch - seconds, scratch - best),
        }
        if any("effort_one_threshold" in r for r in rows):  # where it is missing, the rule was one threshold
            one = np.array([table.seconds(Corrections.from_json(r.get("effort_one_threshold") or r["effort"])) for r in rows])
            row["one_threshold"] = ratio(scratch, one)
            row["rule_saving"] = _saving(seconds, one, resamples)
        out.append(row)
    return out


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _median(c: Curves, key: str) -> float:
    """The median of ``key`` over the rounds after round 0 (round 0's own when there are no others)."""
    later = [r[key] for row in c.records for r in row if int(r["round"]) > 0 and key in r]
    vals = later or [r[key] for row in c.records for r in row if key in r]
    return float(np.median(vals)) if vals else float("nan")


def _pct(ci: Mapping[str, Any]) -> str:
    est, lo, hi = ci["estimate"], ci["low"], ci["high"]
    if est is None:
        return "not reached"
    low = "not reached" if lo is None else f"{lo:+.0%}"
    return f"{est:+.0%} [{low}, {hi:+.0%}]" if hi is not None else f"{est:+.0%}"


def _num(ci: Mapping[str, Any]) -> str:
    return f"{ci['estimate']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as two markdown tables and a sentence per arm on what the intervals say."""
    m = summary["metric"].replace("map", "mAP").replace("_", "-")
    ref = summary["reference"]
    arms = summary["arms"]
    lines = [
        f"Savings against {ref} (the cost to reach {ref}'s final {m} {summary['target']:.3f}, against {ref}'s own cost to get there); "
        f"95% paired bootstrap intervals over seeds in brackets ({summary['resamples']:,} resamples). Cost table: `{summary['costs']}`.",
        "",
        f"| arm | seeds | final {m} (min-max) | vs {ref} | images saved | boxes saved | edits saved | annotator seconds saved | "
        f"AP50 of {summary['rarest_class']} (vs {ref}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in arms.items():
        if name == ref:
            lines.append(
                f"| {name} | {r['seeds']} | {r['final']:.3f} ({r['final_min']:.3f}-{r['final_max']:.3f}) | reference | - | - | - | - | "
                f"{r['rare_ap50']:.3f} |"
            )
            continue
        s = r["savings"]
        lines.append(
            f"| {name} | {r['seeds']} | {r['final']:.3f} ({r['final_min']:.3f}-{r['final_max']:.3f}) | {_num(r['final_diff'])} | "
            f"{_pct(s['images'])} | {_pct(s['boxes'])} | {_pct(s['corrections'])} | {_pct(s['seconds'])} | "
            f"{r['rare_ap50']:.3f} ({_num(r['rare_diff'])}) |"
        )
    lines += [
        "",
        "What each arm cost by its last round (mean over seeds), and the time a round took (median: select + train + evaluate):",
        "",
        "| arm | images | true boxes | edits | est. annotator seconds | s per round (select + train + evaluate) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in arms.items():
        t = r["totals"]
        lines.append(
            f"| {name} | {t['images']:.0f} | {t['boxes']:.0f} | {t['corrections']:.0f} | {t['seconds']:.0f} | "
            f"{r['round_s']:.0f} ({r['select_s']:.0f} + {r['train_s']:.0f} + {r['eval_s']:.0f}) |"
        )
    lines += ["", *speedup_markdown(arms)]
    firsts = {name: r["first_round"] for name, r in arms.items() if "first_round" in r}
    if firsts:
        lines += [
            "",
            "Round 0, before a model of the project's own: the first model's score, and its images' estimated annotator seconds "
            "drawn from scratch, as the starting model's pre-annotations showed them, and with class-agnostic proposals (every box "
            "it finds, whatever its class, with the first label where its class maps to none), mean over seeds; savings against "
            "drawing from scratch:",
            "",
            f"| arm | first model's {m} | seconds from scratch | seconds as shown (saved) | seconds with proposals (saved) |",
            "|---|---|---|---|---|",
        ]
        for name, f in firsts.items():
            lines.append(
                f"| {name} | {f['map50']:.3f} | {f['seconds_scratch']:.0f} | {f['seconds_shown']:.0f} ({_pct(f['shown_saving'])}) | "
                f"{f['seconds_proposals']:.0f} ({_pct(f['proposals_saving'])}) |"
            )
    lines += ["", *verdicts(summary)]
    return "\n".join(lines) + "\n"


def _x(ci: Mapping[str, Any]) -> str:
    return f"{ci['estimate']:.2f}x [{ci['low']:.2f}, {ci['high']:.2f}]"


def speedup_markdown(arms: Mapping[str, Any]) -> list[str]:
    """The speed-up table (:func:`speedups`): one row per arm and round."""
    rows = [(name, s) for name, r in arms.items() for s in r.get("speedups", [])]
    if not rows:
        return []
    one = any("one_threshold" in s for _, s in rows)
    lines = [
        "Correcting the pre-annotations of each round's images against drawing every box (estimated annotator seconds, ratio "
        "of sums over seeds, 95% bootstrap interval, the seeds' own range beside it); the ceiling is every true box only "
        "verified, and the share captured is the part of that possible saving that was saved"
        + ("; the last column shows the same images at one threshold for every class" if one else "")
        + ":",
        "",
        "| arm | round | labels after | speed-up (seeds' range) | ceiling | share captured |"
        + (" at one threshold | seconds saved by the per-class rule |" if one else ""),
        "|---|---|---|---|---|---|" + ("---|---|" if one else ""),
    ]
    for name, s in rows:
        cap = s["captured"]
        line = (
            f"| {name} | {s['round']} | {s['labels']} | {_x(s['speedup'])} ({s['seeds_range'][0]:.2f}-{s['seeds_range'][1]:.2f}) | "
            f"{s['ceiling']:.2f}x | {cap['estimate']:.0%} [{cap['low']:.0%}, {cap['high']:.0%}] |"
        )
        if one:
            line += f" {_x(s['one_threshold'])} | {_pct(s['rule_saving'])} |" if "one_threshold" in s else " - | - |"
        lines.append(line)
    return lines


def verdicts(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per arm: on which axes its interval is above zero, below zero, or includes zero."""
    out = []
    ref = summary["reference"]
    for name, r in summary["arms"].items():
        if name == ref:
            continue
        parts = []
        for a in AXES:
            ci = r["savings"][a]
            if ci["low"] is not None and ci["low"] > 0:
                parts.append(f"saves {AXIS_TITLES[a]} (interval above zero)")
            elif ci["high"] is not None and ci["high"] < 0:
                parts.append(f"costs more {AXIS_TITLES[a]} than {ref} (interval below zero)")
            else:
                parts.append(f"{AXIS_TITLES[a]}: no difference shown (interval includes zero)")
        fd = r["final_diff"]
        final = "above" if fd["low"] > 0 else ("below" if fd["high"] < 0 else "not different from")
        out.append(f"* **{name}**: " + "; ".join(parts) + f"; its final score is {final} {ref}'s.")
    return out


def plot_curves(
    result: Mapping[str, Any],
    path: str | Path,
    metric: str = "map50",
    axes: Sequence[str] = AXES,
    table: CostTable = DEFAULT_COSTS,
    title: str | None = None,
    resamples: int = 2_000,
    reference: str = "random",
) -> Path:
    """Learning curves on the cost ``axes``: the mean over seeds, a 95% bootstrap band of the mean
    score per round, the ``reference`` arm dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = curves(result, metric, table)
    fig, panels = plt.subplots(1, len(axes), figsize=(5.2 * len(axes), 4.2), dpi=110, squeeze=False)
    for ax, axis in zip(panels[0], axes, strict=True):
        for name, c in cs.items():
            style: dict[str, Any] = {"color": "black", "linestyle": "--", "zorder": 3} if name == reference else {}
            x, y = c.mean(axis)
            rng = np.random.default_rng(0)
            draws = np.array([c.score[rng.integers(0, len(c.seeds), len(c.seeds))].mean(axis=0) for _ in range(resamples)])
            lo, hi = np.quantile(draws, [0.025, 0.975], axis=0)
            line = ax.plot(x, y, marker="o", markersize=3, label=f"{name} ({len(c.seeds)} seeds)", **style)[0]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.12)
        ax.set_xlabel(AXIS_TITLES[axis])
        ax.set_ylabel(metric.replace("map", "mAP").replace("_", "-") + " on the test split")
        ax.grid(alpha=0.3)
    panels[0][0].legend(fontsize=8)
    fig.suptitle(title or Path(str(result["config"]["data"])).name)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def report(
    out: str | Path,
    metric: str = "map50",
    table: CostTable = DEFAULT_COSTS,
    resamples: int = 10_000,
    arms: Sequence[str] | None = None,
    to: str | Path | None = None,
    seeds: Sequence[int] | None = None,
    reference: str = "random",
) -> str:
    """Write ``summary.json``, ``summary.md``, ``learning_curves.png`` (every axis) and
    ``effort_curve.png`` (annotator seconds) from ``out/results.json``; return the tables.

    Args:
        arms: only these arms (the reference always joins); default every arm.
        to: the folder for the summary and figures (default ``out``), e.g. one table per ablation.
        seeds: only these seeds (default every seed), so arms run on fewer seeds compare on equal terms.
        reference: the arm every other is compared with (default random), e.g. an ablation's own
            baseline arm so a change to the recipe is judged against the recipe it changes.

    Raises:
        SimulationError: an arm of ``arms`` or a seed of ``seeds`` has no record in the results.
    """
    out = Path(out)
    result = json.loads((out / RESULTS).read_text())
    known = {r["strategy"] for r in result.get("records", [])}
    unknown = [a for a in [*(arms or ()), reference] if a not in known]
    if unknown:
        raise SimulationError(f"no results for {', '.join(unknown)} in {out / RESULTS}; its arms: {', '.join(sorted(known))}")
    if arms:
        keep = {*arms, reference}
        result = {**result, "records": [r for r in result["records"] if r["strategy"] in keep]}
    if seeds:
        have = {int(r["seed"]) for r in result.get("records", [])}
        if not set(seeds) <= have:
            raise SimulationError(f"no results for seed {sorted(set(seeds) - have)} in {out / RESULTS}; its seeds: {sorted(have)}")
        result = {**result, "records": [r for r in result["records"] if int(r["seed"]) in set(seeds)]}
    out = Path(to) if to is not None else out
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result, metric, reference=reference, table=table, resamples=resamples)
    write_json_atomic(out / "summary.json", summary, indent=1)
    text = summary_markdown(summary)
    (out / "summary.md").write_text(text)
    plot_curves(result, out / "learning_curves.png", metric, table=table, reference=reference)
    plot_curves(result, out / "effort_curve.png", metric, axes=("seconds",), table=table, reference=reference)
    return text
