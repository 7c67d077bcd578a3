"""The seed's theorem: relative weight change ~ m^-1/2 under ntk and ~ m^0 under mean_field.

Relu teacher-student, d = 5, n = 200, Euler dt = 0.05 up to t = 5, widths 64..4096.
FACTS.md: one draw per width gives a slope with std ~0.06, so log displacement is averaged
over 4 seeds per width before the fit (then a +-0.1 band fails ~0.1% of the time).
"""

import numpy as np
import pytest

from meanfield.config.sections import DataSpec, MeanFieldPreset, ModelSpec, NTKPreset
from meanfield.model.data import make_dataset
from meanfield.model.diagnostics import relative_change
from meanfield.model.parameterization import resolve
from solvers.activations import activation_code
from solvers.fields import ParticleField, ParticleLayout
from solvers.integrate import Euler, LoopState, integrate
from solvers.losses import loss_code

WIDTHS = (64, 256, 1024, 4096)
SEEDS = range(4)
D, N, T = 5, 200, 5.0


def displacement(preset, width, seed):
    data = make_dataset(DataSpec(task="teacher_student", dim=D, n_train=N, n_test=1),
                        np.random.default_rng(seed))
    r = resolve(preset, ModelSpec(width=width), D)
    rng = np.random.default_rng(1000 + seed)
    a0, W0 = r.a_std * rng.standard_normal(width), r.w_std * rng.standard_normal((width, D))
    layout = ParticleLayout(width, D, False)
    field = ParticleField(layout, data.X_train, data.y_train, s=r.s, eta_a=r.eta_a, eta_w=r.eta_w,
                          activation=activation_code("relu"), loss=loss_code("squared"))
    out = integrate(field, LoopState(0.0, 0, layout.pack(a0, W0)), Euler(0.05), [T])
    assert out.status == "complete"
    return relative_change(layout.split(out.state.y)[1], W0)


@pytest.mark.slow
@pytest.mark.parametrize("preset, slope", [(NTKPreset(), -0.5), (MeanFieldPreset(), 0.0)])
def test_relative_weight_change_scales_with_width(preset, slope):
    logs = [np.mean([np.log(displacement(preset, m, s)) for s in SEEDS]) for m in WIDTHS]
    fitted = np.polyfit(np.log(WIDTHS), logs, 1)[0]
    print(f"{preset.preset}: fitted slope {fitted:+.3f} (theory {slope:+.1f})")
    assert abs(fitted - slope) < 0.1
