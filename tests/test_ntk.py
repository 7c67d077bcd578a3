"""The lazy side: empirical and analytic NTKs, and the three linearized solvers agreeing."""

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference_ntk as ref  # noqa: E402

from solvers.activations import ACTIVATIONS  # noqa: E402
from solvers.catalog import CLASSIFICATION_LOSSES  # noqa: E402
from solvers.fields import ParticleField, ParticleLayout  # noqa: E402
from solvers.integrate import RK4, RK45, SGD, LoopState, integrate  # noqa: E402
from solvers.losses import LOSSES  # noqa: E402
from solvers.ntk import (  # noqa: E402
    FunctionSpaceField,
    LinearizedSquared,
    TangentField,
    analytic_kernels,
    empirical_ntk,
)
from solvers.particles import predict  # noqa: E402


def particles(m, d, bias=True, seed=0, b_std=0.5):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=m)
    W = rng.normal(size=(m, d)) / math.sqrt(d)
    b = b_std * rng.normal(size=m) if bias else None
    return a, W, b


def points(n, d, seed=1):
    return np.random.default_rng(seed).normal(size=(n, d))


# ------------------------------------------------------------------ empirical kernel


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_empirical_ntk_matches_explicit_jacobian(act, bias):
    m, d, n1, n2 = 13, 3, 7, 5
    a, W, b = particles(m, d, bias)
    X1, X2 = points(n1, d, 1), points(n2, d, 2)
    kw = dict(s=0.3, eta_a=0.7, eta_w=1.9, act=ACTIVATIONS[act], loss_scale=0.5)
    for X_right in (X2, X1):
        want = ref.ntk_from_jacobian(a, W, b, X1, X_right, 0.3, 0.7, 1.9, act, 0.5)
        for block in (None, 1, 4, 13, 100):
            got = empirical_ntk(a, W, b, X1, X_right, block=block, **kw)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13 * np.abs(want).max())
    # the activation may be named too, and X2 omitted
    np.testing.assert_allclose(empirical_ntk(a, W, b, X1, **{**kw, "act": act}),
                               ref.ntk_from_jacobian(a, W, b, X1, X1, 0.3, 0.7, 1.9, act, 0.5),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("act", ["relu", "tanh", "quadratic"])
def test_empirical_ntk_gram_is_symmetric_psd(act):
    a, W, b = particles(50, 4, seed=3)
    X = points(40, 4, 4)
    X[7] = X[3]  # a duplicate point: a singular kernel
    for X2 in (None, X):
        K = empirical_ntk(a, W, b, X, X2, s=1 / math.sqrt(50), eta_a=1.0, eta_w=2.0, act=act, block=7)
        assert np.array_equal(K, K.T)
        lam = np.linalg.eigvalsh(K)
        assert lam.min() >= -1e-10 * lam.max()


def test_blas_products_write_in_place_and_ignore_the_old_contents_at_beta_zero():
    """The kernel's BLAS helpers against numpy: they write into (views of) the caller's
    C-ordered arrays, beta = 0 ignores whatever was there (np.empty: possibly NaN), beta = 1
    accumulates, and the Gram update fills the lower triangle only."""
    from solvers.ntk import _cross, _gram_lower

    rng = np.random.default_rng(9)
    F1, F2 = rng.standard_normal((7, 5)), rng.standard_normal((4, 5))
    out = np.full((9, 4), np.nan)
    _cross(F1, F2, out[2:], 0.0)
    np.testing.assert_allclose(out[2:], F1 @ F2.T, rtol=1e-14)
    _cross(F1, F2, out[2:], 1.0)
    np.testing.assert_allclose(out[2:], 2 * F1 @ F2.T, rtol=1e-14)
    assert np.all(np.isnan(out[:2]))
    G = np.full((4, 4), np.nan)
    _gram_lower(F2, G, 0.0)
    lower = np.tril_indices(4)
    np.testing.assert_allclose(G[lower], (F2 @ F2.T)[lower], rtol=1e-14)
    assert np.all(np.isnan(G[np.triu_indices(4, 1)]))


# ------------------------------------------------------------------ analytic kernels


KERNEL_SETTINGS = dict(w_var=1.3 / 3, b_var=0.2, a_var=0.8, eta_a=0.6, eta_w=1.7)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_analytic_kernels_against_quadrature(act, bias):
    X1 = points(4, 3, 5)
    X2 = np.vstack([X1[:2], -X1[2], 0.999 * X1[3] + 0.01])  # equal, opposite, near
    kw = dict(KERNEL_SETTINGS, b_var=KERNEL_SETTINGS["b_var"] if bias else 0.0)
    nngp, ntk = analytic_kernels(X1, X2, act=act, bias=bias, **kw)
    for k in range(4):
        for l in range(4):
            x, xp = X1[k], X2[l]
            q11 = kw["w_var"] * x @ x + kw["b_var"]
            q22 = kw["w_var"] * xp @ xp + kw["b_var"]
            q12 = kw["w_var"] * x @ xp + kw["b_var"]
            e, ed = ref.moments_quadrature(q11, q12, q22, act)
            want = kw["eta_a"] * e + kw["eta_w"] * kw["a_var"] * ed * (x @ xp + bias)
            assert nngp[k, l] == pytest.approx(e, rel=1e-9, abs=1e-12)
            assert ntk[k, l] == pytest.approx(want, rel=1e-9, abs=1e-12)
    # the Gram matrix of one set is symmetric
    for K in analytic_kernels(X1, act=act, bias=bias, **kw):
        assert np.array_equal(K, K.T)


@pytest.mark.parametrize("act", ["relu", "erf", "linear"])
def test_analytic_kernels_against_monte_carlo(act):
    """Average the per-particle integrands over 2^18 independent draws: within 4 standard errors."""
    X = points(4, 3, 6)
    X[3] = -0.5 * X[0]
    mc_nngp, se_nngp, mc_ntk, se_ntk = ref.monte_carlo(
        X, act, KERNEL_SETTINGS["w_var"], KERNEL_SETTINGS["b_var"], KERNEL_SETTINGS["a_var"],
        KERNEL_SETTINGS["eta_a"], KERNEL_SETTINGS["eta_w"], 1 << 18, np.random.default_rng(7))
    nngp, ntk = analytic_kernels(X, act=act, **KERNEL_SETTINGS)
    assert np.all(np.abs(nngp - mc_nngp) <= 4 * se_nngp)
    assert np.all(np.abs(ntk - mc_ntk) <= 4 * se_ntk)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_neural_tangents_mapping(act, bias):
    """nt's stax Dense(m, W_std, b_std) -> act -> Dense(1, a_std, 0), 'ntk' parameterization,
    composed by its layer rules from the published closed forms, is our kernel with the
    learning rates equal to the variances, and its NNGP is a_var times ours."""
    d = 3
    X1, X2 = points(5, d, 8), points(4, d, 9)
    w_std, b_std, a_std = 1.4, (0.6 if bias else 0.0), 0.9
    nt_nngp, nt_ntk = ref.neural_tangents_kernels(X1, X2, act, w_std, b_std, a_std, 0.0)
    w_var, b_var, a_var = w_std ** 2 / d, b_std ** 2, a_std ** 2
    nngp, ntk = analytic_kernels(X1, X2, act=act, w_var=w_var, b_var=b_var, a_var=a_var,
                                 eta_a=a_var, eta_w=w_var, eta_b=b_var, bias=bias)
    np.testing.assert_allclose(a_var * nngp, nt_nngp, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ntk, nt_ntk, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("act", ["relu", "erf", "linear"])
def test_analytic_gram_psd_and_exact_on_duplicates(act):
    """Duplicate points give identical rows (relu's angle is 0 exactly, not 1e-8), so the
    Gram matrix is exactly singular, symmetric and positive semi-definite."""
    X = points(30, 3, 13)
    X[[5, 17]] = X[2]
    for K in analytic_kernels(X, act=act, **KERNEL_SETTINGS):
        assert np.array_equal(K, K.T)
        assert np.array_equal(K[2], K[5]) and np.array_equal(K[2], K[17])
        lam = np.linalg.eigvalsh(K)
        assert lam.min() >= -1e-12 * lam.max()
    # relu's diagonal is exact: E[relu(u)^2] = q / 2, E[relu'(u)^2] = 1 / 2
    nngp, ntk = analytic_kernels(X, act="relu", **KERNEL_SETTINGS)
    q = KERNEL_SETTINGS["w_var"] * np.sum(X * X, 1) + KERNEL_SETTINGS["b_var"]
    np.testing.assert_allclose(np.diag(nngp), q / 2, rtol=1e-15)


def test_bias_false_refuses_bias_variance():
    with pytest.raises(ValueError, match="bias"):
        analytic_kernels(points(3, 2), act="relu", w_var=1, b_var=0.1, a_var=1, bias=False)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_wide_empirical_ntk_is_analytic(act):
    """m = 2^14, ntk scaling: every entry within 5 standard errors of the particle average."""
    m, d = 1 << 14, 4
    X = points(6, d, 10)
    w_var, b_var = 1.0 / d, 0.3
    rng = np.random.default_rng(11)
    W = rng.normal(scale=math.sqrt(w_var), size=(m, d))
    b = rng.normal(scale=math.sqrt(b_var), size=m)
    a = rng.normal(size=m)
    K = empirical_ntk(a, W, b, X, s=1 / math.sqrt(m), eta_a=0.5, eta_w=2.0, act=act)
    _, K_inf = analytic_kernels(X, act=act, w_var=w_var, b_var=b_var, a_var=1.0, eta_a=0.5, eta_w=2.0)
    terms = ref.per_particle_ntk(a, W, b, X, 0.5, 2.0, act)
    np.testing.assert_allclose(K, terms.mean(0), rtol=1e-10)
    se = terms.std(0, ddof=1) / math.sqrt(m)
    assert np.all(np.abs(K - K_inf) <= 5 * se)
    assert np.linalg.norm(K - K_inf) / np.linalg.norm(K_inf) < 0.05


def test_empirical_ntk_converges_like_inverse_sqrt_width():
    """log relative error averaged over 16 seeds per width, fitted against log m: slope -1/2
    (its spread across seed sets is about 0.03)."""
    d, n = 4, 8
    X = points(n, d, 12)
    w_var, b_var = 1.0 / d, 0.1
    _, K_inf = analytic_kernels(X, act="relu", w_var=w_var, b_var=b_var, a_var=1.0)
    widths = 2 ** np.arange(6, 15, 2)
    mean_log_error = []
    for m in widths:
        logs = []
        for seed in range(16):
            rng = np.random.default_rng(100 + seed)
            W = rng.normal(scale=math.sqrt(w_var), size=(m, d))
            b = rng.normal(scale=math.sqrt(b_var), size=m)
            a = rng.normal(size=m)
            K = empirical_ntk(a, W, b, X, s=1 / math.sqrt(m), eta_a=1.0, eta_w=1.0, act="relu")
            logs.append(math.log(np.linalg.norm(K - K_inf) / np.linalg.norm(K_inf)))
        mean_log_error.append(np.mean(logs))
    slope = np.polyfit(np.log(widths), mean_log_error, 1)[0]
    assert abs(slope + 0.5) < 0.15, slope


# ------------------------------------------------------------------ linearized dynamics


M, D, N, N_TEST = 40, 3, 12, 5
S = 1 / math.sqrt(M)
ETA_A, ETA_W, C = 0.8, 1.3, 0.7


def setup(loss="squared", act="tanh", bias=True):
    a, W, b = particles(M, D, bias, seed=20)
    X, Xt = points(N, D, 21), points(N_TEST, D, 22)
    rng = np.random.default_rng(23)
    y = np.sign(rng.normal(size=N)) if loss in CLASSIFICATION_LOSSES else rng.normal(size=N)
    kw = dict(s=S, eta_a=ETA_A, eta_w=ETA_W, act=act, loss_scale=C)
    K, Kt = empirical_ntk(a, W, b, X, **kw), empirical_ntk(a, W, b, Xt, X, **kw)
    f0, f0t = predict(a, W, b, X, S, ACTIVATIONS[act]), predict(a, W, b, Xt, S, ACTIVATIONS[act])
    tangent = TangentField(a, W, b, X, y, loss=loss, **kw)
    return dict(a=a, W=W, b=b, X=X, Xt=Xt, y=y, K=K, Kt=Kt, f0=f0, f0t=f0t, tangent=tangent)


def run(field, y0, times, stepper):
    snaps = []
    out = integrate(field, LoopState(0.0, 0, y0), stepper, times,
                    on_snapshot=lambda st: snaps.append(st.y.copy()))
    assert out.status == "complete"
    return np.array(snaps)


TIMES = [0.5, 2.0, 6.0]
TIGHT = RK45(rtol=1e-11, atol=1e-13)


def test_closed_form_matches_integrated_function_space_ode():
    p = setup("squared")
    exact = LinearizedSquared(p["K"], p["y"], p["f0"], p["Kt"], p["f0t"])
    field = FunctionSpaceField(p["K"], p["y"], "squared", p["Kt"])
    snaps = run(field, field.initial_state(p["f0"], p["f0t"]), TIMES, TIGHT)
    f_train, f_test = exact.predict(np.array(TIMES))
    assert f_train.shape == (3, N) and f_test.shape == (3, N_TEST)
    got_train, got_test = field.split(snaps)
    np.testing.assert_allclose(got_train, f_train, atol=1e-9)
    np.testing.assert_allclose(got_test, f_test, atol=1e-9)
    # a scalar time gives the same as the row of the array
    ft, ftt = exact.predict(TIMES[1])
    np.testing.assert_allclose(ft, f_train[1], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ftt, f_test[1], rtol=1e-14, atol=1e-14)
    # the loss reported by the field is the unscaled mean squared loss
    _, loss = field(0.0, field.initial_state(p["f0"], p["f0t"]))
    assert loss == pytest.approx(0.5 * np.mean((p["f0"] - p["y"]) ** 2), rel=1e-14)


def test_time_zero_returns_f0_exactly():
    p = setup("squared")
    exact = LinearizedSquared(p["K"], p["y"], p["f0"], p["Kt"], p["f0t"])
    f_train, f_test = exact.predict(0.0)
    np.testing.assert_array_equal(f_train, p["f0"])
    np.testing.assert_array_equal(f_test, p["f0t"])
    f_train, f_test = exact.predict([0.0, 1.0])
    np.testing.assert_array_equal(f_train[0], p["f0"])
    np.testing.assert_array_equal(f_test[0], p["f0t"])
    assert LinearizedSquared(p["K"], p["y"], p["f0"]).predict(0.0)[1] is None


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_tangent_field_matches_closed_form(act, bias):
    p = setup("squared", act, bias)
    tangent = p["tangent"]
    theta0 = tangent.initial_state()
    np.testing.assert_allclose(tangent.predict(theta0, p["X"]), p["f0"], rtol=1e-12, atol=1e-14)
    exact = LinearizedSquared(p["K"], p["y"], p["f0"], p["Kt"], p["f0t"])
    snaps = run(tangent, theta0, TIMES, TIGHT)
    f_train, f_test = exact.predict(np.array(TIMES))
    for k, theta in enumerate(snaps):
        np.testing.assert_allclose(tangent.predict(theta, p["X"]), f_train[k], atol=1e-8)
        np.testing.assert_allclose(tangent.predict(theta, p["Xt"]), f_test[k], atol=1e-8)


def test_tangent_field_matches_function_space_field_logistic():
    p = setup("logistic", "relu")
    tangent = p["tangent"]
    field = FunctionSpaceField(p["K"], p["y"], LOSSES["logistic"], p["Kt"])
    snaps_f = run(field, field.initial_state(p["f0"], p["f0t"]), TIMES, TIGHT)
    snaps_t = run(tangent, tangent.initial_state(), TIMES, RK4(0.01))
    for theta, f in zip(snaps_t, snaps_f):
        f_train, f_test = field.split(f)
        np.testing.assert_allclose(tangent.predict(theta, p["X"]), f_train, atol=1e-8)
        np.testing.assert_allclose(tangent.predict(theta, p["Xt"]), f_test, atol=1e-8)
    # the losses both fields report agree along the way
    assert tangent(0.0, snaps_t[-1])[1] == pytest.approx(field(0.0, snaps_f[-1])[1], rel=1e-8)


def test_tangent_field_is_the_particle_gradient_at_theta0():
    """At theta_0 the linearized model's field is the network's own."""
    for loss in LOSSES:
        p = setup(loss, "erf")
        theta0 = p["tangent"].initial_state()
        layout = ParticleLayout(M, D, True)
        network = ParticleField(layout, p["X"], p["y"], s=S, eta_a=ETA_A, eta_w=ETA_W,
                                activation=ACTIVATIONS["erf"], loss=LOSSES[loss], loss_scale=C)
        v_lin, l_lin = p["tangent"](0.0, theta0)
        v_net, l_net = network(0.0, theta0)
        np.testing.assert_allclose(v_lin, v_net, rtol=1e-11, atol=1e-14)
        assert l_lin == pytest.approx(l_net, rel=1e-12)


def test_tangent_field_blocks_and_minibatches():
    """Recomputing the features block by block, and minibatches, give the cached field's values."""
    p = setup("logistic", "softplus")
    cached = p["tangent"]
    blocked = TangentField(p["a"], p["W"], p["b"], p["X"], p["y"], s=S, eta_a=ETA_A, eta_w=ETA_W,
                           act="softplus", loss="logistic", loss_scale=C, block_elements=7 * N)
    assert cached._cache is not None and blocked._cache is None
    theta = cached.initial_state() + 0.1 * np.random.default_rng(30).normal(size=cached.layout.size)
    batch = np.array([1, 4, 5, 9])
    for kw in ({}, {"batch": batch}):
        v1, l1 = cached(0.0, theta, **kw)
        v2, l2 = blocked(0.0, theta, **kw)
        np.testing.assert_allclose(v2, v1, rtol=1e-12, atol=1e-15)
        assert l2 == pytest.approx(l1, rel=1e-13)
    np.testing.assert_allclose(blocked.predict(theta, p["Xt"]), cached.predict(theta, p["Xt"]), rtol=1e-12)
    # the minibatch field is the field of the sub-problem
    sub = TangentField(p["a"], p["W"], p["b"], p["X"][batch], p["y"][batch], s=S, eta_a=ETA_A,
                       eta_w=ETA_W, act="softplus", loss="logistic", loss_scale=C)
    np.testing.assert_allclose(cached(0.0, theta, batch=batch)[0], sub(0.0, theta)[0], rtol=1e-12, atol=1e-15)
    out = integrate(cached, LoopState(0.0, 0, theta), SGD(0.1, 4), [1.0], rng=np.random.default_rng(0))
    assert out.status == "complete"


def singular_limit(K, Kt, y, f0, f0t):
    """t -> infinity: f(X) = y + P_null (f0 - y), f(X*) = f0* + K* K^+ (y - f0)."""
    pinv = np.linalg.pinv(K, rcond=1e-10, hermitian=True)
    P_range = K @ pinv
    return f0 + P_range @ (y - f0), f0t + Kt @ pinv @ (y - f0)


def test_singular_kernel_duplicate_points():
    p = setup("squared")
    X = np.vstack([p["X"], p["X"][:3]])  # three duplicates, with labels of their own
    y = np.concatenate([p["y"], p["y"][:3] + 1.0])
    kw = dict(s=S, eta_a=ETA_A, eta_w=ETA_W, act="tanh", loss_scale=C)
    K, Kt = empirical_ntk(p["a"], p["W"], p["b"], X, **kw), empirical_ntk(p["a"], p["W"], p["b"], p["Xt"], X, **kw)
    f0 = predict(p["a"], p["W"], p["b"], X, S, ACTIVATIONS["tanh"])
    exact = LinearizedSquared(K, y, f0, Kt, p["f0t"])
    assert exact.eigenvalues.min() >= 0
    with np.errstate(all="raise"):
        f_train, f_test = exact.predict(np.array([0.0, 1.0, 1e3, 1e6, 1e12]))
    assert np.all(np.isfinite(f_train)) and np.all(np.isfinite(f_test))
    # duplicates move together and end at the mean of their labels
    np.testing.assert_allclose(f_train[:, :3], f_train[:, N:], atol=1e-10)
    want_train, want_test = singular_limit(K, Kt, y, f0, p["f0t"])
    np.testing.assert_allclose(f_train[-2], want_train, atol=1e-8)
    np.testing.assert_allclose(f_test[-2], want_test, atol=1e-7)
    np.testing.assert_allclose(f_train[-2, :3], 0.5 * (y[:3] + y[N:]), atol=1e-8)


def test_singular_kernel_linear_activation():
    """Linear activation, d = 2 with a bias, n = 20: K has rank 3; the train predictions
    end at the least-squares fit of the residual on K's range."""
    a, W, b = particles(30, 2, seed=40)
    X, Xt = points(20, 2, 41), points(4, 2, 42)
    y = np.random.default_rng(43).normal(size=20)
    kw = dict(s=1 / math.sqrt(30), eta_a=1.0, eta_w=1.0, act="linear")
    K, Kt = empirical_ntk(a, W, b, X, **kw), empirical_ntk(a, W, b, Xt, X, **kw)
    assert np.linalg.matrix_rank(K, tol=1e-10 * np.abs(K).max()) == 3
    f0 = predict(a, W, b, X, kw["s"], ACTIVATIONS["linear"])
    f0t = predict(a, W, b, Xt, kw["s"], ACTIVATIONS["linear"])
    exact = LinearizedSquared(K, y, f0, Kt, f0t)
    with np.errstate(all="raise"):
        f_train, f_test = exact.predict(1e6)
    assert np.all(np.isfinite(f_train)) and np.all(np.isfinite(f_test))
    want_train, want_test = singular_limit(K, Kt, y, f0, f0t)
    np.testing.assert_allclose(f_train, want_train, atol=1e-8)
    np.testing.assert_allclose(f_test, want_test, atol=1e-8)
    # the fit is f0 plus the least-squares projection of y - f0 on [X, 1]
    A = np.hstack([X, np.ones((20, 1))])
    coef = np.linalg.lstsq(A, y - f0, rcond=None)[0]
    np.testing.assert_allclose(f_train, f0 + A @ coef, atol=1e-8)
    # and the same from the ODE (rk45), finite all the way
    field = FunctionSpaceField(K, y, "squared", Kt)
    snaps = run(field, field.initial_state(f0, f0t), [5.0], TIGHT)
    np.testing.assert_allclose(field.split(snaps[-1])[0], exact.predict(5.0)[0], atol=1e-9)


def test_linearized_squared_refuses_indefinite_kernel():
    with pytest.raises(ValueError, match="positive semi-definite"):
        LinearizedSquared(np.diag([1.0, -0.5]), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="together"):
        LinearizedSquared(np.eye(2), np.zeros(2), np.zeros(2), K_test_train=np.ones((1, 2)))


def test_train_test_ntk_equals_the_blocks_of_one_kernel():
    from solvers.ntk import train_test_ntk

    rng = np.random.default_rng(5)
    a, W, b = rng.standard_normal(9), rng.standard_normal((9, 3)), rng.standard_normal(9)
    X_train, X_test = rng.standard_normal((7, 3)), rng.standard_normal((4, 3))
    numbers = dict(s=0.3, eta_a=0.7, eta_w=1.3, act="tanh", loss_scale=0.5)
    K = empirical_ntk(a, W, b, np.vstack([X_train, X_test]), X_train, **numbers)
    K_train, K_test = train_test_ntk(a, W, b, X_train, X_test, **numbers)
    assert np.allclose(K_train, K[:7], rtol=1e-13) and np.allclose(K_test, K[7:], rtol=1e-13)
    assert np.array_equal(K_train, K_train.T)


def test_train_test_ntk_any_block_size_exactly_symmetric_and_f0():
    from solvers.ntk import train_test_ntk

    a, W, b = particles(29, 4, seed=50)
    X, Xt = points(23, 4, 51), points(6, 4, 52)
    kw = dict(s=0.2, eta_a=0.9, eta_w=1.4, act="erf", loss_scale=0.6)
    want = ref.ntk_from_jacobian(a, W, b, np.vstack([X, Xt]), X, 0.2, 0.9, 1.4, "erf", 0.6)
    f0 = predict(a, W, b, np.vstack([X, Xt]), 0.2, ACTIVATIONS["erf"])
    for block in (None, 1, 5, 29):
        K_train, K_test = train_test_ntk(a, W, b, X, Xt, block=block, **kw)
        assert np.array_equal(K_train, K_train.T)
        np.testing.assert_allclose(np.vstack([K_train, K_test]), want, rtol=1e-12,
                                   atol=1e-13 * np.abs(want).max())
        # f_0 from the same features is the network's output
        K_train2, K_test2, f0_train, f0_test = train_test_ntk(a, W, b, X, Xt, block=block,
                                                              return_f0=True, **kw)
        assert np.array_equal(K_train2, K_train) and np.array_equal(K_test2, K_test)
        np.testing.assert_allclose(np.concatenate([f0_train, f0_test]), f0, rtol=1e-13, atol=1e-14)
    # no training points: no kernel, still f_0 on the test points
    K_train, K_test, f0_train, f0_test = train_test_ntk(a, W, b, X[:0], Xt, return_f0=True, **kw)
    assert K_train.shape == (0, 0) and K_test.shape == (6, 0) and f0_train.shape == (0,)
    np.testing.assert_allclose(f0_test, f0[23:], rtol=1e-13, atol=1e-14)


def test_closed_form_is_the_eigen_formula_written_out():
    """f_t(X) = y + V e^{-lam t/n} V^T (f_0(X) - y) and
    f_t(X*) = f_0(X*) + K(X*, X) V diag((1 - e^{-lam t/n}) / lam) V^T (y - f_0(X))
    on a positive definite kernel."""
    p = setup("squared")
    lam, V = np.linalg.eigh(p["K"])
    assert lam.min() > 1e-6 * lam.max()
    times = np.array([0.3, 2.0, 7.0])
    f_train, f_test = LinearizedSquared(p["K"], p["y"], p["f0"], p["Kt"], p["f0t"]).predict(times)
    for t, got_train, got_test in zip(times, f_train, f_test):
        want_train = p["y"] + V @ (np.exp(-lam * t / N) * (V.T @ (p["f0"] - p["y"])))
        want_test = p["f0t"] + p["Kt"] @ V @ (-np.expm1(-lam * t / N) / lam * (V.T @ (p["y"] - p["f0"])))
        np.testing.assert_allclose(got_train, want_train, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_test, want_test, rtol=1e-12, atol=1e-12)


def test_closed_form_takes_the_symmetric_part_of_the_kernel():
    p = setup("squared")
    E = 1e-3 * np.triu(np.ones((N, N)), 1)
    skewed = LinearizedSquared(p["K"] + E - E.T, p["y"], p["f0"], p["Kt"], p["f0t"]).predict(2.0)
    plain = LinearizedSquared(p["K"], p["y"], p["f0"], p["Kt"], p["f0t"]).predict(2.0)
    for got, want in zip(skewed, plain):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_tangent_blocks_run_side_by_side_with_the_bits_of_one_thread():
    """The blocks of particles run as jobs on Numba's thread count, each on one BLAS thread, and
    are added in their order: the field and the predictions at 1 and 2 Numba threads and 1 and
    2 BLAS threads are the same bits, and they are the cached (one-block) field's values."""
    import numba
    import threadpoolctl

    p = setup("logistic", "softplus")
    blocked = TangentField(p["a"], p["W"], p["b"], p["X"], p["y"], s=S, eta_a=ETA_A, eta_w=ETA_W,
                           act="softplus", loss="logistic", loss_scale=C, block_elements=7 * N)
    m = blocked.layout.m
    assert -(-m // 7) >= 3  # blocks of 7 particles
    theta = blocked.initial_state() + 0.1 * np.random.default_rng(31).normal(size=blocked.layout.size)
    results, before = set(), numba.get_num_threads()
    try:
        for numba_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            for blas_threads in (1, 2):
                numba.set_num_threads(numba_threads)
                with threadpoolctl.threadpool_limits(blas_threads, user_api="blas"):
                    v, loss = blocked(0.0, theta)
                    results.add((v.tobytes(), loss, blocked.predict(theta, p["Xt"]).tobytes()))
    finally:
        numba.set_num_threads(before)
    assert len(results) == 1
    v, loss = p["tangent"](0.0, theta)
    np.testing.assert_allclose(np.frombuffer(results.pop()[0]), v, rtol=1e-12, atol=1e-15)
