"""The label-savings study: budget arithmetic, the summary's figures, and a real tiny run (resume included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ml_backend.scoring.pool as scoring
import ml_backend.tools.study.loop as simulation
from ml_backend.al.effort import CLASSIC_COSTS, DEFAULT_COSTS, Corrections
from ml_backend.settings import Settings
from ml_backend.tools.study.loop import Arm, SimConfig, SimulationError, parse_arm, run_study
from ml_backend.tools.study.report import report, summarize, summary_markdown
from ml_backend.training.run import training_epochs


def _rec(
    strategy: str, seed: int, rnd: int, labels: int, m: float, rare: float, boxes_per_image: int = 1, drawn_share: float = 1.0
) -> dict:
    boxes = labels * boxes_per_image
    drawn = round(boxes * drawn_share)
    effort = {
        "images": labels,
        "gt_boxes": boxes,
        "accepted": boxes - drawn,
        "adjusted": 0,
        "class_changed": 0,
        "drawn": drawn,
        "deleted": 0,
    }
    return {
        "strategy": strategy,
        "seed": seed,
        "round": rnd,
        "labels": labels,
        "map50": m,
        "map50_95": m / 2,
        "per_class": {"cat": {"ap50": 0.5, "ap50_95": 0.2, "f1": 0.5}, "okapi": {"ap50": rare, "ap50_95": rare / 2, "f1": rare}},
        "wall_s": 10.0 + rnd,
        "select_s": 1.0,
        "train_s": 8.0,
        "eval_s": 1.0,
        "objects": boxes,
        "effort_total": effort,
        # the round's own images (10 a round): the same shares of boxes drawn and accepted
        "effort": {
            **effort,
            "images": 10,
            "gt_boxes": 10 * boxes_per_image,
            "accepted": 10 * boxes_per_image - round(10 * boxes_per_image * drawn_share),
            "drawn": round(10 * boxes_per_image * drawn_share),
        },
    }


def _known_study() -> dict:
    """Two seeds; uncertainty reaches random's final 0.4 at 10 + (0.4 - 0.2) / 0.3 * 10 labels, with
    two boxes per image, a quarter of them drawn (the rest accepted)."""
    records = []
    for seed, shift in ((0, -0.05), (1, 0.05)):
        for rnd, (labels, r, u) in enumerate([(10, 0.2, 0.2), (20, 0.3, 0.5), (30, 0.4, 0.6)]):
            records.append(_rec("random", seed, rnd, labels, r + shift, 0.1))
            records.append(_rec("uncertainty", seed, rnd, labels, u + shift, 0.4, boxes_per_image=2, drawn_share=0.25))
    return {"records": records, "dataset": {"objects_pool": {"cat": 90, "okapi": 3}}, "config": {"data": "known"}}


def test_summary_figures_are_exact_on_known_curves() -> None:
    s = summarize(_known_study(), "map50", resamples=200)
    assert s["rarest_class"] == "okapi" and s["target"] == pytest.approx(0.4)
    r, u = s["arms"]["random"], s["arms"]["uncertainty"]
    reach_labels = 10 + (0.4 - 0.2) / 0.3 * 10
    assert u["reach"]["images"] == pytest.approx(reach_labels)
    assert u["savings"]["images"]["estimate"] == pytest.approx(1 - reach_labels / 30)
    assert u["savings"]["boxes"]["estimate"] == pytest.approx(1 - 2 * reach_labels / 30)  # twice the boxes per image
    # seconds: random draws 1 box per image (2 + 7 s), uncertainty 2 boxes, a quarter drawn (2 + 1.5 x 1.6 + 0.5 x 7 s)
    per_image_r, per_image_u = 2 + 7.0, 2 + 1.5 * 1.6 + 0.5 * 7.0
    assert u["savings"]["seconds"]["estimate"] == pytest.approx(1 - per_image_u * reach_labels / (per_image_r * 30))
    assert u["savings"]["corrections"]["estimate"] == pytest.approx(1 - 0.5 * reach_labels / 30)
    assert u["final_diff"]["estimate"] == pytest.approx(0.2) and u["final_diff"]["excludes_zero"]
    assert u["rare_diff"]["estimate"] == pytest.approx(0.3)
    assert (u["final_min"], u["final_max"]) == (pytest.approx(0.55), pytest.approx(0.65))
    assert (u["totals"]["boxes"], r["totals"]["boxes"]) == (60, 30)
    assert u["round_s"] == pytest.approx(11.5)  # median over rounds 1 and 2 of both seeds
    assert "savings" not in r  # the reference
    table = summary_markdown(s)
    assert "| uncertainty | 2 |" in table and "interval above zero" in table


def test_the_speed_up_over_drawing_is_exact_on_known_rounds() -> None:
    arms = summarize(_known_study(), "map50", resamples=200)["arms"]
    # uncertainty: 10 images of 20 boxes a round, 5 drawn, 15 accepted: 2 x 10 + 7 x 20 = 160 s from
    # scratch against 2 x 10 + 1.6 x 15 + 7 x 5 = 79 s; every box verified: 2 x 10 + 1.6 x 20 = 52 s
    for row in arms["uncertainty"]["speedups"]:
        assert row["speedup"]["estimate"] == pytest.approx(160 / 79) and row["seeds_range"] == [2.03, 2.03]
        assert row["ceiling"] == pytest.approx(160 / 52) and row["captured"]["estimate"] == pytest.approx((160 - 79) / (160 - 52))
        assert "one_threshold" not in row
    assert [r["labels"] for r in arms["random"]["speedups"]] == [10, 20, 30]
    assert all(r["speedup"]["estimate"] == pytest.approx(1.0) and r["captured"]["estimate"] == 0 for r in arms["random"]["speedups"])
    table = summary_markdown(summarize(_known_study(), "map50", resamples=200))
    assert "| uncertainty | 2 | 30 | 2.03x [2.03, 2.03] (2.03-2.03) | 3.08x | 75% [75%, 75%] |" in table


def test_the_per_class_rule_is_compared_with_one_threshold_on_the_same_images() -> None:
    from ml_backend.tools.study.report import Curves, speedups

    def rec(seed: int, effort: dict, one: dict | None) -> dict:
        r = {"seed": seed, "round": 1, "labels": 4, "map50": 0.5, "per_class": {}, "effort_total": effort, "effort": effort}
        return r if one is None else {**r, "effort_one_threshold": one}

    right = {"images": 2, "gt_boxes": 4, "accepted": 4}  # 2 x 2 + 4 x 1.6 = 10.4 s
    records = [
        rec(0, right, {**right, "deleted": 3}),  # one threshold: 3 more boxes to delete, 16.4 s
        rec(1, {"images": 2, "gt_boxes": 4, "drawn": 4}, None),  # one threshold was its rule: 32 s both ways
    ]
    row = speedups(Curves(records, "map50", DEFAULT_COSTS, "x"), resamples=200)[0]
    assert row["one_threshold"]["estimate"] == pytest.approx(64 / 48.4)
    assert row["rule_saving"]["estimate"] == pytest.approx(1 - 42.4 / 48.4)
    assert row["speedup"]["estimate"] == pytest.approx(64 / 42.4)


def test_other_costs_apply_to_the_same_counts() -> None:
    cheap = summarize(_known_study(), resamples=50)["arms"]["uncertainty"]["totals"]["seconds"]
    classic = summarize(_known_study(), resamples=50, table=CLASSIC_COSTS)["arms"]["uncertainty"]["totals"]["seconds"]
    assert classic - cheap == pytest.approx(15 * (35.0 - 7.0))  # 15 drawn boxes per seed by round 2 (60 true boxes, a quarter)


def test_savings_count_from_where_a_noisy_reference_first_reaches_its_final_score() -> None:
    records = [_rec("random", 0, k, n, m, 0.0) for k, (n, m) in enumerate([(10, 0.1), (20, 0.5), (30, 0.4)])]
    records += [_rec("hybrid", 0, k, n, m, 0.0) for k, (n, m) in enumerate([(10, 0.1), (20, 0.2), (30, 0.45)])]
    s = summarize({"records": records, "dataset": {"objects_pool": {"cat": 5}}}, resamples=20)["arms"]
    assert s["random"]["reach"]["images"] == pytest.approx(17.5)
    assert s["hybrid"]["reach"]["images"] == pytest.approx(28.0)
    assert s["hybrid"]["savings"]["images"]["estimate"] == pytest.approx(1 - 28.0 / 17.5)


def test_summary_needs_the_reference() -> None:
    with pytest.raises(SimulationError, match="random"):
        summarize({"records": [_rec("hybrid", 0, 0, 10, 0.1, 0.0)], "dataset": {"objects_pool": {"cat": 1}}})


def test_arms_carry_settings_of_their_own() -> None:
    arm = parse_arm("unc-sum=uncertainty:UNCERTAINTY_AGGREGATION=sum:AL_CLASS_BALANCE_WEIGHT=0")
    assert arm == Arm("unc-sum", "uncertainty", (("UNCERTAINTY_AGGREGATION", "sum"), ("AL_CLASS_BALANCE_WEIGHT", "0")))
    assert parse_arm("hybrid") == Arm("hybrid", "hybrid")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategies": ("uncertainty",)}, "must include random"),
        ({"strategies": ("random", "oracle")}, "unknown strategy 'oracle'"),
        ({"strategies": ("random", "x=uncertainty:NOT_A_SETTING=1")}, "known setting"),
        ({"strategies": ("random", "a b=hybrid")}, "letters, digits"),
        ({"strategies": ("random", "random")}, "twice"),
        ({"step": 0}, "--step must be >= 1"),
        ({"test_fraction": 0.9}, "--test-fraction"),
        ({"seeds": ()}, "at least one seed"),
    ],
)
def test_config_errors_say_what_to_change(change: dict, message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        SimConfig(**{"data": "d", "format": "voc", "out": "o", "weights": "w.pt", **change})


def _cfg(data: Path, out: Path, weights: Path, **kw) -> SimConfig:
    base = dict(
        data=str(data),
        format="voc",
        out=str(out),
        weights=str(weights),
        strategies=("random", "uncertainty", "diversity", "hybrid"),
        initial=6,
        step=3,
        rounds=2,
        seeds=(0,),
        steps=2,
        imgsz=64,
        batch=4,
        test_fraction=0.25,
        device="cpu",
    )
    return SimConfig(**{**base, **kw})


def test_too_many_labels_for_the_pool(shapes_voc: Path, tmp_path: Path, tiny_weights) -> None:
    with pytest.raises(SimulationError, match="pool has only"):
        run_study(_cfg(shapes_voc, tmp_path / "o", tiny_weights("detect"), initial=20, step=10, rounds=3), show_progress=False)


def test_a_tiny_study_uses_the_servers_scoring_never_touches_the_test_split_and_resumes(
    shapes_voc: Path, tmp_path: Path, tiny_weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tiny_weights("detect")
    out = tmp_path / "study"
    scored: list[tuple[str, int, int]] = []
    real_score = scoring.score_tasks

    def spy(tasks, served, predictor, settings, progress=False):  # noqa: ANN001, ANN202
        scored.append((settings.al_strategy, settings.al_batch, sum(1 for t in tasks if t["annotations"])))
        return real_score(tasks, served, predictor, settings, progress)

    monkeypatch.setattr(scoring, "score_tasks", spy)
    shown_by: list[tuple[str, int]] = []
    real_pre = simulation.preannotations

    def pre_spy(study, weights, ids, settings, agnostic=False, display=None):  # noqa: ANN001, ANN202
        if not agnostic:
            shown_by.append((Path(weights).name, len(ids)))
        return real_pre(study, weights, ids, settings, agnostic, display)

    monkeypatch.setattr(simulation, "preannotations", pre_spy)
    trained: list[int] = []
    real_train = simulation._train_round

    def crash_on_fourth(study, labeled, base, target, settings, **kw):  # noqa: ANN001, ANN003, ANN202
        trained.append(len(labeled))
        if len(trained) == 4:
            raise RuntimeError("killed")
        return real_train(study, labeled, base, target, settings, **kw)

    monkeypatch.setattr(simulation, "_train_round", crash_on_fourth)
    legacy = {"first_labels": "random"}  # every arm starts from the same random draw (how the earlier studies ran)
    with pytest.raises(RuntimeError, match="killed"):
        run_study(_cfg(shapes_voc, out, weights, **legacy), show_progress=False)
    before = json.loads((out / "results.json").read_text())["records"]
    # random's rounds 0-2 and uncertainty's round 0 (the shared model, no training) were saved before the crash
    assert sorted((r["strategy"], r["round"]) for r in before) == [("random", 0), ("random", 1), ("random", 2), ("uncertainty", 0)]

    monkeypatch.setattr(simulation, "_train_round", real_train)
    calls_before = len(scored)
    result = run_study(_cfg(shapes_voc, out, weights, **legacy), show_progress=False)
    records = result["records"]
    assert len(records) == 4 * 3
    # the three finished rounds were kept as they were, not run again
    kept = {(r["strategy"], r["round"]): r for r in records}
    assert all(kept[(r["strategy"], r["round"])] == r for r in before)
    # every model-based strategy ranked the pool with the server's score_tasks: its strategy, AL_BATCH = step, the labels so far
    assert sorted(scored[calls_before:]) == sorted((s, 3, n) for s in ("uncertainty", "diversity", "hybrid") for n in (6, 9))

    test_names = {Path(p).name for p in _test_images(shapes_voc)}
    ds = simulation.load_dataset(shapes_voc, "voc")
    by = {(r["strategy"], r["round"]): r for r in records}
    round0 = {k: v for k, v in by[("random", 0)].items() if k not in ("strategy", "wall_s")}
    for s in ("random", "uncertainty", "diversity", "hybrid"):
        shared = {k: v for k, v in by[(s, 0)].items() if k not in ("strategy", "wall_s")}
        assert set(by[(s, 0)]["effort_proposals"]) == set(by[(s, 0)]["effort"])  # what class-agnostic proposals would have cost
        assert shared == round0  # one initial draw and one round-0 model per seed, for every strategy
        ids = by[(s, 2)]["labeled_ids"]
        assert [by[(s, k)]["labels"] for k in range(3)] == [6, 9, 12]
        assert len(set(ids)) == 12 and ids[:9] == by[(s, 1)]["labeled_ids"]
        assert not {f"img_{i:02d}.jpg" for i in ids} & test_names  # ids index the sorted images, img_00 first
        for k in range(3):
            r = by[(s, k)]
            assert 0.0 <= r["map50_95"] <= r["map50"] <= 1.0
            assert set(r["per_class"]) >= {"circle", "square", "triangle"} and all(
                {"ap50", "ap50_95", "f1"} <= set(v) for v in r["per_class"].values()
            )
            assert r["optimizer_steps"] >= 2 and r["train_s"] > 0
            assert r["epochs"] == training_epochs(len(r["labeled_ids"]), Settings(train_steps=2, train_batch=4))  # the server's rule
            assert r["objects"] == sum(len(ds.items[i].boxes) for i in r["labeled_ids"])
            # effort: every image labeled this round counted once, every true box accounted for, the sums kept
            sel = r["selected"]
            assert [t["id"] for t in sel] == (r["labeled_ids"] if k == 0 else r["labeled_ids"][-3:])
            for t in sel:
                truth = len(ds.items[t["id"]].boxes)
                assert t["images"] == 1 and t["gt_boxes"] == truth
                matched = truth - t["drawn"]  # every true box is drawn or matched to a shown one
                assert t["accepted"] + t["class_changed"] <= matched <= t["accepted"] + t["class_changed"] + t["adjusted"]
            assert r["effort"] == {key: sum(t[key] for t in sel) for key in r["effort"]}
            assert r["effort_total"]["gt_boxes"] == r["objects"] and r["effort_total"]["images"] == r["labels"]
    assert result["dataset"]["test"] + result["dataset"]["pool"] == 40

    # pre-annotations come from the model served in that round: the starting one for round 0, then the
    # chain's previous round (model-based arms get theirs from the same score_tasks pass that chose)
    assert shown_by[0] == (weights.name, 6)
    assert ("random-seed0-round1.pt", 3) in shown_by and ("seed0-round0.pt", 3) in shown_by

    table = report(out, resamples=200)
    assert "| hybrid |" in table and "annotator seconds saved" in table
    assert (out / "learning_curves.png").stat().st_size > 10_000 and (out / "effort_curve.png").stat().st_size > 5_000
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"random", "uncertainty", "diversity", "hybrid"}
    assert set(summary["arms"]["hybrid"]["savings"]) == {"images", "boxes", "corrections", "seconds"}

    with pytest.raises(SimulationError, match="other settings"):
        run_study(_cfg(shapes_voc, out, weights, steps=3, **legacy), show_progress=False)
    with pytest.raises(SimulationError, match="first_labels: 'random' there, 'server' now"):
        run_study(_cfg(shapes_voc, out, weights), show_progress=False)


def test_a_new_projects_first_labels_are_the_servers_coverage_order_and_its_first_model_the_servers(
    own_classes_voc: Path, tmp_path: Path, tiny_weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From weights that know none of the dataset's classes, round 0 runs the server's path: the
    model-based arms label the top of the cold-start order, the first model gets a head for the
    dataset's classes, and the proposals' cost is counted beside what was shown."""
    weights = tiny_weights("detect")
    used: list[tuple[str, int]] = []
    real = scoring._strategy
    monkeypatch.setattr(
        scoring, "_strategy", lambda pool, s, sv: used.append((real(pool, s, sv).name, pool.n_labeled)) or real(pool, s, sv)
    )
    cfg = _cfg(own_classes_voc, tmp_path / "study", weights, strategies=("random", "uncertainty", "objects"), rounds=1)
    result = run_study(cfg, show_progress=False)
    by = {(r["strategy"], r["round"]): r for r in result["records"]}
    # round 0: the cold-start order (AL_COLD_START_STRATEGY, random by default) on an unlabeled pool for both
    # model-based arms, then their own order on the first model
    assert sorted(used) == [("objects", 6), ("random", 0), ("random", 0), ("uncertainty", 6)]
    first = by[("uncertainty", 0)]["labeled_ids"]
    assert by[("objects", 0)]["labeled_ids"] == first != by[("random", 0)]["labeled_ids"]
    assert {k: v for k, v in by[("objects", 0)].items() if k not in ("strategy", "wall_s", "select_s")} == {
        k: v for k, v in by[("uncertainty", 0)].items() if k not in ("strategy", "wall_s", "select_s")
    }  # the same first labels: one first model, shared
    assert by[("random", 0)]["labeled_ids"] == sorted(
        np.random.default_rng(0)
        .choice(simulation.Study(cfg, simulation.load_dataset(own_classes_voc, "voc")).pool, 6, replace=False)
        .tolist()
    )
    from ml_backend.inference.model import load_weights

    for arm in ("random", "uncertainty", "objects"):
        r = by[(arm, 0)]
        assert r["effort"]["accepted"] == r["effort"]["adjusted"] == r["effort"]["class_changed"] == r["effort"]["deleted"] == 0
        assert r["effort"]["drawn"] == r["effort"]["gt_boxes"]  # the weights know none of these classes: nothing shown
        p = r["effort_proposals"]
        assert p["images"] == 6 and p["gt_boxes"] == r["effort"]["gt_boxes"] and p["drawn"] <= r["effort"]["drawn"]
        names = load_weights(str(tmp_path / "study" / "models" / f"{arm}-seed0-round0.pt")).names
        assert names == {0: "box", 1: "ring", 2: "wedge"}  # the dataset's classes
    table = report(tmp_path / "study", resamples=200)
    assert "| objects | " in table and "seconds with proposals (saved) |" in table
    first = json.loads((tmp_path / "study" / "summary.json").read_text())["arms"]["objects"]["first_round"]
    assert first["seconds_shown"] == pytest.approx(DEFAULT_COSTS.seconds(Corrections.from_json(by[("objects", 0)]["effort_total"])))
    boxes = by[("objects", 0)]["effort"]["gt_boxes"]
    assert first["seconds_scratch"] == pytest.approx(6 * DEFAULT_COSTS.image + boxes * DEFAULT_COSTS.draw) == first["seconds_shown"]
    assert first["shown_saving"]["estimate"] == pytest.approx(0.0)  # nothing shown: what drawing from scratch costs


def _test_images(root: Path) -> list[Path]:
    from ml_backend.tools.datasets import load_dataset

    ds = load_dataset(root, "voc")
    return [ds.items[i].path for i in simulation.test_split(ds, 0.25)]


def test_pretrain_on_a_dataset_gives_weights_with_its_classes(shapes_voc: Path, tmp_path: Path) -> None:
    from ml_backend.inference.model import load_weights
    from ml_backend.tools.starter import pretrain_model

    out = pretrain_model(tmp_path / "pre.pt", data=shapes_voc, fmt="voc", epochs=1, imgsz=64, batch=8, device="cpu")
    assert out.is_file() and not (tmp_path / "pre.tmp").exists()
    assert sorted(load_weights(str(out)).names.values()) == ["circle", "square", "triangle"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "a,b"], "--seeds must be"),
        (["--strategies", "random,best"], "unknown strategy"),
        (["--costs", "draw=slow"], "not a number"),
        (["--weights", "nope.pt"], "is not a file"),
        (["--arms", "hybrid"], "go with --report only"),
        (["--report-to", "elsewhere"], "go with --report only"),
        (["--reference", "hybrid"], "go with --report only"),
    ],
)
def test_simulate_command_reports_bad_arguments(
    shapes_voc: Path, tmp_path: Path, tiny_weights, capsys, extra: list[str], message: str
) -> None:
    from ml_backend.__main__ import main

    args = [
        "simulate",
        "--data",
        str(shapes_voc),
        "--format",
        "voc",
        "--weights",
        str(tiny_weights("detect")),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err


def test_simulate_command_needs_the_data_except_to_report(tmp_path: Path, capsys) -> None:
    from ml_backend.__main__ import main

    assert main(["simulate", "--out", str(tmp_path / "o"), "--format", "voc"]) == 2
    assert "--data, --weights: needed to run a study" in capsys.readouterr().err


def test_a_report_of_some_arms_to_another_folder(tmp_path: Path, capsys) -> None:
    from ml_backend.__main__ import main

    study = _known_study()
    study["records"] += [{**r, "strategy": "hybrid"} for r in study["records"] if r["strategy"] == "uncertainty"]
    (tmp_path / "results.json").write_text(json.dumps(study))
    assert main(["simulate", "--report", "--out", str(tmp_path), "--arms", "hybrid", "--report-to", str(tmp_path / "some")]) == 0
    assert set(json.loads((tmp_path / "some" / "summary.json").read_text())["arms"]) == {"random", "hybrid"}
    assert (tmp_path / "some" / "effort_curve.png").is_file() and not (tmp_path / "summary.json").exists()

    assert main(["simulate", "--report", "--out", str(tmp_path)]) == 0  # every arm, next to the results
    assert set(json.loads((tmp_path / "summary.json").read_text())["arms"]) == {"random", "uncertainty", "hybrid"}

    with pytest.raises(SimulationError, match="no results for tta in .*its arms: hybrid, random, uncertainty"):
        report(tmp_path, arms=["tta"], resamples=20)

    assert main(["simulate", "--report", "--out", str(tmp_path), "--seeds", "1", "--report-to", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert one["arms"]["uncertainty"]["seeds"] == 1 and one["target"] == pytest.approx(0.35)  # one seed, 0: random ends at 0.4 - 0.05
    with pytest.raises(SimulationError, match=r"no results for seed \[7\]"):
        report(tmp_path, seeds=[7], resamples=20)


def test_a_report_against_another_reference_arm(tmp_path: Path) -> None:
    from ml_backend.__main__ import main

    study = _known_study()
    study["records"] += [{**r, "strategy": "hybrid"} for r in study["records"] if r["strategy"] == "uncertainty"]
    (tmp_path / "results.json").write_text(json.dumps(study))
    args = [
        "simulate",
        "--report",
        "--out",
        str(tmp_path),
        "--arms",
        "hybrid",
        "--reference",
        "uncertainty",
        "--report-to",
        str(tmp_path / "r"),
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["reference"] == "uncertainty" and set(summary["arms"]) == {"uncertainty", "hybrid"}  # random left out
    same = summary["arms"]["hybrid"]  # a copy of its reference: no difference on any axis
    assert same["final_diff"]["estimate"] == 0.0 and same["savings"]["images"]["estimate"] == 0.0
    assert "vs uncertainty" in (tmp_path / "r" / "summary.md").read_text()
    with pytest.raises(SimulationError, match="no results for tta in"):
        report(tmp_path, reference="tta", resamples=20)


def test_fixed_epochs_on_a_yolo_dataset(tmp_path: Path, tiny_weights) -> None:
    from ml_backend.tools.synthetic import make_image
    from tests.tools.test_datasets import write_yolo

    rng = np.random.default_rng(1)
    truth = []
    for i in range(24):
        s = make_image(rng, 96, 64)
        truth.append((f"y_{i:02d}.jpg", [(sh.cls, tuple(round(v) for v in sh.xyxy)) for sh in s.shapes], s.image))
    data = write_yolo(tmp_path / "yolo", truth)
    cfg = _cfg(
        data, tmp_path / "o", tiny_weights("detect"), format="yolo", strategies=("random",), initial=4, step=2, rounds=1, epochs=2, steps=50
    )
    records = run_study(cfg, show_progress=False)["records"]
    assert [(r["round"], r["labels"], r["epochs"]) for r in records] == [(0, 4, 2), (1, 6, 2)]  # --epochs wins over --steps
    assert [r["optimizer_steps"] for r in records] == [2, 4]  # 2 epochs of ceil(4/4) and ceil(6/4) batches


def test_the_server_loop_judges_each_round_and_continues_from_the_served_model(shapes_voc: Path, tmp_path: Path, tiny_weights) -> None:
    """--server-loop: labels held out as the server holds them out, each new model judged by the
    promotion rule, the served one measured on the test split."""
    cfg = _cfg(shapes_voc, tmp_path / "loop", tiny_weights("detect"), strategies=("random",), server_loop=True)
    records = run_study(cfg, show_progress=False)["records"]
    assert [r["round"] for r in records] == [0, 1, 2]
    # the starting model already has these classes (a COCO model would not: its round 0 is served unjudged)
    for r in records:
        j = r["judgement"]
        assert j["rule"] in ("too_few_heldout", "bootstrap", "no_evidence") and j["heldout"] >= 1
        assert 0.0 <= r["map50"] <= 1.0
    # What the served model shows is what the server would show: its rule, chosen when it was judged
    # (SCORE_THRESHOLD empty); each later round's images are also priced at one threshold when the rules differ.
    for before, r in zip(records, records[1:]):
        shown = before["display"]
        assert shown["default"] == 0.25 and set(shown["thresholds"]) <= {"circle", "square", "triangle"}
        assert ("effort_one_threshold" in r) == (bool(shown["thresholds"]) or shown["merge_classes"])


def test_the_label_studio_queue_takes_tasks_as_label_studio_serves_them_and_rescores_as_the_server_does(
    shapes_voc: Path, tmp_path: Path, tiny_weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--queue label-studio: the server's AL_CLUSTERS and AL_BATCH, the tasks Label Studio would
    serve (top task of the cluster labeled least), a re-scoring every RESCORE_MIN_NEW_LABELS labels."""
    monkeypatch.setenv("RESCORE_MIN_NEW_LABELS", "2")
    monkeypatch.setenv("AL_CLUSTERS", "3")
    calls: list[tuple[int, int, int, list[int]]] = []
    real_score = scoring.score_tasks

    def spy(tasks, served, predictor, settings, progress=False):  # noqa: ANN001, ANN202
        pooled = real_score(tasks, served, predictor, settings, progress)
        served_now = simulation.served_next(pooled.scores, 2)
        calls.append((settings.al_clusters, settings.al_batch, sum(1 for t in tasks if t["annotations"]), served_now))
        return pooled

    monkeypatch.setattr(scoring, "score_tasks", spy)
    cfg = _cfg(shapes_voc, tmp_path / "ls", tiny_weights("detect"), strategies=("random", "uncertainty"), rounds=1, queue="label-studio")
    records = run_study(cfg, show_progress=False)["records"]
    # round 0 (6 labels: 2 + 2 + 2) and round 1 (3 labels: 2 + 1), each pass with the labels taken so far
    assert [(c[0], c[1], c[2]) for c in calls] == [(3, 100, 0), (3, 100, 2), (3, 100, 4), (3, 100, 6), (3, 100, 8)]
    by = {(r["strategy"], r["round"]): r for r in records}
    taken = by[("uncertainty", 1)]["labeled_ids"]
    # what each pass served first is what was labeled next
    assert taken[:6] == calls[0][3] + calls[1][3] + calls[2][3] and taken[6:] == calls[3][3] + calls[4][3][:1]
    assert len(set(taken)) == 9
    with pytest.raises(SimulationError, match="--queue"):
        _cfg(shapes_voc, tmp_path / "x", tiny_weights("detect"), queue="sideways")


@pytest.mark.parametrize(
    ("tasks", "solved", "expected"),
    [
        ([(1, 0, 0.9), (2, 0, 0.8), (3, 1, 0.1)], None, [1, 3, 2]),
        ([(1, 0, 0.9), (2, 0, 0.8), (3, 1, 0.1)], {1: 2}, [1, 2, 3]),  # cluster 1 already has two labels
        ([(1, 0, 0.9), (2, 1, 0.8), (3, 1, 0.7)], {0: 1}, [2, 1, 3]),
    ],
)
def test_serving_order_counts_what_the_annotator_already_labeled(tasks, solved, expected) -> None:
    from integrations.queue_view import serving_order

    assert serving_order(tasks, solved=solved) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"initial": 50, "step": 50, "steps": 300, "imgsz": 640, "batch": 16, "device": "auto"}),
        (
            {"RETRAIN_MIN_NEW_LABELS": "30", "TRAIN_STEPS": "120", "TRAIN_IMGSZ": "480", "TRAIN_BATCH": "-1", "DEVICE": "cpu"},
            {"initial": 30, "step": 30, "steps": 120, "imgsz": 480, "batch": 16, "device": "cpu"},
        ),
        ({"AL_BATCH": "40", "PORT": "1"}, {"initial": 50, "steps": 300, "epochs": 0}),  # queue settings stay the server's
        ({"TRAIN_EPOCHS": "12"}, {"steps": 300, "epochs": 12}),  # a server that trains by epochs
    ],
)
def test_the_server_preset_is_the_servers_loop_at_its_settings(env: dict[str, str], expected: dict) -> None:
    p = simulation.preset("server", env)
    assert {k: p[k] for k in expected} == expected
    assert (p["queue"], p["server_loop"], p["seeds"], p["rounds"]) == ("label-studio", True, 3, 3)


@pytest.mark.parametrize(
    ("name", "env", "message"),
    [
        ("server", {"RETRAIN_MIN_NEW_LABELS": "0"}, "RETRAIN_MIN_NEW_LABELS"),
        ("server", {"TRAIN_STEPS": "many"}, "TRAIN_STEPS"),
        ("laptop", {}, "--preset must be one of cpu, gpu, server"),
    ],
)
def test_a_preset_that_cannot_be_run_says_what_to_change(name: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        simulation.preset(name, env)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {"initial": 20, "steps": 100, "imgsz": 320, "queue": "top", "server_loop": False, "seeds": (0, 1, 2, 3, 4)}),
        (["--preset", "cpu"], {"initial": 20, "steps": 60, "imgsz": 320, "queue": "top", "server_loop": False}),
        (["--preset", "server"], {"initial": 50, "step": 50, "steps": 300, "imgsz": 640, "queue": "label-studio", "server_loop": True}),
        (
            ["--preset", "server", "--imgsz", "320", "--queue", "top", "--seeds", "0,7"],
            {"initial": 50, "imgsz": 320, "queue": "top", "server_loop": True, "seeds": (0, 7)},
        ),
        (["--preset", "cpu", "--server-loop", "--queue", "label-studio"], {"steps": 60, "queue": "label-studio", "server_loop": True}),
        (["--preset", "server", "--no-server-loop", "--epochs", "3"], {"initial": 50, "server_loop": False, "epochs": 3}),
    ],
)
def test_the_simulate_command_takes_defaults_then_the_preset_then_the_flags(
    flags: list[str], expected: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from ml_backend.tools.cli import _simulate_arguments, _study_config

    for name in ("RETRAIN_MIN_NEW_LABELS", "TRAIN_STEPS", "TRAIN_EPOCHS", "TRAIN_IMGSZ", "TRAIN_BATCH", "DEVICE"):
        monkeypatch.delenv(name, raising=False)
    parser = argparse.ArgumentParser()
    _simulate_arguments(parser)
    args = parser.parse_args(["--data", "d", "--format", "voc", "--weights", "w.pt", "--out", "o", "--strategies", "random", *flags])
    cfg = _study_config(args)
    assert {k: getattr(cfg, k) for k in expected} == expected
