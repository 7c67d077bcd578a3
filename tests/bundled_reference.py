"""Reference values of the bundled scenarios' files, and the rule that compares a file with
them: bit for bit on the machine that recorded them, within a stated tolerance on any other
(docs/design.md §6.3).

A reference is, for each dataset of a trajectory file (hard links under every name), its
dtype, shape, largest magnitude, the SHA-256 of its bytes, and its values: all of them up to
``SAMPLE`` values, else every k-th value of the flattened array (every frame of a particle
dataset is hit). Each checkpoint's clock and RNG attributes are kept as their text. The
machine fingerprint (Numba's target CPU and features, the versions of the numerical stack,
OpenBLAS's version and kernel) says where the bits were recorded.

``python tests/bundled_reference.py record DIR NAME.h5 ...`` writes ``DIR/NAME.npz`` for each
file and ``DIR/manifest.json``; run it in the environment the test gives its simulations
(two threads: ``tests/test_bundled_reference.py``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import h5py
import numpy as np

SAMPLE = 2048
"""Values kept per dataset: all of a smaller one, an evenly strided subset of a larger one."""

RTOL = {"f8": 1e-8, "f4": 4e-7}
"""Across machines, |got - reference| <= RTOL * (largest |reference| of the dataset) for every
value. float64 datasets to 1e-8 of their scale, measured on one host against its native
AVX-512 code: AVX2 code (haswell) differs by 6.5e-12 at most over the five bundled scenarios,
SSE2-only code without FMA (x86-64, what a haswell host's second-target test compiles) by
3.9e-9 in the lazy run's W2 (a small distance between two nearly equal clouds of particles
of size one: its errors scale with the particles, not with itself). float32 snapshots to a
few units in their last place (a float64 value that differs in its last bits can round to a
neighbouring float32; none did)."""

CHECKPOINT_ATTRS = ("t", "step", "frames", "rng", "stepper")


def fingerprint() -> dict:
    """What decides the bits of a run: Numba's target, the numerical stack, OpenBLAS's kernel."""
    import llvmlite
    import llvmlite.binding as llvm
    import numba
    import ot
    import scipy
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, so threadpoolctl sees it)
    from numba.core import config
    from threadpoolctl import threadpool_info

    blas = sorted(f"{lib['internal_api']} {lib['version']} {lib.get('architecture')}"
                  for lib in threadpool_info() if lib["user_api"] == "blas")
    return {
        "machine": platform.machine(),
        "cpu": config.CPU_NAME or llvm.get_host_cpu_name(),
        "cpu_features": (llvm.get_host_cpu_features().flatten() if config.CPU_FEATURES is None
                         else config.CPU_FEATURES or f"those of {config.CPU_NAME}"),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                     "llvmlite": llvmlite.__version__, "scipy": scipy.__version__, "pot": ot.__version__},
        "blas": blas,
    }


def reference(path) -> tuple[dict[str, np.ndarray], dict[str, dict], dict[str, str]]:
    """The reference of one file: (sampled values, per-dataset facts, checkpoint attributes)."""
    values, facts, attrs = {}, {}, {}
    with h5py.File(path, "r", locking=False) as h5:
        for name, data in _datasets(h5):
            stride = max(1, -(-data.size // SAMPLE))
            values[name] = data.ravel()[::stride]
            scale = float(np.abs(data).max()) if data.size and data.dtype.kind == "f" else 0.0
            facts[name] = {"dtype": data.dtype.str, "shape": list(data.shape), "stride": stride,
                           "scale": scale, "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
        for run, group in h5.get("checkpoint", {}).items():
            for key in CHECKPOINT_ATTRS:
                attrs[f"checkpoint/{run}@{key}"] = str(group.attrs[key])
    return values, facts, attrs


def _datasets(group: h5py.Group, prefix: str = ""):
    """(path, values) of every dataset under ``group``, depth first, hard links under every name."""
    for key in group:
        item = group[key]
        if isinstance(item, h5py.Dataset):
            yield prefix + key, np.ascontiguousarray(item[()])
        else:
            yield from _datasets(item, prefix + key + "/")


def differences(path, recorded: dict, recorded_values, *, bitwise: bool) -> list[str]:
    """How the file at ``path`` differs from its reference: one line a dataset or attribute.

    ``bitwise``: every dataset's bytes must hash to the recorded SHA-256 and every attribute
    read the same. Otherwise each sampled value must lie within ``RTOL`` of the dataset's
    scale, integers and text exactly, and numbers in the attributes within the same tolerance.
    """
    values, facts, attrs = reference(path)
    out = [f"{name}: missing" for name in sorted(set(recorded["datasets"]) - set(facts))]
    out += [f"{name}: not in the reference" for name in sorted(set(facts) - set(recorded["datasets"]))]
    for name in sorted(set(facts) & set(recorded["datasets"])):
        want, got = recorded["datasets"][name], facts[name]
        if (want["dtype"], want["shape"]) != (got["dtype"], got["shape"]):
            out.append(f"{name}: {got['dtype']}{got['shape']} where {want['dtype']}{want['shape']} was recorded")
        elif bitwise and want["sha256"] != got["sha256"]:
            out.append(f"{name}: bytes differ")
        elif not bitwise:
            out += _value_difference(name, values[name], recorded_values[name], want)
    for key, text in sorted(recorded["attrs"].items()):
        if attrs.get(key) != text and (bitwise or not _same_numbers(attrs.get(key), text)):
            out.append(f"{key}: {attrs.get(key)!r} where {text!r} was recorded")
    return out


def _value_difference(name: str, got: np.ndarray, want: np.ndarray, facts: dict) -> list[str]:
    """A line when sampled values differ beyond the tolerance of their kind (none when within)."""
    if got.dtype.kind != "f":
        return [] if np.array_equal(got, want) else [f"{name}: values differ"]
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return [f"{name}: NaN where the reference has a number, or the other way"]
    tolerance = RTOL[got.dtype.str[1:]] * facts["scale"]
    worst = float(np.max(np.abs(np.nan_to_num(got) - np.nan_to_num(want)), initial=0.0))
    if worst <= tolerance:
        return []
    return [f"{name}: differs by {worst:.3g}, beyond {tolerance:.3g} ({RTOL[got.dtype.str[1:]]:g} of its scale)"]


def _same_numbers(got, want) -> bool:
    """Two attribute texts equal but for floats within the float64 tolerance (a checkpoint's t, rk45's h)."""
    try:
        got, want = json.loads(got), json.loads(want)
    except (TypeError, ValueError):
        return False
    return _close(got, want)


def _close(got, want) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, float) and isinstance(got, (int, float)):
        return abs(got - want) <= RTOL["f8"] * max(abs(want), 1e-300)
    return got == want


def load(directory: Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The manifest (fingerprint, and per scenario its datasets and attributes) and the values."""
    manifest = json.loads((directory / "manifest.json").read_text())
    values = {}
    for name in manifest["scenarios"]:
        with np.load(directory / f"{name}.npz") as npz:
            values[name] = {key: npz[key] for key in npz.files}
    return manifest, values


def record(directory: Path, paths) -> None:
    """Write the references of the files ``paths`` and this machine's fingerprint to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    scenarios = {}
    for path in map(Path, paths):
        values, facts, attrs = reference(path)
        np.savez_compressed(directory / f"{path.stem}.npz", **values)
        scenarios[path.stem] = {"datasets": facts, "attrs": attrs}
    manifest = {"fingerprint": fingerprint(), "scenarios": scenarios}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "record":
        sys.exit("usage: python tests/bundled_reference.py record DIR FILE.h5 ...")
    record(Path(sys.argv[2]), sys.argv[3:])
