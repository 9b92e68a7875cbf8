"""Keep credentials out of logs and error messages.

This backend holds a Label Studio API key, a short-lived access token made from it, a
basic-auth password, a webhook secret and perhaps a Redis password. None of them may appear in
a log line or an error message, even when another server echoes them back (a misconfigured
proxy, or a hostile one answering with our ``Authorization`` header in its error page).

Example:
    >>> scrub("HTTP 401: bad token abc123", ["abc123"])
    'HTTP 401: bad token ***'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

MASK = "***"
MIN_SECRET_LEN = 4  # shorter values would mask ordinary words


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first) replaced by ``***``."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message (arguments and tracebacks included)."""

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
