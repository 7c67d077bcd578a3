"""Which BLAS and LAPACK operations give other bits on 2 threads than on 1, on this machine.

    python scripts/blas_threads.py

Prints one line per operation and shape: 'same' or 'DIFFERS', for NumPy's BLAS and SciPy's
(two libraries in pip's wheels), the counts set with threadpoolctl. The facts it measured are
in docs/design.md §6.4: why a run holds the BLAS on one thread (meanfield/engine/threads.py,
``one_blas_thread``) unless a run kind declares its steps' BLAS work thread-invariant.
"""

import numpy as np
import scipy.linalg
from scipy.linalg import blas
from threadpoolctl import ThreadpoolController, threadpool_info


def operations(rng):
    """(name, function) pairs, each a fresh product of fixed random inputs."""
    def matrices(*shapes):
        return [rng.standard_normal(shape) for shape in shapes]

    x = rng.standard_normal(100_000)
    yield "dot, 10^5 values (np.linalg.norm's)", lambda: x @ x
    for size in (10_000, 10_001):  # OpenBLAS threads a dot above 10^4 values
        for trial in range(4):
            y = rng.standard_normal(size)
            yield f"dot, {size} values, vector {trial}", lambda y=y: y @ y
    for m, k, n in [(300, 16, 307), (1023, 256, 1025), (1000, 300, 1000), (64, 1000, 4000), (1024, 100, 8192)]:
        A, B = matrices((m, k), (k, n))
        yield f"GEMM ({m} x {k}) @ ({k} x {n}), NumPy", lambda A=A, B=B: A @ B
        yield f"GEMM ({m} x {k}) @ ({k} x {n}), SciPy dgemm", lambda A=A, B=B: blas.dgemm(1.0, A, B)
    for m, n in [(2000, 256), (1001, 500), (3001, 1500), (4097, 2049), (1000, 700)]:
        A, v, u = matrices((m, n), (n,), (m,))
        yield f"gemv ({m} x {n}) @ v", lambda A=A, v=v: A @ v
        yield f"gemv u @ ({m} x {n})", lambda A=A, u=u: u @ A
    F, = matrices((300, 2560))
    yield "syrk F F^T, F 300 x 2560", lambda: blas.dsyrk(1.0, F)
    S, = matrices((300, 300))
    S = S + S.T
    yield "eigh 300", lambda: scipy.linalg.eigh(S)[0]
    P = S @ S.T + 300 * np.eye(300)
    yield "Cholesky solve 300", lambda: scipy.linalg.cho_solve(scipy.linalg.cho_factor(P), S)


def main():
    controller = ThreadpoolController().select(user_api="blas")
    for info in threadpool_info():
        if info["user_api"] == "blas":
            print(f"{info['internal_api']} {info['version']} {info['architecture']}: {info['filepath']}")
    for name, compute in operations(np.random.default_rng(0)):
        with controller.limit(limits=1):
            one = np.asarray(compute()).tobytes()
        with controller.limit(limits=2):
            two = np.asarray(compute()).tobytes()
        print(f"{'same   ' if one == two else 'DIFFERS'} {name}")


if __name__ == "__main__":
    main()
