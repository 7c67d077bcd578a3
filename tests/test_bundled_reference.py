"""The bundled scenarios write the numbers recorded in ``tests/data/bundled/`` (written by
``tests/bundled_reference.py``): bit for bit where this machine's fingerprint is the recording
machine's, and within ``bundled_reference.RTOL`` of each dataset's scale on any other
(docs/design.md §6.3). A second Numba/OpenBLAS target on this very machine shows that the
tolerance holds between CPUs.

Every run goes through ``meanfield simulate`` in fresh processes whose Numba kernels come
from the on-disk cache: a kernel compiled in the running process and the same kernel loaded
from the cache can differ in the last bit (seen at d = 20), so the first process only fills
the cache. Numba gets two threads, as when the references were recorded (the count changes
no bit, and a run holds the BLAS at one thread whatever the count: docs/design.md §6.4).
"""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import bundled_reference as ref
import h5py
import numpy as np
import pytest

REFERENCE = Path(__file__).parent / "data" / "bundled"
MANIFEST, VALUES = ref.load(REFERENCE)
THREADS = {name: "2" for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
TESTS = str(Path(__file__).parent)


def _environment(extra=None) -> dict:
    return {**os.environ, **THREADS, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
            **(extra or {})}


def _simulate(directory: Path, names, options=(), env=None) -> None:
    code = ("import sys; from meanfield.cli import main\n"
            "for name in sys.argv[2:]:\n"
            "    try:\n"
            f"        main(['-q', 'simulate', name, '-o', f'{{sys.argv[1]}}/{{name}}.h5', *{list(options)!r}])\n"
            "    except SystemExit as exit:\n"
            "        assert not exit.code, exit.code\n")
    subprocess.run([sys.executable, "-c", code, str(directory), *names], check=True, env=env or _environment())


def _fingerprint(env=None) -> dict:
    code = "import json, bundled_reference; print(json.dumps(bundled_reference.fingerprint()))"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          env=env or _environment())
    return json.loads(done.stdout)


def _run_twice(directory_factory, names, env=None) -> Path:
    """Fill the Numba cache with a short run, then run ``names`` in full; the directory of the files."""
    _simulate(directory_factory("warm"), names, ["--set", "train.t_end=0.2", "--set", "record.every=0.1"], env)
    out = directory_factory("full")
    _simulate(out, names, env=env)
    return out


@pytest.fixture(scope="module")
def bundled_files(tmp_path_factory):
    return _run_twice(tmp_path_factory.mktemp, sorted(MANIFEST["scenarios"]))


@pytest.fixture(scope="module")
def same_machine():
    return _fingerprint() == MANIFEST["fingerprint"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MANIFEST["scenarios"]))
def test_bundled_scenario_writes_the_recorded_numbers(bundled_files, same_machine, name):
    """Bitwise on the recording machine; within the stated tolerance elsewhere."""
    wrong = ref.differences(bundled_files / f"{name}.h5", MANIFEST["scenarios"][name], VALUES[name],
                            bitwise=same_machine)
    kind = "bit for bit" if same_machine else "within the cross-CPU tolerance"
    assert not wrong, f"{name}, {kind}: {len(wrong)} difference(s): {wrong[:8]}"


def _second_target() -> dict:
    """Numba and OpenBLAS compiled for another CPU than this one (AVX2 on an AVX-512 host).

    ``NUMBA_CPU_FEATURES`` empty: the named CPU's own features (unset, Numba would add the
    host's, AVX-512 included, to any CPU name)."""
    import llvmlite.binding as llvm
    from numba.core import config

    host = config.CPU_NAME or llvm.get_host_cpu_name()
    return {"NUMBA_CPU_NAME": "haswell" if host != "haswell" else "x86-64", "NUMBA_CPU_FEATURES": "",
            "OPENBLAS_CORETYPE": "Haswell" if host != "haswell" else "Prescott"}


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the second target is an x86-64 CPU")
def test_another_cpu_target_stays_within_the_tolerance(bundled_files, tmp_path_factory):
    """The quickstart compiled for a second CPU target (its own Numba cache) against this CPU's:
    every stored number within ``RTOL``, although the code differs."""
    target = _second_target()
    env = _environment({**target, "NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp("numba-cache"))})
    assert _fingerprint(env)["cpu"] == target["NUMBA_CPU_NAME"] != _fingerprint()["cpu"]
    other = _run_twice(tmp_path_factory.mktemp, ["quickstart"], env)
    native = bundled_files / "quickstart.h5"
    values, facts, attrs = ref.reference(native)
    wrong = ref.differences(other / "quickstart.h5", {"datasets": facts, "attrs": attrs}, values, bitwise=False)
    assert not wrong, f"{target}: {wrong[:8]}"


# The comparison rule itself, on a small file of known numbers.

def _write(path: Path, values: np.ndarray) -> Path:
    with h5py.File(path, "w") as h5:
        h5["observables/rich/risk/value"] = values
        h5["observables/rich/risk/step"] = np.arange(len(values))
        h5.create_group("checkpoint/rich").attrs.update(
            {"t": 2.0, "step": 3, "frames": 4, "rng": "{}", "stepper": json.dumps({"h": 0.125})})
    return path


@pytest.fixture
def recorded(tmp_path):
    base = np.array([1.0, 0.5, 0.25, 0.0])
    values, facts, attrs = ref.reference(_write(tmp_path / "base.h5", base))
    return base, {"datasets": facts, "attrs": attrs}, values


def test_a_last_bit_difference_is_within_the_tolerance_but_not_bitwise(tmp_path, recorded):
    base, manifest, values = recorded
    nudged = _write(tmp_path / "nudged.h5", np.nextafter(base, 2.0))
    assert ref.differences(nudged, manifest, values, bitwise=False) == []
    assert ref.differences(nudged, manifest, values, bitwise=True) == ["observables/rich/risk/value: bytes differ"]
    assert ref.differences(tmp_path / "base.h5", manifest, values, bitwise=True) == []


def test_a_difference_beyond_the_tolerance_is_named(tmp_path, recorded):
    base, manifest, values = recorded
    moved = _write(tmp_path / "moved.h5", base + np.array([0.0, 0.0, 1e-7, 0.0]))  # 1e-7 of the scale 1
    (line,) = ref.differences(moved, manifest, values, bitwise=False)
    assert line.startswith("observables/rich/risk/value: differs by 1e-07, beyond 1e-08")
    shorter = _write(tmp_path / "shorter.h5", base[:3])
    assert any("<f8[3] where <f8[4] was recorded" in line
               for line in ref.differences(shorter, manifest, values, bitwise=False))


def test_a_large_dataset_is_sampled_on_every_frame(tmp_path):
    frames = np.arange(50 * 300 * 3, dtype=np.float32).reshape(50, 300, 3)
    values, facts, _ = ref.reference(_write(tmp_path / "big.h5", frames))
    sample = values["observables/rich/risk/value"]
    stride = facts["observables/rich/risk/value"]["stride"]
    assert len(sample) <= ref.SAMPLE and stride > 1
    assert set(sample // (300 * 3)) == set(range(50))
