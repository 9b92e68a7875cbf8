"""The budget curve: every (labels, recipe) trained as the server's first retraining and measured on the test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_backend.al.effort import DEFAULT_COSTS, Corrections
from ml_backend.tools.study.budget import Recipe, budget_markdown, run_budget_curve
from ml_backend.tools.study.loop import SimulationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("320x60x8", Recipe(320, 60, 8)), (" 640x300x16 ", Recipe(640, 300, 16))],
)
def test_a_recipe_is_imgsz_steps_batch(text: str, expected: Recipe) -> None:
    assert Recipe.parse(text) == expected


@pytest.mark.parametrize("bad", ["640x300", "640x0x16", "big", "640x300x16x2"])
def test_a_malformed_recipe_says_how_to_write_one(bad: str) -> None:
    with pytest.raises(SimulationError, match="IMGSZxSTEPSxBATCH"):
        Recipe.parse(bad)


def test_the_curve_trains_each_recipe_measures_it_on_the_test_split_and_resumes(shapes_voc: Path, tmp_path: Path, tiny_weights) -> None:
    weights = tiny_weights("detect")
    recipes = [Recipe(64, 2, 4), Recipe(64, 4, 4)]
    out = tmp_path / "curve"
    result = run_budget_curve(str(shapes_voc), "voc", str(weights), out, recipes, labels=(6,), seeds=(0,), show_progress=False)
    rows = result["rows"]
    assert [(r["labels"], r["recipe"]) for r in rows] == [(6, "64px-2steps-4batch"), (6, "64px-4steps-4batch")]
    for r in rows:
        c = Corrections.from_json(r["counts"])
        assert c.images == 10  # the test split of 40 images (a quarter), never trained on
        assert c.accepted + c.adjusted + c.drawn >= c.gt_boxes - c.class_changed  # every true box accounted for
        scratch = DEFAULT_COSTS.seconds(Corrections(images=c.images, gt_boxes=c.gt_boxes, drawn=c.gt_boxes))
        assert r["scratch_seconds"] == pytest.approx(scratch, abs=0.1)
        assert r["speedup"] == pytest.approx(scratch / DEFAULT_COSTS.seconds(c), abs=1e-3)
        assert r["train_s"] > 0 and 0 <= r["map50"] <= 1 and r["ceiling"] > 1 and r["time_budget_min"] == 0
        tight = r["tightness"]["all"]
        # the same-class matches: accepted, or adjusted without a class change
        assert c.accepted + c.adjusted - c.class_changed <= tight["matched"] <= c.accepted + c.adjusted
        assert tight["matched"] == sum(r["tightness"][k]["matched"] for k in ("small", "medium", "large"))
        if tight["matched"]:
            assert 0.5 <= tight["median_iou"] <= 1 and tight["kept_share"] == pytest.approx(c.accepted / tight["matched"], abs=1e-3)
        bars = r["speedup_by_accept_iou"]
        assert bars["0.85"] == r["speedup"] and bars["0.7"] >= bars["0.85"] >= bars["0.9"]  # a lower bar accepts more
        assert (out / f"6-labels-{r['recipe']}" / "results.json").is_file()
    assert (out / "budget.png").stat().st_size > 5_000
    assert "| 6 | 64px-2steps-4batch | 1 |" in (out / "budget.md").read_text()
    # a second call measures nothing again
    before = json.loads((out / "budget.json").read_text())
    again = run_budget_curve(str(shapes_voc), "voc", str(weights), out, recipes, labels=(6,), seeds=(0,), show_progress=False)
    assert again["rows"] == before["rows"]
    # other inference sizes are measured on the models already trained; at its training size a model serves as measured
    trained = {r["recipe"]: (out / f"6-labels-{r['recipe']}" / "results.json").read_text() for r in rows}
    served = run_budget_curve(
        str(shapes_voc), "voc", str(weights), out, recipes, labels=(6,), seeds=(0,), show_progress=False, serve_sizes=(64, 96)
    )
    for r in served["rows"]:
        assert (out / f"6-labels-{r['recipe']}" / "results.json").read_text() == trained[r["recipe"]]  # nothing trained again
        assert set(r["served_at"]) == {"64", "96"}
        assert (r["served_at"]["64"]["speedup"], r["served_at"]["64"]["counts"]) == (r["speedup"], r["counts"])
        assert Corrections.from_json(r["served_at"]["96"]["counts"]).images == 10
    assert "| 6 | 64px-2steps-4batch | 96 | 1 |" in (out / "budget.md").read_text()


def test_the_table_averages_seeds_and_shows_their_range() -> None:
    row = {"labels": 40, "recipe": "r", "train_s": 10.0, "map50": 0.2, "ceiling": 3.0, "counts": {"accepted": 1}}
    text = budget_markdown([{**row, "seed": 0, "speedup": 1.0}, {**row, "seed": 1, "speedup": 2.0, "train_s": 30.0}])
    assert text.splitlines()[2] == "| 40 | r | 2 | 20 | 0.200 | 1.50x (1.00-2.00) | 3.0x | 2 / 0 / 0 / 0 | nan | nan |"
    budgeted = budget_markdown([{**row, "seed": 0, "speedup": 1.0}, {**row, "seed": 0, "speedup": 2.0, "time_budget_min": 10.0}])
    assert budgeted.splitlines()[2:] == [
        "| 40 | r | 1 | 10 | 0.200 | 1.00x (1.00-1.00) | 3.0x | 1 / 0 / 0 / 0 | nan | nan |",
        "| 40 | r (at most 10 min) | 1 | 10 | 0.200 | 2.00x (2.00-2.00) | 3.0x | 1 / 0 / 0 / 0 | nan | nan |",
    ]


def test_the_table_of_other_inference_sizes_averages_seeds() -> None:
    at = {"speedup": 1.0, "counts": {"accepted": 2, "drawn": 1}, "tightness": {"median_iou": 0.8, "median_edge_error_px": 1.0}}
    row = {"labels": 40, "recipe": "r", "train_s": 10.0, "map50": 0.2, "ceiling": 3.0, "counts": {}, "speedup": 1.0}
    rows = [
        {**row, "seed": 0, "served_at": {"480": at}},
        {**row, "seed": 1, "served_at": {"480": {**at, "speedup": 2.0, "tightness": {"median_iou": 0.9, "median_edge_error_px": 2.0}}}},
    ]
    lines = budget_markdown(rows).splitlines()
    assert lines[-1] == "| 40 | r | 480 | 2 | 1.50x (1.00-2.00) | 4 / 0 / 2 / 0 | 0.85 | 1.5 |"
