"""Regenerate docs/quickstart.gif, the animation at the end of the README's quickstart.

    python scripts/make_docs_gif.py [--keep FILE.h5]

Simulates the bundled quickstart scenario (about 25 s of CPU) in memory (or into FILE.h5)
and animates it small: 65 dpi, every snapshot (51) at 8 frames a second, about 0.7 MB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import meanfield as mf

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "quickstart.gif"
DPI, EVERY, FPS = 65, 1, 8
LIMIT_BYTES = 1_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="simulate into this file and keep it")
    args = parser.parse_args()
    with mf.simulate("quickstart", args.keep, overwrite=True, log=print) as trajectory:
        OUTPUT.parent.mkdir(exist_ok=True)
        result = mf.animate(trajectory, OUTPUT, fps=FPS, every=EVERY, dpi=DPI)
    size = OUTPUT.stat().st_size
    print(f"wrote {OUTPUT}: {result.frames} frames, {size / 1e3:.0f} kB")
    if size > LIMIT_BYTES:
        print(f"too large for the README (limit {LIMIT_BYTES / 1e6:g} MB): lower DPI or raise EVERY", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
