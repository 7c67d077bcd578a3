"""The scenario schema: shorthands, cross-key rules, safe loading, and the stored resolved text."""

import pytest
import yaml

from meanfield.config.loading import apply_override, parse_scenario
from meanfield.errors import UsageError

BASE = "name: s\nruns: {rich: mean_field}\n"


def test_resolved_yaml_parses_back_to_the_same_scenario():
    scenario = parse_scenario(BASE, overrides=["runs.lazy.parameterization=lazy",
                                               "runs.lazy.parameterization.alpha=30"])
    again = parse_scenario(scenario.resolved_yaml())
    assert again == scenario
    assert again.runs["lazy"].parameterization.alpha == 30.0
    assert again.runs["rich"].parameterization.preset == "mean_field"


def test_an_override_can_add_options_to_a_shorthand():
    raw = {"runs": {"rich": "mean_field"}}
    apply_override(raw, "runs.rich.parameterization.lr=0.5")
    assert raw == {"runs": {"rich": {"parameterization": {"preset": "mean_field", "lr": 0.5}}}}


@pytest.mark.parametrize(
    "extra, message",
    [
        ("loss: logistic", "loss 'logistic' needs labels +-1"),
        ("train: {temperature: 0.1}", "set train.integrator.method: euler_maruyama"),
        ("train: {integrator: {method: sgd, dt: 0.1}}", "needs train.integrator.batch_size"),
        ("train: {integrator: {method: euler}}", "set train.integrator.dt"),
        ("model: {width: 7, init: {symmetric: true}}", "needs an even width"),
        ("data: {task: moons, dim: 3}", "set data.dim: 2"),
        ("data: {task: file}", "needs data.path"),
        ("runs: {'bad name': ntk}", "run name 'bad name'"),
        ("runs: {}", "runs"),
        ("runs: {k: {solver: ntk, kernel: exact}}", "runs.k.kernel: 'exact' is not one of empirical, analytic$"),
        ("runs: {k: {solver: ntk, alpha: 3}}", "unknown key 'runs.k.alpha'; allowed here: solver, kernel, parameterization"),
        ("runs: {k: {solver: magic}}", "runs.k.solver: 'magic' is not one of particles, tangent, ntk$"),
        ("data: {task: xor, degree: 3}", "data.degree is a key of task single_index, not of 'xor'"),
        ("data: {task: single_index, teacher: {width: 5}}", "data.teacher is a key of task teacher_student"),
        ("data: {delta: 0.3}", "data.delta is a key of task gaussian_mixture"),
        ("train: {integrator: {method: euler, dt: 0.1, rtol: 1.0e-4}}", "rtol: only the adaptive method 'rk45'"),
    ],
)
def test_rules_across_keys_are_explained(extra, message):
    text = BASE.replace("runs: {rich: mean_field}\n", "") if extra.startswith("runs") else BASE
    with pytest.raises(UsageError, match=message.replace("+", r"\+")):
        parse_scenario(text + extra + "\n", source="s.yaml")


def test_yaml_cannot_run_code():
    with pytest.raises(UsageError, match="not valid YAML"):
        parse_scenario("name: !!python/object/apply:os.system ['echo hi']\nruns: {rich: ntk}\n")


def test_a_scenario_must_be_a_mapping():
    with pytest.raises(UsageError, match="a scenario is a mapping"):
        parse_scenario("- just\n- a list\n", source="s.yaml")


def test_run_kinds_and_their_defaults():
    scenario = parse_scenario("name: s\nruns: {rich: mean_field, ntk: {solver: ntk}, tan: {solver: tangent}}\n")
    assert scenario.runs["rich"].solver == "particles"
    assert scenario.runs["ntk"].kernel == "empirical"
    assert scenario.runs["ntk"].parameterization.preset == "ntk"
    assert scenario.runs["tan"].parameterization.preset == "ntk"


def test_an_override_can_remove_a_run():
    scenario = parse_scenario("name: s\nruns: {rich: mean_field, lazy: ntk}\n", overrides=["runs.lazy=null"])
    assert list(scenario.runs) == ["rich"]


# Nonsense that used to pass validation and fail (or be ignored) later: each bad scenario is
# refused with a message naming the key and what is allowed; its valid neighbour is accepted.
REFUSED = [
    pytest.param("data: {task: moons, inputs: sphere}",
                 "data.inputs is a key of task teacher_student, single_index, power_law, digits or mnist1d, not of 'moons': remove it",
                 "data: {task: single_index, inputs: sphere}", id="inputs-on-classification"),
    pytest.param("model: {init: {b_std: 0.5}}",
                 "model: init.b_std = 0.5 is the spread of the biases b_i, and bias is false",
                 "model: {bias: true, init: {b_std: 0.5}}", id="b_std-without-bias"),
    pytest.param("runs: {k: {solver: ntk, kernel: analytic}}\nmodel: {init: {b_std: 0.5}}",
                 "set model.bias: true, or remove model.init.b_std",
                 "runs: {k: {solver: ntk, kernel: analytic}}\nmodel: {bias: true, init: {b_std: 0.5}}",
                 id="b_std-without-bias-analytic"),
    pytest.param("train: {integrator: {method: rk45, dt_min: 0.1, dt_max: 0.01}}",
                 "train.integrator: dt_max = 0.01 is below dt_min = 0.1: rk45 keeps its step within [dt_min, dt_max]",
                 "train: {integrator: {method: rk45, dt_min: 0.01, dt_max: 0.01}}", id="rk45-dt_max-below-dt_min"),
    pytest.param("runs: {r: {parameterization: {preset: custom, output_exponent: -200}}}",
                 "runs.r.parameterization at width 512 gives a power of the width out of floating-point range",
                 "runs: {r: {parameterization: {preset: custom, output_exponent: -2}}}", id="custom-overflow"),
    pytest.param("runs: {r: {parameterization: {preset: lazy, alpha: 1.0e+300}}}",
                 "runs.r.parameterization at width 512 gives loss_scale out of floating-point range",
                 "runs: {r: {parameterization: {preset: lazy, alpha: 1.0e+30}}}", id="lazy-alpha-overflow"),
    pytest.param("runs: {r: {parameterization: {preset: mean_field, lr: 1.0e+308}}}\nmodel: {width: 4}",
                 "gives eta_a, eta_w out of floating-point range (0 or inf); s, eta_a, eta_w, a_std and "
                 "loss_scale must be finite and > 0",
                 "runs: {r: {parameterization: {preset: mean_field, lr: 1.0e+300}}}\nmodel: {width: 4}",
                 id="lr-overflow"),
    pytest.param("data: {task: file, path: d.npz, dim: 2, n_train: 100, noise: 0.1}",  # dim given: d.npz unread
                 "data: n_train, noise: task 'file' takes its samples from data.path as they are "
                 "(data.test_fraction of them held out for testing): remove them",
                 "data: {task: file, path: d.npz, dim: 2, test_fraction: 0.5}", id="file-n_train-noise"),
]


def with_base(extra: str) -> str:
    """BASE with the extra keys (its run replaced when they give runs)."""
    text = BASE.replace("runs: {rich: mean_field}\n", "") if "runs:" in extra else BASE
    return text + extra + "\n"


@pytest.mark.parametrize("bad, message, good", REFUSED)
def test_nonsense_is_refused_at_validation(bad, message, good):
    with pytest.raises(UsageError) as info:
        parse_scenario(with_base(bad), source="s.yaml")
    assert str(info.value).startswith("s.yaml:") and message in str(info.value)


@pytest.mark.parametrize("bad, message, good", REFUSED)
def test_the_valid_neighbour_is_accepted_and_its_resolved_text_parses_back(bad, message, good):
    scenario = parse_scenario(with_base(good), source="s.yaml")
    assert parse_scenario(scenario.resolved_yaml()) == scenario


@pytest.mark.parametrize("task", ["teacher_student", "single_index", "gaussian_mixture", "xor", "moons", "spirals",
                                  "file"])
@pytest.mark.parametrize("bias", [False, True])
def test_a_resolved_scenario_lists_every_default_and_parses_back(task, bias):
    """Keys that hold only their defaults (inputs, b_std, n_train, dt_max, ...) are not taken
    for keys given where they do not apply."""
    data = {"task": task, "dim": 2, **({"path": "gone.npz"} if task == "file" else {})}
    runs = {"rich": "mean_field", "k": {"solver": "ntk", "kernel": "analytic"}}
    scenario = parse_scenario(yaml.safe_dump({"name": "s", "data": data, "model": {"bias": bias}, "runs": runs,
                                              "train": {"integrator": {"method": "rk45"}}}))
    resolved = yaml.safe_load(scenario.resolved_yaml())
    assert resolved["data"]["inputs"] == "gaussian" and resolved["model"]["init"]["b_std"] == 0.0
    assert parse_scenario(scenario.resolved_yaml()) == scenario  # the file need not exist


def test_a_scenario_stored_before_the_rk45_defaults_changed_still_reads():
    """Files written before issue 13 list rk45's former tolerances (1e-6, 1e-9) for every method."""
    resolved = yaml.safe_load(parse_scenario(BASE).resolved_yaml())
    resolved["train"]["integrator"].update(rtol=1e-6, atol=1e-9)
    assert resolved["train"]["integrator"]["method"] == "rk4"
    assert parse_scenario(yaml.safe_dump(resolved)).train.integrator.method == "rk4"
