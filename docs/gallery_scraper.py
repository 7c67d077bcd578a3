"""The gallery's scraper of figure files (docs/conf.py).

meanfield draws with matplotlib's ``Figure`` (not pyplot) and writes the figure to the file
it is given (``mf.plot(traj, "q.png")``, ``result.figure("catapult.png")``), so
sphinx-gallery's matplotlib scraper does not see it. The examples write their figures as a
user would, into the working directory (sphinx-gallery runs an example in its own folder);
after each code block this scraper moves every PNG that appeared there into the gallery's
images and shows it below the block.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class FigureFiles:
    """A sphinx-gallery image scraper: the PNG files a code block wrote into the working
    directory, moved into the gallery (so none is left beside the examples)."""

    def __call__(self, block, block_vars, gallery_conf) -> str:
        from sphinx_gallery.scrapers import figure_rst

        written = sorted(Path(os.getcwd()).glob("*.png"), key=lambda path: path.stat().st_mtime)
        images = []
        for figure, destination in zip(written, block_vars["image_path_iterator"]):
            shutil.move(str(figure), destination)
            images.append(destination)
        return figure_rst(images, gallery_conf["src_dir"])

    def __repr__(self) -> str:  # sphinx-gallery's cache of the configuration compares it by repr
        return "FigureFiles()"
