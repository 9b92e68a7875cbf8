"""Who may change this backend's state: the rule for serving beyond loopback.

Every route but ``/health`` changes something or costs compute: ``/setup`` stores a project's
labeling config and retraining threshold (and, with no ``LABEL_STUDIO_URL``, where its images come
from), ``/webhook`` and ``/train`` start training, ``/predict`` runs the model. So the rule is one,
for all of them: on loopback anyone on the machine may call them (as with any local service); beyond
loopback they need basic auth (``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``; webhooks the shared
``WEBHOOK_SECRET`` or basic auth), or the operator's explicit ``ALLOW_UNAUTHENTICATED=on`` for a
network only Label Studio reaches (docker compose's), which is warned about at every start.
``/setup`` never changes where another project's images come from, and without auth beyond
loopback it changes nobody's.

Example:
    >>> from ml_backend.settings import Settings
    >>> Exposure.of(Settings(host="0.0.0.0")).refusal() is not None
    True
    >>> Exposure.of(Settings(host="0.0.0.0", basic_auth_user="ls", basic_auth_pass="pw")).refusal() is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.connection import is_loopback
from ml_backend.settings import Settings

__all__ = ["Exposure", "is_loopback"]


@dataclass(frozen=True)
class Exposure:
    """Where the backend listens and what guards it (from :class:`Settings`)."""

    host: str
    port: int
    basic_auth: bool
    webhook_secret: bool
    allow_unauthenticated: bool

    @classmethod
    def of(cls, settings: Settings) -> Exposure:
        return cls(
            settings.host, settings.port, bool(settings.basic_auth_user), bool(settings.webhook_secret), settings.allow_unauthenticated
        )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def open(self) -> bool:
        """Anyone who reaches the port may change state: beyond loopback, without basic auth."""
        return not self.loopback and not self.basic_auth

    @property
    def setup_may_name_label_studio(self) -> bool:
        """Whether ``/setup``'s ``hostname``/``access_token`` may say where a project's images come from."""
        return not self.open

    def _fix(self) -> str:
        return (
            "set BASIC_AUTH_USER and BASIC_AUTH_PASS (and WEBHOOK_SECRET), then run `python -m ml_backend connect --project ID` "
            "to enter them in Label Studio; or serve on loopback (HOST=127.0.0.1)"
        )

    def refusal(self) -> str | None:
        """Why the server must not start (open, and not allowed to be), with the fix; None when it may."""
        if not self.open or self.allow_unauthenticated:
            return None
        return (
            f"refusing to serve on {self.host}:{self.port} without basic auth: anyone who reaches the port could start training, "
            f"change a project's settings and run the model. Fix: {self._fix()}; or, on a network only Label Studio reaches "
            "(docker compose's), set ALLOW_UNAUTHENTICATED=on."
        )

    def warnings(self) -> list[str]:
        """What an operator should know at every start (also in ``/health``)."""
        out = []
        if self.open and self.allow_unauthenticated:  # else it does not start (refusal)
            out.append(
                f"serving on {self.host}:{self.port} WITHOUT authentication (ALLOW_UNAUTHENTICATED=on): anyone who reaches the port "
                f"can start training and change a project's settings; /setup will not change where images come from. "
                f"To close it: {self._fix()}."
            )
        return out
