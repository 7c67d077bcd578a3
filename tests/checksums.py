"""Checksums of every dataset of a trajectory file, to show that a change of the code
changes no number of the bundled scenarios.

``python tests/checksums.py FILE.h5 ...`` prints them as JSON, keyed by the file's stem.
Each dataset (hard links included, under every name) is recorded as
``<dtype>[shape]:<first 16 hex digits of the SHA-256 of its bytes>``, and each
checkpoint's clock and RNG attributes as their text.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np

CHECKPOINT_ATTRS = ("t", "step", "frames", "rng", "stepper")


def digest(path) -> dict[str, str]:
    """Dataset path -> '<dtype>[shape]:<sha256 prefix>', checkpoint attributes -> text."""
    out: dict[str, str] = {}
    with h5py.File(path, "r", locking=False) as h5:
        _walk(h5, "", out)
        for run, group in h5.get("checkpoint", {}).items():
            for key in CHECKPOINT_ATTRS:
                out[f"checkpoint/{run}@{key}"] = str(group.attrs[key])
    return out


def _walk(group: h5py.Group, prefix: str, out: dict) -> None:
    for key in group:
        item = group[key]
        name = prefix + key
        if isinstance(item, h5py.Dataset):
            values = np.ascontiguousarray(item[()])
            out[name] = f"{values.dtype.str}{list(values.shape)}:{hashlib.sha256(values.tobytes()).hexdigest()[:16]}"
        else:
            _walk(item, name + "/", out)


if __name__ == "__main__":
    print(json.dumps({Path(p).stem: digest(p) for p in sys.argv[1:]}, indent=1, sort_keys=True))
