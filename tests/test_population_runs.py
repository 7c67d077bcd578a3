"""Population mode end to end: Chizat & Bach's teacher recovery, and the CLT over seeds."""

import numpy as np
import pytest
from recorded import measures

import meanfield as mf
from solvers.fields import ParticleLayout
from solvers.integrate import Euler, LoopState, integrate
from solvers.population import PopulationField, population_risk


@pytest.mark.slow
def test_chizat_bach_rich_finds_the_teacher_lazy_stays(tmp_path):
    scenario = mf.load_scenario("chizat_bach", {"record.every": 50})
    out = tmp_path / "cb.h5"
    mf.simulate(scenario, out).close()
    rich, lazy, tangent = (measures(out, name) for name in ("rich", "lazy", "tangent"))
    risk = rich["risk"].value
    print(f"rich: risk ratio {risk[-1] / risk[0]:.2e}, teacher alignment {rich['teacher_alignment'].value[-1]:.3f}; "
          f"lazy: displacement {lazy['displacement_w'].value[-1]:.3g}, risk {lazy['risk'].value[-1]:.3g}")
    assert risk[-1] < 1e-3 * risk[0]
    # the output mass |a_i| |w_i| sits within about 25 degrees of the teacher directions on average
    assert rich["teacher_alignment"].value[-1] > 0.9
    assert lazy["displacement_w"].value[-1] < 0.05
    assert lazy["teacher_alignment"].value[-1] < 0.6
    # the lazy particles follow their exactly solved linearization
    assert np.allclose(lazy["risk"].value, tangent["risk"].value, rtol=0.05)


@pytest.mark.slow
def test_risk_fluctuations_over_seeds_shrink_like_one_over_sqrt_m():
    # Rotskoff & Vanden-Eijnden: at fixed t the particle system fluctuates around its
    # mean-field limit by O(m^-1/2), so the std over seeds of the risk scales like m^-1/2
    d, t_end, seeds = 4, 1.0, range(32)
    rng = np.random.default_rng(99)
    teacher_W = rng.standard_normal((2, d))
    teacher_W /= np.linalg.norm(teacher_W, axis=1, keepdims=True)
    teacher_a = np.full(2, 0.5)
    widths = np.array([64, 256, 1024])
    spreads = []
    for m in widths:
        layout = ParticleLayout(m, d, False)
        field = PopulationField(layout, teacher_a, teacher_W, s=1 / m, eta_a=m, eta_w=m,
                                act="relu", teacher_act="relu")
        risks = []
        for seed in seeds:
            init = np.random.default_rng(seed)
            y0 = layout.pack(init.standard_normal(m), init.standard_normal((m, d)) / np.sqrt(d))
            a, W, _ = layout.split(integrate(field, LoopState(0.0, 0, y0), Euler(0.1), [t_end]).state.y)
            risks.append(population_risk(a, W, teacher_a, teacher_W, s=1 / m, act="relu", teacher_act="relu"))
        spreads.append(np.std(risks, ddof=1))
    slope = np.polyfit(np.log(widths), np.log(spreads), 1)[0]
    print(f"std of the risk over seeds: {spreads}, fitted slope {slope:.3f}")
    assert abs(slope + 0.5) < 0.15


def test_the_plan_of_a_population_run_says_what_data_apply():
    """With infinite data there is no training or test set: --dry-run names the population risk
    and the probe points the kernel measures use, not data.n_train and data.n_test."""
    scenario = mf.load_scenario("chizat_bach", {"data.n_train": 77, "data.n_test": 99, "record.probe_size": 32})
    first, *rest = mf.plan(scenario).describe().splitlines()
    assert "infinite data" in first and "data.n_train and data.n_test do not apply" in first
    assert "77" not in first and "99" not in first
    assert "kernel measures on record.probe_size = 32 Gaussian probe points" in rest[0]
    only_tangent = scenario.replace({"runs.rich": None, "runs.lazy": None})  # no run tracks its kernel
    assert "probe" not in mf.plan(only_tangent).describe()
    sampled = mf.load_scenario("chizat_bach", {"data.population": False, "data.n_train": 77, "data.n_test": 99})
    assert mf.plan(sampled).describe().splitlines()[0].endswith("n_train 77, n_test 99")
