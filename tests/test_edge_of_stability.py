"""The edge of stability (meanfield.analysis.stability, docs/design.md §1.9): the crossing time and the
hover ratio read from constructed sharpness series against plain loops written here, the step
a run took, and a reduced edge_of_stability scenario in which the ntk run's sharpness stays put
while a rich run's rises up to 2/dt."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

import meanfield as mf
from meanfield.analysis.stability import edge_crossing, format_edges, run_step


def _reference(times, sharpness, dt, level):
    """t_edge and the median of q after it, by a plain loop and a sort."""
    ratios = [s * dt / 2 for s in sharpness]
    first = next((i for i, q in enumerate(ratios) if q >= level), None)
    if first is None:
        return None, None
    after = sorted(ratios[first:])
    k = len(after)
    median = after[k // 2] if k % 2 else (after[k // 2 - 1] + after[k // 2]) / 2
    return times[first], median


@pytest.mark.parametrize("dt, level", [(0.2, 0.9), (0.2, 1.0), (0.4, 0.9), (0.05, 0.9)])
def test_crossing_and_hover_of_a_sharpening_series(dt, level):
    # progressive sharpening up to 2/dt, then an oscillation about 1.03 of the edge
    rng = np.random.default_rng(3)
    times = np.arange(40) * 1.2
    edge = 2 / 0.2
    rising = np.minimum(3.0 + 1.5 * times, 1.03 * edge)
    sharpness = rising + (times > 10) * rng.normal(0.0, 0.4, times.size)
    got = edge_crossing(times, sharpness, dt, level)
    t_edge, hover = _reference(list(times), list(sharpness), dt, level)
    assert got.t_edge == t_edge and (hover is None) == (got.hover is None)
    if hover is not None:
        assert got.hover == pytest.approx(hover, rel=1e-15)
    assert got.initial == pytest.approx(sharpness[0] * dt / 2, rel=1e-15)
    assert got.peak == pytest.approx(max(sharpness) * dt / 2, rel=1e-15)
    if dt == 0.05:  # 2/dt = 40 is never reached
        assert got.t_edge is None and got.hover is None


def test_the_crossing_is_the_first_snapshot_at_the_level_and_gaps_are_dropped():
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    sharpness = np.array([1.0, 8.9, 9.0, np.nan, 2.0, 11.0])   # q = S * 0.2 / 2 = S / 10
    got = edge_crossing(times, sharpness, 0.2, 0.9)
    assert got.t_edge == 2.0 and got.hover == pytest.approx(np.median([0.9, 0.2, 1.1]), rel=1e-15)
    assert got.peak == pytest.approx(1.1) and got.initial == pytest.approx(0.1)


def test_bad_series_are_refused():
    with pytest.raises(ValueError, match="one series"):
        edge_crossing([0.0, 1.0], [1.0], 0.1)
    with pytest.raises(ValueError, match="positive"):
        edge_crossing([0.0], [1.0], 0.0)
    with pytest.raises(ValueError, match="no finite value"):
        edge_crossing([0.0], [np.nan], 0.1)


@pytest.mark.parametrize("dt, interval", [(0.3, 1.2), (0.25, 1.2), (2.0, 1.2), (0.24, 1.2)])
def test_the_step_of_a_run_is_the_one_the_loop_took(dt, interval):
    run = SimpleNamespace(attrs={"integrator": {"method": "euler", "dt": dt}}, times=np.arange(5) * interval)
    # the stepping loop (docs/design.md §3.4): n = ceil(interval / dt) equal steps per interval
    n = 1
    while interval / n > dt * (1 + 1e-12):
        n += 1
    assert run_step(run) == pytest.approx(interval / n, rel=1e-15)
    assert run_step(SimpleNamespace(attrs={"integrator": {"method": "rk45", "dt": dt}}, times=run.times)) is None
    assert run_step(SimpleNamespace(attrs={}, times=run.times)) is None


@pytest.fixture(scope="module")
def reduced():
    """edge_of_stability at a smaller width, for 12 time units: one rich run and the ntk run."""
    scenario = mf.load_scenario("edge_of_stability", {
        "model.width": 1024, "train.t_end": 12.0, "runs.rich_dt030": None, "runs.rich_dt024": None})
    return mf.simulate(scenario)


@pytest.mark.slow
def test_reduced_scenario_sharpens_the_rich_run_and_keeps_the_lazy_one(reduced, tmp_path):
    rich, lazy = reduced["rich_dt020"], reduced["lazy"]
    assert rich.status == lazy.status == "complete"
    s_rich = rich.series("hessian_eigenvalue_max").value
    s_lazy = lazy.series("hessian_eigenvalue_max").value
    assert np.all(np.isfinite(s_rich)) and np.all(np.isfinite(s_lazy))
    assert np.max(np.abs(s_lazy / s_lazy[0] - 1)) < 0.03            # lazy: stays at its initial value
    assert s_rich.max() > 2.5 * s_rich[0]                             # rich: progressive sharpening
    edges = mf.edge_of_stability(reduced)
    assert set(edges) == {"rich_dt020", "lazy"}
    dt = rich.attrs["integrator"]["dt"]
    assert edges["rich_dt020"].dt == dt and edges["lazy"].dt == lazy.attrs["integrator"]["dt"]
    t_edge, hover = _reference(list(rich.times), list(s_rich), dt, 0.9)
    assert t_edge is not None and edges["rich_dt020"].t_edge == t_edge
    assert edges["rich_dt020"].hover == pytest.approx(hover, rel=1e-12)
    assert edges["lazy"].t_edge is None
    text = format_edges(edges)
    assert "rich_dt020" in text and "never" in text
    path = mf.edge_figure(reduced, tmp_path / "eos.png")
    assert path.stat().st_size > 0
    reduced.save(tmp_path / "eos.h5")
    assert mf.edge_of_stability(tmp_path / "eos.h5") == edges


@pytest.mark.slow
def test_the_script_prints_the_table_and_draws(reduced, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "edge_of_stability.py"
    spec = importlib.util.spec_from_file_location("edge_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    reduced.save(tmp_path / "eos.h5")
    assert script.main([str(tmp_path / "eos.h5"), "--figure", str(tmp_path / "eos.png")]) == 0
    out = capsys.readouterr().out
    edge = mf.edge_of_stability(reduced)["rich_dt020"]
    assert f"{edge.hover:.3g}" in out and f"{edge.t_edge:g}" in out and (tmp_path / "eos.png").stat().st_size > 0
    assert script.main([str(tmp_path / "eos.h5"), "--figure", str(tmp_path / "eos.bmpx")]) == 2


def test_the_figure_refuses_a_trajectory_without_the_sharpness(tmp_path):
    scenario = mf.load_scenario("edge_of_stability", {
        "model.width": 16, "train.t_end": 1.2, "record.measures": [], "runs.rich_dt030": None,
        "runs.rich_dt024": None, "runs.lazy": None})
    trajectory = mf.simulate(scenario)
    assert mf.edge_of_stability(trajectory) == {}
    with pytest.raises(mf.UsageError, match="no fixed-step run recorded hessian_eigenvalue_max"):
        mf.edge_figure(trajectory, tmp_path / "x.png")
    assert not math.isnan(trajectory["rich_dt020"].t)
