"""Integrators and the one stepping loop every solver shares.

A *vector field* is any callable ``field(t, y, batch=None) -> (dy, loss)``: ``dy`` is
dy/dt at state ``y`` (a flat float array) and ``loss`` the objective at ``y`` when the
field knows it (NaN otherwise). ``batch`` (an index array) asks for the field of a
minibatch; only ``SGD`` passes it, and a field used with SGD has ``n_samples``.

A *stepper* advances the state by one step ``h``. Fixed-step methods (``Euler``, ``Heun``,
``RK4``, ``EulerMaruyama``, ``SGD``) always accept; ``RK45`` (Dormand-Prince 5(4)) rejects
and resizes. The loop ``integrate`` is the same for all: it lands exactly on every
snapshot time, hands each snapshot to a callback, stops early at ``stop_loss``, and stops
with a clear message on non-finite values instead of going on with garbage.

Between two snapshot times t_a < t_b a fixed-step method takes
n = ceil((t_b - t_a) / dt) equal steps of h = (t_b - t_a) / n <= dt, so a run resumed
from a snapshot retraces the uninterrupted run exactly. With ``exact_steps`` (a step set
relative to the curvature, docs/design.md §3.4) every step is dt itself and the snapshot
is taken at the first step at or after each snapshot time instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

# ------------------------------------------------------------------------- steppers


@dataclass(frozen=True)
class Step:
    """What one step returns: the new state, the loss at the *start*, acceptance, next h."""

    y: np.ndarray
    loss: float
    accepted: bool = True
    h_next: Optional[float] = None
    k_end: Optional[np.ndarray] = None  # dy/dt at the new state, when known (FSAL)
    error: float = 0.0


def _start(field, t, y, k_start):
    return field(t, y) if k_start is None else k_start


@dataclass(frozen=True)
class Euler:
    """Explicit Euler, y_{n+1} = y_n + h f(y_n): full-batch gradient descent. Order 1."""

    dt: float
    order = 1
    adaptive = False

    def step(self, field, t, y, h, rng, k_start=None):
        k1, loss = _start(field, t, y, k_start)
        return Step(y + h * k1, loss)


@dataclass(frozen=True)
class Heun:
    """Heun's method: y_{n+1} = y_n + h/2 (k1 + k2), k2 = f(y_n + h k1). Order 2."""

    dt: float
    order = 2
    adaptive = False

    def step(self, field, t, y, h, rng, k_start=None):
        k1, loss = _start(field, t, y, k_start)
        k2, _ = field(t + h, y + h * k1)
        return Step(y + 0.5 * h * (k1 + k2), loss)


@dataclass(frozen=True)
class RK4:
    """Classical Runge-Kutta: y_{n+1} = y_n + h/6 (k1 + 2 k2 + 2 k3 + k4). Order 4."""

    dt: float
    order = 4
    adaptive = False

    def step(self, field, t, y, h, rng, k_start=None):
        k1, loss = _start(field, t, y, k_start)
        k2, _ = field(t + 0.5 * h, y + 0.5 * h * k1)
        k3, _ = field(t + 0.5 * h, y + 0.5 * h * k2)
        k4, _ = field(t + h, y + h * k3)
        return Step(y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4), loss)


@dataclass(frozen=True)
class EulerMaruyama:
    """Euler-Maruyama for dY = f(Y) dt + sqrt(2 tau) dB (mean-field Langevin). Strong order 1/2.

    y_{n+1} = y_n + h f(y_n) + sqrt(2 tau h) xi_n, xi_n ~ N(0, I) drawn from the run's RNG.
    With tau = 0 it is ``Euler``.
    """

    dt: float
    temperature: float = 0.0
    order = 1
    adaptive = False

    def step(self, field, t, y, h, rng, k_start=None):
        k1, loss = _start(field, t, y, k_start)
        y_new = y + h * k1
        if self.temperature > 0:
            y_new += math.sqrt(2.0 * self.temperature * h) * rng.standard_normal(y.shape)
        return Step(y_new, loss)


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent: y_{n+1} = y_n + h f_B(y_n), B a fresh minibatch each step.

    B holds ``batch_size`` distinct sample indices drawn (sorted) from the run's RNG;
    E[f_B] = f, so as h -> 0 the iterates follow the full-batch flow. The loss reported
    for ``stop_loss`` is the minibatch loss.
    """

    dt: float
    batch_size: int
    order = 1
    adaptive = False

    def step(self, field, t, y, h, rng, k_start=None):
        n = field.n_samples
        batch = np.sort(rng.choice(n, size=min(self.batch_size, n), replace=False))
        k1, loss = field(t, y, batch=batch)
        return Step(y + h * k1, loss)


# Dormand-Prince 5(4) tableau (Dormand & Prince 1980; the coefficients of scipy's RK45).
_DP_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0])
_DP_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
]
_DP_B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84])
# b5 - b4 for the 7 stages (the last stage is f at the new point: first same as last).
_DP_E = np.array(
    [71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]
)


@dataclass(frozen=True)
class RK45:
    """Dormand-Prince 5(4) with an embedded error estimate and step-size control.

    A step is accepted when err <= 1, the error of the step relative to the size of the state
    in the root-mean-square norm over all its components (all particles):

        err = rms(y5 - y4) / (atol + rtol max(rms(y_n), rms(y_{n+1})))

    the next step is h * clip(0.9 err^(-1/5), 0.2, 5), kept within [dt_min, dt_max]. The
    solution advances with the 5th-order result (local extrapolation). The defaults,
    rtol 1e-3 and atol 1e-6, are scipy's ``solve_ivp`` defaults.

    Unlike scipy, which scales each component by atol + rtol |y_i|, the scale is the whole
    state's: a particle's coordinates mean nothing one by one. With a per-component scale, a
    relu neuron whose input weights shrink to w = 0 (where the kinks of all n samples meet,
    and where gradient flow without bias parks such neurons) is held to atol alone, while
    every step it takes crosses those kinks: the step collapsed to 1.6e-6 on quickstart.

    When it pays, in evaluations of the field against a fixed-step rk4 whose test predictions
    are as accurate (measured on teacher-student runs; README, Integrators):

    - smooth activations (tanh, erf, sigmoid, softplus, linear, quadratic): the error between
      snapshots falls like h^5, and rk45 needs 0.4-0.5 times rk4's evaluations;
    - relu, kinked at 0: about rk4's cost at the default tolerances (0.5-1.3 times) but 2.6-2.9
      times at rtol 1e-6. The field jumps where a neuron crosses a sample's kink, the local
      error there is O(h) for any method, and the error test shrinks the step at every crossing.
      For relu runs that need more than about 3 digits prefer rk4 at a fixed dt.
    """

    rtol: float = 1e-3
    atol: float = 1e-6
    dt: Optional[float] = None  # first trial step; None picks one from |y| / |f(y)|
    dt_min: float = 1e-10
    dt_max: float = math.inf
    order = 5
    adaptive = True

    def scale(self, *states) -> float:
        """atol + rtol max_k rms(y_k): what an error is measured against."""
        return self.atol + self.rtol * max(_rms(y) for y in states)

    def initial_step(self, field, t, y, k_start):
        if self.dt is not None:
            return min(self.dt, self.dt_max)
        k1, _ = k_start
        scale = self.scale(y)
        d0, d1 = _rms(y) / scale, _rms(k1) / scale
        h = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        return float(min(max(h, self.dt_min), self.dt_max))

    def step(self, field, t, y, h, rng, k_start=None):
        k1, loss = _start(field, t, y, k_start)
        ks = [k1]
        for stage in range(1, 6):
            y_stage = y + h * sum(a * k for a, k in zip(_DP_A[stage], ks))
            ks.append(field(t + _DP_C[stage] * h, y_stage)[0])
        y_new = y + h * sum(b * k for b, k in zip(_DP_B, ks))
        k7 = field(t + h, y_new)
        ks.append(k7[0])
        err = _rms(h * sum(e * k for e, k in zip(_DP_E, ks))) / self.scale(y, y_new)
        if not np.isfinite(err):
            return Step(y, loss, accepted=False, h_next=h * 0.2, error=math.inf)
        factor = 5.0 if err == 0 else min(5.0, max(0.2, 0.9 * err ** -0.2))
        h_next = min(max(h * factor, self.dt_min), self.dt_max)
        if err > 1.0:
            return Step(y, loss, accepted=False, h_next=min(h_next, 0.9 * h), error=err)
        return Step(y_new, loss, accepted=True, h_next=h_next, k_end=k7, error=err)


def _rms(v):
    return float(np.sqrt(np.mean(np.square(v)))) if v.size else 0.0


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class LoopState:
    """Where the loop is: what a snapshot callback receives and a checkpoint stores
    (``meanfield.model.state.RunState`` is this type).

    Frozen, as jax-md keeps state: the loop never changes a state, it makes the next one, so
    a callback may keep what it is handed and the caller's starting state stays as it was.
    ``rng`` is the state of the run's random stream (``bit_generator.state``) on the snapshots
    the loop hands out, when it was given an RNG, and None on its other states (the stream
    moves on with every step)."""

    t: float
    step: int
    y: np.ndarray
    h: Optional[float] = None  # rk45's current step size (its only state)
    rng: Optional[dict] = None
    n_rejected: int = 0
    loss: float = math.nan  # the field's loss at y when known


@dataclass(frozen=True)
class Outcome:
    """How ``integrate`` ended: ``status`` is 'complete', 'stop_loss' or 'diverged'."""

    status: str
    state: LoopState
    message: str = ""
    n_evaluations: int = 0


def snapshot_times(t0: float, t_end: float, every: float) -> np.ndarray:
    """t0 + k * every for k = 1, 2, ... up to t_end, and t_end itself (the snapshots after t0)."""
    count = int(math.floor((t_end - t0) / every * (1 + 1e-12)))
    times = t0 + every * np.arange(1, count + 1)
    times = times[times < t_end - 1e-12 * max(1.0, abs(t_end))]
    return np.append(times, t_end)


def log_snapshot_times(first: float, t_end: float, per_decade: int) -> np.ndarray:
    """first * 10^(k / per_decade) for k = 0, 1, ... below t_end, and t_end itself: snapshots
    on a logarithmic clock, per_decade in each decade of t (the snapshots after t = 0).
    first >= t_end gives t_end alone."""
    count = int(math.floor(per_decade * math.log10(t_end / first) * (1 + 1e-12))) + 1 if first < t_end else 0
    times = first * 10.0 ** (np.arange(count) / per_decade)
    times = times[times < t_end - 1e-12 * max(1.0, abs(t_end))]
    return np.append(times, t_end)


def integrate(
    field: Callable,
    state: LoopState,
    stepper,
    save_times,
    *,
    on_snapshot: Callable[[LoopState], None] = lambda s: None,
    stop_loss: float = 0.0,
    rng: Optional[np.random.Generator] = None,
    on_step: Optional[Callable[[LoopState], None]] = None,
    max_abs: float = math.inf,
    exact_steps: bool = False,
) -> Outcome:
    """Advance ``state`` through every time in ``save_times`` (all > state.t).

    ``on_snapshot`` is called at each save time (not at ``state.t`` itself: the caller
    records the start). The loop stops early, with a final snapshot, once the field's loss
    at the current state is below ``stop_loss``; and it stops with status 'diverged' when
    the state becomes non-finite (or larger than ``max_abs``: e.g. what a float32 snapshot
    can hold) or rk45's step falls below ``dt_min``. ``exact_steps`` (fixed-step methods):
    every step is the stepper's dt, and each snapshot is taken at the first step at or after
    its save time (once: a step past several save times gives one snapshot), so the clock
    may end past the last save time by less than dt.
    """
    evaluations = [0]

    def counted(t, y, batch=None):
        evaluations[0] += 1
        return field(t, y) if batch is None else field(t, y, batch=batch)

    if hasattr(field, "n_samples"):
        counted.n_samples = field.n_samples
    k_start = None
    if stepper.adaptive:
        k_start = counted(state.t, state.y)
        if state.h is None:
            state = replace(state, h=stepper.initial_step(counted, state.t, state.y, k_start))
    snapped = state.step  # the caller records the start
    for t_save in save_times:
        while state.t < t_save - (_SLACK * max(1.0, abs(t_save)) if exact_steps else 0.0):
            h = stepper.dt if exact_steps else _next_h(stepper, state, t_save)
            out = stepper.step(counted, state.t, state.y, h, rng, k_start)
            if stop_loss > 0 and out.loss < stop_loss:
                state = _snapshot(replace(state, loss=out.loss), rng)
                on_snapshot(state)
                return _done("stop_loss", state, evaluations)
            if not out.accepted:
                state = replace(state, h=out.h_next, rng=None, n_rejected=state.n_rejected + 1, loss=out.loss)
                if state.h <= stepper.dt_min * (1 + 1e-12) and out.error > 1:
                    return _diverged(state, stepper, evaluations, "the step size fell to dt_min")
                continue
            if not np.all(np.abs(out.y) < max_abs):  # False for NaN and inf too
                what = "the state became non-finite" + (f" or exceeded {max_abs:.3g}" if max_abs < math.inf else "")
                return _diverged(replace(state, rng=None, loss=out.loss), stepper, evaluations, what)
            landed = not exact_steps and t_save - (state.t + h) <= _SLACK * max(1.0, abs(t_save))
            # a step cut short to land on t_save keeps rk45's old proposal
            h_next = out.h_next if stepper.adaptive and h >= state.h else state.h
            state = LoopState(t_save if landed else state.t + h, state.step + 1, out.y, h=h_next,
                              n_rejected=state.n_rejected, loss=out.loss)
            k_start = out.k_end
            if on_step is not None:
                on_step(state)
        if state.step != snapped or not exact_steps:
            state = _snapshot(state, rng)
            on_snapshot(state)
            snapped = state.step
    return _done("complete", state, evaluations)


def _snapshot(state: LoopState, rng) -> LoopState:
    """``state`` as a snapshot hands it out: with its random stream's state, when there is one."""
    return state if rng is None else replace(state, rng=rng.bit_generator.state)


_SLACK = 1e-12
"""Relative slack on the clock: a time this close to a save time has reached it."""


def _next_h(stepper, state: LoopState, t_save: float) -> float:
    """The step to try: a fixed method splits [t, t_save] evenly; rk45 is cut at t_save."""
    remaining = t_save - state.t
    if stepper.adaptive:
        return min(state.h, remaining)
    return even_step(remaining, stepper.dt)


def even_step(interval: float, dt: float) -> float:
    """The step a fixed method takes across ``interval``: interval / n, n = ceil(interval / dt)
    equal steps (dt itself, up to rounding, when it divides the interval)."""
    n = max(1, math.ceil(interval / dt * (1 - _SLACK)))
    return interval / n


def _done(status, state, evaluations):
    return Outcome(status, state, n_evaluations=evaluations[0])


def _diverged(state, stepper, evaluations, what):
    if stepper.adaptive:
        advice = f"tighten rtol/atol (now {stepper.rtol:g}/{stepper.atol:g}) or lower the learning rate"
    else:
        advice = f"use a smaller dt than {stepper.dt:g} or a lower learning rate"
    message = f"{what} at t = {state.t:.6g} (step {state.step}): {advice}"
    return Outcome("diverged", state, message=message, n_evaluations=evaluations[0])


def make_stepper(method: str, *, dt=None, rtol=RK45.rtol, atol=RK45.atol, dt_min=RK45.dt_min, dt_max=None,
                 temperature=0.0, batch_size=None):
    """Build a stepper from the names a scenario uses (rk45's tolerances default to RK45's)."""
    if method == "euler":
        return Euler(dt)
    if method == "heun":
        return Heun(dt)
    if method == "rk4":
        return RK4(dt)
    if method == "euler_maruyama":
        return EulerMaruyama(dt, temperature)
    if method == "sgd":
        return SGD(dt, batch_size)
    if method == "rk45":
        return RK45(rtol, atol, dt, dt_min, math.inf if dt_max is None else dt_max)
    raise ValueError(f"unknown integrator {method!r}")
