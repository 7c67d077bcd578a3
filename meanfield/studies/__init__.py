"""The bundled studies: known results of the literature, reproduced (docs/design.md §6,
docs/studies.md).

One module per study in this package, each defining ``STUDIES``, a tuple of
:class:`~meanfield.studies.base.Study` (its sweep or scenario, published values with their
citation, measurement, figure and reduced check); the registry below finds them, so a new
study is one module here and its data files (``scenarios/sweeps/NAME.yaml``). Every study's
table has the same columns (:data:`COLUMNS`).

    from meanfield.studies import study, studies
    result = study("catapult", quick=True)      # mf.study(...) is the same
    result.table                                # quantity, published, measured, tolerance, agrees
    result.figure("catapult.png")
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Optional, Union

from ..errors import UsageError
from ..messages import did_you_mean
from .base import COLUMNS, Reference, Study, StudyResult, agrees

__all__ = ["COLUMNS", "Reference", "Study", "StudyResult", "agrees", "get", "studies", "study"]

_INTERNAL = {"base"}


def studies() -> dict[str, Study]:
    """The registry: study name -> :class:`Study`, from every module of this package."""
    found: dict[str, Study] = {}
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        if module in _INTERNAL or module.startswith("_"):
            continue
        for entry in importlib.import_module(f"{__name__}.{module}").STUDIES:
            if entry.name in found:
                raise RuntimeError(f"two studies named {entry.name!r}")
            found[entry.name] = entry
    return found


def get(name: str) -> Study:
    """The study of that name; a UsageError naming the studies (and a close match) otherwise."""
    registry = studies()
    if not isinstance(name, str) or name not in registry:
        raise UsageError(f"{name!r} is not a bundled study (studies: {', '.join(registry)})"
                         + did_you_mean(name, list(registry)))
    return registry[name]


def study(name: str, quick: bool = False, output: Union[str, Path, None] = None,
          workers: Optional[int] = None, resume: bool = False) -> StudyResult:
    """Run the study ``name`` (its reduced grid with ``quick``) into ``output`` and return its
    :class:`StudyResult`; ``resume`` continues a study run there before."""
    return get(name).run(quick=quick, output=output, workers=workers, resume=resume)
