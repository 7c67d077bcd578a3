"""Real data that ships with a package (docs/design.md §5.3): ``data.task: digits`` and ``mnist1d``.

Nothing is downloaded. ``digits`` is scikit-learn's bundled copy of the UCI 8 x 8 handwritten
digits (``sklearn.datasets.load_digits``: 1797 images of 64 pixels, values 0..16); ``mnist1d``
is Greydanus's MNIST-1D made on this machine by the ``mnist1d`` package's own generator,
``mnist1d.data.make_dataset`` with its default arguments (``get_dataset_args()``: 5000
signals of length 40, 500 per digit, its own seed 42), its training and test parts pooled in
that order (the package's download path, ``get_dataset``, is never called). Both packages are
the optional extra ``meanfield[data]``.

From the pool of samples (one class per sample, the digit c = 0..9) a scenario takes:

1. The samples its label map keeps (``data.labels``): ``parity`` and ``value`` every sample,
   ``{pair: [i, j]}`` those of digits i and j, ``{one_vs_rest: k}`` every sample.
2. A permutation pi of those N samples, drawn from the data stream (the only draw): the
   training set is pi[:n_train], the test set pi[N - n_test:] (disjoint: the schema asks
   n_train + n_test <= N). Changing n_test leaves the training set as it was, and changing
   n_train the test set.
3. Standardisation, fitted on the training set: z = (x - mu) / s per pixel (s = 1 where a
   pixel is constant on the training set).
4. PCA to d = ``data.dim`` components, fitted on the training set: the top d right singular
   vectors v_1..v_d of Z_train (its rows z; centred by step 3), each signed so that its
   entry of largest modulus is positive; the scores u = (z . v_1, ..., z . v_d).
5. The inputs (``data.inputs``, default ``sphere`` for these tasks): ``sphere`` x = sqrt(d)
   u / |u| (|x| = sqrt(d), as the synthetic sphere inputs), ``unit_sphere`` x = u / |u|, or
   ``gaussian`` x = u sqrt(d / mean_train |u|^2) (not projected: one factor for every sample,
   so that the training set has mean |x|^2 = d, as N(0, I_d) inputs have).
6. The labels: parity y = +1 for an even digit, -1 for an odd one; pair y = +1 for i, -1
   for j; one_vs_rest y = +1 for k, -1 for the others; value (a regression) y = (c - m) / r,
   the digit standardised by its mean m and standard deviation r on the training set.
"""

from __future__ import annotations

import functools
import importlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from ..config.sections import DataSpec
    from .data import Dataset

EXTRA = 'pip install "meanfield[data]"'
"""How to install the optional packages of the real-data tasks."""


@dataclass(frozen=True)
class RealSource:
    """A real data set: what it needs, its pool's size by class (checked against the data in
    tests/test_real_data.py), and the number of features of a sample."""

    package: str
    """The module it is read or made with (the extra ``meanfield[data]`` installs it)."""
    features: int
    class_counts: tuple[int, ...]
    """Samples of digit 0, 1, ..., 9 in the pool."""

    def available(self, labels) -> int:
        """N: how many samples the label map ``labels`` keeps."""
        if isinstance(labels, dict) and "pair" in labels:
            return sum(self.class_counts[c] for c in labels["pair"])
        return sum(self.class_counts)


REAL_SOURCES = {
    "digits": RealSource("sklearn", 64, (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)),
    "mnist1d": RealSource("mnist1d", 40, (500,) * 10),
}
"""data.task -> its source. Schema checks (sizes, dim) read these numbers, never the data."""


def require(task: str):
    """The package of ``task``'s data, imported; a UsageError naming the extra when it is missing."""
    package = REAL_SOURCES[task].package
    try:
        return importlib.import_module(package)
    except ImportError:
        names = {"sklearn": "scikit-learn", "mnist1d": "mnist1d"}
        raise UsageError(f"data.task {task} needs the package {names[package]}, an optional extra: "
                         f"{EXTRA}") from None


@functools.lru_cache(maxsize=None)
def pool(task: str) -> tuple[np.ndarray, np.ndarray]:
    """(X [n, features] float64, c [n] digit 0..9) of ``task``'s whole pool, read-only."""
    require(task)
    if task == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        X, c = bunch.data, bunch.target
    else:
        X, c = _make_mnist1d()
    X, c = np.array(X, dtype=np.float64), np.array(c, dtype=np.int64)
    X.flags.writeable = c.flags.writeable = False
    return X, c


def _make_mnist1d() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D from its package's generator with the default arguments (its train part, then its
    test part). The generator seeds NumPy's and Python's global random states: both are put back."""
    from mnist1d.data import get_dataset_args, make_dataset

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        made = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return np.concatenate([made["x"], made["x_test"]]), np.concatenate([made["y"], made["y_test"]])


def kept(labels, c: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the pool's samples that the label map keeps (step 1)."""
    if isinstance(labels, dict) and "pair" in labels:
        return np.flatnonzero(np.isin(c, labels["pair"]))
    return np.arange(c.shape[0])


def label(labels, c: np.ndarray, c_train: np.ndarray) -> np.ndarray:
    """y of digits ``c`` under the label map (step 6); ``value`` standardised by ``c_train``'s mean and std."""
    if labels == "parity":
        return np.where(c % 2 == 0, 1.0, -1.0)
    if labels == "value":
        return (c - c_train.mean()) / c_train.std()
    positive = labels["pair"][0] if "pair" in labels else labels["one_vs_rest"]
    return np.where(c == positive, 1.0, -1.0)


def principal_directions(Z_train: np.ndarray, d: int) -> np.ndarray:
    """[features, d]: the top d right singular vectors of the centred Z_train, each signed so that
    its entry of largest modulus is positive (step 4)."""
    _, _, Vt = np.linalg.svd(Z_train, full_matrices=False)
    V = Vt[:d].T
    largest = V[np.argmax(np.abs(V), axis=0), np.arange(d)]
    return V * np.where(largest < 0, -1.0, 1.0)


def project(U: np.ndarray, inputs: str, mean_square: float) -> np.ndarray:
    """Scores U [n, d] onto the inputs' sphere (step 5); ``mean_square`` = mean_train |u|^2."""
    d = U.shape[1]
    if inputs == "gaussian":
        return U * np.sqrt(d / mean_square)
    radius = np.sqrt(d) if inputs == "sphere" else 1.0
    return radius * U / np.linalg.norm(U, axis=1, keepdims=True)


def make_real(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """The training and test sets of ``spec.task`` (digits or mnist1d), steps 1 to 6 of the module docstring."""
    from .data import _frozen

    X, c = pool(spec.task)
    chosen = kept(spec.labels, c)
    order = chosen[rng.permutation(chosen.shape[0])]
    train, test = order[:spec.n_train], order[order.shape[0] - spec.n_test:]
    mu = X[train].mean(axis=0)
    s = X[train].std(axis=0)
    s = np.where(s > 0, s, 1.0)
    Z_train, Z_test = (X[train] - mu) / s, (X[test] - mu) / s
    V = principal_directions(Z_train, spec.dim)
    U_train, U_test = Z_train @ V, Z_test @ V
    mean_square = float(np.mean(np.sum(U_train**2, axis=1)))
    X_train, X_test = (project(U, spec.inputs, mean_square) for U in (U_train, U_test))
    y_train, y_test = (label(spec.labels, c[i], c[train]) for i in (train, test))
    return _frozen(X_train, y_train, X_test, y_test, None)


def describe_labels(labels) -> str:
    """The label map in words, for --dry-run."""
    if labels == "parity":
        return "parity (+1 even digit, -1 odd)"
    if labels == "value":
        return "value (the digit standardised on the training set: a regression)"
    if "pair" in labels:
        i, j = labels["pair"]
        return f"pair {i} (+1) against {j} (-1)"
    return f"one_vs_rest {labels['one_vs_rest']} (+1) against the others (-1)"
