"""The numbers of the study feature_vs_lazy_digits (meanfield/studies/feature_vs_lazy_digits.py), on
closed forms: alpha* is where a power law falls through 1, exponents are log-log slopes. Its quick
check runs in tests/test_studies.py with every registered study."""

import math

import numpy as np
import pytest

from meanfield.studies import feature_vs_lazy_digits as study


@pytest.mark.parametrize("c, p", [(3.0, 1.0), (2.5, 0.9), (40.0, 2.0)])
def test_alpha_star_of_a_power_law_is_where_it_is_one(c, p):
    alphas = [1.0, 3.0, 10.0, 30.0, 100.0]
    displacement = [c * a**-p for a in alphas]
    assert study.crossover(alphas, displacement) == pytest.approx(c ** (1 / p), rel=1e-12)


def test_alpha_star_outside_the_grid_is_nan():
    assert math.isnan(study.crossover([1.0, 10.0], [0.5, 0.05]))


def test_slope_is_the_log_log_exponent():
    h = np.array([64.0, 256.0, 1024.0])
    assert study.slope(h, 7 * h**-0.8) == pytest.approx(-0.8, rel=1e-12)
    assert math.isnan(study.slope([64.0], [1.0]))


def test_summary_of_a_synthetic_table():
    """Width-independent crossover (exponent 0), the lazy limit, 1/h fluctuations and a shrinking gap."""
    table = {}
    for h in (64, 256, 1024):
        for alpha in (1.0, 3.0, 10.0, 1000.0):
            table[alpha, h] = {"error": 0.05 + 0.01 * (alpha > 1) + 1 / h, "ntk_error": 0.06 + 1 / h + 1 / (2 * h),
                               "displacement_w": 2.9 / alpha, "kernel_distance": 0.1 / alpha,
                               "fluctuations": 3.0 / h}
    numbers = study.summary(table)
    assert numbers["star_exponent"] == pytest.approx(0.0, abs=1e-12)
    assert numbers["alpha_star"][64] == pytest.approx(2.9)
    assert numbers["fluctuation_exponent"] == pytest.approx(-1.0)
    assert numbers["tail"] == pytest.approx(1.0)
    assert all(b < a for a, b in zip(numbers["gaps"], numbers["gaps"][1:]))
