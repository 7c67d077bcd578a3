"""The contract every bundled study keeps (docs/design.md §6): what it reproduces, the
published values with their citation, how it measures them, its figure and its reduced
("quick") check.

A study is one :class:`Study`: its ``name``, ``title`` and ``citation``; ``source``, the
bundled sweep (``scenarios/sweeps/NAME.yaml``) or scenario it runs; ``references``, one
:class:`Reference` per published quantity; and three functions a study module supplies:

    run(quick, directory, workers) -> path     run the full study, or its reduced grid, into directory
    measure(path, quick) -> {quantity: value}  the measured value of each reference it measured
    draw(path, figure) -> figure               the study's figure

:meth:`Study.run` returns a :class:`StudyResult`: ``.table``, a pandas DataFrame with one row
per published quantity and the columns of :data:`COLUMNS`, the same for every study, so
any study is checked the same way; ``.figure(path)``; ``str()`` prints the table.

A reference's ``published`` is what the paper states: a number (agreement: ``|measured -
published| <= tolerance``), a bound ``"< x"`` or ``"> x"`` (the measured number on that
side), or a word (``"linear"``, ``"diverges"``: the measured word equal to it). Where the
reduced grid checks a number more loosely than the full study (three widths instead of
seven), ``quick_tolerance`` is the tolerance of the quick check, the one its test asserts.
A value the project could not check against the paper is marked ``checked=False``: its
quantity reads "(unchecked)".
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

COLUMNS = ("quantity", "published", "measured", "tolerance", "agrees")
"""The columns of every study's table, in this order."""


@dataclass(frozen=True)
class Reference:
    """One published quantity: its ``published`` value (a number, ``"< x"``, ``"> x"`` or a
    word), the ``tolerance`` of a numeric agreement (the full study's; ``quick_tolerance``
    the reduced check's, None: the same), whether the quick check measures it (``quick``),
    and whether the project checked the value against the paper (``checked``)."""

    quantity: str
    published: Union[float, str]
    tolerance: Optional[float] = None
    quick_tolerance: Optional[float] = None
    quick: bool = True
    checked: bool = True

    @property
    def label(self) -> str:
        return self.quantity if self.checked else f"{self.quantity} (unchecked)"

    def tolerance_for(self, quick: bool) -> Optional[float]:
        return self.quick_tolerance if quick and self.quick_tolerance is not None else self.tolerance

    def agrees(self, measured, quick: bool = False) -> bool:
        """Whether ``measured`` agrees with the published value (see the module's docstring)."""
        return agrees(self.published, measured, self.tolerance_for(quick))


def agrees(published, measured, tolerance: Optional[float] = None) -> bool:
    """The one agreement rule of every study: numbers within ``tolerance`` (exactly equal
    without one), a bound ``"< x"``/``"> x"`` on a number, or the same word; a missing
    (None, NaN) measurement never agrees."""
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return False
    if isinstance(published, str):
        bound = published.strip()
        if bound[:1] in "<>" and _is_number(measured):
            limit = float(bound[1:])
            return bool(measured < limit) if bound[0] == "<" else bool(measured > limit)
        return str(measured) == published
    if not _is_number(measured):
        return False
    return bool(abs(float(measured) - float(published)) <= (tolerance or 0.0))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Study:
    """One bundled study (see the module's docstring). ``kind``: ``"sweep"`` or ``"scenario"``;
    ``source``: the bundled sweep's or scenario's name; ``full_time``: docs/studies.md's wall time
    of the full study, for ``--list``."""

    name: str
    title: str
    citation: str
    kind: str
    source: str
    references: tuple[Reference, ...]
    run_study: Callable = field(repr=False)
    measure: Callable = field(repr=False)
    draw: Callable = field(repr=False)
    full_time: str = ""

    def run(self, quick: bool = False, output: Union[str, Path, None] = None,
            workers: Optional[int] = None, resume: bool = False) -> StudyResult:
        """Run the study (its reduced grid with ``quick``) into ``output`` (a directory; None: a
        new temporary one; ``resume`` continues one run there before, running only what is
        not complete) and measure it: a :class:`StudyResult`."""
        import tempfile

        directory = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix=f"meanfield-{self.name}-"))
        directory.mkdir(parents=True, exist_ok=True)
        path = self.run_study(quick, directory, workers, resume)
        return self.result(path, quick)

    def result(self, path: Union[str, Path], quick: bool = False) -> StudyResult:
        """The :class:`StudyResult` of results already written (a sweep directory or a
        trajectory file), e.g. by ``meanfield sweep NAME``."""
        return StudyResult(self, Path(path), quick, self.measure(Path(path), quick))

    def table(self, measured: dict, quick: bool = False):
        """The contract's DataFrame: one row per reference that ``measured`` holds (a quick
        check measures only those it can), in the order of ``references``."""
        import pandas as pd

        rows = []
        for ref in self.references:
            if ref.quantity not in measured or (quick and not ref.quick):
                continue
            value = measured[ref.quantity]
            rows.append({"quantity": ref.label, "published": ref.published, "measured": value,
                         "tolerance": ref.tolerance_for(quick), "agrees": ref.agrees(value, quick)})
        return pd.DataFrame(rows, columns=list(COLUMNS))


@dataclass
class StudyResult:
    """What a study measured: ``table`` (the contract's DataFrame), ``path`` (its sweep
    directory or trajectory file), ``figure(path)``; ``str()`` is the table beside the
    published values and the citation."""

    study: Study
    path: Path
    quick: bool
    measured: dict

    @property
    def table(self):
        return self.study.table(self.measured, self.quick)

    @property
    def agrees(self) -> bool:
        """Whether every measured quantity agrees with its published value."""
        return bool(self.table["agrees"].all())

    def figure(self, path: Union[str, Path]) -> Path:
        """Draw the study's figure into ``path`` (.png, .pdf, .svg); returns it."""
        return Path(self.study.draw(self.path, Path(path)))

    def __str__(self) -> str:
        table = self.table
        header = (f"{self.study.name}{' (quick check)' if self.quick else ''}: {self.study.title}\n"
                  f"{self.study.citation}\nresults: {self.path}")
        if table.empty:
            return header + "\nnothing measured"
        cells = [[str(c) for c in COLUMNS]] + [[_cell(v) for v in row] for row in table.itertuples(index=False)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
        agreeing = int(table["agrees"].sum())
        return "\n".join([header, *lines, f"{agreeing} of {len(table)} agree with the published values"])

    def __repr__(self) -> str:
        return f"<meanfield study {self.study.name}{' quick' if self.quick else ''}: {self.path}>"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if _is_number(value):
        return f"{value:.4g}"
    return str(value)


def reduced_sweep(name: str, edit: Callable[[dict], None]):
    """The bundled sweep ``name`` with its YAML edited in place by ``edit`` (a smaller grid, a
    shorter run): the reduced grid of a quick check, validated like any sweep."""
    import yaml

    from ..config.bundled import SWEEP_DIR
    from ..sweeps.grid import parse_sweep

    raw = yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())
    edit(raw)
    return parse_sweep(yaml.safe_dump(raw, sort_keys=False), root=SWEEP_DIR, default_name=name)


def run_sweep_into(sweep, directory: Path, quick: bool, workers: Optional[int] = None, resume: bool = False) -> Path:
    """Run ``sweep`` (a bundled name or a Sweep) into ``directory``: a reduced grid in this
    process on one thread (seconds, nothing to spawn), the full study on ``workers`` processes;
    ``resume`` runs only the points not complete."""
    if quick:
        from concurrent.futures import ThreadPoolExecutor

        from ..sweeps.execution import run_sweep

        with ThreadPoolExecutor(1) as pool:
            return Path(run_sweep(sweep, directory, executor=pool, threads=1, resume=resume).directory)
    import meanfield as mf

    return Path(mf.sweep(sweep, output=directory, workers=workers, resume=resume).directory)
