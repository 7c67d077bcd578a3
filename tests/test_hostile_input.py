"""Input an adversarial user (or someone else's scenario file) would give: YAML bombs, deep
nesting, tens of thousands of mistakes, a seed beyond 64 bits, a boolean where a number is
meant, names and outputs that would write outside the working directory, and click's own
usage errors. Each ends in a bounded, clear message (one ``Error:`` line, exit status 2 on
the command line; a UsageError in the API), quickly, and leaves no file behind."""

import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.config.loading import MAX_DEPTH, MAX_NODES, expanded_size, load_yaml
from meanfield.config.sections import MAX_SEED
from meanfield.config.wording import MAX_TOLD

BASE = textwrap.dedent(
    """\
    name: hostile
    seed: 0
    data: {task: teacher_student, dim: 3, n_train: 20, n_test: 10}
    model: {width: 8}
    runs: {rich: mean_field}
    train: {t_end: 0.5, integrator: {method: euler, dt: 0.1}}
    """
)


def laughs(levels: int, fan: int = 9) -> str:
    """A billion-laughs document: each anchor a list of ``fan`` aliases of the one before, so
    the last expands to fan^levels strings from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fan)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def dry_run(tmp_path, text: str, *args):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run", *args])


# ------------------------------------------------------------------------- bounded parsing
def count_values(obj) -> int:
    """The values of a constructed YAML document, walked in Python: the reference for
    expanded_size (a mapping counts its keys and values, as YAML nodes do)."""
    if isinstance(obj, dict):
        return 1 + sum(count_values(k) + count_values(v) for k, v in obj.items())
    if isinstance(obj, list):
        return 1 + sum(count_values(item) for item in obj)
    return 1


def laughs_size(levels: int, fan: int = 9) -> int:
    """The values of laughs(levels) expanded, by its recursion: list k holds 1 + fan * (list k-1)
    values, list 0 holds 1 + fan; each key adds one."""
    sizes = [1 + fan]
    for _ in range(levels):
        sizes.append(1 + fan * sizes[-1])
    return sum(1 + size for size in sizes)


@pytest.mark.parametrize("text", [laughs(3, fan=3), laughs(2, fan=5), BASE, "a: &x {b: [1, 2]}\nc: [*x, *x]\n"])
def test_expanded_size_counts_every_value_an_alias_repeats(text):
    assert expanded_size(yaml.compose(text)) == count_values(yaml.safe_load(text))


@pytest.mark.parametrize("where", ["scenario", "sweep"])
def test_a_billion_laughs_file_is_refused_at_once_on_the_command_line(tmp_path, where):
    path = tmp_path / f"{where}.yaml"
    path.write_text(laughs(9) + (BASE if where == "scenario" else "base: quickstart\ngrid: {seed: [0, 1]}\n"))
    command = "simulate" if where == "scenario" else "sweep"
    # in a subprocess with a timeout: before the bound, this ran past 45 s with memory growing
    done = subprocess.run([sys.executable, "-m", "meanfield.cli", "-q", command, str(path), "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    tail = BASE if where == "scenario" else "base: quickstart\ngrid: {seed: [0, 1]}\n"
    assert lines[0] == (f"Error: {path}:1:1: not valid YAML: holds {laughs_size(9) + count_values(yaml.safe_load(tail)):,}"
                        f" values once its aliases (*name) are expanded; at most {MAX_NODES:,} are allowed")


def test_a_billion_laughs_is_a_usage_error_in_the_api_and_in_a_stored_scenario(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(laughs(9) + BASE)
    with pytest.raises(mf.UsageError, match="once its aliases"):
        mf.load_scenario(path)
    with pytest.raises(yaml.YAMLError, match="once its aliases"):
        load_yaml(laughs(9))
    assert load_yaml(laughs(3)) == yaml.safe_load(laughs(3))  # a modest use of aliases stays allowed


@pytest.mark.parametrize("nesting", ["flow", "block"])
def test_deep_nesting_is_one_error_line_not_a_recursion_error(tmp_path, nesting):
    levels = 20_000 if nesting == "flow" else 200
    deep = ("x: " + "[" * levels + "]" * levels if nesting == "flow"
            else "x:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(levels)))
    line = one_error_line(dry_run(tmp_path, BASE + deep + "\n"))
    assert f"nested deeper than {MAX_DEPTH} levels" in line and line.startswith(f"Error: {tmp_path / 's.yaml'}:")


def test_nesting_up_to_the_bound_is_read():
    assert load_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) is not None
    with pytest.raises(yaml.YAMLError, match="nested deeper"):
        load_yaml("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH)


def test_fifty_thousand_unknown_keys_print_the_first_few_and_a_count(tmp_path):
    keys = "".join(f"k{i}: 1\n" for i in range(50_000))
    result = dry_run(tmp_path, BASE + keys)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == MAX_TOLD + 1 and "Traceback" not in result.output
    assert lines[0].startswith(f"Error: {tmp_path / 's.yaml'}:7: unknown key 'k0'; allowed here: name,")
    assert lines[-1] == f"{tmp_path / 's.yaml'}: ... and {50_000 - MAX_TOLD:,} more errors like these (fix the ones " \
                        "above first)"


def test_a_yaml_error_keeps_the_column_where_it_went_wrong(tmp_path):
    line = one_error_line(dry_run(tmp_path, BASE + "train2: {method: euler\n"))
    assert line.startswith(f"Error: {tmp_path / 's.yaml'}:8:1: not valid YAML:")  # the end of the text


# ------------------------------------------------------------------ numbers and booleans
@pytest.mark.parametrize("seed", [MAX_SEED + 1, 2**70])
def test_a_seed_beyond_64_bits_is_refused_up_front_and_leaves_no_file(tmp_path, seed):
    path = tmp_path / "s.yaml"
    path.write_text(BASE.replace("seed: 0", f"seed: {seed}"))
    result = CliRunner().invoke(main, ["-q", "simulate", str(path), "-o", str(tmp_path / "out.h5")])
    assert one_error_line(result) == f"Error: {path}:2: seed: must be <= {MAX_SEED} (got {seed})"
    assert not (tmp_path / "out.h5").exists()
    with pytest.raises(mf.UsageError, match="must be <="):
        mf.load_scenario(path)
    with pytest.raises(mf.UsageError, match="data.seed: must be <="):
        mf.load_scenario("quickstart", {"data.seed": seed})
    assert mf.load_scenario("quickstart", {"seed": MAX_SEED}).seed == MAX_SEED


@pytest.mark.parametrize("key, value", [("model.width", "yes"), ("train.t_end", "true"), ("seed", "on"),
                                        ("model.init.a_std", "no"), ("data.n_train", "true")])
def test_a_boolean_is_never_a_number(tmp_path, key, value):
    line = one_error_line(dry_run(tmp_path, BASE, "--set", f"{key}={value}"))
    assert line.endswith(f"{key}: a number is asked for, not {yaml.safe_load(value)!s} (YAML reads yes, no, on, "
                         "off, true and false as booleans)".lower().replace("yaml reads", "YAML reads"))


def test_a_boolean_key_still_takes_yes_and_no(tmp_path):
    assert dry_run(tmp_path, BASE, "--set", "model.bias=yes").exit_code == 0


# ------------------------------------------------------------------ where files go
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/x", "a/b", "..", "a\\b"])
def test_a_scenario_name_is_a_plain_name(tmp_path, name):
    line = one_error_line(dry_run(tmp_path, BASE.replace("name: hostile", f"name: {json.dumps(name)}")))
    assert f"name: {name!r} is not a plain name" in line
    with pytest.raises(mf.UsageError, match="not a plain name"):
        mf.load_scenario("quickstart", {"name": name})


@pytest.mark.parametrize("output", ["../out.h5", "/tmp/out.h5", "~/out.h5", "a/../../out.h5"])
def test_a_scenario_file_cannot_send_its_output_outside_the_working_directory(tmp_path, output):
    line = one_error_line(dry_run(tmp_path, BASE + f"output: {output}\n"))
    assert f"output {output!r}: a scenario's output is a relative path below the working directory" in line


def test_an_output_below_the_working_directory_and_minus_o_anywhere_are_allowed(tmp_path):
    assert dry_run(tmp_path, BASE + "output: runs/out.h5\n").exit_code == 0
    assert dry_run(tmp_path, BASE, "-o", str(tmp_path.parent / "elsewhere.h5")).exit_code == 0


def test_a_sweep_name_is_a_plain_name(tmp_path):
    path = tmp_path / "sw.yaml"
    path.write_text("name: ../../out\nbase: quickstart\ngrid: {seed: [0, 1]}\n")
    result = CliRunner().invoke(main, ["-q", "sweep", str(path), "--dry-run"])
    assert one_error_line(result).startswith(f"Error: {path}:1: name: '../../out' is not a plain name")
    with pytest.raises(mf.UsageError, match="not a plain name"):
        mf.load_sweep(path)


@pytest.mark.parametrize("source", [None, [1, 2], 3.5])
def test_load_scenario_and_sweep_of_something_else_is_a_usage_error(source):
    with pytest.raises(mf.UsageError, match="a scenario is a bundled scenario's name"):
        mf.load_scenario(source)
    with pytest.raises(mf.UsageError, match="a sweep is"):
        mf.load_sweep(source)


def test_a_mapping_without_a_grid_is_not_a_sweep():
    with pytest.raises(mf.UsageError, match="a sweep is a sweep file's path or a bundled sweep's name, or a base"):
        mf.sweep({"base": "quickstart", "grid": {"seed": [0, 1]}})


# ------------------------------------------------------------------ click's usage errors
@pytest.mark.parametrize("args, words", [
    (["simulate", "quickstart", "--threads", "0"], "Invalid value for '--threads': 0 is not in the range x>=1. "
                                                   "(see meanfield simulate --help)"),
    (["simulate", "quickstart", "--bogus"], "No such option '--bogus'. (see meanfield simulate --help)"),
    (["simulat"], "No such command 'simulat'. Did you mean 'simulate'? (see meanfield --help)"),
    (["simulate"], "Missing argument 'SCENARIO'. (see meanfield simulate --help)"),
])
def test_clicks_own_usage_errors_are_one_error_line(args, words):
    assert one_error_line(CliRunner().invoke(main, args, prog_name="meanfield")) == f"Error: {words}"


def test_minus_o_naming_a_directory_is_one_error_line(tmp_path):
    line = one_error_line(CliRunner().invoke(main, ["simulate", "quickstart", "-o", str(tmp_path), "--dry-run"]))
    assert line.startswith("Error: Invalid value for '-o' / '--output'") and "is a directory" in line


def test_the_budget_message_advises_only_what_would_help(tmp_path):
    tiny = "record: {max_file_mb: 0.001, particles: false}\n"
    line = one_error_line(dry_run(tmp_path, BASE + tiny))
    assert "cannot hold even the first and last snapshots" in line and "record.particles" not in line
    line = one_error_line(dry_run(tmp_path, BASE + tiny.replace("false", "true")))
    assert line.endswith("raise it or set record.particles: false")
