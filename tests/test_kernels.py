"""The infinite-width kernels on any inputs (docs/design.md §1.6): the quadrature rule against
the closed forms and an independent adaptive quadrature, ``mf.kernels`` against neural-tangents'
published closed forms (written out here) and a Monte-Carlo estimate from a wide random network
(its gradients by hand), the NNGP posterior against the textbook formula, and ``mf.ntk_predict``
against an ``ntk`` run's stored predictions."""

import math
import tracemalloc

import numpy as np
import pytest
from recorded import measures
from reference import dsigma, sigma
from scipy import integrate

import meanfield as mf
from solvers.gaussian import QUADRATURE_STEP, gaussian_moments, quadrature_kernel_moments, quadrature_moments

rng = np.random.default_rng(21)
# covariances (q11, q12, q22): q from 0.05 to 25, rho in [-1, 1] with many near +-1, a zero variance
Q11 = np.concatenate([rng.uniform(0.05, 9, 30), [0.2, 1, 1, 4, 25, 0.0, 1e-3, 1, 2]])
Q22 = np.concatenate([rng.uniform(0.05, 9, 30), [0.3, 1, 1, 4, 25, 1.0, 1.0, 1, 3]])
RHO = np.concatenate([rng.uniform(-1, 1, 20), 1 - 10.0 ** -rng.uniform(1, 9, 10), [0.5, 1, 0.99, -1, 0.96, 0, 1, -1,
                                                                                    0.7]])
Q12 = RHO * np.sqrt(Q11 * Q22)


# ------------------------------------------------------------------ the quadrature rule
def test_the_quadrature_rule_meets_the_closed_forms():
    """erf, linear and quadratic to rounding (measured: 1.2e-14, 4.6e-13 relative, 7.8e-12
    relative: the quadratic's tail beyond the cut-off L = 8); relu, whose kink the rule does not
    resolve, to first order in the step only (measured 7e-4 on E[ss], 5e-2 on E[s's'] at rho = 1)."""
    for act, tol in (("erf", 1e-13), ("linear", 1e-12), ("quadratic", 1e-10)):
        got, want = quadrature_moments(Q11, Q12, Q22, act), gaussian_moments(Q11, Q12, Q22, act)
        for g, w in zip(got, want):
            assert np.all(np.abs(g - w) <= tol * np.maximum(1.0, np.abs(w))), act
    got, want = quadrature_moments(Q11, Q12, Q22, "relu"), gaussian_moments(Q11, Q12, Q22, "relu")
    assert np.abs(got[0] - want[0]).max() < 2e-3 and np.abs(got[1] - want[1]).max() < 0.1


def nested_quad(q11, q12, q22, f):
    """E[f(u, v)] by scipy's adaptive quad, nested: u = sqrt(q11) g1, v | g1 ~ N(a g1, b^2)."""
    r = math.sqrt(q11)
    a = q12 / r
    b = math.sqrt(max(q22 - a * a, 0.0))
    phi = lambda g: math.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)  # noqa: E731

    def inner(g1):
        return integrate.quad(lambda g2: phi(g2) * f(r * g1, a * g1 + b * g2), -12, 12, epsabs=1e-14,
                              epsrel=1e-13, limit=200)[0]

    return integrate.quad(lambda g1: phi(g1) * inner(g1), -12, 12, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus"])
def test_the_quadrature_rule_meets_adaptive_quadrature_and_itself_at_half_the_step(act, monkeypatch):
    cases = [(1.0, 0.6, 1.0), (1.0, 1.0, 1.0), (4.0, -3.0, 2.5), (0.3, 0.1, 2.0)]
    got = quadrature_moments(*(np.array(c) for c in zip(*cases)), act)
    for k, (q11, q12, q22) in enumerate(cases):
        want_ss = nested_quad(q11, q12, q22, lambda u, v: sigma(act, u) * sigma(act, v))
        want_dd = nested_quad(q11, q12, q22, lambda u, v: dsigma(act, u) * dsigma(act, v))
        # measured: 2.6e-13 to 7.3e-13 (the nested adaptive quadrature's own accuracy)
        assert abs(got[0][k] - want_ss) < 1e-11 and abs(got[1][k] - want_dd) < 1e-11, (q11, q12, q22)
    # the rule's own convergence over the whole set (measured: 2.7e-13 tanh, 1e-14 sigmoid, softplus)
    coarse = quadrature_moments(Q11, Q12, Q22, act)
    code = mf_code(act)
    monkeypatch.setitem(QUADRATURE_STEP, code, QUADRATURE_STEP[code] / 2)
    fine = quadrature_moments(Q11, Q12, Q22, act)
    assert max(np.abs(c - f).max() for c, f in zip(coarse, fine)) < 1e-12


def mf_code(act):
    from solvers.catalog import activation_code

    return activation_code(act)


def test_the_quadrature_on_a_gram_matrix_is_exactly_symmetric():
    X = rng.standard_normal((9, 3))
    q = np.einsum("kj,kj->k", X, X) / 3 + 0.2
    G = X @ X.T / 3 + 0.2
    G = 0.5 * (G + G.T)
    e_ss, e_dd = quadrature_kernel_moments(q, G, q, "tanh", symmetric=True)
    assert np.array_equal(e_ss, e_ss.T) and np.array_equal(e_dd, e_dd.T)
    cross = quadrature_kernel_moments(q, G, q, "tanh")
    assert np.abs(cross[0] - e_ss).max() < 1e-12  # the upper triangle by the other Cholesky order


# ------------------------------------------------------------------ neural-tangents' closed forms
def nt_kernels(X, act, W_std, b_std, W2, b2):
    """neural-tangents' stax.serial(Dense(m, W_std, b_std), Relu() or Erf(), Dense(1, W2, b2)),
    parameterization 'ntk' (docs: q = W_std^2 x.x'/d + b_std^2; nngp = W2^2 E[phi phi'] + b2^2;
    ntk = nngp + W2^2 E[phi_dot phi_dot'] q), written out from its published formulas."""
    d = X.shape[1]
    q = W_std**2 * X @ X.T / d + b_std**2
    q11 = np.diag(q)
    p = np.sqrt(np.outer(q11, q11))
    if act == "relu":
        t = np.arccos(np.clip(q / p, -1, 1))
        ess = p * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        edd = (np.pi - t) / (2 * np.pi)
    else:
        s = np.outer(1 + 2 * q11, 1 + 2 * q11)
        ess = 2 / np.pi * np.arcsin(2 * q / np.sqrt(s))
        edd = 4 / np.pi / np.sqrt(s - 4 * q**2)
    nngp = W2**2 * ess + b2**2
    return nngp, nngp + W2**2 * edd * q


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_mf_kernels_are_neural_tangents_closed_forms(act):
    X = rng.standard_normal((12, 4))
    W_std, b_std, W2, b2 = 1.3, 0.4, 0.9, 0.3
    d = X.shape[1]
    # NT trains its standard-normal parameters at rate 1: ours with lr = the variances
    model = {"activation": act, "bias": True, "output_bias": True,
             "init": {"w_std": W_std, "b_std": b_std, "a_std": W2, "c_std": b2}}
    param = {"preset": "ntk", "lr_a": W2**2, "lr_w": W_std**2 / d, "lr_b": b_std**2, "lr_c": b2**2}
    k = mf.kernels(X, model=model, parameterization=param)
    nngp, ntk = nt_kernels(X, act, W_std, b_std, W2, b2)
    # measured: 2e-16 to 6e-16 of the largest entry
    assert np.abs(k.nngp - nngp).max() < 1e-10 * np.abs(nngp).max()
    assert np.abs(k.ntk - ntk).max() < 1e-10 * np.abs(ntk).max()


# ------------------------------------------------------------------ Monte Carlo: a wide network
def wide_network_kernels(X, act, m, model, preset, seed):
    """Per-neuron terms of the empirical NNGP and learning-rate-weighted NTK of a width-m net
    f = s sum_i a_i sigma(w_i.x + b_i) drawn as the scenario draws it, its gradients by hand:
    df/da_i = s sigma(z_i), df/dw_i = s a_i sigma'(z_i) x, df/db_i = s a_i sigma'(z_i). Returns
    (nngp_i, ntk_i), each (m, n, n), whose means over i estimate the kernels."""
    r = np.random.default_rng(seed)
    d = X.shape[1]
    init = model["init"]
    s, eta, a_scale = {"ntk": (m**-0.5, 1.0, 1.0), "mean_field": (1.0 / m, float(m), 1.0)}[preset]
    a = a_scale * init["a_std"] * r.standard_normal(m)
    W = init["w_std"] / math.sqrt(d) * r.standard_normal((m, d))
    b = init["b_std"] * r.standard_normal(m)
    Z = X @ W.T + b  # (n, m)
    S, D = sigma(act, Z), dsigma(act, Z)
    ga = s * S  # df/da_i at each point
    gz = s * a * D  # df/dz_i: df/dw_i = gz x, df/db_i = gz
    ntk_i = m * eta * (np.einsum("ki,li->ikl", ga, ga) + np.einsum("ki,li->ikl", gz, gz) * (X @ X.T + 1.0))
    nngp_i = init["a_std"] ** 2 * np.einsum("ki,li->ikl", S, S)  # E over a of a_i^2 s^2 m
    return nngp_i, ntk_i


@pytest.mark.parametrize("act, preset", [("tanh", "ntk"), ("sigmoid", "mean_field"), ("softplus", "ntk"),
                                         ("relu", "mean_field"), ("erf", "ntk")])
def test_mf_kernels_agree_with_a_wide_random_network_within_five_standard_errors(act, preset):
    X = np.vstack([rng.standard_normal((5, 3)), [[0.0, 0.0, 0.0]]])
    model = {"activation": act, "bias": True, "init": {"w_std": 1.4, "b_std": 0.5, "a_std": 0.8}}
    k = mf.kernels(X, model=model, parameterization={"preset": preset})
    m = 40000
    nngp_i, ntk_i = wide_network_kernels(X, act, m, model, preset, seed=7)
    for name, terms, exact in (("nngp", nngp_i, k.nngp), ("ntk", ntk_i, k.ntk)):
        mean, se = terms.mean(axis=0), terms.std(axis=0) / math.sqrt(m)
        z = np.abs(mean - exact) / np.maximum(se, 1e-300)
        assert np.all(z < 5), (name, z.max())  # measured: at most 1.2 to 2.3 standard errors over 21 entries
        assert se.max() < 0.02 * np.abs(exact).max(), name  # the test has power


# ------------------------------------------------------------------ API: shapes, batches, memory, errors
def test_the_kernels_are_the_same_bits_at_any_batch_and_a_gram_matrix_is_symmetric():
    X, Y = rng.standard_normal((90, 3)), rng.standard_normal((20, 3))
    for act in ("relu", "erf", "tanh"):
        model = {"activation": act, "bias": True, "init": {"b_std": 0.5}}
        full = mf.kernels(X, model=model)
        assert np.array_equal(full.ntk, full.ntk.T) and np.array_equal(full.nngp, full.nngp.T)
        assert full.ntk.dtype == np.float64 and full.ntk.shape == (90, 90)
        cross = mf.kernels(X, Y, model=model)
        for batch in (1, 7, 64, 1000):
            again = mf.kernels(X, model=model, batch=batch)
            assert np.array_equal(again.ntk, full.ntk) and np.array_equal(again.nngp, full.nngp), (act, batch)
            other = mf.kernels(X, Y, model=model, batch=batch)
            assert np.array_equal(other.ntk, cross.ntk) and np.array_equal(other.nngp, cross.nngp), (act, batch)


def test_a_large_kernel_holds_no_more_than_a_few_arrays_of_its_size():
    X = rng.standard_normal((1500, 8))
    tracemalloc.start()
    k = mf.kernels(X, X[:700], model={"activation": "relu"}, batch=64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3.5 * X.shape[0] * 700 * 8, peak / (X.shape[0] * 700 * 8)  # the two results and a batch's work
    assert k.ntk.shape == (1500, 700)


@pytest.mark.parametrize("kwargs, words", [
    ({"parameterization": "standard"}, "grows like m^1 with the width: it has no infinite-width limit"),
    ({"parameterization": {"preset": "ntk", "lr_b": 1}}, "mf.kernels: parameterization.lr_b = 1 is the learning "
     "rate of the biases b_i, and model.bias is false"),
    ({"model": {"activation": "tan"}}, "mf.kernels: model.activation: 'tan' is not one of"),
    ({"model": "relu"}, "model is a mapping of the scenario's model keys"),
    ({"batch": 0}, "batch: give a whole number of rows >= 1"),
])
def test_bad_arguments_get_one_clear_message(kwargs, words):
    with pytest.raises(mf.UsageError, match=None) as caught:
        mf.kernels(np.ones((3, 2)), **kwargs)
    assert words in str(caught.value)


def test_the_sections_of_a_scenario_serve_as_they_are():
    sc = mf.load_scenario("quickstart", {"model.activation": "tanh", "model.bias": True, "model.init.b_std": 0.3})
    X = rng.standard_normal((4, sc.data.dim))
    from_objects = mf.kernels(X, model=sc.model, parameterization=sc.runs["lazy"].parameterization)
    from_dicts = mf.kernels(X, model=sc.model.model_dump(), parameterization=sc.runs["lazy"].parameterization.model_dump())
    assert np.array_equal(from_objects.ntk, from_dicts.ntk)
    # every preset with a limit has the same kernel at lr = 1: the clocks agree
    ntk = mf.kernels(X, model=sc.model, parameterization="ntk").ntk
    for preset in ("mean_field", "mup", {"preset": "lazy", "alpha": 30}):
        np.testing.assert_allclose(mf.kernels(X, model=sc.model, parameterization=preset).ntk, ntk, rtol=1e-13)


# ------------------------------------------------------------------ the NNGP posterior
def test_the_nngp_posterior_is_gaussian_process_regression_with_neural_tangents_nngp():
    X, Xs = rng.standard_normal((15, 3)), rng.standard_normal((6, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(15)
    noise = 0.05
    model = {"activation": "erf", "bias": True, "output_bias": True,
             "init": {"w_std": 1.2, "b_std": 0.3, "a_std": 0.7, "c_std": 0.2}}
    post = mf.nngp_posterior(X, y, Xs, noise=noise, model=model)
    full = nt_kernels(np.vstack([X, Xs]), "erf", 1.2, 0.3, 0.7, 0.2)[0]
    K, Ks, Kss = full[:15, :15], full[15:, :15], full[15:, 15:]
    mean = Ks @ np.linalg.solve(K + noise * np.eye(15), y)
    variance = np.diag(Kss - Ks @ np.linalg.solve(K + noise * np.eye(15), Ks.T))
    np.testing.assert_allclose(post.mean, mean, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(post.variance, variance, rtol=1e-8, atol=1e-11)
    assert np.all(post.variance > 0)
    with pytest.raises(mf.UsageError, match="give noise > 0"):
        mf.nngp_posterior(np.vstack([X, X[:1]]), np.append(y, y[0]), Xs, noise=0.0, model=model)


# ------------------------------------------------------------------ the NTK flow against an ntk run
SCENARIO = {
    "name": "kernels",
    "seed": 2,
    "data": {"dim": 3, "n_train": 20, "n_test": 9, "teacher": {"activation": "tanh"}},
    "model": {"width": 64, "activation": "tanh", "bias": True, "init": {"w_std": 1.3, "b_std": 0.4, "a_std": 0.9}},
    "runs": {"ntk": {"solver": "ntk", "kernel": "analytic",
                     "parameterization": {"preset": "ntk", "lr": 0.8, "lr_b": 2.0}}},
    "train": {"t_end": 4.0},
    "record": {"every": 1.0, "dtype": "float64"},
}


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus"])
def test_ntk_predict_is_the_analytic_ntk_runs_stored_predictions(tmp_path, act):
    sc = mf.load_scenario(SCENARIO, {"model.activation": act})
    out = tmp_path / "k.h5"
    traj = mf.simulate(sc, out)
    data = traj.data
    traj.close()
    stored = measures(out, "ntk")["f_test"]
    param = sc.runs["ntk"].parameterization
    got = mf.ntk_predict(data.X_train, data.y_train, data.X_test, t=stored.time, model=sc.model,
                         parameterization=param)
    scale = np.abs(stored.value).max()
    assert scale > 0.05 and np.abs(got.test - stored.value).max() < 1e-10 * scale
    # the limit: kernel regression with the NTK, against numpy.linalg.solve
    k_train = mf.kernels(data.X_train, model=sc.model, parameterization=param).ntk
    k_test = mf.kernels(data.X_test, data.X_train, model=sc.model, parameterization=param).ntk
    limit = mf.ntk_predict(data.X_train, data.y_train, data.X_test, model=sc.model, parameterization=param)
    np.testing.assert_allclose(limit.test, k_test @ np.linalg.solve(k_train, data.y_train), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(limit.train, data.y_train, atol=1e-8)
