"""What a trained run predicts at new inputs (docs/design.md §4.5), one function per kind of run.

Every function takes the run's resolved numbers ``r`` (a :class:`meanfield.model.parameterization.Resolved`,
or anything with its attributes s, eta_a, eta_w, a_std, w_std, b_std, loss_scale, width,
eta_c, c_std: a trajectory file's run attributes) and returns f(X), shape [n], float64.

- :func:`network`: a particle run at a snapshot, f(x) = s sum_i a_i sigma(w_i . x + b_i) + c.
- :func:`linearized`: a ``tangent`` run, the network linearized at its start theta_0,
  f(x) = f_0(x) + grad_theta f(x; theta_0) . (theta - theta_0).
- :func:`flow_kernels` and :func:`kernel_flow`: an ``ntk`` run, kernel gradient flow in
  function space (docs/design.md §1.6): its kernel K(., X_train) and f_0 on new points from
  the run's initial particles (empirical) or in closed form (analytic), then the flow's f_t
  on those points: in closed form for the squared loss (``solvers.ntk.LinearizedSquared``
  with the new points as its test set), else integrated again with the run's integrator on the
  state [f(X_train), f(X)] up to t (the training part is the run's own; the new points follow
  df_t(x)/dt = -(1/n) sum_k K(x, x_k) l'(f_t(x_k), y_k) - lambda (f_t(x) - f_0(x))).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from solvers import ntk as kernels
from solvers.particles import predict as forward

from .draws import InitialDraws, initial_output_bias, initial_particles


def network(a, W, b, X, s: float, act: int, c: Optional[float] = None) -> np.ndarray:
    """f(x_k) = s sum_i a_i sigma(w_i . x_k + b_i) (+ c), for the rows x_k of X."""
    return forward(a, W, b, X, s, act, c)


def linearized(start, now, X, s: float, act: int, c: Optional[float] = None) -> np.ndarray:
    """f_lin(x) = s sum_i [a_i sigma(z0_i) + a0_i sigma'(z0_i) ((w_i - w0_i) . x + b_i - b0_i)] (+ c),
    z0_i = w0_i . x + b0_i: the network linearized at ``start`` = (a0, W0, b0), at ``now`` = (a, W, b)."""
    a0, W0, b0 = start
    a, W, b = now
    tangent = kernels.TangentField(a0, W0, b0, X, np.zeros(len(X)), s=s, eta_a=1.0, eta_w=1.0, act=act,
                                   loss="squared", c0=c, eta_c=None if c is None else 1.0)
    return tangent.predict(tangent.layout.pack(a, W, b, c=c), X)


def flow_kernels(r, draws: InitialDraws, X_train, X_other, act: int, bias: bool, kernel: str):
    """K(X_train, X_train), K(X_other, X_train) and f_0 on [X_train; X_other] of an ``ntk`` run:
    of its initial particles (``empirical``), or the analytic m -> infinity limit from f_0 = 0.
    An output bias adds loss_scale * eta_c to either kernel and its c_0 to f_0."""
    c0 = initial_output_bias(draws, r)
    eta_c = r.eta_c or 0.0
    if kernel == "empirical":
        a0, W0, b0 = initial_particles(draws, r, bias)
        K_train, K_other, f0_train, f0_other = kernels.train_test_ntk(
            a0, W0, b0, X_train, X_other, return_f0=True, s=r.s, eta_a=r.eta_a, eta_w=r.eta_w,
            act=act, loss_scale=r.loss_scale, eta_c=eta_c, eta_b=r.eta_b)
        f0 = np.concatenate([f0_train, f0_other])
        return K_train, K_other, f0 if c0 is None else f0 + c0
    # E over the initialization of the empirical kernel at this width: the weights
    # c s^2 m eta are the m -> infinity limits for mean_field, ntk and lazy
    X = np.vstack([X_train, X_other])
    weight = r.loss_scale * r.s**2 * r.width
    _, K = kernels.analytic_kernels(X, X_train, act=act, w_var=r.w_std**2, b_var=r.b_std**2,
                                    a_var=r.a_std**2, eta_a=weight * r.eta_a, eta_w=weight * r.eta_w,
                                    bias=bias, eta_c=r.loss_scale * eta_c,
                                    eta_b=None if r.eta_b is None else weight * r.eta_b)
    n = len(X_train)
    return K[:n], K[n:], np.full(len(X), 0.0 if c0 is None else c0)


def kernel_flow(r, draws: InitialDraws, data, X, t: float, *, act: int, bias: bool, kernel: str, ridge: float,
                loss: int, closed_form: bool, stepper=None, save_times=(), exact_steps=False) -> np.ndarray:
    """f_t(X) of an ``ntk`` run trained on ``data`` (a Dataset): closed form for the squared loss,
    else the flow integrated again by ``stepper`` through ``save_times`` (the run's snapshot times
    after 0 up to t) as the run was (``exact_steps``: its integrator's dt_factor steps)."""
    K_train, K_new, f0 = flow_kernels(r, draws, data.X_train, X, act, bias, kernel)
    n = data.n_train
    if closed_form:
        solution = kernels.LinearizedSquared(K_train, data.y_train, f0[:n], K_new, f0[n:], ridge=ridge)
        return solution.predict(float(t))[1]
    from solvers.integrate import LoopState, integrate

    field = kernels.FunctionSpaceField(K_train, data.y_train, loss, K_test_train=K_new, ridge=ridge, f0=f0)
    state = LoopState(0.0, 0, np.array(f0, dtype=np.float64))
    if len(save_times):
        state = integrate(field, state, stepper, np.asarray(save_times, dtype=np.float64),
                          exact_steps=exact_steps).state
    return field.split(state.y)[1]


def target(teacher, X) -> np.ndarray:
    """The noiseless target f*(x) of a task with a teacher (:class:`meanfield.model.data.Teacher`):
    sum_j a*_j sigma*(w*_j . x), or He_k(u . x) / sqrt(k!) for single_index (activation ``hermite<k>``)."""
    from solvers.activations import activation_code

    from .data import hermite_normalized

    X = np.ascontiguousarray(X, dtype=np.float64)
    if teacher.activation.startswith("hermite"):
        return hermite_normalized(X @ teacher.W[0], int(teacher.activation[len("hermite"):]))
    return forward(teacher.a, teacher.W, None, X, 1.0, activation_code(teacher.activation))
