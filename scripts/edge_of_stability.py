"""The table and figure of the bundled edge_of_stability scenario (Cohen et al. 2021).

    meanfield simulate edge_of_stability -o eos.h5
    python scripts/edge_of_stability.py eos.h5 [--figure docs/studies/edge_of_stability.png] [--level 0.9]

A thin wrapper around the study (meanfield/studies/edge_of_stability.py; ``meanfield study
edge_of_stability`` runs it and prints it beside the published values): prints, for each
fixed-step run that recorded hessian_eigenvalue_max (the sharpness S, learning rates included:
docs/design.md §1.9), its step dt, 2/dt, q = S dt / 2 at t = 0, the first snapshot time at
which q >= level (the run reaches the edge), the median q from then on (where it hovers) and
the largest q; and, for each run, the relative change of S over the run. The figure draws q
against time, one curve per run, over the training losses.
"""

from __future__ import annotations

import argparse
import sys

import meanfield as mf
from meanfield.studies.edge_of_stability import report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file",
                        help="the trajectory file of edge_of_stability (or any scenario recording the sharpness)")
    parser.add_argument("--figure", default=None, help="write the figure here (.png, .pdf, .svg)")
    parser.add_argument("--level", type=float, default=0.9, help="q at which a run has reached the edge (default 0.9)")
    args = parser.parse_args(argv)
    try:
        with mf.open(args.file) as trajectory:
            print(report(trajectory, args.level))
            if args.figure:
                print(f"figure: {mf.edge_figure(trajectory, args.figure)}")
    except mf.UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
