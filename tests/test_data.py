"""Tests of meanfield.model.data: shapes, determinism, the distributions each task promises, files."""

import math
import pickle
import re

import h5py
import numpy as np
import pytest
from pydantic import ValidationError
from scipy.special import erf

from meanfield.config.loading import load_scenario
from meanfield.config.sections import DataSpec
from meanfield.errors import UsageError
from meanfield.model.data import TASKS, Dataset, check_source, make_dataset

SYNTHETIC = ["teacher_student", "single_index", "gaussian_mixture", "xor", "moons", "spirals", "clusters", "stripe",
             "power_law"]
CLASSIFICATION = ["gaussian_mixture", "xor", "moons", "spirals"]

# Plain NumPy activations: the independent reference for the teacher's targets.
NUMPY_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "erf": erf,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "linear": lambda z: z,
    "quadratic": lambda z: z**2,
}


def rng(seed=0):
    return np.random.default_rng(seed)


def spec(task, **kw):
    kw.setdefault("dim", 2 if task in ("xor", "moons", "spirals") else 3)
    kw.setdefault("n_train", 40)
    kw.setdefault("n_test", 30)
    return DataSpec(task=task, **kw)


@pytest.fixture
def npz_file(tmp_path):
    """An .npz file of 20 samples in d = 3, y_k = k so rows can be traced after shuffling."""
    X = np.arange(60.0).reshape(20, 3)
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=np.arange(20.0))
    return path


def write_h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
    return path


# ------------------------------------------------------------------ every task
@pytest.mark.parametrize("task", SYNTHETIC)
def test_shapes_and_dtypes(task):
    ds = make_dataset(spec(task), rng())
    d = ds.dim
    assert (ds.n_train, ds.n_test) == (40, 30)
    assert ds.X_train.shape == (40, d) and ds.y_train.shape == (40,)
    assert ds.X_test.shape == (30, d) and ds.y_test.shape == (30,)
    for array in (ds.X_train, ds.y_train, ds.X_test, ds.y_test):
        assert array.dtype == np.float64 and np.all(np.isfinite(array))
    if task in ("teacher_student", "single_index"):
        k = ds.teacher.W.shape[0]
        assert ds.teacher.a.shape == (k,) and ds.teacher.W.shape == (k, d)
    else:
        assert ds.teacher is None


def test_every_task_has_a_builder():
    assert set(TASKS) == set(SYNTHETIC) | {"file", "digits", "mnist1d"}  # the real ones: test_real_data.py


@pytest.mark.parametrize("task", SYNTHETIC)
def test_same_seed_same_arrays_other_seed_other_arrays(task):
    s = spec(task, noise=0.1)
    one, again, other = (make_dataset(s, rng(seed)) for seed in (1, 1, 2))
    for name in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(one, name), getattr(again, name))
    assert not np.array_equal(one.X_train, other.X_train)
    assert not np.array_equal(one.X_test, other.X_test)


@pytest.mark.parametrize("task", SYNTHETIC)
def test_training_set_does_not_depend_on_test_size(task):
    base = make_dataset(spec(task, noise=0.2), rng())
    changed = make_dataset(spec(task, noise=0.2, n_test=7), rng())
    np.testing.assert_array_equal(changed.X_train, base.X_train)
    np.testing.assert_array_equal(changed.y_train, base.y_train)
    if base.teacher is not None:
        np.testing.assert_array_equal(changed.teacher.W, base.teacher.W)


@pytest.mark.parametrize("task", CLASSIFICATION)
def test_classification_noise_is_input_noise(task):
    clean = make_dataset(spec(task, n_train=4000), rng())
    noisy = make_dataset(spec(task, n_train=4000, noise=0.5), rng())
    np.testing.assert_array_equal(noisy.y_train, clean.y_train)
    eps = (noisy.X_train - clean.X_train) / 0.5
    assert abs(eps.mean()) < 5 / math.sqrt(eps.size)
    assert abs(eps.var() - 1.0) < 5 * math.sqrt(2 / eps.size)


def test_inputs_key_refused_where_it_does_not_apply():
    with pytest.raises(ValidationError, match="data.inputs is a key of task teacher_student, single_index, power_law, digits or mnist1d"):
        spec("moons", inputs="sphere")


# ------------------------------------------------------------------ regression
@pytest.mark.parametrize("task", ["teacher_student", "single_index"])
def test_sphere_inputs_have_norm_sqrt_d(task):
    ds = make_dataset(spec(task, dim=7, inputs="sphere"), rng())
    for X in (ds.X_train, ds.X_test):
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), math.sqrt(7), rtol=1e-12)


def test_teacher_is_on_the_unit_sphere_with_equal_weights():
    ds = make_dataset(spec("teacher_student", dim=5, teacher={"width": 4}), rng())
    np.testing.assert_allclose(np.linalg.norm(ds.teacher.W, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(ds.teacher.a, np.full(4, 0.25))
    assert ds.teacher.activation == "relu"


@pytest.mark.parametrize("activation", sorted(NUMPY_ACTIVATIONS))
@pytest.mark.parametrize("dim", [3, 40])  # 40: the BLAS path of the solver
def test_teacher_targets_match_numpy(activation, dim):
    s = spec("teacher_student", dim=dim, teacher={"width": 3, "activation": activation})
    ds = make_dataset(s, rng())
    t = ds.teacher
    assert t.activation == activation
    sigma = NUMPY_ACTIVATIONS[activation]
    for X, y in ((ds.X_train, ds.y_train), (ds.X_test, ds.y_test)):
        reference = sum(t.a[j] * sigma(X @ t.W[j]) for j in range(len(t.a)))
        np.testing.assert_allclose(y, reference, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("task", ["teacher_student", "single_index"])
def test_label_noise_is_noise_times_standard_normal(task):
    clean = make_dataset(spec(task, n_train=4000), rng())
    noisy = make_dataset(spec(task, n_train=4000, noise=0.5), rng())
    eps = (noisy.y_train - clean.y_train) / 0.5
    assert abs(eps.mean()) < 5 / math.sqrt(4000)
    assert abs(eps.var() - 1.0) < 5 * math.sqrt(2 / 4000)


def test_single_index_degree_2_is_the_explicit_polynomial():
    ds = make_dataset(spec("single_index", dim=4, degree=2), rng())
    u = ds.teacher.W[0]
    z = ds.X_train @ u
    np.testing.assert_allclose(ds.y_train, (z**2 - 1) / math.sqrt(2), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(u), 1.0)
    np.testing.assert_array_equal(ds.teacher.a, [1.0])
    assert ds.teacher.activation == "hermite2"


def test_single_index_degree_3_is_the_explicit_polynomial():
    ds = make_dataset(spec("single_index", dim=4, degree=3), rng())
    z = ds.X_test @ ds.teacher.W[0]
    np.testing.assert_allclose(ds.y_test, (z**3 - 3 * z) / math.sqrt(6), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_single_index_target_has_mean_0_and_variance_1(degree):
    n = 200_000
    y = make_dataset(spec("single_index", dim=5, degree=degree, n_train=n, n_test=1), rng()).y_train
    assert abs(y.mean()) < 5 * y.std() / math.sqrt(n)
    assert abs(np.mean(y**2) - 1.0) < 5 * np.std(y**2) / math.sqrt(n)


@pytest.mark.parametrize("task", ["teacher_student", "single_index"])
def test_unit_sphere_inputs_have_norm_1_and_second_moment_identity_over_d(task):
    d, n = 4, 20_000
    ds = make_dataset(spec(task, dim=d, inputs="unit_sphere", n_train=n), rng())
    for X in (ds.X_train, ds.X_test):
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-12)
    # uniform on the sphere: E x = 0 and E x x^T = I / d; each entry of x x^T has variance < 1
    X = ds.X_train
    assert np.all(np.abs(X.mean(axis=0)) < 5 / math.sqrt(n))
    assert np.all(np.abs(X.T @ X / n - np.eye(d) / d) < 5 / math.sqrt(n))
    # the same normalised Gaussian draws as inputs: sphere, scaled by sqrt(d)
    sphere = make_dataset(spec(task, dim=d, inputs="sphere", n_train=n), rng())
    np.testing.assert_allclose(sphere.X_train, math.sqrt(d) * X, rtol=1e-14)


# ------------------------------------------------------------ teacher options
def stream(data_seed):
    """The data stream of a scenario with this data seed, as docs/design.md §3.5 defines it."""
    return np.random.default_rng(np.random.SeedSequence([data_seed, 0]))


def gram_schmidt(G):
    """Classical Gram-Schmidt on the rows of G."""
    Q = []
    for g in G:
        v = g - sum((q @ g) * q for q in Q)
        Q.append(v / np.linalg.norm(v))
    return np.array(Q)


def teacher_spec(dim=5, **teacher):
    return spec("teacher_student", dim=dim, teacher={"width": 4, **teacher})


def test_default_teacher_draws_what_it_always_drew():
    """Normalised Gaussian rows, then the training inputs, from the one stream; a*_j = 1/k."""
    ds = make_dataset(teacher_spec(), stream(3))
    reference = stream(3)
    G = reference.standard_normal((4, 5))
    np.testing.assert_array_equal(ds.teacher.W, G / np.linalg.norm(G, axis=1, keepdims=True))
    np.testing.assert_array_equal(ds.teacher.a, np.full(4, 0.25))
    np.testing.assert_array_equal(ds.X_train, reference.standard_normal((40, 5)))


def test_alternating_output_weights():
    ds = make_dataset(teacher_spec(width=5, a="alternating"), rng())
    np.testing.assert_array_equal(ds.teacher.a, [1.0, -1.0, 1.0, -1.0, 1.0])


def test_random_signs_are_plus_minus_one_drawn_after_W():
    k, d = 64, 3
    ds = make_dataset(spec("teacher_student", dim=d, teacher={"width": k, "a": "random_sign"}), stream(5))
    reference = stream(5)
    G = reference.standard_normal((k, d))
    signs = np.where(reference.integers(0, 2, size=k) == 1, 1.0, -1.0)
    np.testing.assert_array_equal(ds.teacher.a, signs)
    assert set(np.unique(ds.teacher.a)) == {-1.0, 1.0}
    np.testing.assert_array_equal(ds.teacher.W, G / np.linalg.norm(G, axis=1, keepdims=True))
    np.testing.assert_array_equal(ds.X_train, reference.standard_normal((40, d)))  # then the data
    other = make_dataset(spec("teacher_student", dim=d, teacher={"width": k, "a": "random_sign"}), stream(6))
    assert not np.array_equal(other.teacher.a, ds.teacher.a)


@pytest.mark.parametrize("norm", [None, 2.5])
def test_orthonormal_rows_are_gram_schmidt_of_the_random_rows(norm):
    k, d = 3, 5
    ds = make_dataset(teacher_spec(dim=d, width=k, W="orthonormal", norm=norm), stream(2))
    length = 1.0 if norm is None else norm
    W = ds.teacher.W
    np.testing.assert_allclose(W @ W.T, length**2 * np.eye(k), atol=1e-13)
    reference = stream(2)
    np.testing.assert_allclose(W, length * gram_schmidt(reference.standard_normal((k, d))), atol=1e-13)
    # k d normals, as the random rows take: the training set is the default one
    np.testing.assert_array_equal(ds.X_train, reference.standard_normal((40, d)))
    np.testing.assert_array_equal(ds.teacher.a, np.full(k, 1 / k))


def test_orthonormal_rows_fill_the_space_when_width_is_dim():
    ds = make_dataset(teacher_spec(dim=4, width=4, W="orthonormal"), rng())
    np.testing.assert_allclose(ds.teacher.W.T @ ds.teacher.W, np.eye(4), atol=1e-13)


def test_norm_scales_the_random_rows():
    unit = make_dataset(teacher_spec(), rng()).teacher.W
    scaled = make_dataset(teacher_spec(norm=0.3), rng()).teacher.W
    np.testing.assert_allclose(scaled, 0.3 * unit, rtol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(scaled, axis=1), 0.3, rtol=1e-14)


ROWS = [[3.0, 0.0, 4.0], [0.0, -2.0, 0.0]]


def test_explicit_weights_are_used_as_given():
    ds = make_dataset(spec("teacher_student", teacher={"width": 2, "a": [0.7, -1.2], "W": ROWS}), rng())
    np.testing.assert_array_equal(ds.teacher.a, [0.7, -1.2])
    np.testing.assert_array_equal(ds.teacher.W, ROWS)
    # nothing drawn for the teacher: the training inputs are the stream's first draws
    np.testing.assert_array_equal(ds.X_train, rng().standard_normal((40, 3)))


def test_norm_scales_explicit_rows_keeping_their_directions():
    ds = make_dataset(spec("teacher_student", teacher={"width": 2, "W": ROWS, "norm": 2.0}), rng())
    np.testing.assert_allclose(ds.teacher.W, [[1.2, 0.0, 1.6], [0.0, -2.0, 0.0]], rtol=1e-15)


@pytest.mark.parametrize("teacher", [
    {"width": 2, "a": [0.7, -1.2], "W": ROWS, "activation": "tanh"},
    {"width": 3, "a": "alternating", "W": "orthonormal", "norm": 2.0},
    {"width": 5, "a": "random_sign", "norm": 0.5, "activation": "erf"},
], ids=["explicit", "alternating-orthonormal", "random_sign"])
def test_labels_are_the_teachers_outputs(teacher):
    ds = make_dataset(spec("teacher_student", teacher=teacher, inputs="unit_sphere", noise=0.0), rng())
    t, sigma = ds.teacher, NUMPY_ACTIVATIONS[ds.teacher.activation]
    for X, y in ((ds.X_train, ds.y_train), (ds.X_test, ds.y_test)):
        np.testing.assert_allclose(y, sigma(X @ t.W.T) @ t.a, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("teacher, words", [
    ({"a": [1.0, 2.0]}, "data.teacher.a: 2 numbers for a teacher of width 3"),
    ({"a": "equals"}, "unknown rule 'equals'; expected one of equal, alternating, random_sign"),
    ({"a": [1.0, "x", 2.0]}, "data.teacher.a: expected one of equal, alternating, random_sign, or a list"),
    ({"W": "identity"}, "unknown rule 'identity'; expected one of random, orthonormal"),
    ({"W": [1.0, 2.0, 3.0]}, "data.teacher.W: expected one of random, orthonormal, or a list of width rows"),
    ({"W": [[1.0, 0.0], [0.0, 1.0]]}, "data.teacher.W: 2 rows for a teacher of width 3"),
    ({"W": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0, 1.0]]}, "data.teacher.W: rows of 2 and 3 numbers, and data.dim is 2"),
    ({"W": [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]}, "data.teacher.W: row 1 is all zeros"),
    ({"W": "orthonormal"}, "data.teacher.W: orthonormal needs width <= dim: 3 orthonormal rows do not fit in dimension 2"),
    ({"norm": 0.0}, "data.teacher.norm: must be > 0"),
])
def test_bad_teacher_values_are_refused_naming_the_key(teacher, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        load_scenario({"name": "t", "data": {"dim": 2, "teacher": {"width": 3, **teacher}}, "runs": {"r": "mean_field"}})


# ------------------------------------------------- data seed, teacher in a simulation
SMALL = {"name": "d", "seed": 3, "data": {"dim": 3, "n_train": 20, "n_test": 10, "teacher": {"width": 2}},
         "model": {"width": 8}, "runs": {"rich": "mean_field"},
         "train": {"t_end": 0.1, "integrator": {"method": "euler", "dt": 0.1}},
         "record": {"every": 0.1, "dtype": "float64"}}


def simulated(changes=None, base=SMALL):
    """(data, initial particles a and W) of the small scenario with ``changes`` made."""
    import meanfield as mf

    with mf.simulate(mf.load_scenario(base, changes or {})) as trajectory:
        first = trajectory["rich"].frame(0)
        return trajectory.data, first.a, first.W


def same_data(one, other):
    return all(np.array_equal(getattr(one, key), getattr(other, key))
               for key in ("X_train", "y_train", "X_test", "y_test")) and \
        np.array_equal(one.teacher.a, other.teacher.a) and np.array_equal(one.teacher.W, other.teacher.W)


def test_data_seed_fixes_the_data_while_seed_varies_the_particles():
    default, a0, W0 = simulated()
    reference = make_dataset(DataSpec(**SMALL["data"]), stream(3))  # SeedSequence([seed, 0])
    assert same_data(default, reference)
    same, a, W = simulated({"data.seed": 3})  # data.seed == seed: the data of today, exactly
    assert same_data(same, default) and np.array_equal(a, a0) and np.array_equal(W, W0)
    kept, a, W = simulated({"seed": 4, "data.seed": 3})  # another seed: other particles, same data
    assert same_data(kept, default)
    assert not np.array_equal(a, a0) and not np.array_equal(W, W0)
    moved, a, W = simulated({"data.seed": 9})  # another data seed: other data, same particles
    assert same_data(moved, make_dataset(DataSpec(**SMALL["data"]), stream(9)))
    assert not np.array_equal(moved.X_train, default.X_train) and not np.array_equal(moved.teacher.W, default.teacher.W)
    assert np.array_equal(a, a0) and np.array_equal(W, W0)


def test_random_signs_follow_the_data_seed_not_the_seed():
    width = {"data.teacher.width": 40, "data.teacher.a": "random_sign"}
    signs = {(seed, data_seed): simulated({**width, "seed": seed, "data.seed": data_seed})[0].teacher.a
             for seed, data_seed in ((0, 5), (1, 5), (0, 6))}
    np.testing.assert_array_equal(signs[0, 5], signs[1, 5])
    assert not np.array_equal(signs[0, 5], signs[0, 6])


def test_the_file_stores_the_teacher_the_labels_came_from(tmp_path):
    import meanfield as mf

    changes = {"data.inputs": "unit_sphere", "data.teacher": {"width": 3, "a": "alternating", "W": "orthonormal",
                                                              "norm": 2.0, "activation": "tanh"}}
    mf.simulate(mf.load_scenario(SMALL, changes), tmp_path / "t.h5").close()
    with mf.open(tmp_path / "t.h5") as trajectory:
        data, t = trajectory.data, trajectory.teacher
    np.testing.assert_array_equal(t.a, [1.0, -1.0, 1.0])
    np.testing.assert_allclose(t.W @ t.W.T, 4.0 * np.eye(3), atol=1e-13)
    assert t.activation == "tanh"
    for X, y in ((data.X_train, data.y_train), (data.X_test, data.y_test)):
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(y, np.tanh(X @ t.W.T) @ t.a, rtol=1e-12, atol=1e-13)


def test_population_risk_uses_the_scenarios_teacher():
    """The risk at t = 0 of a population run with an explicit, rescaled teacher against a
    Monte Carlo estimate of (c/2) E[(f - f*)^2] with that teacher, written here."""
    from reference_population import mc_risk

    import meanfield as mf
    from meanfield.model.parameterization import resolve

    rows, norm, a_star = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]]), 1.5, np.array([1.5, -0.5])
    scenario = mf.load_scenario(SMALL, {"data.population": True, "data.teacher": {
        "width": 2, "a": a_star.tolist(), "W": rows.tolist(), "norm": norm}})
    with mf.simulate(scenario) as trajectory:
        t, first = trajectory.teacher, trajectory["rich"].frame(0)
        risk0 = trajectory["rich"].series("risk").value[0]
    W_star = norm * rows / np.linalg.norm(rows, axis=1, keepdims=True)
    np.testing.assert_array_equal(t.a, a_star)
    np.testing.assert_allclose(t.W, W_star, rtol=1e-15)
    r = resolve(scenario.runs["rich"].parameterization, scenario.model, 3)
    X = np.random.default_rng(11).standard_normal((400_000, 3))
    mean, se = mc_risk(first.a, first.W, a_star, W_star, X, r.s, "relu", "relu", r.loss_scale)
    assert abs(risk0 - mean) < 5 * se, (risk0, mean, se)
    default_teacher = mc_risk(first.a, first.W, np.full(2, 0.5), W_star / norm, X, r.s, "relu", "relu", r.loss_scale)[0]
    assert abs(risk0 - default_teacher) > 50 * se  # the test tells the teachers apart


def test_dry_run_names_the_data_seed_and_the_teacher_rules():
    import meanfield as mf

    plain = mf.plan(mf.load_scenario(SMALL)).describe()
    assert "data:" not in plain
    shown = mf.plan(mf.load_scenario(SMALL, {"data.seed": 7, "data.inputs": "unit_sphere", "data.teacher": {
        "width": 2, "a": "random_sign", "W": "orthonormal", "norm": 0.5}})).describe()
    assert ("data: seed 7 (the particles and the runs' noise: seed 3); inputs unit_sphere; "
            "teacher a random_sign, W orthonormal, norm 0.5") in shown
    given = mf.plan(mf.load_scenario(SMALL, {"data.teacher": {"width": 2, "a": [1, 2], "W": ROWS}})).describe()
    assert "data: teacher a given (2 numbers), W given (2 rows)" in given


# -------------------------------------------------------------- classification
@pytest.mark.parametrize("task", CLASSIFICATION)
def test_labels_are_plus_minus_one_and_both_classes_present(task):
    ds = make_dataset(spec(task, noise=0.1), rng())
    for y in (ds.y_train, ds.y_test):
        assert set(np.unique(y)) == {-1.0, 1.0}


@pytest.mark.parametrize("task", ["xor", "moons", "spirals"])
def test_pictures_have_balanced_classes(task):
    ds = make_dataset(spec(task, n_train=41), rng())
    assert sorted([np.sum(ds.y_train == 1), np.sum(ds.y_train == -1)]) == [20, 21]


def test_gaussian_mixture_class_second_moments():
    delta, n, d = 0.4, 20_000, 10
    ds = make_dataset(spec("gaussian_mixture", dim=d, delta=delta, n_train=n, n_test=1), rng())
    assert abs(np.mean(ds.y_train == 1) - 0.5) < 5 * 0.5 / math.sqrt(n)
    for label, scale in ((1.0, 1 + delta), (-1.0, 1 - delta)):
        x2 = ds.X_train[ds.y_train == label] ** 2
        se = x2.std() / math.sqrt(x2.size)
        assert abs(x2.mean() - scale**2) < 5 * se
        assert np.allclose(x2.mean(axis=0), scale**2, atol=10 * se * math.sqrt(d))


def test_xor_labels_are_sign_of_x1_x2_for_small_noise():
    ds = make_dataset(spec("xor", noise=0.1), rng())
    np.testing.assert_array_equal(ds.y_train, np.sign(ds.X_train[:, 0] * ds.X_train[:, 1]))


def test_noise_free_pictures_lie_on_their_curves():
    xor = make_dataset(spec("xor"), rng())
    assert set(map(tuple, xor.X_train)) == {(1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0)}
    moons = make_dataset(spec("moons"), rng())
    X = moons.X_train + [0.5, 0.25]
    outer = moons.y_train == 1
    np.testing.assert_allclose(np.linalg.norm(X[outer], axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(X[~outer] - [1.0, 0.5], axis=1), 1.0)
    assert np.all(X[outer, 1] >= 0) and np.all(X[~outer, 1] <= 0.5)


def test_moons_and_spirals_are_centred():
    n = 20_000
    for task in ("moons", "spirals"):
        X = make_dataset(spec(task, n_train=n, n_test=1), rng()).X_train
        assert np.all(np.abs(X.mean(axis=0)) < 5 * X.std(axis=0) / math.sqrt(n)), task


def _nearest_centre(points, k):
    """Index p + k q of the nearest centre of Chizat & Bach's grid, from its formula written out."""
    delta = 1 / (3 * k - 1)
    centres = [(delta * (1 + 3 * p) - 0.5, delta * (1 + 3 * q) - 0.5) for q in range(k) for p in range(k)]
    return np.argmin(((points[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1), np.array(centres)


@pytest.mark.parametrize("k, d", [(3, 3), (4, 7)])
def test_clusters_are_chizat_and_bachs_distribution(k, d):
    """x = (1, centre + R (cos T, sin T), d - 3 spurious U(-1/2, 1/2)); R = Delta U(0, 1); every
    point of one cluster has that cluster's label, floor(k^2/2) clusters are -1."""
    n, delta = 6000, 1 / (3 * k - 1)
    ds = make_dataset(spec("clusters", dim=d, clusters_per_side=k, n_train=n, n_test=500), rng())
    assert ds.X_train.shape == (n, d) and ds.X_test.shape == (500, d) and ds.teacher is None
    assert np.all(ds.X_train[:, 0] == 1) and set(np.unique(ds.y_train)) == {-1.0, 1.0}
    which, centres = _nearest_centre(ds.X_train[:, 1:3], k)
    radius = np.linalg.norm(ds.X_train[:, 1:3] - centres[which], axis=1)
    assert radius.max() <= delta and abs(radius.mean() / delta - 0.5) < 5 * math.sqrt(1 / 12 / n)
    labels = {}
    for X, y in ((ds.X_train, ds.y_train), (ds.X_test, ds.y_test)):
        for cluster, label in zip(_nearest_centre(X[:, 1:3], k)[0], y):
            assert labels.setdefault(cluster, label) == label
    assert len(labels) == k * k and sum(label < 0 for label in labels.values()) == (k * k) // 2
    counts = np.bincount(which, minlength=k * k)
    assert np.all(np.abs(counts - n / k**2) < 5 * math.sqrt(n / k**2))
    spurious = ds.X_train[:, 3:]
    assert spurious.shape == (n, d - 3) and np.all(np.abs(spurious) <= 0.5)
    if d > 3:
        assert np.all(np.abs(spurious.var(axis=0) - 1 / 12) < 5 * math.sqrt(1 / 180 / n))


def test_clusters_are_determined_by_the_seed_and_refuse_a_small_dim():
    one, again = (make_dataset(spec("clusters", dim=5), rng(3)) for _ in range(2))
    other = make_dataset(spec("clusters", dim=5), rng(4))
    np.testing.assert_array_equal(one.X_train, again.X_train)
    np.testing.assert_array_equal(one.y_test, again.y_test)
    assert not np.array_equal(one.X_train, other.X_train)
    noisy = make_dataset(spec("clusters", dim=5, noise=0.3), rng(3))
    np.testing.assert_array_equal(noisy.y_train, one.y_train)
    moved = noisy.X_train - one.X_train
    assert np.all(moved[:, [0, 3, 4]] == 0) and np.any(moved[:, 1:3] != 0)  # input noise in the plane only
    with pytest.raises(ValidationError, match="data.dim is at least 3"):
        spec("clusters", dim=2)
    with pytest.raises(ValidationError, match="clusters_per_side is a key of task clusters"):
        spec("xor", clusters_per_side=4)


def test_stripe_labels_are_one_interval_of_x1_from_the_same_draws():
    """Labels against NumPy from the same stream: X the first n d normals, y = +1 exactly where
    -0.3 < x_1 < 1.18549 (Paccolat et al.'s code); the test set drawn after the training set."""
    n, n_test, d = 500, 300, 3
    ds = make_dataset(spec("stripe", dim=d, n_train=n, n_test=n_test), rng(5))
    stream = rng(5)
    X = stream.standard_normal((n, d))
    stream.standard_normal((n, d))  # the training set's input noise (0 here), drawn anyway
    X_test = stream.standard_normal((n_test, d))
    np.testing.assert_array_equal(ds.X_train, X)
    np.testing.assert_array_equal(ds.X_test, X_test)
    for inputs, labels in ((X, ds.y_train), (X_test, ds.y_test)):
        inside = (inputs[:, 0] > -0.3) & (inputs[:, 0] < 1.18549)
        np.testing.assert_array_equal(labels, np.where(inside, 1.0, -1.0))
    assert ds.teacher is None


def test_stripe_classes_are_balanced_and_the_interval_is_a_key():
    """P(y = +1) = Phi(1.18549) - Phi(-0.3) = 0.5000 (to 1e-5, by erf), and the sample agrees
    within 5 standard errors; another interval moves the labels and only them."""
    phi = lambda z: 0.5 * (1 + erf(z / math.sqrt(2)))  # noqa: E731
    assert abs(phi(1.18549) - phi(-0.3) - 0.5) < 1e-5
    n = 40000
    ds = make_dataset(spec("stripe", dim=2, n_train=n, n_test=10), rng(1))
    assert abs(np.mean(ds.y_train > 0) - 0.5) < 5 * math.sqrt(0.25 / n)
    other = make_dataset(spec("stripe", dim=2, n_train=n, n_test=10, stripe=(0.0, 10.0)), rng(1))
    np.testing.assert_array_equal(other.X_train, ds.X_train)
    np.testing.assert_array_equal(other.y_train, np.where(ds.X_train[:, 0] > 0, 1.0, -1.0))


def test_stripe_is_determined_by_the_seed_and_checks_its_interval():
    one, again = (make_dataset(spec("stripe", dim=4), rng(3)) for _ in range(2))
    other = make_dataset(spec("stripe", dim=4), rng(4))
    np.testing.assert_array_equal(one.X_train, again.X_train)
    np.testing.assert_array_equal(one.y_test, again.y_test)
    assert not np.array_equal(one.X_train, other.X_train)
    noisy = make_dataset(spec("stripe", dim=4, noise=0.3), rng(3))
    np.testing.assert_array_equal(noisy.y_train, one.y_train)  # labels from the clean inputs
    assert not np.array_equal(noisy.X_train, one.X_train)
    with pytest.raises(ValidationError, match="low < high"):
        spec("stripe", stripe=(1.0, -1.0))
    with pytest.raises(ValidationError, match="stripe is a key of task stripe"):
        spec("xor", stripe=(0.0, 1.0))


# -------------------------------------------------------------------- power_law
def _intended(max_degree, decay, even):
    """E_k = k^-(1 + decay) on the kept degrees, summing to 1, written out here."""
    k = np.arange(max_degree + 1)
    kept = (k >= 1) & ((k % 2 == 0) if even else True)
    e = np.where(kept, np.maximum(k, 1.0) ** -(1.0 + decay), 0.0)
    return e / e.sum()


def test_power_law_energies_on_the_circle_by_fft():
    """d = 2: the target on 4096 equispaced angles, by the FFT a cosine series in theta - theta_u
    whose degree-k energy is |c_k|^2 / 2 (k >= 1): k^-(1 + decay) / Z on the even degrees, to 1e-12."""
    from meanfield.model.data import power_law_target

    n, u = 4096, np.array([math.cos(0.7), math.sin(0.7)])
    theta = 0.7 + 2 * np.pi * np.arange(n) / n
    X = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    s = spec("power_law", dim=2, power_law={"decay": 0.6, "max_degree": 40})
    coefficients = np.fft.rfft(power_law_target(s, u, X)) / n
    energies = 2 * np.abs(coefficients[:41]) ** 2
    energies[0] /= 2  # the mean, squared
    np.testing.assert_allclose(energies, _intended(40, 0.6, even=True), atol=1e-12)
    assert np.max(np.abs(coefficients[41:])) < 1e-12


def test_power_law_energies_on_the_sphere_by_legendre_quadrature():
    """d = 3: the target as a function of t = u . x, projected on the Legendre polynomials by
    numpy's Gauss-Legendre rule (t uniform on [-1, 1]): a_k = (2k + 1)/2 int f P_k dt, energy
    a_k^2 / (2k + 1); every degree 1..12 kept."""
    from numpy.polynomial import legendre

    from meanfield.model.data import power_law_target

    nodes, weights = legendre.leggauss(64)
    u = np.array([0.0, 0.6, 0.8])
    other = np.array([1.0, 0.0, 0.0])  # orthogonal to u: x = t u + sqrt(1 - t^2) other
    X = nodes[:, None] * u + np.sqrt(1 - nodes**2)[:, None] * other
    s = spec("power_law", dim=3, power_law={"decay": 1.5, "max_degree": 12, "degrees": "all"})
    f = power_law_target(s, u, X)
    energies = []
    for k in range(13):
        P = legendre.legval(nodes, np.eye(13)[k])
        a = (2 * k + 1) / 2 * np.sum(weights * f * P)
        energies.append(a**2 / (2 * k + 1))
    np.testing.assert_allclose(energies, _intended(12, 1.5, even=False), atol=1e-12)


def test_power_law_samples_have_unit_energy_on_the_unit_sphere():
    """|x| = 1, and the sample mean of y^2 is 1 (sum E_k) within 5 standard errors, noise adding noise^2."""
    n = 20000
    ds = make_dataset(spec("power_law", dim=4, n_train=n, n_test=10, power_law={"max_degree": 8}), rng(2))
    np.testing.assert_allclose(np.linalg.norm(ds.X_train, axis=1), 1.0, atol=1e-12)
    y2 = ds.y_train**2
    assert abs(y2.mean() - 1.0) < 5 * y2.std() / math.sqrt(n)
    noisy = make_dataset(spec("power_law", dim=4, n_train=n, n_test=10, noise=0.5, power_law={"max_degree": 8}),
                         rng(2))
    np.testing.assert_array_equal(noisy.X_train, ds.X_train)
    assert abs(np.mean((noisy.y_train - ds.y_train) ** 2) - 0.25) < 0.02


def test_power_law_keys_are_checked():
    assert spec("power_law").inputs == "unit_sphere"
    with pytest.raises(ValidationError, match="power_law' is a function on the unit sphere"):
        spec("power_law", inputs="gaussian")
    with pytest.raises(ValidationError, match="keeps no degree"):
        spec("power_law", power_law={"max_degree": 1})
    with pytest.raises(ValidationError, match="power_law is a key of task power_law"):
        spec("stripe", power_law={"decay": 2.0})
    with pytest.raises(ValidationError, match="decay"):
        spec("power_law", power_law={"decay": 0.0})


# ------------------------------------------------------------------------ files
def file_spec(path, dim=3, test_fraction=0.25):
    return DataSpec(task="file", path=str(path), dim=dim, test_fraction=test_fraction)


def check_round_trip(ds: Dataset, X, y):
    assert (ds.n_train, ds.n_test) == (15, 5)  # round(0.25 * 20)
    assert ds.dim == 3 and ds.teacher is None
    X_all = np.concatenate([ds.X_train, ds.X_test])
    y_all = np.concatenate([ds.y_train, ds.y_test])
    assert sorted(y_all) == list(y)  # every sample once
    np.testing.assert_array_equal(X_all, X[y_all.astype(int)])  # rows keep their labels
    assert not np.array_equal(y_all, y)  # shuffled
    assert ds.X_train.dtype == np.float64


def test_npz_round_trip(npz_file):
    with np.load(npz_file) as f:
        X, y = f["X"], f["y"]
    ds = make_dataset(file_spec(npz_file), rng())
    check_round_trip(ds, X, y)
    again = make_dataset(file_spec(npz_file), rng())
    np.testing.assert_array_equal(again.y_test, ds.y_test)


@pytest.mark.parametrize("suffix", [".h5", ".hdf5"])
def test_h5_round_trip(tmp_path, suffix):
    X = np.arange(60, dtype=np.float32).reshape(20, 3)  # other dtypes become float64
    y = np.arange(20)
    path = write_h5(tmp_path / f"data{suffix}", X=X, y=y)
    check_round_trip(make_dataset(file_spec(path), rng()), X, y)


@pytest.mark.parametrize("key, value", [("n_train", 3), ("n_test", 999), ("noise", 0.1)])
def test_file_refuses_the_keys_it_would_ignore(npz_file, key, value):
    with pytest.raises(ValidationError, match=f"{key}: task 'file' takes its samples from data.path"):
        DataSpec(task="file", path=str(npz_file), dim=3, **{key: value})
    default = DataSpec.model_fields[key].default  # a resolved scenario lists it: accepted
    assert make_dataset(DataSpec(task="file", path=str(npz_file), dim=3, **{key: default}), rng()).n_train == 15


def bad_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


BAD_FILES = pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "absent.npz", "no such file"),
        (lambda p: p / "absent.h5", "no such file"),
        (lambda p: (p / "data.csv").write_text("1,2") and p / "data.csv", r"the header \(line 1\) holds numbers"),
        (lambda p: (p / "data").write_text("1,2") and p / "data", "unknown file type"),
        (lambda p: (p / "junk.npz").write_text("hello") and p / "junk.npz", "not a readable .npz"),
        (lambda p: (p / "junk.h5").write_text("hello") and p / "junk.h5", "not a readable HDF5"),
        (lambda p: (p / "t.npz").write_bytes(b"PK\x03\x04trunc") and p / "t.npz", "not a readable .npz"),
        (lambda p: (p / "p.npz").write_bytes(pickle.dumps({"X": 1})) and p / "p.npz", "not a readable .npz"),
        (lambda p: bad_npz(p, X=np.ones((4, 3))), "missing y"),
        (lambda p: bad_npz(p, inputs=np.ones((4, 3))), "missing X and y"),
        (lambda p: write_h5(p / "k.h5", X=np.ones((4, 3))), "missing y"),
        (lambda p: bad_npz(p, X=np.array([None] * 4, dtype=object), y=np.ones(4)), "pickled"),
        (lambda p: bad_npz(p, X=np.ones(4), y=np.ones(4)), "X has shape .4,.; expected 2-D"),
        (lambda p: bad_npz(p, X=np.ones((4, 3)), y=np.ones((4, 1))), "y has shape .4, 1.; expected 1-D"),
        (lambda p: bad_npz(p, X=np.ones((4, 3)), y=np.ones(5)), "X has 4 samples but y has 5"),
        (lambda p: bad_npz(p, X=np.full((4, 3), np.nan), y=np.ones(4)), "X has 12 non-finite"),
        (lambda p: bad_npz(p, X=np.ones((4, 3)), y=[1, np.inf, 1, 1]), "y has 1 non-finite"),
        (lambda p: bad_npz(p, X=np.ones((4, 2)), y=np.ones(4)), "set data.dim: 2"),
        (lambda p: bad_npz(p, X=np.array([["a"] * 3] * 4), y=np.ones(4)), "expected real numbers"),
        (lambda p: bad_npz(p, X=np.ones((2, 3)), y=np.ones(2)), "both need at least one"),
    ],
    ids=[
        "missing-npz", "missing-h5", "csv", "no-suffix", "junk-npz", "junk-h5", "truncated-zip",
        "whole-pickle", "no-y",
        "no-keys", "h5-no-y", "pickled", "X-1d", "y-2d", "length", "X-nan", "y-inf",
        "dim", "strings", "too-few",
    ],
)


@BAD_FILES
def test_bad_files_are_usage_errors(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(UsageError, match=match) as info:
        make_dataset(file_spec(path), rng())
    assert str(path) in str(info.value)


@BAD_FILES
def test_check_source_refuses_every_bad_file_but_non_finite_inputs(tmp_path, make, match):
    """The same refusals before a run, without building the data: only X's values are not
    read (a NaN in X is found when the data are built)."""
    path = make(tmp_path)
    if match == "X has 12 non-finite":
        assert check_source(file_spec(path)) == (3, 1)
        return
    with pytest.raises(UsageError, match=match) as info:
        check_source(file_spec(path))
    assert str(path) in str(info.value)


def test_check_source_gives_the_sizes_without_loading_the_inputs(npz_file, tmp_path, monkeypatch):
    read = []
    original = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: read.append(key) or original(self, key))
    assert check_source(file_spec(npz_file)) == (15, 5)  # n_train, n_test of make_dataset
    assert read == ["y"]
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, X=np.ones((8, 3), np.float32), y=np.ones(8))
    assert check_source(file_spec(compressed, test_fraction=0.5)) == (4, 4)
    h5 = write_h5(tmp_path / "d.h5", X=np.ones((10, 3)), y=-np.ones(10))
    assert check_source(file_spec(h5), loss="logistic") == (8, 2)


def test_check_source_of_a_drawn_task_is_its_sizes():
    assert check_source(spec("xor", n_train=7, n_test=9)) == (7, 9)
    assert check_source(spec("gaussian_mixture"), loss="logistic") == (40, 30)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_check_source_refuses_labels_other_than_pm1_for_logistic_loss(tmp_path, suffix):
    y = np.array([1.0, -1.0, 0.0, 2.0, 1.0, -1.0, 3.0, 4.0])
    path = tmp_path / f"d{suffix}"
    if suffix == ".npz":
        np.savez(path, X=np.ones((8, 3)), y=y)
    else:
        write_h5(path, X=np.ones((8, 3)), y=y)
    assert check_source(file_spec(path)) == (6, 2)  # squared loss takes any label
    with pytest.raises(UsageError, match=r"loss 'logistic' needs labels y = \+1 or -1; y also holds 0, 2, 3, ...: "
                                         "relabel the file or use loss: squared") as info:
        check_source(file_spec(path), loss="logistic")
    assert str(path) in str(info.value)
    np.savez(tmp_path / "pm.npz", X=np.ones((8, 3)), y=np.sign(y - 0.5).astype(np.int8))
    assert check_source(file_spec(tmp_path / "pm.npz"), loss="logistic") == (6, 2)


def test_a_member_that_is_not_an_npy_is_refused_alike(tmp_path):
    import zipfile

    path = tmp_path / "z.npz"
    np.savez(path, y=np.ones(4))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("X.npy", b"not an array")
    for check in (lambda: make_dataset(file_spec(path), rng()), lambda: check_source(file_spec(path))):
        with pytest.raises(UsageError, match=r"X has dtype \|S12; expected real numbers"):
            check()


def test_npy_saved_as_npz_is_refused(tmp_path):
    path = tmp_path / "data.npz"
    with open(path, "wb") as f:
        np.save(f, np.ones((4, 3)))
    with pytest.raises(UsageError, match="not an .npz archive"):
        make_dataset(file_spec(path), rng())


def test_h5_group_instead_of_dataset_is_refused(tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_group("X")
        f["y"] = np.ones(4)
    with pytest.raises(UsageError, match="'X' is a group"):
        make_dataset(file_spec(path), rng())


# ------------------------------------------------------------------ the file task's splits
def split_spec(path, **keys):
    return DataSpec(task="file", path=str(path), dim=3, **keys)


@pytest.mark.parametrize("fraction", [0.25, 0.0])
def test_a_random_split_is_the_permutation_of_the_data_stream(npz_file, fraction):
    """The test set is the head of rng.permutation(n), the training set its tail, what the
    split always was (test_fraction 0: the whole permutation trains, nothing is held out)."""
    with np.load(npz_file) as f:
        X, y = f["X"], f["y"]
    order = rng(7).permutation(len(y))
    k = round(fraction * len(y))
    ds = make_dataset(split_spec(npz_file, test_fraction=fraction), rng(7))
    np.testing.assert_array_equal(ds.X_train, X[order[k:]])
    np.testing.assert_array_equal(ds.y_train, y[order[k:]])
    np.testing.assert_array_equal(ds.X_test, X[order[:k]])
    assert ds.X_test.shape == (k, 3) and ds.y_test.shape == (k,) and ds.n_test == k
    assert check_source(split_spec(npz_file, test_fraction=fraction)) == (len(y) - k, k)


def test_test_indices_are_the_test_set_and_the_rest_trains_in_file_order(npz_file):
    with np.load(npz_file) as f:
        X, y = f["X"], f["y"]
    indices = [17, 3, 0, 11]
    data_rng = rng(7)
    ds = make_dataset(split_spec(npz_file, test_indices=indices), data_rng)
    np.testing.assert_array_equal(ds.X_test, X[indices])
    np.testing.assert_array_equal(ds.y_test, y[indices])
    rest = [k for k in range(len(y)) if k not in indices]
    np.testing.assert_array_equal(ds.X_train, X[rest])
    np.testing.assert_array_equal(ds.y_train, y[rest])
    assert data_rng.random() == rng(7).random()  # nothing drawn
    assert check_source(split_spec(npz_file, test_indices=indices)) == (16, 4)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_test_path_is_the_test_set_and_every_sample_of_path_trains(npz_file, tmp_path, suffix):
    with np.load(npz_file) as f:
        X, y = f["X"], f["y"]
    X_other, y_other = -np.arange(21.0).reshape(7, 3), np.arange(7.0) + 100
    other = tmp_path / f"test{suffix}"
    if suffix == ".npz":
        np.savez(other, X=X_other, y=y_other)
    else:
        write_h5(other, X=X_other, y=y_other)
    ds = make_dataset(split_spec(npz_file, test_path=str(other)), rng())
    for got, expected in ((ds.X_train, X), (ds.y_train, y), (ds.X_test, X_other), (ds.y_test, y_other)):
        np.testing.assert_array_equal(got, expected)
    assert check_source(split_spec(npz_file, test_path=str(other))) == (20, 7)


@BAD_FILES
def test_a_bad_test_path_is_refused_like_a_bad_path_and_named(npz_file, tmp_path, make, match):
    """Every refusal of data.path, for data.test_path: the message names data.test_path and
    its file (non-finite inputs when the data are built, as for data.path)."""
    if match == "both need at least one":  # a split of data.path: not a test file's
        return
    path = make(tmp_path)
    bad = split_spec(npz_file, test_path=str(path))
    match = "the test set needs data.path's dim" if match == "set data.dim: 2" else match
    checks = [lambda: make_dataset(bad, rng())]
    if match != "X has 12 non-finite":
        checks.append(lambda: check_source(bad))
    for check in checks:
        with pytest.raises(UsageError, match=match) as info:
            check()
        assert str(info.value).startswith(f"data.test_path {path}: ")


def test_check_source_checks_the_labels_of_test_path_for_logistic_loss(tmp_path):
    np.savez(tmp_path / "train.npz", X=np.ones((6, 3)), y=np.ones(6))
    np.savez(tmp_path / "test.npz", X=np.ones((4, 3)), y=np.array([1.0, 0.0, -1.0, 1.0]))
    spec_ = split_spec(tmp_path / "train.npz", test_path=str(tmp_path / "test.npz"))
    assert check_source(spec_) == (6, 4)
    with pytest.raises(UsageError, match=f"data.test_path {tmp_path / 'test.npz'}: loss 'logistic' needs labels"):
        check_source(spec_, loss="logistic")


@pytest.mark.parametrize("keys, n, message", [
    ({"test_indices": [3, 25, 20]}, 20, "data.test_indices: 25, 20 out of range: data.path {path} holds 20 samples, "
                                        "indices 0 to 19"),
    ({"test_indices": list(range(20))}, 20, "data.test_indices: names every one of the 20 samples of data.path "
                                            "{path}: leave at least one to train on"),
    ({"test_fraction": 0.01}, 20, "data.path {path}: 20 samples and data.test_fraction 0.01 leave 0 test and 20 "
                                  "training samples; both need at least one (data.test_fraction: 0 for no test set)"),
    ({"test_fraction": 0.0}, 0, "data.path {path}: 0 samples and data.test_fraction 0 leave 0 test and 0 training"),
    ({"test_path": "<empty>"}, 20, "data.test_path {empty}: holds no samples (X [0, d]); it needs at least one"),
    ({"test_path": "<full>"}, 0, "data.path {path}: holds no samples (X [0, d]); it needs at least one"),
], ids=["indices-out-of-range", "indices-all", "fraction-rounds-to-0", "no-samples", "empty-test-path",
        "empty-path"])
def test_a_split_that_leaves_no_training_or_no_asked_for_test_set_is_refused(tmp_path, keys, n, message):
    path, empty, full = tmp_path / "d.npz", tmp_path / "empty.npz", tmp_path / "full.npz"
    np.savez(path, X=np.ones((n, 3)), y=np.ones(n))
    np.savez(empty, X=np.ones((0, 3)), y=np.ones(0))
    np.savez(full, X=np.ones((5, 3)), y=np.ones(5))
    keys = {key: str({"<empty>": empty, "<full>": full}.get(value, value)) if key == "test_path" else value
            for key, value in keys.items()}
    expected = message.format(path=path, empty=empty)
    for check in (lambda: check_source(split_spec(path, **keys)), lambda: make_dataset(split_spec(path, **keys), rng())):
        with pytest.raises(UsageError) as info:
            check()
        assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.parametrize("keys, message", [
    ({"test_path": "t.npz", "test_fraction": 0.5}, "data.test_fraction 0.5 and data.test_path conflict"),
    ({"test_path": "t.npz", "test_fraction": 0.0}, "data.test_fraction 0 and data.test_path conflict"),
    ({"test_indices": [1], "test_fraction": 0.0}, "data.test_fraction 0 and data.test_indices conflict"),
    ({"test_indices": [1], "test_path": "t.npz"}, "data.test_path and data.test_indices both choose the test set"),
    ({"test_indices": [4, 1, 4, 2, 1]}, "indices 1, 4 given more than once"),
    ({"test_indices": []}, "no index: give the indices of at least one sample (for no test set, "
                           "data.test_fraction: 0)"),
    ({"test_indices": [1, -2]}, "greater than or equal to 0"),
    ({"test_indices": [1, 2.0]}, "valid integer"),
    ({"test_indices": [True]}, "valid integer"),
    ({"test_indices": ["3"]}, "valid integer"),
    ({"test_fraction": 1.0}, "less than 1"),
    ({"test_fraction": -0.1}, "greater than or equal to 0"),
], ids=["path-fraction", "path-fraction-0", "indices-fraction", "indices-path", "repeated", "empty", "negative",
        "float", "bool", "string", "fraction-1", "fraction-negative"])
def test_the_schema_refuses_a_test_set_chosen_twice_or_badly(keys, message):
    with pytest.raises(ValidationError) as info:
        DataSpec(task="file", path="d.npz", dim=3, **keys)
    assert message in str(info.value)


@pytest.mark.parametrize("key, value", [("test_path", "t.npz"), ("test_indices", [0])])
def test_the_split_keys_belong_to_the_file_task(key, value):
    with pytest.raises(ValidationError, match=f"data.{key} is a key of task file, not of 'xor'"):
        DataSpec(task="xor", **{key: value})


def test_has_test_set():
    assert DataSpec().has_test_set and not DataSpec(population=True).has_test_set
    assert not DataSpec(task="file", path="d.npz", test_fraction=0).has_test_set
    assert DataSpec(task="file", path="d.npz", test_path="t.npz").has_test_set
    assert DataSpec(task="file", path="d.npz", test_indices=[0]).has_test_set

