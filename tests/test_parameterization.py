"""Presets resolve to the numbers of docs/design.md §2, and the exponents predict the right regime."""

import math

import pytest

from meanfield.parameterization import predict_regime, resolve
from meanfield.scenario import CustomPreset, LazyPreset, MeanFieldPreset, ModelSpec, NTKPreset, StandardPreset

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
