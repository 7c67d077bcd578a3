"""Memory: what a run holds at its peak, and what the machine has to give.

Each kind of run lists its dominant allocations (``Run.memory`` in :mod:`meanfield.engine.runs`):
the particles and the integrator's stages, the n x n kernel and its eigendecomposition, the
predictions at every snapshot, ... each a :class:`Need` naming the key that sizes it. A plan
(:func:`meanfield.engine.plan.plan`) adds what every run shares and refuses a scenario whose
largest run would not fit in :func:`available_bytes`, before anything is allocated.
The figures are upper estimates of the arrays' bytes, not a measurement: they leave out the
interpreter and its libraries (already loaded when the estimate is compared).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

FLOAT = 8
"""Bytes of a float64."""

STAGE_ARRAYS = {"euler": 3, "sgd": 3, "euler_maruyama": 4, "heun": 5, "rk4": 7, "rk45": 11, "loss_clock": 8}
"""Arrays of the state's size an integrator holds at once during a step: the state, its
stages and the temporaries of their sums (numpy evaluates y + h/6 (k1 + 2 k2 + ...) one
operation at a time)."""


@dataclass(frozen=True)
class Need:
    """One allocation of a run at its peak: what it is, its bytes, and the key(s) to lower
    to shrink it."""

    what: str
    bytes: float
    lower: str


def stepping(method: str, values: int, itemsize: int, lower: str) -> Need:
    """The state of ``values`` numbers and the integrator's stages, with the float64
    checkpoint and the snapshot written at every record.every."""
    return Need("the state and the integrator's stages", (STAGE_ARRAYS[method] * itemsize + 2 * FLOAT) * values,
                lower)


def kernel_build(n1: int, n2: int, m: int) -> float:
    """Bytes of one empirical kernel K(X1, X2) of m particles (solvers.ntk._kernel): its two
    (n1, n2) parts, and two feature buffers of blocks of particles, each at most
    max(2^20, 2 n1 n2) values (solvers.ntk.BLOCK_ELEMENTS)."""
    from solvers.ntk import BLOCK_ELEMENTS

    block = min(m, max(BLOCK_ELEMENTS, 2 * n1 * n2) // max(n1, 1))
    return FLOAT * (2 * n1 * n2 + 2 * n1 * block)


def available_bytes() -> Optional[int]:
    """The memory a new allocation can have now: MemAvailable of /proc/meminfo (Linux), else
    the machine's physical memory (os.sysconf), else None (unknown: nothing is refused)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def size_text(n: float) -> str:
    """Bytes as text: '512 kB', '12.3 MB', '4.1 GB'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 1e3:.3g} kB"
