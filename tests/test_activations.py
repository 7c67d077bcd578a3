import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

from solvers.activations import (  # noqa: E402
    ACTIVATIONS,
    activate_tile,
    activate_tile_value,
    activation_code,
    dsigma,
    sigma,
)

NAMES = list(ACTIVATIONS)
Z = np.concatenate([np.linspace(-6.0, 6.0, 97), [-800.0, -40.0, -1e-3, 1e-3, 40.0, 800.0]])


def test_names_and_codes():
    assert NAMES == ref.ACT_NAMES
    assert sorted(ACTIVATIONS.values()) == list(range(7))
    assert activation_code("tanh") == 1
    with pytest.raises(ValueError, match="relu.*quadratic"):
        activation_code("gelu")


@pytest.mark.parametrize("name", NAMES)
def test_scalar_sigma_matches_numpy(name):
    code = activation_code(name)
    z = Z if name != "quadratic" else Z[np.abs(Z) < 100]
    got = np.array([sigma(code, float(v)) for v in z])
    np.testing.assert_allclose(got, ref.sigma(name, z), rtol=1e-14, atol=1e-300)
    got_d = np.array([dsigma(code, float(v)) for v in z])
    np.testing.assert_allclose(got_d, ref.dsigma(name, z), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_dsigma_matches_finite_differences(name):
    code = activation_code(name)
    z = np.linspace(-3.0, 3.0, 41) + 0.0123  # never at relu's kink
    h = 1e-6
    fd = np.array([(sigma(code, v + h) - sigma(code, v - h)) / (2 * h) for v in z])
    got = np.array([dsigma(code, float(v)) for v in z])
    np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-8)


def test_relu_derivative_at_zero_is_zero():
    assert dsigma(ACTIVATIONS["relu"], 0.0) == 0.0
    assert sigma(ACTIVATIONS["relu"], 0.0) == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_tile_matches_numpy(name, dtype):
    code = activation_code(name)
    z = Z if name != "quadratic" else Z[np.abs(Z) < 100]
    z = z.astype(dtype)
    n = len(z) - 3  # only the first n entries are touched
    s = np.full(len(z), -7.0, dtype)
    ds = np.full(len(z), -7.0, dtype)
    activate_tile(code, z, s, ds, n)
    sv = np.full(len(z), -7.0, dtype)
    activate_tile_value(code, z, sv, n)
    assert s.dtype == dtype and np.all(s[n:] == -7.0) and np.all(ds[n:] == -7.0)
    # 1 - tanh^2 and s (1 - s) cancel for large |z|: absolute tolerance there
    rtol, atol = (1e-14, 1e-15) if dtype == np.float64 else (1e-6, 1e-6)
    zz = z[:n].astype(np.float64)
    np.testing.assert_allclose(s[:n], ref.sigma(name, zz), rtol=rtol, atol=atol)
    np.testing.assert_allclose(ds[:n], ref.dsigma(name, zz), rtol=10 * rtol, atol=atol)
    np.testing.assert_array_equal(sv[:n], s[:n])


def test_tile_is_finite_at_extremes():
    z = np.array([-1e300, -1e5, 1e5, 1e300])
    for name in ("sigmoid", "softplus", "tanh", "erf"):
        s = np.empty(4)
        ds = np.empty(4)
        activate_tile(activation_code(name), z, s, ds, 4)
        assert np.all(np.isfinite(s)) and np.all(np.isfinite(ds)), name


def test_nan_propagates():
    z = np.array([np.nan, 1.0])
    for name in NAMES:
        s = np.empty(2)
        ds = np.empty(2)
        activate_tile(activation_code(name), z, s, ds, 2)
        if name != "relu":  # relu(nan) is 0 by the comparison convention
            assert np.isnan(s[0]), name
