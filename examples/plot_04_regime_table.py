"""
Which regime am I in? The regime table
======================================

The textbook table of four rows (standard parameterization at a moderate and at a large
learning rate, muP, mean field), run as four runs from the same particles by the bundled
``regime_table`` scenario, here at m = 256 (the standard runs' learning rate 1/m, as the
scenario's at m = 4096). Each run is measured and its verdict set beside the table's row.
"""

import pandas as pd

import meanfield as mf

m = 256
sc = mf.load_scenario("regime_table", {"model.width": m, "runs.sp_moderate.parameterization.lr": 1 / m,
                                       "runs.sp_large.parameterization.lr": 1 / m})
traj = mf.simulate(sc, progress=False)

# %%
# The table's row and regime of each run, the regime its parameterization predicts and the
# one measured, with the numbers behind the verdict (docs/design.md §1.8).
rows = []
for name in traj.runs:
    run = traj[name]
    row, regime = run.table_regime()
    numbers = run.regime_numbers()
    rows.append({"run": name, "table row": row, "table": regime, "predicted": run.predicted_regime,
                 "measured": run.verdict()[0], "displacement_w": numbers["displacement_w"],
                 "lambda_T / lambda_0": numbers.get("lambda_ratio"), "loss peak / start": numbers["loss_peak_ratio"]})
table = pd.DataFrame(rows).set_index("run")
table

# %%
# The measures of the four runs against time: ``sp_large`` catapults (its loss rises to the
# peak in the table, then falls while the kernel's top eigenvalue drops below its start:
# lambda_T / lambda_0 < 1); the mean-field runs sharpen instead (lambda_T / lambda_0 > 1).
mf.plot(traj, "regime_table.png")
