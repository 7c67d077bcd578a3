"""Pair interactions per second of the relu N-body population gradient (solvers.population).

For m particles in dimension d one gradient evaluation is m^2 student-student pairs (plus
m k with the teacher, not counted). Measured for the Numba kernel beside the row-blocked
NumPy twin (tests/reference_population.py: np.arccos, BLAS for the dot products) on 1 and
2 threads, with the agreement of the two checked. Medians over repeats; the machine is
shared, so compare the ratios of one run rather than figures across runs.

    python scripts/bench_population.py [--d 10] [--sizes 1024 4096 16384] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from solvers.population import population_gradient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference_population import population_gradient_numpy  # noqa: E402  (the NumPy twin lives with the tests)

TARGETS = {1: 300e6, 2: 550e6}
NUMPY_RATIO_TARGET = 8.0


def _median_seconds(fn, repeats, budget, min_total=1.0):
    """Median time of fn over at least ``repeats`` calls (more while under ``min_total``
    seconds in all: short calls are the most exposed to other jobs), at most ``budget`` s."""
    fn()  # warm up (compilation, caches)
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(times) >= 3 and elapsed > budget:
            break
        if len(times) >= repeats and elapsed > min_total:
            break
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--teacher", type=int, default=4, help="teacher particles k")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--numpy-max", type=int, default=4096,
                        help="largest m timed for NumPy (larger ones are extrapolated as m^2)")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per measurement at most")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    max_threads = numba.config.NUMBA_NUM_THREADS
    threads = [t for t in (1, 2) if t <= max_threads]
    rows = []
    for m in args.sizes:
        rng = np.random.default_rng(m)
        a = rng.normal(size=m)
        W = rng.normal(size=(m, args.d)) / np.sqrt(args.d)
        ta = rng.normal(size=args.teacher)
        tW = rng.normal(size=(args.teacher, args.d)) / np.sqrt(args.d)
        kw = dict(s=1.0 / m, act="relu", teacher_act="relu")
        out = (np.empty(m), np.empty((m, args.d)))
        numba_result = population_gradient(a, W, ta, tW, out=out, **kw)
        for nt in threads:
            numba.set_num_threads(nt)
            with threadpool_limits(limits=nt):
                t_nb = _median_seconds(lambda: population_gradient(a, W, ta, tW, out=out, **kw),
                                       args.repeats, args.budget)
                if m <= args.numpy_max:
                    np_result = population_gradient_numpy(a, W, ta, tW, **kw)
                    t_np = _median_seconds(lambda: population_gradient_numpy(a, W, ta, tW, **kw),
                                           max(3, args.repeats // 2), args.budget)
                    err = max(abs(numba_result[0] - np_result[0]) / abs(np_result[0]),
                              float(np.max(np.abs(numba_result[2] - np_result[2]))
                                    / np.max(np.abs(np_result[2]))))
                    np_note = ""
                else:
                    prev = [r for r in rows if r["threads"] == nt and r["np_measured"]]
                    ref_row = prev[-1]
                    t_np = ref_row["t_np"] * (m / ref_row["m"]) ** 2
                    err = float("nan")
                    np_note = " (extrapolated)"
            rows.append(dict(m=m, threads=nt, t_nb=t_nb, t_np=t_np, err=err,
                             np_measured=not np_note, np_note=np_note))
            numba.set_num_threads(max_threads)

    print(f"relu N-body population gradient, d = {args.d}, k = {args.teacher} teacher particles; "
          f"pairs = m^2 per evaluation; medians; load average before/after "
          f"{load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    header = (f"{'m':>7} {'thr':>4} {'numba ms':>10} {'Mpairs/s':>10} {'numpy ms':>10} {'Mpairs/s':>10} "
              f"{'ratio':>7} {'rel. diff':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        p = r["m"] ** 2
        print(f"{r['m']:>7} {r['threads']:>4} {1e3 * r['t_nb']:>10.2f} {p / r['t_nb'] / 1e6:>10.0f} "
              f"{1e3 * r['t_np']:>10.1f} {p / r['t_np'] / 1e6:>10.1f} {r['t_np'] / r['t_nb']:>7.1f} "
              f"{r['err']:>10.1e}{r['np_note']}")
    print()
    for nt in threads:
        sel = [r for r in rows if r["threads"] == nt]
        best = max(r["m"] ** 2 / r["t_nb"] for r in sel)
        ratio = min(r["t_np"] / r["t_nb"] for r in sel if r["np_measured"])
        print(f"{nt} thread(s): best {best / 1e6:.0f} Mpairs/s (target {TARGETS[nt] / 1e6:.0f}: "
              f"{'met' if best >= TARGETS[nt] else 'NOT met'}); smallest measured ratio to NumPy "
              f"{ratio:.1f}x (target {NUMPY_RATIO_TARGET:.0f}x: "
              f"{'met' if ratio >= NUMPY_RATIO_TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
