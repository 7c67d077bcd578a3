"""What a run measures at every snapshot (docs/design.md §1.7).

    loss_train, loss_test   (1/n) sum_k loss(f(x_k), y_k) on each set (unscaled by the preset)
    f_test                  the predictions on the test set [n_test]
    displacement_w          ||W_t - W_0||_F / ||W_0||_F
    displacement_a          ||a_t - a_0|| / ||a_0||
    displacement_wb         ||(W_t, b_t) - (W_0, b_0)||_F / ||(W_0, b_0)||_F (record.measures)
    output_bias             the output bias c_t (model.output_bias)
    displacement_mean       (1/m) sum_i |theta_i(t) - theta_i(0)|, theta_i = (a_i, w_i[, b_i])
    wasserstein2            W2 between the particle measures at 0 and t
    kernel_distance         1 - <K_0, K_t>_F / (||K_0|| ||K_t||) on a fixed probe set
    kernel_alignment        y^T K_t y / (||K_t|| |y|^2) on the probe set
    teacher_alignment       output-mass-weighted cosine of the neurons to the teacher
    gap_ntk                 rms of f_test - f_test of the scenario's ntk run at the same time
    margin                  min_k y_k f(x_k) on the training set (record.measures)
    normalized_margin       margin / N(theta), N of degree L in theta (record.measures):
                            both layers s sum_i |theta_i|^L, output layer alone s m rms(a);
                            a kernel flow from f_0 = 0: its RKHS norm sqrt(f^T K^+ f)

Every function here is a plain function of arrays; ``meanfield.run`` decides which apply.
"""

from __future__ import annotations

import numpy as np

from .kinds import SOLVERS, can

# The table of measures (every measure once: its shape, the kinds that record it, whether it is
# optional or needs a test set, its panel) is meanfield.model.measures; its lists are read off there.


def mean_loss(f, y, loss) -> float:
    """(1/n) sum_k loss(f_k, y_k) for a loss code of ``solvers.losses``."""
    from solvers.losses import loss_and_derivative  # here: reading a file's verdict needs no Numba

    f = np.asarray(f)
    return float(loss_and_derivative(loss, f, np.asarray(y, f.dtype), np.empty_like(f)))


def relative_change(x, x0) -> float:
    """||x - x0|| / ||x0|| (Frobenius); infinite when x0 = 0 and x moved, 0 when neither."""
    moved = float(np.linalg.norm(np.asarray(x, np.float64) - x0))
    base = float(np.linalg.norm(x0))
    if base == 0.0:
        return 0.0 if moved == 0.0 else float("inf")
    return moved / base


def mean_particle_displacement(a, W, b, a0, W0, b0) -> float:
    """(1/m) sum_i |theta_i - theta_i(0)| over the full particle (a_i, w_i[, b_i])."""
    sq = (np.asarray(a, np.float64) - a0) ** 2 + np.sum((np.asarray(W, np.float64) - W0) ** 2, axis=1)
    if b is not None:
        sq += (np.asarray(b, np.float64) - b0) ** 2
    return float(np.mean(np.sqrt(sq)))


def displacement_wb(W, b, W0, b0) -> float:
    """||(W, b) - (W0, b0)||_F / ||(W0, b0)||_F: the first layer's weights and biases together
    (Luo et al.'s relative change); displacement_w for a model without bias (b None)."""
    if b is None:
        return relative_change(W, W0)
    return relative_change(np.column_stack([W, b]), np.column_stack([W0, b0]))


OF_PARTICLES = {
    "displacement_w": lambda a, W, b, a0, W0, b0: relative_change(W, W0),
    "displacement_wb": lambda a, W, b, a0, W0, b0: displacement_wb(W, b, W0, b0),
    "displacement_a": lambda a, W, b, a0, W0, b0: relative_change(a, a0),
    "displacement_mean": mean_particle_displacement,
}
"""The measures of the particles (a, W, b) against where they started, (a0, W0, b0), alone:
name -> f(a, W, b, a0, W0, b0). A particle run records each that the table of measures says it
records (meanfield.model.measures); a new one is a row there and an entry here."""


# ---------------------------------------------------------------- margins (docs/design.md §1.7)


def margin(f, y) -> float:
    """min_k y_k f_k: the smallest signed margin over the training set (> 0: every sample classified)."""
    return float(np.min(np.asarray(y, np.float64) * np.asarray(f, np.float64)))


def particle_norm(a, W, b, s: float, degree: int, output_only: bool) -> float:
    """N(theta) of the network f = s sum_i a_i sigma(w_i . x + b_i), sigma positively homogeneous
    of degree k, so that min y f / N does not change when the trained parameters are scaled.

    Both layers trained: f is homogeneous of degree L = 1 + k in theta_i = (a_i, w_i[, b_i]), and
    N = s sum_i |theta_i|^L; for relu and s = 1/m, (1/m) sum_i (a_i^2 + |w_i|^2), the mean of
    |theta_i|^2 by which Chizat & Bach (2020, COLT, 'Implicit bias of gradient descent for wide
    two-layer neural networks trained with the logistic loss') divide the margin.
    Output layer alone (w, b fixed): f = sum_i (s sqrt(m) a_i) phi_i(x) / sqrt(m) is linear in a,
    phi_i = sigma(w_i . x + b_i), and N = s sqrt(m) |a| = s m sqrt((1/m) sum_i a_i^2), the norm of
    f's coefficients in the random features phi_i / sqrt(m) (kernel (1/m) sum_i phi_i(x) phi_i(x')):
    an upper bound of f's norm in that RKHS, equal where a lies in the span of the features on the
    data. For s = 1/m it is sqrt((1/m) sum_i a_i^2), Chizat & Bach's F2 normalisation (their
    blog's code; their paper's divides by |a| / m, sqrt(m) times smaller).
    """
    a = np.asarray(a, np.float64)
    if output_only:
        return float(s * np.sqrt(a.size) * np.linalg.norm(a))
    squared = a**2 + np.sum(np.asarray(W, np.float64) ** 2, axis=1)
    if b is not None:
        squared = squared + np.asarray(b, np.float64) ** 2
    return float(s * np.sum(squared ** ((1 + degree) / 2)))


def kernel_norm(f, eigenvalues, eigenvectors, rcond: float = 1e-12) -> float:
    """||f||_K = sqrt(f^T K^+ f) for K = V diag(lambda) V^T on the training set: the RKHS norm of
    the kernel predictor f = K alpha (f - f_0 of a kernel flow from f_0 = 0 lies in the range of
    K), the pseudo-inverse leaving out eigenvalues below rcond lambda_max."""
    keep = eigenvalues > rcond * max(float(eigenvalues.max()), 0.0)
    coefficients = eigenvectors[:, keep].T @ np.asarray(f, np.float64)
    return float(np.sqrt(np.sum(coefficients**2 / eigenvalues[keep])))


# ---------------------------------------------------------------- regime measures


def kernel_distance(K0, Kt) -> float:
    """1 - <K0, Kt>_F / (||K0||_F ||Kt||_F): 0 when the kernel only rescales, up to 1."""
    norm = float(np.linalg.norm(K0) * np.linalg.norm(Kt))
    return 0.0 if norm == 0.0 else 1.0 - float(np.sum(K0 * Kt)) / norm


def kernel_target_alignment(K, y) -> float:
    """y^T K y / (||K||_F ||y||^2) (Cristianini et al. 2002): 1 when K = y y^T up to scale."""
    y = np.asarray(y, np.float64)
    norm = float(np.linalg.norm(K) * (y @ y))
    return 0.0 if norm == 0.0 else float(y @ K @ y) / norm


def teacher_alignment(a, W, teacher_W, *, signed=True) -> float:
    """Output-mass-weighted alignment of the neurons with their nearest teacher direction.

        A = sum_i |a_i| |w_i| max_j c_ij / sum_i |a_i| |w_i|,  c_ij = cos(w_i, w*_j)

    (|cos| when ``signed`` is False, for targets even in w*, e.g. He_2). A = 1 when all the
    output mass sits on teacher directions (Chizat & Bach 2018); near 0 for random neurons
    in high dimension.
    """
    W = np.asarray(W, np.float64)
    norms = np.linalg.norm(W, axis=1)
    cos = (W @ teacher_W.T) / (np.maximum(norms, 1e-300)[:, None] * np.linalg.norm(teacher_W, axis=1))
    best = (cos if signed else np.abs(cos)).max(axis=1)
    mass = np.abs(np.asarray(a, np.float64)) * norms
    total = mass.sum()
    return 0.0 if total == 0.0 else float(mass @ best / total)


def particle_cloud(a, W, b=None) -> np.ndarray:
    """The particles theta_i = (a_i, w_i[, b_i]) as points of R^(1+d[+1]), float64."""
    columns = [np.asarray(a, np.float64)[:, None], np.asarray(W, np.float64)]
    if b is not None:
        columns.append(np.asarray(b, np.float64)[:, None])
    return np.hstack(columns)


def wasserstein2(cloud0, cloud1) -> float:
    """W2 between the empirical measures (1/m) sum_i delta_{theta_i}, exact transport:

        W2^2 = min_P sum_ij P_ij |x_i - y_j|^2  over plans P with marginals 1/m and 1/m'.

    For two clouds of m points each (every run's case) an optimal plan is a permutation
    (Birkhoff), so W2^2 = min_sigma (1/m) sum_i |x_i - y_sigma(i)|^2, an assignment problem that
    scipy's linear_sum_assignment solves exactly, 20-40x faster than POT's network simplex at
    m = 512 (docs/design.md §1.7); the costs are POT's (:func:`squared_distances`) and summed as
    POT sums them (:func:`assignment_cost`), so both give the same bits where the optimum is
    unique. Clouds of different sizes go to POT's exact transport (``ot.emd2``).

    W2 is homogeneous of degree one, W2(c x, c y) = c W2(x, y): the clouds are divided by the
    power of two nearest their largest coordinate (exact in floating point, so the bits of an
    ordinary W2 are those of the unscaled problem), and the result multiplied back. Squared
    distances of a diverging run's particles (1e294 seen in the catapult sweep) would
    otherwise overflow to inf, which POT reports as "Problem infeasible" and answers with 0.
    """
    cloud0, cloud1 = np.asarray(cloud0, np.float64), np.asarray(cloud1, np.float64)
    if not (np.isfinite(cloud0).all() and np.isfinite(cloud1).all()):
        return float("nan")
    scale = np.ldexp(1.0, int(np.frexp(max(np.abs(cloud0).max(), np.abs(cloud1).max(), 1e-300))[1]))
    cost = squared_distances(cloud0 / scale, cloud1 / scale)
    if len(cloud0) == len(cloud1):
        squared = assignment_cost(cost)
    else:
        import ot  # 2 s to import: only here

        weights0 = np.full(len(cloud0), 1.0 / len(cloud0))
        weights1 = np.full(len(cloud1), 1.0 / len(cloud1))
        squared = ot.emd2(weights0, weights1, cost, numItermax=10_000_000)
    return float(scale * np.sqrt(max(squared, 0.0)))


def squared_distances(x, y) -> np.ndarray:
    """C_ij = max(|x_i|^2 + |y_j|^2 - 2 x_i . y_j, 0), computed as POT's ``ot.dist(x, y)``
    (metric sqeuclidean) computes it for two different arrays, so the bits are its own, without
    importing POT (2 s)."""
    c = -2 * np.dot(x, y.T)
    c += np.einsum("ij,ij->i", x, x)[:, None]
    c += np.einsum("ij,ij->i", y, y)[None, :]
    return np.maximum(c, 0)


def assignment_cost(cost) -> float:
    """min_sigma (1/m) sum_i cost[i, sigma(i)] over the permutations sigma of m points: the
    optimal transport cost between two uniform measures of m atoms each, exact.

    Where each row's smallest cost is strictly below the row's others and the rows' smallest
    lie in different columns, that permutation is the optimum, unique: any other one pays
    more than the row minimum in some row, and the sum of the row minima bounds every
    assignment from below (a run whose particles barely moved, the lazy runs, at every
    snapshot). Otherwise scipy.optimize.linear_sum_assignment solves it, given the transposed
    problem (a row per point of the second cloud, the run's particles now: the same optimum, and
    at m = 512 it took 1.7 ms on each snapshot of a bundled-like run where the problem as given
    took up to 33 ms; docs/design.md §1.7). The terms (1/m) cost[i, sigma(i)] are then
    added one by one from the last row to the first, the order in which POT's ``emd2`` adds
    flow * cost over its arcs, so that the sum has POT's bits for the same optimal permutation."""
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost, np.float64)
    m = len(cost)
    if not m:
        return 0.0
    sigma = np.argmin(cost, axis=1)
    rows = np.arange(m)
    nearest = cost[rows, sigma]
    if not (np.unique(sigma).size == m and np.all((cost <= nearest[:, None]).sum(axis=1) == 1)):
        targets, sources = linear_sum_assignment(np.ascontiguousarray(cost.T))
        sigma = np.empty(m, dtype=np.intp)
        sigma[sources] = targets
    terms = cost[rows, sigma] * (1.0 / m)
    return float(np.add.accumulate(terms[::-1])[-1])


def rms_gap(f, g) -> float:
    """sqrt(mean_k (f_k - g_k)^2): the gap between two runs' predictions on the test set."""
    return float(np.sqrt(np.mean((np.asarray(f, np.float64) - np.asarray(g, np.float64)) ** 2)))


RICH_THRESHOLD = 0.1
"""A run whose relative weight change or kernel distance exceeds this is called rich."""


def regime_numbers(final: dict, loss=None, ntk=None) -> dict[str, float]:
    """The numbers a verdict reads (docs/design.md §1.8): the final ``displacement_w`` and
    ``kernel_distance`` of ``final``, and from the fit measure's series ``loss`` (its
    snapshots in order) loss_peak_ratio = max_t L(t) / L(0) and loss_end_ratio = L(T) / L(0),
    and from the series of ``ntk_eigenvalue_max`` ``ntk`` lambda_ratio = lambda_T / lambda_0.
    A series not given (or empty) leaves its numbers out."""
    numbers = {name: float(final[name]) for name in ("displacement_w", "kernel_distance") if name in final}
    if loss is not None and len(loss):
        loss = np.asarray(loss, np.float64)
        numbers.update(loss_peak_ratio=float(np.max(loss) / loss[0]), loss_end_ratio=float(loss[-1] / loss[0]))
    if ntk is not None and len(ntk):
        numbers["lambda_ratio"] = float(ntk[-1] / ntk[0])
    return numbers


def verdict(solver: str, numbers: dict) -> tuple[str, str]:
    """The measured regime of a run from its :func:`regime_numbers` (or its final measures):
    (label, the numbers behind it), docs/design.md §1.8.

    Lazy training keeps the parameters, relative to their size, and the tangent kernel near
    their initial values (Chizat, Oyallon & Bach 2019): a particle run is called lazy when
    both its relative weight change and its kernel distance stay at or below 0.1, and rich
    otherwise; except that a loss that rose above 1.1 times its start is read first. It is a
    **catapult** (rich; Lewkowycz et al. 2020) when it then fell below its start, the top
    eigenvalue of the tangent kernel ended below its start (lambda_T / lambda_0 < 1) and the
    weights moved (relative weight change > 0.1); **unstable** when it ended at or above its
    start. A loss without lambda_T recorded, or whose weights did not move, falls back to the
    threshold rule.
    """
    if solver in SOLVERS and not can(solver, "tracks_kernel"):
        return "lazy", f"{SOLVERS[solver].what}: the kernel is fixed by construction"
    moved = numbers.get("displacement_w", float("nan"))
    distance = numbers.get("kernel_distance", float("nan"))
    if np.isnan(moved):
        return "unknown", "no relative weight change recorded"
    peak, end = numbers.get("loss_peak_ratio", float("nan")), numbers.get("loss_end_ratio", float("nan"))
    ratio = numbers.get("lambda_ratio", float("nan"))
    rose = f"the loss rose to {peak:.3g} times its start"
    if peak > 1 + RICH_THRESHOLD and not end < 1:
        return "unstable", f"{rose} and ended at {end:.3g} times it (relative weight change {moved:.3g})"
    if peak > 1 + RICH_THRESHOLD and ratio < 1 and moved > RICH_THRESHOLD:
        return "rich", (f"catapult: {rose}, then fell to {end:.3g} times it; lambda_T / lambda_0 = {ratio:.3g} < 1; "
                        f"relative weight change {moved:.3g} > {RICH_THRESHOLD:g}, kernel distance {distance:.3g}")
    rich = moved > RICH_THRESHOLD or distance > RICH_THRESHOLD
    label = "rich" if rich else "lazy"
    return label, (f"relative weight change {moved:.3g}, kernel distance {distance:.3g} "
                   f"({'one' if rich else 'both'} {'above' if rich else 'at most'} {RICH_THRESHOLD:g})")


REGIME_TABLE = (
    ("SP, moderate LR", "standard", "O(1/m): dt_factor <= 1", "lazy"),
    ("SP, large LR", "standard", "above the stability edge of the initial kernel: dt_factor > 1", "rich"),
    ("muP", "mup", "per-layer (lr / m on a, lr m on w)", "rich"),
    ("mean field", "mean_field", "O(m) in parameter time", "rich"),
)
"""The textbook answer to 'which regime am I in?' (docs/design.md §1.8): (row, preset,
learning rate, regime); rich is feature learning."""


def table_regime(preset: str, dt_factor=None):
    """The row of :data:`REGIME_TABLE` a run falls in, (row, regime), or None: a ``standard``
    run by its step relative to the initial kernel's stability edge, dt = dt_factor * 2 /
    lambda_0 (below or at the edge, dt_factor <= 1: moderate; above: large); a standard run
    stepped with a plain dt, and the presets the table leaves out, have none."""
    if preset == "standard":
        if dt_factor is None:
            return None
        row = REGIME_TABLE[1] if dt_factor > 1 else REGIME_TABLE[0]
    else:
        row = next((row for row in REGIME_TABLE[2:] if row[1] == preset), None)
    return None if row is None else (row[0], row[3])
