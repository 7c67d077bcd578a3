"""The data of a scenario: one function per task, all drawing from the scenario's data stream.

``make_dataset(spec, rng)`` builds the training and test sets of ``spec.task`` (the ``data``
section of a scenario, :class:`meanfield.config.sections.DataSpec`). Everything random is drawn
from ``rng``, in this order: the teacher (if any; its W, then its a), then the training set, then the test set;
within a set, inputs (and labels) come before noise, and the noise is drawn even when
``noise`` is 0. So a given rng state always gives the same arrays, changing ``n_test`` or
``noise`` leaves the training inputs unchanged, and changing ``n_train`` leaves the teacher
unchanged. The test set is drawn from the same distribution as the training set (label
noise included). All arrays are float64 and shared by every run of a scenario: do not write into them.
A simulation passes the data stream :func:`meanfield.engine.runs.data_rng` (``data.seed``, else ``seed``).

``check_source(spec, loss)`` checks before a run, without building the data, what the schema
cannot (it never touches the disk): the ``file`` task's file, its shapes and, for a
classification loss (logistic, hinge), its labels. It returns the sizes (n_train, n_test) the data will have.

Tasks (d = ``dim``, sigma_eps = ``noise``):

``teacher_student``
    x ~ N(0, I_d) (``inputs: gaussian``), uniform on the sphere of radius sqrt(d)
    (``inputs: sphere``; E|x|^2 = d either way), or uniform on the unit sphere
    (``inputs: unit_sphere``, |x| = 1). Teacher of k = ``teacher.width`` neurons
    (:func:`make_teacher`; by default w*_j uniform on the unit sphere, a*_j = 1/k):
    y = sum_j a*_j sigma(w*_j . x) + sigma_eps * N(0, 1).
``single_index``
    x as above, u uniform on the unit sphere, k = ``degree``:
    y = He_k(u . x) / sqrt(k!) + sigma_eps * N(0, 1), He_k the probabilists' Hermite
    polynomial, so E y^2 = 1 (without noise) for Gaussian inputs. Teacher: a = [1], W = u.
``power_law``
    x uniform on the unit sphere S^(d-1) (``inputs: unit_sphere``, the only inputs it takes), u
    uniform on it: y = sum_k sqrt(E_k N(d, k)) P_k(u . x) + sigma_eps * N(0, 1), P_k the
    Legendre polynomial of dimension d (P_k(1) = 1; cos(k theta) on the circle), N(d, k) the
    harmonics of degree k, so degree k carries the energy E_k proportional to k^-(1 + decay)
    (``power_law.decay``) for k <= ``power_law.max_degree`` (even k >= 2 by default, or every
    k >= 1: ``power_law.degrees``), sum_k E_k = 1 (:func:`power_law_energies`). Against a kernel
    whose degree-k eigenvalue falls like k^-a its source exponent is decay / a. No teacher.
``gaussian_mixture`` (Mei, Montanari & Nguyen 2018)
    y = +1 or -1 with probability 1/2 each; x ~ N(0, (1 + y delta)^2 I_d), delta = ``delta``.
``xor``, ``moons``, ``spirals`` (d = 2)
    Pictures with labels +-1, classes balanced (n // 2 and n - n // 2 points).
    xor: four blobs centred at (+-1, +-1) (equally many points each), labelled by their
    centre, y = sign(c_1 c_2). moons: the two interleaving half circles of scikit-learn's
    make_moons (angles drawn uniformly), shifted so the pair is centred at 0; outer moon
    y = +1. spirals: two arms r = R_SPIRAL t, angle 2 pi TURNS t (+ pi for the second arm),
    t = sqrt(U(0, 1)) so points are spread evenly over the disc the arms cover
    (E|x|^2 = 2, as for Gaussian inputs); first arm y = +1.
``clusters`` (Chizat & Bach 2020, their code's distribution)
    k = ``clusters_per_side``, Delta = 1/(3k - 1): k^2 clusters in the plane centred at
    (c_p, c_q), c_p = Delta (1 + 3 p) - 1/2 (p, q = 0..k-1), labelled +-1 once for the data
    stream (floor(k^2/2) clusters, chosen at random, are -1). A sample picks a cluster
    uniformly, moves from its centre by R (cos T, sin T), T ~ U(0, 2 pi), R = Delta U(0, 1)
    (clusters at least Delta apart), and is x = (1, the point, d - 3 coordinates
    U(-1/2, 1/2)): the constant 1 lets a bias-free relu network have biases, the last
    d - 3 coordinates carry nothing about y. ``noise`` adds N(0, noise^2) to the point.
``stripe`` (Paccolat, Petrini, Geiger, Tyloo & Wyart 2021, their code's distribution)
    x ~ N(0, I_d); y = +1 if low < x_1 < high else -1, (low, high) = ``stripe``, by default
    (-0.3, 1.18549), where P(y = +1) = Phi(1.18549) - Phi(-0.3) = 1/2: the label depends on
    one coordinate, the other d - 1 carry nothing. ``noise`` adds N(0, noise^2 I) to x after
    the labels are set.
``digits``, ``mnist1d``
    Real data shipped with a package (the extra ``meanfield[data]``), standardised, reduced
    by PCA to ``dim`` components fitted on the training set, on the sphere |x| = sqrt(d)
    by default (``inputs``), labelled by ``labels``: :mod:`meanfield.model.real_data`.
``file``
    ``path`` is an .npz or .h5/.hdf5 file holding X [n, d] and y [n], or a .csv file with a
    header row naming the columns x0, ..., x{d-1} and y (any order) and one sample per row
    after it (:func:`_read_csv`); finite reals, d = ``dim``, which is read from the file
    when the scenario does not give it (the schema refuses ``n_train``, ``n_test`` and
    ``noise`` here). The test
    set is chosen one of three ways (docs/design.md §5.2): the samples are shuffled with
    rng and round(test_fraction * n) of them are the test set (test_fraction 0: none,
    every sample trains); or ``test_indices`` name the test samples and the others train in
    file order; or ``test_path`` is a second file of the same form that is the test set and
    every sample of ``path`` trains. A scenario file's relative paths are relative to that
    file (:func:`meanfield.config.loading.relative_to` makes them absolute when it is read); any other
    relative path (an override, a Python mapping) is taken from the current working directory.

For the classification tasks (gaussian_mixture, the pictures, clusters and stripe) ``noise`` is the standard
deviation of Gaussian noise added to the *inputs* (labels stay +-1; for gaussian_mixture
the class covariances become ((1 +- delta)^2 + noise^2) I). For the regression tasks
(teacher_student, single_index, power_law) it is label noise. ``inputs`` applies to the regression
tasks only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from numpy.polynomial import hermite_e

from solvers.catalog import CLASSIFICATION_LOSSES

from ..errors import UsageError

if TYPE_CHECKING:  # the scenario's section types, for annotations only: the schema asks this layer
    from ..config.sections import DataSpec

TURNS = 1.5
"""spirals: turns of each arm."""

R_SPIRAL = 2.0
"""spirals: outer radius of the arms (E|x|^2 = R_SPIRAL^2 / 2 = 2)."""

MOONS_CENTRE = (0.5, 0.25)
"""moons: the mean of make_moons' two half circles, subtracted so the picture is centred."""

XOR_CENTRES = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
"""xor: the four blob centres; label sign(c_1 c_2)."""

FILE_SUFFIXES = (".npz", ".h5", ".hdf5", ".csv")


@dataclass(frozen=True)
class Teacher:
    """The target network f*(x) = sum_j a_j sigma(w_j . x) (rows of W are neurons)."""

    a: np.ndarray
    """[k] output weights."""
    W: np.ndarray
    """[k, d] input weights, one row per neuron."""
    activation: str
    """An activation name, or ``hermite<k>`` for single_index (informational)."""


@dataclass(frozen=True)
class Dataset:
    """Training and test sets (float64) and the teacher where there is one."""

    X_train: np.ndarray
    """[n_train, d]"""
    y_train: np.ndarray
    """[n_train]"""
    X_test: np.ndarray
    """[n_test, d] (n_test = 0: no test set, a ``file`` task with test_fraction 0)"""
    y_test: np.ndarray
    """[n_test]"""
    teacher: Optional[Teacher] = None

    @property
    def dim(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.X_test.shape[0]


def make_dataset(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """The training and test sets of ``spec.task``, drawn from ``rng`` (see the module docstring)."""
    return TASKS[spec.task](spec, rng)


# ----------------------------------------------------------------------------- helpers
Sampler = Callable[[int], tuple[np.ndarray, np.ndarray]]


def _split(spec: DataSpec, sample: Sampler, teacher: Optional[Teacher] = None) -> Dataset:
    """Draw the training set, then the test set, with ``sample(n) -> (X, y)``."""
    X_train, y_train = sample(spec.n_train)
    X_test, y_test = sample(spec.n_test)
    return _frozen(X_train, y_train, X_test, y_test, teacher)


def _frozen(X_train, y_train, X_test, y_test, teacher) -> Dataset:
    arrays = [np.ascontiguousarray(v, dtype=np.float64) for v in (X_train, y_train, X_test, y_test)]
    if teacher is not None:
        a, W = (np.ascontiguousarray(v, dtype=np.float64) for v in (teacher.a, teacher.W))
        teacher = Teacher(a=a, W=W, activation=teacher.activation)
    return Dataset(*arrays, teacher=teacher)


def unit_vectors(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """k vectors uniform on the unit sphere of R^d, shape [k, d]."""
    g = rng.standard_normal((k, d))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def draw_inputs(rng: np.random.Generator, n: int, d: int, kind: str) -> np.ndarray:
    """n inputs: ``gaussian`` x ~ N(0, I_d), ``sphere`` uniform on |x| = sqrt(d), or
    ``unit_sphere`` uniform on |x| = 1."""
    if kind == "sphere":
        return math.sqrt(d) * unit_vectors(rng, n, d)
    if kind == "unit_sphere":
        return unit_vectors(rng, n, d)
    return rng.standard_normal((n, d))


def orthonormal_rows(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """k orthonormal rows in R^d (k <= d), uniform (Haar) in orientation: Gram-Schmidt of k
    Gaussian rows, so row 0 is the first row ``unit_vectors`` would draw. Done as the QR
    factorisation G^T = Q R with the signs fixed so that diag(R) > 0; returns Q^T."""
    Q, R = np.linalg.qr(rng.standard_normal((k, d)).T)
    return (Q * np.where(np.diag(R) < 0, -1.0, 1.0)).T


def make_teacher(spec: DataSpec, rng: np.random.Generator) -> Teacher:
    """The teacher_student teacher of ``spec.teacher`` (:class:`meanfield.config.sections.TeacherSpec`),
    W drawn before a from ``rng``:

    W: ``random`` rows uniform on the unit sphere (k d normals); ``orthonormal`` rows from
    :func:`orthonormal_rows` (k d normals); explicit rows as given (no draw). With
    ``norm`` set each row is then scaled to |w*_j| = norm; unset, the rules give unit rows
    and explicit rows stay as written.
    a: ``equal`` 1/k; ``alternating`` (+1, -1, +1, ...); ``random_sign`` independent +-1
    with probability 1/2 (k integers); explicit numbers as given (no draw).

    The default (random, equal, norm unset) draws exactly what every earlier version drew.
    """
    t, k, d = spec.teacher, spec.teacher.width, spec.dim
    if t.W == "random":
        W = unit_vectors(rng, k, d)
    elif t.W == "orthonormal":
        W = orthonormal_rows(rng, k, d)
    else:
        W = np.array(t.W, dtype=np.float64)
    if t.norm is not None:
        W = t.norm * W / np.linalg.norm(W, axis=1, keepdims=True)
    if t.a == "equal":
        a = np.full(k, 1.0 / k)
    elif t.a == "alternating":
        a = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
    elif t.a == "random_sign":
        a = 2.0 * rng.integers(0, 2, size=k) - 1.0
    else:
        a = np.array(t.a, dtype=np.float64)
    return Teacher(a=a, W=W, activation=t.activation)


def hermite_normalized(z: np.ndarray, k: int) -> np.ndarray:
    """He_k(z) / sqrt(k!), probabilists' Hermite: orthonormal under z ~ N(0, 1)."""
    coefficients = np.zeros(k + 1)
    coefficients[k] = math.exp(-0.5 * math.lgamma(k + 1))
    return hermite_e.hermeval(z, coefficients)


def _balanced(rng: np.random.Generator, n: int, groups: int) -> np.ndarray:
    """n group indices in 0..groups-1, as equal in size as n allows, in random order."""
    return rng.permutation(np.arange(n) % groups)


# ------------------------------------------------------------------------ regression
def teacher_student(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """y = sum_j a*_j sigma(w*_j . x) + noise N(0, 1), the teacher from :func:`make_teacher`."""
    d = spec.dim
    teacher = make_teacher(spec, rng)
    from solvers.activations import activation_code  # here: reading data from a file needs no Numba
    from solvers.particles import predict

    code = activation_code(teacher.activation)

    def sample(n):
        X = draw_inputs(rng, n, d, spec.inputs)
        f = predict(teacher.a, teacher.W, None, X, 1.0, code)
        return X, f + spec.noise * rng.standard_normal(n)

    return _split(spec, sample, teacher)


def single_index(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """y = He_k(u . x) / sqrt(k!) + noise N(0, 1), u uniform on the unit sphere, k = degree."""
    k, d = spec.degree, spec.dim
    u = unit_vectors(rng, 1, d)

    def sample(n):
        X = draw_inputs(rng, n, d, spec.inputs)
        return X, hermite_normalized(X @ u[0], k) + spec.noise * rng.standard_normal(n)

    return _split(spec, sample, Teacher(a=np.ones(1), W=u, activation=f"hermite{k}"))


def power_law_energies(spec: DataSpec) -> np.ndarray:
    """E_k, k = 0..max_degree, of the ``power_law`` target: k^-(1 + decay) on the degrees kept
    (``degrees``: even k >= 2, or every k >= 1), 0 elsewhere, scaled to sum to 1."""
    law = spec.power_law
    k = np.arange(law.max_degree + 1, dtype=np.float64)
    kept = (k >= 1) & ((k % 2 == 0) if law.degrees == "even" else True)
    energies = np.where(kept, np.maximum(k, 1.0) ** -(1.0 + law.decay), 0.0)
    return energies / energies.sum()


def power_law_target(spec: DataSpec, u: np.ndarray, X: np.ndarray) -> np.ndarray:
    """f*(x) = sum_k sqrt(E_k N(d, k)) P_k(u . x) at the rows of X (on the unit sphere), E_k of
    :func:`power_law_energies`: the degree-k part has E_x (.)^2 = E_k since E_x P_k(u . x)^2 = 1/N(d, k)."""
    from .sphere import degeneracy, legendre

    d = spec.dim
    energies = power_law_energies(spec)
    t = np.clip(np.asarray(X, dtype=np.float64) @ np.asarray(u, dtype=np.float64), -1.0, 1.0)
    degrees = np.arange(len(energies))
    return np.sqrt(energies * degeneracy(d, degrees)) @ legendre(d, len(energies) - 1, t)


def power_law(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """x uniform on the unit sphere S^(d-1), u uniform on it (drawn first),
    y = :func:`power_law_target` + noise N(0, 1)."""
    u = unit_vectors(rng, 1, spec.dim)[0]

    def sample(n):
        X = unit_vectors(rng, n, spec.dim)
        return X, power_law_target(spec, u, X) + spec.noise * rng.standard_normal(n)

    return _split(spec, sample)


# -------------------------------------------------------------------- classification
def gaussian_mixture(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """y = +-1 with probability 1/2, x ~ N(0, (1 + y delta)^2 I_d) (+ input noise)."""
    d, delta = spec.dim, spec.delta

    def sample(n):
        y = 2.0 * rng.integers(0, 2, size=n) - 1.0
        X = (1.0 + delta * y)[:, None] * rng.standard_normal((n, d))
        return X + spec.noise * rng.standard_normal((n, d)), y

    return _split(spec, sample)


def xor(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """Four blobs N(c, noise^2 I_2), c in {-1, 1}^2, equally many points each; y = sign(c_1 c_2)."""

    def sample(n):
        centres = XOR_CENTRES[_balanced(rng, n, 4)]
        y = centres[:, 0] * centres[:, 1]
        return centres + spec.noise * rng.standard_normal((n, 2)), y

    return _split(spec, sample)


def moons(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """make_moons, centred: outer (cos t, sin t) with y = +1, inner (1 - cos t, 1/2 - sin t)
    with y = -1, t ~ U(0, pi), minus MOONS_CENTRE, plus input noise."""

    def sample(n):
        y = 1.0 - 2.0 * _balanced(rng, n, 2)
        t = rng.uniform(0.0, math.pi, size=n)
        outer = y > 0
        X = np.where(
            outer[:, None],
            np.column_stack([np.cos(t), np.sin(t)]),
            np.column_stack([1.0 - np.cos(t), 0.5 - np.sin(t)]),
        )
        X -= np.asarray(MOONS_CENTRE)
        return X + spec.noise * rng.standard_normal((n, 2)), y

    return _split(spec, sample)


def spirals(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """Two arms r = R_SPIRAL t, angle 2 pi TURNS t + pi c (c = 0: y = +1, c = 1: y = -1),
    t = sqrt(U(0, 1)), plus input noise."""

    def sample(n):
        arm = _balanced(rng, n, 2)
        t = np.sqrt(rng.uniform(0.0, 1.0, size=n))
        angle = 2.0 * math.pi * TURNS * t + math.pi * arm
        X = (R_SPIRAL * t)[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
        return X + spec.noise * rng.standard_normal((n, 2)), 1.0 - 2.0 * arm

    return _split(spec, sample)


def cluster_centres(k: int) -> np.ndarray:
    """The k^2 centres of the ``clusters`` task, [k^2, 2]: (c_p, c_q) with c_p = Delta (1 + 3 p)
    - 1/2, Delta = 1/(3k - 1), p the fast index (cluster j = p + k q)."""
    delta = 1.0 / (3 * k - 1)
    c = delta * (1 + 3 * np.arange(k)) - 0.5
    return np.column_stack([np.tile(c, k), np.repeat(c, k)])


def clusters(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """Chizat & Bach's clusters: the labels of the k^2 clusters (a permutation), then per set
    the clusters, angles, radii, spurious coordinates and noise (see the module docstring)."""
    k, d = spec.clusters_per_side, spec.dim
    delta = 1.0 / (3 * k - 1)
    centres = cluster_centres(k)
    labels = np.ones(k * k)
    labels[rng.permutation(k * k)[: (k * k) // 2]] = -1.0

    def sample(n):
        which = rng.integers(0, k * k, size=n)
        angle = rng.uniform(0.0, 2 * math.pi, size=n)
        radius = delta * rng.uniform(0.0, 1.0, size=n)
        spurious = rng.uniform(-0.5, 0.5, size=(n, d - 3))
        point = centres[which] + radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
        point += spec.noise * rng.standard_normal((n, 2))
        return np.column_stack([np.ones(n), point, spurious]), labels[which]

    return _split(spec, sample)


def stripe(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """x ~ N(0, I_d), y = +1 if low < x_1 < high else -1 ((low, high) = spec.stripe), then
    input noise N(0, noise^2 I)."""
    d, (low, high) = spec.dim, spec.stripe

    def sample(n):
        X = rng.standard_normal((n, d))
        y = np.where((X[:, 0] > low) & (X[:, 0] < high), 1.0, -1.0)
        return X + spec.noise * rng.standard_normal((n, d)), y

    return _split(spec, sample)


# ----------------------------------------------------------------------------- files
def from_file(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """X [n, d] and y [n] from ``spec.path`` (.npz or .h5/.hdf5), split as :func:`split_of` says:
    with ``test_path`` every sample trains (in file order) and that file is the test set;
    with ``test_indices`` the test set is X[test_indices] (in their order) and the others
    train, in file order; else the samples are shuffled with rng and the first
    round(test_fraction * n) of them are the test set (none with test_fraction 0: every
    sample trains, shuffled the same way). Only the random split draws from rng."""
    source = data_source(spec)
    X, y = _read_arrays(source)
    _check_arrays(source, X, y, spec.dim)
    if spec.test_path is not None:
        test_source = data_source(spec, "test_path")
        X_test, y_test = _read_arrays(test_source)
        _check_arrays(test_source, X_test, y_test, spec.dim)
        _split_sizes(spec, X.shape[0], X_test.shape[0])
        return _frozen(X, y, X_test, y_test, None)
    n_train, n_test = _split_sizes(spec, X.shape[0])
    if spec.test_indices is not None:
        test = np.asarray(spec.test_indices, dtype=np.intp)
        train = np.setdiff1d(np.arange(X.shape[0]), test)  # sorted: file order
    else:
        order = rng.permutation(X.shape[0])
        test, train = order[:n_test], order[n_test:]
    return _frozen(X[train], y[train], X[test], y[test], None)


# ------------------------------------------------------------------------- real data
def real_data(spec: DataSpec, rng: np.random.Generator) -> Dataset:
    """digits or mnist1d: standardised, PCA to dim, on the sphere (:mod:`meanfield.model.real_data`)."""
    from .real_data import make_real

    return make_real(spec, rng)


def check_source(spec: DataSpec, loss: str = "squared") -> tuple[int, int]:
    """(n_train, n_test) of the data ``spec`` describes, after checking what only the disk
    knows: for the ``file`` task, that ``spec.path`` (and ``spec.test_path``, if given)
    exists and holds X [n, dim] and y [n] of real numbers, y finite, and, for a classification
    ``loss`` (logistic, hinge: ``solvers.catalog.CLASSIFICATION_LOSSES``), labels y = +-1;
    that the split leaves a training set (and a test set, unless test_fraction is 0):
    data.test_fraction's share rounds to at least one sample and leaves one, data.test_indices
    are in range and not every sample. The inputs X are not loaded (their shape and dtype come
    from the file's header; their finiteness is checked when the data are built). Raises
    UsageError naming the key (data.path, data.test_path,
    data.test_indices), like :func:`make_dataset`.

    For digits and mnist1d, that their package (the extra meanfield[data]) is installed.
    Every other task is checked by the schema alone: its sizes are returned without
    touching the disk. The schema itself never reads the file (a resolved scenario is
    re-validated where the file may be gone): call this before a run, e.g. when planning.
    """
    if spec.task in ("digits", "mnist1d"):
        from .real_data import require

        require(spec.task)  # the extra's message before anything runs
    if spec.task != "file":
        return spec.n_train, spec.n_test
    sizes = []
    for key in ("path", "test_path") if spec.test_path is not None else ("path",):
        source = data_source(spec, key)
        X, y = _read_arrays(source, inputs=False)
        _check_arrays(source, X, y, spec.dim)
        if loss in CLASSIFICATION_LOSSES:
            _check_labels(source, y, loss)
        sizes.append(y.shape[0])
    return _split_sizes(spec, *sizes)


def split_of(spec: DataSpec) -> str:
    """How a ``file`` task's samples are split, in words (what ``--dry-run`` shows)."""
    if spec.test_path is not None:
        return f"every sample of data.path trains (file order); the test set is data.test_path {spec.test_path}"
    if spec.test_indices is not None:
        return (f"the test set is the {len(spec.test_indices)} samples of data.test_indices; the others train "
                "(file order)")
    if spec.test_fraction == 0:
        return "data.test_fraction 0: every sample trains (shuffled by the data seed); no test set"
    return f"a random data.test_fraction {spec.test_fraction:g} of the samples is the test set (the data seed)"


@dataclass(frozen=True)
class Source:
    """A data file and the scenario key that names it (what every message about it starts with)."""

    key: str
    path: Path

    def __str__(self) -> str:
        return f"{self.key} {self.path}"


def data_source(spec: DataSpec, key: str = "path") -> Source:
    """The file of ``data.<key>`` (path or test_path); a relative path is taken from the
    current working directory (a scenario file's were made absolute when it was read)."""
    return Source(f"data.{key}", Path(getattr(spec, key)).expanduser())


def file_dim(path: str) -> int:
    """The dimension d of the inputs X [n, d] of data.path ``path`` (from the file's header
    where it has one): what data.dim is when a file task does not give it."""
    source = Source("data.path", Path(path).expanduser())
    X, y = _read_arrays(source, inputs=False)
    _check_arrays(source, X, y)
    return X.shape[1]


@dataclass(frozen=True)
class _Header:
    """An array's shape and dtype, read from a file without its values."""

    shape: tuple
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _split_sizes(spec: DataSpec, n: int, n_held: Optional[int] = None) -> tuple[int, int]:
    """(n_train, n_test) of the n samples of data.path (and the n_held of data.test_path):
    a training set of at least one sample, and a test set of at least one unless
    test_fraction is 0."""
    source = data_source(spec)
    if spec.test_path is not None:
        for where, count in ((source, n), (data_source(spec, "test_path"), n_held)):
            if count == 0:
                raise UsageError(f"{where}: holds no samples (X [0, d]); it needs at least one")
        return n, n_held
    if spec.test_indices is not None:
        return _indices_sizes(spec.test_indices, source, n)
    n_test = int(round(spec.test_fraction * n))
    if n - n_test < 1 or (spec.test_fraction > 0 and n_test < 1):
        no_test = " (data.test_fraction: 0 for no test set)" if n_test < 1 <= n else ""
        raise UsageError(
            f"{source}: {n} samples and data.test_fraction {spec.test_fraction:g} leave "
            f"{n_test} test and {n - n_test} training samples; both need at least one{no_test}"
        )
    return n - n_test, n_test


def _indices_sizes(indices: list[int], source: Source, n: int) -> tuple[int, int]:
    """(n_train, n_test) with the test set data.test_indices of the n samples: each in
    range, and not every sample (the schema has checked they are integers >= 0, unique)."""
    outside = [index for index in indices if index >= n]
    if outside:
        shown = ", ".join(map(str, outside[:5])) + (", ..." if len(outside) > 5 else "")
        raise UsageError(f"data.test_indices: {shown} out of range: {source} holds {n} samples, "
                         f"indices 0 to {n - 1}")
    if len(indices) >= n:
        raise UsageError(f"data.test_indices: names every one of the {n} samples of {source}: "
                         "leave at least one to train on")
    return n - len(indices), len(indices)


def _check_labels(source: Source, y, loss: str) -> None:
    """A classification loss (logistic, hinge) reads y as a class, +1 or -1."""
    other = np.unique(y[np.abs(np.asarray(y, dtype=np.float64)) != 1])
    if other.size:
        shown = ", ".join(f"{value:g}" for value in other[:3]) + (", ..." if other.size > 3 else "")
        raise UsageError(
            f"{source}: loss {loss!r} needs labels y = +1 or -1; y also holds {shown}: "
            "relabel the file or use loss: squared"
        )


def _read_arrays(source: Source, inputs: bool = True) -> tuple[np.ndarray | _Header, np.ndarray]:
    """X and y; with ``inputs=False`` X is only its _Header."""
    path = source.path
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise UsageError(
            f"{source}: unknown file type {path.suffix or '(none)'!r}; "
            "use an .npz or .h5/.hdf5 file holding X [n, d] and y [n], or a .csv file with columns x0, ..., y"
        )
    if not path.is_file():
        raise UsageError(f"{source}: no such file (the {suffix} file holding X and y)")
    reader = {".npz": _read_npz, ".csv": _read_csv}.get(suffix, _read_h5)
    return reader(source, inputs)


def _read_npz(source: Source, inputs: bool = True) -> tuple[np.ndarray | _Header, np.ndarray]:
    _check_npz_magic(source)
    try:
        with np.load(source.path, allow_pickle=False) as archive:
            _check_keys(source, archive.files)
            return (archive["X"] if inputs else _npz_header(source, archive, "X")), archive["y"]
    except UsageError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _pickled(source) from None
        raise UsageError(f"{source}: not a readable .npz archive ({exc})") from None
    except Exception as exc:  # OSError, EOFError, zipfile.BadZipFile, ...
        raise UsageError(f"{source}: not a readable .npz archive ({exc})") from None


NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npz_header(source: Source, archive, key: str) -> np.ndarray | _Header:
    """The shape and dtype of ``key`` from its .npy header in the archive, without its values
    (a member of another .npy version, or not an .npy, is read as np.load reads it)."""
    member = f"{key}.npy"
    if member in archive.zip.namelist():
        with archive.zip.open(member) as stream:
            try:
                version = np.lib.format.read_magic(stream)
            except ValueError:  # not an .npy
                version = None
            if version in NPY_HEADER_READERS:
                shape, _, dtype = NPY_HEADER_READERS[version](stream)
                if dtype.hasobject:
                    raise _pickled(source)
                return _Header(tuple(shape), dtype)
    return archive[key]


def _pickled(source: Source) -> UsageError:
    return UsageError(
        f"{source}: holds pickled Python objects (an object array), which are "
        "never loaded (they can run code); save X and y as plain numeric arrays"
    )


def _check_npz_magic(source: Source) -> None:
    """Refuse what np.load would not read as an .npz archive (an .npy array, a pickle, text)."""
    try:
        with open(source.path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise UsageError(f"{source}: cannot read the file ({exc.strerror})") from None
    if head == b"\x93NUMPY":
        raise UsageError(
            f"{source}: a single .npy array, not an .npz archive; "
            "save X and y with numpy.savez(path, X=X, y=y)"
        )
    if not head.startswith(b"PK"):
        raise UsageError(
            f"{source}: not a readable .npz archive (expected the zip file that "
            "numpy.savez(path, X=X, y=y) writes)"
        )


def _read_h5(source: Source, inputs: bool = True) -> tuple[np.ndarray | _Header, np.ndarray]:
    import h5py

    try:
        with h5py.File(source.path, "r") as f:
            _check_keys(source, list(f.keys()))
            for key in ("X", "y"):
                if not isinstance(f[key], h5py.Dataset):
                    raise UsageError(f"{source}: {key!r} is a group, expected a dataset")
            X = f["X"][()] if inputs else _Header(f["X"].shape, f["X"].dtype)
            return X, f["y"][()]
    except UsageError:
        raise
    except Exception as exc:  # h5py raises OSError, but also KeyError/TypeError on odd files
        raise UsageError(f"{source}: not a readable HDF5 file ({exc})") from None


CSV_LAYOUT = "a header row naming the columns x0, ..., x{d-1} and y (any order), then one sample per row"


def _read_csv(source: Source, inputs: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """X [n, d] and y [n] from a .csv file laid out as CSV_LAYOUT (comma-separated, UTF-8;
    blank lines skipped): X[:, i] is column x<i>, y column y. A cell that is not a finite
    number is refused naming its row and column. Read whole (``inputs`` is ignored)."""
    import csv

    try:
        with open(source.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, None) or []]
            inputs_at, labels_at = _csv_columns(source, header)
            rows, lines = [], []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise UsageError(f"{source}: line {reader.line_num} has {len(row)} cell(s) and the header "
                                     f"{len(header)}: give each column once per row")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source}: not UTF-8 text (byte {exc.start}); a .csv file is UTF-8 text") from None
    except csv.Error as exc:
        raise UsageError(f"{source}: not a readable .csv file ({exc})") from None
    except OSError as exc:
        raise UsageError(f"{source}: cannot read the file ({exc.strerror or exc})") from None
    values = _csv_numbers(source, header, rows, lines)
    return values[:, inputs_at], values[:, labels_at]


def _csv_columns(source: Source, header: list[str]) -> tuple[list[int], int]:
    """Where in the header x0, ..., x{d-1} are (in that order) and where y is."""
    from ..messages import did_you_mean

    where = f"{source}: the header (line 1)"
    if not any(header):
        raise UsageError(f"{source}: no header row; a .csv file holds {CSV_LAYOUT}")
    if all(_is_number(name) for name in header):
        raise UsageError(f"{where} holds numbers, not column names; a .csv file holds {CSV_LAYOUT}")
    numbered = {}
    for at, name in enumerate(header):
        match = re.fullmatch(r"x(\d+)", name)
        if name != "y" and match is None:
            raise UsageError(f"{where}: column {name!r} is not x<i> or y; a .csv file holds {CSV_LAYOUT}"
                             + did_you_mean(name, ["y"] + [f"x{i}" for i in range(len(header))]))
        if name in numbered:
            raise UsageError(f"{where}: column {name!r} is named twice")
        numbered[name] = at
    count = len(numbered) - ("y" in numbered)
    missing = [f"x{i}" for i in range(count) if f"x{i}" not in numbered]
    if "y" not in numbered or not count or missing:
        lacks = missing[0] if missing else ("y (the labels)" if "y" not in numbered else "x0 (an input)")
        raise UsageError(f"{where} has no column {lacks}; a .csv file holds {CSV_LAYOUT}")
    return [numbered[f"x{i}"] for i in range(count)], numbered["y"]


def _csv_numbers(source: Source, header: list[str], rows: list[list[str]], lines: list[int]) -> np.ndarray:
    """The cells as float64 [rows, columns]; the first one that is not a finite number is an error."""
    try:
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    except ValueError:
        row, column = next((r, c) for r, cells in enumerate(rows) for c, cell in enumerate(cells)
                           if not _is_number(cell))
        cell = rows[row][column].strip()
        raise UsageError(f"{source}: row {row + 1} (line {lines[row]}), column {header[column]}: "
                         + (f"{cell!r} is not a number" if cell else "empty; every cell is a number")) from None
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        row, column = bad[0]
        raise UsageError(f"{source}: row {row + 1} (line {lines[row]}), column {header[column]}: "
                         f"{rows[row][column].strip()} is not a finite number")
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_keys(source: Source, keys) -> None:
    missing = [key for key in ("X", "y") if key not in keys]
    if missing:
        raise UsageError(
            f"{source}: missing {' and '.join(missing)}; the file must hold "
            f"X [n, d] and y [n] (found: {', '.join(sorted(keys)) or 'nothing'})"
        )


def _check_arrays(source: Source, X, y, dim: Optional[int] = None) -> None:
    """X [n, dim] and y [n] of finite real numbers (X's values unchecked when it is a _Header;
    any dim when ``dim`` is None)."""
    X = X if isinstance(X, _Header) else np.asarray(X)
    y = np.asarray(y)
    for key, value in (("X", X), ("y", y)):
        if value.dtype.kind not in "biuf":
            raise UsageError(f"{source}: {key} has dtype {value.dtype}; expected real numbers")
    if X.ndim != 2:
        raise UsageError(f"{source}: X has shape {X.shape}; expected 2-D [n, d]")
    if y.ndim != 1:
        raise UsageError(f"{source}: y has shape {y.shape}; expected 1-D [n]")
    if X.shape[0] != y.shape[0]:
        raise UsageError(
            f"{source}: X has {X.shape[0]} samples but y has {y.shape[0]}; they must match"
        )
    for key, value in (("X", X), ("y", y)):
        if isinstance(value, _Header):
            continue
        bad = np.size(value) - np.count_nonzero(np.isfinite(value))
        if bad:
            raise UsageError(f"{source}: {key} has {bad} non-finite values (nan or inf)")
    if dim is None or X.shape[1] == dim:
        return
    if source.key != "data.path":
        raise UsageError(f"{source}: X has {X.shape[1]} features but data.dim is {dim}; the test set needs "
                         "data.path's dim")
    raise UsageError(f"data.dim is {dim}, and {source} holds inputs of dimension {X.shape[1]} (X [{X.shape[0]}, "
                     f"{X.shape[1]}]): remove data.dim (it is read from the file) or set data.dim: {X.shape[1]}")


TASKS: dict[str, Callable[[DataSpec, np.random.Generator], Dataset]] = {
    "teacher_student": teacher_student,
    "single_index": single_index,
    "gaussian_mixture": gaussian_mixture,
    "xor": xor,
    "moons": moons,
    "spirals": spirals,
    "clusters": clusters,
    "stripe": stripe,
    "file": from_file,
    "digits": real_data,
    "mnist1d": real_data,
    "power_law": power_law,
}
"""Task name (``data.task``) -> the function that builds its Dataset."""
