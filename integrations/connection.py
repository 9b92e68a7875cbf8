"""What a Label Studio project and this backend agree on when they are connected.

* ``extra_params`` of the ML backend in Label Studio: a JSON object Label Studio sends on every
  ``/setup``. This backend reads one key, :data:`THRESHOLD_PARAM` (the project's own retraining
  threshold), and leaves the others alone.
* Webhook credentials: Label Studio's webhooks carry no basic auth, so they prove themselves with
  a shared secret in the :data:`WEBHOOK_SECRET_HEADER` header (and an ``Authorization`` header
  when the backend has basic auth on); :func:`webhook_headers` builds them.

Example:
    >>> threshold_from_extra_params({"retrain_min_new_labels": 20}), threshold_from_extra_params(None)
    (20, None)
"""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

THRESHOLD_PARAM = "retrain_min_new_labels"  # the key in the ML backend's extra_params in Label Studio
MAX_THRESHOLD = 1_000_000_000
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"  # where Label Studio's webhooks carry the backend's WEBHOOK_SECRET


def extra_params_dict(current: Any) -> dict[str, Any]:
    """The ML backend's ``extra_params`` as a dict, leniently (Label Studio stores any JSON, or a string of it)."""
    if isinstance(current, str) and current.strip():
        try:
            current = json.loads(current)
        except ValueError:
            return {}
    return dict(current) if isinstance(current, dict) else {}


def threshold_from_extra_params(extra_params: Any) -> int | None:
    """A project's own retraining threshold from the ``extra_params`` Label Studio sends on ``/setup``.

    Returns None when the key is absent (the project uses the backend's default).

    Raises:
        ValueError: the value is not a whole number >= 0 (the message says what to fix).
    """
    if extra_params in (None, ""):
        return None
    if isinstance(extra_params, str):
        try:
            extra_params = json.loads(extra_params)
        except ValueError:
            raise ValueError(
                f'the ML backend\'s extra_params in Label Studio must be a JSON object, e.g. {{"{THRESHOLD_PARAM}": 20}}'
            ) from None
    if not isinstance(extra_params, dict):
        raise ValueError(
            f'the ML backend\'s extra_params in Label Studio must be a JSON object, e.g. {{"{THRESHOLD_PARAM}": 20}}, '
            f"not {type(extra_params).__name__}"
        )
    value = extra_params.get(THRESHOLD_PARAM)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 10:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THRESHOLD:
        raise ValueError(
            f"extra_params.{THRESHOLD_PARAM} must be a whole number from 0 to {MAX_THRESHOLD:,} (0: only the train button), not {value!r}"
        )
    return value


def webhook_headers(webhook_secret: str = "", basic_auth: tuple[str, str] | None = None) -> dict[str, str]:
    """The headers Label Studio's webhook must carry to be let in by a backend with these credentials.

    Example:
        >>> webhook_headers("s3cret")
        {'X-Webhook-Secret': 's3cret'}
    """
    headers = {}
    if webhook_secret:
        headers[WEBHOOK_SECRET_HEADER] = webhook_secret
    if basic_auth:
        pair = f"{basic_auth[0]}:{basic_auth[1]}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return headers


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``127.0.0.0/8``, ``::1``, ``localhost``).

    A host name other than ``localhost`` counts as beyond loopback: it may resolve anywhere.

    Example:
        >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "::", "10.0.0.5", "backend")]
        [True, True, True, True, False, False, False, False]
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
