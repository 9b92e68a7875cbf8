"""Which weights serve which project: the project's promoted version, else ``MODEL_PATH``.

Each Label Studio project gets its own :class:`ml_backend.inference.versions.ModelRegistry` under
``MODEL_DIR/projects/<id>/models`` (:meth:`ml_backend.state.StatePaths.project_models`), so a model retrained on one project's labels never serves
another. Until a project has a promoted version it is served the base model (``MODEL_PATH``).
The registry's pointer is checked on each call (one ``stat``; it and the version's metadata are
read again only when the pointer file changed), so a promotion made by another process
(``python -m ml_backend train``) is picked up at once; the new weights are loaded
before they are served when :meth:`ServedModels.preload` is called, as the training loop does.

Example:
    >>> import tempfile
    >>> from ml_backend.inference.model import ModelHolder
    >>> models = ServedModels(ModelHolder("base.pt"), tempfile.mkdtemp())
    >>> models.holder(3) is models.base
    True
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ml_backend.inference.label_config import LabelConfigError
from ml_backend.inference.model import LoadedModel, ModelHolder, ModelMeta
from ml_backend.inference.versions import ModelRegistry, VersionInfo
from ml_backend.state import StatePaths

log = logging.getLogger(__name__)


def control_weights(root: Path, model_path: str) -> Path:
    """The file a control's ``model_path`` names under ``root`` (``MODEL_ROOT``).

    Raises:
        LabelConfigError: the path leaves ``root``, or there is no such file.
    """
    path = (root / model_path).resolve()
    if Path(model_path).is_absolute() or not path.is_relative_to(root.resolve()):
        raise LabelConfigError(f'model_path="{model_path}" is outside MODEL_ROOT ({root}): name a file inside that folder.')
    if not path.is_file():
        raise LabelConfigError(f'model_path="{model_path}": there is no such file in MODEL_ROOT ({root}); put the weights there.')
    return path


class ServedModels:
    """The base model and each project's promoted model.

    Args:
        base: the ``MODEL_PATH`` holder.
        model_dir: ``MODEL_DIR`` (``None``: only the base model, no per-project versions).
    """

    def __init__(self, base: ModelHolder, model_dir: str | Path | None = None):
        self.base = base
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.paths = StatePaths(self.model_dir) if self.model_dir is not None else None
        self._holders: dict[int, tuple[str, ModelHolder]] = {}
        self._current: dict[int | tuple[int, str], tuple[tuple[int, int, int] | None, VersionInfo | None]] = {}
        self._lock = threading.Lock()

    def registry(self, project_id: int) -> ModelRegistry:
        if self.paths is None:
            raise ValueError("no MODEL_DIR: per-project model versions are off")
        return ModelRegistry(self.paths.project_models(project_id))

    def control_registry(self, project_id: int, control: str) -> ModelRegistry:
        """The versions of a control's own model trained on ``project_id``'s labels."""
        if self.paths is None:
            raise ValueError("no MODEL_DIR: per-project model versions are off")
        return ModelRegistry(self.paths.control_models(project_id, control))

    def control_versions(self, project_id: int) -> dict[str, dict[str, str]]:
        """The project's served versions of its controls' own models: control -> weights, version, model_path."""
        if self.paths is None:
            return {}
        folder = self.paths.project_controls(project_id)
        out: dict[str, dict[str, str]] = {}
        for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
            info = ModelRegistry(sub).current()
            if info is not None and info.metrics.get("control") and info.metrics.get("model_path"):
                out[str(info.metrics["control"])] = {
                    "weights": str(info.weights), "version": info.version, "model_path": str(info.metrics["model_path"])
                }  # fmt: skip
        return out

    def projects(self) -> list[int]:
        """The projects with a model folder (trained versions)."""
        if self.paths is None or not self.paths.projects_dir.is_dir():
            return []
        return sorted(
            int(p.name) for p in self.paths.projects_dir.iterdir() if p.name.isdigit() and self.paths.project_models(int(p.name)).is_dir()
        )

    def current(self, project_id: int | None) -> VersionInfo | None:
        """The project's promoted version (None: it is served the base model)."""
        if project_id is None or self.model_dir is None:
            return None
        return self._current_in(int(project_id), self.registry(project_id))

    def control_current(self, project_id: int, control: str, model_path: str) -> VersionInfo | None:
        """The promoted version of a control's own model for a project, trained from ``model_path``
        (None: the control is served the file itself; a version trained from another file is not served)."""
        if self.paths is None:
            return None
        info = self._current_in((int(project_id), control), self.control_registry(project_id, control))
        return info if info is not None and info.metrics.get("model_path") == model_path else None

    def _current_in(self, key: int | tuple[int, str], registry: ModelRegistry) -> VersionInfo | None:
        """``registry``'s promoted version, read again only when its pointer file changed (one ``stat`` a call)."""
        try:
            st = registry.pointer.stat()
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)  # os.replace gives a new inode
        except OSError:
            stamp = None
        cached = self._current.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        info = registry.current() if stamp is not None else None
        self._current[key] = (stamp, info)
        return info

    def holder(self, project_id: int | None) -> ModelHolder:
        """The holder serving ``project_id`` (the base one for ``None`` or a project never retrained)."""
        info = self.current(project_id)
        if info is None:
            return self.base
        with self._lock:
            cached = self._holders.get(int(project_id))  # type: ignore[arg-type]
            if cached is not None and cached[0] == info.version:
                return cached[1]
            holder = ModelHolder(str(info.weights), self.base.device, version=info.version)
            self._holders[int(project_id)] = (info.version, holder)  # type: ignore[arg-type]
            return holder

    def get(self, project_id: int | None, wait: float | None = None) -> LoadedModel:
        """The loaded model for a project. A promoted version that fails to load falls back to the base model."""
        holder = self.holder(project_id)
        if holder is self.base:
            return holder.get(wait)
        try:
            return holder.get(wait)
        except Exception as exc:
            log.error("project %s: its model %s could not be loaded (%s); serving the base model", project_id, holder.model_path, exc)
            return self.base.get(wait)

    def describe(self, project_id: int | None, wait: float | None = None) -> LoadedModel | ModelMeta:
        """The project's model, or what its checkpoint says it is while it loads (:meth:`ModelHolder.describe`)."""
        holder = self.holder(project_id)
        if holder is self.base:
            return holder.describe(wait)
        try:
            return holder.describe(wait)
        except Exception as exc:
            log.error("project %s: its model %s could not be loaded (%s); serving the base model", project_id, holder.model_path, exc)
            return self.base.describe(wait)

    def close(self, timeout: float = 60.0) -> None:
        """Let loads under way finish before the process exits (``timeout`` seconds for all of them)."""
        deadline = time.monotonic() + timeout
        for holder in [self.base, *(h for _, h in list(self._holders.values()))]:
            holder.close(max(0.0, deadline - time.monotonic()))

    def preload(self, project_id: int) -> LoadedModel:
        """Load the project's current model now (before requests need it)."""
        return self.holder(project_id).get()
