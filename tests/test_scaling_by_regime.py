"""The scaling_by_regime study's own arithmetic: the published exponents, the test error, the fit
(its quick check runs in tests/test_studies.py)."""

import numpy as np
import pytest

from meanfield.studies import scaling_by_regime as study
from meanfield.studies.scaling_by_regime import beta_feature, beta_lazy, fits


def test_the_published_exponents_are_the_abstracts():
    """Paccolat et al. (2021)'s abstract: d/(3d-2) and (2d-1)/(3d-2); 1/2 and 3/4 at d = 2, 3/7 and 5/7 at d = 3."""
    assert beta_lazy(2) == 0.5 and beta_feature(2) == 0.75
    assert beta_lazy(3) == pytest.approx(3 / 7) and beta_feature(3) == pytest.approx(5 / 7)


def test_test_error_counts_the_points_with_y_f_at_most_zero():
    f = np.array([0.5, -0.2, 0.0, 2.0, -1.0])
    y = np.array([1.0, 1.0, 1.0, -1.0, -1.0])
    assert study.test_error(f, y) == sum(yi * fi <= 0 for fi, yi in zip(f, y)) / len(f) == 0.6


def test_fits_recover_an_exact_power_law_per_run_and_dimension():
    """errors c p^-beta with a seed-to-seed factor: the slope over every seed's point is -beta
    (the factors average out in log), one fit per (run, d)."""
    rows = []
    for run, d, beta in (("lazy", 2, 0.5), ("rich", 2, 0.75), ("rich", 3, 0.7)):
        for p in (32, 64, 128, 256):
            for factor in (0.8, 1.25):
                rows.append({"run": run, "d": d, "p": p, "test_error": factor * 3.0 * p ** -beta})
    found = fits(rows)
    assert set(found) == {("lazy", 2), ("rich", 2), ("rich", 3)}
    assert found["lazy", 2].exponent == pytest.approx(-0.5, abs=1e-12)
    assert found["rich", 2].exponent == pytest.approx(-0.75, abs=1e-12)
    assert found["rich", 3].exponent == pytest.approx(-0.7, abs=1e-12)
    rows.append({"run": "lazy", "d": 3, "p": 32, "test_error": 0.0})  # too few points: no fit
    assert ("lazy", 3) not in fits(rows)
