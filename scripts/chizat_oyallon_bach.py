"""The table and figure of the bundled chizat_oyallon_bach study, from its results directory.

    meanfield sweep chizat_oyallon_bach -o cob --workers 2
    python scripts/chizat_oyallon_bach.py cob [--figure docs/studies/chizat_oyallon_bach.png]

Prints, for each scale tau (the grid's label), the means over the seeds of what their figure
shows, the lazy run's test loss at the end of training and the best over the snapshots, beside
the first layer's relative change ||A_t - A_0|| / ||A_0|| (displacement_w), the training loss
and the ntk run's test loss (the tau -> infinity limit), then the exponent of the change in tau
on the lazy side. The figure draws the same against tau as their figure does.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np

import meanfield as mf

AXIS = "runs.lazy.parameterization"
COLUMNS = ("loss_test", "best_loss_test", "displacement_w", "loss_train", "ntk_loss_test")


def per_scale(directory) -> dict[float, dict[str, float]]:
    """tau -> the mean over the seeds of each of COLUMNS."""
    results = mf.open_sweep(directory)
    values = defaultdict(lambda: defaultdict(list))
    for _, row in results.table.iterrows():
        with results.trajectory(row["point"]) as trajectory:
            lazy, ntk = trajectory["lazy"], trajectory["ntk"]
            final = lazy.final()
            measured = {"loss_test": final["loss_test"], "best_loss_test": float(lazy.measure("loss_test").min()),
                        "displacement_w": final["displacement_w"], "loss_train": final["loss_train"],
                        "ntk_loss_test": ntk.final()["loss_test"]}
        for name, value in measured.items():
            values[float(row[AXIS])][name].append(value)
    return {tau: {name: float(np.mean(v)) for name, v in columns.items()} for tau, columns in sorted(values.items())}


def exponent(taus, values, low: float, high: float) -> float:
    """The least-squares slope of log(values) against log(tau) for low <= tau <= high."""
    taus, values = np.asarray(taus), np.asarray(values)
    keep = (taus >= low) & (taus <= high)
    return float(np.polyfit(np.log(taus[keep]), np.log(values[keep]), 1)[0])


def draw(table: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = list(table)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.semilogx(taus, [1e3 * table[t]["loss_test"] for t in taus], "k", lw=2.5, label="end of training")
    left.semilogx(taus, [1e3 * table[t]["best_loss_test"] for t in taus], ":k", lw=2.5, label="best throughout training")
    left.axhline(1e3 * table[taus[-1]]["ntk_loss_test"], color="tab:orange", lw=1, label="ntk run (tau -> inf)")
    left.set(xlabel="tau", ylabel="test loss x 1000", title="test loss (their figure's axes)")
    left.legend(fontsize=8)
    right.loglog(taus, [table[t]["displacement_w"] for t in taus], "o-", ms=3, label="||A_t - A_0|| / ||A_0||")
    guide = [t for t in taus if t >= 1]
    right.loglog(guide, [table[guide[0]]["displacement_w"] * (t / guide[0]) ** -2 for t in guide], "--",
                 color="gray", label="tau^-2")
    right.set(xlabel="tau", title="relative change of the first layer")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="the results directory of `meanfield sweep chizat_oyallon_bach`")
    parser.add_argument("--figure", help="also draw the figure into this file (.png, .pdf, .svg)")
    args = parser.parse_args()
    table = per_scale(args.directory)
    print("tau       " + "  ".join(f"{name:>14}" for name in COLUMNS))
    for tau, row in table.items():
        print(f"{tau:<8g}  " + "  ".join(f"{row[name]:14.4g}" for name in COLUMNS))
    taus, change = list(table), [row["displacement_w"] for row in table.values()]
    print(f"exponent of displacement_w in tau: {exponent(taus, change, 1, 10):+.2f} for 1 <= tau <= 10, "
          f"{exponent(taus, change, 0, 0.0631):+.2f} for tau <= 0.063")
    if args.figure:
        draw(table, args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
