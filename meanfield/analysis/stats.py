"""The statistics of a scaling analysis, on plain arrays: power laws with Student-t
intervals, the extrapolation to m -> infinity, threshold crossings, and the phase rule of
Luo et al. on a fitted exponent.

power law (ordinary least squares in log-log coordinates, replicates kept separate):

    log y_k = log c + k log m_k + e_k,       k_hat = S_uv / S_uu,   u = log m, v = log y,
    s^2 = sum_j r_j^2 / (n - 2),    se(k_hat) = s / sqrt(S_uu),
    k in k_hat +- t_{n-2, (1+conf)/2} se(k_hat)      (Student t; exact for Gaussian e_k);

extrapolation to infinite width (nonlinear least squares, ``scipy.optimize.curve_fit``):

    y = a + b m^-p,  p > 0,    a = the m -> inf limit,
    a, p in  estimate +- t_{n-3, (1+conf)/2} se,   cov = s^2 (J^T J)^-1 at the optimum,
    and where an F-test does not resolve the correction: a = mean(y) +- t_{n-1} sd / sqrt(n);

the phase of a width family (Luo, Xu, Ma & Zhang 2021, from the exponent k of the
relative weight change ||W_t - W_0|| / ||W_0|| against m, a band |k| <= tol):

    linear     k < -tol     the weights freeze as m grows: kernel (lazy) regime
    critical   |k| <= tol   the relative movement keeps its size as m grows
    condensed  k > tol      the relative change grows with m (neurons condense)

A verdict needs the data behind it: when the confidence interval of k reaches past both
edges of the band (lo < -tol and hi > tol) the data agree with freezing and with growing
alike, and the family is ``undetermined``; otherwise the point estimate decides. The words
of ``parameterization.Regime`` (rich / lazy) are ``RICH_LAZY[phase]`` where the exponent names
them; a critical family keeps the size of its movement, which is rich (mean field) or lazy
(``lazy`` at a large alpha moves ~ 1/alpha at every width) by that size: the verdict of its
runs (``families.ScalingRow.words``), not by its exponent.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.stats import f as f_distribution
from scipy.stats import t as t_distribution

RICH_LAZY = {"linear": "lazy", "condensed": "condensed", "undetermined": "undetermined"}
"""Luo et al.'s phase of a width family in the rich / lazy words of the rest of meanfield, where the
exponent alone names them; not "critical", rich or lazy by the size of the movement."""

NAN_PAIR = (math.nan, math.nan)
"""The interval of a fit that could not be made."""


@dataclass(frozen=True)
class PowerLawFit:
    """y = prefactor * x^exponent, fitted in log-log coordinates (see the module docstring).

    ``prefactor`` is exp(intercept): the median, not the mean, of y at x = 1 under
    log-normal scatter. ``residual_std`` is s, the scatter of log y about the line.
    """

    exponent: float
    exponent_ci: tuple[float, float]
    prefactor: float
    r2: float
    n: int
    residual_std: float
    stderr: float
    confidence: float

    def __call__(self, x):
        """The fitted law at x: prefactor * x^exponent (float64, the shape of x)."""
        return self.prefactor * np.asarray(x, np.float64) ** self.exponent

    @classmethod
    def missing(cls, n: int = 0, confidence: float = math.nan) -> PowerLawFit:
        """The fit that could not be made (n points were there): every number NaN."""
        return cls(math.nan, NAN_PAIR, math.nan, math.nan, n, math.nan, math.nan, confidence)


@dataclass(frozen=True)
class Extrapolation:
    """y = limit + b m^-p, fitted by nonlinear least squares (see ``extrapolate``); ``flat``
    where no correction was resolved and the limit is the mean (b = 0, p NaN)."""

    limit: float
    limit_ci: tuple[float, float]
    b: float
    p: float
    p_ci: tuple[float, float]
    n: int
    residual_std: float
    confidence: float
    flat: bool = False

    def __call__(self, m):
        """The fitted law at m: limit + b m^-p, or the limit itself where ``flat`` (float64, the shape of m)."""
        m = np.asarray(m, np.float64)
        return self.limit + (0.0 * m if self.flat else self.b * m ** -self.p)

    @classmethod
    def missing(cls, n: int = 0, confidence: float = math.nan) -> Extrapolation:
        """The extrapolation that could not be made: every number NaN."""
        return cls(math.nan, NAN_PAIR, math.nan, math.nan, NAN_PAIR, n, math.nan, confidence)


def power_law(x, y, confidence: float = 0.95) -> PowerLawFit:
    """The power law y = c x^k fitted by least squares of log y on log x, with a Student-t
    interval on the exponent k, as a PowerLawFit (``exponent`` k, ``exponent_ci``,
    ``prefactor`` c, ``r2``, ``n``, ``residual_std`` s, ``stderr`` se(k)):

        k = S_uv / S_uu,  u = log x, v = log y,  S_uv = sum_j (u_j - mean u)(v_j - mean v);
        se(k) = s / sqrt(S_uu),  s^2 = RSS / (n - 2);  c = exp(mean v - k mean u);
        k in k +- t_{n-2, (1+confidence)/2} se(k);   r2 = 1 - RSS / S_vv.

    Pairs with a NaN (failed points) are dropped; replicates at one x are separate
    observations. ValueError for non-positive or infinite values, fewer than 3 points or
    fewer than 2 distinct x.
    """
    x, y = _observations(x, y, min_points=3, min_distinct=2, what="a power law")
    _require_positive(x=x, y=y)
    u, v = np.log(x), np.log(y)
    du, dv = u - u.mean(), v - v.mean()
    suu = du @ du
    slope = (du @ dv) / suu
    residuals = dv - slope * du
    rss, tss = residuals @ residuals, dv @ dv
    s = math.sqrt(rss / (len(u) - 2))
    stderr = s / math.sqrt(suu)
    return PowerLawFit(
        exponent=float(slope),
        exponent_ci=_interval(slope, stderr, len(u) - 2, confidence),
        prefactor=math.exp(v.mean() - slope * u.mean()),
        r2=float(1.0 - rss / tss) if tss > 0 else 1.0,
        n=len(u),
        residual_std=float(s),
        stderr=float(stderr),
        confidence=confidence,
    )


P_BOUNDS = (1e-6, 50.0)
"""The range of the correction exponent p of ``extrapolate``."""


def extrapolate(m, y, confidence: float = 0.95) -> Extrapolation:
    """The law y = a + b m^-p (p > 0) fitted by nonlinear least squares, as an Extrapolation
    (``limit`` a and ``limit_ci``, ``b``, ``p`` and ``p_ci``): a is the m -> inf limit.

    Widths are scaled by the smallest, x = m / m_min, so y = a + c x^-p with c = b m_min^-p
    is well conditioned. The start is the best p of a grid (for each p, a and c are linear
    least squares), refined by ``scipy.optimize.curve_fit`` within P_BOUNDS. Intervals
    a +- t_{n-3} se(a) and p +- t_{n-3} se(p), with cov = s^2 (J^T J)^-1 at the optimum,
    s^2 = RSS / (n - 3).

    Where the data do not resolve the correction (F-test of the fit against y = a, 2 and
    n - 3 degrees of freedom, at level 1 - confidence; or y exactly constant), a and p
    trade for each other (a shift of a against a slowly decaying b m^-p) and neither is
    determined: the result is then the flat model, a = mean(y) +- t_{n-1} sd(y) / sqrt(n),
    b = 0, p = NaN, ``flat`` True. This is the case of a critical (mean-field) family.

    Limits: three parameters from a handful of widths. The intervals are linearized
    (asymptotic), and the F-test is approximate (p is not identified under y = a). The
    model has one correction term; a pre-asymptotic crossover within the widths biases a.
    NaN pairs are dropped; ValueError with fewer than 4 points or fewer than 3 distinct m,
    RuntimeError if the fit does not converge.
    """
    m, y = _observations(m, y, min_points=4, min_distinct=3, what="an extrapolation")
    _require_positive(m=m)
    if np.ptp(y) <= 8 * np.finfo(float).eps * np.abs(y).max():
        return _flat(y, confidence)
    x = m / m.min()
    rss_flat = float(np.sum((y - y.mean()) ** 2))
    start, rss_start = _start(x, y)
    try:
        fit = _fit_correction(x, y, start, m.min(), confidence)
    except RuntimeError:  # no convergence: fine if even the start says there is nothing to resolve
        if _resolved(rss_flat, rss_start, len(y), confidence):
            raise
        return _flat(y, confidence)
    rss = fit.residual_std ** 2 * (len(y) - 3)
    return fit if _resolved(rss_flat, rss, len(y), confidence) else _flat(y, confidence)


def _fit_correction(x, y, start, scale: float, confidence: float) -> Extrapolation:
    """curve_fit of a + c x^-p from ``start``, and the t-intervals of a and p; b = c scale^p."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        (a, c, p), _ = optimize.curve_fit(_correction, x, y, p0=start,
                                          bounds=([-np.inf, -np.inf, P_BOUNDS[0]], [np.inf, np.inf, P_BOUNDS[1]]))
    residuals = y - _correction(x, a, c, p)
    dof = len(x) - 3
    s = math.sqrt(residuals @ residuals / dof)
    with np.errstate(invalid="ignore"):  # 0 * inf: an exact fit whose p is not determined
        se_a, se_p = s * np.sqrt(np.diag(_inverse_normal(x, c, p)))[[0, 2]]
    return Extrapolation(
        limit=float(a),
        limit_ci=_interval(a, se_a, dof, confidence),
        b=float(c * scale ** p),
        p=float(p),
        p_ci=_interval(p, se_p, dof, confidence),
        n=len(x),
        residual_std=s,
        confidence=confidence,
    )


def _resolved(rss_flat: float, rss: float, n: int, confidence: float) -> bool:
    """F-test: does a + b m^-p (3 parameters, residual sum rss) explain y better than a
    (1 parameter, rss_flat) at level 1 - confidence?"""
    if rss == 0.0:
        return True
    f = (rss_flat - rss) / 2.0 / (rss / (n - 3))
    return bool(f_distribution.sf(f, 2, n - 3) < 1.0 - confidence)


def _flat(y, confidence: float) -> Extrapolation:
    """y = a: the mean with its t-interval (n - 1 degrees of freedom)."""
    sd = float(np.std(y, ddof=1))
    mean = float(y.mean())
    return Extrapolation(mean, _interval(mean, sd / math.sqrt(len(y)), len(y) - 1, confidence), 0.0, math.nan,
                         NAN_PAIR, len(y), sd, confidence, flat=True)


def _correction(x, a, c, p):
    """The model of ``extrapolate`` on scaled widths: a + c x^-p."""
    return a + c * x ** -p


def _start(x, y) -> tuple[tuple[float, float, float], float]:
    """(a, c, p) at the best p of a grid, a and c solved linearly for each p; and its RSS."""
    best = (math.inf, (float(y.mean()), 0.0, 1.0))
    for p in np.geomspace(0.01, 10.0, 100):
        design = np.column_stack([np.ones_like(x), x ** -p])
        (a, c), *_ = np.linalg.lstsq(design, y, rcond=None)
        rss = float(np.sum((design @ (a, c) - y) ** 2))
        best = min(best, (rss, (float(a), float(c), float(p))), key=lambda item: item[0])
    return best[1], best[0]


def _inverse_normal(x, c, p) -> np.ndarray:
    """(J^T J)^-1 of the model a + c x^-p at (c, p); infinite where J^T J is singular."""
    power = x ** -p
    jacobian = np.column_stack([np.ones_like(x), power, -c * power * np.log(x)])
    normal = jacobian.T @ jacobian
    if np.linalg.cond(normal) > 1.0 / np.finfo(float).eps:
        return np.full((3, 3), np.inf)
    return np.linalg.inv(normal)


def _interval(estimate, stderr, dof, confidence) -> tuple[float, float]:
    """The Student-t interval estimate +- t_{dof, (1+confidence)/2} stderr, as (lo, hi);
    ValueError unless 0 < confidence < 1."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    half = t_distribution.ppf(0.5 + confidence / 2.0, dof) * stderr
    return float(estimate - half), float(estimate + half)


def _observations(x, y, *, min_points: int, min_distinct: int, what: str):
    """x, y as float arrays with NaN pairs dropped, checked for size and spread."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({len(x)} and {len(y)})")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{what} needs finite values")
    if len(x) < min_points:
        raise ValueError(f"{what} needs at least {min_points} points (NaN dropped), got {len(x)}")
    distinct = len(np.unique(x))
    if distinct < min_distinct:
        raise ValueError(f"{what} needs at least {min_distinct} distinct x, got {distinct}")
    return x, y


def _require_positive(**arrays) -> None:
    """ValueError naming the first array (by its keyword) with a value <= 0: a log scale needs positives."""
    for name, values in arrays.items():
        if (values <= 0).any():
            raise ValueError(f"needs positive {name} (log scale), got {values[values <= 0][0]:g}")


def crossing(x, y, level: float) -> float:
    """Where y first falls below ``level`` as x grows: the x* with log y linear in log x
    between the two grid points around the crossing,

        log x* = log x_i + (log level - log y_i) (log x_{i+1} - log x_i) / (log y_{i+1} - log y_i).

    Replicates at one x are averaged in log space first. NaN when y is already below the
    level at the smallest x, or never falls below it (x* is then outside the grid).
    """
    x, y = _observations(x, y, min_points=1, min_distinct=1, what="a crossing")
    _require_positive(x=x, y=y)
    xs = np.unique(x)
    logy = np.array([np.log(y[x == value]).mean() for value in xs])
    below = np.flatnonzero(logy < math.log(level))
    if not len(below) or below[0] == 0:
        return math.nan
    i = below[0] - 1
    u0, u1 = math.log(xs[i]), math.log(xs[i + 1])
    return float(math.exp(u0 + (math.log(level) - logy[i]) * (u1 - u0) / (logy[i + 1] - logy[i])))


def classify(fit: PowerLawFit | float, tol: float = 0.1) -> str:
    """The phase of a width family (a string) from the exponent k of its relative weight
    change against the width (Luo et al. 2021; see the module docstring):

        linear (k < -tol), critical (|k| <= tol), condensed (k > tol), by the point estimate;
        undetermined when the fit's interval [lo, hi] has lo < -tol and hi > tol, or k is NaN.

    A bare number is classified as it is (no interval).
    """
    exponent, (lo, hi) = (fit.exponent, fit.exponent_ci) if isinstance(fit, PowerLawFit) else (float(fit), NAN_PAIR)
    if math.isnan(exponent) or (lo < -tol and hi > tol):
        return "undetermined"
    return "linear" if exponent < -tol else "condensed" if exponent > tol else "critical"
