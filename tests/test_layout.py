"""The layout holds: the layer contracts (import-linter), the lint (ruff), and docs/design.md §6
names every module of ``meanfield/`` and ``solvers/`` and nothing that does not exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("meanfield", "solvers")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_layer_contracts():
    """setup.cfg [importlinter]: the layers of meanfield, top to bottom, and solvers never
    importing meanfield."""
    done = subprocess.run([_tool("lint-imports"), "--config", "setup.cfg", "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff():
    done = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _module_table() -> str:
    text = (ROOT / "docs" / "design.md").read_text()
    section = text[text.index("\n## 6. Architecture"):]
    section = section[:section.index("\n### 6.1")]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def _named_paths(table: str) -> set[str]:
    """Every path the table names: `pkg/x.py` and `pkg/sub/`, and the modules a package row names
    by file (`pkg/sub/`: `a.py`, `b.py`) resolved inside that package."""
    named = set()
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) < 3:
            continue
        first, role = cells[1], "|".join(cells[2:])
        paths = re.findall(r"`((?:meanfield|solvers)/[\w/]*(?:\.py|/))`", first)
        named.update(paths)
        for package in (p for p in paths if p.endswith("/")):
            named.update(package + name for name in re.findall(r"`(\w+\.py)`", role))
    return named


def test_design_lists_every_module():
    named = _named_paths(_module_table())
    assert named, "docs/design.md §6 has no module table"
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, f"docs/design.md §6 names what does not exist: {sorted(missing)}"
    files = sorted(str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                   if "scenarios" not in p.relative_to(ROOT).parts)
    unlisted = [f for f in files if f not in named]
    assert not unlisted, f"docs/design.md §6 does not list: {unlisted}"
