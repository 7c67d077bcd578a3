"""Presets resolve to the numbers of docs/design.md §2, and the exponents predict the right regime."""

import math

import pytest

from meanfield.config.sections import (
    CustomPreset,
    LazyPreset,
    MeanFieldPreset,
    ModelSpec,
    MuPPreset,
    NTKPreset,
    StandardPreset,
)
from meanfield.model.parameterization import predict_regime, resolve

M, D = 400, 5
MODEL = ModelSpec(width=M, init={"a_std": 2.0, "w_std": 3.0})


@pytest.mark.parametrize(
    "preset, s, eta, a_std, loss_scale, label",
    [
        (MeanFieldPreset(lr=0.5), 1 / M, 0.5 * M, 2.0, 1.0, "rich"),
        (NTKPreset(lr=0.5), 1 / math.sqrt(M), 0.5, 2.0, 1.0, "lazy"),
        (StandardPreset(lr=0.5), 1.0, 0.5, 2.0 / math.sqrt(M), 1.0, "unstable"),
        (LazyPreset(lr=0.5, alpha=100.0), 100.0 / M, 0.5 * M, 2.0, 1e-4, "lazy"),
        (LazyPreset(lr=0.5, alpha=1.0), 1.0 / M, 0.5 * M, 2.0, 1.0, "rich"),
    ],
)
def test_presets_resolve_to_the_design_table(preset, s, eta, a_std, loss_scale, label):
    r = resolve(preset, MODEL, D)
    assert r.s == pytest.approx(s)
    assert r.eta_a == pytest.approx(eta) and r.eta_w == pytest.approx(eta)
    assert r.a_std == pytest.approx(a_std)
    assert r.w_std == pytest.approx(3.0 / math.sqrt(D))
    assert r.loss_scale == pytest.approx(loss_scale)
    assert r.regime.label == label


def test_lazy_with_alpha_sqrt_m_has_the_ntk_dynamics():
    # the effective kernel c s^2 eta is what the flow sees: lazy(alpha = sqrt(m)) equals ntk
    lazy = resolve(LazyPreset(alpha=math.sqrt(M)), MODEL, D)
    ntk = resolve(NTKPreset(), MODEL, D)
    assert lazy.s == pytest.approx(ntk.s)
    assert lazy.loss_scale * lazy.eta_w == pytest.approx(ntk.eta_w)


def test_custom_exponents_and_per_layer_rates():
    preset = CustomPreset(s0=2.0, output_exponent=0.5, init_exponent=0.25, lr_exponent=0.0,
                          lr_exponent_a=1.0, lr_a=3.0)
    r = resolve(preset, MODEL, D)
    assert r.s == pytest.approx(2.0 * M**-0.5)
    assert r.a_std == pytest.approx(2.0 * M**-0.25)
    assert r.eta_a == pytest.approx(3.0 / M) and r.eta_w == pytest.approx(1.0)


def test_regime_predictions_match_yang_hu_and_luo_et_al():
    mf = predict_regime(1, 0, -1, -1)
    assert (mf.r, mf.kappa, mf.luo_phase, mf.gamma, mf.gamma_prime) == (0, 0, "critical", 1, 0)
    ntk = predict_regime(0.5, 0, 0, 0)
    assert (ntk.r, ntk.label, ntk.luo_phase) == (0.5, "lazy", "linear")
    # gamma > 1 with gamma' < gamma - 1: Luo et al.'s condensed phase
    assert predict_regime(1.5, 0, -2, -2).luo_phase == "condensed"
    # a vanishing kernel freezes training
    assert predict_regime(1, 0, 0, 0).label == "frozen"


@pytest.mark.parametrize("gamma, gamma_prime, r, label", [
    # the width exponents measured by scenarios/sweeps/luo_phase_diagram.yaml are -r
    (0.5, -0.5, 0.5, "lazy"), (0.5, 0.5, 1.5, "lazy"), (0.5, 1.0, 2.5, "lazy"),
    (1.0, -0.5, 0.0, "rich"), (1.0, 0.5, 1.0, "lazy"), (1.5, 0.5, 0.0, "rich"),
    (1.5, 1.0, 1.0, "lazy"), (1.5, -0.5, -0.5, "condensed"),
])
def test_r_follows_the_output_weights_when_their_update_outgrows_their_start(gamma, gamma_prime, r, label):
    # (A, B) = (gamma - gamma', gamma') and one learning rate m^-C that keeps the kernel O(1)
    A, B = gamma - gamma_prime, gamma_prime
    C = 1 - 2 * A - 2 * min(0.0, B)
    regime = predict_regime(A, B, C, C)
    assert regime.kappa == 0 and regime.r == pytest.approx(r) and regime.label == label


def test_standard_parameterization_at_lr_one_over_m_moves_its_features_like_m_to_the_minus_three_halves():
    regime = predict_regime(0.0, 0.5, 1.0, 1.0)
    assert (regime.kappa, regime.r, regime.label) == (0.0, 1.5, "lazy")


@pytest.mark.parametrize("A, B, C_a, C_w", [(0, 0.5, 0, 0), (1, 0, -1, -1), (0.5, 0, 0, 0), (1, 0, 0, 0),
                                            (0, 1, 1, -1), (0.25, 0.75, 0.3, -0.6)])
def test_a_dt_factor_predicts_for_the_step_the_run_takes(A, B, C_a, C_w):
    """dt = c 2 / lambda_0 ~ m^-kappa: the run's rates per step are lr m^-(C + kappa), so the
    prediction is that of those exponents (kappa 0); gamma, gamma' are the same."""
    plain = predict_regime(A, B, C_a, C_w)
    stepped = predict_regime(A, B, C_a, C_w, dt_factor=0.5)
    same = predict_regime(A, B, C_a + plain.kappa, C_w + plain.kappa)
    assert stepped.kappa == 0
    assert (stepped.label, stepped.r, stepped.gamma, stepped.gamma_prime, stepped.luo_phase) == (
        same.label, pytest.approx(same.r), plain.gamma, pytest.approx(plain.gamma_prime), plain.luo_phase)
    if plain.kappa == 0:  # a step that follows an O(1) kernel changes nothing
        assert stepped == plain


def test_standard_at_a_dt_factor_is_lazy_below_the_edge_and_catapults_above_it():
    """The SP rows of the regime table: a step set against the initial kernel is lr ~ 1/m (lazy,
    r = 3/2, the row below) at c <= 1; above Euler's edge Lewkowycz et al.'s catapult (rich)
    up to their uv model's c = 2, unstable from there."""
    unstable = predict_regime(0.0, 0.5, 0.0, 0.0)
    assert unstable.label == "unstable" and "which a dt_factor gives" in unstable.reason
    for c in (0.5, 1.0):
        moderate = predict_regime(0.0, 0.5, 0.0, 0.0, dt_factor=c)
        assert (moderate.kappa, moderate.r, moderate.label) == (0.0, 1.5, "lazy")
        assert "the step dt = c * 2 / lambda_0 ~ m^-1 (dt_factor) takes the kernel's growth m^1" in moderate.reason
    large = predict_regime(0.0, 0.5, 0.0, 0.0, dt_factor=1.3)
    assert (large.label, large.r) == ("rich", 1.5) and "catapult" in large.reason and "lazy (r = 1.5)" in large.reason
    assert predict_regime(0.0, 0.5, 0.0, 0.0, dt_factor=2.5).label == "unstable"
    assert predict_regime(0.5, 0.0, 0.0, 0.0, dt_factor=1.5).label == "rich"  # ntk: the catapult sweeps' preset
    # a tangent (or ntk) run's kernel cannot soften: above the edge its loss grows (test_curvature)
    fixed = predict_regime(0.0, 0.5, 0.0, 0.0, dt_factor=1.05, fixed_kernel=True)
    assert fixed.label == "unstable" and "fixed" in fixed.reason
    assert predict_regime(0.0, 0.5, 0.0, 0.0, dt_factor=0.95, fixed_kernel=True).label == "lazy"


def test_the_prediction_of_a_condensed_run_says_what_its_rate_assumes():
    """At H1-like exponents (gamma 1.25, gamma' 0) -r = +0.5, while the relative change measured at t = 5
    grows like m^0.16 (docs/design.md §2.3): the reason says -r is a first-order rate."""
    regime = predict_regime(1.25, 0.0, -1.5, -1.5)
    assert (regime.label, regime.r, regime.luo_phase) == ("condensed", -0.5, "condensed")
    assert "first-order rate" in regime.reason and "measured exponent can be smaller" in regime.reason


def test_mup_resolves_to_yang_and_hus_table_for_sgd():
    # no multiplier; output weights of variance a_std^2 / m^2 at lr / m; input weights of variance w_std^2 / d at lr m
    r = resolve(MuPPreset(lr=0.5), MODEL, D)
    assert (r.s, r.loss_scale) == (1.0, 1.0)
    assert r.a_std == pytest.approx(2.0 / M) and r.w_std == pytest.approx(3.0 / math.sqrt(D))
    assert r.eta_a == pytest.approx(0.5 / M) and r.eta_w == pytest.approx(0.5 * M)
    assert r.exponents == {"A": 0.0, "B": 1.0, "C_a": 1.0, "C_w": -1.0}
    assert (r.regime.label, r.regime.kappa, r.regime.r, r.regime.luo_phase) == ("rich", 0, 0, "critical")
    # mean_field in other coordinates: a_mf = m a_mup, s_mf = s_mup / m, eta_a,mf = m^2 eta_a,mup
    rich = resolve(MeanFieldPreset(lr=0.5), MODEL, D)
    assert rich.a_std == pytest.approx(M * r.a_std) and rich.s == pytest.approx(r.s / M)
    assert rich.eta_a == pytest.approx(M**2 * r.eta_a) and rich.eta_w == pytest.approx(r.eta_w)


@pytest.mark.parametrize("A, B, C_a, C_w", [(0, 1, 1, -1), (1, 0, -1, -1), (0.5, 0, 0, 0), (0, 0.5, 1, 1),
                                            (1.5, -0.5, -1, -2), (0.25, 0.75, 0.3, -0.6)])
@pytest.mark.parametrize("theta", [-1.0, 0.5, 1.0])
@pytest.mark.parametrize("fixed_a", [False, True])
def test_the_prediction_is_invariant_under_yang_and_hus_symmetry(A, B, C_a, C_w, theta, fixed_a):
    # a -> m^theta a, s -> m^-theta s, eta_a -> m^(2 theta) eta_a changes no trajectory (docs/design.md §2.2)
    before = predict_regime(A, B, C_a, C_w, fixed_a=fixed_a)
    after = predict_regime(A + theta, B - theta, C_a - 2 * theta, C_w, fixed_a=fixed_a)
    assert (after.label, after.kappa, after.r, after.gamma) == pytest.approx(
        (before.label, before.kappa, before.r, before.gamma))
    if not fixed_a:  # Luo et al.'s diagram trains both layers
        assert (after.gamma_prime, after.luo_phase) == (pytest.approx(before.gamma_prime), before.luo_phase)


@pytest.mark.parametrize("preset, kappa, r, label", [
    (MeanFieldPreset(lr_a=0), 0, 0, "rich"), (MuPPreset(lr_a=0), 0, 0, "rich"), (NTKPreset(lr_a=0), 0, 0.5, "lazy"),
    # the output layer's term m s^2 eta_a ~ m is what makes standard unstable: without it the kernel is O(1)
    (StandardPreset(lr_a=0), 0, 0.5, "lazy"),
])
def test_a_fixed_output_layer_drops_the_a_terms_of_the_prediction(preset, kappa, r, label):
    resolved = resolve(preset, MODEL, D)
    assert resolved.eta_a == 0.0 and resolved.eta_w > 0
    assert (resolved.regime.kappa, resolved.regime.r, resolved.regime.label) == (kappa, pytest.approx(r), label)
    assert "output weights are fixed" in resolved.regime.reason
