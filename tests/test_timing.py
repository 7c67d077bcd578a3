"""The time estimate of a plan (docs/design.md §4.8): its step counts against the integrator
loop's own (a fixed step's exactly, an adaptive stepper's within a factor of 2), its arithmetic,
and (slow) the estimate of bundled scenarios against their real time, within a factor of 2."""

import subprocess
import sys

import numpy as np
import pytest

import meanfield as mf
from meanfield.engine import driver
from meanfield.engine.timing import RunTime, TimeEstimate, adaptive_steps, fixed_steps, tries_per_step
from solvers.integrate import LoopState, integrate, log_snapshot_times, make_stepper, snapshot_times

TINY = {
    "name": "timed",
    "data": {"task": "teacher_student", "dim": 3, "n_train": 20, "n_test": 10, "teacher": {"width": 2}},
    "model": {"width": 8, "activation": "relu"},
    "runs": {"rich": "mean_field", "tangent": {"solver": "tangent"}, "ntk": {"solver": "ntk"}},
    "train": {"t_end": 0.7, "integrator": {"method": "euler", "dt": 0.03}},
    "record": {"every": 0.2},
}


def _loop_steps(times, dt, exact_steps) -> int:
    """The steps solvers.integrate.integrate takes through ``times`` from t = 0 (a field of zeros)."""
    outcome = integrate(lambda t, y: (np.zeros_like(y), 1.0), LoopState(0.0, 0, np.zeros(2)), make_stepper("euler", dt=dt),
                        np.asarray(times), exact_steps=exact_steps)
    return outcome.state.step


@pytest.mark.parametrize("exact_steps", [False, True])
@pytest.mark.parametrize("times, dt", [
    (snapshot_times(0.0, 0.7, 0.2), 0.03),      # dt divides no interval; the last interval short
    (snapshot_times(0.0, 1.0, 0.1), 0.1),       # dt equal to the interval: one step each
    (snapshot_times(0.0, 2.0, 0.5), 0.7),       # dt longer than the interval: shortened to it
    (log_snapshot_times(0.01, 100.0, 5), 0.37),  # the log clock's growing intervals
])
def test_fixed_steps_is_the_integrator_loops_count(times, dt, exact_steps):
    assert fixed_steps(times, dt, exact_steps) == _loop_steps(times, dt, exact_steps)


def _logistic_flow(n=24, d=3, seed=0):
    """Gradient flow of the logistic loss of a linear classifier on separable data (plain NumPy):
    dw/dt = -grad L(w), L(w) = mean log(1 + exp(-y x.w)); its steps grow like t late, as the loss
    decays (what the log clock follows)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sign(X @ rng.standard_normal(d))

    def field(t, w):
        margins = y * (X @ w)
        loss = float(np.mean(np.logaddexp(0.0, -margins)))
        weights = np.exp(-np.logaddexp(0.0, margins))  # sigma(-margin)
        return (X * (y * weights)[:, None]).mean(axis=0), loss

    return field, 0.1 * rng.standard_normal(d)


def _least_squares_flow(n=24, d=4, seed=1):
    """Gradient flow of a least-squares fit (plain NumPy): its steps settle at rk45's stability
    limit, a constant (what an even clock follows)."""
    rng = np.random.default_rng(seed)
    X, target = rng.standard_normal((n, d)) * np.array([3.0, 1.0, 0.3, 0.1]), rng.standard_normal(n)

    def field(t, w):
        residual = X @ w - target
        return -X.T @ residual / n, float(0.5 * np.mean(residual ** 2))

    return field, np.zeros(d)


def _unclipped_walk(field, y, stepper, steps):
    """The first ``steps`` accepted steps of ``stepper`` from t = 0, never cut short: the times
    they reach and the tries made by each (what the calibration records)."""
    t, k = 0.0, field(0.0, y)
    h = stepper.initial_step(field, t, y, k)
    reached, tries_at, tries = [], [], 0
    while len(reached) < steps:
        out = stepper.step(field, t, y, h, None, k)
        tries += 1
        if out.accepted:
            y, t, k = out.y, t + h, out.k_end
            reached.append(t)
            tries_at.append(tries)
        h = out.h_next
    return reached, tries_at


@pytest.mark.parametrize("flow, times, share", [
    (_logistic_flow, log_snapshot_times(1.0, 1e12, 4), 0.1),
    (_logistic_flow, log_snapshot_times(1.0, 1e12, 4), 0.3),
    (_least_squares_flow, snapshot_times(0.0, 300.0, 5.0), 0.05),
    (_least_squares_flow, snapshot_times(0.0, 300.0, 5.0), 0.2),
])
def test_an_adaptive_steppers_count_is_within_a_factor_of_2_of_the_loops(flow, times, share):
    """A calibration that reached only the first steps of a run (``share`` of them): its count,
    extrapolated over the snapshot times, against the steps solvers.integrate.integrate takes
    through them (and its tries per step against the loop's)."""
    field, y0 = flow()
    stepper = make_stepper("rk45", rtol=1e-4, atol=1e-9)
    outcome = integrate(field, LoopState(0.0, 0, y0), stepper, times)
    taken = outcome.state.step
    assert outcome.status == "complete" and taken > 200
    reached, tries_at = _unclipped_walk(field, y0, stepper, int(share * taken))
    assert reached[-1] < times[-1] / 4  # the count is extrapolated over most of the clock
    assert taken / 2 <= adaptive_steps(reached, times) <= 2 * taken
    tries = (taken + outcome.state.n_rejected) / taken
    assert tries / 2 <= tries_per_step(reached, tries_at, times) <= 2 * tries


def test_an_adaptive_count_with_every_interval_reached_is_the_calibrations():
    """A calibration past the last snapshot time counts each interval's steps as it took them (the
    last step of each cut short to land on it), one at least; none reached: one per interval."""
    times = np.array([1.0, 2.0, 4.0])
    assert adaptive_steps([0.5, 1.0, 1.5, 2.0, 3.0, 4.0], times) == 2 + 2 + 2
    assert adaptive_steps([0.4, 0.8, 1.2, 1.6, 2.0], times[:2]) == 3 + 3  # 0.4, 0.8, 1.0 | 1.4, 1.8, 2.0
    assert adaptive_steps([], times) == 3
    assert adaptive_steps([10.0], times) == 3


def test_the_estimate_is_the_sum_of_its_parts():
    fixed = RunTime("a", setup=1.5, step=0.002, steps=1000, snapshot=0.05, snapshots=21)
    adaptive = RunTime("b", setup=0.5, step=0.01, steps=20, snapshot=0.1, snapshots=21, exact_count=False,
                       calibrated_to=0.25)
    assert fixed.seconds == pytest.approx(1.5 + 2.0 + 1.05)
    assert fixed.snapshot_share == pytest.approx(1.05 / 4.55)
    whole = TimeEstimate([fixed, adaptive], shared=0.25, calibration=0.3)
    assert whole.seconds == pytest.approx(0.25 + 4.55 + (0.5 + 0.2 + 2.1))
    assert whole.snapshot_share == pytest.approx((1.05 + 2.1) / whole.seconds)
    assert whole.estimated_count and not TimeEstimate([fixed], 0.0, 0.1).estimated_count
    text = whole.describe()
    assert text.startswith("estimated time: about 7.6 s") and "measured now" in text
    assert ("b: about 2.8 s (start 0.5 s, about 20 steps of 10 ms (stepped to t = 0.25 in the calibration), "
            "21 snapshots of 100 ms)") in text
    line = next(line for line in text.splitlines() if line.startswith("  a: "))
    assert "(start 1.5 s, 1000 steps of 2 ms" in line and "about" not in line


def test_each_run_is_counted_with_the_steps_and_snapshots_it_takes():
    """The estimate's counts are the real run's (fixed steps: equal; rk45: within a factor of 2);
    its times are positive."""
    for integrator in ({"method": "euler", "dt": 0.03}, {"method": "rk45"}):
        scenario = mf.load_scenario(TINY, {"train": {"t_end": 0.7, "integrator": integrator}})
        the_plan = mf.plan(scenario)
        estimate = the_plan.estimate_time()
        trajectory, reports = driver.simulate(scenario)
        trajectory.close()
        taken = {report.name: report.steps for report in reports}
        for run in estimate.runs:
            assert run.snapshots == len(the_plan.times) + 1
            assert run.setup > 0 and run.snapshot > 0 and run.seconds > 0
            if run.name == "ntk" or integrator["method"] == "euler":  # ntk: closed form, no steps
                assert run.exact_count and run.steps == taken[run.name]
            else:
                assert not run.exact_count and taken[run.name] / 2 <= run.steps <= 2 * taken[run.name]
        assert estimate.estimated_count == (integrator["method"] == "rk45")


def test_dry_run_prints_the_estimate_and_no_time_leaves_it_out(tmp_path):
    import yaml
    from click.testing import CliRunner

    from meanfield.cli import main

    path = tmp_path / "timed.yaml"
    path.write_text(yaml.safe_dump(TINY))
    shown = CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run"])
    assert shown.exit_code == 0 and "estimated time:" in shown.output and "measured now" in shown.output
    left = CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run", "--no-time"])
    assert left.exit_code == 0 and "estimated time" not in left.output


def _in_a_fresh_process(code: str) -> float:
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chizat_bach", "quickstart"])
def test_the_estimate_of_a_bundled_scenario_is_within_a_factor_of_2_of_its_time(name):
    """Each in a fresh process, as a user meets them (the compiled kernels loaded from the cache
    in both): the --dry-run estimate, then the run itself in memory, timed around simulate."""
    estimate = _in_a_fresh_process(f"import meanfield as mf; print(mf.plan(mf.load_scenario({name!r}))"
                                   ".estimate_time().seconds)")
    real = _in_a_fresh_process(f"import time, meanfield as mf; s = mf.load_scenario({name!r}); t = time.perf_counter(); "
                               "mf.simulate(s).close(); print(time.perf_counter() - t)")
    assert real / 2 <= estimate <= 2 * real, (estimate, real)
