import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

from solvers.catalog import CLASSIFICATION_LOSSES, LOSS_TABLE  # noqa: E402
from solvers.losses import (  # noqa: E402
    LOSSES,
    loss_and_derivative,
    loss_code,
    loss_derivative,
    loss_second_derivative,
    loss_value,
)

F = np.concatenate([np.linspace(-5.0, 5.0, 41), [-900.0, 900.0]])


def test_codes():
    assert LOSSES == {"squared": 0, "logistic": 1, "hinge": 2}
    assert loss_code("logistic") == 1 and loss_code("hinge") == 2
    with pytest.raises(ValueError, match="squared, logistic, hinge"):
        loss_code("exponential")
    assert CLASSIFICATION_LOSSES == ("logistic", "hinge")


def test_hinge_against_numpy_and_at_its_kink():
    """max(0, 1 - y f) and its derivative -y [y f < 1], written out in plain NumPy, on a grid
    that holds the kink y f = 1, where the derivative is 0 (the flat side's, solvers.losses)."""
    code = loss_code("hinge")
    for y in (-1.0, 1.0):
        f = np.concatenate([F, [y, y * (1 - 1e-12), y * (1 + 1e-12)]])  # y f = 1, just below, just above
        value = np.array([loss_value(code, float(v), y) for v in f])
        slope = np.array([loss_derivative(code, float(v), y) for v in f])
        np.testing.assert_array_equal(value, np.maximum(0.0, 1.0 - y * f))
        np.testing.assert_array_equal(slope, np.where(y * f < 1.0, -y, 0.0))
        assert slope[-3] == 0.0 and slope[-2] == -y and slope[-1] == 0.0
        assert all(loss_second_derivative(code, float(v), y) == 0.0 for v in f)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("y", [-1.0, 1.0, 0.3])
def test_scalar_loss_matches_numpy(name, y):
    code = loss_code(name)
    got = np.array([loss_value(code, float(f), y) for f in F])
    np.testing.assert_allclose(got, ref.loss(name, F, y), rtol=1e-14, atol=1e-300)
    got_d = np.array([loss_derivative(code, float(f), y) for f in F])
    np.testing.assert_allclose(got_d, ref.dloss(name, F, y), rtol=1e-14, atol=1e-300)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("name", list(LOSSES))
def test_derivative_matches_finite_differences(name):
    """Central differences, away from a kink (hinge: y f = 1, within 2h of which the difference
    straddles the jump of l')."""
    code = loss_code(name)
    h = 1e-6
    smooth = LOSS_TABLE[code].smooth
    for y in (-1.0, 1.0):
        for f in np.linspace(-4, 4, 17) + (0.0 if smooth else 0.123):
            if not smooth:
                assert abs(y * f - 1.0) > 2 * h
            fd = (loss_value(code, f + h, y) - loss_value(code, f - h, y)) / (2 * h)
            assert abs(loss_derivative(code, f, y) - fd) < 1e-7


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_and_derivative(name, dtype):
    rng = np.random.default_rng(0)
    f = rng.normal(size=37).astype(dtype)
    y = np.sign(rng.normal(size=37)).astype(dtype)
    lp = np.empty(37, dtype)
    mean = loss_and_derivative(loss_code(name), f, y, lp)
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(mean, ref.loss(name, f, y).mean(), rtol=rtol)
    np.testing.assert_allclose(lp, ref.dloss(name, f, y), rtol=rtol, atol=1e-300)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("n", [10, 24, 37])
def test_the_mean_loss_does_not_depend_on_where_the_derivatives_are_stored(name, n):
    """lp_out starting 0 .. 79 values after f in one buffer: one result, the mean of NumPy's
    losses within rounding. (In one loop with the stores, LLVM's vectorised sum ran only where
    lp_out did not start within a few vectors after f: two results at n = 10 and 24.)"""
    rng = np.random.default_rng(n)
    f0 = rng.standard_normal(n)
    y = np.sign(rng.standard_normal(n)) if name in CLASSIFICATION_LOSSES else rng.standard_normal(n)
    means = set()
    for gap in range(80):
        buffer = np.empty(2 * n + gap)
        f, lp = buffer[:n], buffer[n + gap:2 * n + gap]
        f[...] = f0
        means.add(loss_and_derivative(LOSSES[name], f, y, lp))
        np.testing.assert_array_equal(lp, [loss_derivative(LOSSES[name], fk, yk) for fk, yk in zip(f0, y)])
    assert len(means) == 1
    np.testing.assert_allclose(means.pop(), np.mean(ref.loss(name, f0, y)), rtol=1e-14)
