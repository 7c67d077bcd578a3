"""The GEMM path of the particle step (d >= BLAS_MIN_D, docs/design.md §1.1): against plain
NumPy for every activation and loss, across its blocks and its padding, on both sides of the
choice by size, its memory bound, and the same bits at any number of Numba and BLAS threads."""

import os
import sys
import tracemalloc

import numba
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402
import threadpoolctl  # noqa: E402
from test_particles import close, problem  # noqa: E402

from solvers import particles  # noqa: E402
from solvers.activations import ACTIVATIONS  # noqa: E402
from solvers.losses import LOSSES  # noqa: E402
from solvers.particles import predict, pullback, risk_and_gradient  # noqa: E402


def reference_pullback(a, W, b, X, v, s, act):
    """J^T v in float64: (s sum_k v_k sigma(z_ik), s a_i sum_k v_k sigma'(z_ik) x_k, s a_i sum_k v_k sigma'(z_ik))."""
    a, W, X, v = (np.asarray(t, np.float64) for t in (a, W, X, v))
    Z = W @ X.T + (0.0 if b is None else np.asarray(b, np.float64)[:, None])
    G = s * ref.dsigma(act, Z) * v[None, :] * a[:, None]
    return s * ref.sigma(act, Z) @ v, G @ X, (G.sum(axis=1) if b is not None else None)


def check_all(a, W, b, X, y, act, loss, rtol, s=0.05):
    """predict, risk_and_gradient and pullback against the NumPy reference."""
    code = ACTIVATIONS[act]
    close(predict(a, W, b, X, s, code), ref.predict(a, W, b, X, s, act), rtol)
    got = risk_and_gradient(a, W, b, X, y, s, code, LOSSES[loss], loss_scale=0.7)
    want = ref.risk_and_gradient(a, W, b, X, y, s, act, loss, loss_scale=0.7)
    np.testing.assert_allclose(got[0], want[0], rtol=rtol)
    for g, w in zip(got[1:], want[1:]):
        if w is None:
            assert g is None
        else:
            assert g.dtype == X.dtype
            close(g, w, rtol)
    for g, w in zip(pullback(a, W, b, X, y, s, code), reference_pullback(a, W, b, X, y, s, act)):
        if w is None:
            assert g is None
        else:
            close(g, w, rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_gemm_path_matches_numpy(act, bias, dtype):
    """m, n not multiples of GEMM_ALIGN (padded), d = 100 (not padded) and 150 (padded to 160)."""
    rtol = 1e-12 if dtype == np.float64 else 3e-4
    for d in (100, 150):
        for loss in LOSSES:
            a, W, b, X, y = problem(70, 131, d, loss, bias, dtype, seed=d)
            check_all(a, W, b, X, y, act, loss, rtol)


@pytest.mark.parametrize("d", [particles.BLAS_MIN_D - 1, particles.BLAS_MIN_D])
def test_both_sides_of_the_choice_by_size(d):
    """d = BLAS_MIN_D - 1 takes the fused kernels (X packed in tiles), d = BLAS_MIN_D the GEMM path."""
    a, W, b, X, y = problem(45, 97, d, seed=4)
    assert (particles.packed_points(X) is None) == (d >= particles.BLAS_MIN_D)
    for act in ("relu", "tanh"):
        check_all(a, W, b, X, y, act, "squared", 1e-12)


@pytest.fixture
def small_blocks(monkeypatch):
    """A buffer of 3 blocks of 64 rows at n = 200 (padded to 256): the first 2 blocks kept,
    the rest computed again in the backward pass."""
    row = 256 * 8
    monkeypatch.setattr(particles, "GEMM_BLOCK_BYTES", 64 * row)
    monkeypatch.setattr(particles, "GEMM_KEPT_BYTES", 3 * 64 * row)
    particles.release_workspace()
    yield
    particles.release_workspace()


@pytest.mark.parametrize("act", ["relu", "tanh", "softplus"])
def test_blocks_kept_and_computed_again(small_blocks, act):
    m, n, d = 333, 200, 40  # 6 blocks, the last one partly padding; 2 kept
    assert particles._gemm_layout(384, 256, 8) == (64, 128)
    a, W, b, X, y = problem(m, n, d, "logistic", True, seed=9)
    check_all(a, W, b, X, y, act, "logistic", 1e-12)
    assert particles._WORKSPACE.buffer.nbytes <= particles.GEMM_KEPT_BYTES


def test_memory_is_bounded_by_the_buffer(small_blocks):
    """With the buffer's cap below m n, a step allocates far less than m x n."""
    m, n, d = 4096, 200, 40
    a, W, b, X, y = problem(m, n, d, seed=7)
    out = (np.empty(m), np.empty((m, d)), np.empty(m))
    risk_and_gradient(a, W, b, X, y, 1.0 / m, 0, 0, out=out)  # compile outside the trace
    particles.release_workspace()
    tracemalloc.start()
    try:
        risk_and_gradient(a, W, b, X, y, 1.0 / m, 0, 0, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert particles.gemm_buffer_bytes(m, n, d, 8) == particles.GEMM_KEPT_BYTES
    assert peak < particles.GEMM_KEPT_BYTES + 8 * 256 * d + 2**16 < m * n * 8 / 8  # the buffer, X padded


def test_buffer_bytes_within_the_cap():
    cap = particles.GEMM_KEPT_BYTES
    for m, n, d in [(1024, 8192, 100), (4096, 8192, 100), (10**5, 1000, 50), (100, 10**6, 40), (7, 9, 33)]:
        for itemsize in (4, 8):
            need = particles.gemm_buffer_bytes(m, n, d, itemsize)
            mp, np_ = -(-m // 64) * 64, -(-n // 64) * 64
            assert need == min(mp * np_ * itemsize, need) and need <= max(cap, 64 * np_ * itemsize)
            if mp * np_ * itemsize <= cap:
                assert need == mp * np_ * itemsize  # all of Z kept: one pass of each product


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread only")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m, n, d", [(1021, 3001, 100), (517, 1203, 200)])
def test_same_bits_at_any_numba_thread_count(m, n, d, dtype):
    """Odd sizes, d = 200 padded to 224: the same bits at 1 and 2 Numba threads with the BLAS on
    one thread, as a run holds it. (At 1 and 2 BLAS threads the padding (GEMM_ALIGN) gave the
    same bits with OpenBLAS's SkylakeX kernels, but not with its Haswell kernels in float32:
    so runs keep the BLAS on one thread, docs/design.md §6.4.)"""
    a, W, b, X, y = problem(m, n, d, "squared", True, dtype, seed=11)
    results = {}
    before = numba.get_num_threads()
    try:
        for numba_threads in (1, 2):
            for blas_threads in (1,):
                numba.set_num_threads(numba_threads)
                with threadpoolctl.threadpool_limits(blas_threads, user_api="blas"):
                    results[numba_threads, blas_threads] = (
                        risk_and_gradient(a, W, b, X, y, 0.01, 1, 0),
                        predict(a, W, b, X, 0.01, 0),
                        pullback(a, W, b, X, y, 0.01, 2))
    finally:
        numba.set_num_threads(before)
    (r1, f1, p1) = results[1, 1]
    for key, (r, f, p) in results.items():
        assert r[0] == r1[0], key
        np.testing.assert_array_equal(f, f1, err_msg=str(key))
        for g, h in zip(r[1:] + p, r1[1:] + p1):
            np.testing.assert_array_equal(g, h, err_msg=str(key))


@pytest.mark.parametrize("dim", [particles.BLAS_MIN_D - 1, 100])
def test_the_run_memory_estimate_counts_the_buffer(dim):
    """From d = BLAS_MIN_D on, a particle run on data lists the buffer, sized by gemm_buffer_bytes
    at the larger of n_train and n_test; below, it does not."""
    import meanfield

    scenario = meanfield.load_scenario("quickstart", [f"data.dim={dim}", "model.width=1000", "data.n_train=3000",
                                                      "data.n_test=500", "runs={rich: mean_field}"])
    needs = meanfield.plan(scenario).memory.needs
    buffers = [need for need in needs if "W X^T" in need.what]
    if dim < particles.BLAS_MIN_D:
        assert buffers == []
    else:
        assert [need.bytes for need in buffers] == [particles.gemm_buffer_bytes(1000, 3000, dim, 8)]
        assert buffers[0].bytes == 1024 * 3008 * 8  # m and n rounded up to multiples of 64
