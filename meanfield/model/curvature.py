"""The curvature measures of a run on data and the step they set (docs/design.md §1.9).

``ntk_eigenvalue_max``: lambda_max(c J P J^T / n), the top eigenvalue of the learning-rate
weighted NTK on the training set over n (full-batch Euler on squared loss is stable when
dt lambda < 2). ``hessian_eigenvalue_max``: lambda_max(P^1/2 H P^1/2), the sharpness of the
training risk in the run's parameters, learning rates included. The products are those of
:mod:`solvers.curvature`; a Lanczos start vector comes from the run's curvature stream
SeedSequence([seed, 4, crc32(name)]) (§3.5), the same vector at every snapshot.
"""

from __future__ import annotations

import zlib

import numpy as np

from solvers import curvature as cv
from solvers.catalog import SQUARED

from ..errors import UsageError


def start_vector(seed: int, name: str, size: int) -> np.ndarray:
    """Lanczos' start vector for run ``name``: standard normal from SeedSequence([seed, 4, crc32(name)])."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4, zlib.crc32(name.encode())]))
    return rng.standard_normal(size)


def ntk_eigenvalue_max(net: cv.TwoLayerNet, rates, loss_scale: float, v0: np.ndarray) -> float:
    """lambda_max(c J P J^T / n) of ``net`` on its points."""
    return float(cv.top_eigenvalues(cv.ntk_operator(net, rates, loss_scale), 1, v0)[0])


def hessian_eigenvalue_max(net: cv.TwoLayerNet, y, loss: int, rates, loss_scale: float, v0: np.ndarray,
                           f=None, residual: bool = True) -> float:
    """lambda_max(P^1/2 H P^1/2) of the risk c (1/n) sum_k loss(f(x_k), y_k) at ``net``
    (f: the predictions the loss derivatives are taken at, by default net's own;
    ``residual`` False: the Gauss-Newton part alone, the Hessian of a tangent model)."""
    first, second = cv.loss_derivatives(loss, net.f() if f is None else f, y)
    op = cv.hessian_operator(net, rates, loss_scale, first, second, residual=residual)
    return float(cv.top_eigenvalues(op, 1, v0)[0])


def step_of(factor: float, lambda_0: float, key: str) -> float:
    """dt = c * 2 / lambda_0: the step ``factor`` = c times Euler's stability edge on squared
    loss (``key``: where the factor was set, for the message)."""
    if not 0 < lambda_0 < np.inf or not 0 < 2 * factor / lambda_0 < np.inf:
        raise UsageError(f"{key}.dt_factor: lambda_0 = {lambda_0:g} (the initial NTK's top eigenvalue over n) "
                         "sets no step: give a dt")
    return 2 * factor / lambda_0


class CurvatureMeasures:
    """The curvature measures a run records (``wanted``, a subset of measures.CURVATURE_MEASURES) on
    its training set, with its resolved numbers ``numbers`` (s, eta_a, eta_w, loss_scale,
    eta_c, eta_b). ``tangent``: the run is the tangent model at ``initial`` (its NTK is that of
    theta_0, its Hessian the Gauss-Newton matrix at theta_0 with l'' at its predictions)."""

    def __init__(self, wanted, X, y, act: int, loss: int, numbers: dict, v0: np.ndarray, tangent=None):
        self.wanted, self.X, self.y, self.act, self.loss = tuple(wanted), X, y, act, loss
        self.s, self.loss_scale = numbers["s"], numbers["loss_scale"]
        self.eta = (numbers["eta_a"], numbers["eta_w"], numbers.get("eta_c"), numbers.get("eta_b"))
        self.v0 = v0
        self.tangent, self._fixed = tangent, {}
        if tangent is not None:
            self.net0 = self._net(*tangent)
            rates = self.net0.rates(*self.eta)
            self._fixed["ntk_eigenvalue_max"] = ntk_eigenvalue_max(self.net0, rates, self.loss_scale, v0)

    def _net(self, a, W, b, c=None):
        return cv.TwoLayerNet(a, W, b, self.X, self.s, self.act, c_out=c)

    def __call__(self, a, W, b, c=None, f=None) -> dict:
        """The measures at the particles (a, W, b, c) (a tangent run: f, its predictions on
        the training set)."""
        out = {}
        if self.tangent is None:
            net = self._net(a, W, b, c)
            rates = net.rates(*self.eta)
            if "ntk_eigenvalue_max" in self.wanted:
                out["ntk_eigenvalue_max"] = ntk_eigenvalue_max(net, rates, self.loss_scale, self.v0)
            if "hessian_eigenvalue_max" in self.wanted:
                out["hessian_eigenvalue_max"] = hessian_eigenvalue_max(net, self.y, self.loss, rates,
                                                                       self.loss_scale, self.v0)
            return out
        if "ntk_eigenvalue_max" in self.wanted:
            out["ntk_eigenvalue_max"] = self._fixed["ntk_eigenvalue_max"]
        if "hessian_eigenvalue_max" in self.wanted:
            out["hessian_eigenvalue_max"] = self._tangent_hessian(f)
        return out

    def _tangent_hessian(self, f) -> float:
        """Squared loss: l'' = 1, the Gauss-Newton matrix is fixed and its spectrum is the NTK's
        over n, computed once (its Hessian is constant); otherwise at the predictions f."""
        if self.loss == SQUARED and "hessian_fixed" in self._fixed:
            return self._fixed["hessian_fixed"]
        rates = self.net0.rates(*self.eta)
        value = hessian_eigenvalue_max(self.net0, self.y, self.loss, rates, self.loss_scale, self.v0, f=f,
                                       residual=False)
        if self.loss == SQUARED:
            self._fixed["hessian_fixed"] = value
        return value
