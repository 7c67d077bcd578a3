"""
Rich against lazy on real data
==============================

The bundled ``digits`` scenario at a reduced size: the parity of scikit-learn's 8 x 8
handwritten digits (+1 for an even digit, -1 for an odd one), standardised, reduced by PCA
to d = 10 components fitted on the training images and put on the sphere
(:doc:`/scenario_file`, "Real data"; it needs the extra ``meanfield[data]``, and nothing is
downloaded). Here the network has 128 particles and trains on 256 images to t = 40; the
bundled scenario (512 particles, 512 images, t = 100) takes about a minute. The mean-field
(rich) run and the lazy run (alpha = 100) start from the very same particles, and the
``ntk`` run is kernel regression with their tangent kernel.
"""

import numpy as np

import meanfield as mf

sc = mf.load_scenario("digits", {"model.width": 128, "data.n_train": 256, "data.n_test": 512,
                                 "train.t_end": 40.0})
traj = mf.simulate(sc, progress=False)

# %%
# The test error of each run, sign f(x) against the label on the 512 test images
# (``predict`` rebuilds every kind of run's function at its last snapshot: the network from
# its particles, the ``ntk`` run's kernel predictor from the file), and how far each
# particle run moved its first layer, ‖W_t − W_0‖ / ‖W_0‖.
X_test, y_test = traj.data.X_test, traj.data.y_test
for name in traj.runs:
    error = np.mean(np.sign(traj[name].predict(X_test)) != y_test)
    moved = traj[name].measure("displacement_w").isel(time=-1).item() if traj[name].has_particles else None
    print(f"{name:5s} test error {error:6.1%}" + (f"   displacement_w {moved:.3f}" if moved is not None else ""))

# %%
# Each run's learned function along a line through input space, side by side: with real
# data there is no teacher f*, so the training images nearest the line are drawn with their
# labels instead.
mf.plot_function(traj, output="digits_function.png")

# %%
# The loss curves, the displacement and the kernel distance of every run against time.
mf.plot(traj, "digits.png")
