"""
Rich against lazy, side by side
===============================

The same network trained from the same initial particles in the two limits of infinite
width: the mean-field (rich) run moves its neurons onto the teacher's directions, the lazy
run (alpha = 100) keeps them where they started and is kernel regression with their
tangent kernel, as the ``ntk`` run computes exactly (docs/design.md §1.6).
"""

import matplotlib.pyplot as plt
import numpy as np

import meanfield as mf

sc = mf.load_scenario("quickstart", {"model.width": 256})
traj = mf.simulate(sc, progress=False)

# %%
# The loss curves of the three runs: the lazy run's lies on the ``ntk`` run's.
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for name in traj.runs:
    loss = traj[name].measure("loss_test")
    ax.loglog(loss.time[1:], loss[1:], label=name)
ax.set(xlabel="time t", ylabel="test loss", title="quickstart at m = 256")
ax.legend()

# %%
# The neurons at the end, each a dot at its input weights w_i projected on the plane of
# the first two teacher neurons (orthonormal rows of the teacher's W), red where its output
# weight a_i > 0 and blue where a_i < 0: the rich run's neurons gather on the teacher
# neurons' rays, the lazy run's stay in the cloud they started in.
teacher = traj.data.teacher
plane = teacher.W[:2]
fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), layout="constrained", sharex=True, sharey=True)
for ax, name in zip(axes, ("rich", "lazy")):
    frame = traj[name].frame(-1)
    xy = frame.W @ plane.T
    size = 400 * np.abs(frame.a) * np.linalg.norm(frame.W, axis=1) / np.abs(frame.a).max()
    ax.scatter(xy[:, 0], xy[:, 1], s=size, c=np.where(frame.a > 0, "tab:red", "tab:blue"), alpha=0.5)
    ax.scatter([1, 0], [0, 1], marker="*", s=300, c=np.where(teacher.a[:2] > 0, "tab:red", "tab:blue"),
               edgecolors="black")
    ax.set(title=f"{name}: displacement_w {traj[name].measure('displacement_w').isel(time=-1).item():.2f}",
           xlabel="w · w*_1", ylabel="w · w*_2")
