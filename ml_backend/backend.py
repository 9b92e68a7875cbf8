"""The object graph of one backend process, wired in one place: :func:`build_backend`.

The HTTP server (:mod:`ml_backend.server`) and the command line (``python -m ml_backend train``,
``score``) build the same graph from the same settings, so a run started from the command line
follows exactly the rules of a run started by a webhook:

* the base model (``MODEL_PATH``, :class:`ml_backend.inference.model.ModelHolder`) and each
  project's promoted model (:class:`ml_backend.inference.served_models.ServedModels`);
* the predictor (images from Label Studio, batched inference, Label Studio regions);
* the scoring jobs (new tasks, full re-scores, the durable queue in ``state.db``);
* the training jobs (triggers, runs in their own process, promotion), whose promotions ask the
  scoring jobs for a full re-score that retires the previous version's predictions.

Example:
    >>> backend = build_backend(Settings.from_env({"MODEL_DIR": "/tmp/state"}))  # doctest: +SKIP
    >>> backend.training.request(12, "by hand")  # doctest: +SKIP
    'queued'
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ml_backend import log_redaction
from ml_backend.inference.model import ModelHolder
from ml_backend.inference.predictor import Predictor, label_studio_client, make_fetcher, make_holder
from ml_backend.inference.served_models import ServedModels
from ml_backend.jobs.runners import Runner
from ml_backend.jobs.scoring_jobs import ScoringJobs
from ml_backend.jobs.training_jobs import TrainingJobs
from ml_backend.scoring.store import ScoreStore
from ml_backend.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def check_model_dir(folder: Path) -> None:
    """Create ``MODEL_DIR`` if needed and make sure this process can write there.

    Raises:
        SettingsError: it cannot be written (the message says what to do).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"MODEL_DIR={folder} is not writable ({exc.strerror or exc}): point it at a folder (volume) this user can write"
        ) from None


@dataclass
class Backend:
    """Everything a backend process runs, built by :func:`build_backend`."""

    settings: Settings
    holder: ModelHolder
    models: ServedModels
    predictor: Predictor
    scoring: ScoringJobs
    training: TrainingJobs
    project_configs: dict[str, str] = field(default_factory=dict)  # labeling config per project, from /setup
    project_plans: dict[str, str] = field(default_factory=dict)  # per project: what is pre-annotated, what is to learn

    @property
    def scores(self) -> ScoreStore:
        return self.scoring.store

    def resume(self) -> list[int]:
        """At start: re-score the projects whose scores come from another model than they serve
        (a crash between a promotion and its re-score); returns them."""

        def promoted_version(project_id: int) -> str | None:
            try:
                info = self.models.current(project_id)
            except Exception:  # a damaged registry is reported by /versions; it must not stop the start
                log.exception("project %s: the model registry could not be read", project_id)
                return None
            return info.version if info else None

        return self.scoring.check_served_versions(promoted_version, self.models.projects())

    def close(self) -> None:
        """Stop the training loop (a run under way is stopped and queued again for the next start),
        and let a model load under way finish (exiting in the middle of one can abort the process)."""
        self.training.close()
        self.models.close()


def build_backend(
    settings: Settings,
    holder: ModelHolder | None = None,
    training_runner: Runner | None = None,
    training_projects: Collection[int] | None = None,
) -> Backend:
    """Wire a backend for ``settings``: models, predictor, scoring and training jobs.

    Args:
        settings: the backend's settings.
        holder: the base model holder (default: one for ``MODEL_PATH``; tests pass their own).
        training_runner: where training runs execute (default: from ``REDIS_URL``, see
            :func:`ml_backend.jobs.runners.make_runner`).
        training_projects: train only these projects (``python -m ml_backend train --project ID``);
            other projects' queued runs stay queued for the server. None: every project's.

    Raises:
        SettingsError: ``MODEL_DIR`` cannot be written.
    """
    log_redaction.install(settings)
    check_model_dir(settings.model_dir)
    holder = holder or make_holder(settings)
    models = ServedModels(holder, settings.model_dir)
    predictor = Predictor(settings, holder, make_fetcher(settings, settings.label_studio_url, settings.label_studio_api_key), models)
    scoring = ScoringJobs(settings, predictor, lambda: label_studio_client(settings))

    def after_promotion(project_id: int, version: str, previous: str | None) -> None:
        # Fresh pre-annotations and a reordered queue from the new model; the old version's
        # predictions go once the new ones are in.
        scoring.request_full(project_id, retire=[previous] if previous else [])

    training = TrainingJobs(
        settings, models, scoring.events, on_promoted=after_promotion, runner=training_runner, projects=training_projects
    )
    return Backend(settings, holder, models, predictor, scoring, training)
