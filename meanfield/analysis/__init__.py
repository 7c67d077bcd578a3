"""Scaling analysis of a sweep (``meanfield analyze``): how a final measure depends on a grid
key (the width, by default), what that says about the regime, and where it goes as m -> inf.

The package, by concern:

    stats      the statistics on plain arrays: ``power_law`` (log-log least squares with a
               Student-t interval), ``extrapolate`` (a + b m^-p, with an F-test against a
               constant), ``crossing`` (where a measure falls below a level), ``classify``
               (Luo et al.'s phase of an exponent)
    families   a results table (``meanfield.sweeps.table``) grouped into families (one group of the
               other grid keys and one run): ``scaling``, ``regimes``, ``thresholds``,
               ``threshold_scaling``, ``axes``, ``measures``
    dataset    the table as an ``xarray.Dataset`` on its grid: ``to_dataset``
    reporting  the text and the csv files: ``analyze``, ``report``, ``format_report``,
               ``format_threshold``, ``write_analysis``, ``write_regimes``
    phase      Luo, Xu, Ma & Zhang's (gamma, gamma') plane: ``phase_points``, ``luo_phase``
    convergence  the points that ran to t_end above stop_loss: ``unconverged``, ``format_unconverged``
    max_margin the max-margin references of a classification: ``f1_max_margin`` (a linear
               program over neuron directions), ``f2_max_margin`` (a hard-margin SVM on a Gram
               matrix), ``relu_feature_kernel``, ``chizat_bach_f1_margin``, ``sphere_directions``
    catapult   Lewkowycz et al.'s phases along the step factor c: ``catapult_phase`` (the rule
               for one run), ``phase_rows``, ``phase_edges``, ``format_phases``, ``phases_figure``
    drawing    the figures (matplotlib): ``figure``, ``phase_figure``
    random_features  Mei & Montanari's asymptotic test error of random-features regression:
               ``rf_test_error``, ``activation_constants``, ``RELU_CONSTANTS``
    spectrum   a dot-product kernel's spectrum on the sphere S^(d-1) and a target's energy per
               degree: ``kernel_spectrum`` (``Spectrum``), ``degeneracy``, ``legendre``,
               ``funk_hecke``, ``teacher_coefficients``, ``sample_coefficients``
    learning_curve  kernel regression's test error against n from that spectrum (Bordelon,
               Canatar & Pehlevan 2020): ``learning_curve`` (``LearningCurve``), ``solve_kappa``

Everything public is importable from ``meanfield.analysis`` itself.
"""

from .catapult import (
    PHASES,
    PHASES_CSV,
    PhaseEdges,
    PhaseRow,
    catapult_phase,
    factor_key,
    format_phases,
    phase_edges,
    phase_rows,
    phases_figure,
    write_phases,
)
from .convergence import format_unconverged, unconverged
from .dataset import to_dataset
from .drawing import PHASE_COLORS, figure, phase_figure
from .families import (
    REGIME_MEASURES,
    REPLICATE,
    ScalingRow,
    ThresholdRow,
    axes,
    measures,
    regimes,
    rows_within,
    scaling,
    threshold_scaling,
    thresholds,
)
from .learning_curve import LearningCurve, learning_curve, solve_kappa
from .max_margin import (
    F1Margin,
    F2Margin,
    chizat_bach_f1_margin,
    f1_max_margin,
    f2_max_margin,
    relu_feature_kernel,
    sphere_directions,
)
from .phase import PhasePoint, luo_phase, phase_points
from .random_features import RELU_CONSTANTS, ActivationConstants, activation_constants, rf_test_error
from .reporting import (
    ANALYSIS_CSV,
    REGIMES_CSV,
    Analysis,
    analyze,
    format_report,
    format_threshold,
    report,
    write_analysis,
    write_regimes,
)
from .spectrum import (
    Spectrum,
    degeneracy,
    funk_hecke,
    kernel_spectrum,
    legendre,
    sample_coefficients,
    teacher_coefficients,
)
from .stats import P_BOUNDS, RICH_LAZY, Extrapolation, PowerLawFit, classify, crossing, extrapolate, power_law

__all__ = [
    "ANALYSIS_CSV", "PHASES", "PHASES_CSV", "PHASE_COLORS", "PhaseEdges", "PhaseRow", "catapult_phase",
    "factor_key", "format_phases", "phase_edges", "phase_rows", "phases_figure", "write_phases", "P_BOUNDS",
    "REGIMES_CSV", "REGIME_MEASURES", "REPLICATE", "RICH_LAZY",
    "Analysis", "Extrapolation", "PhasePoint", "PowerLawFit", "ScalingRow", "ThresholdRow",
    "analyze", "axes", "classify", "crossing", "extrapolate", "figure", "format_report", "format_threshold",
    "luo_phase", "measures", "phase_figure", "phase_points", "power_law", "regimes", "report", "rows_within",
    "scaling", "threshold_scaling", "thresholds", "to_dataset", "write_analysis", "write_regimes",
    "format_unconverged", "unconverged",
    "F1Margin", "F2Margin", "chizat_bach_f1_margin", "f1_max_margin", "f2_max_margin", "relu_feature_kernel",
    "sphere_directions",
    "LearningCurve", "Spectrum", "degeneracy", "funk_hecke", "kernel_spectrum", "learning_curve", "legendre",
    "sample_coefficients", "solve_kappa", "teacher_coefficients",
]
__all__ += ["RELU_CONSTANTS", "ActivationConstants", "activation_constants", "rf_test_error"]
