"""Long runs of a classification loss (docs/design.md §3.4, §3.2): snapshots on a logarithmic
clock (record.clock: log) and a stepping that follows the loss's decay (the loss clock)."""

import math
import os

import numpy as np
import pytest

import meanfield as mf
from meanfield.errors import UsageError
from solvers.integrate import RK45, LoopState, LossClock, integrate, log_snapshot_times

LONG = {
    "name": "long", "loss": "logistic",
    "data": {"task": "gaussian_mixture", "dim": 3, "n_train": 16, "n_test": 8},
    "model": {"width": 8, "activation": "relu"},
    "runs": {"rich": "mean_field"},
    "train": {"t_end": 1e3, "integrator": {"method": "rk45"}},
    "record": {"every": 1.0, "clock": "log", "per_decade": 4},
}


def test_log_snapshot_times_are_a_geometric_sequence_ending_at_t_end():
    times = log_snapshot_times(0.5, 5e3, 10)
    assert len(times) == 41 and times[0] == 0.5 and times[-1] == 5e3
    np.testing.assert_allclose(times[1:] / times[:-1], 10 ** 0.1, rtol=1e-12)
    # t_end off the grid: the grid below it, then t_end
    times = log_snapshot_times(1.0, 20.0, 1)
    np.testing.assert_array_equal(times, [1.0, 10.0, 20.0])
    np.testing.assert_array_equal(log_snapshot_times(3.0, 2.0, 5), [2.0])


def test_the_log_clock_is_refused_where_it_does_not_apply():
    with pytest.raises(UsageError, match="record.per_decade = 3 counts the snapshots per decade"):
        mf.load_scenario({**LONG, "record": {"every": 1.0, "per_decade": 3}})
    with pytest.raises(UsageError, match="snapshots per run, more than"):
        mf.load_scenario({**LONG, "record": {"every": 1e-300, "clock": "log", "per_decade": 10**5}})


def test_a_long_run_on_the_log_clock_has_logarithmic_snapshot_times_and_a_small_file(tmp_path):
    """t_end = 1e3 with 4 snapshots per decade: 14 snapshots (t = 0 and 13 on the clock), a file of
    tens of kilobytes; the linear clock at record.every = 1 would take 10^3 snapshots."""
    output = tmp_path / "long.h5"
    scenario = mf.load_scenario(LONG)
    plan = mf.plan(scenario)
    assert "log clock from t = 1, 4 per decade" in plan.clock and len(plan.times) == 13
    with mf.simulate(scenario, output) as trajectory:
        run = trajectory["rich"]
        assert run.status == "complete"
        times = run.times
        np.testing.assert_allclose(times[1:], 10.0 ** (np.arange(13) / 4), rtol=1e-12)
        loss = run.series("loss_train").value
        assert loss[-1] < 0.5 * loss[0]
    assert os.path.getsize(output) < 100_000


# ----------------------------------------------------------------------------- the loss clock


def _exponential_margin(t, y):
    """theta' = e^-theta: gradient flow of the exponential loss L = e^-theta of one sample of
    margin theta, whose solution from theta(0) = 0 is log(1 + t) (L falls like 1/t)."""
    loss = math.exp(-y[0])
    return np.array([loss]), loss


def test_the_loss_clock_has_order_4_in_ds():
    """|theta(T) - log(1 + T)| at T = 1e4 falls like ds^4 (fitted slope within 0.1 of 4), in a
    few dozen steps where a fixed step would need T / dt."""
    errors, steps = [], []
    for ds in (0.4, 0.2, 0.1, 0.05):
        out = integrate(_exponential_margin, LoopState(0.0, 0, np.array([0.0])), LossClock(ds), [1e4])
        errors.append(abs(out.state.y[0] - math.log1p(1e4)))
        steps.append(out.state.step)
    slope = np.polyfit(np.log([0.4, 0.2, 0.1, 0.05]), np.log(errors), 1)[0]
    assert abs(slope - 4) < 0.1 and steps[0] < 40


def test_each_step_of_the_loss_clock_is_ds_over_the_loss_at_its_start():
    states = []
    integrate(_exponential_margin, LoopState(0.0, 0, np.array([0.0])), LossClock(0.1), [1e3],
              on_step=states.append)
    uncut = states[:-2]  # the last step is cut short to land on t = 1e3
    for before, after in zip(uncut, uncut[1:]):
        assert after.t - before.t == pytest.approx(0.1 / math.exp(-before.y[0]), rel=1e-12)
    # the step grows as the loss falls: h = 0.1 (1 + t) here
    assert states[-3].h > 10 * states[1].h
    # dt_max caps it, and a field whose loss is 0 takes dt_max
    assert LossClock(0.1, dt_max=2.0).step_for(1e-3) == 2.0 and LossClock(0.1, 3.0).step_for(0.0) == 3.0
    with pytest.raises(ValueError, match="needs the field's loss"):
        LossClock(0.1).step_for(math.nan)


SMOOTH = {**LONG, "model": {"width": 8, "activation": "softplus"}, "train": {"t_end": 30.0},
          "record": {"every": 1.0, "clock": "log", "per_decade": 2, "particles": False}}


def test_a_particle_run_on_the_loss_clock_converges_at_order_4():
    """The network (softplus, smooth) on the loss clock at ds and ds / 2 against ds / 8: the test
    predictions at t = 30 err about 16 times less at half the step (ratio above 8)."""
    def final(ds):
        scenario = mf.load_scenario({**SMOOTH, "train": {"t_end": 30.0, "integrator": {"method": "loss_clock",
                                                                                       "ds": ds}}})
        with mf.simulate(scenario) as trajectory:
            return trajectory["rich"].series("f_test").value[-1]

    reference = final(0.2 / 8)
    coarse, fine = (np.max(np.abs(final(ds) - reference)) for ds in (0.2, 0.1))
    assert coarse / fine > 8 and fine < 1e-4


@pytest.mark.parametrize("integrator, message", [
    ({"method": "loss_clock"}, "method 'loss_clock' steps by ds on the loss's clock"),
    ({"method": "loss_clock", "ds": 0.1, "dt": 0.1}, "set train.integrator.ds and remove dt"),
    ({"method": "rk4", "dt": 0.1, "ds": 0.1}, "ds is only used by method 'loss_clock'"),
    ({"method": "loss_clock", "ds": 0.1, "rtol": 0.1}, "rtol: only the adaptive method 'rk45' uses them"),
    ({"method": "loss_clock", "dt_factor": 0.5}, "'loss_clock' chooses its own: .* or give ds"),
])
def test_the_loss_clocks_keys_are_checked(integrator, message):
    with pytest.raises(UsageError, match=message):
        mf.load_scenario({**LONG, "train": {"t_end": 10.0, "integrator": integrator}})
    assert mf.load_scenario({**LONG, "train": {"integrator": {"method": "loss_clock", "ds": 0.1, "dt_max": 5}}})


def test_a_long_run_resumed_on_the_loss_clock_is_the_uninterrupted_run(tmp_path):
    """The loss clock's next step is checkpointed (as rk45's h): interrupted mid-decade and
    resumed, the file's datasets are those of the uninterrupted run, bit for bit."""
    import h5py

    from meanfield.engine.progress import ModelTimeBar

    class InterruptAt(ModelTimeBar):
        def update_state(self, state):
            if state.t > 40:
                raise KeyboardInterrupt

    scenario = mf.load_scenario({**LONG, "train": {"t_end": 300.0, "integrator": {"method": "loss_clock",
                                                                                  "ds": 0.05}}})
    whole, parts = tmp_path / "whole.h5", tmp_path / "parts.h5"
    mf.simulate(scenario, whole).close()
    with pytest.raises(KeyboardInterrupt):
        mf.simulate(scenario, parts, progress=lambda *a: InterruptAt(*a, enabled=False))
    mf.simulate(scenario, parts, resume=True).close()

    def datasets(path):
        out = {}
        with h5py.File(path, "r") as h5:
            h5["observables/rich"].visititems(lambda name, obj: out.update(
                {name: obj[()]} if isinstance(obj, h5py.Dataset) else {}))
            h5["particles/rich"].visititems(lambda name, obj: out.update(
                {"p/" + name: obj[()]} if isinstance(obj, h5py.Dataset) else {}))
        return out

    got, want = datasets(parts), datasets(whole)
    assert got.keys() == want.keys() and len(want) > 10
    with mf.open(whole) as trajectory:  # t = 0 and 1, 10^(1/4), ..., 10^(9/4), 300
        assert len(trajectory["rich"].times) == 12
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_rk45s_step_is_not_capped_and_grows_like_t_as_the_loss_decays():
    """On theta' = e^-theta to t = 1e6 (snapshots on the log clock, which cut steps short but
    keep rk45's proposal) the step grows with t: 34 steps in all (measured), the last ones
    about t / 3 (2e5 past t = 1e5), and the answer within rtol of log(1 + t)."""
    states = []
    times = log_snapshot_times(1.0, 1e6, 2)
    out = integrate(_exponential_margin, LoopState(0.0, 0, np.array([0.0])), RK45(), times, on_step=states.append)
    assert out.status == "complete" and out.state.step < 100
    assert out.state.y[0] == pytest.approx(math.log1p(1e6), rel=1e-3)
    late = [after.t - before.t for before, after in zip(states, states[1:]) if before.t > 1e5]
    assert np.median(late) > 1e4
