"""Keep credentials out of logs and error messages.

The backend holds a Label Studio API key, a short-lived access token made from it, a basic-auth
password, a webhook secret and perhaps a Redis password. None of them may appear in a log line
or an error message, even when another server echoes them back (a misconfigured proxy, or a
hostile one answering with our ``Authorization`` header in its error page).

Example:
    >>> scrub("HTTP 401: bad token abc123", ["abc123"])
    'HTTP 401: bad token ***'
"""

from __future__ import annotations

import logging
from typing import Iterable
from urllib.parse import urlsplit

from ml_backend.settings import Settings

MASK = "***"
MIN_SECRET_LEN = 4  # shorter values would mask ordinary words


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first) replaced by ``***``."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def settings_secrets(settings: Settings) -> list[str]:
    """The secrets among the settings."""
    out = [settings.label_studio_api_key, settings.basic_auth_pass, settings.webhook_secret]
    if settings.redis_url:
        out.append(urlsplit(settings.redis_url).password or "")
    return [s for s in out if s]


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message (arguments included)."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= MIN_SECRET_LEN]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler
            return True
        cleaned = scrub(message, self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(s in text for s in self.secrets):
                record.exc_info, record.exc_text = None, None
                cleaned += "\n" + scrub(text, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def install(settings: Settings) -> None:
    """Mask the settings' secrets on every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    secrets = settings_secrets(settings)
    for handler in root.handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactingFilter)]
        handler.addFilter(RedactingFilter(secrets))
