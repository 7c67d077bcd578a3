"""The pieces shared by the exactly solved linear flows."""

import numpy as np
import pytest

from solvers.linear_flow import FactoredEigh, as_times, phi, psd_eigh


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


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 130])
def test_factored_eigh_is_an_eigendecomposition(n):
    """Against numpy.linalg.eigh and the defining identities: same eigenvalues, V orthogonal,
    V diag(lam) V^T = M, and apply / apply_transpose are V C and V^T C."""
    rng = np.random.default_rng(n)
    F = rng.standard_normal((n, max(n - 3, 1)))  # rank n - 3: a null space to clean
    M = F @ F.T
    eig = FactoredEigh(M, "M")
    lam, _ = psd_eigh(M)
    np.testing.assert_allclose(eig.eigenvalues, lam, rtol=0, atol=1e-13 * max(1.0, np.abs(lam).max(initial=0)))
    assert np.count_nonzero(eig.eigenvalues) == np.count_nonzero(lam)
    V = eig.eigenvectors
    assert V.shape == (n, n)
    np.testing.assert_allclose(V.T @ V, np.eye(n), atol=1e-13)
    np.testing.assert_allclose(V @ np.diag(eig.eigenvalues) @ V.T, M, atol=1e-12 * max(1.0, np.abs(M).max(initial=0)))
    C = rng.standard_normal((n, 5))
    np.testing.assert_allclose(eig.apply(C), V @ C, atol=1e-13 * max(1.0, np.abs(C).max(initial=0)))
    np.testing.assert_allclose(eig.apply_transpose(C), V.T @ C, atol=1e-13 * max(1.0, np.abs(C).max(initial=0)))
    # the input is not touched, whatever its order
    M_f = np.asfortranarray(M)
    before = M_f.copy()
    FactoredEigh(M_f).apply(C)
    assert np.array_equal(M_f, before)


def test_factored_eigh_takes_the_symmetric_part_and_refuses_indefinite():
    rng = np.random.default_rng(1)
    F = rng.standard_normal((8, 8))
    M = F @ F.T
    E = 1e-3 * np.triu(np.ones((8, 8)), 1)
    np.testing.assert_allclose(FactoredEigh(M + E - E.T).eigenvalues, np.linalg.eigvalsh(M), rtol=1e-12)
    with pytest.raises(ValueError, match="the test matrix is not positive semi-definite"):
        FactoredEigh(-M, "the test matrix")


def test_as_times_checks_and_shapes():
    t_arr, tau = as_times([0.0, 2.0])
    assert tau.shape == (2, 1) and t_arr.shape == (2,)
    with pytest.raises(ValueError):
        as_times(-1.0)
