"""The bundled scenarios write the same numbers, bit for bit, as the code before the
public-API refactor (issue 11): every dataset of every bundled scenario's file (times,
particles, measures, checkpoints) against checksums recorded with that code
(``tests/data/bundled_checksums.json``, written by ``tests/checksums.py``).

Both runs go through ``meanfield simulate`` in fresh processes whose Numba kernels come
from the on-disk cache: a kernel compiled in the running process and the same kernel
loaded from the cache can differ in the last bit (seen at d = 20, the backward pass of
``gaussian_mixture``), so the first process only fills the cache. The checksums were taken
with two threads for Numba and for OpenBLAS, which the subprocesses are given: the BLAS
products of the kernel runs (quickstart's ntk, chizat_bach's tangent) round differently
on one thread.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checksums import digest

EXPECTED = json.loads((Path(__file__).parent / "data" / "bundled_checksums.json").read_text())
THREADS = {name: "2" for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _simulate_all(directory: Path, extra=()) -> None:
    code = ("import sys; from meanfield.cli import main\n"
            "for name in sys.argv[2:]:\n"
            "    try:\n"
            f"        main(['-q', 'simulate', name, '-o', f'{{sys.argv[1]}}/{{name}}.h5', *{list(extra)!r}])\n"
            "    except SystemExit as exit:\n"
            "        assert not exit.code, exit.code\n")
    subprocess.run([sys.executable, "-c", code, str(directory), *EXPECTED], check=True,
                   env={**os.environ, **THREADS})


@pytest.fixture(scope="module")
def bundled_files(tmp_path_factory):
    warm = tmp_path_factory.mktemp("warm")
    _simulate_all(warm, ["--set", "train.t_end=0.2", "--set", "record.every=0.1"])  # compiles and caches
    out = tmp_path_factory.mktemp("bundled")
    _simulate_all(out)
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_scenario_is_bit_identical(bundled_files, name):
    got = digest(bundled_files / f"{name}.h5")
    expected = EXPECTED[name]
    assert sorted(got) == sorted(expected), "datasets added or missing"
    changed = sorted(key for key in expected if got[key] != expected[key])
    assert not changed, f"{name}: {len(changed)} dataset(s) differ: {changed[:8]}"
