"""The lazy side (docs/design.md §1.6): neural tangent kernels and linearized dynamics.

Network f(x) = s sum_i a_i sigma(z_i), z_i = w_i . x + b_i, risk
R = c (1/n) sum_k loss(f(x_k), y_k) (c = loss_scale), gradient flow
da_i/dt = -eta_a dR/da_i, dw_i/dt = -eta_w dR/dw_i, db_i/dt = -eta_b dR/db_i (eta_b = eta_w
unless given).

Linearized at theta_0, f_lin(x) = f_0(x) + grad_theta f(x; theta_0) . (theta - theta_0),
the flow moves f_lin in function space by kernel gradient flow with the
learning-rate-weighted neural tangent kernel

    K(x, x') = c s^2 sum_i [ eta_a sigma(z_i) sigma(z_i')
                             + a_i^2 sigma'(z_i) sigma'(z_i') (eta_w x . x' + eta_b 1_bias) ]
    df_t(x)/dt = -(1/n) sum_k K(x, x_k) l'(f_t(x_k), y_k)                        (*)

(1_bias = 1 when the model has a bias, whatever its initial spread), i.e.
K = c J diag(eta) J^T with J = d f / d theta at theta_0. An output bias (f + c_out, trained
at the rate eta_c) is one more column of J, all ones: K gains the constant c eta_c.

What is here:

- :func:`empirical_ntk`: K of the given particles, by BLAS over blocks of particles
  (scipy's BLAS, the library the closed form's LAPACK work runs in: see
  :class:`solvers.linear_flow.FactoredEigh`);
- :func:`analytic_kernels`: the m -> infinity NNGP and NTK for every activation, from the
  Gaussian moments of :mod:`solvers.gaussian`: in closed form for relu, erf, linear and
  quadratic, by quadrature for tanh, sigmoid and softplus (the table of :mod:`solvers.catalog`);
- :class:`LinearizedSquared`: (*) for squared loss, solved exactly at any t by one
  eigendecomposition (its eigenvectors kept in factored form);
- :class:`FunctionSpaceField`: (*) for any loss as a vector field for ``solvers.integrate``;
- :class:`TangentField`: the finite-width linearized network in parameter space, on the
  flat state layout of ``solvers.fields.ParticleLayout``.

Everything is float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange
from scipy.linalg import blas

from ._jit import jit, jit_parallel
from .activations import activate_tile
from .catalog import ACTIVATION_TABLE, RELU, activation_code, loss_code
from .fields import ParticleLayout
from .gaussian import angles, gaussian_moments, quadrature_kernel_moments, quadrature_moments, relu_moments
from .lanes import run_jobs, scratch
from .linear_flow import FactoredEigh, as_times, phi
from .losses import loss_and_derivative

BLOCK_ELEMENTS = 1 << 20
"""Default budget of the per-block buffers: a block of B particles over n points holds
about B * n values per buffer (8 MiB in float64). The kernels allow themselves up to twice
the size of the kernel they compute, when that is more."""


def _as_2d(X, name):
    """X as a C-contiguous float64 array, checked to be 2-D (points x dimension)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (points x dimension), got shape {X.shape}")
    return X


def _block_rows(m, n, block, budget=BLOCK_ELEMENTS):
    """Particles per block: ``block``, or by default as many as keep B * n <= ``budget``."""
    if block is None:
        block = budget // max(n, 1)
    return int(max(1, min(m, block)))


def _features(X, W, b, code, buf_s, buf_d):
    """S = sigma(Z) and D = sigma'(Z), Z = X W^T + b ([n, B], written into the flat buffers).
    For :class:`TangentField`, whose other products are numpy's (the kernel has its own,
    :func:`_kernel_features`, on scipy's BLAS)."""
    n, B = X.shape[0], W.shape[0]
    S = buf_s[: n * B].reshape(n, B)
    D = buf_d[: n * B].reshape(n, B)
    np.matmul(X, W.T, out=S)
    if b is not None:
        S += b
    flat = S.reshape(-1)
    activate_tile(code, flat, flat, D.reshape(-1), n * B)
    return S, D


# ------------------------------------------------------------------ empirical kernel


# The kernel's and the closed form's BLAS work runs in scipy's BLAS, like the LAPACK work of
# FactoredEigh (its docstring says why); C-ordered arrays are handed over as their F-ordered
# transposes, so nothing is copied.


def _gram_lower(F, out, beta):
    """out <- F F^T + beta out on the lower triangle (dsyrk; the upper is left as it was);
    F (n, B) and out (n, n), both C-contiguous."""
    blas.dsyrk(1.0, F.T, beta=beta, c=out.T, trans=1, lower=0, overwrite_c=1)


def _cross(F1, F2, out, beta):
    """out <- F1 F2^T + beta out (dgemm); F1 (n1, B), F2 (n2, B), out (n1, n2), C-contiguous."""
    blas.dgemm(1.0, F2.T, F1.T, beta=beta, c=out.T, trans_a=1, overwrite_c=1)


def _product_t(A, B):
    """A^T B (dgemm) for A (k, p), B (k, q) in any order: (p, q), F-ordered."""
    if 0 in A.shape or 0 in B.shape:
        return np.zeros((A.shape[1], B.shape[1]))
    return blas.dgemm(1.0, A, B, trans_a=1)


@jit
def _activate_scaled(S, D, a, b, code, f):
    """Row by row, in place: z = S + b, S <- sigma(z), D <- sigma'(z) |a| and f += S a
    (over the particles of the block; ``b`` empty for a model without bias)."""
    n, B = S.shape
    bias = b.size > 0
    for k in range(n):
        row = S[k]
        if bias:
            for i in range(B):
                row[i] += b[i]
        activate_tile(code, row, row, D[k], B)
        acc = 0.0
        for i in range(B):
            acc += row[i] * a[i]
            D[k, i] *= abs(a[i])
        f[k] += acc


def _kernel_features(X, W, b, a, code, buf_s, buf_d, f):
    """S = sigma(Z) and D = sigma'(Z) |a| ([n, B], in the flat buffers), Z = X W^T + b,
    and f += S a: the features of a particle block, with the network's output on X."""
    n, B = X.shape[0], W.shape[0]
    S = buf_s[: n * B].reshape(n, B)
    D = buf_d[: n * B].reshape(n, B)
    if n:
        blas.dgemm(1.0, W.T, X.T, c=S.T, trans_a=1, overwrite_c=1)  # S^T = W X^T
        _activate_scaled(S, D, a, b, code, f)
    return S, D


@jit
def _weigh_and_add(K_a, K_w, X1, X2_t, weight_a, weight_w, bias, n_sym):
    """K_a <- weight_a K_a + weight_w K_w o (X1 X2^T + bias), in place (X2_t = X2^T, d x n2).

    The first n_sym rows are a symmetric block of which only the lower triangle was
    computed (dsyrk): there only j <= i is weighed, then copied onto the upper triangle
    tile by tile, so the block is exactly symmetric. Serial on purpose: it runs between
    BLAS calls, into which the spinning threads of a parallel region would cut."""
    n1, n2 = K_a.shape
    d = X1.shape[1]
    g = np.empty(n2)
    for i in range(n1):
        width = min(i + 1, n2) if i < n_sym else n2
        for j in range(width):
            g[j] = bias
        for k in range(d):
            x = X1[i, k]
            for j in range(width):
                g[j] += x * X2_t[k, j]
        for j in range(width):
            K_a[i, j] = weight_a * K_a[i, j] + weight_w * K_w[i, j] * g[j]
    tile = 64
    for ti in range((n_sym + tile - 1) // tile):
        for tj in range(ti + 1):
            for i in range(ti * tile, min(n_sym, ti * tile + tile)):
                for j in range(tj * tile, min(i, tj * tile + tile)):
                    K_a[j, i] = K_a[i, j]


def _kernel(a, W, b, X1, X2, shared, code, weight_a, weight_w, block, weight_b=None):
    """(K(X1, X2), S1 a): K = weight_a S1 S2^T + (D1 D2^T) o (weight_w X1 X2^T + weight_b 1_bias)
    (``weight_b`` default ``weight_w``: then computed as weight_w (D1 D2^T) o (X1 X2^T + 1_bias)),
    summed over blocks of particles, D scaled by |a|, and sum_i a_i sigma(z_i) on X1 from
    the same features. ``shared``: X2 is X1[:n2], so the features of X1 serve both sides
    and K[:n2] is a Gram matrix, computed by symmetric rank-B updates (BLAS syrk, half the
    work of a general product) and made exactly symmetric. The blocks accumulate in K
    (BLAS beta = 1): no buffer beyond the features."""
    n1, n2, m = X1.shape[0], X2.shape[0], W.shape[0]
    f = np.zeros(n1)
    if not (m and n1):
        return np.zeros((n1, n2)), f
    K_a, K_w = np.empty((n1, n2)), np.empty((n1, n2))
    points = n1 if shared else n1 + n2
    B = _block_rows(m, points, block, max(BLOCK_ELEMENTS, 2 * n1 * n2))
    bufs = [np.empty(n1 * B), np.empty(n1 * B)]
    if not shared:
        bufs += [np.empty(n2 * B), np.empty(n2 * B)]
        f_right = np.zeros(n2)  # the output on X2, not needed
    bias = np.empty(0) if b is None else b
    for i0 in range(0, m, B):
        blk = slice(i0, min(m, i0 + B))
        S1, D1 = _kernel_features(X1, W[blk], bias[blk], a[blk], code, bufs[0], bufs[1], f)
        if shared:
            S2, D2 = S1[:n2], D1[:n2]
        else:
            S2, D2 = _kernel_features(X2, W[blk], bias[blk], a[blk], code, bufs[2], bufs[3], f_right)
        beta = 0.0 if i0 == 0 else 1.0
        for K, F1, F2 in ((K_a, S1, S2), (K_w, D1, D2)):
            if not n2:
                continue
            if shared:
                _gram_lower(F2, K[:n2], beta)
                if n1 > n2:
                    _cross(F1[n2:], F2, K[n2:], beta)
            else:
                _cross(F1, F2, K, beta)
    weight, bias, dots = _bias_weights(weight_w, weight_b, b is not None)
    X1, X2_t = (X1, np.ascontiguousarray(X2.T)) if dots else (np.empty((n1, 0)), np.empty((0, n2)))
    _weigh_and_add(K_a, K_w, X1, X2_t, weight_a, weight, bias, n2 if shared else 0)
    return K_a, f


def _bias_weights(weight_w, weight_b, has_bias):
    """(weight, bias, dots) with weight (dots X1 X2^T + bias) = weight_w X1 X2^T + weight_b 1_bias:
    (weight_w, 1, True) when weight_b is weight_w or None (today's arithmetic, bit for bit),
    (weight_w, weight_b / weight_w, True) otherwise, and (weight_b, 1, False) when weight_w = 0
    (random features with trained biases: the dot product drops out)."""
    if not has_bias:
        return weight_w, 0.0, True
    if weight_b is None or weight_b == weight_w:
        return weight_w, 1.0, True
    if weight_w == 0:
        return weight_b, 1.0, False
    return weight_w, weight_b / weight_w, True


def _empirical(a, W, b, X1, X2, shared, *, s, eta_a, eta_w, act, loss_scale=1.0, block=None, eta_c=0.0,
               eta_b=None):
    """(K(X1, X2), f_0(X1)) by :func:`_kernel`, the arguments of :func:`empirical_ntk` checked;
    f_0(x) = s sum_i a_i sigma(w_i . x + b_i), the network at the particles (without an
    output bias, which the caller adds)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    W = _as_2d(W, "W")
    m, d = W.shape
    if a.shape != (m,):
        raise ValueError(f"a has shape {a.shape}, expected ({m},)")
    if b is not None:
        b = np.ascontiguousarray(b, dtype=np.float64)
        if b.shape != (m,):
            raise ValueError(f"b has shape {b.shape}, expected ({m},)")
    if X1.shape[1] != d or X2.shape[1] != d:
        raise ValueError(f"X1 {X1.shape} / X2 {X2.shape} do not match W {W.shape}")
    weight = loss_scale * s * s
    K, f = _kernel(a, W, b, X1, X2, shared, activation_code(act), weight * eta_a,
                   weight * eta_w, block, None if eta_b is None else weight * eta_b)
    if eta_c:
        K += loss_scale * eta_c
    f *= s
    return K, f


def empirical_ntk(a, W, b, X1, X2=None, *, s, eta_a, eta_w, act, loss_scale=1.0, block=None, eta_c=0.0,
                  eta_b=None):
    """The learning-rate-weighted empirical NTK of the particles (a, W, b) between X1 and X2:

        K[k, l] = c s^2 sum_i [ eta_a sigma(z_ik) sigma(z_il)
                                + a_i^2 sigma'(z_ik) sigma'(z_il) (eta_w x_k . x_l + eta_b 1_bias) ]
                  + c eta_c

    with z_ik = w_i . x_k + b_i, c = ``loss_scale`` and 1_bias = 1 unless ``b`` is None;
    ``eta_c`` is the learning rate of an output bias (0: none), ``eta_b`` the biases' (default
    ``eta_w``).

    a (m,), W (m, d), b (m,) or None (a model without bias), X1 (n1, d), X2 (n2, d) or
    None (or X1 itself): then K is the Gram matrix of X1, exactly symmetric.
    ``act`` is an activation code or name. The sum runs over blocks of ``block`` particles
    (default: as many as keep block * (n1 + n2) within max(:data:`BLOCK_ELEMENTS`, 2 n1 n2),
    so the features take at most about twice the memory of K), each two BLAS products
    sigma(Z1) sigma(Z2)^T and (sigma'(Z1) |a|) (sigma'(Z2) |a|)^T, Z = X W_blk^T + b_blk
    (symmetric rank updates for a Gram matrix); the Hadamard product with x . x' + 1_bias
    and the weights are applied once, at the end, in one pass:
    memory O(n1 n2 + block (n1 + n2)), time O(m (n1 + n2) d + m n1 n2).
    Returns K, shape (n1, n2), float64.
    """
    same = X2 is None or X2 is X1
    X1 = _as_2d(X1, "X1")
    X2 = X1 if same else _as_2d(X2, "X2")
    return _empirical(a, W, b, X1, X2, same, s=s, eta_a=eta_a, eta_w=eta_w, act=act,
                      loss_scale=loss_scale, block=block, eta_c=eta_c, eta_b=eta_b)[0]


def train_test_ntk(a, W, b, X_train, X_test, *, return_f0=False, **numbers):
    """(K(X, X), K(X*, X)): the two row blocks of K([X; X*], X), from one set of features
    per particle block, the training block by symmetric rank updates (half the work of a
    general product) and exactly symmetric. ``numbers`` are those of :func:`empirical_ntk`.

    ``return_f0``: also return f_0(X) and f_0(X*), f_0(x) = s sum_i a_i sigma(w_i . x + b_i),
    from the same features (no second pass over the particles):
    ``(K(X, X), K(X*, X), f_0(X), f_0(X*))``."""
    X_train, X_test = _as_2d(X_train, "X_train"), _as_2d(X_test, "X_test")
    n = X_train.shape[0]
    K, f0 = _empirical(a, W, b, np.vstack([X_train, X_test]), X_train, True, **numbers)
    return (K[:n], K[n:], f0[:n], f0[n:]) if return_f0 else (K[:n], K[n:])


# ------------------------------------------------------------------ analytic kernels


def _lifted_angles(X1, X2, w_var, b_var):
    """The angle t between the pre-activation directions (sqrt(w_var) x, sqrt(b_var)) of
    every pair of rows of X1 and X2 (X2 may be X1 itself), by :func:`solvers.gaussian.angles`:
    accurate near 0 and pi (t = arccos rho loses half the digits there: 1e-8 for duplicate
    points)."""

    def lift(X):
        return np.hstack([math.sqrt(w_var) * X, np.full((X.shape[0], 1), math.sqrt(b_var))])

    U1 = lift(X1)
    return angles(U1, None if X2 is X1 else lift(X2))


def analytic_kernels(X1, X2=None, *, act, w_var, b_var, a_var, eta_a=1.0, eta_w=1.0,
                     bias=True, eta_b=None, eta_c=0.0, products=None):
    """The infinite-width NNGP and NTK of f(x) = s sum_i a_i sigma(w_i . x + b_i) with
    w_i ~ N(0, w_var I_d), b_i ~ N(0, b_var), a_i ~ N(0, a_var), s = 1/sqrt(m), c = 1
    (the ``ntk`` scaling), as m -> infinity. Returns ``(nngp, ntk)``, each (n1, n2):

        q(x, x') = w_var x . x' + b_var            (covariance of the pre-activations)
        nngp     = E[sigma(u) sigma(v)]            (u, v) ~ N(0, [[q11, q12], [q12, q22]])
        ntk      = eta_a E[sigma(u) sigma(v)]
                   + a_var E[sigma'(u) sigma'(v)] (eta_w x . x' + eta_b 1_bias) + eta_c

    ``nngp`` carries no a_var: the covariance of f_0(x) at initialisation is a_var * nngp
    (plus c_var with an output bias c ~ N(0, c_var)). ``eta_c`` is the output bias's
    learning rate (0: none), its column of the Jacobian all ones.
    1_bias = 1 when ``bias`` (the model has a bias parameter, so its gradient contributes,
    even with b_var = 0); ``bias=False`` requires b_var = 0. ``eta_b`` is the learning
    rate of the biases (default ``eta_w``, the convention of the particle solvers).
    Closed forms in :func:`solvers.gaussian.gaussian_moments` (relu, erf, linear, quadratic);
    tanh, sigmoid and softplus by the trapezoidal rule of
    :func:`solvers.gaussian.quadrature_kernel_moments` (1e-12; the catalog's ``kernel`` column says
    which); for relu
    the angle t = arccos(q12 / sqrt(q11 q22)) is taken between the vectors
    (sqrt(w_var) x, sqrt(b_var)) by Kahan's stable formula (:func:`solvers.gaussian.angles`),
    so duplicate points get t = 0 exactly. Any parameterization
    whose c s^2 m eta_a and c s^2 m eta_w tend to finite limits has this kernel with those
    limits in place of eta_a and eta_w; e.g. ``mean_field`` (s = 1/m, eta = m eta0) and
    ``lazy`` (alpha/m, c = 1/alpha^2, eta = m eta0) give eta_a = eta_w = eta0.

    neural-tangents: ``stax.serial(Dense(m, W_std, b_std), Relu() or Erf(),
    Dense(1, W_std2, b_std2))`` with parameterization='ntk' has first-layer covariance
    W_std^2 x . x' / d + b_std^2, so W_std = w_std (w_var = w_std^2 / d), b_std = b_std,
    and our output layer is W_std2 = a_std, b_std2 = 0 (or b_std2 = c_std with an output bias
    c ~ N(0, c_std^2) trained at eta_c = c_std^2: NT's readout bias is b_std2 times a
    standard-normal parameter, so its NTK term is b_std2^2 and its NNGP term b_std2^2). Its kernels are those of
    gradient flow on its standard-normal parameters (a = a_std omega, w = (w_std / sqrt d) v,
    b = b_std beta), i.e. of ours with per-parameter learning rates equal to the variances:

        nt nngp = a_var * nngp
        nt ntk  = analytic_kernels(..., eta_a=a_var, eta_w=w_var, eta_b=b_var)[1]
                = a_var E[sigma sigma] + a_var E[sigma' sigma'] q(x, x')

    ``products``: X1 X2^T, when the caller has computed it (so that its rounding does not depend
    on how the caller splits X1 into blocks); default X1 @ X2.T here.

    which is our eta_a = eta_w = 1 kernel only when a_var = w_var = 1 (and b_var = 1 or no
    bias). Its ``predict.gradient_descent_mse`` integrates df/dt = -(lr / N) K (f - y) with
    N = n training points: the same clock as (*) with K -> lr K.
    """
    code = activation_code(act)
    if not bias and b_var != 0:
        raise ValueError("bias=False with b_var > 0: a model without bias has b = 0")
    eta_b = eta_w if eta_b is None else eta_b
    same = X2 is None or X2 is X1
    X1 = _as_2d(X1, "X1")
    X2 = X1 if same else _as_2d(X2, "X2")
    if X1.shape[1] != X2.shape[1]:
        raise ValueError(f"X1 {X1.shape} and X2 {X2.shape} differ in dimension")
    G = X1 @ X2.T if products is None else np.asarray(products, dtype=np.float64)
    if G.shape != (X1.shape[0], X2.shape[0]):
        raise ValueError(f"products {G.shape} do not match X1 {X1.shape} and X2 {X2.shape}")
    if same:
        G = 0.5 * (G + G.T)
    q11 = w_var * np.einsum("kj,kj->k", X1, X1) + b_var
    q22 = q11 if same else w_var * np.einsum("kj,kj->k", X2, X2) + b_var
    q12 = w_var * G + b_var
    if code == RELU:
        e_ss, e_dd = relu_moments(np.sqrt(q11[:, None] * q22[None, :]), _lifted_angles(X1, X2, w_var, b_var))
    elif ACTIVATION_TABLE[code].kernel == "closed form":
        e_ss, e_dd = gaussian_moments(q11[:, None], q12, q22[None, :], code)
    else:  # exactly symmetric already on a Gram matrix
        e_ss, e_dd = quadrature_kernel_moments(q11, q12, q22, code, symmetric=same)
    if same and ACTIVATION_TABLE[code].kernel == "closed form":
        e_ss, e_dd = 0.5 * (e_ss + e_ss.T), 0.5 * (e_dd + e_dd.T)
    ntk = eta_a * e_ss + a_var * e_dd * (eta_w * G + (eta_b if bias else 0.0))
    if eta_c:
        ntk += eta_c
    return e_ss, ntk


def analytic_kernel_diagonal(X, *, act, w_var, b_var):
    """E[sigma(u)^2] at each row x of X, u ~ N(0, q), q = w_var |x|^2 + b_var: the diagonal of
    :func:`analytic_kernels`' nngp (closed form, or the quadrature rule), without the n x n matrix."""
    X = _as_2d(X, "X")
    code = activation_code(act)
    q = w_var * np.einsum("kj,kj->k", X, X) + b_var
    if ACTIVATION_TABLE[code].kernel == "closed form":
        return gaussian_moments(q, q, q, code)[0]
    return quadrature_moments(q, q, q, code)[0]


# ------------------------------------------------------------------ squared loss, exactly


class LinearizedSquared:
    """Kernel gradient flow (*) for squared loss, l'(f, y) = f - y, solved in closed form,
    with an optional ridge lambda >= 0 (docs/design.md §1.6):

        df_t(x)/dt = -(1/n) sum_k K(x, x_k) (f_t(x_k) - y_k) - lambda (f_t(x) - f_0(x))   (**)

    the flow of the linearised model under R(theta) + (lambda/2) |theta - theta_0|^2_{P^-1}
    (P = diag(eta), the learning rates), on train and test points alike.

    With K_train = V diag(lam) V^T (one symmetric eigendecomposition, its eigenvectors kept
    in factored form by :class:`solvers.linear_flow.FactoredEigh`), for lambda = 0:

        f_t(X)  = y + V exp(-lam t / n) V^T (f_0(X) - y)
        f_t(X*) = f_0(X*) + K(X*, X) V diag((1 - exp(-lam t / n)) / lam) V^T (y - f_0(X))

    with (1 - e^{-lam t/n}) / lam -> t / n as lam -> 0, evaluated as (t/n) phi(lam t/n),
    phi(x) = -expm1(-x) / x, phi(0) = 1, so small eigenvalues are handled stably.
    Singular kernels (duplicate points, rank-deficient features) give finite predictions
    for every t: eigenvalues at rounding level, |lam| <= n eps lam_max (numpy's rank
    tolerance), are set to 0, and the null-space part of f_t(X) - y stays at its start.
    For those directions K(X*, X) v vanishes when the kernel on X and X* together is
    positive semi-definite, so they are left out of the test-point sum (what is there is
    rounding, which t/n would amplify without bound); then as t -> infinity
    f_t(X*) -> f_0(X*) + K(X*, X) K^+ (y - f_0(X)). An eigenvalue below
    -:data:`solvers.linear_flow.NEGATIVE_EIGENVALUE_TOLERANCE` lam_max is refused (not a kernel).
    Both are computed as f_0 plus a correction that is exactly 0 at t = 0, so
    ``predict(0)`` returns f_0 exactly.

    With a ridge, each mode relaxes at mu = lam/n + lambda instead of lam/n:

        f_t(X)  = f_0(X) + V diag((lam t/n) phi(mu t)) V^T (y - f_0(X))
        f_t(X*) = f_0(X*) + K(X*, X) V diag((t/n) phi(mu t)) V^T (y - f_0(X))

    (lambda = 0 gives the formulas above). :meth:`limit` is t -> infinity:
    f_0 + K (K + n lambda I)^-1 (y - f_0(X)) on X, the same with K(X*, X) on X*, and for
    lambda = 0 the projection f_0 + K K^+ (y - f_0(X)) with the rank cut-off above.

    K_train (n, n) symmetric positive semi-definite; y, f0_train (n,); K_test_train
    (n*, n) = K(X*, X) and f0_test (n*,), both or neither; ridge lambda >= 0.
    """

    def __init__(self, K_train, y, f0_train, K_test_train=None, f0_test=None, ridge=0.0):
        K = np.asarray(K_train, dtype=np.float64)
        n = K.shape[0]
        if K.shape != (n, n):
            raise ValueError(f"K_train must be square, got {K.shape}")
        self.y = np.asarray(y, dtype=np.float64).copy()
        self.f0_train = np.asarray(f0_train, dtype=np.float64).copy()
        if self.y.shape != (n,) or self.f0_train.shape != (n,):
            raise ValueError(f"y {self.y.shape} and f0_train {self.f0_train.shape} must be ({n},)")
        if (K_test_train is None) != (f0_test is None):
            raise ValueError("give K_test_train and f0_test together")
        if not (np.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge must be finite and >= 0, got {ridge!r}")
        self.n, self.ridge = n, float(ridge)
        self.K_test_train = self.f0_test = None
        if K_test_train is not None:
            self.K_test_train = np.array(K_test_train, dtype=np.float64)
            self.f0_test = np.asarray(f0_test, dtype=np.float64).copy()
            Kt, f0t = self.K_test_train.shape, self.f0_test.shape
            if len(Kt) != 2 or Kt[1] != n or f0t != Kt[:1]:
                raise ValueError(f"K_test_train {Kt} / f0_test {f0t} do not match n = {n}")
        self.eigen = FactoredEigh(K, "K_train")
        self.eigenvalues = self.eigen.eigenvalues
        self._range = self.eigenvalues > 0
        # coordinates of f_0(X) - y in the eigenbasis
        self._r0 = self.eigen.apply_transpose((self.f0_train - self.y)[:, None])[:, 0]

    @property
    def eigenvectors(self):
        """V, the eigenvectors of K_train (formed on demand: :class:`FactoredEigh`)."""
        return self.eigen.eigenvectors

    def predict(self, t):
        """``(f_train(t), f_test(t))`` (``f_test`` None without a test set). ``t`` a number
        (arrays (n,), (n*,)) or an array of T times (arrays (T, n), (T, n*)); t >= 0.

        Both go through V applied once to 2 T vectors in the eigenbasis, (e^{-x} - 1) r0
        and the coefficients c_t = diag(t/n phi(lam t/n)) r0 on the range of K_train
        (x = lam t / n, r0 = V^T (f_0(X) - y)): f_t(X) = f_0(X) + V (e^{-x} - 1) r0 and
        f_t(X*) = f_0(X*) - K(X*, X) V c_t, O(n^2 T + n* n T) flops in all (scipy's BLAS:
        see :class:`FactoredEigh`). With a ridge, -x phi(mu t) r0 and
        c_t = diag(t/n phi(mu t)) r0, mu = lam/n + lambda."""
        t_arr, times = as_times(t)
        tau = times / self.n  # (T, 1)
        x = tau * self.eigenvalues  # lam t / n, (T, n)
        if self.ridge:
            rate = phi(x + self.ridge * times)  # phi(mu t), mu = lam/n + lambda
            train_modes = -x * rate * self._r0
        else:  # (e^{-x} - 1) r0, = -x phi(x) r0
            rate, train_modes = phi(x), np.expm1(-x) * self._r0
        # the null directions of K_train are left out of c_t (see the class docstring)
        return self._predictions(train_modes, np.where(self._range, tau * rate * self._r0, 0.0), t_arr.ndim == 0)

    def limit(self):
        """``(f_train, f_test)`` as t -> infinity (``f_test`` None without a test set):
        with the coefficients c = diag(1 / (lam + n lambda)) V^T (y - f_0(X)) on the range
        of K_train (0 on its null directions, as in :meth:`predict`),
        f(X) = f_0(X) + V diag(lam) c and f(X*) = f_0(X*) + K(X*, X) V c; for lambda = 0
        (ridgeless) f(X) is the projection of y onto f_0(X) + range(K_train), exactly."""
        lam = self.eigenvalues
        shifted = np.where(self._range, lam + self.n * self.ridge, 1.0)
        coefficients = np.where(self._range, self._r0 / shifted, 0.0)  # (lam + n lambda)^-1 r0
        train_modes = np.where(self._range, -self._r0 if not self.ridge else -lam * coefficients, 0.0)
        return self._predictions(train_modes[None], coefficients[None], True)

    def _predictions(self, train_modes, coefficients, single):
        """f_0 + V ``train_modes`` on X and f_0(X*) - K(X*, X) V ``coefficients`` on X*,
        both (T, n) in the eigenbasis, through one application of V to 2 T vectors."""
        T = train_modes.shape[0]
        moved = self.eigen.apply(np.vstack([train_modes, coefficients]).T)  # (n, 2T)
        f_train = self.f0_train + moved[:, :T].T
        f_test = None
        if self.K_test_train is not None:
            f_test = self.f0_test - _product_t(moved[:, T:], self.K_test_train.T)
        if single:
            f_train = f_train[0]
            f_test = None if f_test is None else f_test[0]
        return f_train, f_test


# ------------------------------------------------------------------ any loss, by integration

MATVEC_ROWS = 64
"""Rows of K per job of :func:`matvec` (the jobs are fixed by the size, never by the thread count)."""


@jit_parallel
def matvec(A, x, out):
    """out_i = sum_j A_ij x_j for a C-contiguous A (N, n), four rows at a time (x read once for
    four): every bit the same at any Numba thread count (rows in jobs of :data:`MATVEC_ROWS`,
    a multiple of 4, whatever the count) and at any BLAS thread count (no BLAS: OpenBLAS's gemv,
    ``A @ x``, gave other last bits on 2 threads than on 1 at shapes such as (1001, 500),
    docs/design.md §6.4)."""
    N, n = A.shape
    for job in prange((N + MATVEC_ROWS - 1) // MATVEC_ROWS):
        i, end = job * MATVEC_ROWS, min(N, (job + 1) * MATVEC_ROWS)
        while i + 4 <= end:
            t0 = t1 = t2 = t3 = 0.0
            for j in range(n):
                t0 += A[i, j] * x[j]
                t1 += A[i + 1, j] * x[j]
                t2 += A[i + 2, j] * x[j]
                t3 += A[i + 3, j] * x[j]
            out[i], out[i + 1], out[i + 2], out[i + 3] = t0, t1, t2, t3
            i += 4
        for row in range(i, end):  # the last job's N mod 4 rows
            total = 0.0
            for j in range(n):
                total += A[row, j] * x[j]
            out[row] = total


class FunctionSpaceField:
    """Kernel gradient flow (*) as a vector field over f = [f(X) (n), f(X*) (n*)]:

        df/dt = -(1/n) K[:, train] l'(f(X), y) - lambda (f - f_0),   K[:, train] = [K_train; K_test_train]

    ``field(t, f) -> (df/dt, loss)`` with loss = (1/n) sum_k loss(f(x_k), y_k) (without the
    loss scale, which is part of K, and without the ridge term). ``loss`` is a loss code or
    name (``solvers.losses``). The ridge lambda >= 0 (default 0) pulls f back to ``f0``, the
    state at t = 0 (see :class:`LinearizedSquared` for where the term comes from).
    Start from :meth:`initial_state`; split a state with :meth:`split`. The product
    K[:, train] l' is :func:`matvec`'s (Numba's threads, rows in fixed jobs), not the BLAS's: the
    same bits at any count of either.
    """

    def __init__(self, K_train, y, loss, K_test_train=None, ridge=0.0, f0=None):
        K = np.asarray(K_train, dtype=np.float64)
        n = K.shape[0]
        if K.shape != (n, n):
            raise ValueError(f"K_train must be square, got {K.shape}")
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        if self.y.shape != (n,):
            raise ValueError(f"y has shape {self.y.shape}, expected ({n},)")
        parts = [K]
        if K_test_train is not None:
            Kt = np.asarray(K_test_train, dtype=np.float64)
            if Kt.ndim != 2 or Kt.shape[1] != n:
                raise ValueError(f"K_test_train has shape {Kt.shape}, expected (n*, {n})")
            parts.append(Kt)
        self._K = np.ascontiguousarray(np.concatenate(parts, axis=0) * (-1.0 / n))
        self.n = n
        self.n_test = self._K.shape[0] - n
        self.loss = loss_code(loss)
        self._lp = np.empty(n)
        if not (np.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge must be finite and >= 0, got {ridge!r}")
        self.ridge = float(ridge)
        self.f0 = None
        if self.ridge:
            if f0 is None:
                raise ValueError("a ridge needs f0, the state at t = 0")
            self.f0 = np.asarray(f0, dtype=np.float64).copy()
            if self.f0.shape != (n + self.n_test,):
                raise ValueError(f"f0 has shape {self.f0.shape}, expected ({n + self.n_test},)")

    def initial_state(self, f0_train, f0_test=None):
        parts = [np.ravel(f0_train)] + ([np.ravel(f0_test)] if self.n_test else [])
        y0 = np.concatenate(parts).astype(np.float64)
        if y0.shape != (self.n + self.n_test,):
            raise ValueError(f"initial state has {y0.size} values, expected {self.n + self.n_test}")
        return y0

    def split(self, f):
        """(f(X), f(X*) or None) views of a state."""
        return f[..., : self.n], (f[..., self.n :] if self.n_test else None)

    def __call__(self, t, f, batch=None):
        if batch is not None:
            raise NotImplementedError("the function-space field has no minibatches")
        loss = loss_and_derivative(self.loss, f[: self.n], self.y, self._lp)
        velocity = np.empty(len(self._K))
        matvec(self._K, self._lp, velocity)  # K[:, train] l' / (-n), the same bits at any thread count
        if self.ridge:
            velocity -= self.ridge * (f - self.f0)
        return velocity, loss


# ------------------------------------------------------------------ the tangent model


class TangentField:
    """The finite-width linearized network as a particle solver.

        f_lin(x) = f_0(x) + s sum_i [ da_i sigma(z0_i) + a0_i sigma'(z0_i) (dw_i . x + db_i) ] [+ dc_out]
                 = s sum_i [ a_i sigma(z0_i) + a0_i sigma'(z0_i) (dw_i . x + db_i) ] [+ c_out]

    with z0_i = w0_i . x + b0_i and d theta = theta - theta_0, trained by the gradient flow
    of R = c (1/n) sum_k loss(f_lin(x_k), y_k) with the particles' learning rates:

        da_i/dt = -eta_a c s/n sum_k l'_k sigma(z0_ik)
        dw_i/dt = -eta_w c s/n sum_k l'_k a0_i sigma'(z0_ik) x_k
        db_i/dt = -eta_b c s/n sum_k l'_k a0_i sigma'(z0_ik)        (eta_b: default eta_w)
        dc_out/dt = -eta_c c/n sum_k l'_k            (an output bias c_out from ``c0``: f is linear in it)

    so f_lin(X) follows (*) with the empirical NTK at theta_0 exactly. The state is the
    flat vector of ``solvers.fields.ParticleLayout`` ([a, W.ravel(), b, c]) holding theta
    itself (start: :meth:`initial_state`, i.e. theta_0). ``field(t, theta, batch=None) ->
    (dtheta/dt, loss)``, loss the unscaled mean training loss (of the minibatch ``batch``
    when given, as for SGD); :meth:`predict` gives f_lin at any points.

    The features sigma(z0), sigma'(z0) are recomputed by BLAS on blocks of particles at
    every call (memory O(m d + n d + block n)); when all m particles fit in one block of
    ``block_elements`` values they are computed once and kept.
    """

    def __init__(self, a0, W0, b0, X, y, *, s, eta_a, eta_w, act, loss, loss_scale=1.0,
                 block_elements=BLOCK_ELEMENTS, c0=None, eta_c=None, eta_b=None):
        self.W0 = _as_2d(W0, "W0").copy()
        m, d = self.W0.shape
        self.a0 = np.array(a0, dtype=np.float64).reshape(-1)
        self.b0 = None if b0 is None else np.array(b0, dtype=np.float64).reshape(-1)
        if self.a0.shape != (m,) or (self.b0 is not None and self.b0.shape != (m,)):
            raise ValueError("a0 and b0 must have one value per particle")
        if c0 is not None and eta_c is None:
            raise ValueError("an output bias c0 needs its learning rate eta_c")
        self.c0, self.eta_c = c0, eta_c
        self.layout = ParticleLayout(m, d, self.b0 is not None, output_bias=c0 is not None)
        self.X = _as_2d(X, "X")
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        if self.X.shape[1] != d or self.y.shape != (self.X.shape[0],):
            raise ValueError(f"X {self.X.shape} / y {self.y.shape} do not match W0 {self.W0.shape}")
        self.n_samples = self.X.shape[0]
        self.s, self.eta_a, self.eta_w, self.loss_scale = s, eta_a, eta_w, loss_scale
        self.eta_b = eta_w if eta_b is None else eta_b
        self.act = activation_code(act)
        self.loss = loss_code(loss)
        self.block_elements = int(block_elements)
        self._cache = None
        n = self.n_samples
        if m * max(n, 1) <= self.block_elements:
            S, D = _features(self.X, self.W0, self.b0, self.act, np.empty(n * m), np.empty(n * m))
            D *= self.a0  # a0_i sigma'(z0_ik)
            self._cache = (S, D)

    def initial_state(self):
        return self.layout.pack(self.a0, self.W0, self.b0, c=self.c0)

    def _over_blocks(self, X, work, rows=None, train=False):
        """work(i0, i1, S, A) with S = sigma(z0), A = a0 sigma'(z0) on the points X, for every
        particle block [i0, i1), in the blocks' order; returns their results. ``train``: X is
        the training set (its rows ``rows`` when given), whose features may be cached (one
        block). Several blocks run side by side (:func:`solvers.lanes.run_jobs`: each on one
        BLAS thread, its features in its thread's buffers): the blocks are fixed by the sizes,
        so the results do not depend on the thread count."""
        m = self.layout.m
        if train and self._cache is not None:
            S, A = self._cache
            if rows is not None:
                S, A = S[rows], A[rows]
            return [work(0, m, S, A)]
        n = X.shape[0]
        B = _block_rows(m, n, self.block_elements // max(n, 1))
        starts = range(0, m, B)
        results = [None] * len(starts)

        def block(j):
            i0, i1 = starts[j], min(m, starts[j] + B)
            bb = None if self.b0 is None else self.b0[i0:i1]
            S, A = _features(X, self.W0[i0:i1], bb, self.act, scratch("tangent S", (n * B,), np.float64),
                             scratch("tangent A", (n * B,), np.float64))
            A *= self.a0[i0:i1]
            results[j] = work(i0, i1, S, A)

        run_jobs(len(starts), block)
        return results

    def _forward(self, theta, X, rows=None, train=False):
        theta = np.asarray(theta, dtype=np.float64)
        a, W, b = self.layout.split(theta)
        dW = W - self.W0
        db = None if b is None else b - self.b0

        def block(i0, i1, S, A):
            """(the block's sum_i a_i sigma(z0_ik), its sum_i a0_i sigma'(z0_ik) (dw_i . x_k + db_i))."""
            T = X @ dW[i0:i1].T  # dw_i . x, (n, B)
            if db is not None:
                T += db[i0:i1]
            T *= A
            return S @ a[i0:i1], T.sum(axis=1)

        f = np.zeros(X.shape[0])
        for amplitudes, weights in self._over_blocks(X, block, rows, train):  # added in the blocks' order
            f += amplitudes
            f += weights
        f *= self.s
        c = self.layout.c_of(theta)
        if c is not None:
            f += c[0]
        return f

    def predict(self, theta, X):
        """f_lin at the points X (n', d) for the flat state ``theta``."""
        X = _as_2d(X, "X")
        if X.shape[1] != self.layout.d:
            raise ValueError(f"X has dimension {X.shape[1]}, expected {self.layout.d}")
        return self._forward(theta, X)

    def __call__(self, t, theta, batch=None):
        if batch is None:
            X, y, rows = self.X, self.y, None
        else:
            rows = np.asarray(batch)
            X, y = self.X[rows], self.y[rows]
        f = self._forward(theta, X, rows, train=True)
        lp = np.empty_like(f)
        loss = loss_and_derivative(self.loss, f, y, lp)
        velocity = np.empty(self.layout.size)
        vc = self.layout.c_of(velocity)
        if vc is not None:
            vc[0] = -self.eta_c * self.loss_scale * lp.sum() / len(y)
        lp *= self.loss_scale * self.s / len(y)
        va, vW, vb = self.layout.split(velocity)

        def block(i0, i1, S, A):
            """The block's rows of the velocity (before the learning rates)."""
            np.matmul(lp, S, out=va[i0:i1])
            G = A * lp[:, None]  # l'_k a0_i sigma'(z0_ik)
            np.matmul(G.T, X, out=vW[i0:i1])
            if vb is not None:
                G.sum(axis=0, out=vb[i0:i1])

        self._over_blocks(X, block, rows, train=True)
        va *= -self.eta_a
        vW *= -self.eta_w
        if vb is not None:
            vb *= -self.eta_b
        return velocity, float(loss)
