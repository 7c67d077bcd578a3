"""The results table of a sweep: one row per point, written as CSV (for people and pandas)
and as HDF5 (for ``meanfield analyze`` and xarray), both replaced atomically.

Columns, in order: ``point`` (the point's id, e.g. ``p0007``), one column per grid key
(named by its dotted path, e.g. ``model.width``), ``seed``, ``status`` (complete | failed),
``reason`` (why a point failed, else empty), ``seconds`` (wall time of the point), ``file``
(its trajectory, relative to the sweep directory), then for every run of the scenario its
final scalar measures as ``<run>.<measure>`` (``rich.loss_test``, ``ntk.loss_test``,
``lazy.displacement_w``, ...), ``<run>.t`` (the time it reached) and
``<run>.predicted_regime``.

A column whose values are all numbers is stored as int64 (all integers) or float64
(missing values NaN); any other column as strings (a grid value that is a mapping is
written as one line of YAML).

HDF5 layout: ``/table/<column>`` one 1-D dataset per column; attributes of ``/table``:
``columns`` (their order), ``grid_keys``; of the root: ``format`` = ``meanfield-sweep``,
``format_version``, ``sweep`` (the sweep file as YAML), ``name``.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

from ..errors import UsageError

FORMAT = "meanfield-sweep"
FORMAT_VERSION = 1
CSV_NAME, H5_NAME = "results.csv", "results.h5"


@dataclass
class Table:
    """Columns by name (1-D arrays of equal length), the grid keys among them, and the sweep."""

    columns: dict[str, np.ndarray]
    grid_keys: list[str]
    name: str = ""
    sweep_yaml: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, column: str) -> np.ndarray:
        return self.columns[column]

    def rows(self) -> list[dict]:
        """The table as one dict per point."""
        names = list(self.columns)
        return [{k: python_scalar(self.columns[k][i]) for k in names} for i in range(len(self))]

    def measure_columns(self) -> list[str]:
        """The ``<run>.<measure>`` columns that hold measured numbers (not ``<run>.t`` or the
        ``<run>.predicted_*`` numbers of the parameterization)."""
        return [k for k in self.columns if k not in self.grid_keys and "." in k
                and self.columns[k].dtype.kind in "fi" and not _is_run_setting(k.rpartition(".")[2])]


def _is_run_setting(suffix: str) -> bool:
    return suffix == "t" or suffix.startswith("predicted_")


def python_scalar(value):
    """``value`` as a Python scalar where it is a NumPy scalar (``np.int64(3)`` -> ``3``), else ``value`` itself."""
    return value.item() if isinstance(value, np.generic) else value


def cell_text(value) -> str:
    """A grid value as one cell: numbers and strings as they are, mappings and lists as flow YAML."""
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return "" if value is None else str(value)


def column_array(values: list) -> np.ndarray:
    """int64 if every value is an integer, float64 if every value is a number or missing, else str."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    if all(isinstance(v, numbers.Real) for v in present):
        return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.asarray([cell_text(v) for v in values], dtype=object)


def write_table(directory: str | Path, rows: list[dict], grid_keys: list[str], *, name: str = "",
                sweep_yaml: str = "") -> Table:
    """Write ``results.csv`` and ``results.h5`` in ``directory`` from one dict per point.

    Each file is written beside its final name and moved into place, so a sweep killed
    at any moment leaves the previous table whole.
    """
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    table = Table({k: column_array([row.get(k) for row in rows]) for k in names}, list(grid_keys),
                  name, sweep_yaml)
    directory = Path(directory)
    write_atomically(directory / CSV_NAME, lambda path: _write_csv(path, table))
    write_atomically(directory / H5_NAME, lambda path: _write_h5(path, table))
    return table


def read_table(path: str | Path) -> Table:
    """The table of a sweep directory (or of its ``results.h5``); UsageError if it is not ours."""
    path = Path(path)
    if path.is_dir():
        path = path / H5_NAME
    if not path.exists():
        raise UsageError(f"{path}: no such file (a sweep directory holds {H5_NAME}; run meanfield sweep first)")
    try:
        h5 = h5py.File(path, "r", locking=False)
    except OSError:
        raise UsageError(f"{path}: not an HDF5 file") from None
    with h5:
        if h5.attrs.get("format") != FORMAT or "table" not in h5:
            raise UsageError(f"{path}: not a meanfield sweep table (no format = {FORMAT!r})")
        group = h5["table"]
        columns = {}
        for name in group.attrs["columns"]:
            data = group[name]
            columns[str(name)] = (data.asstr()[()].astype(object) if h5py.check_string_dtype(data.dtype)
                                  else data[()])
        return Table(columns, [str(k) for k in group.attrs["grid_keys"]], str(h5.attrs.get("name", "")),
                     str(h5.attrs.get("sweep", "")))


def write_atomically(path: Path, write) -> None:
    """Call ``write(partial)`` on a file beside ``path``, then move it into place."""
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)


def _write_csv(path: Path, table: Table) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.columns)
        for row in table.rows():
            writer.writerow([csv_cell(v) for v in row.values()])


def csv_cell(value) -> str:
    """A CSV cell: floats in full precision (NaN as empty), everything else as text."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _write_h5(path: Path, table: Table) -> None:
    with h5py.File(path, "w") as h5:
        h5.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, name=table.name, sweep=table.sweep_yaml)
        group = h5.create_group("table")
        for name, values in table.columns.items():
            if values.dtype == object:
                group.create_dataset(name, data=values.astype(str).tolist(), dtype=h5py.string_dtype())
            else:
                group.create_dataset(name, data=values)
        group.attrs["columns"] = list(table.columns)
        group.attrs["grid_keys"] = list(table.grid_keys)
