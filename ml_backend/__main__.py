"""``python -m ml_backend``: the runtime's commands (:mod:`ml_backend.cli`) and the tools'
(:mod:`ml_backend.tools.cli`). The one place where both meet: nothing the server, the jobs or a
training run import loads a tool."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ml_backend import cli
from ml_backend.tools import cli as tools_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m ml_backend`` with ``argv``; returns the exit status."""
    return cli.main(argv, extra=tools_cli.COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
