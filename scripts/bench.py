"""Benchmark one full-batch gradient step of f = (1/m) sum_i a_i relu(w_i . x), squared loss.

Compares solvers.particles.risk_and_gradient with a vectorised NumPy step and a torch CPU
autograd step (float64 and float32, when torch is importable), on 1 and 2 threads; times the
whole linearized (NTK) solve beside one bare eigendecomposition of the same size; and
measures the start-up of a fresh process with a warm JIT cache.

    python scripts/bench.py [--quick] [--sizes 1024x1024x2,16384x1024x2] [--threads 1,2]
                            [--parts particles,linearized,population,api,threads,curvature]

``--parts particles`` times our step and NumPy's, float64 and float32, in turn in one process
(medians), quiet and beside one busy process (``--load quiet`` for the first table alone);
``--baseline /path/to/checkout`` adds that checkout's step (its ``solvers`` loaded from a copy),
to show that no size got slower.

``--parts threads`` runs the step at 1 and 2 threads quiet and beside one busy process (a
"loaded" machine), then a whole run at 1, 2 and the default thread count (chosen by
measurement during the run), quiet and loaded.

``--parts curvature`` times the curvature measures (docs/design.md §1.9) per snapshot against
one gradient step at the same size: each Jacobian product, the Hessian-vector product, and
ntk_eigenvalue_max and hessian_eigenvalue_max whole (with the number of products Lanczos took).

``--parts snapshots`` (not in the default set) runs a bundled-like scenario (quickstart at
m = 4096, a short t_end) and splits its time into steps and snapshots (measures, W2, writing and
flushing), times W2 per snapshot by the assignment against POT's network simplex at 512 and 16
particles, and compares the plan's time estimate with the real time (docs/design.md §4.8).

FLOP count per step (the GF/s column): 6 m n d + 6 m n (forward w.x, backward w.x recomputed,
and x-weighted sum; plus the element-wise work), the fused kernels' count; the GEMM path
(d >= 32) does 4 m n d, as NumPy. Times are medians of several repeats.
"""

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import textwrap
import time

_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(k in os.environ for k in _BLAS_ENV) and "_BENCH_REEXEC" not in os.environ:
    # These hints make current NumPy's OpenBLAS pick slow kernels: re-run without them.
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_ENV}
    env["_BENCH_REEXEC"] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

# As `import meanfield` does, before NumPy loads OpenBLAS (it reads this once): idle BLAS
# threads spin for about 0.4 ms, not 0.1 s, so timing NumPy's step and ours in turn does not
# leave NumPy's threads spinning on the cores our next step's Numba threads need.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numba  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

import meanfield  # noqa: E402,F401  (first: the OpenBLAS thread timeout it sets, as for the command line)
from solvers.ntk import LinearizedSquared, empirical_ntk, train_test_ntk  # noqa: E402
from solvers.particles import risk_and_gradient  # noqa: E402

try:
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None
try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

DEFAULT_SIZES = [(1024, 1024, 2), (16384, 1024, 2), (4096, 4096, 16), (65536, 512, 10),
                 (1024, 8192, 100)]


def make_problem(m, n, d, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=m)
    W = rng.normal(size=(m, d)) / np.sqrt(d)
    X = rng.normal(size=(n, d))
    y = rng.normal(size=n)
    return a, W, X, y


def numpy_step(a, W, X, y):
    """The same step in plain NumPy, in the dtype of the inputs: two GEMMs and the
    element-wise work between them on m x n arrays."""
    m, n = W.shape[0], X.shape[0]
    Z = W @ X.T
    S = np.maximum(Z, 0)
    f = (a @ S) / m
    r = f - y
    risk = 0.5 * np.mean(r * r)
    c = X.dtype.type(1.0 / (m * n))
    ga = c * (S @ r)
    G = (Z > 0) * (r[None, :] * a[:, None])
    gW = c * (G @ X)
    return risk, ga, gW


def load_baseline(checkout):
    """``solvers.particles`` of another checkout (e.g. main's), imported from a copy of its
    ``solvers`` package under another name (its Numba cache stays in the copy)."""
    import importlib
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="bench-baseline-")
    shutil.copytree(os.path.join(checkout, "solvers"), os.path.join(root, "baseline_solvers"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, root)
    return importlib.import_module("baseline_solvers.particles")


def ours_step(a, W, X, y, out, step=risk_and_gradient):
    m = W.shape[0]
    return step(a, W, None, X, y, 1.0 / m, 0, 0, out=out)


def torch_step(a, W, X, y):
    a.grad = None
    W.grad = None
    f = torch.relu(W @ X.T).T @ a / W.shape[0]
    loss = 0.5 * torch.mean((f - y) ** 2)
    loss.backward()
    return loss, a.grad, W.grad


def timeit(fn, repeats, min_time):
    fn()  # warm-up (and compilation)
    times = []
    t_start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - t_start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def limit_threads(k):
    numba.set_num_threads(k)
    if torch is not None:
        torch.set_num_threads(k)
    if threadpoolctl is not None:
        return threadpoolctl.threadpool_limits(limits=k)
    return None


def blas_description():
    if threadpoolctl is None:
        return "threadpoolctl not installed: BLAS threads NOT limited (1-thread rows use all)"
    info = threadpoolctl.threadpool_info()
    return "; ".join(
        f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} "
        f"threads={i.get('num_threads')} ({os.path.basename(i.get('filepath', ''))})"
        for i in info
    ) or "no BLAS found by threadpoolctl"


def startup_time(m=1024, n=1024, d=2):
    """Seconds from process start to the first finished step, with a warm cache."""
    code = textwrap.dedent(
        f"""
        import time
        t0 = time.perf_counter()
        import numpy as np
        from solvers.particles import risk_and_gradient
        t1 = time.perf_counter()
        rng = np.random.default_rng(0)
        a, W, X, y = (rng.normal(size={m}), rng.normal(size=({m}, {d})),
                      rng.normal(size=({n}, {d})), rng.normal(size={n}))
        risk_and_gradient(a, W, None, X, y, 1.0 / {m}, 0, 0)
        t2 = time.perf_counter()
        print(t1 - t0, t2 - t1)
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    for _ in range(2):  # the first run fills the cache if it is cold
        t_launch = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        total = time.perf_counter() - t_launch
    imports, first = map(float, res.stdout.split())
    return total, imports, first


BLAS_SETTLE_SECONDS = 0.3
"""Pause before each timed call of the linearized benchmark. pip's numpy and scipy bring
separate OpenBLAS builds whose idle threads spin for about 0.1 s after a call; a call into
one while the other's threads still spin runs up to twice as long on 2 cores. The pause
lets every call start with idle threads, as the one solve of a run does."""


def timeit_alternating(fns, repeats, pause=BLAS_SETTLE_SECONDS):
    """Median seconds of each function, timed in turn (after one warm-up call each), so that
    a change in the machine's load falls on all of them alike; ``pause`` seconds before each."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            time.sleep(pause)
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def bench_linearized(n, repeats, m, d=10, n_test=256, n_times=20):
    """The whole squared-loss NTK solve beside one bare eigendecomposition of the n x n kernel.

    The solve: the empirical NTK of m particles between [train; test] and train points
    with f_0 on both (from the same features), the factored eigendecomposition, and train
    and test predictions at ``n_times`` times. Returns the median seconds of (the solve,
    numpy.linalg.eigh, scipy.linalg.eigh (the LAPACK the solve runs on), the kernel with
    f_0 alone).
    """
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n + n_test, d))
    y = rng.standard_normal(n)
    a, W = rng.standard_normal(m), rng.standard_normal((m, d)) / np.sqrt(d)
    numbers = dict(s=m**-0.5, eta_a=1.0, eta_w=1.0, act="relu")
    times = np.linspace(0.0, 10.0, n_times)

    def kernel():
        return train_test_ntk(a, W, None, X[:n], X[n:], return_f0=True, **numbers)

    def solve():
        K_train, K_test, f0_train, f0_test = kernel()
        LinearizedSquared(K_train, y, f0_train, K_test, f0_test).predict(times)

    K_train = empirical_ntk(a, W, None, X[:n], X[:n], **numbers)
    return timeit_alternating([solve, lambda: np.linalg.eigh(K_train),
                               lambda: scipy.linalg.eigh(K_train, check_finite=False), kernel],
                              repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--sizes", help="comma-separated MxNxD list")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--load", default="quiet,loaded",
                        help="the particle step quiet, beside one busy process, or both (comma-separated)")
    parser.add_argument("--baseline", help="another checkout whose particle step is timed beside ours")
    parser.add_argument("--parts", default="particles,linearized,population,api,threads,curvature",
                        help="which benchmarks: particles, linearized, population, api, threads, curvature "
                             "(comma-separated)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    sizes = DEFAULT_SIZES
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    threads = [int(k) for k in args.threads.split(",")]
    repeats, min_time = (3, 0.0) if args.quick else (7, 0.5)

    print(f"numpy {np.__version__}, numba {numba.__version__} (threading layer: "
          f"{numba.config.THREADING_LAYER}), torch "
          f"{torch.__version__ if torch is not None else 'not installed'}")
    print(f"BLAS: {blas_description()}; OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')}")
    removed = [k for k in _BLAS_ENV if k in os.environ]
    print(f"OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE: "
          f"{'re-executed without them' if os.environ.get('_BENCH_REEXEC') else 'not set'}"
          + (f" (still set: {removed})" if removed else ""))
    print()
    if "particles" in parts:
        baseline = load_baseline(args.baseline) if args.baseline else None
        bench_particles(sizes, threads, 5 if args.quick else 9, tuple(args.load.split(",")), baseline)
    if "linearized" in parts:
        print(f"\nlinearized NTK solve (the kernel of m particles, d = 10, between n + 256 test points and "
              f"the n training points; one eigh; predictions at 20 times), {threads[-1]} threads:")
        limit_threads(threads[-1])
        for n in (1000, 4000):
            for m in (256, 1024):
                repeats = 3 if args.quick else (7 if n <= 1000 else 5)
                solve, eigh, eigh_scipy, kernel = bench_linearized(n, repeats, m)
                print(f"  n = {n}, m = {m}: solve {solve:.3f} s (kernel {kernel:.3f} s), "
                      f"bare eigh {eigh:.3f} s (scipy's {eigh_scipy:.3f} s), "
                      f"ratio {solve / eigh:.2f} (to scipy's {solve / eigh_scipy:.2f})"
                      + ("" if solve <= 1.5 * eigh else "  (over the 1.5 target)"))
    if "population" in parts:
        print("\nrelu N-body population gradient (scripts/bench_population.py):")
        sys.stdout.flush()
        import bench_population

        bench_population.main(["--repeats", "3" if args.quick else "5"])
    if "particles" in parts:
        total, imports, first = startup_time()
        print(f"\nfresh process, warm cache: {total:.2f} s from launch to first finished step "
              f"(imports {imports:.2f} s, first step {first:.3f} s beyond imports)")
    if "api" in parts:
        bench_api(3 if args.quick else 5)
    if "curvature" in parts:
        print("\ncurvature measures per snapshot against one gradient step (relu, s = 1/m, eta = 1, "
              f"squared loss), {max(1, threads[-1])} thread(s), medians:")
        bench_curvature(sizes, threads[-1], 3 if args.quick else 5)
    if "threads" in parts:
        bench_threads(sizes, repeats, min_time)
    if "snapshots" in parts:
        bench_snapshots()


def bench_api(repeats, scenario="quickstart"):
    """The bundled quickstart through the library in a warm process (in memory and into a
    file) beside the command line, whose start-up (launch, imports, validation: a --dry-run)
    is subtracted: the library must cost no more than the CLI's work."""
    import tempfile

    import meanfield as mf

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "q.h5")
        command = [sys.executable, "-m", "meanfield.cli", "-q", "simulate", scenario, "-o", out]
        env = dict(os.environ, PYTHONPATH=REPO)

        def cli(*extra):
            t0 = time.perf_counter()
            subprocess.run([*command, *extra], env=env, check=True)
            return time.perf_counter() - t0

        def library(output):
            t0 = time.perf_counter()
            mf.simulate(scenario, output, overwrite=True).close()
            return time.perf_counter() - t0

        library(None)  # warm: kernels loaded, imports done
        memory = statistics.median(library(None) for _ in range(repeats))
        to_file = statistics.median(library(out) for _ in range(repeats))
        start = statistics.median(cli("--dry-run") for _ in range(repeats))
        whole = statistics.median(cli("--overwrite") for _ in range(repeats))
    work = whole - start
    print(f"\n{scenario} through the API in a warm process, {numba.get_num_threads()} threads (medians of {repeats}):"
          f"\n  mf.simulate in memory {memory:.2f} s, into a file {to_file:.2f} s;"
          f"\n  meanfield simulate {whole:.2f} s, of it start-up {start:.2f} s (a --dry-run): work {work:.2f} s"
          f"\n  ratio in memory / CLI work {memory / work:.2f}, file / CLI work {to_file / work:.2f}")


class BusyNeighbour:
    """One CPU-bound process beside the benchmark (a loaded laptop or a shared node), while
    the context is open."""

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # let the scheduler see it
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def bench_threads(sizes, repeats, min_time, scenario_overrides=None):
    """Two threads against one, quiet and beside a busy process: per kernel size (the particle
    step), and for a whole run, where the default chooses the count by measurement."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\nthreads, quiet and beside one busy process ({cores} cores; ratios of medians; "
          "goal: loaded, the default no more than 1.10 x one thread)")
    print(f"{'m':>6} {'n':>5} {'d':>4} | {'2 thr / 1 thr quiet':>19} | {'2 thr / 1 thr loaded':>20}")
    for m, n, d in sizes:
        a, W, X, y = make_problem(m, n, d)
        out = (np.empty(m), np.empty((m, d)), None)
        ratios = []
        for loaded in (False, True):
            with BusyNeighbour() if loaded else contextlib.nullcontext():
                times = {}
                for k in (1, 2):
                    limiter = limit_threads(k)
                    times[k] = timeit(lambda: ours_step(a, W, X, y, out), repeats, min_time)
                    if limiter is not None:
                        limiter.restore_original_limits()
                ratios.append(times[2] / times[1])
        print(f"{m:>6} {n:>5} {d:>4} | {ratios[0]:19.2f} | {ratios[1]:20.2f}")
        sys.stdout.flush()
    limit_threads(numba.config.NUMBA_NUM_THREADS)
    bench_run_threads(scenario_overrides)


RUN_FOR_THREADS = {"name": "threads", "seed": 0,
                   "data": {"task": "teacher_student", "dim": 5, "n_train": 512, "n_test": 256},
                   "model": {"width": 1024, "activation": "relu"},
                   "runs": {"rich": "mean_field"},
                   "train": {"t_end": 20.0, "integrator": {"method": "rk4", "dt": 0.05}},
                   "record": {"every": 1.0}}
"""The loaded-machine case of docs/design.md §6.4: m = 1024, d = 5, n = 512, rk4, 400 steps."""


def bench_run_threads(overrides=None, repeats=3):
    """A whole run (simulate in memory) at 1 thread, 2 threads and the default (chosen by
    measurement), quiet and loaded: each time over the faster fixed count's."""
    import meanfield as mf

    scenario = mf.load_scenario({**RUN_FOR_THREADS, **(overrides or {})})
    mf.simulate(scenario, threads=1).close()  # warm: kernels loaded

    def run(threads):
        t0 = time.perf_counter()
        mf.simulate(scenario, threads=threads).close()
        return time.perf_counter() - t0

    print(f"\na whole run (m = {scenario.model.width}, d = {scenario.data.dim}, n = {scenario.data.n_train}, "
          f"{scenario.train.integrator.method}), medians of {repeats}, seconds:")
    print(f"{'':>7} | {'1 thread':>8} {'2 threads':>9} {'default':>8} | {'2 / 1':>6} {'default / best':>14}")
    for loaded in (False, True):
        with BusyNeighbour() if loaded else contextlib.nullcontext():
            times = {k: statistics.median(run(k) for _ in range(repeats)) for k in (1, 2, None)}
        best = min(times[1], times[2])
        print(f"{'loaded' if loaded else 'quiet':>7} | {times[1]:8.2f} {times[2]:9.2f} {times[None]:8.2f} | "
              f"{times[2] / times[1]:6.2f} {times[None] / best:14.2f}")
        sys.stdout.flush()


class Counted:
    """A LinearOperator's products, counted."""

    def __init__(self, op):
        self.op, self.count, self.shape, self.dtype = op, 0, op.shape, op.dtype

    def matvec(self, v):
        self.count += 1
        return self.op.matvec(v)


def bench_curvature(sizes, threads, repeats):
    """Per size: one gradient step (the fused kernel), J u, J^T v, one Hessian-vector product,
    and each measure whole, in ms and as multiples of the step; with the products Lanczos took."""
    from scipy.sparse.linalg import LinearOperator

    from meanfield.model.curvature import hessian_eigenvalue_max, ntk_eigenvalue_max
    from solvers import curvature as cv

    head = (f"{'m':>6} {'n':>5} {'d':>4} | {'step ms':>8} | {'Ju':>5} {'J^Tv':>5} {'Hv':>5} | "
            f"{'ntk ms':>9} {'x step':>7} {'prods':>5} | {'hess ms':>9} {'x step':>7} {'prods':>5}")
    print(head)
    print("-" * len(head))
    numba.set_num_threads(threads)
    for m, n, d in sizes:
        a, W, X, y = make_problem(m, n, d)
        out = (np.empty(m), np.empty((m, d)), None)
        step = timeit(lambda: ours_step(a, W, X, y, out), repeats, 0.2)
        net = cv.TwoLayerNet(a, W, None, X, 1.0 / m, 0)
        rates = net.rates(1.0, 1.0)
        u, v = np.random.default_rng(1).normal(size=net.size), np.random.default_rng(2).normal(size=n)
        first, second = cv.loss_derivatives(0, net.f(), y)
        hess = cv.hessian_operator(net, rates, 1.0, first, second)
        products = [timeit(fn, repeats, 0.2) / step for fn in
                    (lambda: net.jvp(u), lambda: net.vjp(v), lambda: hess.matvec(u))]
        v0 = np.random.default_rng(3).normal(size=max(n, net.size))
        row = []
        for measure, size in ((lambda: ntk_eigenvalue_max(net, rates, 1.0, v0), n),
                              (lambda: hessian_eigenvalue_max(net, y, 0, rates, 1.0, v0), net.size)):
            counted = {}
            original = cv.top_eigenvalues

            def counting(op, k, start, dense_size=cv.DENSE_SIZE, original=original):
                wrapped = Counted(op)
                counted["n"] = wrapped
                return original(LinearOperator(op.shape, matvec=wrapped.matvec, dtype=op.dtype), k, start,
                                dense_size)
            cv.top_eigenvalues = counting
            try:
                seconds = timeit(measure, max(1, repeats // 2), 0.0)
            finally:
                cv.top_eigenvalues = original
            row.append((seconds, counted["n"].count))  # the last call's (the dense path: one per column)
        (t_ntk, p_ntk), (t_hess, p_hess) = row
        print(f"{m:>6} {n:>5} {d:>4} | {1e3 * step:8.2f} | {products[0]:5.1f} {products[1]:5.1f} {products[2]:5.1f} | "
              f"{1e3 * t_ntk:9.1f} {t_ntk / step:7.0f} {p_ntk:>5} | {1e3 * t_hess:9.1f} {t_hess / step:7.0f} "
              f"{p_hess:>5}")
        sys.stdout.flush()


def bench_size(m, n, d, threads, repeats, baseline=None):
    """Median seconds per thread count of our step, NumPy's (and torch's, the baseline's) in
    float64 and float32, timed in turn in one process; and our float64 step's largest
    deviation from NumPy's (relative to the largest gradient)."""
    rows = {}
    problems = {}
    for dtype in (np.float64, np.float32):
        a, W, X, y = (v.astype(dtype) for v in make_problem(m, n, d))
        problems[dtype] = (a, W, X, y, (np.empty(m, dtype), np.empty((m, d), dtype), None))
    a, W, X, y, out = problems[np.float64]
    _, ga_np, gW_np = numpy_step(a, W, X, y)
    _, ga, gW, _ = ours_step(a, W, X, y, out)
    scale = max(np.abs(gW_np).max(), np.abs(ga_np).max())
    err = max(np.abs(gW - gW_np).max(), np.abs(ga - ga_np).max()) / scale
    for k in threads:
        limiter = limit_threads(k)
        try:
            fns = {}
            for dtype, tag in ((np.float64, "64"), (np.float32, "32")):
                a, W, X, y, out = problems[dtype]
                fns["ours" + tag] = lambda a=a, W=W, X=X, y=y, out=out: ours_step(a, W, X, y, out)
                fns["numpy" + tag] = lambda a=a, W=W, X=X, y=y: numpy_step(a, W, X, y)
                if baseline is not None:
                    fns["base" + tag] = lambda a=a, W=W, X=X, y=y, out=out: ours_step(
                        a, W, X, y, out, baseline.risk_and_gradient)
                if torch is not None:
                    t = [torch.tensor(v) for v in (a, W, X, y)]
                    t[0].requires_grad_(True)
                    t[1].requires_grad_(True)
                    fns["torch" + tag] = lambda t=t: torch_step(*t)
            rows[k] = dict(zip(fns, timeit_alternating(list(fns.values()), repeats, pause=0.0)))
        finally:
            if limiter is not None:
                limiter.restore_original_limits()
    return rows, err


def bench_particles(sizes, threads, repeats, loads=("quiet", "loaded"), baseline=None):
    """The particle step table: ours beside NumPy (float64 and float32), torch where installed
    and a baseline checkout's step where given; per size and thread count, quiet and beside
    one busy process."""
    flops = lambda m, n, d: 6.0 * m * n * d + 6.0 * m * n  # noqa: E731
    head = (f"{'m':>6} {'n':>5} {'d':>4} {'thr':>3} | {'ours64':>7} {'np64':>7} {'np/us':>5} | "
            f"{'ours32':>7} {'np32':>7} {'np/us':>5} | {'t64/us':>6} {'t32/us':>6} | "
            f"{'base64':>7} {'base32':>7} {'b/us64':>6} {'b/us32':>6} | {'GF/s64':>6} | rel.err")
    for load in loads:
        print(f"\nparticle step, {load} ({'beside one busy process, ' if load == 'loaded' else ''}ms, medians of "
              f"{repeats} taken in turn; np/us = NumPy's time over ours, same dtype; b/us: the baseline's over ours)")
        print(head)
        print("-" * len(head))
        with BusyNeighbour() if load == "loaded" else contextlib.nullcontext():
            for m, n, d in sizes:
                rows, err = bench_size(m, n, d, threads, repeats, baseline)
                for k in threads:
                    r = {key: 1e3 * v for key, v in rows[k].items()}
                    nan = float("nan")
                    print(f"{m:>6} {n:>5} {d:>4} {k:>3} | {r['ours64']:7.2f} {r['numpy64']:7.2f} "
                          f"{r['numpy64'] / r['ours64']:5.2f} | {r['ours32']:7.2f} {r['numpy32']:7.2f} "
                          f"{r['numpy32'] / r['ours32']:5.2f} | {r.get('torch64', nan) / r['ours64']:6.2f} "
                          f"{r.get('torch32', nan) / r['ours32']:6.2f} | {r.get('base64', nan):7.2f} "
                          f"{r.get('base32', nan):7.2f} {r.get('base64', nan) / r['ours64']:6.2f} "
                          f"{r.get('base32', nan) / r['ours32']:6.2f} | {flops(m, n, d) / r['ours64'] / 1e6:6.1f} | "
                          f"{err:.1e}" + ("" if err <= 1e-12 else "  DISAGREES"))
                    sys.stdout.flush()


def bench_snapshots(width=4096, t_end=5.0, scenario="quickstart"):
    """The share of a run spent in snapshots, and W2's cost per snapshot (``--parts snapshots``):
    the scenario at ``width`` (every 1 up to ``t_end``) in a file on disk, its snapshots' parts
    timed by wrapping the engine's calls; W2 of the last snapshot's clouds by the assignment
    (meanfield's) and by POT's emd2 (before), at 512 and 16 particles; the time estimate."""
    import collections
    import tempfile

    import ot

    import meanfield as mf
    from meanfield.engine import driver
    from meanfield.engine.threads import for_a_run
    from meanfield.model import diagnostics as dg
    from meanfield.storage import writer as file_writer

    spent, calls, clouds = collections.defaultdict(float), collections.Counter(), {}

    def timed(owner, name, key):
        original = getattr(owner, name)

        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start
                calls[key] += 1
        setattr(owner, name, call)
        return original

    w2_original = dg.wasserstein2

    def w2(cloud0, cloud1):
        clouds.setdefault(len(cloud0), []).append((cloud0, cloud1))
        start = time.perf_counter()
        try:
            return w2_original(cloud0, cloud1)
        finally:
            spent["w2"] += time.perf_counter() - start

    def pot(cloud0, cloud1):
        weights = np.full(len(cloud0), 1.0 / len(cloud0))
        return np.sqrt(ot.emd2(weights, weights, ot.dist(cloud0, cloud1), numItermax=10_000_000))

    print(f"\nsnapshots: {scenario} at m = {width}, t_end = {t_end:g}, a snapshot every 1, a file on disk:")
    for w2_particles in (512, 16):
        spec = mf.load_scenario(scenario, [f"model.width={width}", f"train.t_end={t_end}", "record.every=1",
                                           f"record.w2_particles={w2_particles}"])
        estimate = mf.plan(spec).estimate_time()
        spent.clear()
        calls.clear()
        dg.wasserstein2 = w2
        originals = [(driver.Recorder, "snapshot", timed(driver.Recorder, "snapshot", "snapshot")),
                     (driver.Recorder, "measures", timed(driver.Recorder, "measures", "measures")),
                     (driver.Recorder, "checkpoint", timed(driver.Recorder, "checkpoint", "checkpoint")),
                     (file_writer.RunWriter, "append", timed(file_writer.RunWriter, "append", "append")),
                     (file_writer.TrajectoryWriter, "flush", timed(file_writer.TrajectoryWriter, "flush", "flush"))]
        try:
            with tempfile.TemporaryDirectory() as directory:
                start = time.perf_counter()
                mf.simulate(spec, os.path.join(directory, "run.h5")).close()
                real = time.perf_counter() - start
        finally:
            dg.wasserstein2 = w2_original
            for owner, name, original in originals:
                setattr(owner, name, original)
        snapshots = spent["snapshot"] + spent["checkpoint"]
        n = max(calls["snapshot"], 1)
        print(f"  w2_particles {w2_particles}: {real:.2f} s, {snapshots:.2f} s ({snapshots / real:.0%}) in "
              f"{calls['snapshot']} snapshots: per snapshot measures {1e3 * spent['measures'] / n:.1f} ms "
              f"(W2 {1e3 * spent['w2'] / n:.1f} ms), "
              f"writing {1e3 * (spent['append'] + spent['checkpoint']) / n:.1f} ms (of which flushes "
              f"{1e3 * spent['flush'] / n:.1f} ms); estimate {estimate.seconds:.2f} s "
              f"({estimate.seconds / real:.2f} x the real time, {estimate.snapshot_share:.0%} in snapshots)")
        for k, pairs in sorted(clouds.items()):
            with for_a_run(None):  # the BLAS as a run holds it (one thread), not as the process left it
                ours = [timeit(lambda: dg.wasserstein2(*pair), 3, 0.0) for pair in pairs]
                theirs = [timeit(lambda: pot(*pair), 3, 0.0) for pair in pairs]
            same = sum(dg.wasserstein2(*pair) == pot(*pair) for pair in pairs)
            print(f"    W2 of {k} particles over the {len(pairs)} snapshots' clouds (median, most): assignment "
                  f"{1e3 * np.median(ours):.2f}, {1e3 * max(ours):.2f} ms; POT emd2 {1e3 * np.median(theirs):.2f}, "
                  f"{1e3 * max(theirs):.2f} ms; same value in {same} of {len(pairs)}")
        clouds.clear()


if __name__ == "__main__":
    main()
