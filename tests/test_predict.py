"""RecordedRun.predict (docs/design.md §4.5): what a trained run predicts at new inputs, for
every kind of run, checked against a plain NumPy evaluation of the stored particles (the
network, the linearized network) and against the runs' own recorded test predictions f_test
(which the kernel runs' predict must rebuild from the stored scenario alone)."""

import numpy as np
import pytest

import meanfield as mf


def scenario(runs, loss="squared", **changes):
    base = {"name": "p", "seed": 2,
            "data": {"task": "teacher_student", "dim": 3, "n_train": 24, "n_test": 16},
            "model": {"width": 20, "activation": "relu", "bias": True, "output_bias": True,
                      "init": {"b_std": 0.5, "c_std": 0.3}},
            "loss": loss, "runs": runs,
            "train": {"t_end": 2.0, "integrator": {"method": "euler", "dt": 0.05}},
            "record": {"every": 0.5, "dtype": "float64"}}
    for key, value in changes.items():
        section, name = key.split(".")
        base[section] = {**base[section], name: value}
    return mf.load_scenario(base)


def relu(z):
    return np.maximum(z, 0.0)


def numpy_network(run, index, X):
    a, W, b = run.frame(index)
    c = run.series("output_bias").value[index] if "output_bias" in run.measures else 0.0
    return run.attrs["s"] * relu(X @ W.T + (0.0 if b is None else b)) @ a + c


def numpy_linearized(run, index, X):
    """f_0 + s sum_i [(a_i - a0_i) relu(z0_i) + a0_i relu'(z0_i) ((w_i - w0_i) . x + b_i - b0_i)] + (c - c0)."""
    a0, W0, b0 = run.frame(0)
    a, W, b = run.frame(index)
    c = run.series("output_bias").value[index]
    Z0 = X @ W0.T + b0
    moved = relu(Z0) @ a + ((Z0 > 0) * a0 * (X @ (W - W0).T + (b - b0))).sum(axis=1)
    return run.attrs["s"] * moved + c


@pytest.fixture(scope="module")
def trained():
    runs = {"rich": "mean_field", "lazy": {"parameterization": {"preset": "lazy", "alpha": 10}},
            "tangent": {"solver": "tangent", "parameterization": "ntk"},
            "ntk": {"solver": "ntk", "kernel": "empirical"},
            "analytic": {"solver": "ntk", "kernel": "analytic", "ridge": 0.1}}
    return mf.simulate(scenario(runs))


X_NEW = np.random.default_rng(7).standard_normal((9, 3))


@pytest.mark.parametrize("name", ["rich", "lazy"])
def test_a_particle_run_is_its_network_at_the_snapshot(trained, name):
    run = trained[name]
    for index, t in enumerate(run.times):
        np.testing.assert_allclose(run.predict(X_NEW, time=t), numpy_network(run, index, X_NEW), rtol=1e-12,
                                   atol=1e-13)
        np.testing.assert_allclose(run.predict(trained.data.X_test, time=t), run.series("f_test").value[index],
                                   rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(run.predict(X_NEW), run.predict(X_NEW, time=run.times[-1]))
    assert run.predict(X_NEW[0]) == pytest.approx(run.predict(X_NEW)[0], rel=1e-14)


def test_a_time_between_snapshots_is_the_nearest_one(trained):
    run = trained["rich"]
    np.testing.assert_array_equal(run.predict(X_NEW, time=1.1), run.predict(X_NEW, time=1.0))
    np.testing.assert_array_equal(run.predict(X_NEW, time=1.3), run.predict(X_NEW, time=1.5))
    with pytest.raises(mf.UsageError, match="outside the recorded range"):
        run.predict(X_NEW, time=3.0)


def test_a_tangent_run_is_the_network_linearized_at_its_start(trained):
    run = trained["tangent"]
    for index, t in enumerate(run.times):
        np.testing.assert_allclose(run.predict(X_NEW, time=t), numpy_linearized(run, index, X_NEW), rtol=1e-11,
                                   atol=1e-12)
        np.testing.assert_allclose(run.predict(trained.data.X_test, time=t), run.series("f_test").value[index],
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["ntk", "analytic"])
def test_a_kernel_run_on_the_test_set_is_its_recorded_f_test(trained, name):
    """Rebuilt from the stored scenario (initial particles, or the closed-form kernel with a ridge)."""
    run = trained[name]
    for index, t in enumerate(run.times):
        np.testing.assert_allclose(run.predict(trained.data.X_test, time=t), run.series("f_test").value[index],
                                   rtol=1e-10, atol=1e-12)


def test_a_kernel_run_at_new_points_follows_the_kernel_flow(trained):
    """At t = 0 the empirical ntk run predicts the initial network (NumPy, from the initial
    particles every run shares, here with the same stds as the rich run's first frame); at t its
    predictions at new points are f_0(x) - K(x, X) sum_k v_k (1 - exp(-lam_k t / n)) / lam_k
    v_k . (f_0(X) - y), the kernel flow solved in NumPy (eigh) with the NTK written out."""
    run, rich = trained["ntk"], trained["rich"]
    a0, W0, b0 = rich.frame(0)  # the shared draws: a_std z_a, w_std Z_w, b_std z_b (same stds here)
    assert run.attrs["a_std"] == rich.attrs["a_std"] and run.attrs["w_std"] == rich.attrs["w_std"]
    c0 = rich.series("output_bias").value[0]
    f0 = run.attrs["s"] * relu(X_NEW @ W0.T + b0) @ a0 + c0
    np.testing.assert_allclose(run.predict(X_NEW, time=0.0), f0, rtol=1e-12, atol=1e-13)
    # df(x)/dt = -(1/n) sum_k K(x, x_k) (f(x_k) - y_k), K the weighted empirical NTK with the output bias
    data, s = trained.data, run.attrs["s"]
    eta_a, eta_w, eta_c = run.attrs["eta_a"], run.attrs["eta_w"], run.attrs["eta_c"]

    def ntk(X1, X2):
        Z1, Z2 = X1 @ W0.T + b0, X2 @ W0.T + b0
        return s**2 * (eta_a * relu(Z1) @ relu(Z2).T
                       + eta_w * ((Z1 > 0) * a0**2) @ (Z2 > 0).T * (X1 @ X2.T + 1.0)) + eta_c

    K_new, K_train = ntk(X_NEW, data.X_train), ntk(data.X_train, data.X_train)
    f_train0 = s * relu(data.X_train @ W0.T + b0) @ a0 + c0
    n = data.n_train
    values, vectors = np.linalg.eigh(K_train)
    residual = vectors.T @ (f_train0 - data.y_train)
    t = 1.5
    integral = vectors @ (np.where(values > 1e-12, (1 - np.exp(-values * t / n)) / values, t / n) * residual)
    np.testing.assert_allclose(run.predict(X_NEW, time=t), f0 - K_new @ integral, rtol=1e-9, atol=1e-10)


def test_an_integrated_kernel_run_is_its_recorded_f_test():
    runs = {"ntk": {"solver": "ntk", "kernel": "empirical"}}
    traj = mf.simulate(scenario(runs, loss="logistic", **{"data.task": "gaussian_mixture"}))
    run = traj["ntk"]
    for index, t in enumerate(run.times):
        np.testing.assert_allclose(run.predict(traj.data.X_test, time=t), run.series("f_test").value[index],
                                   rtol=1e-10, atol=1e-12)


def test_population_runs_predict_their_network():
    sc = {"name": "pop", "data": {"task": "teacher_student", "dim": 3, "population": True},
          "model": {"width": 10}, "runs": {"rich": "mean_field", "tangent": {"solver": "tangent"}},
          "train": {"t_end": 1.0, "integrator": {"method": "euler", "dt": 0.1}},
          "record": {"every": 0.5, "dtype": "float64"}}
    traj = mf.simulate(mf.load_scenario(sc))
    rich, tangent = traj["rich"], traj["tangent"]
    np.testing.assert_allclose(rich.predict(X_NEW), numpy_network(rich, -1, X_NEW), rtol=1e-12, atol=1e-13)
    a0, W0, _ = tangent.frame(0)
    a, W, _ = tangent.frame(-1)
    Z0 = X_NEW @ W0.T
    expected = tangent.attrs["s"] * (relu(Z0) @ a + ((Z0 > 0) * a0 * (X_NEW @ (W - W0).T)).sum(axis=1))
    np.testing.assert_allclose(tangent.predict(X_NEW), expected, rtol=1e-11, atol=1e-12)


def test_bad_inputs_are_one_message(trained):
    run = trained["rich"]
    with pytest.raises(mf.UsageError, match=r"X has shape \(9, 2\); run 'rich' takes inputs of dimension 3"):
        run.predict(X_NEW[:, :2])
    with pytest.raises(mf.UsageError, match="non-finite"):
        run.predict(np.full((2, 3), np.nan))
    with pytest.raises(mf.UsageError, match="real numbers"):
        run.predict("x")


# ------------------------------------------------------------------ mf.plot_function
def test_plot_function_draws_each_run_beside_the_target(trained, tmp_path):
    """Without a display (the Figure is matplotlib's own, no pyplot): one panel per run, each
    with the teacher, the samples near the line, and the run at t = 0 and at the snapshot."""
    import matplotlib

    matplotlib.use("Agg")
    from meanfield.model.prediction import target

    fig = mf.plot_function(trained, ["rich", "lazy", "ntk"], time=1.0, output=tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    assert [ax.get_title() for ax in fig.axes] == [trained[name].label for name in ("rich", "lazy", "ntk")]
    teacher = trained.teacher
    centre = trained.data.X_train.mean(axis=0)
    v = teacher.W[0] / np.linalg.norm(teacher.W[0])
    for ax, name in zip(fig.axes, ("rich", "lazy", "ntk")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"target f*", "training samples near the line", "t = 0", "t = 1"}
        u = lines["t = 1"].get_xdata()
        X = centre + u[:, None] * v
        np.testing.assert_allclose(lines["target f*"].get_ydata(), target(teacher, X), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(lines["t = 1"].get_ydata(), trained[name].predict(X, time=1.0), rtol=1e-12)
        np.testing.assert_allclose(lines["t = 0"].get_ydata(), trained[name].predict(X, time=0.0), rtol=1e-12,
                                   atol=1e-14)
        assert len(lines["training samples near the line"].get_xdata()) == round(0.1 * trained.data.n_train)


def test_the_teacher_target_is_the_teacher_network(trained):
    from meanfield.model.prediction import target

    teacher = trained.teacher
    np.testing.assert_allclose(target(teacher, X_NEW), relu(X_NEW @ teacher.W.T) @ teacher.a, rtol=1e-12)


def test_plot_function_along_a_given_line_and_its_mistakes(trained):
    start, end = np.zeros(3), np.ones(3)
    fig = mf.plot_function(trained, ["rich"], line=(start, end), points=11)
    (line,) = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("t = 2")]
    np.testing.assert_allclose(line.get_xdata(), np.linspace(0, 1, 11))
    np.testing.assert_allclose(line.get_ydata(), trained["rich"].predict(np.outer(np.linspace(0, 1, 11), end)),
                               rtol=1e-12)
    with pytest.raises(mf.UsageError, match="no run 'rihc'.*did you mean 'rich'"):
        mf.plot_function(trained, ["rihc"])
    with pytest.raises(mf.UsageError, match="two different points of dimension 3"):
        mf.plot_function(trained, ["rich"], line=(start, start))


def test_a_particle_run_without_recorded_particles_says_so():
    sc = scenario({"rich": "mean_field"})
    traj = mf.simulate(sc.replace({"record.particles": False}))
    with pytest.raises(mf.UsageError, match="records no particles.*record.particles was false"):
        traj["rich"].predict(X_NEW)
