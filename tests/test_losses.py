import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

from solvers.losses import (  # noqa: E402
    LOSSES,
    loss_and_derivative,
    loss_code,
    loss_derivative,
    loss_value,
)

F = np.concatenate([np.linspace(-5.0, 5.0, 41), [-900.0, 900.0]])


def test_codes():
    assert LOSSES == {"squared": 0, "logistic": 1}
    assert loss_code("logistic") == 1
    with pytest.raises(ValueError, match="squared.*logistic"):
        loss_code("hinge")


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
    code = loss_code(name)
    h = 1e-6
    for y in (-1.0, 1.0):
        for f in np.linspace(-4, 4, 17):
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
