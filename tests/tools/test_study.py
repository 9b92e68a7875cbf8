"""The label-savings study: budget arithmetic, the summary's figures, and a real tiny run (resume included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ml_backend.scoring.pool as scoring
import ml_backend.tools.study.loop as simulation
from ml_backend.tools.study.loop import SimConfig, SimulationError, epochs_for_steps, run_study
from ml_backend.tools.study.report import labels_to_reach, report, summarize
from tests.tools.test_datasets import write_voc


@pytest.mark.parametrize(
    ("steps", "n_train", "batch", "epochs"),
    [(100, 20, 8, 34), (100, 200, 8, 4), (10, 8, 8, 10), (1, 500, 16, 1), (64, 16, 16, 64)],
)
def test_budget_in_steps_gives_small_sets_more_epochs(steps: int, n_train: int, batch: int, epochs: int) -> None:
    assert epochs_for_steps(steps, n_train, batch) == epochs


@pytest.mark.parametrize(
    ("values", "target", "expected"),
    [
        ([0.1, 0.3, 0.5], 0.4, 25.0),
        ([0.1, 0.3, 0.5], 0.1, 10.0),
        ([0.1, 0.3, 0.5], 0.6, None),
        ([0.2, 0.2, 0.4], 0.2, 10.0),
        ([0.0, 0.5, 0.4], 0.45, 19.0),
    ],
)
def test_labels_to_reach(values: list[float], target: float, expected: float | None) -> None:
    got = labels_to_reach(np.array([10, 20, 30]), np.array(values), target)
    assert got == (None if expected is None else pytest.approx(expected))


def _rec(strategy: str, seed: int, rnd: int, labels: int, m: float, rare: float) -> dict:
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
        "objects": labels * (2 if strategy == "uncertainty" else 1),
    }


def test_summary_figures_are_exact_on_known_curves() -> None:
    records = []
    for seed, shift in ((0, -0.05), (1, 0.05)):
        for rnd, (labels, r, u) in enumerate([(10, 0.2, 0.2), (20, 0.3, 0.5), (30, 0.4, 0.6)]):
            records.append(_rec("random", seed, rnd, labels, r + shift, 0.1))
            records.append(_rec("uncertainty", seed, rnd, labels, u + shift, 0.4))
    result = {"records": records, "dataset": {"objects_pool": {"cat": 90, "okapi": 3}}}
    s = summarize(result, "map50")
    assert s["rarest_class"] == "okapi"
    assert s["target"] == pytest.approx(0.4)
    r, u = s["strategies"]["random"], s["strategies"]["uncertainty"]
    assert r["aulc"] == pytest.approx((0.25 + 0.35) / 2)  # trapezoids over 20 labels: (0.2+0.3)/2, (0.3+0.4)/2
    assert u["aulc"] == pytest.approx((0.35 + 0.55) / 2)
    assert u["labels_to_match"] == pytest.approx(10 + (0.4 - 0.2) / 0.3 * 10)
    assert u["savings"] == pytest.approx(1 - u["labels_to_match"] / 30)
    assert r["savings"] == pytest.approx(0.0)
    assert (u["final_min"], u["final_max"]) == (pytest.approx(0.55), pytest.approx(0.65))
    assert u["rare_gain"] == pytest.approx(0.3)
    assert (u["objects_final"], r["objects_final"]) == (60, 30)
    assert u["round_s"] == pytest.approx(11.5)  # median over rounds 1 and 2 of both seeds


def test_savings_count_from_where_a_noisy_reference_first_reaches_its_final_score() -> None:
    records = [_rec("random", 0, k, n, m, 0.0) for k, (n, m) in enumerate([(10, 0.1), (20, 0.5), (30, 0.4)])]
    records += [_rec("hybrid", 0, k, n, m, 0.0) for k, (n, m) in enumerate([(10, 0.1), (20, 0.2), (30, 0.45)])]
    s = summarize({"records": records, "dataset": {"objects_pool": {"cat": 5}}})["strategies"]
    assert s["random"]["labels_to_match"] == pytest.approx(17.5) and s["random"]["savings"] == pytest.approx(0.0)
    assert s["hybrid"]["labels_to_match"] == pytest.approx(28.0)
    assert s["hybrid"]["savings"] == pytest.approx(1 - 28.0 / 17.5)


def test_summary_needs_the_reference() -> None:
    with pytest.raises(SimulationError, match="random"):
        summarize({"records": [_rec("hybrid", 0, 0, 10, 0.1, 0.0)], "dataset": {"objects_pool": {"cat": 1}}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategies": ("uncertainty",)}, "must include random"),
        ({"strategies": ("random", "oracle")}, "unknown strategies"),
        ({"step": 0}, "--step must be >= 1"),
        ({"test_fraction": 0.9}, "--test-fraction"),
        ({"seeds": ()}, "at least one seed"),
    ],
)
def test_config_errors_say_what_to_change(change: dict, message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        SimConfig(**{"data": "d", "format": "voc", "out": "o", "weights": "w.pt", **change})


@pytest.fixture(scope="module")
def shapes_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml_backend.tools.synthetic import make_image

    rng = np.random.default_rng(0)
    truth = []
    for i in range(40):
        s = make_image(rng, 96, 64)
        truth.append((f"img_{i:02d}.jpg", [(sh.cls, tuple(round(v) for v in sh.xyxy)) for sh in s.shapes], s.image))
    return write_voc(tmp_path_factory.mktemp("voc") / "shapes", truth)


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
    trained: list[int] = []
    real_train = simulation._train_round

    def crash_on_fourth(study, labeled, base, target, seed):  # noqa: ANN001, ANN202
        trained.append(len(labeled))
        if len(trained) == 4:
            raise RuntimeError("killed")
        return real_train(study, labeled, base, target, seed)

    monkeypatch.setattr(simulation, "_train_round", crash_on_fourth)
    with pytest.raises(RuntimeError, match="killed"):
        run_study(_cfg(shapes_voc, out, weights), show_progress=False)
    before = json.loads((out / "results.json").read_text())["records"]
    # random's rounds 0-2 and uncertainty's round 0 (the shared model, no training) were saved before the crash
    assert sorted((r["strategy"], r["round"]) for r in before) == [("random", 0), ("random", 1), ("random", 2), ("uncertainty", 0)]

    monkeypatch.setattr(simulation, "_train_round", real_train)
    calls_before = len(scored)
    result = run_study(_cfg(shapes_voc, out, weights), show_progress=False)
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
            assert r["objects"] == sum(len(ds.items[i].boxes) for i in r["labeled_ids"])
    assert result["dataset"]["test"] + result["dataset"]["pool"] == 40

    table = report(out)
    assert "| hybrid |" in table and "label savings" in table
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert set(json.loads((out / "summary.json").read_text())["strategies"]) == {"random", "uncertainty", "diversity", "hybrid"}

    with pytest.raises(SimulationError, match="other settings"):
        run_study(_cfg(shapes_voc, out, weights, steps=3), show_progress=False)


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
        (["--strategies", "random,best"], "unknown strategies"),
        (["--weights", "nope.pt"], "is not a file"),
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
