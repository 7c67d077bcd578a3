"""The studies contract (meanfield/studies/, docs/design.md §6): every bundled study is one
module with its published values and citation, run the same way (``mf.study(NAME, quick=...)``,
``meanfield study NAME [--quick]``) into a table of the same columns; each study's reduced
check, on the reduced grid of its older test (test_studies_width.py, test_studies_scale.py,
test_edge_of_stability.py, test_catapult.py), agrees with every published value it measures."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.studies import COLUMNS, Reference, agrees, get, studies

NAMES = ["catapult", "catapult_relu", "chizat_oyallon_bach", "edge_of_stability", "implicit_bias", "luo_phase_diagram",
         "single_index_samples", "width_theorem"]
"""The studies moved onto the contract; a new study's module joins the registry, and so the
tests below that run over every study, with no list to edit."""
REGISTERED = sorted(studies())


def test_the_registry_holds_the_six_studies_each_with_its_citation_and_references():
    registry = studies()
    assert set(NAMES) <= set(registry) and sorted(mf.bundled_studies()) == sorted(registry) == REGISTERED
    for name, entry in registry.items():
        assert entry.name == name and entry.kind in ("sweep", "scenario") and len(entry.citation) > 20
        assert entry.references and len({ref.quantity for ref in entry.references}) == len(entry.references)
        assert any(ref.quick for ref in entry.references), name
        if entry.kind == "sweep":
            assert entry.source in mf.bundled_sweeps()
        else:
            assert entry.source in mf.bundled_scenarios()
    # a value the project could not check against the paper says so
    unchecked = [ref.label for entry in registry.values() for ref in entry.references if not ref.checked]
    assert unchecked and all(label.endswith("(unchecked)") for label in unchecked)


@pytest.mark.parametrize("published, measured, tolerance, expected", [
    (-0.5, -0.55, 0.1, True), (-0.5, -0.65, 0.1, False), (1.0, 1.0, None, True), (1.0, 1.01, None, False),
    ("< 1", 0.9, None, True), ("< 1", 1.0, None, False), ("> 2", 2.5, None, True), ("> 2", 1.9, None, False),
    ("linear", "linear", None, True), ("linear", "critical", None, False), (1.0, "linear", 0.1, False),
    (1.0, math.nan, 0.1, False), ("> 2", math.nan, None, False), ("rises", None, None, False),
])
def test_one_agreement_rule_for_every_study(published, measured, tolerance, expected):
    assert agrees(published, measured, tolerance) is expected


def test_a_table_has_the_contracts_columns_and_the_quick_tolerance():
    entry = get("width_theorem")
    quantity = entry.references[0].quantity
    assert list(entry.table({quantity: -0.3}, quick=True).columns) == list(COLUMNS)
    assert entry.table({quantity: -0.3}, quick=True)["agrees"].tolist() == [True]   # -0.5 +- 0.4
    assert entry.table({quantity: -0.3}, quick=False)["agrees"].tolist() == [False]  # -0.5 +- 0.1
    assert entry.table({}).empty and list(entry.table({}).columns) == list(COLUMNS)
    assert Reference("x", 1.0, checked=False).label == "x (unchecked)"


def test_an_unknown_study_is_one_error_line_with_a_close_match():
    result = CliRunner().invoke(main, ["study", "catapul", "--quick"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: 'catapul' is not a bundled study")
    assert "did you mean 'catapult'?" in lines[0]
    with pytest.raises(mf.UsageError, match="did you mean 'width_theorem'"):
        mf.study("width_theorm", quick=True)
    for args in (["study"], ["study", "catapult", "--list"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and result.output.startswith("Error: "), args


def test_study_list_shows_every_study():
    result = CliRunner().invoke(main, ["study", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == REGISTERED
    assert "edge_of_stability      scenario" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTERED)
def test_the_quick_check_of_every_study_agrees_with_the_published_values(name, tmp_path):
    result = mf.study(name, quick=True, output=tmp_path / name)
    table = result.table
    assert list(table.columns) == list(COLUMNS)
    assert len(table) >= 3, table
    assert table["agrees"].all(), str(result)
    assert result.agrees and name in str(result) and "agree with the published values" in str(result)
    quick = [ref.label for ref in get(name).references if ref.quick]
    assert table["quantity"].tolist() == quick  # every quantity the reduced check measures, in order
    assert result.figure(tmp_path / f"{name}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_study_command_runs_the_quick_check_prints_the_table_and_draws(tmp_path):
    result = CliRunner().invoke(main, ["study", "luo_phase_diagram", "--quick", "-o", str(tmp_path / "luo")])
    assert result.exit_code == 0, result.output
    assert "quantity" in result.output and "published" in result.output and "Luo, Xu, Ma & Zhang" in result.output
    assert "3 of 3 agree with the published values" in result.output
    assert (tmp_path / "luo" / "luo_phase_diagram.png").stat().st_size > 10_000
    assert (tmp_path / "luo" / "results.csv").exists()
    # the directory holds the study now: again only with --resume, which runs nothing more
    again = CliRunner().invoke(main, ["study", "luo_phase_diagram", "--quick", "-o", str(tmp_path / "luo")])
    assert again.exit_code == 2 and again.output.startswith("Error: ") and "--resume" in again.output
    resumed = CliRunner().invoke(main, ["study", "luo_phase_diagram", "--quick", "-o", str(tmp_path / "luo"),
                                        "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "3 of 3 agree with the published values" in resumed.output


@pytest.mark.slow
def test_a_full_layout_sweep_is_measured_as_the_full_study(tmp_path):
    """The full study's measurement on a results directory as `meanfield sweep width_theorem`
    writes it (both families in one sweep), at three widths: the fixed-lr row reads the
    fixed-lr points only (at m = 512 they diverge) and the tolerances are the full study's."""
    from meanfield.studies.base import reduced_sweep, run_sweep_into

    def grid(raw):
        raw["grid"] = {"runs": raw["grid"]["runs"], "model.width": [64, 128, 512], "seed": [0]}

    directory = run_sweep_into(reduced_sweep("width_theorem", grid), tmp_path / "wt", quick=True)
    result = get("width_theorem").result(directory)
    table = result.table
    assert list(table.columns) == list(COLUMNS) and len(table) == 4
    assert table["tolerance"].tolist()[:3] == [0.1, 0.1, 0.1]
    assert table["measured"].tolist()[3] == "diverges" and table["agrees"].all(), str(result)


def test_listing_the_studies_loads_no_numba_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys; from meanfield.studies import studies; studies(); "
            "print('numba' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
