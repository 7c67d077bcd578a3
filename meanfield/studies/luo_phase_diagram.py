"""Luo, Xu, Ma & Zhang (2021), the phase diagram of two-layer relu networks: linear,
critical or condensed at each (gamma, gamma') (the bundled sweep
``scenarios/sweeps/luo_phase_diagram.yaml``, its header the mapping onto our ``custom`` preset).

Twelve (gamma, gamma') points, each a run; the phase each measures is the one its width
exponent names (|exponent| <= 0.1: critical, below: linear, above: condensed). The reduced
check is the grid of tests/test_studies_width.py: three runs, one in each phase, at widths
64, 256, 1024 and one seed.
"""

from __future__ import annotations

from pathlib import Path

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "luo_phase_diagram"
QUICK_RUNS = ("g05_gp05", "g1_gp0", "g15_gpm05")

# Published (their Fig. 1 and Theorem): linear if gamma < 1 or gamma' > gamma - 1, condensed if
# gamma > 1 and gamma' < gamma - 1, critical on the boundary between.
PUBLISHED = {
    (0.5, -0.5): "linear", (0.5, 0.0): "linear", (0.5, 0.5): "linear", (0.5, 1.0): "linear",
    (1.0, -0.5): "critical", (1.0, 0.0): "critical", (1.0, 0.5): "linear", (1.0, 1.0): "linear",
    (1.5, -0.5): "condensed", (1.5, 0.0): "condensed", (1.5, 0.5): "critical", (1.5, 1.0): "linear",
}


def _run_name(gamma: float, gamma_prime: float) -> str:
    def tag(x):
        return ("m" if x < 0 else "") + f"{abs(x):g}".replace(".", "")

    return f"g{tag(gamma)}_gp{tag(gamma_prime)}"


def _quantity(gamma: float, gamma_prime: float) -> str:
    return f"phase at (gamma, gamma') = ({gamma:g}, {gamma_prime:g})"


REFERENCES = tuple(Reference(_quantity(g, gp), phase, quick=_run_name(g, gp) in QUICK_RUNS)
                   for (g, gp), phase in PUBLISHED.items())
RUNS = {_run_name(g, gp): _quantity(g, gp) for g, gp in PUBLISHED}


def _quick(raw: dict) -> None:
    raw["base"]["runs"] = {k: v for k, v in raw["base"]["runs"].items() if k in QUICK_RUNS}
    raw["base"]["record"] = {"every": 1.0, "particles": False}
    raw["grid"] = {"model.width": [64, 256, 1024], "seed": [0]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    return run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)


def measure(path: Path, quick: bool = False) -> dict:
    from ..analysis import classify, phase_points

    # the phase the width exponent names (three widths give an interval too wide for a verdict)
    return {RUNS[p.run]: classify(p.exponent) for p in phase_points(path) if p.run in RUNS}


def draw(path: Path, figure: Path) -> Path:
    from ..analysis import phase_figure
    from ..sweeps.table import read_table

    return phase_figure(read_table(path), figure)


STUDIES = (Study(
    name=NAME, title="the phase diagram: linear, critical, condensed at each (gamma, gamma')",
    citation="Luo, Xu, Ma & Zhang (2021), Phase diagram for two-layer ReLU neural networks at infinite-width "
             "limit, JMLR 22(71)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="28 points, 149 s"),)
