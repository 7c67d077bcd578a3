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
from meanfield.model import diagnostics as dg
from solvers.ntk import FunctionSpaceField


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


def _at_blas_counts(function):
    """``function()`` at BLAS 1 and 2 threads: the set of its results' bits."""
    seen = set()
    for blas in (1, 2):
        with threadpoolctl.threadpool_limits(blas, user_api="blas"):
            seen.add(np.asarray(function(), np.float64).tobytes())
    return seen


def test_the_measures_sums_over_long_vectors_have_the_same_bits_at_one_and_two_blas_threads():
    """Every measure that sums more than 10^4 values (m = 12 001 particles in d = 3, a probe
    kernel of 151 x 151 values, V^T f over 1001 samples): one set of bits at BLAS 1 and 2
    threads, equal to plain sums in long double to rounding. The BLAS's own
    ``np.linalg.norm``, dot and gemv on the same arrays differ between its counts."""
    rng = np.random.default_rng(1)
    m, d, P, n = 12_001, 3, 151, 1001
    a0, W0, b0 = rng.standard_normal(m), rng.standard_normal((m, d)), rng.standard_normal(m)
    a, W, b = a0 + 0.1 * rng.standard_normal(m), W0 + 0.1 * rng.standard_normal((m, d)), b0
    F0, Ft = rng.standard_normal((P, 40)), rng.standard_normal((P, 40))
    K0, Kt = F0 @ F0.T, Ft @ Ft.T
    y_probe = rng.standard_normal(P)
    teacher_W = rng.standard_normal((2, d))
    lam, V = np.linalg.eigh(_kernel(rng, n, n) + 1e-3 * np.eye(n))
    f = rng.standard_normal(n)
    measures = {
        "displacement_w": (lambda: dg.relative_change(W, W0),
                           lambda: _long_norm(W - W0) / _long_norm(W0)),
        "displacement_wb": (lambda: dg.displacement_wb(W, b, W0, b0),
                            lambda: _long_norm(W - W0) / np.sqrt(_long_sum(W0 ** 2) + _long_sum(b0 ** 2))),
        "displacement_a": (lambda: dg.relative_change(a, a0), lambda: _long_norm(a - a0) / _long_norm(a0)),
        "normalized_margin (output layer)": (lambda: dg.particle_norm(a, W, None, 0.5, 1, output_only=True),
                                             lambda: 0.5 * np.sqrt(m) * _long_norm(a)),
        "kernel_distance": (lambda: dg.kernel_distance(K0, Kt),
                            lambda: 1 - _long_sum(K0 * Kt) / (_long_norm(K0) * _long_norm(Kt))),
        "kernel_alignment": (lambda: dg.kernel_target_alignment(Kt, y_probe),
                             lambda: _long_sum(np.outer(y_probe, y_probe) * Kt) / (_long_norm(Kt) * _long_sum(y_probe ** 2))),
        "teacher_alignment": (lambda: dg.teacher_alignment(a, W, teacher_W), None),
        "normalized_margin (kernel flow)": (lambda: dg.kernel_norm(f, lam, V),
                                            lambda: np.sqrt(_long_sum((V.T @ f) ** 2 / lam))),
    }
    for name, (measure, reference) in measures.items():
        bits = _at_blas_counts(measure)
        assert len(bits) == 1, name
        if reference is not None:
            assert np.frombuffer(bits.pop())[0] == pytest.approx(float(reference()), rel=1e-12), name
    cos = np.abs(W @ teacher_W.T) / np.outer(np.linalg.norm(W, axis=1), np.linalg.norm(teacher_W, axis=1))
    mass = np.abs(a) * np.linalg.norm(W, axis=1)
    assert dg.teacher_alignment(a, W, teacher_W, signed=False) == pytest.approx(
        float(_long_sum(mass * cos.max(axis=1)) / _long_sum(mass)), rel=1e-12)
    if _threaded_openblas():  # the sizes reach the BLAS's threaded dot and gemv
        assert len(_at_blas_counts(lambda: np.linalg.norm(W - W0))) == 2
        assert len(_at_blas_counts(lambda: V.T @ f)) == 2


def _long_sum(x):
    """The sum of x in long double (64-bit mantissa): a reference more precise than float64 sums."""
    return float(np.sum(np.asarray(x, np.longdouble).ravel(), dtype=np.longdouble))


def _long_norm(x):
    return float(np.sqrt(_long_sum(np.asarray(x, np.float64) ** 2)))
