"""Layers import only downwards: common <- simulator <- policies <- serving <- abtest <- tuning.

Every import statement of every module (including those inside functions and under
``TYPE_CHECKING``) is read with ``ast``; an import of a package above the module's own is a
failure. The CLIs on top (run_ab.py, benchmarks/) may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("common", "simulator", "policies", "serving", "abtest", "tuning")
"""Bottom to top."""


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports(package: str) -> list[str]:
    """``file:line imports <higher package>`` for every module of ``package``."""
    rank = LAYERS.index(package)
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        name = str(path.relative_to(ROOT))
        for line, imported in sorted(imported_packages(path)):
            if imported in LAYERS and LAYERS.index(imported) > rank:
                bad.append(f"{name}:{line} imports {imported}")
    return bad


@pytest.mark.parametrize("package", LAYERS)
def test_no_package_imports_one_above_it(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert upward_imports(package) == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tuning.search import run_search\nimport numpy\n")
    assert imported_packages(module) == {(2, "tuning"), (3, "numpy")}
