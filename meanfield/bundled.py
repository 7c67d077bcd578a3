"""The scenarios shipped with meanfield (the files of ``scenarios/``, installed with the package)."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

SCENARIO_DIR = Path(__file__).parent / "scenarios"


def bundled() -> dict[str, str]:
    """Bundled scenario names and the first line of each one's description."""
    out = {}
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        summary = ""
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                summary = line.lstrip("# ").strip()
                break
        out[path.stem] = summary
    return out


def scenario_path(name_or_path: str) -> Path:
    """A scenario file: the path itself when it exists, else the bundled scenario of that name."""
    path = Path(name_or_path)
    if path.exists():
        if path.is_dir():
            raise UsageError(f"{path} is a directory; give a scenario YAML file")
        return path
    candidate = SCENARIO_DIR / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml") and path.parent == Path(".") and candidate.exists():
        return candidate
    names = ", ".join(bundled()) or "none"
    raise UsageError(f"{name_or_path}: no such scenario file (bundled scenarios: {names})")
