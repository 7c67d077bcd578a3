"""Gaussian expectations: the closed-form moments against quadrature, the angle against
arccos where arccos is accurate, and the branch-free polynomial arccos/arcsin against libm."""

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import reference_ntk as ref  # noqa: E402

from solvers._jit import jit  # noqa: E402
from solvers.gaussian import acos_poly, angles, asin_poly, gaussian_moments, relu_moments  # noqa: E402

# ------------------------------------------------------------------ the moments


def test_gaussian_moments_against_quadrature():
    cases = [(1.0, 0.3, 2.0), (1.5, -1.2, 1.3), (0.7, 0.6999, 0.7), (1.0, 1.0, 1.0),
             (0.3, 0.0, 0.8), (1.0, -0.999, 1.0), (2.0, -2.0, 2.0)]
    for act in ("relu", "erf", "quadratic"):
        for q in cases:
            got = gaussian_moments(q[0], q[1], q[2], act)
            want = ref.moments_quadrature(*q, act)
            np.testing.assert_allclose([float(g) for g in got], want, rtol=1e-9, atol=1e-12, err_msg=f"{act} {q}")
    e, ed = gaussian_moments(np.array([0.5, 2.0]), np.array([-0.3, 1.0]), 1.0, "linear")
    np.testing.assert_array_equal(e, [-0.3, 1.0])
    np.testing.assert_array_equal(ed, [1.0, 1.0])
    with pytest.raises(ValueError, match="tanh"):
        gaussian_moments(1.0, 0.5, 1.0, "tanh")


def test_relu_moments_vanish_with_either_variance():
    e, ed = relu_moments(np.array([0.0, 2.0]), np.array([0.5 * math.pi, 0.0]))
    np.testing.assert_array_equal(e, [0.0, 1.0])
    np.testing.assert_array_equal(ed, [0.0, 0.5])


# ------------------------------------------------------------------ the angle


def test_angles_are_exact_for_parallel_rows_and_accurate_near_0_and_pi():
    rng = np.random.default_rng(3)
    U = rng.normal(size=(6, 4))
    t = angles(U)
    assert np.all(np.diag(t) == 0.0) and np.array_equal(t, angles(U, U.copy()))
    cos = np.clip((U / np.linalg.norm(U, axis=1)[:, None]) @ (U / np.linalg.norm(U, axis=1)[:, None]).T, -1, 1)
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(t[off], np.arccos(cos)[off], rtol=1e-12)
    # rows 1e-9 rad apart, parallel and antiparallel: arccos of the cosine cannot resolve these
    e1, e2 = np.eye(2)
    near = np.array([e1, math.cos(1e-9) * e1 + math.sin(1e-9) * e2, -3.0 * e1])
    t = angles(near[:1], near)
    np.testing.assert_allclose(t[0], [0.0, 1e-9, math.pi], rtol=1e-12)
    assert angles(np.zeros((1, 2)), near)[0, 1] == pytest.approx(0.5 * math.pi, rel=1e-15)


# ------------------------------------------------------------------ arccos, branch-free


@jit
def _acos_poly_array(x, out):
    for i in range(x.shape[0]):
        out[i] = acos_poly(x[i])


@jit
def _asin_poly_array(x, out):
    for i in range(x.shape[0]):
        out[i] = asin_poly(x[i])


def elementwise(loop, x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    loop(x, out)
    return out


def test_acos_poly_is_arccos_to_an_ulp():
    x = np.concatenate([np.linspace(-1.0, 1.0, 2_000_001), [-1.0, 1.0, -0.5, 0.5, 0.0, -0.0],
                        np.nextafter([1.0, -1.0, 0.5, -0.5], 0.0), 1.0 - np.geomspace(1e-16, 1e-3, 200),
                        -1.0 + np.geomspace(1e-16, 1e-3, 200)])
    err = np.abs(elementwise(_acos_poly_array, x) - np.arccos(x))
    assert err.max() <= 4.5e-16, (err.max(), x[err.argmax()])  # one ulp of pi
    assert acos_poly(1.0) == 0.0
    assert abs(acos_poly(-1.0) - math.pi) <= 4.5e-16
    assert np.abs(elementwise(_asin_poly_array, x) - np.arcsin(x)).max() <= 4.5e-16
    tiny = np.geomspace(1e-300, 0.5, 2000)
    np.testing.assert_allclose(elementwise(_asin_poly_array, tiny), np.arcsin(tiny), rtol=5e-16, atol=0)
