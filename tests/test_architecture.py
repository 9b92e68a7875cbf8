"""The house's rules, read from the code's own imports.

* ``integrations/`` owns Label Studio and imports nothing from ``ml_backend``;
* nothing in ``ml_backend/`` imports a tool (``ml_backend.tools``), except ``__main__.py``, the
  command line that joins the runtime's commands and the tools';
* ``ml_backend/al`` (the active-learning math) reads no settings and imports no other part of the
  backend;
* what the server, a training run and an RQ worker load contains no tool, no model and no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved), lazy ones included."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            out.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return out


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("integrations"), ids=lambda p: str(p.relative_to(ROOT)))
def test_integrations_import_nothing_from_ml_backend(path: Path) -> None:
    bad = sorted(m for m in imports(path) if m == "ml_backend" or m.startswith("ml_backend."))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: integrations/ must stay a leaf (pass plain values in)"


@pytest.mark.parametrize(
    "path",
    [p for p in modules("ml_backend") if "tools" not in p.relative_to(ROOT).parts and p.name != "__main__.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_runtime_imports_no_tool(path: Path) -> None:
    bad = sorted(m for m in imports(path) if m == "ml_backend.tools" or m.startswith("ml_backend.tools."))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the runtime never imports ml_backend/tools"


@pytest.mark.parametrize("path", modules("ml_backend/al"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_active_learning_math_is_pure(path: Path) -> None:
    bad = sorted(
        m for m in imports(path) if m.startswith(("ml_backend.", "integrations", "flask", "requests")) and not m.startswith("ml_backend.al")
    )
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: ml_backend/al takes arrays, not settings, HTTP or models"


def test_the_rules_see_real_imports() -> None:
    """The checks above would pass on a parser that finds nothing: they must see known imports."""
    assert "integrations.label_studio.LabelStudioClient" in imports(ROOT / "ml_backend" / "inference" / "predictor.py")
    assert "ml_backend.tools.cli" in imports(ROOT / "ml_backend" / "__main__.py")
    assert "ml_backend.al.diversity" in imports(ROOT / "ml_backend" / "al" / "strategies.py")


def test_what_the_runtime_loads_holds_no_tool_no_model_and_no_torch() -> None:
    code = (
        "import sys, ml_backend.server, ml_backend.cli, ml_backend.jobs.runners, ml_backend.training.run;"
        "print(sorted({m for m in sys.modules if m.startswith('ml_backend.tools')} | {m for m in ('torch', 'ultralytics') if m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
