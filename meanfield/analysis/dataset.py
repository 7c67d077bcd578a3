"""A sweep's results table as an ``xarray.Dataset`` on its grid."""

from __future__ import annotations

import numpy as np

from ..sweeps.table import Table, python_scalar
from .families import as_table, axes, distinct


def to_dataset(table):
    """The sweep as an ``xarray.Dataset``: one dimension per axis (``axes``: the grid keys,
    and ``seed`` where seeds vary without being one), coordinates their values in the order
    they appear; data variables every numeric ``<run>.<measure>`` column, ``seconds`` and
    ``status``. Cells without a point are NaN (``status``: "missing"). ValueError if two
    points share coordinates.
    """
    try:
        import xarray as xr
    except ImportError:
        raise ImportError("to_dataset needs xarray: pip install xarray") from None
    table = as_table(table)
    dims = axes(table)
    coords = {k: distinct(table[k]) for k in dims}
    shape = tuple(len(v) for v in coords.values())
    cells = _cells(table, coords, shape)
    variables = {name: (dims, _fill(table[name], cells, shape, np.nan, np.float64))
                 for name in [*table.measure_columns(), "seconds"] if name in table.columns}
    if "status" in table.columns:
        variables["status"] = (dims, _fill(table["status"], cells, shape, "missing", object))
    return xr.Dataset(variables, coords={k: np.asarray(v) for k, v in coords.items()},
                      attrs={"name": table.name, "grid_keys": list(table.grid_keys)})


def _cells(table: Table, coords: dict, shape: tuple) -> np.ndarray:
    """The flat cell of every row in the product grid; ValueError if two rows share one."""
    if not coords:
        cells = np.zeros(len(table), dtype=np.int64)
    else:
        lookups = {k: {v: j for j, v in enumerate(values)} for k, values in coords.items()}
        cells = np.ravel_multi_index([[lookups[k][python_scalar(x)] for x in table[k]] for k in coords], shape)
    if len(np.unique(cells)) < len(cells):
        raise ValueError(f"points share coordinates on the axes {', '.join(coords) or '(none)'}: not a grid")
    return cells


def _fill(values, cells, shape, missing, dtype) -> np.ndarray:
    """An array of ``shape`` holding each value at its flat cell and ``missing`` elsewhere."""
    out = np.full(int(np.prod(shape)), missing, dtype=dtype)
    out[cells] = np.asarray(values, dtype=dtype)
    return out.reshape(shape)
