"""meanfield.analysis.learning_curve: the test error of kernel regression against n from the
kernel's spectrum and the target's energies (Bordelon, Canatar & Pehlevan 2020; docs/design.md
§1.10), against its defining equations, exact limits, the exact result for isotropic Gaussian
features, and brute-force averages of kernel regression by NumPy over many random draws."""

import numpy as np
import pytest

from meanfield.analysis.learning_curve import learning_curve, solve_kappa
from meanfield.analysis.spectrum import degeneracy, kernel_spectrum, legendre, teacher_coefficients


def sphere(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def relu_ntk(t):
    theta = np.arccos(np.clip(t, -1.0, 1.0))
    return (np.sin(theta) + (np.pi - theta) * t) / (2 * np.pi) + t * (np.pi - theta) / (2 * np.pi)


def test_kappa_solves_its_equation():
    eta = np.array([1.0, 0.3, 0.05, 0.01, 1e-4])
    N = np.array([1, 4, 10, 20, 35.0])
    for n, ridge, tail in ((5, 0.0, 0.0), (30, 0.0, 0.0), (60, 0.0, 0.0), (200, 0.1, 0.0), (3, 0.0, 0.02),
                           (1000, 1e-6, 0.0)):
        kappa = solve_kappa(n, eta, N, ridge, tail)
        if ridge + tail == 0 and N.sum() <= n:
            assert kappa == 0.0
            continue
        rhs = ridge + tail + kappa * np.sum(N * eta / (n * eta + kappa))
        assert kappa > 0 and kappa == pytest.approx(rhs, rel=1e-12), (n, ridge)


def test_limits_of_the_curve():
    """Nothing learnt as n -> 0 or lambda -> inf (E_g = sum c_l); everything as n -> inf with a
    nonzero spectrum; a group of eigenvalue 0 is never learnt."""
    eta = np.array([1.0, 0.1, 0.01, 0.0])
    N = np.array([1.0, 3.0, 5.0, 7.0])
    c = np.array([0.5, 0.2, 0.1, 0.05])
    assert learning_curve(1e-9, eta, N, c).error == pytest.approx(c.sum(), rel=1e-6)
    assert learning_curve(10, eta, N, c, ridge=1e12).error == pytest.approx(c.sum(), rel=1e-6)
    curve = learning_curve([1e4, 1e6], eta, N, c[:3].tolist() + [0.0], ridge=1e-3)
    assert curve.error[1] < curve.error[0] < 1e-4
    dead = learning_curve(1e6, eta, N, c, ridge=1e-3)
    assert dead.by_group[0][3] == pytest.approx(0.05, rel=1e-4)


def test_ridgeless_with_a_finite_spectrum():
    """At most n nonzero modes, ridgeless: kappa = 0, the live modes learnt, gamma = M/n, the
    noise and the unlearnable energy amplified by n/(n - M); infinite at n = M with noise."""
    eta = np.array([1.0, 0.2, 0.0])
    N = np.array([1.0, 4.0, 3.0])
    c = np.array([0.3, 0.2, 0.1])
    M, n, noise = 5, 20, 0.04
    curve = learning_curve(n, eta, N, c, noise=noise)
    assert curve.kappa == 0 and curve.gamma == pytest.approx(M / n)
    assert curve.error == pytest.approx(noise * M / (n - M) + 0.1 * n / (n - M), rel=1e-12)
    assert learning_curve(M, eta, N, c, noise=noise).error == np.inf
    assert learning_curve(M, eta, N, [0.3, 0.2, 0.0]).error == 0.0


def test_one_group_is_exact_for_isotropic_gaussian_features():
    """N features x ~ N(0, I) (one group, eta = 1), target w . x with |w|^2 = c, ridgeless
    min-norm regression from n < N samples: E|w - w_hat|^2 = c (1 - n/N) exactly, which is the
    theory's kappa = (N - n), gamma = n/N. Brute force: 300 draws."""
    rng = np.random.default_rng(0)
    Nf, c = 40, 2.0
    for n in (10, 25):
        errors = []
        for _ in range(300):
            w = rng.standard_normal(Nf)
            w *= np.sqrt(c) / np.linalg.norm(w)
            X = rng.standard_normal((n, Nf))
            w_hat = np.linalg.lstsq(X, X @ w, rcond=None)[0]
            errors.append(np.sum((w - w_hat) ** 2))
        theory = learning_curve(n, [1.0], [Nf], [c]).error
        assert theory == pytest.approx(c * (1 - n / Nf), rel=1e-12)
        assert abs(np.mean(errors) - theory) < 4 * np.std(errors) / np.sqrt(len(errors))


def brute_force(kernel, target, d, n, draws, rng, ridge=0.0, noise=0.0, n_test=500):
    """The mean and standard error over ``draws`` of E_x (f - f*)^2 (on n_test fresh points) for
    kernel ridge regression f = k(x)^T (K + ridge I)^-1 y on n points of S^(d-1)."""
    errors = []
    for _ in range(draws):
        X, Xt = sphere(rng, n, d), sphere(rng, n_test, d)
        y = target(X) + np.sqrt(noise) * rng.standard_normal(n)
        alpha = np.linalg.solve(kernel(np.clip(X @ X.T, -1, 1)) + ridge * np.eye(n), y)
        errors.append(np.mean((kernel(np.clip(Xt @ X.T, -1, 1)) @ alpha - target(Xt)) ** 2))
    return np.mean(errors), np.std(errors) / np.sqrt(draws)


def test_relu_ntk_on_s4_against_kernel_regression():
    """The study's setting, small: the relu NTK on S^4, a relu teacher of 4 neurons, ridgeless,
    n = 100: 100 draws agree with the theory within 10% (measured: the theory 5.5% low, the
    draws' standard error 1.6%; the theory's finite-size error, a few per cent at this n)."""
    rng = np.random.default_rng(1)
    d, L = 5, 40
    W = sphere(rng, 4, d)
    a = np.full(4, 0.25)
    spectrum = kernel_spectrum(relu_ntk, d, L)
    c = teacher_coefficients(a, W, "relu", L)
    theory = learning_curve(100, spectrum.nonnegative(), spectrum.degeneracies, c, tail=spectrum.tail).error
    mean, se = brute_force(relu_ntk, lambda X: np.maximum(X @ W.T, 0) @ a, d, 100, 100, rng)
    assert abs(theory / mean - 1) < 0.1, (theory, mean, se)


def test_ridge_and_noise_with_a_finite_spectrum_on_s2():
    """A kernel of degrees 0..8 on S^2 (81 modes), lambda_l = (l + 1)^-3, a relu teacher (its
    energy above degree 8 unlearnable, acting as noise), ridge 0.1 and label noise 0.01: 100
    draws at n = 60 and 120 within 10% of the theory (measured: 3% and 4.6% high, standard
    errors 3% and 2%)."""
    rng = np.random.default_rng(2)
    d, L = 3, 8
    lam = 1.0 / (np.arange(L + 1) + 1.0) ** 3
    N = degeneracy(d, np.arange(L + 1))

    def kernel(t):
        return np.tensordot(lam * N, legendre(d, L, t), axes=1)

    W = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    a = np.array([1.0, -0.7])
    c = teacher_coefficients(a, W, "relu", 200)
    for n in (60, 120):
        theory = learning_curve(n, lam, N, c[:L + 1], ridge=0.1, noise=0.01, target_tail=c[L + 1:].sum()).error
        mean, se = brute_force(kernel, lambda X: np.maximum(X @ W.T, 0) @ a, d, n, 100, rng, ridge=0.1, noise=0.01)
        assert abs(theory / mean - 1) < 0.1, (n, theory, mean, se)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="eigenvalues must be finite and >= 0"):
        learning_curve(10, [1.0, -1e-3], None, [1.0, 1.0])
    with pytest.raises(ValueError, match="coefficients"):
        learning_curve(10, [1.0, 0.5], [1, 3], [1.0])
    with pytest.raises(ValueError, match="n must be > 0"):
        solve_kappa(0, [1.0])


@pytest.mark.parametrize("bias", [False, True])
def test_the_studys_kernel_and_ridge_are_those_of_the_ntk_run(bias):
    """learning_curves evaluates the NTK a run used from the run's attributes
    (``ntk_function``) and maps the run's ridge r to lambda = n r on the Gram matrix: the run's
    loss_test_limit is 0.5 mean (k(X*, X)(K + n r I)^-1 y - y*)^2 with that kernel, by NumPy (to
    1e-7: the run takes angles between the inputs by Kahan's formula, the function from the
    cosine, which loses digits near t = +-1)."""
    import meanfield as mf
    from meanfield.studies.learning_curves import ntk_function

    n, ridge = 40, 0.01
    model = {"width": 64, "activation": "relu", "bias": bias}
    if bias:
        model["init"] = {"b_std": 0.5}
    traj = mf.simulate(mf.load_scenario({
        "name": "lc", "seed": 3,
        "data": {"task": "teacher_student", "dim": 3, "n_train": n, "n_test": 100, "inputs": "unit_sphere",
                 "noise": 0.1},
        "model": model, "runs": {"ntk": {"solver": "ntk", "kernel": "analytic", "ridge": ridge}},
        "train": {"t_end": 1.0}, "record": {"every": 1.0, "particles": False}}), progress=False)
    data, run = traj.data, traj["ntk"]
    k = ntk_function(run.attrs, bias, "relu")
    K = k(np.clip(data.X_train @ data.X_train.T, -1, 1).ravel()).reshape(n, n)
    K_test = k(np.clip(data.X_test @ data.X_train.T, -1, 1).ravel()).reshape(len(data.X_test), n)
    f = K_test @ np.linalg.solve(K + n * ridge * np.eye(n), data.y_train)
    assert run.constants["loss_test_limit"] == pytest.approx(0.5 * np.mean((f - data.y_test) ** 2), rel=1e-7)


# ------------------------------------------------------------- the flow in time
POWER_LAW_MODEL = {"width": 512, "activation": "relu", "bias": False}


def _cosine_kernel(parameterization):
    """The analytic NTK of mf.kernels as a function of the cosine between two unit inputs."""
    import meanfield as mf

    def k(t):
        t = np.clip(np.asarray(t, dtype=np.float64), -1.0, 1.0)
        others = np.stack([t, np.sqrt(1 - t * t)], axis=1)
        return mf.kernels(np.array([[1.0, 0.0]]), others, model=POWER_LAW_MODEL,
                          parameterization=parameterization).ntk[0]

    return k


def test_flow_loss_is_the_kernel_flow_on_an_equispaced_circle():
    """On n equispaced points of the circle the Gram matrix K/n is circulant, its eigenvalue of
    degree k the discrete cosine sum (1/n) sum_i k(cos theta_i) cos(k theta_i) (NumPy's FFT: the
    Funk-Hecke eigenvalue plus its aliases j n +- k), and the training loss of mf.ntk_predict is the
    population loss of a target of degrees < n/2: flow_loss with those eigenvalues must equal it
    to 1e-9 (relative) at t = 1 ... 1e3 (the power_law target of decay 1, degrees 2..64); and the
    aliases raise the eigenvalue of degree k by about 2 (k/n)^2 pi^2/6 (eta_l ~ l^-2): 5.1 % at
    k = 64, n = 512; below 6 % for every even k <= 64."""
    import meanfield as mf
    from meanfield.analysis.learning_curve import flow_loss
    from meanfield.config.sections import DataSpec
    from meanfield.model.data import power_law_energies, power_law_target

    n = 512
    theta = 2 * np.pi * np.arange(n) / n
    X = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    spec = DataSpec(task="power_law", dim=2, power_law={"decay": 1.0, "max_degree": 64})
    y = power_law_target(spec, np.array([np.cos(0.3), np.sin(0.3)]), X)
    times = np.array([1.0, 10.0, 100.0, 1000.0])
    train, _ = mf.ntk_predict(X, y, X[:1], t=times, model=POWER_LAW_MODEL, parameterization="mean_field")
    measured = 0.5 * np.mean((train - y) ** 2, axis=1)
    kernel = _cosine_kernel("mean_field")
    on_grid = np.real(np.fft.rfft(kernel(np.cos(theta))))[:65] / n
    on_grid = np.where(np.abs(on_grid) < 1e-15, 0.0, on_grid)  # the odd degrees >= 3: 0 up to rounding
    energies = power_law_energies(spec)
    np.testing.assert_allclose(measured, flow_loss(times, on_grid, energies), rtol=1e-9)
    assert flow_loss(0.0, on_grid, energies) == pytest.approx(0.5)
    funk_hecke = kernel_spectrum(kernel, 2, 64).nonnegative()
    even = np.arange(2, 65, 2)
    assert np.max(np.abs(on_grid[even] / funk_hecke[even] - 1)) < 0.06


def test_flow_loss_exponent_is_the_source_exponent():
    """eta_l = l^-2, c_l ~ l^-(1 + s) on the even l: L(t) falls as t^-(s/2) at large t (the local
    slope between t = 1e3 and 1e5 within 0.02 of s/2, degrees to 4e6 so the cut-off is far)."""
    from meanfield.analysis.learning_curve import flow_loss

    degree = np.arange(4_000_001, dtype=float)
    even = (degree >= 2) & (degree % 2 == 0)
    eta = np.where(even, np.maximum(degree, 1.0) ** -2.0, 0.0)
    for s in (0.5, 1.0, 3.0):
        c = np.where(even, np.maximum(degree, 1.0) ** -(1.0 + s), 0.0)
        L = flow_loss(np.array([1e3, 1e5]), eta, c / c.sum())
        slope = np.diff(np.log(L))[0] / np.log(100.0)
        assert slope == pytest.approx(-s / 2, abs=0.02)


def test_flow_loss_is_an_ntk_runs_stored_training_loss_on_an_equispaced_circle(tmp_path):
    """The same as an actual ``ntk`` run (kernel: analytic, mean_field preset) of the ``file`` task
    holding the 512 equispaced points and the power_law target: its stored loss_train at every
    snapshot (t = 0 ... 1000 on a log clock) is flow_loss with the grid's eigenvalues, to 1e-9."""
    import meanfield as mf
    from meanfield.analysis.learning_curve import flow_loss
    from meanfield.config.sections import DataSpec
    from meanfield.model.data import power_law_energies, power_law_target

    n = 512
    theta = 2 * np.pi * np.arange(n) / n
    X = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    spec = DataSpec(task="power_law", dim=2, power_law={"decay": 1.0, "max_degree": 64})
    np.savez(tmp_path / "circle.npz", X=X, y=power_law_target(spec, np.array([np.cos(0.3), np.sin(0.3)]), X))
    scenario = {"name": "circle", "data": {"task": "file", "path": str(tmp_path / "circle.npz"), "test_fraction": 0.0},
                "model": POWER_LAW_MODEL, "loss": "squared",
                "runs": {"lazy": {"solver": "ntk", "kernel": "analytic", "parameterization": "mean_field"}},
                "train": {"t_end": 1000.0}, "record": {"every": 1.0, "clock": "log", "per_decade": 2}}
    mf.simulate(scenario, output=tmp_path / "circle.h5")
    with mf.open(tmp_path / "circle.h5") as trajectory:
        loss = trajectory["lazy"].measure("loss_train")
        times, stored = np.asarray(loss["time"]), np.asarray(loss.values)
    kernel = _cosine_kernel("mean_field")
    on_grid = np.real(np.fft.rfft(kernel(np.cos(theta))))[:65] / n
    on_grid = np.where(np.abs(on_grid) < 1e-15, 0.0, on_grid)
    assert len(times) == 8 and times[-1] == 1000.0
    np.testing.assert_allclose(stored, flow_loss(times, on_grid, power_law_energies(spec)), rtol=1e-9)
