"""Scaling analysis of a sweep table: the fits against independent references and their
intervals against their nominal coverage, regimes, the xarray view and the report."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import stats

from meanfield import analysis
from meanfield.analysis import classify, extrapolate, power_law, scaling
from meanfield.errors import UsageError
from meanfield.sweeps.table import read_table, write_table

WIDTHS = [64, 128, 256, 512, 1024]
SEEDS = [0, 1, 2]
LABELS = ["moderate", "strong"]
GRID = ["model.width", "seed", "runs.std.parameterization"]
NOISE = 0.05  # std of log(displacement) between seeds


# ----------------------------------------------------------------------------- power law
def test_power_law_exact_data_gives_the_exact_law():
    m = np.array(WIDTHS, float)
    fit = power_law(m, 3.0 * m ** -0.5)
    assert fit.exponent == pytest.approx(-0.5, abs=1e-12)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-12)
    assert fit.exponent_ci[1] - fit.exponent_ci[0] < 1e-10
    assert (fit.r2, fit.n) == (pytest.approx(1.0), 5)
    assert fit(1024.0) == pytest.approx(3.0 / 32)
    flat = power_law(m, np.full(5, 0.7))
    assert (flat.exponent, flat.r2) == (0.0, 1.0)


def test_power_law_matches_polyfit_and_linregress():
    rng = np.random.default_rng(1)
    m = np.repeat(WIDTHS, 3).astype(float)
    y = 2.0 * m ** -0.5 * np.exp(0.1 * rng.standard_normal(m.size))
    fit = power_law(m, y, confidence=0.9)
    reference = stats.linregress(np.log(m), np.log(y))
    assert fit.exponent == pytest.approx(np.polyfit(np.log(m), np.log(y), 1)[0], rel=1e-12)
    assert fit.stderr == pytest.approx(reference.stderr, rel=1e-10)
    assert fit.r2 == pytest.approx(reference.rvalue ** 2, rel=1e-10)
    assert fit.prefactor == pytest.approx(np.exp(reference.intercept), rel=1e-10)
    half = stats.t.ppf(0.95, m.size - 2) * reference.stderr
    assert fit.exponent_ci == pytest.approx((reference.slope - half, reference.slope + half), rel=1e-10)


def test_power_law_interval_has_its_nominal_coverage():
    rng = np.random.default_rng(2024)
    m = np.repeat(WIDTHS, 2).astype(float)
    true = -0.5
    covered = []
    for _ in range(200):
        y = 1.5 * m ** true * np.exp(0.2 * rng.standard_normal(m.size))
        lo, hi = power_law(m, y).exponent_ci
        covered.append(lo <= true <= hi)
    assert 0.90 <= np.mean(covered) <= 0.99


def test_power_law_recovers_a_noisy_exponent():
    rng = np.random.default_rng(3)
    m = np.repeat(np.geomspace(32, 4096, 8), 3)
    fit = power_law(m, 0.8 * m ** 0.3 * np.exp(0.05 * rng.standard_normal(m.size)))
    lo, hi = fit.exponent_ci
    assert lo <= 0.3 <= hi and hi - lo < 0.05


def test_power_law_drops_nan_and_refuses_what_it_cannot_fit():
    fit = power_law([1, 2, 4, 8], [1.0, 0.5, np.nan, 0.125])
    assert fit.n == 3 and fit.exponent == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="positive y"):
        power_law([1, 2, 4], [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="positive x"):
        power_law([-1, 2, 4], [1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="at least 3 points"):
        power_law([1, 2, 4], [1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="2 distinct"):
        power_law([4, 4, 4], [1.0, 1.1, 0.9])


# ----------------------------------------------------------------------------- extrapolation
def test_extrapolate_recovers_limit_amplitude_and_order():
    rng = np.random.default_rng(4)
    m = np.geomspace(16, 4096, 9)
    y = 0.2 + 3.0 * m ** -0.7 + 1e-4 * rng.standard_normal(m.size)
    ext = extrapolate(m, y)
    assert ext.limit_ci[0] <= 0.2 <= ext.limit_ci[1]
    assert ext.limit == pytest.approx(0.2, abs=3e-3)
    assert ext.p == pytest.approx(0.7, abs=0.03)
    assert ext.p_ci[0] <= 0.7 <= ext.p_ci[1]
    assert ext.b == pytest.approx(3.0, rel=0.1)
    assert ext(1e12) == pytest.approx(ext.limit, abs=1e-6)


def test_extrapolate_without_a_resolved_correction_gives_the_mean():
    rng = np.random.default_rng(6)
    m = np.repeat(WIDTHS, 3).astype(float)
    y = 0.3 + 0.01 * rng.standard_normal(m.size)
    ext = extrapolate(m, y)
    assert ext.flat and (ext.b, np.isnan(ext.p)) == (0.0, True)
    assert ext.limit == pytest.approx(y.mean())
    half = stats.t.ppf(0.975, m.size - 1) * stats.sem(y)
    assert ext.limit_ci == pytest.approx((y.mean() - half, y.mean() + half))
    assert extrapolate(m, np.full(m.size, 0.1)).limit_ci == pytest.approx((0.1, 0.1))


def test_extrapolate_exact_data_and_refusals():
    m = np.array([8.0, 32.0, 128.0, 512.0])
    ext = extrapolate(m, 1.0 - 2.0 / np.sqrt(m))
    assert (ext.limit, ext.b, ext.p) == (pytest.approx(1.0, abs=1e-8), pytest.approx(-2.0, rel=1e-6),
                                          pytest.approx(0.5, rel=1e-6))
    with pytest.raises(ValueError, match="at least 4 points"):
        extrapolate(m[:3], m[:3] ** -1.0)
    with pytest.raises(ValueError, match="3 distinct"):
        extrapolate([8, 8, 16, 16], [1.0, 1.1, 0.9, 0.8])


# ----------------------------------------------------------------------------- regimes
def test_classify_by_exponent_and_interval():
    assert [classify(p) for p in (-0.5, 0.0, 0.4)] == ["linear", "critical", "condensed"]
    # the exponent names lazy and condensed; a flat one (critical) keeps the size of its movement,
    # rich or lazy by that size (test_a_critical_family_is_rich_or_lazy_by_the_size_of_its_movement)
    assert [analysis.RICH_LAZY.get(classify(p)) for p in (-0.5, 0.0, 0.4)] == ["lazy", None, "condensed"]
    m = np.array(WIDTHS, float)
    wide = power_law(m[:3], np.array([1.0, 2.0, 0.9]))  # two widths of noise: no verdict
    assert wide.exponent_ci[0] < -0.1 and wide.exponent_ci[1] > 0.1
    assert classify(wide) == "undetermined"
    assert classify(np.nan) == "undetermined"


# ----------------------------------------------------------------------------- a sweep table
def sweep_rows(rng) -> list[dict]:
    rows = []
    for width in WIDTHS:
        for seed in SEEDS:
            for j, label in enumerate(LABELS):
                scatter = np.exp(NOISE * rng.standard_normal(2))
                rows.append({"point": f"p{len(rows):04d}", "model.width": width, "seed": seed,
                             "runs.std.parameterization": label, "status": "complete", "reason": "",
                             "seconds": 1.0 + len(rows), "file": f"points/p{len(rows):04d}.h5",
                             "ntk.displacement_w": (1 + j) * width ** -0.5 * scatter[0],
                             "ntk.loss_test": 0.1, "ntk.predicted_regime": "lazy",
                             "mean_field.displacement_w": 0.3 * (1 + j) * scatter[1],
                             "mean_field.loss_test": 0.05, "mean_field.predicted_regime": "rich"})
    # a failed point: NaN for one run and a wild value for the other, both to be ignored
    rows.append({"point": "p9999", "model.width": 2048, "seed": 0, "runs.std.parameterization": "moderate",
                 "status": "failed", "reason": "diverged", "seconds": 0.5, "file": "points/p9999.h5",
                 "ntk.displacement_w": None, "ntk.predicted_regime": "lazy",
                 "mean_field.displacement_w": 1e6, "mean_field.predicted_regime": "rich"})
    return rows


@pytest.fixture
def sweep(tmp_path):
    table = write_table(tmp_path, sweep_rows(np.random.default_rng(5)), GRID, name="widths")
    return tmp_path, table


def test_scaling_finds_groups_exponents_and_regimes(sweep):
    directory, _ = sweep
    rows = scaling(directory)
    assert [(row.group, row.run) for row in rows] == [
        ({"runs.std.parameterization": label}, run) for label in LABELS for run in ("ntk", "mean_field")]
    truth = {"ntk": (-0.5, "linear", "lazy"), "mean_field": (0.0, "critical", "rich")}
    for row in rows:
        exponent, regime, predicted = truth[row.run]
        assert row.n == len(WIDTHS) * len(SEEDS)  # the failed point is left out
        assert row.fit.exponent_ci[0] <= exponent <= row.fit.exponent_ci[1]
        assert (row.regime, row.words, row.predicted, row.note) == (regime, predicted, predicted, "")
    ntk, mean_field = rows[0].extrapolation, rows[1].extrapolation
    assert not ntk.flat and ntk.limit_ci[0] < 0.0 < ntk.limit_ci[1]  # the weights freeze: limit 0
    assert mean_field.flat and mean_field.limit_ci[0] < 0.3 < mean_field.limit_ci[1]
    assert [row.run for row in scaling(directory, runs="ntk")] == ["ntk", "ntk"]


def test_regimes_per_point(sweep):
    _, table = sweep
    columns = analysis.regimes(table)
    assert set(columns) == {"ntk.measured_regime", "mean_field.measured_regime"}
    assert list(columns["ntk.measured_regime"][:-1]) == ["linear"] * (len(table) - 1)
    assert list(columns["mean_field.measured_regime"][:-1]) == ["critical"] * (len(table) - 1)
    assert columns["ntk.measured_regime"][-1] == columns["mean_field.measured_regime"][-1] == ""


def test_a_measure_without_a_regime_and_a_family_without_a_fit(sweep):
    _, table = sweep
    rows = scaling(table, measure="loss_test", runs=["mean_field"])
    assert [row.regime for row in rows] == ["", ""]
    assert rows[0].fit.exponent == pytest.approx(0.0, abs=1e-12)
    (sweep[0] / "one").mkdir()
    one_width = write_table(sweep[0] / "one", [r for r in sweep_rows(np.random.default_rng(0))
                                                if r["model.width"] == 64], GRID)
    row = scaling(one_width, runs="ntk")[0]
    assert np.isnan(row.fit.exponent) and row.regime == "undetermined" and "2 distinct" in row.note


def test_user_mistakes_name_what_exists(sweep):
    _, table = sweep
    with pytest.raises(UsageError, match="measures: displacement_w, loss_test"):
        scaling(table, measure="displacment_w")
    with pytest.raises(UsageError, match="grid keys: model.width, seed, runs.std.parameterization"):
        scaling(table, against="width")
    with pytest.raises(UsageError, match="holds labels"):
        scaling(table, against="runs.std.parameterization")
    with pytest.raises(UsageError, match="runs: ntk, mean_field"):
        scaling(table, runs="rich")


def test_to_dataset_is_the_grid(sweep):
    _, table = sweep
    ds = analysis.to_dataset(table)
    assert list(ds.dims) == GRID
    assert dict(ds.sizes) == {"model.width": 6, "seed": 3, "runs.std.parameterization": 2}
    assert list(ds["model.width"].values) == [*WIDTHS, 2048]
    assert list(ds["runs.std.parameterization"].values) == LABELS
    where = (table["model.width"] == 256) & (table["seed"] == 1) & (table["runs.std.parameterization"] == "strong")
    cell = ds.sel({"model.width": 256, "seed": 1, "runs.std.parameterization": "strong"})
    assert float(cell["ntk.displacement_w"]) == table["ntk.displacement_w"][where][0]
    assert float(cell["seconds"]) == table["seconds"][where][0]
    assert cell["status"].item() == "complete"
    missing = ds.sel({"model.width": 2048, "seed": 1, "runs.std.parameterization": "moderate"})
    assert np.isnan(float(missing["ntk.displacement_w"])) and missing["status"].item() == "missing"
    failed = ds.sel({"model.width": 2048, "seed": 0, "runs.std.parameterization": "moderate"})
    assert failed["status"].item() == "failed" and np.isnan(float(failed["ntk.displacement_w"]))


def test_to_dataset_takes_varying_seeds_as_an_axis(tmp_path):
    rows = [{"point": f"p{i}", "model.width": w, "seed": s, "status": "complete", "rich.displacement_w": w + s}
            for i, (w, s) in enumerate([(8, 0), (8, 1), (16, 0), (16, 1)])]
    ds = analysis.to_dataset(write_table(tmp_path, rows, ["model.width"]))
    assert list(ds.dims) == ["model.width", "seed"]
    assert ds["rich.displacement_w"].sel({"model.width": 16, "seed": 1}).item() == 17.0


def test_report_and_analysis_csv(sweep):
    directory, _ = sweep
    result = analysis.analyze(directory)
    text = str(result)
    rows = scaling(directory)
    assert [(row.run, row.group, row.fit.exponent) for row in result.rows] == [
        (row.run, row.group, row.fit.exponent) for row in rows]
    assert result.files[0] == directory / "analysis.csv"
    for row in rows:
        assert f"{row.fit.exponent:+.3f} [{row.fit.exponent_ci[0]:+.3f}, {row.fit.exponent_ci[1]:+.3f}]" in text
    assert "linear (lazy)" in text and "critical (rich)" in text
    assert text.startswith(analysis.report(directory))
    with open(directory / "analysis.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [(r["runs.std.parameterization"], r["run"], r["regime"]) for r in records] == [
        (row.group["runs.std.parameterization"], row.run, row.regime) for row in rows]
    assert float(records[0]["exponent"]) == rows[0].fit.exponent


def flat_rows(rng, lazy_moves=0.005) -> list[dict]:
    """A width sweep of three runs: lazy (alpha = 100: moves ~ 1/alpha = 0.005 at every width, its
    kernel barely), mean_field (0.3 at every width) and ntk (~ m^-1/2)."""
    rows = []
    for width in WIDTHS:
        for seed in SEEDS:
            scatter = np.exp(NOISE * rng.standard_normal(3))
            rows.append({"point": f"p{len(rows):04d}", "model.width": width, "seed": seed, "status": "complete",
                         "file": f"points/p{len(rows):04d}.h5",
                         "lazy.displacement_w": lazy_moves * scatter[0], "lazy.kernel_distance": 1e-5,
                         "lazy.predicted_regime": "lazy",
                         "mean_field.displacement_w": 0.3 * scatter[1], "mean_field.kernel_distance": 0.05,
                         "mean_field.predicted_regime": "rich",
                         "ntk.displacement_w": 8 * width ** -0.5 * scatter[2]})
    return rows


def test_a_critical_family_is_rich_or_lazy_by_the_size_of_its_movement(tmp_path):
    """A lazy run at alpha = 100 moves 0.005 at every width: its exponent is flat (critical), and
    inspect calls every point lazy, so analyze must too; mean_field, as flat at 0.3, is rich."""
    write_table(tmp_path, flat_rows(np.random.default_rng(1)), ["model.width", "seed"])
    rows = {row.run: row for row in scaling(tmp_path)}
    assert rows["lazy"].regime == rows["mean_field"].regime == "critical"
    assert (rows["lazy"].words, rows["lazy"].verdict, rows["lazy"].verdict_at) == ("lazy", "lazy", 1024)
    assert (rows["mean_field"].words, rows["mean_field"].verdict) == ("rich", "rich")
    # ntk's weights freeze (linear: lazy in the limit) though it still moves 0.25 at m = 1024
    assert (rows["ntk"].regime, rows["ntk"].words, rows["ntk"].verdict) == ("linear", "lazy", "rich")
    text = str(analysis.analyze(tmp_path))
    assert "critical (lazy)" in text and "critical (rich)" in text
    assert "linear (lazy; rich at model.width = 1024)" in text
    assert "a critical family is rich or lazy by the size of its movement" in text
    with open(tmp_path / "analysis.csv", newline="") as handle:
        words = {r["run"]: (r["regime"], r["regime_words"], r["verdict"]) for r in csv.DictReader(handle)}
    assert words["lazy"] == ("critical", "lazy", "lazy") and words["mean_field"] == ("critical", "rich", "rich")
    # the rule is the one of a single run (diagnostics.verdict): the same family moving 0.3 is rich
    (tmp_path / "moved").mkdir()
    write_table(tmp_path / "moved", flat_rows(np.random.default_rng(1), lazy_moves=0.3), ["model.width", "seed"])
    assert {row.run: row.words for row in scaling(tmp_path / "moved")}["lazy"] == "rich"


def test_a_measure_recorded_on_request_names_a_phase_like_the_others(tmp_path):
    """displacement_wb (Luo et al.'s own measure, recorded on request) is a relative displacement
    like displacement_w: analyze names its phase from the one table of measures."""
    from meanfield.model.measures import MEASURE_TABLE

    rows = flat_rows(np.random.default_rng(2))
    for row in rows:
        row.update({f"{run}.displacement_wb": row[f"{run}.displacement_w"] for run in ("lazy", "mean_field", "ntk")})
    write_table(tmp_path, rows, ["model.width", "seed"])
    by_w = [(row.run, row.regime, row.words) for row in scaling(tmp_path)]
    assert [(row.run, row.regime, row.words) for row in scaling(tmp_path, measure="displacement_wb")] == by_w
    text = str(analysis.analyze(tmp_path, measure="displacement_wb"))
    assert "critical (lazy)" in text and "regime (Luo et al. 2021)" in text and (tmp_path / "regimes.csv").exists()
    assert set(analysis.REGIME_MEASURES) == {m.name for m in MEASURE_TABLE if m.displacement} >= {"displacement_wb"}


def test_the_verdict_of_a_point_is_the_one_inspect_reads_from_its_file(tmp_path):
    """Where the sweep directory holds a point's file, its verdict is RecordedRun.verdict() of
    that file (solver and loss series included), not a second reading of the table."""
    from meanfield.analysis.families import as_table, point_verdict

    scenario = {"name": "tiny", "seed": 2,
                "data": {"task": "teacher_student", "dim": 3, "n_train": 24, "n_test": 12, "teacher": {"width": 2}},
                "model": {"width": 10, "activation": "tanh", "init": {"symmetric": True}},
                "runs": {"lazy": {"parameterization": {"preset": "lazy", "alpha": 100}}, "tangent": {"solver": "tangent"}},
                "train": {"t_end": 1.0, "integrator": {"method": "rk4", "dt": 0.1}}, "record": {"every": 0.5}}
    (tmp_path / "points").mkdir()
    import meanfield as mf

    with mf.simulate(scenario, tmp_path / "points/p0000.h5") as trajectory:
        inspect = {name: trajectory[name].verdict()[0] for name in ("lazy", "tangent")}
    assert inspect == {"lazy": "lazy", "tangent": "lazy"}
    # a table whose numbers say the runs moved far: the file decides where it is there
    row = {"point": "p0000", "model.width": 10, "status": "complete", "file": "points/p0000.h5",
           "lazy.displacement_w": 0.5, "tangent.displacement_w": 0.5}
    write_table(tmp_path, [row], ["model.width"])
    table = as_table(tmp_path)
    assert [point_verdict(table, run, 0) for run in ("lazy", "tangent")] == ["lazy", "lazy"]
    (tmp_path / "points/p0000.h5").unlink()  # the table alone: its numbers, by the same rule
    assert [point_verdict(table, run, 0) for run in ("lazy", "tangent")] == ["rich", "rich"]


def test_figure_by_suffix(sweep, tmp_path):
    _, table = sweep
    path = analysis.figure(table, "displacement_w", "model.width", tmp_path / "scaling.svg")
    assert path.stat().st_size > 0 and path.read_text().lstrip().startswith("<?xml")
    with pytest.raises(UsageError, match="use one of"):
        analysis.figure(table, "displacement_w", "model.width", tmp_path / "scaling.jpg")


# ------------------------------------------------------------------ thresholds and fit ranges
def test_crossing_interpolates_in_log_log_and_is_nan_outside_the_grid():
    x = np.array([100.0, 200, 400, 800])
    y = 3.0 * x ** -1.0  # exactly a power law: the interpolation is exact
    assert analysis.crossing(x, y, level=3.0 / 300) == pytest.approx(300.0, rel=1e-12)
    assert np.isnan(analysis.crossing(x, y, level=1.0))  # already below at the smallest x
    assert np.isnan(analysis.crossing(x, y, level=1e-6))  # never below
    # replicates are averaged in log space: geometric mean 0.01 at x = 200
    xr, yr = np.array([100.0, 200, 200]), np.array([0.1, 0.02, 0.005])
    expected = 100.0 * 2.0 ** (np.log(0.011 / 0.1) / np.log(0.01 / 0.1))
    assert analysis.crossing(xr, yr, level=0.011) == pytest.approx(expected, rel=1e-12)


def test_sample_complexity_exponent_is_recovered_from_threshold_crossings(tmp_path):
    # loss = (n / d^k)^-1 for k = 1 ("rich") and 2 ("ntk"): n* = d^k / level exactly
    rows, index = [], 0
    for d in (16, 32, 64):
        for n in (2 ** j for j in range(4, 18)):
            rows.append({"point": f"p{index:04d}", "data.dim": d, "data.n_train": n, "seed": 0,
                         "status": "complete", "rich.loss_test": d / n, "ntk.loss_test": d ** 2 / n})
            index += 1
    write_table(tmp_path, rows, ["data.dim", "data.n_train"])
    found = {(r.run, r.group["data.dim"]): r.crossing for r in analysis.thresholds(tmp_path, "loss_test", "data.n_train", 0.05)}
    assert found[("rich", 32)] == pytest.approx(32 / 0.05) and found[("ntk", 64)] == pytest.approx(64 ** 2 / 0.05)
    fits = {run: fit for _, run, fit in analysis.threshold_scaling(
        analysis.thresholds(tmp_path, "loss_test", "data.n_train", 0.05), by="data.dim")}
    assert fits["rich"].exponent == pytest.approx(1.0) and fits["ntk"].exponent == pytest.approx(2.0)
    result = analysis.analyze(tmp_path, "loss_test", "data.n_train", threshold=0.05, by="data.dim")
    text = str(result)
    assert len(result.crossings) > 0
    assert "k = +1.00" in text and "k = +2.00" in text
    # a fit range keeps the points with the key inside it
    low = analysis.scaling(analysis.rows_within(read_table(tmp_path), "data.n_train", None, 64), "loss_test",
                           "data.n_train")
    assert all(row.n == 3 for row in low)
    with pytest.raises(UsageError, match="no point has data.n_train"):
        analysis.analyze(tmp_path, "loss_test", "data.n_train", within=(1e6, None))
