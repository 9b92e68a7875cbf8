"""The short examples in the docstrings run and print what they say (doctest), module by module."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for pkg in ("ml_backend", "integrations")
    for p in (ROOT / pkg).rglob("*.py")
    if any(">>>" in line and "+SKIP" not in line for line in p.read_text().splitlines())  # examples that run (not only skipped ones)
)


def test_the_examples_are_found() -> None:
    assert {"ml_backend.training.promotion", "ml_backend.training.run", "ml_backend.tools.study.report"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has an example line but doctest ran none of it"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (see the output above)"
