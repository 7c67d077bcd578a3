"""The width theorem: how far the first layer moves as the width grows, per parameterization
(the bundled sweep ``scenarios/sweeps/width_theorem.yaml``, its header the design).

Relative weight change ||W_t - W_0|| / ||W_0|| at t = 5 (relu teacher-student, d = 5,
n = 200, widths 64...4096, 4 seeds), fitted as a power law of m. The reduced check is the
grid of tests/test_studies_width.py: one seed, widths 64, 256, 1024 for the stable family and
64, 512 for the fixed learning rate (seconds).
"""

from __future__ import annotations

from pathlib import Path

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "width_theorem"
STABLE = ("ntk", "mean_field", "standard_lr_1_over_m")

REFERENCES = (
    # the full study's tolerance: about its 95% intervals (docs/studies.md: -0.51 [-0.59, -0.44], ...);
    # the quick check's: what tests/test_studies_width.py asserts of three widths and one seed
    Reference("exponent of ||W_t - W_0||/||W_0|| in m, ntk", -0.5, tolerance=0.1, quick_tolerance=0.4),
    Reference("exponent of ||W_t - W_0||/||W_0|| in m, mean_field", 0.0, tolerance=0.1),
    Reference("exponent of ||W_t - W_0||/||W_0|| in m, standard at lr ~ 1/m", -1.5, tolerance=0.1,
              quick_tolerance=0.5),
    Reference("standard at a fixed lr, largest width", "diverges"),
)


def _quick_flow(raw: dict) -> None:
    raw["grid"] = {"runs": {"stable_lr": raw["grid"]["runs"]["stable_lr"]}, "model.width": [64, 256, 1024],
                   "seed": [0]}


def _quick_fixed(raw: dict) -> None:
    raw["grid"] = {"runs": {"fixed_lr": raw["grid"]["runs"]["fixed_lr"]}, "model.width": [64, 512], "seed": [0]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    if not quick:
        return run_sweep_into(NAME, directory, quick, workers, resume)
    run_sweep_into(reduced_sweep(NAME, _quick_flow), directory / "flow", quick, resume=resume)
    run_sweep_into(reduced_sweep(NAME, _quick_fixed), directory / "fixed", quick, resume=resume)
    return directory


def _tables(path: Path) -> list:
    from ..sweeps.table import read_table

    parts = [path / "flow", path / "fixed"]
    return [read_table(p) for p in parts] if parts[0].is_dir() else [read_table(path)]


def measure(path: Path, quick: bool = False) -> dict:
    from ..analysis import scaling

    out = {}
    tables = _tables(path)
    labels = {"ntk": REFERENCES[0], "mean_field": REFERENCES[1], "standard_lr_1_over_m": REFERENCES[2]}
    for row in scaling(tables[0], runs=list(STABLE)):
        out[labels[row.run].quantity] = row.fit.exponent
    fixed = tables[-1]
    family = [str(f) for f in fixed["runs"]] if "runs" in fixed.columns else ["fixed_lr"] * len(fixed["status"])
    widths = [int(w) for w, f in zip(fixed["model.width"], family) if f == "fixed_lr"]
    if widths:
        failed = [str(s) == "failed" for s, w, f in zip(fixed["status"], fixed["model.width"], family)
                  if f == "fixed_lr" and int(w) == max(widths)]
        out[REFERENCES[3].quantity] = "diverges" if all(failed) else "converges"
    return out


def draw(path: Path, figure: Path) -> Path:
    from ..analysis import figure as draw_figure

    return draw_figure(_tables(path)[0], "displacement_w", "model.width", figure, runs=list(STABLE))


STUDIES = (Study(
    name=NAME, title="relative weight change against width, per parameterization",
    citation="Jacot et al. 2018; Mei, Montanari & Nguyen 2018; Chizat & Bach 2018; Yang & Hu 2021 "
             "(Tensor Programs IV): r = 1/2 (ntk), 0 (mean field), 3/2 (standard at lr ~ 1/m); "
             "standard at a fixed lr unstable",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="56 points, 92 s"),)
