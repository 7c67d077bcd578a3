"""The ``file`` task's file (docs/design.md §5.2): data.path is relative to the scenario file
(an override's and a Python mapping's to the working directory), data.dim is read from the
file when not given (given and different, an error naming both), and a .csv file with a
header x0, ..., x{d-1}, y is read as the .npz of the same numbers is; a cell that is not a
finite number is one error naming the file, the row and the column."""

import textwrap

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.engine.runs import data_rng
from meanfield.model.data import make_dataset

N, D = 20, 3
SCENARIO = textwrap.dedent(
    """\
    name: f
    data: {task: file, path: DATA}
    model: {width: 8}
    runs: {rich: mean_field}
    train: {t_end: 1.0}
    """
)


def arrays():
    X = np.random.default_rng(5).standard_normal((N, D))
    return X, np.sin(X[:, 0]) - X[:, 2]


def write_csv(path, X, y, columns=None, cells=None):
    """X and y as a .csv file (repr: every float exactly), in the order ``columns``."""
    columns = columns or [f"x{i}" for i in range(X.shape[1])] + ["y"]
    table = {f"x{i}": X[:, i] for i in range(X.shape[1])} | {"y": y}
    rows = [[repr(float(table[name][r])) for name in columns] for r in range(len(y))]
    for (row, column), text in (cells or {}).items():
        rows[row][columns.index(column)] = text
    path.write_text(",".join(columns) + "\n" + "".join(",".join(row) + "\n" for row in rows))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scenario in tmp/exp/ whose data file sits beside it, run from tmp/elsewhere/."""
    X, y = arrays()
    (tmp_path / "exp").mkdir()
    (tmp_path / "elsewhere").mkdir()
    np.savez(tmp_path / "exp" / "d.npz", X=X, y=y)
    write_csv(tmp_path / "exp" / "d.csv", X, y)
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def scenario_file(project, data="d.npz", extra=""):
    path = project / "exp" / "s.yaml"
    path.write_text(SCENARIO.replace("DATA", data) + extra)
    return path


def dry_run(*args):
    return CliRunner().invoke(main, ["-q", "simulate", *map(str, args), "--dry-run"])


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("data", ["d.npz", "d.csv", "../exp/d.npz", "./d.csv"])
def test_a_relative_data_path_is_taken_from_the_scenario_file(project, data):
    path = scenario_file(project, data)
    result = dry_run(path)
    assert result.exit_code == 0, result.output
    assert f"dim {D}, n_train 15, n_test 5" in result.output
    scenario = mf.load_scenario(path)
    assert scenario.data.path == str(project / "exp" / data.removeprefix("../exp/").removeprefix("./"))


def test_so_is_a_relative_test_path(project):
    path = scenario_file(project, extra="")
    path.write_text(path.read_text().replace("path: d.npz", "path: d.npz, test_path: d.csv"))
    assert mf.load_scenario(path).data.test_path == str(project / "exp" / "d.csv")
    assert "dim 3, n_train 20, n_test 20" in dry_run(path).output


def test_an_absolute_path_stays_absolute(project, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "abs.npz"
    np.savez(elsewhere, X=np.ones((8, 2)), y=np.ones(8))
    path = scenario_file(project, str(elsewhere))
    assert mf.load_scenario(path).data.path == str(elsewhere)
    assert "dim 2, n_train 6, n_test 2" in dry_run(path).output


def test_a_path_from_an_override_or_a_mapping_is_taken_from_the_working_directory(project):
    np.savez(project / "elsewhere" / "here.npz", X=np.ones((8, 2)), y=np.ones(8))
    path = scenario_file(project)
    assert "dim 2, n_train 6" in dry_run(path, "--set", "data.path=here.npz").output
    error = one_error_line(dry_run(path, "--set", "data.path=d.npz"))  # d.npz is beside the scenario, not here
    assert error == f"Error: {path} (--set data.path): data.path d.npz: no such file (the .npz file holding X and y)"
    raw = yaml.safe_load(SCENARIO.replace("DATA", "here.npz"))
    assert mf.load_scenario(raw).data.path == "here.npz" and mf.plan(mf.load_scenario(raw)).n_train == 6


def test_a_missing_file_is_named_with_the_line_that_gives_it(project):
    path = scenario_file(project, "absent.csv")
    error = one_error_line(dry_run(path))
    assert error == f"Error: {path}:2: data.path {project / 'exp' / 'absent.csv'}: no such file (the .csv file " \
                    "holding X and y)"


@pytest.mark.parametrize("data", ["d.npz", "d.csv"])
def test_data_dim_is_read_from_the_file_and_stored_in_the_resolved_scenario(project, data):
    scenario = mf.load_scenario(scenario_file(project, data))
    assert scenario.data.dim == D
    assert yaml.safe_load(scenario.resolved_yaml())["data"]["dim"] == D
    assert mf.load_scenario(yaml.safe_load(scenario.resolved_yaml())) == scenario


@pytest.mark.parametrize("data", ["d.npz", "d.csv"])
def test_a_data_dim_that_disagrees_with_the_file_names_both(project, data):
    path = scenario_file(project, data)
    assert dry_run(path, "--set", f"data.dim={D}").exit_code == 0
    error = one_error_line(dry_run(path, "--set", "data.dim=2"))
    assert error == (f"Error: data.dim is 2, and data.path {project / 'exp' / data} holds inputs of dimension 3 "
                     f"(X [{N}, 3]): remove data.dim (it is read from the file) or set data.dim: 3")


@pytest.mark.parametrize("columns", [None, ["y", "x2", "x0", "x1"]], ids=["in-order", "any-order"])
def test_a_csv_file_gives_the_data_its_npz_gives(tmp_path, columns):
    X, y = arrays()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    write_csv(tmp_path / "d.csv", X, y, columns)
    sets = {}
    for suffix in ("npz", "csv"):
        spec = mf.load_scenario(yaml.safe_load(SCENARIO.replace("DATA", str(tmp_path / f"d.{suffix}"))))
        sets[suffix] = make_dataset(spec.data, data_rng(spec))
    for key in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(sets["csv"], key), getattr(sets["npz"], key))


# (cells replaced by (row, column) -> text, or the file's whole text; the words of the one Error: line)
BAD_CSV = [
    pytest.param({(3, "x1"): "abc"}, "d.csv: row 4 (line 5), column x1: 'abc' is not a number", id="text"),
    pytest.param({(0, "y"): " "}, "d.csv: row 1 (line 2), column y: empty; every cell is a number", id="empty"),
    pytest.param({(7, "x2"): "nan"}, "d.csv: row 8 (line 9), column x2: nan is not a finite number", id="nan"),
    pytest.param({(19, "y"): "-inf"}, "d.csv: row 20 (line 21), column y: -inf is not a finite number", id="inf"),
    pytest.param("x0,x1,x2,label\n1,2,3,4\n", "d.csv: the header (line 1): column 'label' is not x<i> or y",
                 id="unknown-column"),
    pytest.param("x0,x1,x2,Y\n1,2,3,4\n", "column 'Y' is not x<i> or y; a .csv file holds a header row naming the "
                 "columns x0, ..., x{d-1} and y (any order), then one sample per row; did you mean 'y'?",
                 id="column-case"),
    pytest.param("x0,x2,y\n1,2,3\n", "d.csv: the header (line 1) has no column x1", id="gap"),
    pytest.param("x0,x1,x2\n1,2,3\n", "d.csv: the header (line 1) has no column y (the labels)", id="no-y"),
    pytest.param("x0,x0,y\n1,2,3\n", "d.csv: the header (line 1): column 'x0' is named twice", id="twice"),
    pytest.param("1,2,3,4\n5,6,7,8\n", "d.csv: the header (line 1) holds numbers, not column names", id="no-header"),
    pytest.param("", "d.csv: no header row", id="empty-file"),
    pytest.param("x0,x1,x2,y\n1,2,3,4\n1,2,3\n", "d.csv: line 3 has 3 cell(s) and the header 4", id="short-row"),
]


@pytest.mark.parametrize("bad, words", BAD_CSV)
def test_a_bad_csv_cell_or_header_is_one_error_naming_file_row_and_column(project, bad, words):
    csv = project / "exp" / "d.csv"
    if isinstance(bad, dict):
        write_csv(csv, *arrays(), cells=bad)
    else:
        csv.write_text(bad)
    error = one_error_line(dry_run(scenario_file(project, "d.csv", extra=""), "--set", f"data.dim={D}"))
    assert f"data.path {csv}" in error and words in error, error
    error = one_error_line(dry_run(scenario_file(project, "d.csv")))  # data.dim inferred: read up front
    assert f"data.path {csv}" in error and words in error, error
