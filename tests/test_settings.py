from pathlib import Path

import pytest

from ml_backend.inference.display import default_display
from ml_backend.jobs.runners import child_environment, worker_settings
from ml_backend.settings import SPECS, Settings, SettingsError, markdown_table


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.model_path == "yolo11n.pt"
    assert s.score_threshold is None and default_display(s).default == 0.25  # per class, learned at each retraining (0.25 until then)
    assert s.model_dir == Path("./ml_state").absolute()  # fixed at start: a later chdir changes nothing
    assert s.ultralytics_device is None
    assert s.paths.image_cache == Path("./ml_state/cache/images").absolute()
    assert s.train_warmup_epochs == 0.0  # no warm-up: the study's recipe (docs/retraining.md)
    assert Settings.from_env({"TRAIN_WARMUP_EPOCHS": ""}).train_warmup_epochs is None  # empty: Ultralytics' own warm-up
    assert s.promotion_min_heldout == 30  # the server loop's evidence (docs/study.md): under 30 held-out images, serve the newer model
    assert (s.image_cache_max_mb, s.versions_keep) == (10240, 3)  # a bounded disk by default (docs/images.md, docs/retraining.md)


# A value other than the default for every setting.
EVERY_SETTING = {
    "LABEL_STUDIO_URL": "http://ls:8080/",
    "LABEL_STUDIO_API_KEY": "secret",
    "MODEL_PATH": "/w/best.pt",
    "MODEL_DIR": "/state",
    "MODEL_ROOT": "/models",
    "VIDEO_MAX_FRAMES": "90",
    "SCORE_THRESHOLD": "0.5",
    "DEVICE": "CPU",
    "IMGSZ": "320",
    "PREDICT_BATCH": "4",
    "BASIC_AUTH_USER": "u",
    "BASIC_AUTH_PASS": "p",
    "ALLOWED_HOSTS": "images.local, 10.0.0.0/8",
    "IMAGE_TIMEOUT": "3",
    "MAX_IMAGE_BYTES": "1000",
    "MAX_IMAGE_PIXELS": "2000",
    "IMAGE_CACHE_MAX_MB": "0",
    "VERSIONS_KEEP": "",
    "LOG_LEVEL": "debug",
    "AL_STRATEGY": "Uncertainty",
    "UNCERTAINTY_MEASURE": "margin",
    "UNCERTAINTY_AGGREGATION": "sum",
    "CANDIDATE_THRESHOLD": "0.01",
    "AL_UNCERTAINTY_WEIGHT": "2",
    "AL_DIVERSITY_WEIGHT": "0.5",
    "AL_CLASS_BALANCE_WEIGHT": "0",
    "AL_COST_WEIGHT": "0.5",
    "AL_COST_CAP": "1.2",
    "AL_PREFILTER": "3",
    "AL_COLD_START_LABELS": "25",
    "AL_COLD_START_STRATEGY": "Typical",
    "AL_BATCH": "20",
    "AL_CLUSTERS": "4",
    "AL_SEED": "7",
    "RESCORE_MIN_NEW_LABELS": "5",
    "EMBEDDER": "my_pkg.embed:images",
    "AL_CLUSTER_PUSH_MAX": "0",
    "RETRAIN_MIN_NEW_LABELS": "0",
    "TRAIN_STEPS": "120",
    "TRAIN_EPOCHS": "3",
    "TRAIN_TIME_BUDGET": "12.5",
    "TRAIN_IMGSZ": "320",
    "ANNOTATION_COSTS": "draw=35, adjust=6",
    "TRAIN_BATCH": "-1",
    "TRAIN_VAL_FRACTION": "0.25",
    "TRAIN_TIMEOUT": "600",
    "PROMOTION": "Always",
    "PROMOTION_MIN_HELDOUT": "25",
    "REVIEW_ONLY": "on",
    "PSEUDO_LABELS": "on",
    "PSEUDO_PRECISION": "0.8",
    "PSEUDO_MAX_SHARE": "0.5",
    "PSEUDO_MIN_SUPPORT": "3",
    "PSEUDO_CANDIDATES": "2",
    "TRAIN_WARMUP_EPOCHS": "1.5",
    "TRAIN_FREEZE": "10",
    "TRAIN_LR0": "0.003",
    "PROMOTION_MARGIN": "0.05",
    "PROMOTION_CONFIDENCE": "0.95",
    "REDIS_URL": "redis://redis:6379/0",
    "TRAIN_QUEUE": "gpu-box",
    "WEBHOOK_SECRET": " hook-1 ",
    "OUTPUT_CACHE_MB": "64",
    "HOST": "0.0.0.0",
    "PORT": "9191",
    "LABEL_STUDIO_CA_BUNDLE": __file__,  # any file: the setting only checks that it exists
    "ALLOW_UNAUTHENTICATED": "on",
}


def test_reads_every_value() -> None:
    env = EVERY_SETTING
    s = Settings.from_env(env)
    assert s.webhook_secret == "hook-1" and "hook-1" not in repr(s)
    assert s.label_studio_url == "http://ls:8080"
    assert (s.host, s.port, s.allow_unauthenticated) == ("0.0.0.0", 9191, True)
    assert s.ultralytics_device == "cpu"
    assert s.allowed_hosts == ("images.local", "10.0.0.0/8")
    assert (s.imgsz, s.predict_batch, s.max_image_bytes, s.max_image_pixels) == (320, 4, 1000, 2000)
    assert (s.model_root, s.control_models_root, s.video_max_frames) == (Path("/models"), Path("/models"), 90)
    assert (s.image_cache_max_mb, s.versions_keep) == (0, None)  # no limit, keep every version
    assert s.log_level == "DEBUG"
    assert (s.rescore_min_new_labels, s.embedder, s.al_cluster_push_max) == (5, "my_pkg.embed:images", 0)
    assert (s.al_strategy, s.uncertainty_measure, s.uncertainty_aggregation) == ("uncertainty", "margin", "sum")
    assert (s.al_uncertainty_weight, s.al_diversity_weight, s.al_class_balance_weight, s.al_batch, s.al_clusters, s.al_seed) == (
        2.0,
        0.5,
        0.0,
        20,
        4,
        7,
    )
    assert (s.retrain_min_new_labels, s.train_epochs, s.train_imgsz, s.train_batch, s.train_val_fraction, s.train_timeout) == (
        0,
        3,
        320,
        -1,
        0.25,
        600.0,
    )
    assert (s.promotion, s.redis_url, s.train_queue) == ("always", "redis://redis:6379/0", "gpu-box")
    assert (s.al_cost_weight, s.al_cost_cap, s.al_prefilter, s.al_cold_start_labels, s.al_cold_start_strategy) == (
        0.5,
        1.2,
        3.0,
        25,
        "typical",
    )
    assert (s.promotion_min_heldout, s.promotion_margin, s.promotion_confidence) == (25, 0.05, 0.95)
    assert (s.review_only, s.pseudo_labels, s.pseudo_precision, s.pseudo_max_share, s.pseudo_min_support, s.pseudo_candidates) == (
        True, True, 0.8, 0.5, 3, 2.0,
    )  # fmt: skip
    assert (s.train_warmup_epochs, s.train_freeze, s.train_lr0, s.train_time_budget) == (1.5, 10, 0.003, 12.5)
    assert s.train_steps == 120 and (s.annotation_costs.draw, s.annotation_costs.adjust, s.annotation_costs.verify) == (35.0, 6.0, 1.6)
    assert {spec.name for spec in SPECS} == set(env)
    assert Settings.from_env(s.to_env()) == s  # what a training child process gets


def test_api_key_is_not_in_repr() -> None:
    s = Settings.from_env({"LABEL_STUDIO_API_KEY": "very-secret-key", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "pw-secret"})
    assert "very-secret-key" not in repr(s)
    assert "pw-secret" not in repr(s)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SCORE_THRESHOLD": "high"}, "SCORE_THRESHOLD"),
        ({"SCORE_THRESHOLD": "1.5"}, "between 0.0 and 1.0"),
        ({"IMGSZ": "0"}, "IMGSZ"),
        ({"PREDICT_BATCH": "-1"}, "PREDICT_BATCH"),
        ({"LABEL_STUDIO_URL": "ls:8080"}, "http:// or https://"),
        ({"BASIC_AUTH_USER": "only-user"}, "set together"),
        ({"ALLOWED_HOSTS": "10.0.0.0/99"}, "ALLOWED_HOSTS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MODEL_PATH": "  "}, "MODEL_PATH"),
        ({"AL_STRATEGY": "smart"}, "random, uncertainty, diversity, hybrid, objects, typical, adaptive"),
        ({"UNCERTAINTY_MEASURE": "variance"}, "UNCERTAINTY_MEASURE"),
        ({"UNCERTAINTY_AGGREGATION": "median"}, "calibrated"),
        ({"AL_PREFILTER": "0.5"}, "AL_PREFILTER"),
        ({"AL_COST_WEIGHT": "-1"}, "AL_COST_WEIGHT"),
        ({"AL_COST_CAP": "0"}, "AL_COST_CAP"),
        ({"AL_DIVERSITY_WEIGHT": "-1"}, "AL_DIVERSITY_WEIGHT"),
        ({"AL_SEED": "x"}, "AL_SEED"),
        ({"PROMOTION": "sometimes"}, "if_better or always"),
        ({"TRAIN_BATCH": "0"}, "TRAIN_BATCH"),
        ({"TRAIN_VAL_FRACTION": "0.9"}, "TRAIN_VAL_FRACTION"),
        ({"REDIS_URL": "localhost:6379"}, "redis://"),
        ({"TRAIN_QUEUE": "a queue"}, "TRAIN_QUEUE"),
        ({"RETRAIN_MIN_NEW_LABELS": "-3"}, "RETRAIN_MIN_NEW_LABELS"),
        ({"TRAIN_STEPS": "0"}, "TRAIN_STEPS"),
        ({"PROMOTION_CONFIDENCE": "0.3"}, "PROMOTION_CONFIDENCE"),
        ({"IMGSZ": "-5"}, "IMGSZ"),
        ({"TRAIN_EPOCHS": "-1"}, "TRAIN_EPOCHS"),
        ({"ANNOTATION_COSTS": "draw=quick"}, "ANNOTATION_COSTS"),
        ({"ANNOTATION_COSTS": "paint=3"}, "name one of"),
        ({"IMAGE_CACHE_MAX_MB": "-1"}, "IMAGE_CACHE_MAX_MB"),
        ({"VERSIONS_KEEP": "all"}, "VERSIONS_KEEP"),
    ],
)
def test_bad_values_name_the_variable(env: dict, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment.replace(".", r"\.")):
        Settings.from_env(env)


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.score_threshold = 0.9  # type: ignore[misc]


def test_the_settings_doc_lists_every_setting() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    missing = [spec.name for spec in SPECS if f"`{spec.name}`" not in doc]
    assert not missing, f"docs/settings.md lacks {missing}"
    assert markdown_table() in doc, "docs/settings.md is stale: paste markdown_table() output"


def test_every_setting_in_the_full_environment_differs_from_its_default() -> None:
    """The hand-over test below is only as good as this: a setting left at its default could be lost unseen."""
    s, default = Settings.from_env(EVERY_SETTING), Settings.from_env({})
    assert [spec.name for spec in SPECS if getattr(s, spec.attr) == getattr(default, spec.attr)] == []


def test_server_child_process_and_rq_worker_train_with_the_same_settings() -> None:
    """A training child process gets every setting; an RQ worker gets all but the machine's own, keeping its own for those."""
    server = Settings.from_env(EVERY_SETTING)
    child = Settings.from_env(child_environment(server, {"TRAIN_STEPS": "7", "DEVICE": "mps"}))
    assert child == server
    worker_env = {"DEVICE": "cuda:1", "MODEL_DIR": "/worker", "LABEL_STUDIO_URL": "http://ls.internal:8080", "TRAIN_STEPS": "7"}
    worker = worker_settings(server.run_env(), worker_env)
    for spec in SPECS:
        if spec.local:
            assert getattr(worker, spec.attr) == getattr(Settings.from_env(worker_env), spec.attr), spec.name
        else:
            assert getattr(worker, spec.attr) == getattr(server, spec.attr), spec.name


@pytest.mark.parametrize("name", ["LABEL_STUDIO_API_KEY", "BASIC_AUTH_PASS", "WEBHOOK_SECRET", "REDIS_URL", "DEVICE", "MODEL_DIR"])
def test_the_machines_own_settings_and_secrets_stay_out_of_a_training_job(name: str) -> None:
    assert name not in Settings.from_env(EVERY_SETTING).run_env()


@pytest.mark.parametrize("name", ["TRAIN_LR0", "TRAIN_STEPS", "PROMOTION_MIN_HELDOUT", "ANNOTATION_COSTS", "SCORE_THRESHOLD", "AL_SEED"])
def test_training_settings_travel_with_a_training_job(name: str) -> None:
    assert name in Settings.from_env(EVERY_SETTING).run_env()


def test_model_path_attributes_name_files_next_to_model_path_by_default() -> None:
    assert Settings.from_env({"MODEL_PATH": "/weights/best.pt"}).control_models_root == Path("/weights")
