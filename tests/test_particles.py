import os
import subprocess
import sys
import textwrap
import tracemalloc

import numba
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

from solvers import particles  # noqa: E402
from solvers.activations import ACTIVATIONS  # noqa: E402
from solvers.catalog import CLASSIFICATION_LOSSES  # noqa: E402
from solvers.losses import LOSSES  # noqa: E402
from solvers.particles import predict, risk_and_gradient  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIMS = [1, 2, 3, 16, 40]  # 40 takes the BLAS path
assert max(DIMS) >= particles.BLAS_MIN_D > 16


def problem(m, n, d, loss="squared", bias=True, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=m)
    W = rng.normal(size=(m, d)) / np.sqrt(d)
    b = 0.5 * rng.normal(size=m) if bias else None
    X = rng.normal(size=(n, d))
    y = np.sign(rng.normal(size=n)) if loss in CLASSIFICATION_LOSSES else rng.normal(size=n)
    cast = lambda v: None if v is None else v.astype(dtype)  # noqa: E731
    return cast(a), cast(W), cast(b), cast(X), cast(y)


def close(got, want, rtol):
    want = np.asarray(want, np.float64)
    scale = max(np.abs(want).max(), 1e-300)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_matches_numpy_twin(act, d, bias, dtype):
    m, n, s = 37, 133, 1.0 / 37  # odd sizes: not multiples of the tile
    rtol = 1e-12 if dtype == np.float64 else 2e-4
    code = ACTIVATIONS[act]
    for loss in LOSSES:
        a, W, b, X, y = problem(m, n, d, loss, bias, dtype, seed=d)
        f = predict(a, W, b, X, s, code)
        assert f.dtype == dtype and f.shape == (n,)
        close(f, ref.predict(a, W, b, X, s, act), rtol)
        got = risk_and_gradient(a, W, b, X, y, s, code, LOSSES[loss], loss_scale=0.7)
        want = ref.risk_and_gradient(a, W, b, X, y, s, act, loss, loss_scale=0.7)
        assert isinstance(got[0], float)
        np.testing.assert_allclose(got[0], want[0], rtol=rtol)
        for g, w in zip(got[1:3], want[1:3]):
            assert g.dtype == dtype
            close(g, w, rtol)
        if bias:
            assert got[3].dtype == dtype
            close(got[3], want[3], rtol)
        else:
            assert got[3] is None


@pytest.mark.parametrize("d", [3, 40])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("act", ["tanh", "softplus", "relu"])
def test_gradient_matches_finite_differences(act, loss, d):
    a, W, b, X, y = problem(19, 71, d, loss, True, seed=3)
    code, lcode, s = ACTIVATIONS[act], LOSSES[loss], 0.3
    risk = lambda a, W, b: risk_and_gradient(a, W, b, X, y, s, code, lcode)[0]  # noqa: E731
    _, ga, gW, gb = risk_and_gradient(a, W, b, X, y, s, code, lcode)
    h = 1e-6
    for i in (0, 7, 18):
        e = np.zeros_like(a)
        e[i] = h
        assert abs((risk(a + e, W, b) - risk(a - e, W, b)) / (2 * h) - ga[i]) < 1e-7
        assert abs((risk(a, W, b + e) - risk(a, W, b - e)) / (2 * h) - gb[i]) < 1e-7
        E = np.zeros_like(W)
        E[i, d - 1] = h
        assert abs((risk(a, W + E, b) - risk(a, W - E, b)) / (2 * h) - gW[i, d - 1]) < 1e-7


@pytest.mark.parametrize("d", [2, 40])
def test_deterministic_and_out_buffers(d):
    a, W, b, X, y = problem(301, 517, d, seed=5)
    r1 = risk_and_gradient(a, W, b, X, y, 0.01, 0, 0)
    r2 = risk_and_gradient(a, W, b, X, y, 0.01, 0, 0)
    assert r1[0] == r2[0]
    for g1, g2 in zip(r1[1:], r2[1:]):
        np.testing.assert_array_equal(g1, g2)
    out = (np.empty(301), np.empty((301, d)), np.empty(301))
    r3 = risk_and_gradient(a, W, b, X, y, 0.01, 0, 0, out=out)
    assert all(g is o for g, o in zip(r3[1:], out))
    for g1, g3 in zip(r1[1:], r3[1:]):
        np.testing.assert_array_equal(g1, g3)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread only")
def test_same_result_on_one_and_two_threads():
    a, W, b, X, y = problem(300, 700, 2, seed=6)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        r1 = risk_and_gradient(a, W, b, X, y, 0.01, 1, 0)
        numba.set_num_threads(2)
        r2 = risk_and_gradient(a, W, b, X, y, 0.01, 1, 0)
    finally:
        numba.set_num_threads(before)
    assert r1[0] == r2[0]
    for g1, g2 in zip(r1[1:], r2[1:]):
        np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("m, n, d", [(4096, 4096, 2), (4096, 4096, 40)])
def test_never_allocates_m_by_n(m, n, d):
    """No step allocates m x n values: the fused kernels none at all, the GEMM path (d = 40)
    only its bounded buffer for Z, once, kept from the first call (tests/test_particles_gemm.py)."""
    a, W, b, X, y = problem(m, n, d, seed=7)
    risk_and_gradient(a, W, b, X, y, 1.0 / m, 0, 0)  # compile (and the GEMM path's buffer) outside the trace
    tracemalloc.start()
    try:
        risk_and_gradient(a, W, b, X, y, 1.0 / m, 0, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < m * n * 8 / 3


def test_same_results_with_jit_disabled():
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        sys.path.insert(0, "tests")
        import reference as ref
        from solvers.particles import predict, risk_and_gradient
        rng = np.random.default_rng(1)
        for d in (2, 40):
            m, n = 5, 70
            a, W, b = rng.normal(size=m), rng.normal(size=(m, d)), rng.normal(size=m)
            X, y = rng.normal(size=(n, d)), np.sign(rng.normal(size=n))
            for act, code in (("tanh", 1), ("relu", 0)):
                np.testing.assert_allclose(predict(a, W, b, X, 0.5, code),
                                           ref.predict(a, W, b, X, 0.5, act), rtol=1e-12)
                got = risk_and_gradient(a, W, b, X, y, 0.5, code, 1)
                want = ref.risk_and_gradient(a, W, b, X, y, 0.5, act, "logistic")
                for g, w in zip(got, want):
                    np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
        print("jit-off ok")
        """
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    res = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "jit-off ok" in res.stdout


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread only")
@pytest.mark.parametrize("d, act", [(10, 0), (16, 1), (5, 6)])
def test_quad_kernels_same_result_on_one_and_two_threads(d, act):
    # m = 4k + 3: quads and single particles both run; several jobs per thread
    a, W, b, X, y = problem(203, 517, d, seed=8)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        r1 = risk_and_gradient(a, W, b, X, y, 0.01, act, 0)
        f1 = predict(a, W, b, X, 0.01, act)
        numba.set_num_threads(2)
        r2 = risk_and_gradient(a, W, b, X, y, 0.01, act, 0)
        f2 = predict(a, W, b, X, 0.01, act)
    finally:
        numba.set_num_threads(before)
    assert r1[0] == r2[0]
    np.testing.assert_array_equal(f1, f2)
    for g1, g2 in zip(r1[1:], r2[1:]):
        np.testing.assert_array_equal(g1, g2)
    want = ref.risk_and_gradient(a, W, b, X, y, 0.01, list(ACTIVATIONS)[act], "squared")
    for g, w in zip(r1[1:], want[1:]):
        close(g, w, 1e-12)
