"""Long runs of a classification loss (docs/design.md §3.4, §3.2): snapshots on a logarithmic
clock (record.clock: log) and a stepping that follows the loss's decay (the loss clock)."""

import os

import numpy as np
import pytest

import meanfield as mf
from meanfield.errors import UsageError
from solvers.integrate import log_snapshot_times

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
