"""Figure files: the formats meanfield draws into (by suffix), the check of a path before
any drawing, and the saving of a matplotlib Figure, each failure a UsageError naming the file.

Shared by ``meanfield plot``, ``meanfield analyze --figure`` and ``--phase-diagram``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

FORMATS = (".png", ".pdf", ".svg")
"""The suffixes of the figure files we write; matplotlib picks the format from the suffix."""

DPI = 120
"""The resolution of a raster (.png) figure."""


def check_figure_path(path) -> Path:
    """``path`` as a Path, checked to end in one of FORMATS (case-insensitive).

    UsageError naming the file and the allowed suffixes otherwise, so that a wrong name
    fails before anything is computed or drawn.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"{path}: cannot write {path.suffix or 'a file without suffix'}; "
                         f"use one of {', '.join(FORMATS)}")
    return path


def save_figure(fig, path) -> Path:
    """Write the matplotlib Figure ``fig`` to ``path`` (at DPI) and return ``path`` as a Path.

    The format follows the suffix (checked by ``check_figure_path``); an OSError (no such
    directory, no permission, a full disk) becomes a UsageError naming the file.
    """
    path = check_figure_path(path)
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the figure ({exc})") from exc
    return path
