"""Parameterizations: the one place that maps a preset and a width m to plain numbers.

Every preset is a point of one family (docs/design.md §2, Yang & Hu's abc-parameterization for
two layers):

    f(x) = s * sum_i a_i sigma(w_i . x + b_i),   s = s0 m^-A,
    a_i(0) ~ N(0, a_std^2 m^-2B),   w_i(0) ~ N(0, w_std^2 I_d / d),   b_i(0) ~ N(0, b_std^2),
    da_i/dt = -eta_a dR/da_i,  dw_i/dt = -eta_w dR/dw_i,   eta_a = lr_a m^-C_a, eta_w = lr_w m^-C_w,
    R = loss_scale * (1/n) sum_k loss(f(x_k), y_k).

With model.output_bias, f gains a trained scalar c, c(0) ~ N(0, c_std^2), dc/dt = -eta_c dR/dc,
eta_c = lr_c (default lr) at every width: c enters f without s, so its kernel term
loss_scale * eta_c is O(1) in every preset (docs/design.md §1.1).

| preset     | s0    | A   | B   | C   | loss_scale | clock                                        |
|------------|-------|-----|-----|-----|------------|----------------------------------------------|
| mean_field | 1     | 1   | 0   | -1  | 1          | time of the mean-field limit ODE             |
| ntk        | 1     | 1/2 | 0   | 0   | 1          | time of kernel gradient flow with the NTK    |
| standard   | 1     | 0   | 1/2 | 0   | 1          | plain gradient-flow time (kernel grows ~ m)  |
| lazy       | alpha | 1   | 0   | -1  | 1/alpha^2  | mean-field time; alpha = sqrt(m) is ntk      |
| mup        | 1     | 0   | 1   | C_a = 1, C_w = -1 | 1   | mean-field time (mup is mean_field, below)   |
| custom     | s0    | A   | B   | C   | 1          | as the exponents make it                     |

``mup`` is Yang & Hu's muP for SGD in their own coordinates: no output multiplier (s = 1), output
weights of variance a_std^2 / m^2 trained at lr / m, input weights of variance w_std^2 / d trained
at lr m. It is ``mean_field`` in other coordinates (docs/design.md §2.2). Yang & Hu's symmetry of
the family, for any theta,

    a -> m^theta a,  s -> m^-theta s,  eta_a -> m^(2 theta) eta_a    (A + theta, B - theta, C_a - 2 theta, C_w)

leaves f(x) and every trajectory unchanged: with a' = m^theta a, dR/da' = m^-theta dR/da, so
da'/dt = m^theta da/dt = -(m^(2 theta) eta_a) dR/da', and dR/dw is the same function. theta = 1
maps mup (0, 1, 1, -1) to mean_field (1, 0, -1, -1): from the same draws z,

    a_mf(t) = m a_mup(t),   w_i and b_i the same,   f(x, t) the same,   eta_a,mf = m^2 eta_a,mup = m lr.

A run's lr_a may be 0: the output weights stay at a_i(0) (only w_i and b_i train); the predicted
regime then drops the a-terms (``fixed_a``). The biases b_i train at eta_b = lr_b m^-C_w (lr_b
defaults to lr_w: eta_b = eta_w, the rate of w; ``Resolved.eta_b`` is None then). A run's lr_w may
be 0 too: random features, the first layer stays at (w_i(0), b_i(0)) (b_i as well unless lr_b > 0)
and only a (and an output bias) moves; the predicted regime is then that of a model linear in a
(``fixed_w``, below).

Predicted regime, from the exponents alone (fixed d, m -> infinity, t of order 1):
the tangent kernel scales as K ~ m^kappa with kappa = max(1 - 2A - C_a, 1 - 2A - 2B - C_w)
(kappa = 0: training moves f by O(1) in O(1) time). Over that time a_i is of the larger of its
start m^-B and its update s eta_a ~ m^-(A + C_a), and each w_i moves by ~ s eta_w |a_i| ~ m^-r
with r = A + C_w + min(B, A + C_a) + kappa. Yang & Hu: r = 0 is feature learning (rich),
r > 0 is the kernel regime (lazy); r < 0 (with kappa = 0) is Luo et al.'s condensed phase,
where the relative change of the w_i grows with m. Luo, Xu, Ma & Zhang's phase diagram, with 1/alpha = s,
beta1 = a_std m^-B and beta2 = w_std / sqrt(d) and one learning rate for both layers: gamma = A + B,
gamma' = B; linear if gamma < 1 or gamma' > gamma - 1, condensed if gamma > 1 and gamma' < gamma - 1,
else critical. With per-layer rates the symmetry above (theta = (C_a - C_w) / 2) first brings the
two rates to one exponent: gamma = A + B, gamma' = B - (C_a - C_w) / 2 (kappa, r, gamma and gamma'
are all invariant under the symmetry; mup and mean_field both have (1, 0)).
With the output layer fixed (lr_a = 0) the a-terms drop: kappa = 1 - 2A - 2B - C_w and
r = A + B + C_w + kappa (a_i stays at its start m^-B); Luo et al.'s diagram (both layers trained)
does not cover it, and gamma' = B is stored as for one rate.
With the first layer fixed (lr_w = 0 and no lr_b > 0: random features) nothing but a moves: f is
linear in a, so the flow is kernel gradient flow with the fixed random-features kernel
s^2 eta_a sum_i sigma(z_i) sigma(z_i') whatever the exponents: a kernel regime (lazy-like, with the
random-features kernel, not the NTK): kappa = 1 - 2A - C_a, r = inf (the features never move), and
the label is lazy where kappa = 0 (unstable or frozen as kappa says otherwise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # the scenario's section types, for annotations only: the schema asks this layer
    from ..config.sections import ModelSpec, PresetBase

# preset -> (A, B, C_a, C_w) exponents; lazy also scales s and the loss with alpha
EXPONENTS = {
    "mean_field": (1.0, 0.0, -1.0, -1.0),
    "ntk": (0.5, 0.0, 0.0, 0.0),
    "standard": (0.0, 0.5, 0.0, 0.0),
    "lazy": (1.0, 0.0, -1.0, -1.0),
    "mup": (0.0, 1.0, 1.0, -1.0),
}

CLOCKS = {
    "mean_field": "t is the time of the mean-field limit ODE: runs of different widths compare at equal t",
    "ntk": "t is the time of kernel gradient flow with the (O(1)) neural tangent kernel",
    "standard": "t is plain gradient-flow time; the tangent kernel grows like m, so dt must shrink like 1/m",
    "lazy": "t is mean-field time: the function moves O(1) in O(1) time whatever alpha is",
    "mup": "t is the time of the mean-field limit ODE (mup is mean_field with a = a_mf / m): "
           "runs of different widths compare at equal t",
    "custom": "t is gradient-flow time with the learning rates lr * m^-C",
}


@dataclass(frozen=True)
class Regime:
    """What the exponents predict as m -> infinity (see the module docstring)."""

    label: str  # rich | lazy | condensed | unstable | frozen | intermediate
    kappa: float
    r: float
    gamma: float
    gamma_prime: float
    luo_phase: str  # linear | critical | condensed
    reason: str


@dataclass(frozen=True)
class Resolved:
    """A parameterization at a given width: the plain numbers the solvers take."""

    preset: str
    width: int
    s: float
    eta_a: float
    eta_w: float
    a_std: float
    w_std: float  # per-coordinate std of w_i: w_std / sqrt(d)
    b_std: float
    loss_scale: float
    exponents: dict
    regime: Regime
    clock: str
    eta_b: Optional[float] = None
    """The first-layer biases' learning rate lr_b m^-C_w when lr_b is given; None: eta_w (the default)."""
    eta_c: Optional[float] = None
    """The output bias's learning rate (lr_c, default lr; model.output_bias), None without one."""
    c_std: Optional[float] = None
    """The spread of the output bias at t = 0 (init.c_std), None without one."""

    @property
    def rate_b(self) -> float:
        """The rate the biases b_i train at: eta_b, or eta_w without an lr_b."""
        return self.eta_w if self.eta_b is None else self.eta_b

    def as_attrs(self) -> dict:
        """Flat attributes for the trajectory file (eta_b only with an lr_b; eta_c and c_std only
        with an output bias)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("regime", "exponents") and v is not None}
        out["exponents"] = dict(self.exponents)
        out["predicted_regime"] = self.regime.label
        out["predicted_regime_reason"] = self.regime.reason
        out.update({f"predicted_{k}": getattr(self.regime, k)
                    for k in ("kappa", "r", "gamma", "gamma_prime", "luo_phase")})
        return out


def resolve(param: PresetBase, model: ModelSpec, dim: int, dt_factor: Optional[float] = None,
            fixed_kernel: bool = False) -> Resolved:
    """Resolve a preset (or custom exponents) at width ``model.width`` to numbers; ``dt_factor``:
    the run steps at dt = dt_factor * 2 / lambda_0 (its integrator's dt_factor), which the
    predicted regime takes into account, with ``fixed_kernel`` for a run whose kernel cannot
    change (tangent, ntk) (:func:`predict_regime`)."""
    m = model.width
    s0, loss_scale = 1.0, 1.0
    if param.preset == "custom":
        A, B, C = param.output_exponent, param.init_exponent, param.lr_exponent
        s0 = param.s0
        C_a = C if param.lr_exponent_a is None else param.lr_exponent_a
        C_w = C if param.lr_exponent_w is None else param.lr_exponent_w
    else:
        A, B, C_a, C_w = EXPONENTS[param.preset]
    if param.preset == "lazy":
        s0, loss_scale = param.alpha, param.alpha ** -2
    lr_a = param.lr if param.lr_a is None else param.lr_a
    lr_w = param.lr if param.lr_w is None else param.lr_w
    lr_b = getattr(param, "lr_b", None)
    fixed_w = lr_w == 0 and not (model.bias and lr_b)
    return Resolved(
        preset=param.preset,
        width=m,
        s=s0 * m ** -A,
        eta_a=lr_a * m ** -C_a,
        eta_w=lr_w * m ** -C_w,
        a_std=model.init.a_std * m ** -B,
        w_std=model.init.w_std / math.sqrt(dim),
        b_std=model.init.b_std,
        loss_scale=loss_scale,
        exponents={"A": A, "B": B, "C_a": C_a, "C_w": C_w},
        regime=predict_regime(A, B, C_a, C_w, alpha=getattr(param, "alpha", None), fixed_a=lr_a == 0,
                              dt_factor=dt_factor, fixed_kernel=fixed_kernel, fixed_w=fixed_w),
        clock=CLOCKS[param.preset],
        eta_b=None if lr_b is None else lr_b * m ** -C_w,
        eta_c=(param.lr if param.lr_c is None else param.lr_c) if model.output_bias else None,
        c_std=model.init.c_std if model.output_bias else None,
    )


CATAPULT_WINDOW = 2.0
"""The upper edge of the catapult phase along dt_factor c in Lewkowycz et al.'s uv model (eta < 4 / lambda_0)."""


def predict_regime(A: float, B: float, C_a: float, C_w: float, alpha=None, fixed_a: bool = False,
                   dt_factor: Optional[float] = None, fixed_kernel: bool = False, fixed_w: bool = False) -> Regime:
    """The regime the exponents predict (Yang & Hu's r; Luo et al.'s gamma, gamma'); ``fixed_a``:
    the output weights are not trained (lr_a = 0), so C_a plays no part; ``fixed_w``: the first
    layer is not trained (lr_w = 0, biases fixed too: random features), so only a moves and f is
    linear in it: a kernel regime with kappa = 1 - 2A - C_a and r = inf.

    ``dt_factor`` c: the run steps at dt = c * 2 / lambda_0 (docs/design.md §1.9), and lambda_0 ~
    m^kappa, so dt ~ m^-kappa takes the kernel's growth: the prediction is that of the rates the
    run takes per step, lr m^-(C_a + kappa) and lr m^-(C_w + kappa) (then kappa = 0; gamma and
    gamma' do not change). A step above Euler's edge of the initial kernel (c > 1) is read as
    Lewkowycz et al. (2020) found gradient descent: a catapult (rich) for 1 < c < 2, their uv
    model's window, unstable from c = 2 on; unstable at any c > 1 with ``fixed_kernel`` (a
    tangent or ntk run, whose kernel cannot soften)."""
    if fixed_w:
        return _random_features(A, B, C_a, dt_factor)
    kappa_w = 1 - 2 * A - 2 * B - C_w
    tol = 1e-12
    kappa = kappa_w if fixed_a else max(1 - 2 * A - C_a, kappa_w)
    if dt_factor is not None:
        stepped = _predict(A, B, C_a + kappa, C_w + kappa, alpha, fixed_a)
        if abs(kappa) > tol:
            stepped = replace(stepped, reason=(
                f"the step dt = c * 2 / lambda_0 ~ m^{-kappa:g} (dt_factor) takes the kernel's growth m^{kappa:g}: "
                f"per step the rates scale as m^-(C + {kappa:g}): {stepped.reason}"))
        return _catapult(stepped, dt_factor, fixed_kernel)
    return _predict(A, B, C_a, C_w, alpha, fixed_a)


def _random_features(A: float, B: float, C_a: float, dt_factor) -> Regime:
    """predict_regime with the first layer fixed (lr_w = 0, random features): f is linear in a,
    K = c s^2 eta_a sum_i sigma(z_i) sigma(z_i') ~ m^kappa, kappa = 1 - 2A - C_a; a step
    dt ~ 1 / lambda_0 (dt_factor) takes that growth (then kappa = 0). The kernel cannot change."""
    kappa = 0.0 if dt_factor is not None else 1 - 2 * A - C_a
    gamma = A + B
    phase = "linear" if gamma < 1 or B > gamma - 1 else ("condensed" if gamma > 1 and B < gamma - 1 else "critical")
    fixed = ("the first layer is fixed (lr_w = 0: random features): only the output weights move and f is "
             "linear in them: kernel gradient flow with the fixed random-features kernel")
    if kappa > 1e-12:
        regime = Regime("unstable", kappa, math.inf, gamma, B, phase,
                        f"{fixed}, which grows like m^{kappa:g}: the flow speeds up with width")
    elif kappa < -1e-12:
        regime = Regime("frozen", kappa, math.inf, gamma, B, phase,
                        f"{fixed}, which vanishes like m^{kappa:g}: training stalls as m grows")
    else:
        regime = Regime("lazy", kappa, math.inf, gamma, B, phase,
                        f"{fixed} (a kernel regime, lazy-like; the features never move: r = inf)")
    return regime if dt_factor is None else _catapult(regime, dt_factor, True)


def _catapult(regime: Regime, c: float, fixed_kernel: bool) -> Regime:
    """The regime of a run stepped at c times Euler's edge of its initial kernel (see predict_regime)."""
    if c <= 1.0:
        return regime
    edge = f"dt_factor {c:g} > 1: the step is above Euler's stability edge 2 / lambda_0 of the initial kernel"
    if fixed_kernel:
        return replace(regime, label="unstable", reason=(
            f"{edge}, and the kernel of this run is fixed (it cannot soften below 2 / dt): the loss grows"))
    if c < CATAPULT_WINDOW:
        return replace(regime, label="rich", reason=(
            f"{edge}: a catapult (Lewkowycz et al. 2020: the loss grows until the kernel's top eigenvalue "
            f"falls below 2 / dt, then falls; the weights move; their uv model catapults for 1 < c < "
            f"{CATAPULT_WINDOW:g}); below the edge it would be {regime.label} (r = {regime.r:g})"))
    return replace(regime, label="unstable", reason=(
        f"{edge} and at or above the catapult window of Lewkowycz et al.'s uv model (1 < c < "
        f"{CATAPULT_WINDOW:g}), where gradient descent diverges (a relu network's upper edge lies higher: "
        f"docs/studies.md, bundled study 6); below the edge it would be {regime.label} (r = {regime.r:g})"))


def _predict(A: float, B: float, C_a: float, C_w: float, alpha, fixed_a: bool) -> Regime:
    """predict_regime at the rates given: the exponents alone, t of order 1."""
    kappa_w = 1 - 2 * A - 2 * B - C_w
    if fixed_a:
        kappa = kappa_w
        r = A + C_w + B + kappa
    else:
        kappa = max(1 - 2 * A - C_a, kappa_w)
        r = A + C_w + min(B, A + C_a) + kappa
    gamma, gamma_prime = A + B, B - (0.0 if fixed_a else (C_a - C_w) / 2)
    if gamma < 1 or gamma_prime > gamma - 1:
        phase = "linear"
    elif gamma > 1 and gamma_prime < gamma - 1:
        phase = "condensed"
    else:
        phase = "critical"
    tol = 1e-12
    if kappa > tol:
        label = "unstable"
        reason = (f"the tangent kernel grows like m^{kappa:g}: the flow speeds up with width "
                  f"(gradient descent needs dt ~ m^-{kappa:g}, which a dt_factor gives); features move like "
                  f"m^{-r:g} meanwhile")
    elif kappa < -tol:
        label = "frozen"
        reason = f"the tangent kernel vanishes like m^{kappa:g}: training stalls as m grows"
    elif abs(r) <= tol:
        label = "rich"
        reason = "r = 0: each neuron moves O(1): feature learning, mean-field (Wasserstein) dynamics"
    elif r > 0:
        label = "lazy"
        reason = f"r = {r:g}: each neuron moves ~ m^-{r:g}: kernel regime (NTK)"
    else:
        label = "condensed"
        reason = (f"r = {r:g}: the input weights' relative change grows with m (Luo et al.'s condensed "
                  f"phase: neurons gather on a few directions); m^{-r:g} is the first-order rate, which holds the "
                  "t = 0 gradients through t ~ 1: the growth stops once the network fits, so the measured exponent "
                  "can be smaller (docs/design.md §2.3)")
    if alpha is not None and label == "rich" and alpha > 1.0:
        # Chizat, Oyallon & Bach (2019): at scale alpha the relative displacement is ~ 1/alpha
        label = "lazy" if alpha >= 10 else "intermediate"
        reason = (f"alpha = {alpha:g}: mean-field at alpha = 1, lazy as alpha -> infinity; "
                  f"relative displacement ~ 1/alpha = {1 / alpha:.3g} (Chizat, Oyallon & Bach 2019)")
    if fixed_a:
        reason += "; the output weights are fixed (lr_a = 0): only the input layer trains"
    return Regime(label, kappa, r, gamma, gamma_prime, phase, reason)
