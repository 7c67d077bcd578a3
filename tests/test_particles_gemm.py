"""The GEMM path of the particle step (d >= BLAS_MIN_D, docs/design.md §1.1): against plain
NumPy for every activation and loss, in one block and across many blocks and lanes, on both
sides of the choice by size, its memory bound, and the same bits at any number of Numba and
BLAS threads."""

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

from solvers import lanes, particles  # noqa: E402
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
    """Odd m and n, d = 100 and 150: one block of points, then many (below)."""
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
    """Blocks of 16 points at m = 333 (GEMM_BLOCK_BYTES = 16 m 8 bytes), at most 5 lanes."""
    monkeypatch.setattr(particles, "GEMM_BLOCK_BYTES", 16 * 333 * 8)
    monkeypatch.setattr(particles, "GEMM_LANES", 5)
    lanes.release_workspace()
    yield
    lanes.release_workspace()


@pytest.mark.parametrize("act", ["relu", "tanh", "softplus"])
def test_many_blocks_in_lanes(small_blocks, act):
    """n = 203: 13 blocks of 16 points (the last one 11) in 5 lanes of 2 or 3 blocks."""
    m, n, d = 333, 203, 40
    assert particles.gemm_layout(m, n, d, 8) == (16, 5)
    assert [list(particles._lane_blocks(n, 16, 5, lane)) for lane in (0, 4)] == [
        [(0, 16), (16, 32)], [(160, 176), (176, 192), (192, 203)]]
    a, W, b, X, y = problem(m, n, d, "logistic", True, seed=9)
    check_all(a, W, b, X, y, act, "logistic", 1e-12)


def test_layout_by_size():
    """Points per block from GEMM_BLOCK_BYTES (multiples of 16, within 16 .. 1024), lanes from
    the blocks, GEMM_LANES and GEMM_LANE_BYTES; the buffers' bytes from the layout."""
    mib = 1 << 20
    assert particles.GEMM_BLOCK_BYTES == 4 * mib and particles.GEMM_LANES == 8 and particles.GEMM_LANE_BYTES == 64 * mib
    assert particles.gemm_layout(1024, 8192, 100, 8) == (512, 8)  # 4 MiB / 8 KiB a point
    assert particles.gemm_layout(1024, 8192, 100, 4) == (1024, 8)
    assert particles.gemm_layout(1000, 8192, 100, 8) == (512, 8)  # 524 points rounded down
    assert particles.gemm_layout(10**5, 1000, 50, 8) == (16, 1)  # 40 MB of sums a lane: one lane
    assert particles.gemm_layout(4096, 60000, 784, 8) == (128, 2)  # 25.7 MB a lane: two
    assert particles.gemm_layout(16, 500, 40, 8) == (1024, 1)  # at most 1024 points: one block
    assert particles.gemm_layout(1024, 3000, 100, 8) == (512, 6)  # six blocks, six lanes
    assert particles.gemm_buffer_bytes(1024, 8192, 100, 8, threads=2) == (2 * 1024 * (512 + 102) + 8 * 1024 * 102) * 8
    assert particles.gemm_buffer_bytes(1024, 3000, 100, 8, threads=8) == (6 * 1024 * (512 + 102) + 6 * 1024 * 102) * 8


def test_memory_is_bounded_by_the_buffers():
    """A step allocates its buffers (gemm_buffer_bytes, threads included) and little else: far
    less than the m x n of Z, and nothing more at the next step."""
    m, n, d = 4096, 8000, 40
    a, W, b, X, y = problem(m, n, d, seed=7)
    out = (np.empty(m), np.empty((m, d)), np.empty(m))
    risk_and_gradient(a, W, b, X, y, 1.0 / m, 0, 0, out=out)  # compile outside the trace
    lanes.release_workspace()
    tracemalloc.start()
    try:
        risk_and_gradient(a, W, b, X, y, 1.0 / m, 0, 0, out=out)
        first = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        risk_and_gradient(a, W, b, X, y, 1.0 / m, 0, 0, out=out)
        again = tracemalloc.get_traced_memory()[1] - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert first < particles.gemm_buffer_bytes(m, n, d, 8) + 8 * 4 * n + 2**16 < m * n * 8 / 4
    assert again < 8 * 4 * n + 2**16  # f, l' and the like: the buffers kept


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread only")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m, n, d", [(1021, 3001, 100), (517, 5003, 200)])
def test_same_bits_at_any_numba_and_blas_thread_count(m, n, d, dtype):
    """Odd sizes: the same bits at 1 and 2 Numba threads (the lanes' threads) and 1 and 2 BLAS
    threads. The lanes are fixed by the sizes and summed in their order, and their products run
    on one BLAS thread whatever its count outside (OpenBLAS's GEMM on 2 threads gave other bits
    at some shapes, docs/design.md §6.4); in float64 the 3001 points make 6 blocks of 512 in
    6 lanes, the 5003 at m = 517 5 blocks of 1008 in 5 lanes."""
    a, W, b, X, y = problem(m, n, d, "squared", True, dtype, seed=11)
    assert particles.gemm_layout(m, n, d, np.dtype(dtype).itemsize)[1] > 2
    results = {}
    before = numba.get_num_threads()
    try:
        for numba_threads in (1, 2):
            for blas_threads in (1, 2):
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


def test_the_blas_count_outside_is_kept():
    """The lanes hold the BLAS on one thread during the step only."""
    a, W, b, X, y = problem(64, 300, 40, seed=3)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        risk_and_gradient(a, W, b, X, y, 0.01, 1, 0)
        counts = {lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}
    assert counts == {2}


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


@pytest.mark.skipif(not hasattr(os, "fork") or numba.config.NUMBA_NUM_THREADS < 2, reason="no fork, or one thread")
def test_a_forked_child_runs_its_own_lanes():
    """The lanes' threads of the parent do not exist in a forked child: it starts its own and
    gets the parent's bits (a stale pool would hang it)."""
    import multiprocessing

    a, W, b, X, y = problem(200, 3000, 40, seed=5)
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        want = risk_and_gradient(a, W, b, X, y, 0.01, 1, 0)[2]
        with multiprocessing.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(risk_and_gradient, (a, W, b, X, y, 0.01, 1, 0)).get(timeout=120)[2]
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_the_backward_rows_do_not_depend_on_where_z_lies(act):
    """Z's rows starting 0 .. 59 values after l' in one buffer: the same sums and the same G,
    and they agree with NumPy. (The loss's mean, a sum in a loop that also stored, depended on
    such distances: docs/design.md §6.3; this loop, whose stores go to the row it reads, was
    not seen to.)"""
    rng = np.random.default_rng(2)
    m, n = 3, 10
    Z0, lp0 = rng.standard_normal((m, n)), rng.standard_normal(n)
    a, b = rng.standard_normal(m), rng.standard_normal(m)
    code = ACTIVATIONS[act]
    results = set()
    for gap in range(60):
        buffer = np.empty(n + gap + m * n)
        lp, Z = buffer[:n], buffer[n + gap:].reshape(m, n)
        lp[...], Z[...] = lp0, Z0
        ga, gb = np.empty(m), np.empty(m)
        particles._gemm_backward_rows(Z, a, b, lp, code, ga, gb)
        results.add((ga.tobytes(), gb.tobytes(), Z.tobytes()))
    assert len(results) == 1
    ga, gb, G = (np.frombuffer(r).reshape(shape) for r, shape in zip(results.pop(), [(m,), (m,), (m, n)]))
    np.testing.assert_allclose(ga, ref.sigma(act, Z0 + b[:, None]) @ lp0, rtol=1e-13)
    want_G = a[:, None] * lp0 * ref.dsigma(act, Z0 + b[:, None])
    np.testing.assert_allclose(G, want_G, rtol=1e-13)
    np.testing.assert_allclose(gb, want_G.sum(axis=1), rtol=1e-13)
