"""No credential of this backend's settings in any log line.

The masking itself (:func:`integrations.secrets.scrub`, :class:`integrations.secrets.RedactingFilter`)
lives with the Label Studio glue; this module says which settings are secrets and installs the
filter on the root logger.

Example:
    >>> settings_secrets(Settings(label_studio_api_key="k-123456"))
    ['k-123456']
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from integrations.secrets import RedactingFilter
from ml_backend.settings import Settings, SettingsError


def settings_secrets(settings: Settings) -> list[str]:
    """The secrets among the settings."""
    out = [settings.label_studio_api_key, settings.basic_auth_pass, settings.webhook_secret]
    if settings.redis_url:
        out.append(urlsplit(settings.redis_url).password or "")
    return [s for s in out if s]


def install(settings: Settings) -> None:
    """Mask the settings' secrets on every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    secrets = settings_secrets(settings)
    for handler in root.handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactingFilter)]
        handler.addFilter(RedactingFilter(secrets))


def setup_logging(level: str, settings: Settings | None = None) -> None:
    """Log to stderr at ``level``, with the settings' secrets masked (read from the environment when not given)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs failed CPU-specific builds at INFO
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError:
            return  # the command reports the bad setting itself
    install(settings)
