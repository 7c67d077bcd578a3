"""Cohen, Kaur, Li, Kolter & Talwalkar (2021), the edge of stability: under full-batch
gradient descent the sharpness rises until it reaches 2/dt, then hovers just above it (the
bundled scenario ``scenarios/edge_of_stability.yaml``, one scenario, not a sweep).

Each fixed-step run's sharpness S = ``hessian_eigenvalue_max`` read as q = S dt / 2 (1 at the
edge) by :mod:`meanfield.analysis.stability` (``mf.edge_of_stability``, ``mf.edge_figure``): the first
snapshot with q >= 0.9 (``t_edge``) and the median q from then on (``hover``). The reduced
check is the scenario of tests/test_edge_of_stability.py: width 1024, t = 12, the rich run at
dt = 0.2 and the ntk run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis.stability import SHARPNESS, format_edges
from .base import Reference, Study

NAME = "edge_of_stability"
FILE = f"{NAME}.h5"
QUICK = {"model.width": 1024, "train.t_end": 12.0, "runs.rich_dt030": None, "runs.rich_dt024": None}

REFERENCES = (
    Reference("rich, dt = 0.2: sharpness rises (progressive sharpening), max S / S(0)", "> 1"),
    Reference("rich, dt = 0.2: reaches the edge, q = S dt / 2 >= 0.9", "reaches"),
    Reference("rich, dt = 0.2: hovers at the edge, median q after t_edge", 1.0, tolerance=0.15),
    Reference("rich, dt = 0.24: hovers at the edge, median q after t_edge", 1.0, tolerance=0.15, quick=False),
    Reference("rich, dt = 0.3: hovers at the edge, median q after t_edge", 1.0, tolerance=0.15, quick=False),
    Reference("rich, dt = 0.2: the loss keeps falling at the edge (last loss within 2x its minimum)",
              "keeps falling", quick=False),
    Reference("lazy (ntk, a fixed kernel): max |S / S(0) - 1|", 0.0, tolerance=0.03),
)
HOVER = {"rich_dt020": REFERENCES[2], "rich_dt024": REFERENCES[3], "rich_dt030": REFERENCES[4]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    import meanfield as mf

    scenario = mf.load_scenario(NAME, QUICK if quick else {})
    path = directory / FILE
    mf.simulate(scenario, path, resume=resume, overwrite=not resume).close()
    return path


def measure(path: Path, quick: bool = False) -> dict:
    import meanfield as mf

    out = {}
    with mf.open(path) as trajectory:
        edges = mf.edge_of_stability(trajectory)
        for name, edge in edges.items():
            run = trajectory[name]
            sharpness = run.series(SHARPNESS).value
            if name == "rich_dt020":
                out[REFERENCES[0].quantity] = float(np.nanmax(sharpness) / sharpness[0])
                out[REFERENCES[1].quantity] = "never" if edge.t_edge is None else "reaches"
                loss = run.series(run.fit_measure)
                if edge.t_edge is not None:
                    after = loss.value[loss.time >= edge.t_edge]
                    falling = after[-1] <= 2 * np.nanmin(after)
                    out[REFERENCES[5].quantity] = "keeps falling" if falling else "spikes and stalls"
            if name in HOVER and edge.hover is not None:
                out[HOVER[name].quantity] = edge.hover
            if name == "lazy":
                out[REFERENCES[6].quantity] = float(np.nanmax(np.abs(sharpness / sharpness[0] - 1)))
    return out


def report(trajectory, level: float = 0.9) -> str:
    """The table of :func:`meanfield.edge_of_stability` and, per run, how its sharpness and its
    loss moved: what ``scripts/edge_of_stability.py`` prints."""
    import meanfield as mf

    edges = mf.edge_of_stability(trajectory, level)
    lines = [format_edges(edges)]
    for name in edges:
        run = trajectory[name]
        values = run.series(SHARPNESS).value
        loss = run.series(run.fit_measure).value
        lines.append(f"{name}: sharpness {values[0]:.4g} -> max {np.nanmax(values):.4g}, last {values[-1]:.4g} "
                     f"(max |S/S0 - 1| = {np.nanmax(np.abs(values / values[0] - 1)):.2g}); "
                     f"loss {loss[0]:.3g} -> min {np.nanmin(loss):.3g}, last {loss[-1]:.3g}")
    return "\n".join(lines)


def draw(path: Path, figure: Path) -> Path:
    import meanfield as mf

    return mf.edge_figure(path, figure)


STUDIES = (Study(
    name=NAME, title="progressive sharpening up to 2/dt, then a hover at the edge",
    citation="Cohen, Kaur, Li, Kolter & Talwalkar (2021), Gradient descent on neural networks typically occurs "
             "at the edge of stability, ICLR",
    kind="scenario", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="scenario, 62 s"),)
