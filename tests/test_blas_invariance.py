"""The run kinds that declare their steps' BLAS work thread-invariant (``Run.blas_invariant``),
and the sums of the measures: the same bits at 1 and 2 BLAS threads (docs/design.md §6.4).

OpenBLAS's gemv (``A @ x``) gave other last bits on 2 threads than on 1 at shapes such as
(1001, 500), with its SkylakeX kernels and with its Haswell ones (``OPENBLAS_CORETYPE=Haswell``),
so each test here first checks that its size reaches such a threaded path (where the BLAS is
OpenBLAS on at least 2 threads). Run it also under the second target, in a fresh process:
``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= OPENBLAS_CORETYPE=Haswell python -m pytest ...``.
"""

import textwrap

import numpy as np
import pytest
import threadpoolctl
from test_threads import _blas_counts, _datasets, _Seen

import meanfield as mf
from meanfield.engine import runs, threads
from solvers.ntk import FunctionSpaceField, matvec


def _threaded_openblas() -> bool:
    """Whether every BLAS loaded is OpenBLAS and may use 2 threads (where the checks of
    sensitivity apply)."""
    import scipy.linalg  # noqa: F401  (SciPy's OpenBLAS loaded too)

    info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    return bool(info) and all(i["internal_api"] == "openblas" and i["num_threads"] >= 2 for i in info)


def _kernel(rng, N, n):
    """A symmetric positive semi-definite kernel on N points, (N, n) columns: the training part."""
    F = rng.standard_normal((N, 40))
    return F @ F[:n].T / 40


@pytest.mark.parametrize("shape", [(0, 4), (1, 1), (3, 5), (5, 3), (67, 129), (130, 0)])
def test_matvec_is_the_matrix_times_the_vector(shape):
    """out = A x at sizes around its groups of four rows and jobs of 64, against NumPy's product
    (the empty sums 0)."""
    rng = np.random.default_rng(sum(shape))
    A, x = rng.standard_normal(shape), rng.standard_normal(shape[1])
    out = np.full(shape[0], np.nan)
    matvec(A, x, out)
    np.testing.assert_allclose(out, A @ x, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_the_kernel_flow_field_has_the_same_bits_at_any_blas_and_numba_count(ridge):
    """df/dt = -(1/n) K l'(f, y) - ridge (f - f0) of FunctionSpaceField at BLAS 1 and 2
    threads and Numba 1 and 2: one set of bits, equal to plain NumPy's to rounding; the
    BLAS's own product of the same matrix differs between its counts at this shape."""
    numba = pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    N, n = 1001, 500
    K = _kernel(rng, N, n)
    y = np.sign(rng.standard_normal(n))
    f0 = 0.1 * rng.standard_normal(N)
    f = f0 + 0.5 * rng.standard_normal(N)
    field = FunctionSpaceField(K[:n], y, "logistic", K_test_train=K[n:], ridge=ridge, f0=f0)
    seen = set()
    for blas in (1, 2):
        for count in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(count)
            with threadpoolctl.threadpool_limits(blas, user_api="blas"):
                velocity, loss = field(0.0, f)
            seen.add(velocity.tobytes() + np.float64(loss).tobytes())
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert len(seen) == 1
    margin = y * f[:n]
    lp = -y / (1.0 + np.exp(margin))  # d/df log(1 + exp(-y f))
    reference = -(K @ lp) / n - ridge * (f - f0)
    np.testing.assert_allclose(velocity, reference, rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(np.mean(np.logaddexp(0.0, -margin)), rel=1e-13)
    if _threaded_openblas():
        products = set()
        for blas in (1, 2):
            with threadpoolctl.threadpool_limits(blas, user_api="blas"):
                products.add((field._K @ lp).tobytes())
        assert len(products) == 2  # the size reaches the BLAS's threaded gemv, whose bits differ


KERNEL_FLOWS = textwrap.dedent("""\
    name: kernel_flows
    seed: 3
    data: {task: gaussian_mixture, dim: 8, delta: 0.5, n_train: 500, n_test: 501}
    model: {width: 48, activation: relu, bias: true}
    loss: logistic
    runs:
      empirical: {solver: ntk, kernel: empirical, parameterization: ntk}
      analytic: {solver: ntk, kernel: analytic, parameterization: ntk}
    train: {t_end: 2.0, integrator: {method: rk4, dt: 0.25}}
    record: {every: 1.0, dtype: DTYPE}
    """)
"""Two integrated kernel flows (logistic loss) whose K([X; X*], X) is 1001 x 500: a shape at
which OpenBLAS's gemv differs between 1 and 2 threads."""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_integrated_kernel_flow_writes_the_same_file_at_one_and_two_blas_threads(dtype, tmp_path):
    """KernelFlowIntegrated declares its steps thread-invariant: ``threads=2`` runs its steps
    with the BLAS on 2 threads (and Numba on 2), ``threads=1`` on one; every dataset the same,
    stored in float64 or float32 (``record.dtype``; the flow computes in float64)."""
    assert runs.KernelFlowIntegrated.blas_invariant
    scenario = tmp_path / "s.yaml"
    scenario.write_text(KERNEL_FLOWS.replace("DTYPE", dtype))
    loaded = mf.load_scenario(scenario)
    assert {runs.run_class(loaded, spec) for spec in loaded.runs.values()} == {runs.KernelFlowIntegrated}
    files = {}
    for count in (1, 2):
        seen = _Seen()
        files[count] = tmp_path / f"{count}.h5"
        mf.simulate(mf.load_scenario(scenario), files[count], threads=count, progress=seen).close()
        assert seen.counts == {count}  # the steps' BLAS at the run's count
    first = _datasets(files[1])
    assert len(first) > 10 and _datasets(files[2]) == first


def test_the_run_blas_count_is_back_after_an_invariant_run(tmp_path):
    """The process's BLAS count is back once a declared kind's run ends."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(KERNEL_FLOWS.replace("DTYPE", "float64").replace("t_end: 2.0", "t_end: 0.5"))
    before = _blas_counts()
    mf.simulate(mf.load_scenario(scenario), None, threads=2).close()
    assert _blas_counts() == before
    assert threads.RUN_BLAS_THREADS == 1
