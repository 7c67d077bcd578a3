"""The pieces shared by the exactly solved linear flows."""

import numpy as np
import pytest

from solvers.linear_flow import as_times, phi, psd_eigh


def test_phi_is_one_minus_exp_over_x_and_one_at_zero():
    x = np.array([0.0, 1e-12, 1e-3, 1.0, 50.0])
    expected = np.array([1.0, 1.0, (1 - np.exp(-1e-3)) / 1e-3, 1 - np.exp(-1.0), 1 / 50.0])
    assert np.allclose(phi(x), expected, rtol=1e-12)


def test_psd_eigh_reconstructs_and_zeroes_rounding_eigenvalues():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((6, 3))
    M = F @ F.T  # rank 3
    lam, V = psd_eigh(M)
    assert np.allclose(V @ np.diag(lam) @ V.T, M, atol=1e-12)
    assert np.count_nonzero(lam) == 3 and np.all(lam >= 0)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        psd_eigh(-M, "the test matrix")


def test_as_times_checks_and_shapes():
    t_arr, tau = as_times([0.0, 2.0])
    assert tau.shape == (2, 1) and t_arr.shape == (2,)
    with pytest.raises(ValueError):
        as_times(-1.0)
