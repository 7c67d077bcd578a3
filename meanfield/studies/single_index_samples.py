"""Single-index models, sample complexity: a rich network against NTK regression on
y = He_2(<u, x>)/sqrt(2) (the bundled sweep ``scenarios/sweeps/single_index_samples.yaml``).

n* is where the test loss falls below 0.05, a tenth of the loss of predicting 0 (log-log
interpolation between grid points), k its exponent in d. The reduced check is the grid of
tests/test_studies_scale.py: d = 16 and n = 256 (= d^2), 1024.
"""

from __future__ import annotations

import math
from pathlib import Path

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "single_index_samples"
LEVEL = 0.05

REFERENCES = (
    Reference("test loss, rich, d = 16, n = 256 = d^2 (learns from n ~ d log d)", f"< {LEVEL:g}"),
    Reference("test loss, NTK, d = 16, n = 256 = d^2 (needs n >> d^2)", f"> {LEVEL:g}"),
    Reference("test loss, NTK, d = 16, n = 1024 = 4 d^2", f"< {LEVEL:g}"),
    Reference("k in n* ~ d^k, rich (d log d: 1.29 over d = 16...64)", 1.0, tolerance=0.5, quick=False),
    Reference("k in n* ~ d^k, NTK", 2.0, tolerance=0.5, quick=False),
    Reference("n* NTK / n* rich, d = 64", "> 1", quick=False),
)


def _loss(table, run: str, dim: int, n: int) -> float:
    for d, k, value in zip(table["data.dim"], table["data.n_train"], table[f"{run}.loss_test"]):
        if int(d) == dim and int(k) == n:
            return float(value)
    return math.nan


def measure(path: Path, quick: bool = False) -> dict:
    from ..analysis import threshold_scaling, thresholds
    from ..sweeps.table import read_table

    table = read_table(path)
    out = {}
    for ref, run, n in zip(REFERENCES[:3], ("rich", "ntk", "ntk"), (256, 256, 1024)):
        value = _loss(table, run, 16, n)
        if not math.isnan(value):
            out[ref.quantity] = value
    dims = {int(d) for d in table["data.dim"]}
    if len(dims) < 2:
        return out
    rows = thresholds(table, "loss_test", "data.n_train", LEVEL, runs=["rich", "ntk"])
    for _, run, fit in threshold_scaling(rows, "data.dim"):
        out[REFERENCES[3 if run == "rich" else 4].quantity] = fit.exponent
    star = {(row.run, int(row.group["data.dim"])): row.crossing for row in rows}
    if ("rich", 64) in star and ("ntk", 64) in star:
        out[REFERENCES[5].quantity] = star["ntk", 64] / star["rich", 64]
    return out


def draw(path: Path, figure: Path) -> Path:
    from ..analysis import figure as draw_figure

    return draw_figure(path, "loss_test", "data.n_train", figure)


def _quick(raw: dict) -> None:
    raw["grid"] = {"data.dim": [16], "data.n_train": [1024, 256]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    return run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)


STUDIES = (Study(
    name=NAME, title="sample complexity of a degree-2 single-index model: rich network against NTK regression",
    citation="Ghorbani, Mei, Misiakiewicz & Montanari (2021), Ann. Stat. (rotation-invariant kernels need n >> d^2); "
             "Ben Arous, Gheissari & Jagannath (2021), JMLR (SGD: n ~ d log d at information exponent 2); "
             "Damian, Nichani, Ge & Lee (2023) (n ~ d)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="21 points, 188 s"),)
