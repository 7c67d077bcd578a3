"""The table and figure of the bundled chizat_oyallon_bach study, from its results directory.

    meanfield sweep chizat_oyallon_bach -o cob --workers 2
    python scripts/chizat_oyallon_bach.py cob [--figure docs/studies/chizat_oyallon_bach.png]

A thin wrapper around the study (meanfield/studies/chizat_oyallon_bach.py; ``meanfield study
chizat_oyallon_bach`` runs it and prints it beside the published values): prints, for each
scale tau, the means over the seeds of the lazy run's test loss at the end and the best over
the snapshots, the first layer's relative change, the training loss and the ntk run's test
loss, then the exponent of the change in tau on the lazy side; the figure draws the same
against tau as their figure does.
"""

from __future__ import annotations

import argparse
import sys

from meanfield.studies.chizat_oyallon_bach import COLUMNS, draw_scales, exponent, format_scales, per_scale  # noqa: F401


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="the results directory of `meanfield sweep chizat_oyallon_bach`")
    parser.add_argument("--figure", help="also draw the figure into this file (.png, .pdf, .svg)")
    args = parser.parse_args()
    table = per_scale(args.directory)
    print(format_scales(table))
    if args.figure:
        draw_scales(table, args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
