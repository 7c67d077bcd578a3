"""Population mode: closed-form kernels against Monte Carlo, the N-body kernel against its
NumPy twin, the data-mode flow tending to the population flow, and the exact tangent flow."""

import math
import os
import sys

import numba
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference_population as ref  # noqa: E402

from solvers import population as P  # noqa: E402
from solvers.activations import ACTIVATIONS  # noqa: E402
from solvers.catalog import POPULATION_ACTIVATIONS  # noqa: E402
from solvers.fields import ParticleField, ParticleLayout  # noqa: E402
from solvers.integrate import RK4, LoopState, integrate  # noqa: E402
from solvers.losses import LOSSES  # noqa: E402
from solvers.particles import predict  # noqa: E402

PAIRS = [(p, q) for p in POPULATION_ACTIVATIONS for q in POPULATION_ACTIVATIONS]
N_MC = 1_000_000


@pytest.fixture(scope="module")
def gauss3():
    return np.random.default_rng(12345).standard_normal((N_MC, 3))


def close_in_se(exact, mean, se, k=4.0, atol=1e-12):
    exact, mean, se = np.broadcast_arrays(exact, mean, se)
    bad = np.abs(exact - mean) > k * se + atol
    assert not bad.any(), (exact[bad], mean[bad], se[bad])


def student(m, d, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=m), scale * rng.normal(size=(m, d)) / math.sqrt(d)


# ------------------------------------------------------------------ U and grad U


def cases(d=3):
    rng = np.random.default_rng(7)
    w = rng.normal(size=d) * 0.8
    v = rng.normal(size=d) * 0.6
    zero = np.zeros(d)
    return [(w, v), (w, 1.7 * w), (w, -0.6 * w), (zero, v), (w, zero), (2.0 * w, 0.3 * v)]


@pytest.mark.parametrize("act1,act2", PAIRS)
def test_U_and_grad_U_against_monte_carlo(act1, act2, gauss3):
    cs = cases()
    W1 = np.array([w for w, _ in cs])
    W2 = np.array([v for _, v in cs])
    U = P.pair_U(W1, W2, act1, act2)
    G = P.pair_grad_U(W1, W2, act1, act2)
    assert np.all(np.isfinite(U)) and np.all(np.isfinite(G))
    diag = np.arange(len(cs))
    close_in_se(U[diag, diag], *ref.mc_U(W1, W2, act1, act2, gauss3))
    close_in_se(G[diag, diag], *ref.mc_grad_U(W1, W2, act1, act2, gauss3))


@pytest.mark.parametrize("act1,act2", PAIRS)
def test_grad_U_is_the_derivative_of_U(act1, act2):
    rng = np.random.default_rng(3)
    W1, W2 = rng.normal(size=(4, 5)), rng.normal(size=(3, 5))
    G = P.pair_grad_U(W1, W2, act1, act2)
    h = 1e-6
    for k in range(5):
        e = np.zeros(5)
        e[k] = h
        fd = (P.pair_U(W1 + e, W2, act1, act2) - P.pair_U(W1 - e, W2, act1, act2)) / (2 * h)
        np.testing.assert_allclose(G[:, :, k], fd, rtol=1e-6, atol=1e-8)


def test_unsupported_activation_names_the_pairs():
    W = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"supported: .*\(relu, erf\)"):
        P.pair_U(W, W, "relu", "tanh")
    with pytest.raises(ValueError, match="tanh"):
        P.population_gradient(np.ones(2), W, np.ones(2), W, s=1.0, act="tanh", teacher_act="relu")


# ------------------------------------------------------------------ risk and gradient


@pytest.mark.parametrize("act,tact", [("relu", "relu"), ("erf", "erf"), ("relu", "linear"),
                                      ("erf", "relu"), ("quadratic", "quadratic"), ("relu", "quadratic")])
def test_population_risk_against_the_empirical_risk(act, tact, gauss3):
    a, W = student(5, 3, seed=1)
    ta, tW = student(2, 3, seed=2)
    R = P.population_risk(a, W, ta, tW, s=0.7, act=act, teacher_act=tact, loss_scale=1.3)
    close_in_se(R, *ref.mc_risk(a, W, ta, tW, gauss3, 0.7, act, tact, 1.3))


def reference_gradient(a, W, ta, tW, s, act, tact, c):
    """dR/da and dR/dW from the reference pair functions (module formulas)."""
    Gs = np.einsum("ijk,j->ik", P.pair_grad_U(W, W, act), a)
    Gt = np.einsum("ijk,j->ik", P.pair_grad_U(W, tW, act, tact), ta)
    ga = c * (s * s * P.pair_U(W, W, act) @ a - s * P.pair_U(W, tW, act, tact) @ ta)
    return ga, c * a[:, None] * (s * s * Gs - s * Gt)


@pytest.mark.parametrize("act,tact", PAIRS)
@pytest.mark.parametrize("m,k,d", [(37, 5, 3), (300, 7, 10), (5, 1, 3), (2, 1, 3)])
def test_population_gradient_against_references(act, tact, m, k, d):
    a, W = student(m, d, seed=m)
    ta, tW = student(k, d, seed=m + 1)
    kw = dict(s=0.4, act=act, teacher_act=tact, loss_scale=0.6)
    R, ga, gW = P.population_gradient(a, W, ta, tW, **kw)
    R2, ga2, gW2 = ref.population_gradient_numpy(a, W, ta, tW, **kw)
    ga3, gW3 = reference_gradient(a, W, ta, tW, 0.4, act, tact, 0.6)
    R3 = P.population_risk(a, W, ta, tW, **kw)
    for x, y in ((ga, ga2), (gW, gW2), (ga, ga3), (gW, gW3)):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12 * np.abs(y).max())
    assert R == pytest.approx(R3, rel=1e-10, abs=1e-13) and R2 == pytest.approx(R3, rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("act,tact", [("relu", "relu"), ("erf", "erf"), ("relu", "quadratic"), ("erf", "linear")])
def test_population_gradient_is_the_derivative_of_the_risk(act, tact):
    a, W = student(6, 3, seed=5)
    ta, tW = student(3, 3, seed=6)
    kw = dict(s=0.5, act=act, teacher_act=tact, loss_scale=1.5)
    _, ga, gW = P.population_gradient(a, W, ta, tW, **kw)
    h = 1e-6
    for i in range(6):
        e = np.zeros(6)
        e[i] = h
        fd = (P.population_risk(a + e, W, ta, tW, **kw) - P.population_risk(a - e, W, ta, tW, **kw)) / (2 * h)
        assert ga[i] == pytest.approx(fd, rel=1e-6, abs=1e-8)
        for k in range(3):
            E = np.zeros((6, 3))
            E[i, k] = h
            fd = (P.population_risk(a, W + E, ta, tW, **kw) - P.population_risk(a, W - E, ta, tW, **kw)) / (2 * h)
            assert gW[i, k] == pytest.approx(fd, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_degenerate_particles_stay_finite(act):
    """Zero, duplicated and antiparallel particles: finite, and the kernel agrees with its twin
    (loosely: arccos near +-1 resolves the angle to ~1e-8 only)."""
    a, W = student(9, 3, seed=9)
    W[1] = 0.0
    W[2] = W[3]
    W[4] = -2.0 * W[5]
    ta, tW = student(2, 3, seed=10)
    tW[1] = W[6]
    kw = dict(s=0.3, act=act, teacher_act=act)
    R, ga, gW = P.population_gradient(a, W, ta, tW, **kw)
    R2, ga2, gW2 = ref.population_gradient_numpy(a, W, ta, tW, **kw)
    assert np.isfinite(R) and np.all(np.isfinite(ga)) and np.all(np.isfinite(gW))
    np.testing.assert_allclose(gW, gW2, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ga, ga2, rtol=1e-7, atol=1e-9)
    if act == "relu":
        assert np.all(gW[1] == 0.0)  # relu'(0) = 0


def test_gradient_is_deterministic_and_thread_independent():
    a, W = student(700, 10, seed=11)
    ta, tW = student(3, 10, seed=12)
    kw = dict(s=1 / 700, act="relu", teacher_act="relu")
    first = P.population_gradient(a, W, ta, tW, **kw)
    again = P.population_gradient(a, W, ta, tW, **kw)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = P.population_gradient(a, W, ta, tW, **kw)
    finally:
        numba.set_num_threads(threads)
    for other in (again, serial):
        assert first[0] == other[0]
        assert np.array_equal(first[1], other[1]) and np.array_equal(first[2], other[2])


def test_population_field():
    m, d = 6, 3
    layout = ParticleLayout(m, d, bias=False)
    a, W = student(m, d, seed=13)
    ta, tW = student(2, d, seed=14)
    field = P.PopulationField(layout, ta, tW, s=0.2, eta_a=0.5, eta_w=3.0, act="relu",
                              teacher_act="erf", loss_scale=2.0)
    dy, loss = field(0.0, layout.pack(a, W))
    R, ga, gW = P.population_gradient(a, W, ta, tW, s=0.2, act="relu", teacher_act="erf", loss_scale=2.0)
    assert loss == pytest.approx(R / 2.0, rel=1e-14)
    np.testing.assert_allclose(dy, layout.pack(-0.5 * ga, -3.0 * gW), rtol=1e-14)
    with pytest.raises(ValueError, match="bias"):
        P.PopulationField(ParticleLayout(m, d, bias=True), ta, tW, s=0.2, eta_a=1, eta_w=1,
                          act="relu", teacher_act="relu")


def test_data_flow_tends_to_the_population_flow_like_n_to_the_minus_half():
    m, d, k = 8, 3, 2
    layout = ParticleLayout(m, d, bias=False)
    a, W = student(m, d, seed=20)
    ta, tW = student(k, d, seed=21, scale=2.0)
    kw = dict(s=1.0 / m, eta_a=float(m), eta_w=float(m))
    y0 = layout.pack(a, W)
    stepper = RK4(0.1)

    def run(field):
        return integrate(field, LoopState(0.0, 0, y0), stepper, [1.0]).state.y

    pop = run(P.PopulationField(layout, ta, tW, act="relu", teacher_act="relu", **kw))
    ns = [250, 1000, 4000, 16000]
    dist = []
    for n in ns:
        ds = []
        for draw in range(6):
            X = np.random.default_rng(1000 * n + draw).standard_normal((n, d))
            yk = predict(ta, tW, None, X, 1.0, ACTIVATIONS["relu"])
            field = ParticleField(layout, X, yk, activation=ACTIVATIONS["relu"],
                                  loss=LOSSES["squared"], **kw)
            ds.append(np.linalg.norm(run(field) - pop))
        dist.append(np.mean(ds))
    slope = np.polyfit(np.log(ns), np.log(dist), 1)[0]
    assert abs(slope + 0.5) < 0.15, (slope, dist)


# ------------------------------------------------------------------ the lazy side


@pytest.mark.parametrize("act", POPULATION_ACTIVATIONS)
def test_hessian_U_against_monte_carlo_and_finite_differences(act, gauss3):
    cs = cases()
    for w, v in cs:
        H = P.pair_hessian_U(w[None], v[None], act)[0, 0]
        close_in_se(H, *ref.mc_hessian_U(w, v, act, gauss3))
    rng = np.random.default_rng(4)
    W1, W2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    H = P.pair_hessian_U(W1, W2, act)
    h = 1e-6
    for k in range(4):
        e = np.zeros(4)
        e[k] = h
        fd = (P.pair_grad_U(W1, W2 + e, act) - P.pair_grad_U(W1, W2 - e, act)) / (2 * h)
        np.testing.assert_allclose(H[:, :, :, k], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("act,tact", [("relu", "relu"), ("erf", "linear"), ("linear", "erf")])
def test_tangent_gram_and_h_against_monte_carlo(act, tact, gauss3):
    a, W = student(3, 3, seed=30)
    ta, tW = student(2, 3, seed=31)
    s, c = 0.6, 1.7
    G = P.tangent_gram(a, W, s=s, act=act)
    Gm, se_G, hm, se_h = ref.mc_gram(a, W, ta, tW, gauss3, s, act, tact)
    close_in_se(G, Gm, se_G)
    _, ga, gW = P.population_gradient(a, W, ta, tW, s=s, act=act, teacher_act=tact, loss_scale=c)
    close_in_se(np.concatenate([ga, gW.ravel()]) / c, hm, se_h)
    assert np.linalg.eigvalsh(G).min() > -1e-12 * np.abs(G).max()


@pytest.mark.parametrize("act", ["relu", "erf", "linear"])
def test_tangent_flow_is_exact(act):
    m, d = 5, 3
    a, W = student(m, d, seed=40)
    ta, tW = student(2, d, seed=41)
    kw = dict(s=0.5, eta_a=0.7, eta_w=2.0, act=act, teacher_act="relu", loss_scale=1.3)
    tan = P.PopulationTangent(a, W, ta, tW, **kw)
    theta0 = np.concatenate([a, W.ravel()])
    assert np.array_equal(tan.state(0.0), theta0)
    R0 = P.population_risk(a, W, ta, tW, s=0.5, act=act, teacher_act="relu", loss_scale=1.3)
    assert tan.risk(0.0) == pytest.approx(R0, rel=1e-12)
    G, h, eta, c = tan.gram, tan.h, tan.eta, 1.3

    def field(t, y, batch=None):
        return -c * eta * (G @ (y - theta0) + h), math.nan

    from solvers.integrate import RK45

    out = integrate(field, LoopState(0.0, 0, theta0.copy()), RK45(1e-10, 1e-12, 1e-3, 1e-10, np.inf), [0.5, 3.0])
    np.testing.assert_allclose(tan.state(3.0), out.state.y, rtol=1e-8, atol=1e-9)
    ts = np.linspace(0.0, 20.0, 201)
    R = tan.risk(ts)
    assert np.all(np.diff(R) <= 1e-14 * R0) and R[-1] < R0
    # risk(t) is the quadratic risk at state(t)
    dth = tan.state(3.0) - theta0
    Rq = 0.5 * c * (dth @ G @ dth + 2 * dth @ h) + R0
    assert tan.risk(3.0) == pytest.approx(Rq, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(tan.state(ts[:3]), [tan.state(t) for t in ts[:3]], rtol=1e-14, atol=1e-15)
