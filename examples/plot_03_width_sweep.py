"""
A width sweep: the width theorem
================================

The relative change of the first layer's weights at a fixed time, ||W_t - W_0|| / ||W_0||,
against the width m: under the NTK parameterization it falls as m^(-1/2), under the
mean-field one it does not depend on m (Chizat, Oyallon & Bach 2019; Yang & Hu 2021). A
sweep is a grid of scenarios, one trajectory per point, run in worker processes, and a
results table; ``mf.analyze`` fits the power laws.

A script that starts workers runs them under ``if __name__ == "__main__":`` (each worker is
a spawned process that imports the main script); in a notebook the guard is true.
"""

import tempfile

import meanfield as mf

if __name__ == "__main__":
    # The sweep's directory must be new or empty (resume=True continues one): a new one here.
    res = mf.sweep("width_theorem", grid={"model.width": [64, 256, 1024]}, replicates=2, workers=2,
                   output=tempfile.mkdtemp(prefix="width_sweep-"), progress=False)
    print(res.table[["model.width", "seed", "ntk.displacement_w", "mean_field.displacement_w"]])

# %%
# The fits, with 95% intervals, and the figure of the measure against the width.
if __name__ == "__main__":
    analysis = mf.analyze(res, measure="displacement_w", against="model.width", figure="width_sweep.png")
    print(analysis)
