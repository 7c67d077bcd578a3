"""Real data shipped with a package (docs/design.md §5.3): data.task digits and mnist1d.

Every array is checked against a plain NumPy recomputation from the package's own data
(load_digits, mnist1d's generator): the split, the standardisation and PCA fitted on the
training set, the projection on the sphere and the label maps."""

import sys

import numpy as np
import pytest

import meanfield as mf
from meanfield.engine.runs import data_rng
from meanfield.model import real_data
from meanfield.model.data import check_source, make_dataset

pytest.importorskip("sklearn")


def digits_pool():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float64), bunch.target


def scenario(task="digits", t_end=0.5, **data):
    data = {"task": task, "dim": 5, "n_train": 60, "n_test": 40, **data}
    return mf.load_scenario({"name": "r", "data": data, "model": {"width": 16},
                             "runs": {"rich": "mean_field", "lazy": {"parameterization": {"preset": "lazy",
                                                                                            "alpha": 10}},
                                      "ntk": {"solver": "ntk", "kernel": "empirical"}},
                             "train": {"t_end": t_end, "integrator": {"method": "euler", "dt": 0.1}},
                             "record": {"every": t_end / 5}})


def dataset(**data):
    sc = scenario(**data)
    return make_dataset(sc.data, data_rng(sc))


def reference(X, c, sc):
    """The whole recipe in plain NumPy: a permutation of the kept samples from the data stream,
    train first and test last, standardise and PCA (by eigh of the covariance) on the training set."""
    spec = sc.data
    labels = spec.labels
    keep = np.flatnonzero(np.isin(c, labels["pair"])) if isinstance(labels, dict) and "pair" in labels \
        else np.arange(len(c))
    order = keep[data_rng(sc).permutation(len(keep))]
    train, test = order[:spec.n_train], order[len(order) - spec.n_test:]
    mean, std = X[train].mean(0), X[train].std(0)
    std[std == 0] = 1.0
    Ztr, Zte = (X[train] - mean) / std, (X[test] - mean) / std
    values, vectors = np.linalg.eigh(Ztr.T @ Ztr)
    top = vectors[:, np.argsort(values)[::-1][:spec.dim]]
    Utr, Ute = Ztr @ top, Zte @ top
    return train, test, Utr, Ute


def same_up_to_sign(A, B):
    """Columns equal up to each column's sign."""
    signs = np.sign(np.sum(A * B, axis=0))
    np.testing.assert_allclose(A, B * signs, atol=1e-9)


def test_the_class_counts_in_the_schema_are_the_data_sets():
    _, c = real_data.pool("digits")
    assert tuple(np.bincount(c)) == real_data.REAL_SOURCES["digits"].class_counts
    X, c_ref = digits_pool()
    assert np.array_equal(real_data.pool("digits")[0], X) and np.array_equal(c, c_ref)


@pytest.mark.parametrize("inputs", ["sphere", "unit_sphere", "gaussian"])
def test_digits_parity_against_numpy(inputs):
    sc = scenario(inputs=inputs) if inputs != "sphere" else scenario()
    assert sc.data.inputs == inputs and sc.data.labels == "parity"
    ds = make_dataset(sc.data, data_rng(sc))
    X, c = digits_pool()
    train, test, Utr, Ute = reference(X, c, sc)
    d = sc.data.dim
    if inputs == "gaussian":
        factor = np.sqrt(d / np.mean(np.sum(Utr**2, axis=1)))
        expected_train, expected_test = Utr * factor, Ute * factor
        assert np.mean(np.sum(ds.X_train**2, axis=1)) == pytest.approx(d)
    else:
        radius = np.sqrt(d) if inputs == "sphere" else 1.0
        expected_train = radius * Utr / np.linalg.norm(Utr, axis=1, keepdims=True)
        expected_test = radius * Ute / np.linalg.norm(Ute, axis=1, keepdims=True)
        np.testing.assert_allclose(np.linalg.norm(ds.X_test, axis=1), radius)
    same_up_to_sign(ds.X_train, expected_train)
    same_up_to_sign(ds.X_test, expected_test)
    assert ds.X_train.shape == (60, d) and ds.X_test.shape == (40, d)
    np.testing.assert_array_equal(ds.y_train, np.where(c[train] % 2 == 0, 1.0, -1.0))
    np.testing.assert_array_equal(ds.y_test, np.where(c[test] % 2 == 0, 1.0, -1.0))


def test_the_pca_signs_fix_the_largest_entry_positive():
    """The directions from the stored inputs: X_train = (scores) and the scores are Z V; the
    signs are the documented ones (largest-modulus entry of each v positive)."""
    Z = np.random.default_rng(0).standard_normal((30, 6))
    Z -= Z.mean(0)
    V = real_data.principal_directions(Z, 3)
    np.testing.assert_allclose(V.T @ V, np.eye(3), atol=1e-12)
    assert np.all(V[np.argmax(np.abs(V), axis=0), np.arange(3)] > 0)
    values, vectors = np.linalg.eigh(Z.T @ Z)
    same_up_to_sign(V, vectors[:, ::-1][:, :3])


@pytest.mark.parametrize("labels", [{"pair": [3, 8]}, {"one_vs_rest": 7}, "value"])
def test_the_label_maps(labels):
    sc = scenario(labels=labels)
    ds = make_dataset(sc.data, data_rng(sc))
    X, c = digits_pool()
    train, test, _, _ = reference(X, c, sc)
    if labels == "value":
        expected = (c[test] - c[train].mean()) / c[train].std()
        assert np.mean(ds.y_train) == pytest.approx(0, abs=1e-12) and np.std(ds.y_train) == pytest.approx(1)
    elif "pair" in labels:
        assert set(c[train]) | set(c[test]) == {3, 8}
        expected = np.where(c[test] == 3, 1.0, -1.0)
    else:
        assert len(set(c[train])) == 10
        expected = np.where(c[test] == 7, 1.0, -1.0)
    np.testing.assert_allclose(ds.y_test, expected)


def test_the_split_is_disjoint_and_fixed_by_the_data_seed():
    X, c = digits_pool()
    sc = scenario(n_train=1000, n_test=797)  # every sample
    train, test, _, _ = reference(X, c, sc)
    assert not set(train) & set(test) and len(set(train) | set(test)) == 1797
    a, b = dataset(seed=3), dataset(seed=3)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    other = dataset(seed=4)
    assert not np.array_equal(a.X_train, other.X_train)
    # n_test leaves the training set, n_train the test set (the first and last of one permutation)
    sc_a, sc_b = scenario(seed=3), scenario(seed=3, n_test=80)
    assert np.array_equal(reference(X, c, sc_a)[0], reference(X, c, sc_b)[0])
    assert np.array_equal(reference(X, c, scenario(seed=3, n_train=90))[1], reference(X, c, sc_a)[1])


def test_the_schema_refuses_what_the_data_cannot_give():
    cases = [({"labels": {"pair": [3, 3]}}, "names one digit twice"),
             ({"labels": "odd"}, "unknown label map 'odd'"),
             ({"labels": {"one_vs_rest": 12}}, "digits 0 to 9"),
             ({"labels": {"pair": [3, 8]}, "n_train": 300, "n_test": 100}, "has 357: lower them"),
             ({"dim": 70}, "dim at most 59"),
             ({"noise": 0.1}, "data.noise: task 'digits'")]
    for data, message in cases:
        with pytest.raises(mf.UsageError, match=message):
            scenario(**data)
    with pytest.raises(mf.UsageError, match="data.labels is a key of task digits or mnist1d"):
        mf.load_scenario({"name": "x", "data": {"task": "xor", "labels": "value"}, "runs": {"rich": "mean_field"}})
    with pytest.raises(mf.UsageError, match="data.labels value is a regression"):
        mf.load_scenario({"name": "x", "data": {"task": "digits", "labels": "value"}, "loss": "logistic",
                          "runs": {"rich": "mean_field"}})


@pytest.mark.parametrize("task, package", [("digits", "sklearn"), ("mnist1d", "mnist1d")])
def test_a_missing_extra_is_one_message_naming_it(monkeypatch, task, package):
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError, as if not installed
    monkeypatch.setattr(real_data, "pool", real_data.pool.__wrapped__)  # no cached data
    sc = scenario(task)
    for call in (lambda: check_source(sc.data), lambda: make_dataset(sc.data, data_rng(sc)),
                 lambda: mf.plan(sc)):
        with pytest.raises(mf.UsageError) as caught:
            call()
        assert str(caught.value).endswith('optional extra: pip install "meanfield[data]"')
        assert f"data.task {task} needs the package" in str(caught.value)


def test_a_digits_scenario_runs_end_to_end():
    traj = mf.simulate(scenario())
    for name in ("rich", "lazy", "ntk"):
        loss = traj[name].measure("loss_test").values
        assert loss.shape == (6,) and np.all(np.isfinite(loss)) and loss[-1] < loss[0]


def test_mnist1d_from_its_generator_and_a_scenario_on_it():
    pytest.importorskip("mnist1d")
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset as generate

    before = np.random.get_state()[1].copy()
    X, c = real_data.pool("mnist1d")
    assert np.array_equal(np.random.get_state()[1], before)  # the global random state put back
    made = generate(get_dataset_args())
    assert np.array_equal(X, np.concatenate([made["x"], made["x_test"]]))
    assert tuple(np.bincount(c)) == real_data.REAL_SOURCES["mnist1d"].class_counts and X.shape == (5000, 40)
    sc = scenario("mnist1d", labels={"pair": [0, 1]})
    ds = make_dataset(sc.data, data_rng(sc))
    train, test, Utr, Ute = reference(X, c, sc)
    same_up_to_sign(ds.X_train, np.sqrt(5) * Utr / np.linalg.norm(Utr, axis=1, keepdims=True))
    np.testing.assert_array_equal(ds.y_train, np.where(c[train] == 0, 1.0, -1.0))
    traj = mf.simulate(sc)
    assert np.all(np.isfinite(traj["rich"].measure("loss_test").values))
