"""Runs on a ``file`` task's splits (docs/design.md §5.2): every solver trains without a test
set (data.test_fraction 0) as it trains on the same samples with one, records nothing that
needs a test set, tracks its kernel on training points, and every reader of the file says
"no test set" instead of failing; test_indices and test_path reach the file as given."""

import re

import numpy as np
import pytest
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.model.measures import TEST_MEASURES

N, D = 24, 3
RUNS = {"rich": "mean_field", "tangent": {"solver": "tangent"}, "ntk": {"solver": "ntk", "kernel": "empirical"},
        "analytic": {"solver": "ntk", "kernel": "analytic"}}
NO_TEST_SET = "no test set (data.test_fraction 0)"


@pytest.fixture
def data_file(tmp_path):
    """N samples in d = D with labels +-1 (both losses take them), as an .npz file."""
    X = np.random.default_rng(3).standard_normal((N, D))
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=np.where(X[:, 0] + 0.2 * X[:, 1] > 0, 1.0, -1.0))
    return path


def scenario(path, loss="squared", **split):
    """Every solver on the file, with the split ``split`` (probe_size 64 > N: every training point)."""
    return mf.load_scenario({
        "name": "split", "data": {"task": "file", "path": str(path), "dim": D, **split},
        "model": {"width": 10}, "loss": loss, "runs": RUNS,
        "train": {"t_end": 0.6, "integrator": {"method": "euler", "dt": 0.1}}, "record": {"every": 0.3}})


@pytest.mark.parametrize("loss", ["squared", "logistic"])  # closed-form and integrated kernel flows
def test_without_a_test_set_every_solver_trains_as_with_its_samples_as_the_test_set(data_file, loss):
    """test_fraction 0 trains on a permutation of the file; test_path = the file itself trains
    on the file in order and tests on all of it. Losses, displacements, W2 and the probe
    kernel's measures (on all N training points, against all N test points) are invariant
    under that permutation, so both runs measure the same numbers up to rounding; the one
    without a test set records none of the test measures."""
    alone = mf.simulate(scenario(data_file, loss, test_fraction=0))
    tested = mf.simulate(scenario(data_file, loss, test_path=str(data_file)))
    assert not alone.has_test_set and tested.has_test_set
    assert alone.data.X_test.shape == (0, D) and alone.data.y_test.shape == (0,)
    assert sorted(alone.data.y_train.tolist()) == sorted(tested.data.y_train.tolist())
    for name in RUNS:
        got, reference = alone[name], tested[name]
        assert set(got.measures) == set(reference.measures) - set(TEST_MEASURES), name
        assert got.status == reference.status == "complete"
        for measure in got.measures:
            np.testing.assert_allclose(got.series(measure).value, reference.series(measure).value,
                                       rtol=1e-12, atol=1e-14, err_msg=f"{name}.{measure}")
        np.testing.assert_allclose(reference.series("loss_test").value, reference.series("loss_train").value,
                                   rtol=1e-12, err_msg=name)  # its test set is its training set
    assert "kernel_distance" in alone["rich"].measures and alone["rich"].series("kernel_distance").value[-1] > 0
    kernel_runs = [name for name in RUNS if alone[name].solver == "ntk"]
    for name in kernel_runs:  # the kernel-regression limit: on the training set alone (squared loss)
        expected = {"loss_train_limit", "loss_test_limit"} if loss == "squared" else set()
        assert set(tested[name].constants) == expected
        assert set(alone[name].constants) == expected - {"loss_test_limit"}
        if expected:
            assert np.isclose(alone[name].constants["loss_train_limit"], tested[name].constants["loss_train_limit"],
                              rtol=1e-9)


def test_test_indices_reach_the_file_as_given(data_file):
    indices = [5, 0, 17]
    traj = mf.simulate(scenario(data_file, test_indices=indices).replace({"runs": {"ntk": RUNS["ntk"]}}))
    X, y = np.load(data_file)["X"], np.load(data_file)["y"]
    np.testing.assert_array_equal(traj.data.X_test, X[indices])
    np.testing.assert_array_equal(traj.data.X_train, np.delete(X, indices, axis=0))
    np.testing.assert_array_equal(traj.data.y_train, np.delete(y, indices))
    assert traj["ntk"].measure("f_test").shape[1] == len(indices)


def cli(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


@pytest.mark.slow
def test_the_command_line_reads_a_file_without_a_test_set(data_file, tmp_path):
    """simulate, then inspect, plot and animate, with no traceback; the API's accessors name
    the missing test set."""
    path = tmp_path / "split.yaml"
    path.write_text(scenario(data_file, test_fraction=0).resolved_yaml())
    out = tmp_path / "f.h5"
    result = cli("simulate", path, "-o", out)
    assert result.exit_code == 0 and result.exception is None, result.output
    result = cli("inspect", out)
    assert result.exit_code == 0 and NO_TEST_SET in result.output, result.output
    rows = [line.split()[0] for line in result.output.splitlines()[1:] if line.strip()]
    assert "loss_train" in rows and "loss_test" not in rows and "gap_ntk" not in rows, result.output
    for command, picture in (("plot", "f.png"), ("animate", "f.gif")):
        result = cli(command, out, "-o", tmp_path / picture)
        assert result.exit_code == 0 and result.exception is None, result.output
        assert (tmp_path / picture).stat().st_size > 0
    with mf.open(out) as traj:
        for measure in TEST_MEASURES:
            with pytest.raises(mf.UsageError, match=re.escape(f"run 'rich' has no measure '{measure}': {NO_TEST_SET}")):
                traj["rich"].measure(measure)
        assert NO_TEST_SET in traj.summary()
        assert traj.to_xarray()["data"].sizes["sample_test"] == 0


@pytest.mark.slow
def test_analyze_names_the_missing_test_set(data_file, tmp_path):
    base = scenario(data_file, test_fraction=0).replace({"runs": {"rich": "mean_field"}})
    directory = tmp_path / "widths"
    result = mf.sweep(base, {"model.width": [8, 16, 32]}, output=directory, workers=1, threads=1)
    assert result.failed == 0
    analysis = cli("analyze", directory)
    assert analysis.exit_code == 0 and "displacement_w" in analysis.output, analysis.output
    refused = cli("analyze", directory, "--measure", "loss_test")
    assert refused.exit_code == 2 and refused.output.startswith(
        f"Error: no measure 'loss_test' in this sweep ({NO_TEST_SET}"), refused.output
