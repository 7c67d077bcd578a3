"""meanfield.analysis.spectrum: the Funk-Hecke spectrum of a dot-product kernel on S^(d-1) and a
target's energy per degree (docs/design.md §1.10), against independent references: closed forms
(Bessel functions, monomials, counts of polynomials), the Fourier series on the circle, real
spherical harmonics on S^2 (scipy), the eigenvalues of a Gram matrix on random points, and
Monte Carlo."""

import math

import numpy as np
import pytest
from scipy.special import eval_gegenbauer, eval_legendre, gamma, iv

import meanfield as mf
from meanfield.analysis.spectrum import (
    degeneracy,
    funk_hecke,
    kernel_spectrum,
    legendre,
    sample_coefficients,
    teacher_coefficients,
)


def relu_ntk(t):
    """The bias-free relu NTK on unit inputs (w ~ N(0, I), a ~ N(0, 1)), written out here."""
    theta = np.arccos(np.clip(t, -1.0, 1.0))
    return (np.sin(theta) + (np.pi - theta) * t) / (2 * np.pi) + t * (np.pi - theta) / (2 * np.pi)


def sphere(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def relu_norm(a, W):
    """E_x f(x)^2 for f = sum_j a_j relu(w_j . x), x uniform on the unit sphere: the Gaussian
    arc-cosine formula divided by d (E|x|^2 = d for x ~ N(0, I), relu homogeneous of degree 1)."""
    d = W.shape[1]
    norms = np.linalg.norm(W, axis=1)
    cos = np.clip((W @ W.T) / np.outer(norms, norms), -1, 1)
    theta = np.arccos(cos)
    U = np.outer(norms, norms) * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi) / d
    return float(a @ U @ a)


def test_degeneracies_count_the_harmonics():
    """N(2, l) = 2, N(3, l) = 2l + 1, and for any d the harmonics of degree <= L span the
    polynomials of degree <= L on the sphere: C(L + d - 1, d - 1) + C(L + d - 2, d - 1)."""
    assert np.array_equal(degeneracy(2, np.arange(6)), [1, 2, 2, 2, 2, 2])
    assert np.array_equal(degeneracy(3, np.arange(6)), 2 * np.arange(6) + 1)
    for d in (4, 5, 7, 10):
        for L in (0, 1, 3, 8):
            dimension = math.comb(L + d - 1, d - 1) + (math.comb(L + d - 2, d - 1) if L >= 1 else 0)
            assert np.sum(degeneracy(d, np.arange(L + 1))) == pytest.approx(dimension, rel=1e-12)


def test_legendre_polynomials_of_dimension_d():
    t = np.linspace(-1, 1, 41)
    theta = np.arccos(t)
    P2 = legendre(2, 7, t)
    P3 = legendre(3, 7, t)
    P5 = legendre(5, 7, t)
    for deg in range(8):
        assert np.allclose(P2[deg], np.cos(deg * theta), atol=1e-13)
        assert np.allclose(P3[deg], eval_legendre(deg, t), atol=1e-13)
        assert np.allclose(P5[deg], eval_gegenbauer(deg, 1.5, t) / eval_gegenbauer(deg, 1.5, 1.0), atol=1e-13)


@pytest.mark.parametrize("d", [2, 3, 5, 7])
def test_the_exponential_kernel_has_bessel_eigenvalues(d):
    """e^(x . x') on S^(d-1): lambda_l = Gamma(d/2) 2^(d/2 - 1) I_(l + d/2 - 1)(1) (the plane-wave
    expansion; d = 2: I_l(1), the Fourier coefficients of e^cos(theta); d = 3: the modified
    spherical Bessel functions i_l(1)); the trace is e."""
    spectrum = kernel_spectrum(np.exp, d, 12)
    exact = gamma(d / 2) * 2 ** (d / 2 - 1) * iv(np.arange(13) + d / 2 - 1, 1.0)
    assert np.max(np.abs(spectrum.eigenvalues - exact)) <= spectrum.error < 1e-14  # the stated accuracy holds
    assert spectrum.trace == pytest.approx(math.e)
    assert -1e-12 < spectrum.tail < 1e-9


def test_a_monomial_kernel_has_a_finite_spectrum():
    """t^3 on S^3 (d = 4): only degrees 1 and 3, lambda_1 = E[t^4] = 3/(d(d+2)), and
    N_1 lambda_1 + N_3 lambda_3 = k(1) = 1."""
    d = 4
    spectrum = kernel_spectrum(lambda t: t**3, d, 9)
    lam = spectrum.eigenvalues
    assert lam[1] == pytest.approx(3 / (d * (d + 2)), rel=1e-13)
    assert np.max(np.abs(lam[[0, 2, 4, 5, 6, 7, 8, 9]])) < 1e-16
    assert spectrum.degeneracies[1] * lam[1] + spectrum.degeneracies[3] * lam[3] == pytest.approx(1.0, rel=1e-13)
    assert np.array_equal(spectrum.nonnegative()[[0, 2, 4]], [0, 0, 0])


def test_relu_ntk_on_the_circle_against_its_fourier_series():
    """d = 2: lambda_l is the l-th Fourier cosine coefficient of k(cos theta), here by the
    trapezoid rule on 2^16 points (the kink at theta = 0 makes it O(h^2): about 1e-10)."""
    spectrum = kernel_spectrum(relu_ntk, 2, 16)
    theta = 2 * np.pi * np.arange(1 << 16) / (1 << 16)
    values = relu_ntk(np.cos(theta))
    fourier = np.array([np.mean(values * np.cos(deg * theta)) for deg in range(17)])
    assert np.max(np.abs(spectrum.eigenvalues - fourier)) < 1e-8
    assert spectrum.error < 1e-14


def test_relu_ntk_on_s2_against_the_gram_matrix_of_random_points():
    """The eigenvalues of K/n on n random points of S^2 approach lambda_l with multiplicity
    2l + 1: the largest 1 + 3 + 5 + 7 of them, grouped by degree (the order of lambda_l), have
    the group means of lambda_l within a few per cent (fluctuations O(n^-1/2))."""
    rng = np.random.default_rng(0)
    X = sphere(rng, 1500, 3)
    gram = np.linalg.eigvalsh(relu_ntk(np.clip(X @ X.T, -1, 1)) / len(X))[::-1]
    spectrum = kernel_spectrum(relu_ntk, 3, 30)
    lam = spectrum.eigenvalues
    order = np.argsort(-lam)[:4]
    start = 0
    for deg in order:
        block = gram[start:start + 2 * deg + 1]
        assert np.mean(block) == pytest.approx(lam[deg], rel=0.05), deg
        start += 2 * deg + 1
    assert spectrum.trace == pytest.approx(np.trace(relu_ntk(np.ones((1, 1)))), rel=1e-15)


def test_teacher_energies_on_s2_against_real_spherical_harmonics():
    """c_l = sum_m <f, Y_lm>^2 with Y_lm the real spherical harmonics (scipy's sph_harm_y,
    orthonormal on the probability measure after a factor sqrt(4 pi)), by Gauss-Legendre in
    cos(theta) x the trapezoid in phi (the teacher's kinks along great circles: about 1e-6)."""
    from scipy.special import sph_harm_y

    W = np.array([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    a = np.array([1.0, -0.7])
    L = 4
    x, w = np.polynomial.legendre.leggauss(200)
    phi = np.arange(400) * 2 * np.pi / 400
    T, P = np.meshgrid(np.arccos(x), phi, indexing="ij")
    X = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T)], axis=-1)
    f = np.maximum(X @ W.T, 0) @ a
    weights = (w / 2)[:, None] / len(phi)
    direct = []
    for deg in range(L + 1):
        total = 0.0
        for m in range(-deg, deg + 1):
            Y = sph_harm_y(deg, abs(m), T, P)
            real = Y.real if m == 0 else math.sqrt(2) * (Y.real if m > 0 else Y.imag)
            total += np.sum(weights * f * real * math.sqrt(4 * np.pi)) ** 2
        direct.append(total)
    assert np.allclose(teacher_coefficients(a, W, "relu", L), direct, atol=1e-5)


def test_teacher_energies_add_up_to_the_norm():
    """sum_l c_l -> E f^2 (closed form for relu), the rest of order L^-3; odd degrees >= 3 of
    a relu are 0; a named activation is the same as the function."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((3, 4)) * np.array([[1.0], [0.5], [2.0]])
    a = np.array([0.5, -1.0, 0.3])
    c = teacher_coefficients(a, W, "relu", 200)
    norm = relu_norm(a, W)
    assert 0 <= norm - np.sum(c) < 1e-5 * norm
    assert np.max(np.abs(c[3::2])) < 1e-15 * norm
    assert np.allclose(teacher_coefficients(a, W, lambda z: np.maximum(z, 0), 10), c[:11], rtol=1e-13, atol=1e-15 * norm)


def test_sample_estimates_agree_with_the_exact_energies_within_their_errors():
    """A tanh teacher with |w| != 1 on S^3: the U-statistic from 3000 samples within 4 standard
    errors of the exact energies; the standard error matches the spread over repetitions."""
    rng = np.random.default_rng(2)
    d, L = 4, 4
    W = rng.standard_normal((2, d))
    a = np.array([1.0, 0.6])
    exact = teacher_coefficients(a, W, "tanh", L)
    X = sphere(rng, 3000, d)
    c, se = sample_coefficients(X, np.tanh(X @ W.T) @ a, L)
    assert np.all(np.abs(c - exact) < 4 * se + 1e-12), (c, exact, se)
    draws = [sample_coefficients(Y, np.tanh(Y @ W.T) @ a, 2) for Y in (sphere(rng, 300, d) for _ in range(40))]
    spread = np.std([draw[0] for draw in draws], axis=0, ddof=1)
    typical = np.mean([draw[1] for draw in draws], axis=0)
    assert np.all((spread > 0.6 * typical) & (spread < 1.6 * typical)), (spread, typical)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="d >= 2"):
        kernel_spectrum(np.exp, 1, 3)
    with pytest.raises(ValueError, match="did not converge"):
        funk_hecke(lambda t: np.sign(t - 0.3), 3, 2)
    with pytest.raises(ValueError, match="unit sphere"):
        sample_coefficients(np.ones((5, 3)), np.ones(5), 2)
    with pytest.raises(ValueError, match="neurons"):
        teacher_coefficients([1.0, 2.0], np.eye(3), "relu", 2)


def test_public_names():
    assert mf.kernel_spectrum is kernel_spectrum and mf.teacher_coefficients is teacher_coefficients
    assert mf.Spectrum.__doc__ and mf.sample_coefficients is sample_coefficients


def test_relu_ntk_eigenvalues_decay_like_l_to_the_minus_d():
    """Bietti & Mairal (2019), On the inductive bias of neural tangent kernels: the bias-free
    relu NTK on S^(d-1) has lambda_l ~ l^-d for even l and lambda_l = 0 for odd l >= 3. The local
    exponent between l = 40 and 80 (measured: -2.98 at d = 3, -4.88 at d = 5, nearing -5 slowly)."""
    for d, tolerance in ((3, 0.05), (5, 0.2)):
        lam = kernel_spectrum(relu_ntk, d, 80).eigenvalues
        assert math.log(lam[80] / lam[40]) / math.log(2) == pytest.approx(-d, abs=tolerance)
        assert np.max(np.abs(lam[3::2])) < 1e-15 and lam[1] > 0
