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


def test_the_feature_learning_exponent_is_2_beta_over_1_plus_beta_below_1_and_beta_above():
    """Bordelon, Atanasov & Pehlevan's chi(beta): 2 beta/(1 + beta) for the hard tasks beta < 1 (2/3 at
    1/2, nearly 2 beta as beta -> 0), beta itself for beta >= 1 (no change for the easy tasks)."""
    assert study.chi_rich(0.5) == pytest.approx(2 / 3)
    assert study.chi_rich(0.01) == pytest.approx(0.02 / 1.01)
    assert study.chi_rich(1.0) == 1.0 and study.chi_rich(1.5) == 1.5


def test_the_power_law_scenario_is_a_hard_task_and_its_reduced_check_is_smaller():
    """decay = 2 beta: against the relu NTK on the circle (eigenvalues ~ k^-2) the source exponent is beta;
    both scenarios validate, the reduced one with fewer points, particles and time."""
    import meanfield as mf

    assert study.POWER_LAW["data"]["power_law"]["decay"] == 2 * study.BETA and study.BETA < 1
    full = mf.load_scenario(study.POWER_LAW)
    quick = mf.load_scenario(study._quick_power_law(study.POWER_LAW))
    assert quick.data.n_train < full.data.n_train and quick.model.width < full.model.width
    assert quick.train.t_end < full.train.t_end and quick.data.power_law == full.data.power_law


def test_power_law_fits_take_the_last_decade_of_every_seed():
    """Curves c t^-k with a seed factor, and a different slope before t_end/10: the fit sees only
    t_end/10 <= t <= t_end."""
    t = np.geomspace(1.0, 1000.0, 25)
    curves = []
    for factor in (0.9, 1.1):
        early = np.where(t < 100, 5.0 * t**-0.2, 5.0 * 100**-0.2 * (t / 100) ** -0.7)
        curves.append({"t": t, "t_end": 1000.0, "lazy": factor * early, "rich": factor * 2.0 * t**-0.6,
                       "closed": early})
    found = study.power_law_fits(curves)
    assert found["lazy"].exponent == pytest.approx(-0.7, abs=1e-9)
    assert found["rich"].exponent == pytest.approx(-0.6, abs=1e-9)
    assert found["closed"].exponent == pytest.approx(-0.7, abs=1e-9)
