"""Regenerate docs/quickstart.gif, the animation at the end of the README's quickstart.

    python scripts/make_docs_gif.py [--keep FILE.h5]

Simulates the bundled quickstart scenario (about a minute) into a temporary file and
animates it small: 65 dpi, every second snapshot, so the GIF stays well under 1 MB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from meanfield import run
from meanfield.animate import write_movie
from meanfield.bundled import scenario_path
from meanfield.scenario import load_scenario

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "quickstart.gif"
DPI, EVERY, FPS = 65, 2, 6
LIMIT_BYTES = 1_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="simulate into this file and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trajectory = args.keep or Path(tmp) / "quickstart.h5"
        run.simulate(load_scenario(scenario_path("quickstart")), str(trajectory), log=print)
        OUTPUT.parent.mkdir(exist_ok=True)
        result = write_movie(trajectory, OUTPUT, fps=FPS, every=EVERY, dpi=DPI)
    size = OUTPUT.stat().st_size
    print(f"wrote {OUTPUT}: {result.frames} frames, {size / 1e3:.0f} kB")
    if size > LIMIT_BYTES:
        print(f"too large for the README (limit {LIMIT_BYTES / 1e6:g} MB): lower DPI or raise EVERY", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
