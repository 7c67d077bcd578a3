"""The regime table (docs/design.md §1.8): the rules for a verdict on constructed trajectories,
the table's rows, and the bundled ``regime_table`` scenario at a reduced width."""

import numpy as np
import pytest
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.model.diagnostics import RICH_THRESHOLD, regime_numbers, table_regime, verdict

# a catapult written by hand: the loss rises 300-fold, then falls below its start, while the
# kernel's top eigenvalue first grows, then ends below its start
CATAPULT_LOSS = [0.5, 2.5, 150.0, 40.0, 1.0, 0.02, 0.005]
CATAPULT_NTK = [2.0, 2.4, 1.3, 0.9, 0.8, 0.8, 0.8]
MOVED = {"displacement_w": 0.3, "kernel_distance": 0.03}


def test_regime_numbers_are_the_peak_end_and_eigenvalue_ratios_of_the_series():
    numbers = regime_numbers({**MOVED, "loss_train": 0.005}, CATAPULT_LOSS, CATAPULT_NTK)
    assert numbers == {"displacement_w": 0.3, "kernel_distance": 0.03, "loss_peak_ratio": 150.0 / 0.5,
                       "loss_end_ratio": 0.005 / 0.5, "lambda_ratio": 0.8 / 2.0}
    assert regime_numbers(MOVED, np.array([]), None) == MOVED  # no series, no ratios
    assert regime_numbers({"loss_train": 1.0}) == {}


def numbers(loss, ntk=None, **final):
    return regime_numbers({**MOVED, **final}, loss, ntk)


def test_a_catapult_is_rich_when_the_loss_rises_then_falls_the_kernel_softens_and_the_weights_move():
    label, reason = verdict("particles", numbers(CATAPULT_LOSS, CATAPULT_NTK))
    assert label == "rich" and reason.startswith("catapult: the loss rose to 300 times its start, then fell to 0.01")
    assert "lambda_T / lambda_0 = 0.4 < 1" in reason


def test_a_loss_that_rose_and_did_not_come_back_is_unstable():
    label, reason = verdict("particles", numbers([0.5, 40.0, 3.0, 0.5], CATAPULT_NTK))  # ends at its start
    assert label == "unstable" and "rose to 80 times its start and ended at 1 times it" in reason


@pytest.mark.parametrize("loss, ntk, final, want", [
    # the kernel did not soften (lambda_T / lambda_0 >= 1): the threshold rule, moved -> rich
    (CATAPULT_LOSS, [2.0, 3.0, 2.0], {}, "rich"),
    # ... and did not move -> lazy
    (CATAPULT_LOSS, [2.0, 3.0, 2.5], {"displacement_w": 0.05, "kernel_distance": 0.01}, "lazy"),
    # a spike that softened the kernel but left the weights in place is not a catapult
    (CATAPULT_LOSS, CATAPULT_NTK, {"displacement_w": 0.05, "kernel_distance": 0.01}, "lazy"),
    # no eigenvalue recorded: the catapult cannot be confirmed, the threshold rule decides
    (CATAPULT_LOSS, None, {"displacement_w": 0.05, "kernel_distance": 0.01}, "lazy"),
    # a rise of at most 10% is no rise
    ([1.0, 1.0 + RICH_THRESHOLD, 0.5], CATAPULT_NTK, {"displacement_w": 0.05, "kernel_distance": 0.01}, "lazy"),
    # a loss that only falls: the thresholds on weights and kernel
    ([1.0, 0.3, 0.01], [1.0, 1.0, 1.0], {"displacement_w": 5e-5, "kernel_distance": 1e-9}, "lazy"),
    ([1.0, 0.3, 0.01], [1.0, 1.3, 1.6], {"displacement_w": 0.8, "kernel_distance": 0.07}, "rich"),
    ([1.0, 0.3, 0.01], None, {"displacement_w": 0.05, "kernel_distance": 0.2}, "rich"),
])
def test_without_a_catapult_the_thresholds_decide(loss, ntk, final, want):
    label, reason = verdict("particles", numbers(loss, ntk, **final))
    assert label == want and not reason.startswith("catapult")
    assert reason.startswith("relative weight change")


def test_kernel_runs_are_lazy_and_a_run_without_displacement_is_unknown():
    assert verdict("ntk", numbers(CATAPULT_LOSS))[0] == "lazy"
    assert verdict("tangent", numbers(CATAPULT_LOSS, CATAPULT_NTK))[0] == "lazy"
    assert verdict("particles", regime_numbers({}, CATAPULT_LOSS, CATAPULT_NTK))[0] == "unknown"


@pytest.mark.parametrize("preset, factor, want", [
    ("standard", 0.5, ("SP, moderate LR", "lazy")),
    ("standard", 1.0, ("SP, moderate LR", "lazy")),  # at the edge, not above it
    ("standard", 1.3, ("SP, large LR", "rich")),
    ("standard", None, None),  # a plain dt: where it stands against the edge is not known
    ("mup", None, ("muP", "rich")),
    ("mean_field", 0.5, ("mean field", "rich")),
    ("ntk", 0.5, None),
    ("lazy", None, None),
])
def test_the_table_row_of_a_run_is_its_preset_and_its_step_against_the_stability_edge(preset, factor, want):
    assert table_regime(preset, factor) == want


def reduced():
    """regime_table at m = 256 (the standard runs' lr = 1/m, as the scenario's at m = 4096)."""
    m = 256
    return mf.load_scenario("regime_table", {"model.width": m, "runs.sp_moderate.parameterization.lr": 1 / m,
                                             "runs.sp_large.parameterization.lr": 1 / m})


@pytest.mark.slow
def test_the_reduced_regime_table_measures_the_four_regimes_of_the_table(tmp_path):
    scenario = reduced()
    with mf.simulate(scenario, tmp_path / "regime.h5") as trajectory:
        runs = {name: trajectory[name] for name in ("sp_moderate", "sp_large", "mup", "mean_field")}
        tables = {name: run.table_regime() for name, run in runs.items()}
        assert [row for row, _ in tables.values()] == ["SP, moderate LR", "SP, large LR", "muP", "mean field"]
        for name, run in runs.items():
            assert run.verdict()[0] == tables[name][1], (name, run.verdict())
            # the prediction takes the step each run takes (its dt_factor), as the table does
            assert run.predicted_regime == tables[name][1], (name, run.attrs["predicted_regime_reason"])
        moderate, large = runs["sp_moderate"].regime_numbers(), runs["sp_large"].regime_numbers()
        assert "catapult" in runs["sp_large"].verdict()[1]
        assert large["loss_peak_ratio"] > 1 + RICH_THRESHOLD and large["loss_end_ratio"] < 1
        # the weights move far more than sp_moderate's (whose move falls like m^-3/2: about 80
        # times at m = 256, 5500 times at the scenario's m = 4096)
        assert large["lambda_ratio"] < 1 and large["displacement_w"] > 50 * moderate["displacement_w"]
        # sp_large took its exact step: every snapshot after the start is a whole number of them
        dt = runs["sp_large"].attrs["integrator"]["dt"]
        series = runs["sp_large"].measure("loss_train")
        np.testing.assert_allclose(series.time.values, series.step.values * dt, rtol=1e-12)
    summary = CliRunner().invoke(main, ["-q", "inspect", str(tmp_path / "regime.h5")])
    assert summary.exit_code == 0, summary.output
    rows = {line[:20].strip(): line[20:].split() for line in summary.output.splitlines()[1:] if line[:20].strip()}
    assert rows["table regime"] == rows["measured regime"] == ["lazy", "rich", "rich", "rich"]
    assert len(rows["lambda_T/lambda_0"]) == len(rows["loss peak/start"]) == 4
    assert summary.output.count("the measured regime agrees") == 4
