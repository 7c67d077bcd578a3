"""
Quickstart: rich and lazy from the same particles
=================================================

The walk-through of :doc:`/getting_started` as a script. The bundled ``quickstart`` scenario is a ReLU teacher
of 4 neurons in d = 20 learned from 1024 samples; here its network has 256 particles and
two runs from the very same initial particles: ``rich`` (the mean-field parameterization,
s = 1/m) and ``lazy`` (a large output scale, alpha = 100, Chizat, Oyallon & Bach 2019).
"""

import meanfield as mf

sc = mf.load_scenario("quickstart")  # a bundled name, a YAML path, or a dict
sc = sc.replace({"model.width": 256, "runs.ntk": None})  # what --set does, validated the same way
print(mf.plan(sc).describe())  # the resolved numbers, the predicted regimes, the file size

# %%
# ``simulate`` runs every run and returns the trajectory, in memory unless it is given a
# file (``output="q.h5"``).
traj = mf.simulate(sc, progress=False)
print(traj.summary())  # what `meanfield inspect` prints

# %%
# Every measure is an ``xarray.DataArray`` over time: the rich run's test loss falls far
# below the lazy run's, which barely moves from where it started.
for name in traj.runs:
    run = traj[name]
    print(f"{name}: test loss {run.measure('loss_test').isel(time=-1).item():.4f}, "
          f"displacement_w {run.measure('displacement_w').isel(time=-1).item():.3f}, "
          f"predicted {run.predicted_regime}, measured {run.verdict()[0]}")

# %%
# ``mf.plot`` draws the loss, displacement and kernel distance of every run against time.
mf.plot(traj, "quickstart.png")
