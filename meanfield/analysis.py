"""Scaling analysis of a sweep (``meanfield analyze``): how a final measure depends on a grid
key (the width, by default), what that says about the regime, and where it goes as m -> inf.

Rows of the results table (``meanfield.table``) are grouped by every grid key except the
one swept against and ``seed`` (seeds are replicates, each an observation of its own);
only complete points enter. For each group and each run with the measure:

power law (ordinary least squares in log-log coordinates, replicates kept separate):

    log y_k = log c + p log m_k + e_k,       p_hat = S_uv / S_uu,   u = log m, v = log y,
    s^2 = sum_k r_k^2 / (n - 2),    se(p_hat) = s / sqrt(S_uu),
    p in p_hat +- t_{n-2, (1+conf)/2} se(p_hat)      (Student t; exact for Gaussian e_k);

extrapolation to infinite width (nonlinear least squares, ``scipy.optimize.curve_fit``):

    y = a + b m^-q,  q > 0,    a = the m -> inf limit,
    a, q in  estimate +- t_{n-3, (1+conf)/2} se,   cov = s^2 (J^T J)^-1 at the optimum,
    and where an F-test does not resolve the correction: a = mean(y) +- t_{n-1} sd / sqrt(n);

the regime of the width family (Luo, Xu, Ma & Zhang 2021, from the exponent p of the
relative weight change ||W_t - W_0|| / ||W_0|| against m, a band |p| <= tol):

    linear     p < -tol     the weights freeze as m grows: kernel (lazy) regime
    critical   |p| <= tol   O(1) relative movement: mean-field (rich) regime
    condensed  p > tol      the relative change grows with m (neurons condense)

A verdict needs the data behind it: when the confidence interval of p reaches past both
edges of the band (lo < -tol and hi > tol) the data agree with freezing and with growing
alike, and the family is ``undetermined``; otherwise the point estimate decides. The words
of ``parameterization.Regime`` (rich / lazy) are ``RICH_LAZY[phase]``. The regime is given
only for the displacement measures (``REGIME_MEASURES``); the exponent of a loss says nothing
about laziness. Note that the width exponent sees width only: a ``lazy`` run at a fixed
alpha moves ~ 1/alpha at every width, so it is ``critical`` against m (its small limit a
shows the laziness), and lazy only against alpha.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from .errors import UsageError
from .figures import figure_path, save_figure
from .table import Table, csv_cell, python_scalar, read_table, write_atomically

REPLICATE = "seed"
"""The column whose values are replicates, never a group coordinate."""

RICH_LAZY = {"linear": "lazy", "critical": "rich", "condensed": "condensed", "undetermined": "undetermined"}
"""Luo et al.'s phase of a width family in the rich / lazy words of the rest of meanfield."""

REGIME_MEASURES = ("displacement_w", "displacement_a", "displacement_mean")
"""The measures (relative displacements) whose width exponent names a regime."""

ANALYSIS_CSV, REGIMES_CSV = "analysis.csv", "regimes.csv"
NAN_PAIR = (math.nan, math.nan)


# ----------------------------------------------------------------------------- fits
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
        m = np.asarray(m, np.float64)
        return self.limit + (0.0 * m if self.flat else self.b * m ** -self.p)

    @classmethod
    def missing(cls, n: int = 0, confidence: float = math.nan) -> Extrapolation:
        """The extrapolation that could not be made: every number NaN."""
        return cls(math.nan, NAN_PAIR, math.nan, math.nan, NAN_PAIR, n, math.nan, confidence)


def power_law(x, y, confidence: float = 0.95) -> PowerLawFit:
    """Fit y = c x^p by least squares of log y on log x, with a Student-t interval on p.

        p = S_uv / S_uu,  u = log x, v = log y;  se(p) = s / sqrt(S_uu),  s^2 = RSS / (n - 2);
        p in p +- t_{n-2, (1+confidence)/2} se(p).

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
    """Fit y = a + b m^-p (p > 0) by nonlinear least squares: a is the m -> inf limit.

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
    return bool(stats.f.sf(f, 2, n - 3) < 1.0 - confidence)


def _flat(y, confidence: float) -> Extrapolation:
    """y = a: the mean with its t-interval (n - 1 degrees of freedom)."""
    sd = float(np.std(y, ddof=1))
    mean = float(y.mean())
    return Extrapolation(mean, _interval(mean, sd / math.sqrt(len(y)), len(y) - 1, confidence), 0.0, math.nan,
                         NAN_PAIR, len(y), sd, confidence, flat=True)


def _correction(x, a, c, p):
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
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    half = stats.t.ppf(0.5 + confidence / 2.0, dof) * stderr
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
    for name, values in arrays.items():
        if (values <= 0).any():
            raise ValueError(f"needs positive {name} (log scale), got {values[values <= 0][0]:g}")


# ----------------------------------------------------------------------------- regimes
def classify(fit: PowerLawFit | float, tol: float = 0.1) -> str:
    """The phase of a width family from the exponent p of its relative weight change.

    linear (p < -tol), critical (|p| <= tol), condensed (p > tol), by the point estimate;
    ``undetermined`` when the fit's interval reaches past both edges of the band
    (lo < -tol and hi > tol) or p is NaN. A bare number is classified as it is.
    """
    exponent, (lo, hi) = (fit.exponent, fit.exponent_ci) if isinstance(fit, PowerLawFit) else (float(fit), NAN_PAIR)
    if math.isnan(exponent) or (lo < -tol and hi > tol):
        return "undetermined"
    return "linear" if exponent < -tol else "condensed" if exponent > tol else "critical"


@dataclass(frozen=True)
class ScalingRow:
    """One family: a group of the sweep (its coordinates), one run, its fits and regimes."""

    group: dict
    run: str
    fit: PowerLawFit
    extrapolation: Extrapolation
    regime: str  # linear | critical | condensed | undetermined; "" for a measure that names none
    predicted: str  # the run's predicted_regime where the group agrees on one, "mixed" if not
    note: str = ""  # why a fit is missing

    @property
    def n(self) -> int:
        return self.fit.n

    @property
    def words(self) -> str:
        """The measured regime as rich / lazy / condensed / undetermined ("" if none)."""
        return RICH_LAZY.get(self.regime, "")


@dataclass(frozen=True)
class _Family:
    group: dict
    run: str
    rows: np.ndarray  # indices of the complete points of the group with a value
    x: np.ndarray
    y: np.ndarray
    predicted: str


def axes(table: Table) -> list[str]:
    """The axes of a sweep: its grid keys, then ``seed`` if seeds vary without being one."""
    keys = list(table.grid_keys)
    if REPLICATE not in keys and REPLICATE in table.columns and len(_unique(table[REPLICATE])) > 1:
        keys.append(REPLICATE)
    return keys


def measures(table: Table) -> dict[str, list[str]]:
    """Every numeric measure of the table with the runs that have it: {measure: [run, ...]}."""
    found: dict[str, list[str]] = {}
    for column in table.measure_columns():
        run, _, measure = column.rpartition(".")
        found.setdefault(measure, []).append(run)
    return found


def scaling(table, measure: str = "displacement_w", against: str = "model.width", runs=None,
            confidence: float = 0.95, tol: float = 0.1) -> list[ScalingRow]:
    """The power law (and m -> inf extrapolation) of ``measure`` against ``against`` for every
    group of the sweep and every run; ``table`` is a Table or a sweep directory.

    A family whose power law cannot be fitted has NaN numbers and its reason in ``note``;
    the extrapolation is NaN where it cannot be made (fewer than 3 distinct widths, no
    convergence). UsageError for an unknown measure, grid key or run.
    """
    return [_scale(family, measure, confidence, tol) for family in _families(_as_table(table), measure, against, runs)]


def regimes(table, measure: str = "displacement_w", against: str = "model.width", runs=None,
            confidence: float = 0.95, tol: float = 0.1) -> dict[str, np.ndarray]:
    """The measured regime of every point, from its family's fit: {``<run>.measured_regime``:
    one string per row of the table}, "" where the point did not enter a fit (failed, or
    no value)."""
    table = _as_table(table)
    out: dict[str, np.ndarray] = {}
    for family in _families(table, measure, against, runs):
        column = out.setdefault(f"{family.run}.measured_regime", np.full(len(table), "", dtype=object))
        column[family.rows] = _regime(_power_law_or_nan(family, confidence)[0], measure, tol)
    return out


def _scale(family: _Family, measure: str, confidence: float, tol: float) -> ScalingRow:
    fit, notes = _power_law_or_nan(family, confidence)
    try:
        extrapolation = extrapolate(family.x, family.y, confidence)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        extrapolation, notes = Extrapolation.missing(len(family.x), confidence), notes + [f"limit: {exc}"]
    return ScalingRow(family.group, family.run, fit, extrapolation, _regime(fit, measure, tol), family.predicted,
                      "; ".join(notes))


def _power_law_or_nan(family: _Family, confidence: float) -> tuple[PowerLawFit, list[str]]:
    """The family's power law, or a NaN fit and why."""
    try:
        return power_law(family.x, family.y, confidence), []
    except ValueError as exc:
        return PowerLawFit.missing(len(family.x), confidence), [f"power law: {exc}"]


def _regime(fit: PowerLawFit, measure: str, tol: float) -> str:
    return classify(fit, tol) if measure in REGIME_MEASURES else ""


def _families(table: Table, measure: str, against: str, runs) -> list[_Family]:
    """The complete points with a value of ``<run>.measure``, per group and run."""
    runs = _check(table, measure, against, runs)
    keys = [k for k in axes(table) if k not in (against, REPLICATE)]
    complete = np.flatnonzero(_complete(table))
    groups: dict[tuple, list[int]] = {}
    for i in complete:
        groups.setdefault(tuple(python_scalar(table[k][i]) for k in keys), []).append(int(i))
    x = np.asarray(table[against], np.float64)
    families = []
    for coordinates, rows in groups.items():
        for run in runs:
            y = np.asarray(table[f"{run}.{measure}"], np.float64)
            index = np.asarray([i for i in rows if not np.isnan(y[i])], dtype=np.int64)
            if len(index):
                families.append(_Family(dict(zip(keys, coordinates)), run, index, x[index], y[index],
                                        _predicted(table, run, index)))
    return families


def _check(table: Table, measure: str, against: str, runs) -> list[str]:
    """The runs to analyse; UsageError naming what exists when measure, against or runs do not."""
    found = measures(table)
    if measure not in found:
        raise UsageError(f"no measure {measure!r} in this sweep; measures: {', '.join(sorted(found)) or 'none'}")
    grid = axes(table)
    if against not in grid:
        raise UsageError(f"{against!r} is not a grid key of this sweep; grid keys: {', '.join(grid) or 'none'}")
    if table[against].dtype.kind not in "fi":
        raise UsageError(f"grid key {against!r} holds labels, not numbers: nothing to fit a power law against")
    if runs is None:
        return found[measure]
    runs = [runs] if isinstance(runs, str) else list(runs)
    unknown = [r for r in runs if r not in found[measure]]
    if unknown:
        raise UsageError(f"no run {', '.join(map(repr, unknown))} with {measure}; runs: {', '.join(found[measure])}")
    return runs


def _predicted(table: Table, run: str, index) -> str:
    column = table.columns.get(f"{run}.predicted_regime")
    if column is None:
        return ""
    labels = _unique(column[index])
    return str(labels[0]) if len(labels) == 1 else "mixed"


def _complete(table: Table) -> np.ndarray:
    status = table.columns.get("status")
    return np.ones(len(table), bool) if status is None else np.asarray(status).astype(str) == "complete"


def _unique(values) -> list:
    """The distinct values, in the order they first appear, as Python scalars."""
    return list(dict.fromkeys(python_scalar(v) for v in values))


def _directory(path) -> Path:
    """The sweep directory of a directory or of its results file."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def _as_table(table) -> Table:
    return table if isinstance(table, Table) else read_table(table)


# ----------------------------------------------------------------------------- xarray
def to_dataset(table):
    """The sweep as an ``xarray.Dataset``: one dimension per axis (``axes``: the grid keys,
    and ``seed`` where seeds vary without being one), coordinates their values in the order
    they appear; data variables every numeric ``<run>.<measure>`` column, ``seconds`` and
    ``status``. Cells without a point are NaN (``status``: "missing"). ValueError if two
    points share coordinates.
    """
    try:
        import xarray as xr
    except ImportError:
        raise ImportError("to_dataset needs xarray: pip install xarray") from None
    table = _as_table(table)
    dims = axes(table)
    coords = {k: _unique(table[k]) for k in dims}
    shape = tuple(len(v) for v in coords.values())
    cells = _cells(table, coords, shape)
    variables = {name: (dims, _fill(table[name], cells, shape, np.nan, np.float64))
                 for name in [*table.measure_columns(), "seconds"] if name in table.columns}
    if "status" in table.columns:
        variables["status"] = (dims, _fill(table["status"], cells, shape, "missing", object))
    return xr.Dataset(variables, coords={k: np.asarray(v) for k, v in coords.items()},
                      attrs={"name": table.name, "grid_keys": list(table.grid_keys)})


def _cells(table: Table, coords: dict, shape: tuple) -> np.ndarray:
    """The flat cell of every row in the product grid."""
    if not coords:
        cells = np.zeros(len(table), dtype=np.int64)
    else:
        lookups = {k: {v: j for j, v in enumerate(values)} for k, values in coords.items()}
        cells = np.ravel_multi_index([[lookups[k][python_scalar(x)] for x in table[k]] for k in coords], shape)
    if len(np.unique(cells)) < len(cells):
        raise ValueError(f"points share coordinates on the axes {', '.join(coords) or '(none)'}: not a grid")
    return cells


def _fill(values, cells, shape, missing, dtype) -> np.ndarray:
    out = np.full(int(np.prod(shape)), missing, dtype=dtype)
    out[cells] = np.asarray(values, dtype=dtype)
    return out.reshape(shape)


# ----------------------------------------------------------------------------- report
def report(directory, measure: str = "displacement_w", against: str = "model.width", runs=None,
           confidence: float = 0.95, tol: float = 0.1) -> str:
    """The scaling of a sweep directory as a plain-text table (see ``format_report``)."""
    return format_report(scaling(directory, measure, against, runs, confidence, tol), measure, against,
                         confidence, tol)


def format_report(rows: list[ScalingRow], measure: str, against: str, confidence: float = 0.95,
                  tol: float = 0.1) -> str:
    """One line per family: group coordinates, run, n, exponent [lo, hi], m -> inf limit
    [lo, hi], measured and predicted regime; the law, the rule and any notes around it."""
    keys = list(dict.fromkeys(k for row in rows for k in row.group))
    header = [*keys, "run", "n", f"exponent [{confidence:.0%}]", f"limit {against}->inf", "measured", "predicted"]
    lines = [[*(str(row.group.get(k, "")) for k in keys), row.run, str(row.n),
              _with_interval(row.fit.exponent, row.fit.exponent_ci, "+.3f"),
              _with_interval(row.extrapolation.limit, row.extrapolation.limit_ci, ".3g")
              + (" flat" if row.extrapolation.flat else ""),
              _regime_text(row), row.predicted or "-"] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *lines]]
    text = [f"{measure} ~ c {against}^exponent (log-log least squares, seeds as replicates); "
            f"limit: {measure} = a + b {against}^-p",
            *table]
    if not rows:
        text.append(f"(no complete point of this sweep has a value of {measure})")
    if any(row.extrapolation.flat for row in rows):
        text.append(f"flat: no correction b {against}^-p resolved (F-test): the limit is the mean over the points")
    if any(row.regime for row in rows):
        text.append(f"regime (Luo et al. 2021): linear = lazy if exponent < -{tol:g}, critical = rich if "
                    f"|exponent| <= {tol:g}, condensed if > {tol:g}; undetermined if the interval crosses the band")
    text += [f"note: {_family_text(row.run, row.group)}: {row.note}" for row in rows if row.note]
    return "\n".join(text)


def write_analysis(directory, rows: list[ScalingRow], measure: str, against: str) -> Path:
    """Write the rows as ``analysis.csv`` in the sweep directory (replaced atomically)."""
    return _write_records(_directory(directory) / ANALYSIS_CSV, [_record(row, measure, against) for row in rows])


def write_regimes(directory, table: Table, measured: dict[str, np.ndarray]) -> Path:
    """Write ``regimes.csv``: each point's coordinates and the measured regime of each run
    (from ``regimes``: the regime of the width family the point belongs to)."""
    keys = ["point", *axes(table)]
    records = [{**{k: python_scalar(table[k][i]) for k in keys if k in table.columns},
                **{name: column[i] for name, column in measured.items()}} for i in range(len(table))]
    return _write_records(_directory(directory) / REGIMES_CSV, records)


def _write_records(path: Path, records: list[dict]) -> Path:
    names = list(dict.fromkeys(k for record in records for k in record))

    def write(partial):
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            writer.writerows([csv_cell(record.get(k, "")) for k in names] for record in records)

    write_atomically(path, write)
    return path


def analyze(directory, measure: str = "displacement_w", against: str = "model.width", runs=None,
            figure_path=None, confidence: float = 0.95, tol: float = 0.1, within=(None, None),
            threshold: float | None = None, by: str | None = None) -> str:
    """``meanfield analyze``: the report of a sweep directory, written beside it as
    ``analysis.csv`` (one row per family) and, for a displacement measure, ``regimes.csv``
    (one row per point); drawn into ``figure_path`` if given. ``within = (lo, hi)`` keeps
    the points with ``against`` in [lo, hi] (either end None: open). With ``threshold``,
    also where the measure crosses that level along ``against`` and, with ``by``, how that
    crossing scales with ``by`` (``threshold_scaling``). Returns the report."""
    table = _within(_as_table(directory), against, *within)
    rows = scaling(table, measure, against, runs, confidence, tol)
    written = [write_analysis(directory, rows, measure, against)]
    if measure in REGIME_MEASURES:
        written.append(write_regimes(directory, table, regimes(table, measure, against, runs, confidence, tol)))
    if figure_path is not None:
        written.append(figure(table, measure, against, figure_path, runs, confidence))
    text = [format_report(rows, measure, against, confidence, tol)]
    if threshold is not None:
        text.append(format_threshold(table, measure, against, threshold, by, runs, confidence))
    return "\n".join([*text, *(f"wrote {path}" for path in written)])


def _within(table: Table, against: str, lo=None, hi=None) -> Table:
    """The rows of the table with ``against`` in [lo, hi] (None: no bound)."""
    if lo is None and hi is None:
        return table
    if against not in table.columns or table[against].dtype.kind not in "fi":
        raise UsageError(f"a fit range needs a numeric grid key; {against!r} is not one")
    x = np.asarray(table[against], np.float64)
    keep = (x >= (-np.inf if lo is None else lo)) & (x <= (np.inf if hi is None else hi))
    if not keep.any():
        raise UsageError(f"no point has {against} in [{lo}, {hi}]; its values: {', '.join(map(str, _unique(x)))}")
    return Table({k: v[keep] for k, v in table.columns.items()}, table.grid_keys, table.name, table.sweep_yaml)


# ----------------------------------------------------------------------------- thresholds
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


@dataclass(frozen=True)
class ThresholdRow:
    """One family's crossing x* of the level (NaN with a note where it is outside the grid)."""

    group: dict
    run: str
    crossing: float
    note: str = ""


def thresholds(table, measure: str, against: str, level: float, runs=None) -> list[ThresholdRow]:
    """For every group and run, the ``against`` value x* at which ``measure`` falls below
    ``level`` (``crossing``): e.g. the sample size n* a learner needs to reach a test loss."""
    rows = []
    for family in _families(_as_table(table), measure, against, runs):
        x = crossing(family.x, family.y, level)
        first = np.exp(np.log(family.y[family.x == family.x.min()]).mean())
        note = "" if not math.isnan(x) else (
            f"already below {level:g} at the smallest {against}" if first < level else f"never below {level:g}")
        rows.append(ThresholdRow(family.group, family.run, x, note))
    return rows


def threshold_scaling(rows: list[ThresholdRow], by: str, confidence: float = 0.95) -> list[tuple[dict, str, PowerLawFit]]:
    """The power law x* ~ c by^k of the crossings against the group key ``by`` (e.g. the
    sample complexity n* ~ d^k), per run and per group of the other keys."""
    families: dict[tuple, list[ThresholdRow]] = {}
    for row in rows:
        if by not in row.group:
            raise UsageError(f"--by {by}: not a grid key of this sweep besides the x axis; "
                             f"keys: {', '.join(row.group) or 'none'}")
        rest = tuple((k, v) for k, v in row.group.items() if k != by)
        families.setdefault((rest, row.run), []).append(row)
    out = []
    for (rest, run), members in families.items():
        try:
            fit = power_law([m.group[by] for m in members], [m.crossing for m in members], confidence)
        except ValueError:
            fit = PowerLawFit.missing(len(members), confidence)
        out.append((dict(rest), run, fit))
    return out


def format_threshold(table, measure: str, against: str, level: float, by: str | None = None, runs=None,
                     confidence: float = 0.95) -> str:
    """The crossings of ``level`` per family and, with ``by``, their power law in ``by``."""
    rows = thresholds(table, measure, against, level, runs)
    text = [f"{against}* where {measure} falls below {level:g} (log-log interpolation between grid points):"]
    text += [f"  {_family_text(row.run, row.group)}: {row.crossing:.4g}" + (f"  ({row.note})" if row.note else "")
             for row in rows]
    if by is not None:
        text.append(f"{against}* ~ c {by}^k ({confidence:.0%} interval):")
        text += [f"  {_family_text(run, rest)}: k = {_with_interval(fit.exponent, fit.exponent_ci, '+.2f')} "
                 f"(n = {fit.n})" for rest, run, fit in threshold_scaling(rows, by, confidence)]
    return "\n".join(text)


def _record(row: ScalingRow, measure: str, against: str) -> dict:
    fit, ext = row.fit, row.extrapolation
    return {**row.group, "run": row.run, "measure": measure, "against": against, "n": row.n,
            "exponent": fit.exponent, "exponent_lo": fit.exponent_ci[0], "exponent_hi": fit.exponent_ci[1],
            "prefactor": fit.prefactor, "r2": fit.r2, "residual_std": fit.residual_std,
            "limit": ext.limit, "limit_lo": ext.limit_ci[0], "limit_hi": ext.limit_ci[1],
            "limit_flat": ext.flat, "b": ext.b, "p": ext.p, "p_lo": ext.p_ci[0], "p_hi": ext.p_ci[1],
            "regime": row.regime, "regime_words": row.words, "predicted_regime": row.predicted, "note": row.note}


def _with_interval(value: float, interval: tuple[float, float], spec: str) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:{spec}} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def _regime_text(row: ScalingRow) -> str:
    if not row.regime:
        return "-"
    return row.regime if row.words in (row.regime, "") else f"{row.regime} ({row.words})"


def _family_text(run: str, group: dict) -> str:
    return " ".join([run, *(f"{k}={v}" for k, v in group.items())])


# ----------------------------------------------------------------------------- figure
def figure(table, measure: str, against: str, path, runs=None, confidence: float = 0.95) -> Path:
    """Draw ``measure`` against ``against`` on log-log axes: per group and run, the mean over
    seeds at each value (markers, min-max bars) and the fitted power law (dashed). The
    format follows the suffix (.png, .pdf, .svg)."""
    from matplotlib.figure import Figure

    path = figure_path(path)
    table = _as_table(table)
    families = _families(table, measure, against, runs)
    if not families:
        raise UsageError(f"no complete point of this sweep has a value of {measure}: nothing to draw")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for i, family in enumerate(families):
        _draw(ax, family, _power_law_or_nan(family, confidence)[0], f"C{i % 10}")
    ax.set(xscale="log", yscale="log", xlabel=against, ylabel=measure, title=f"{table.name or 'sweep'}: {measure}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def _draw(ax, family: _Family, fit: PowerLawFit, color: str) -> None:
    xs = np.unique(family.x)
    groups = [family.y[family.x == x] for x in xs]
    mean = np.array([g.mean() for g in groups])
    bars = [mean - [g.min() for g in groups], [g.max() for g in groups] - mean]
    label = _family_text(family.run, family.group)
    if not math.isnan(fit.exponent):
        label += f" (exponent {fit.exponent:+.2f})"
    ax.errorbar(xs, mean, yerr=bars, fmt="o", color=color, capsize=3, label=label)
    if not math.isnan(fit.exponent):
        dense = np.geomspace(xs.min(), xs.max(), 50)
        ax.plot(dense, fit(dense), "--", color=color, lw=1.2)
