"""Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari (2020), the catapult phase: gradient
descent at dt = c * 2 / lambda_0 is lazy below c = 1, catapults (the loss rises, the kernel
falls, then it converges) between 1 and the upper edge, and diverges above it. Two studies:
``catapult``, their uv model (``scenarios/sweeps/catapult.yaml``), and ``catapult_relu``, a
relu network on a teacher-student task (``scenarios/sweeps/catapult_relu.yaml``).

Every point's phase comes from its loss and kernel by the rule of docs/design.md §7.5
(:mod:`meanfield.analysis.catapult`, which ``meanfield analyze`` also prints), and the edges
along c are the midpoints of the grid values around them. The reduced check of ``catapult``
is the grid of tests/test_catapult.py (widths 64 and 512, c = 0.5, 0.9, 1.5, 1.9, 2.5, one
seed, t = 150); that of ``catapult_relu`` one width, 1024, at c = 0.9, 1.5, 2, 3.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .base import Reference, Study, reduced_sweep, run_sweep_into

FACTOR = "train.integrator.dt_factor"

UV = (
    Reference("uv: lazy -> catapult edge c, largest width", 1.0, tolerance=0.05, quick_tolerance=0.3),
    Reference("uv: catapult -> diverged edge c, largest width (eta_max = 4 / lambda_0)", 2.0, tolerance=0.05,
              quick_tolerance=0.3),
    Reference("uv, catapult points: largest c lambda_T / lambda_0 (lambda_T < 2 / dt)", "< 1"),
    Reference("uv, catapult: exponent in m of the median peak of L / L_0 (grows like m)", 1.0, tolerance=0.3,
              quick=False),
)
RELU = (
    Reference("relu: lazy -> catapult edge c, largest width", 1.0, tolerance=0.1, quick_tolerance=0.3),
    # their value for relu networks is not restated: only "above the uv model's 2" is checked
    Reference("relu: catapult -> diverged edge c, smallest over the widths (above the uv model's 2)", "> 2",
              checked=False),
    Reference("relu, catapult points: largest c lambda_T / lambda_0 (lambda_T < 2 / dt)", "< 1"),
)


def _measure(path: Path, refs: tuple) -> dict:
    from ..analysis import PhaseEdges, phase_edges, phase_rows

    rows = phase_rows(path)
    if not rows:
        return {}
    edges = {e.group["model.width"]: e for e in phase_edges(rows)}
    largest = edges[max(edges)]
    out = {refs[0].quantity: PhaseEdges.middle(largest.lower)}
    uppers = [PhaseEdges.middle(e.upper) for e in edges.values()]
    if refs is UV:
        out[refs[1].quantity] = PhaseEdges.middle(largest.upper)
    else:  # the smallest upper edge over the widths that bracket one
        out[refs[1].quantity] = math.nan if all(map(math.isnan, uppers)) else float(np.nanmin(uppers))
    catapults = [r for r in rows if r.phase == "catapult"]
    if catapults:
        out[refs[2].quantity] = float(max(r.c * r.kernel_ratio for r in catapults))
    if refs is UV:
        peaks = {}
        for r in catapults:
            peaks.setdefault(r.group["model.width"], []).append(r.peak)
        if len(peaks) >= 2:
            widths = sorted(peaks)
            medians = [float(np.median(peaks[m])) for m in widths]
            out[refs[3].quantity] = float(np.polyfit(np.log(widths), np.log(medians), 1)[0])
    return out  # an edge the grid does not bracket is NaN: it does not agree


def measure_uv(path: Path, quick: bool = False) -> dict:
    return _measure(path, UV)


def measure_relu(path: Path, quick: bool = False) -> dict:
    return _measure(path, RELU)


def draw(path: Path, figure: Path) -> Path:
    from ..analysis import phase_rows, phases_figure

    return phases_figure(phase_rows(path), figure)


def _quick_uv(raw: dict) -> None:
    # tests/test_catapult.py's reduced grid
    raw["grid"] = {"model.width": [64, 512], FACTOR: [0.5, 0.9, 1.5, 1.9, 2.5], "seed": [0]}
    raw["base"]["train"]["t_end"] = 150.0
    raw["base"]["record"]["every"] = 4.0


def _quick_relu(raw: dict) -> None:
    raw["grid"] = {"model.width": [1024], FACTOR: [0.9, 1.5, 2.0, 3.0], "seed": [0]}


def run_uv(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    sweep = reduced_sweep("catapult", _quick_uv) if quick else "catapult"
    return run_sweep_into(sweep, directory, quick, workers, resume)


def run_relu(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    sweep = reduced_sweep("catapult_relu", _quick_relu) if quick else "catapult_relu"
    return run_sweep_into(sweep, directory, quick, workers, resume)


CITATION = ("Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari (2020), The large learning rate phase of deep "
            "learning: the catapult mechanism")

STUDIES = (
    Study(name="catapult",
          title="the catapult phase of the uv model: lazy below c = 1, catapult to c = 2, then divergence",
          citation=CITATION, kind="sweep", source="catapult", references=UV, run_study=run_uv, measure=measure_uv,
          draw=draw, full_time="108 points, 113 s"),
    Study(name="catapult_relu", title="the catapult phase of a relu network on a teacher-student task",
          citation=CITATION + " (their relu value of the upper edge not restated here: unchecked)",
          kind="sweep", source="catapult_relu", references=RELU, run_study=run_relu, measure=measure_relu,
          draw=draw, full_time="90 points, 143 s"),
)
