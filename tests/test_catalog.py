"""The table of activations and losses: codes by name or code, each property column against the
code it describes, and a table that loads without the numerical core."""

import subprocess
import sys

import numpy as np
import pytest

from solvers.catalog import ACTIVATION_TABLE, ACTIVATIONS, LOSSES, activation_code, loss_code


def test_codes_by_name_or_by_code():
    for row in ACTIVATION_TABLE:
        assert activation_code(row.name) == row.code == activation_code(row.code)
    assert activation_code(np.int64(2)) == 2
    for bad in ("gelu", "RELU", len(ACTIVATIONS), -1, None, 2.0):
        with pytest.raises(ValueError, match="unknown activation .*relu.*quadratic"):
            activation_code(bad)
    assert [loss_code(name) for name in LOSSES] == list(LOSSES.values()) == [0, 1, 2]
    assert loss_code(1) == 1
    for bad in ("huber", 3, None):
        with pytest.raises(ValueError, match="unknown loss .*squared.*logistic.*hinge"):
            loss_code(bad)


@pytest.mark.parametrize("row", ACTIVATION_TABLE, ids=lambda row: row.name)
def test_each_column_says_what_the_solvers_do(row):
    from solvers.activations import sigma
    from solvers.ntk import analytic_kernels
    from solvers.population import pair_U

    z = np.linspace(-3.0, 3.0, 13)
    s = np.array([sigma(row.code, x) for x in z])
    for lam in (0.5, 3.0):
        scaled = np.array([sigma(row.code, lam * x) for x in z])
        homogeneous = np.allclose(scaled, lam ** row.homogeneity * s, rtol=1e-14, atol=0)
        assert homogeneous == bool(row.homogeneity), (lam, row)

    X = np.array([[1.0, 0.5], [-0.3, 0.8]])

    def accepted(call):
        try:
            call()
        except ValueError:
            return False
        return True

    assert accepted(lambda: analytic_kernels(X, act=row.name, w_var=1.0, b_var=0.1, a_var=1.0))  # every activation
    assert row.kernel in ("closed form", "quadrature")
    assert accepted(lambda: pair_U(X, X, row.name)) == row.population
    assert accepted(lambda: pair_U(X, X, "relu", row.name)) == row.population


def test_the_scenario_schema_reads_the_table_without_loading_numba():
    # a sweep worker sets its thread count before the numerical core loads; and
    # `import meanfield` (the CLI's start-up, a notebook reading files) needs no Numba
    code = ("import sys, typing; import meanfield, meanfield.config.scenario as s, meanfield.sweeps.execution, meanfield.cli\n"
            "import meanfield.config.sections as sections\n"
            "assert 'numba' not in sys.modules, 'numba imported'\n"
            "print(repr((typing.get_args(sections.ActivationName), typing.get_args(sections.LossName),\n"
            "            s.ANALYTIC_ACTIVATIONS, s.POPULATION_ACTIVATIONS)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    want = (tuple(ACTIVATIONS), tuple(LOSSES), tuple(r.name for r in ACTIVATION_TABLE),
            tuple(r.name for r in ACTIVATION_TABLE if r.population))
    assert out.strip() == repr(want)
