"""Rewrite the settings table in ``docs/settings.md`` and the entries of ``docker/.env.example``
from :data:`ml_backend.settings.SPECS` (tests fail while either is stale).

Run after adding or changing a setting::

    .venv/bin/python -m ml_backend.tools.settings_docs
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ml_backend.settings import SPECS, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def write_settings_doc(path: Path = ROOT / "docs" / "settings.md") -> None:
    """Replace the table (from its header row to the first blank line after it)."""
    text = path.read_text()
    start = text.index("| variable |")
    end = text.find("\n\n", start)
    path.write_text(text[:start] + markdown_table() + (text[end:] if end != -1 else "\n"))


def write_env_example(path: Path = ROOT / "docker" / ".env.example") -> None:
    """Every setting as ``# help`` and ``NAME=default``, in the order of SPECS; other lines kept."""
    specs = {s.name: s for s in SPECS}
    out: list[str] = []
    present: set[str] = set()
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", line)
        if m and m[1] in specs and out and out[-1].startswith("# "):
            out[-1] = "# " + specs[m[1]].help
            out.append(f"{m[1]}={specs[m[1]].default}")
            present.add(m[1])
        else:
            out.append(line)
    order = [s.name for s in SPECS]
    for name in order:
        if name in present:
            continue
        before = order[: order.index(name)]
        at = max((k for k, line in enumerate(out) for prev in before if line.startswith(prev + "=")), default=len(out) - 1)
        out[at + 1 : at + 1] = ["# " + specs[name].help, f"{name}={specs[name].default}"]
        present.add(name)
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    write_settings_doc()
    write_env_example()
    sys.exit(0)
