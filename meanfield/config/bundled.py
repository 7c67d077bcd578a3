"""The scenarios and sweeps shipped with meanfield (``scenarios/*.yaml`` and
``scenarios/sweeps/*.yaml``, installed with the package)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..messages import did_you_mean

SCENARIO_DIR = Path(__file__).parent.parent / "scenarios"
SWEEP_DIR = SCENARIO_DIR / "sweeps"


def _summaries(directory: Path) -> dict[str, str]:
    """File stems and the first comment line of each YAML file in ``directory``."""
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        summary = ""
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                summary = line.lstrip("# ").strip()
                break
        out[path.stem] = summary
    return out


def bundled() -> dict[str, str]:
    """Bundled scenario names and the first line of each one's description."""
    return _summaries(SCENARIO_DIR)


def bundled_sweeps() -> dict[str, str]:
    """Bundled sweep (study) names and the first line of each one's description."""
    return _summaries(SWEEP_DIR)


def resolve_path(name_or_path: str | Path, directory: Path, catalogue: Callable[[], dict], what: str) -> Path:
    """A YAML file: the path itself when it exists, else the bundled one of that name in ``directory``."""
    path = Path(name_or_path)
    if path.exists():
        if path.is_dir():
            raise UsageError(f"{path} is a directory; give a {what} YAML file")
        return path
    candidate = directory / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml") and path.parent == Path(".") and candidate.exists():
        return candidate
    names = list(catalogue())
    raise UsageError(f"{name_or_path}: no such {what} file (bundled {what}s: {', '.join(names) or 'none'})"
                     + did_you_mean(path.stem, names))


def display_name(path: str | Path) -> str:
    """How messages name a scenario or sweep file: ``quickstart (bundled)`` for one shipped
    with meanfield (not its path inside the installed package), else the path as given."""
    path = Path(path)
    for directory in (SCENARIO_DIR, SWEEP_DIR):
        if path.suffix == ".yaml" and path.parent.resolve() == directory.resolve():
            return f"{path.stem} (bundled)"
    return str(path)


def scenario_path(name_or_path: str | Path) -> Path:
    """A scenario file: the path itself when it exists, else the bundled scenario of that name."""
    return resolve_path(name_or_path, SCENARIO_DIR, bundled, what="scenario")
