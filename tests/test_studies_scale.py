"""The bundled scale studies (scenarios/sweeps/chizat_oyallon_bach.yaml, single_index_samples.yaml):
they parse and validate, their grids are what their headers say, and reduced grids reproduce
the headline of each (a few seconds):

- Chizat, Oyallon & Bach: from the same particles, the small-alpha run generalises several
  times better than the large-alpha one, whose test loss is the ntk run's, and the relative
  weight change falls like 1/alpha in the lazy regime;
- single index: at d = 16 and n = 256 the mean-field network beats NTK regression, and both
  learn the target at n = 1024.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import yaml

from meanfield.bundled import SWEEP_DIR
from meanfield.parameterization import resolve
from meanfield.sweeps import load_sweep, parse_sweep, run_sweep
from meanfield.table import read_table

ALPHAS = [0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000]
DIMS = [16, 32, 64]
N_TRAIN = [8192, 4096, 2048, 1024, 512, 256, 128]


def test_chizat_oyallon_bach_grid_is_alpha_by_seed_with_an_ntk_reference():
    sweep = load_sweep("chizat_oyallon_bach")
    assert sweep.grid_keys == ["runs.lazy.parameterization.alpha", "seed"]
    assert len(sweep.points) == len(ALPHAS) * 3
    assert sorted({p.coords["runs.lazy.parameterization.alpha"] for p in sweep.points}) == ALPHAS
    for point in sweep.points:
        scenario = point.scenario
        assert sorted(scenario.runs) == ["lazy", "ntk"]
        assert scenario.data.inputs == "sphere" and scenario.model.init.symmetric  # f_0 = 0, as theirs
        lazy = scenario.runs["lazy"].parameterization
        assert lazy.preset == "lazy" and lazy.alpha == point.coords["runs.lazy.parameterization.alpha"]
        assert scenario.runs["ntk"].kernel == "empirical"  # the kernel of these very particles
        resolved = resolve(lazy, scenario.model, scenario.data.dim)
        assert math.isclose(resolved.s, lazy.alpha / scenario.model.width)


def test_single_index_grid_is_dim_by_n_train_with_both_learners():
    sweep = load_sweep("single_index_samples")
    assert sweep.grid_keys == ["data.dim", "data.n_train"]
    assert len(sweep.points) == len(DIMS) * len(N_TRAIN)
    assert [p.coords["data.n_train"] for p in sweep.points[:len(N_TRAIN)]] == N_TRAIN  # largest first
    for point in sweep.points:
        scenario = point.scenario
        assert scenario.data.task == "single_index" and scenario.data.degree == 2
        assert scenario.runs["rich"].solver == "particles"
        assert scenario.runs["rich"].parameterization.preset == "mean_field"
        assert scenario.runs["ntk"].solver == "ntk" and scenario.runs["ntk"].kernel == "analytic"


def _reduced(name: str, grid: dict, **data):
    """The bundled sweep with a smaller grid (and data keys of its inline base changed)."""
    raw = yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())
    raw["base"]["data"].update(data)
    raw["grid"] = grid
    return parse_sweep(yaml.safe_dump(raw, sort_keys=False), root=SWEEP_DIR, default_name=name)


def _by(table, key):
    return {v: i for i, v in enumerate(table[key].tolist())}


def test_reduced_chizat_oyallon_bach_rich_beats_lazy_and_displacement_falls_like_one_over_alpha(tmp_path):
    # at half their size (d = 50, n = 500: 2 s a point)
    sweep = _reduced("chizat_oyallon_bach", {"runs.lazy.parameterization.alpha": [0.1, 100, 1000], "seed": [0]},
                     dim=50, n_train=500)
    result = run_sweep(sweep, tmp_path / "cob", executor=ThreadPoolExecutor(1), threads=1)
    assert result.failed == 0
    table = read_table(result.directory)
    row = _by(table, "runs.lazy.parameterization.alpha")
    loss, disp = table["lazy.loss_test"], table["lazy.displacement_w"]
    ntk_loss = table["ntk.loss_test"][row[1000]]
    # measured (seed 0): 0.0051 at alpha = 0.1, 0.0288 at alpha = 1000, ntk 0.0287
    assert loss[row[0.1]] < 0.3 * loss[row[1000]]
    assert abs(loss[row[1000]] / ntk_loss - 1) < 0.05
    slope = math.log(disp[row[1000]] / disp[row[100]]) / math.log(10)
    assert -1.1 < slope < -0.9, slope  # measured -1.00
    assert disp[row[0.1]] > 1.0  # the rich run moves its neurons by O(1) (3.4)


def test_reduced_single_index_rich_needs_fewer_samples_than_ntk(tmp_path):
    sweep = _reduced("single_index_samples", {"data.dim": [16], "data.n_train": [1024, 256]})
    result = run_sweep(sweep, tmp_path / "si", executor=ThreadPoolExecutor(1), threads=1)
    assert result.failed == 0
    table = read_table(result.directory)
    row = _by(table, "data.n_train")
    rich, ntk = table["rich.loss_test"], table["ntk.loss_test"]
    # measured: n = 256: rich 0.038, ntk 0.143; n = 1024: rich 0.0041, ntk 0.014 (trivial: 0.5)
    assert rich[row[256]] < 0.05 < ntk[row[256]]
    assert rich[row[256]] < 0.5 * ntk[row[256]]
    assert rich[row[1024]] < 0.02 and ntk[row[1024]] < 0.03
    assert table["rich.teacher_alignment"][row[1024]] > 0.6  # 0.81: the neurons found u

